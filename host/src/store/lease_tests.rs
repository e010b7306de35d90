//! Leased locks, the same for every backend: each test takes the store(s)
//! to test, opened on one database (`open(lease)` opens another handle, as
//! another process would).

use std::time::Duration;

use serde_json::json;

use super::tests::new_run;
use super::*;

/// A process on another machine that happens to have this one's hostname
/// (and pid).
pub fn twin() -> Owner {
    Owner {
        host_id: "0123456789abcdef".into(),
        ..Owner::current()
    }
}

/// A lease that has run out as soon as it is taken.
pub fn expired() -> Lease {
    Lease {
        duration: Duration::ZERO,
    }
}

fn started(stage: &str, owner: &Owner) -> AuditRow {
    AuditRow {
        time: "t".into(),
        stage: stage.into(),
        plugin: "terraform".into(),
        capability: AuditKind::ExecStarted,
        allowed: true,
        detail: json!({"program": "terraform", "pid": owner.pid, "start": owner.start, "host": owner.host, "host_id": owner.host_id}),
        reason: None,
    }
}

/// Another machine with this hostname holds `prod` under a lease that has
/// not run out: its lock holds, whatever the pid says here.
pub fn a_twin_hosts_lock_holds_while_its_lease_does(open: &dyn Fn(Lease) -> Box<dyn RunStore>) {
    let there = open(Lease::default());
    let here = open(Lease::default());
    there.create_run(&new_run("a", "prod"), &twin()).unwrap();
    assert!(matches!(
        there.try_lock("prod", "a", &twin()).unwrap(),
        Lock::Acquired { .. }
    ));
    here.create_run(&new_run("b", "prod"), &Owner::current())
        .unwrap();
    match here.try_lock("prod", "b", &Owner::current()).unwrap() {
        Lock::Held(h) => {
            assert_eq!(h.run_id, "a");
            assert!(!h.lost);
            assert!(h.lease_until.is_some());
        }
        other => panic!("{other:?}"),
    }
    assert!(
        here.reap().unwrap().is_empty(),
        "a leased run is not reaped"
    );
}

/// A lost host's lease runs out: its lock is taken over, recorded, and its
/// run marked interrupted.
pub fn an_expired_lease_is_taken_over_and_recorded(open: &dyn Fn(Lease) -> Box<dyn RunStore>) {
    let there = open(expired());
    let here = open(Lease::default());
    there.create_run(&new_run("a", "prod"), &twin()).unwrap();
    there.start_stage("a", "plan", "terraform", "t").unwrap();
    assert!(matches!(
        there.try_lock("prod", "a", &twin()).unwrap(),
        Lock::Acquired { .. }
    ));
    here.create_run(&new_run("b", "prod"), &Owner::current())
        .unwrap();
    match here.try_lock("prod", "b", &Owner::current()).unwrap() {
        Lock::Acquired {
            released_stale: Some(r),
        } => {
            assert_eq!((r.run_id.as_str(), r.why), ("a", Release::LeaseExpired));
            assert_eq!(r.holder, twin());
            assert_eq!(r.by, "run b");
            assert!(r.lease_ended.is_some());
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(here.run("a").unwrap().status, RunState::Interrupted);
    let plan = &here.stages("a").unwrap()[0];
    assert!(
        plan.message.contains("stopped renewing its lease"),
        "{}",
        plan.message
    );
    let releases = here.lock_releases("a").unwrap();
    assert_eq!(releases.len(), 1);
    assert_eq!(releases[0].why, Release::LeaseExpired);
}

/// Programs a lost host started may still run there: only a forced unlock
/// frees the environment, and it is recorded with who and why. The lost
/// host, should it come back, finds its run gone and cannot record more.
pub fn programs_on_a_lost_host_need_a_forced_unlock(open: &dyn Fn(Lease) -> Box<dyn RunStore>) {
    let there = open(expired());
    let here = open(Lease::default());
    there.create_run(&new_run("a", "prod"), &twin()).unwrap();
    let attempt = there.start_stage("a", "apply", "terraform", "t").unwrap();
    assert!(matches!(
        there.try_lock("prod", "a", &twin()).unwrap(),
        Lock::Acquired { .. }
    ));
    let child = Owner {
        pid: 4242,
        ..twin()
    };
    there.audit("a", &started("apply", &child), "h1").unwrap();

    here.create_run(&new_run("b", "prod"), &Owner::current())
        .unwrap();
    match here.try_lock("prod", "b", &Owner::current()).unwrap() {
        Lock::Held(h) => {
            assert!(h.lost, "{h:?}");
            assert_eq!(h.live_children, vec![child.clone()]);
        }
        other => panic!("{other:?}"),
    }
    // Reaped, but the lock stays: its programs may still run.
    assert_eq!(here.reap().unwrap(), vec!["a".to_string()]);
    assert!(here.lock_holder("prod").unwrap().unwrap().lost);

    let released = here
        .force_unlock("prod", "carol", "runner destroyed")
        .unwrap()
        .expect("it was locked");
    assert_eq!(
        (released.why, released.by.as_str()),
        (Release::Forced, "carol")
    );
    assert_eq!(released.reason.as_deref(), Some("runner destroyed"));
    assert!(here.lock_holder("prod").unwrap().is_none());
    assert!(
        here.force_unlock("prod", "carol", "again")
            .unwrap()
            .is_none()
    );
    assert!(matches!(
        here.try_lock("prod", "b", &Owner::current()).unwrap(),
        Lock::Acquired {
            released_stale: None
        }
    ));
    let releases = here.lock_releases("a").unwrap();
    assert_eq!(releases.last().unwrap().why, Release::Forced);

    // The lost host comes back: its lease is gone, and so is its say.
    match there.renew("a", &twin()).unwrap() {
        Renewal::Lost { why } => assert!(why.contains("by force by carol"), "{why}"),
        other => panic!("{other:?}"),
    }
    let row = StageRow {
        name: "apply".into(),
        attempt,
        plugin: "terraform".into(),
        status: StageState::Succeeded,
        message: "applied".into(),
        outputs: json!({}),
        artifacts: json!([]),
        report: None,
        started: None,
        ended: None,
        duration_ms: None,
    };
    assert!(matches!(
        there.end_stage("a", Some(attempt), &row),
        Err(StoreError::Fenced { .. })
    ));
    assert!(matches!(
        there.finish_run("a", RunState::Succeeded, "t", None),
        Err(StoreError::Fenced { .. })
    ));
    assert_eq!(here.run("a").unwrap().status, RunState::Interrupted);
    // It cannot release the lock the new run holds either.
    there.unlock("prod", "a").unwrap();
    assert_eq!(here.lock_holder("prod").unwrap().unwrap().run_id, "b");
}

/// A live holder renews its lease; once another process claims its run, a
/// renewal says it is lost.
pub fn renewals_keep_the_lease_until_the_run_is_taken(open: &dyn Fn(Lease) -> Box<dyn RunStore>) {
    let one = open(Lease::default());
    let me = Owner::current();
    one.create_run(&new_run("a", "prod"), &me).unwrap();
    assert!(matches!(
        one.try_lock("prod", "a", &me).unwrap(),
        Lock::Acquired { .. }
    ));
    let before = one
        .lock_holder("prod")
        .unwrap()
        .unwrap()
        .lease_until
        .unwrap();
    match one.renew("a", &me).unwrap() {
        Renewal::Kept { until, stop: None } => assert!(until >= before),
        other => panic!("{other:?}"),
    }
    one.finish_run("a", RunState::Interrupted, "t", None)
        .unwrap();
    let other = open(Lease::default());
    assert!(other.claim_run("a", &twin()).unwrap());
    match one.renew("a", &me).unwrap() {
        Renewal::Lost { why } => assert!(why.contains("runs elsewhere now"), "{why}"),
        other => panic!("{other:?}"),
    }
}
