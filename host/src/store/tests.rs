use serde_json::json;

use super::*;

mod postgres_only;
mod postgres_tls;
mod stats_history;

use stats_history::{
    outcomes_are_every_run_but_drift_checks_with_its_timed_attempts,
    stats_from_outcomes_equal_stats_from_whole_runs,
};

/// Each test body, run on a new SQLite store and on a new PostgreSQL
/// database.
macro_rules! on_every_store {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(#[test]
            fn $name() {
                let (_dir, s) = super::sqlite();
                super::$name(&s)
            })*
        }
        mod postgres {
            $(#[test]
            fn $name() {
                super::$name(&super::postgres())
            })*
        }
    };
}

on_every_store!(
    a_run_and_its_stage_attempts_round_trip,
    run_ids_resolve_by_unique_prefix_or_suffix,
    an_ambiguous_name_lists_the_runs_it_names_prefixes_and_suffixes_alike,
    a_long_ambiguity_lists_the_first_candidates_and_counts_the_rest,
    a_whole_id_wins_over_the_longer_ids_it_is_a_prefix_of,
    latest_is_the_run_that_started_last_by_time_not_by_text,
    latest_of_an_empty_store_is_a_clear_error,
    runs_of_dead_processes_are_interrupted_and_their_locks_released,
    locks_are_held_by_live_and_paused_runs_and_stolen_from_dead_ones,
    approvals_and_pending_requests,
    requests_are_kept_after_they_are_answered,
    a_dead_runs_lock_is_kept_while_processes_in_its_cgroups_still_run,
    a_dead_runs_lock_is_kept_while_programs_it_started_still_run,
    drift_checks_are_kept_per_environment_oldest_first,
    objects_keep_the_order_of_their_keys,
    names_with_like_wildcards_match_only_themselves,
    outcomes_are_every_run_but_drift_checks_with_its_timed_attempts,
    stats_from_outcomes_equal_stats_from_whole_runs,
);

/// A new SQLite store (in a directory it creates).
fn sqlite() -> (tempfile::TempDir, SqliteStore) {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("nested/capstan.db")).unwrap();
    (dir, store)
}

/// A new PostgreSQL store: a new database on the test server.
fn postgres() -> PostgresStore {
    PostgresStore::open(&capstan_test_artifacts::postgres::database()).unwrap()
}

pub fn new_run(id: &str, env: &str) -> NewRun {
    NewRun {
        id: id.into(),
        pipeline: "p".into(),
        pipeline_file: "/p/pipeline.toml".into(),
        pipeline_digest: "d".into(),
        environment: env.into(),
        author: "alice".into(),
        kind: RunKind::Deploy,
        target: None,
        undoes: None,
        only: vec![],
        run_dir: format!("/p/.capstan/runs/{id}"),
        started: "2026-11-26T10:00:00Z".into(),
        plugins: json!([]),
        approvers: None,
        author_keys: Vec::new(),
    }
}

/// A process that has exited: its pid is free (or reused with another start time).
fn dead_owner() -> Owner {
    let mut child = std::process::Command::new("true").spawn().unwrap();
    let pid = child.id();
    child.wait().unwrap();
    Owner {
        pid,
        start: 1,
        ..Owner::current()
    }
}

fn ended(name: &str, status: StageState) -> StageRow {
    StageRow {
        name: name.into(),
        attempt: 0,
        plugin: "x".into(),
        status,
        message: "m".into(),
        outputs: json!({"k": 1}),
        artifacts: json!([]),
        report: None,
        started: Some("2026-11-26T10:00:01Z".into()),
        ended: Some("2026-11-26T10:00:02Z".into()),
        duration_ms: Some(1000),
    }
}

fn a_run_and_its_stage_attempts_round_trip(s: &dyn RunStore) {
    let me = Owner::current();
    s.create_run(&new_run("20261126-100000-aaaa", "dev"), &me)
        .unwrap();
    let a1 = s
        .start_stage("20261126-100000-aaaa", "build", "x", "t1")
        .unwrap();
    s.end_stage(
        "20261126-100000-aaaa",
        Some(a1),
        &ended("build", StageState::Failed),
    )
    .unwrap();
    let a2 = s
        .start_stage("20261126-100000-aaaa", "build", "x", "t2")
        .unwrap();
    assert_eq!((a1, a2), (1, 2));
    s.end_stage(
        "20261126-100000-aaaa",
        Some(a2),
        &ended("build", StageState::Succeeded),
    )
    .unwrap();
    s.end_stage(
        "20261126-100000-aaaa",
        None,
        &ended("smoke", StageState::Skipped),
    )
    .unwrap();
    s.finish_run("20261126-100000-aaaa", RunState::Succeeded, "t3", None)
        .unwrap();

    let run = s.run("20261126-100000").unwrap();
    assert_eq!(run.status, RunState::Succeeded);
    assert_eq!(run.ended.as_deref(), Some("t3"));
    assert_eq!(run.owner, me);
    let all = s.stages(&run.id).unwrap();
    assert_eq!(all.len(), 3, "every attempt is kept");
    let latest = latest_attempts(all);
    assert_eq!(latest.len(), 2);
    assert_eq!(
        (latest[0].name.as_str(), latest[0].attempt, latest[0].status),
        ("build", 2, StageState::Succeeded)
    );
    assert_eq!(latest[0].outputs, json!({"k": 1}));
}

fn started_at(id: &str, env: &str, started: &str) -> NewRun {
    NewRun {
        started: started.into(),
        ..new_run(id, env)
    }
}

fn run_ids_resolve_by_unique_prefix_or_suffix(s: &dyn RunStore) {
    let me = Owner::current();
    s.create_run(&new_run("20261126-100000-aaaa", "dev"), &me)
        .unwrap();
    s.create_run(&new_run("20261126-100000-bbbb", "dev"), &me)
        .unwrap();
    assert_eq!(
        s.run("20261126-100000-b").unwrap().id,
        "20261126-100000-bbbb"
    );
    assert_eq!(s.run("bbbb").unwrap().id, "20261126-100000-bbbb");
    assert_eq!(s.run("0-aaaa").unwrap().id, "20261126-100000-aaaa");
    assert!(matches!(
        s.run("20261126"),
        Err(StoreError::Ambiguous { .. })
    ));
    assert!(matches!(s.run("2025"), Err(StoreError::NoSuchRun(_))));
    assert!(matches!(s.run(""), Err(StoreError::NoSuchRun(_))));
    assert!(
        matches!(s.run("%"), Err(StoreError::NoSuchRun(_))),
        "LIKE wildcards are not patterns"
    );
    assert!(matches!(s.run("a_a"), Err(StoreError::NoSuchRun(_))));
}

fn an_ambiguous_name_lists_the_runs_it_names_prefixes_and_suffixes_alike(s: &dyn RunStore) {
    let me = Owner::current();
    // `2611` is a suffix of one id and a prefix of another.
    s.create_run(&new_run("20261126-100000-2611", "dev"), &me)
        .unwrap();
    s.create_run(&new_run("2611-other", "dev"), &me).unwrap();
    s.create_run(&new_run("20261126-100000-ffff", "dev"), &me)
        .unwrap();
    let err = s.run("2611").unwrap_err();
    match &err {
        StoreError::Ambiguous { given, matches } => {
            assert_eq!(given, "2611");
            assert_eq!(matches, &["20261126-100000-2611", "2611-other"]);
        }
        other => panic!("{other:?}"),
    }
    let text = err.to_string();
    assert!(text.contains("`2611` names 2 runs"), "{text}");
    assert!(
        text.contains("\n  20261126-100000-2611\n  2611-other\n"),
        "{text}"
    );
    assert!(err.is_unknown_run());
}

fn a_long_ambiguity_lists_the_first_candidates_and_counts_the_rest(s: &dyn RunStore) {
    let me = Owner::current();
    for i in 0..11 {
        s.create_run(&new_run(&format!("20261126-1000{i:02}-aaaa"), "dev"), &me)
            .unwrap();
    }
    let text = s.run("aaaa").unwrap_err().to_string();
    assert!(text.contains("`aaaa` names 11 runs"), "{text}");
    assert!(text.contains("20261126-100007-aaaa"), "{text}");
    assert!(!text.contains("20261126-100008-aaaa"), "{text}");
    assert!(text.contains("… and 3 more"), "{text}");
}

fn a_whole_id_wins_over_the_longer_ids_it_is_a_prefix_of(s: &dyn RunStore) {
    let me = Owner::current();
    s.create_run(&new_run("r1", "dev"), &me).unwrap();
    s.create_run(&new_run("r1x", "dev"), &me).unwrap();
    s.create_run(&new_run("xr1", "dev"), &me).unwrap();
    assert_eq!(s.run("r1").unwrap().id, "r1");
    assert_eq!(s.run("r1x").unwrap().id, "r1x");
}

fn latest_is_the_run_that_started_last_by_time_not_by_text(s: &dyn RunStore) {
    let me = Owner::current();
    // As text `….12Z` sorts after `….123Z`, and `…:00Z` after `…:00.5Z`;
    // as times they are earlier.
    s.create_run(
        &started_at("a-prod", "production", "2026-11-26T10:00:00.123Z"),
        &me,
    )
    .unwrap();
    s.create_run(
        &started_at("b-prod", "production", "2026-11-26T10:00:00.12Z"),
        &me,
    )
    .unwrap();
    s.create_run(&started_at("c-dev", "dev", "2026-11-26T09:00:00.5Z"), &me)
        .unwrap();
    s.create_run(&started_at("d-dev", "dev", "2026-11-26T09:00:00Z"), &me)
        .unwrap();
    assert_eq!(s.run("latest").unwrap().id, "a-prod");
    // Nanoseconds, as a run records them, parse too.
    s.create_run(
        &started_at("e-test", "test", "2026-11-26T10:00:01.123456789Z"),
        &me,
    )
    .unwrap();
    assert_eq!(s.run("latest").unwrap().id, "e-test");
    assert_eq!(s.run("latest@production").unwrap().id, "a-prod");
    assert_eq!(s.run("latest@dev").unwrap().id, "c-dev");
    // `capstan runs` agrees: newest first.
    let ids: Vec<String> = s
        .runs(&RunFilter::default())
        .unwrap()
        .into_iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(ids, ["e-test", "a-prod", "b-prod", "c-dev", "d-dev"]);
    // The latest run of an environment with none names those that have some.
    let err = s.run("latest@staging").unwrap_err();
    assert!(err.is_unknown_run());
    assert_eq!(
        err.to_string(),
        "no run of environment `staging` in the run store; runs are recorded for: dev, production, test"
    );
    assert_eq!(
        s.run("latest@").unwrap_err().to_string(),
        "`latest@` needs an environment after the `@`, e.g. `latest@dev`"
    );
    // Only `latest` itself is special.
    assert!(matches!(s.run("latest-ish"), Err(StoreError::NoSuchRun(_))));
}

fn latest_of_an_empty_store_is_a_clear_error(s: &dyn RunStore) {
    for given in ["latest", "latest@production"] {
        let err = s.run(given).unwrap_err();
        assert!(err.is_unknown_run());
        assert_eq!(err.to_string(), "no run in the run store yet");
    }
}

#[test]
fn run_names_parse() {
    assert_eq!(
        RunRef::parse("latest"),
        RunRef::Latest { environment: None }
    );
    assert_eq!(
        RunRef::parse("latest@production"),
        RunRef::Latest {
            environment: Some("production")
        }
    );
    assert_eq!(RunRef::parse("latestx"), RunRef::Id("latestx"));
    assert_eq!(RunRef::parse("7f3a"), RunRef::Id("7f3a"));
}

fn runs_of_dead_processes_are_interrupted_and_their_locks_released(s: &dyn RunStore) {
    let dead = dead_owner();
    s.create_run(&new_run("r1", "dev"), &dead).unwrap();
    s.start_stage("r1", "apply", "terraform", "t").unwrap();
    assert!(matches!(
        s.try_lock("dev", "r1", &dead).unwrap(),
        Lock::Acquired {
            released_stale: None
        }
    ));
    s.create_run(&new_run("r2", "dev"), &Owner::current())
        .unwrap();

    assert_eq!(s.reap().unwrap(), vec!["r1".to_string()]);
    assert_eq!(s.run("r1").unwrap().status, RunState::Interrupted);
    assert_eq!(
        s.run("r2").unwrap().status,
        RunState::Running,
        "a live run stays running"
    );
    let apply = &s.stages("r1").unwrap()[0];
    assert_eq!(apply.status, StageState::Interrupted);
    assert!(
        apply.message.contains("capstan resume r1"),
        "{}",
        apply.message
    );
    assert!(matches!(
        s.try_lock("dev", "r2", &Owner::current()).unwrap(),
        Lock::Acquired {
            released_stale: None
        }
    ));
}

fn locks_are_held_by_live_and_paused_runs_and_stolen_from_dead_ones(s: &dyn RunStore) {
    let me = Owner::current();
    for id in ["a", "b", "c"] {
        s.create_run(&new_run(id, "prod"), &me).unwrap();
    }
    assert!(matches!(
        s.try_lock("prod", "a", &me).unwrap(),
        Lock::Acquired { .. }
    ));
    assert!(
        matches!(s.try_lock("prod", "a", &me).unwrap(), Lock::Acquired { .. }),
        "re-entrant"
    );
    assert!(
        matches!(
            s.try_lock("staging", "b", &me).unwrap(),
            Lock::Acquired { .. }
        ),
        "per environment"
    );
    match s.try_lock("prod", "b", &me).unwrap() {
        Lock::Held(h) => assert_eq!(
            (h.run_id.as_str(), h.author.as_deref()),
            ("a", Some("alice"))
        ),
        other => panic!("{other:?}"),
    }

    // A paused run holds its lock although no process runs it.
    s.finish_run("a", RunState::AwaitingApproval, "t", None)
        .unwrap();
    assert!(matches!(
        s.try_lock("prod", "b", &me).unwrap(),
        Lock::Held(_)
    ));

    // Resumed by one process: no other may claim it, nor take its lock.
    let mut other = std::process::Command::new("sleep")
        .arg("30")
        .spawn()
        .unwrap();
    let other_owner = Owner::of(other.id()).unwrap();
    assert!(matches!(
        s.try_lock("prod", "a", &other_owner).unwrap(),
        Lock::Acquired { .. }
    ));
    // Both take the lock before either claims the run: the claim decides,
    // and the lock follows the run to the one that claimed it.
    assert!(matches!(
        s.try_lock("prod", "a", &me).unwrap(),
        Lock::Acquired { .. }
    ));
    assert!(s.claim_run("a", &other_owner).unwrap());
    assert!(!s.claim_run("a", &me).unwrap(), "claimed once");
    assert!(
        matches!(s.try_lock("prod", "a", &me).unwrap(), Lock::Held(_)),
        "another live process resumes it"
    );

    // A running run whose process died loses it, and is marked interrupted.
    other.kill().unwrap();
    other.wait().unwrap();
    match s.try_lock("prod", "b", &me).unwrap() {
        Lock::Acquired {
            released_stale: Some(h),
        } => assert_eq!(h.run_id, "a"),
        other => panic!("{other:?}"),
    }
    assert_eq!(s.run("a").unwrap().status, RunState::Interrupted);

    s.unlock("prod", "b").unwrap();
    assert!(matches!(
        s.try_lock("prod", "c", &me).unwrap(),
        Lock::Acquired {
            released_stale: None
        }
    ));
}

fn approvals_and_pending_requests(s: &dyn RunStore) {
    let keys = "bob ssh-ed25519 AAAA\n";
    let run = NewRun {
        approvers: Some(keys.into()),
        author_keys: vec!["SHA256:abc".into()],
        ..new_run("r", "prod")
    };
    s.create_run(&run, &Owner::current()).unwrap();
    let recorded = s.run("r").unwrap();
    assert_eq!(recorded.approvers.as_deref(), Some(keys));
    assert_eq!(recorded.author_keys, ["SHA256:abc"]);
    let pending = PendingApproval {
        stage: "approve".into(),
        digest: "sha".into(),
        subject: "apply".into(),
        details: String::new(),
        checklist: vec!["a".into()],
        approvers: vec![],
        required: 2,
        asked: "t".into(),
        image_digest: Some("img".into()),
    };
    s.ask_approval("r", &pending).unwrap();
    let asked = s.pending_approval("r").unwrap().unwrap();
    assert_eq!(
        (asked.required, asked.image_digest.as_deref()),
        (2, Some("img"))
    );
    s.record_approval(
        "r",
        &ApprovalRow {
            stage: "approve".into(),
            digest: "sha".into(),
            decision: Decision::Approved,
            by: "bob".into(),
            at: "t".into(),
            comment: Some("ok".into()),
            policy: ApprovalPolicy::Manual,
            override_reason: None,
            signature: Some("SIG".into()),
        },
    )
    .unwrap();
    let recorded = &s.approvals("r").unwrap()[0];
    assert_eq!(
        (recorded.by.as_str(), recorded.signature.as_deref()),
        ("bob", Some("SIG"))
    );
    s.end_stage("r", None, &ended("approve", StageState::Succeeded))
        .unwrap();
    assert!(
        s.pending_approval("r").unwrap().is_none(),
        "answered requests are no longer pending"
    );
}

fn requests_are_kept_after_they_are_answered(s: &dyn RunStore) {
    s.create_run(&new_run("r", "prod"), &Owner::current())
        .unwrap();
    let asked = |digest: &str, details: &str, at: &str| PendingApproval {
        stage: "approve".into(),
        digest: digest.into(),
        subject: "apply".into(),
        details: details.into(),
        checklist: vec!["no deletes".into()],
        approvers: vec![],
        required: 1,
        asked: at.into(),
        image_digest: None,
    };
    s.record_request("r", &asked("sha1", "plan 1", "2026-11-26T10:00:01Z"))
        .unwrap();
    s.ask_approval("r", &asked("sha1", "plan 1", "2026-11-26T10:00:01Z"))
        .unwrap();
    // Asked again for the same plan (a resume): replaced, not added.
    s.record_request("r", &asked("sha1", "plan 1", "2026-11-26T10:00:05Z"))
        .unwrap();
    // A new plan (re-planned): another request.
    s.record_request("r", &asked("sha2", "plan 2", "2026-11-26T10:01:00Z"))
        .unwrap();
    s.end_stage("r", None, &ended("approve", StageState::Succeeded))
        .unwrap();
    assert!(s.pending_approval("r").unwrap().is_none());
    let kept = s.approval_requests("r").unwrap();
    let seen: Vec<(&str, &str, &str)> = kept
        .iter()
        .map(|r| (r.digest.as_str(), r.details.as_str(), r.asked.as_str()))
        .collect();
    assert_eq!(
        seen,
        [
            ("sha1", "plan 1", "2026-11-26T10:00:05Z"),
            ("sha2", "plan 2", "2026-11-26T10:01:00Z")
        ]
    );
    assert_eq!(kept[1].checklist, ["no deletes"]);
    assert!(s.approval_requests("other").unwrap().is_empty());
}

/// A store written by a Capstan with schema version 1 (no kept requests,
/// no audit head) opens, migrated, with its runs and pending requests
/// readable.
#[test]
fn a_version_1_store_is_migrated() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("capstan.db");
    {
        let c = rusqlite::Connection::open(&path).unwrap();
        c.execute_batch(include_str!("schema.sql")).unwrap();
        c.pragma_update(None, "user_version", 1).unwrap();
        c.execute(
            "INSERT INTO runs (id, pipeline, pipeline_file, pipeline_digest, environment, author, \
             kind, only_stages, run_dir, status, started, plugins, owner_pid, owner_start, \
             owner_host) VALUES ('r1', 'p', '/p.toml', 'd', 'prod', 'alice', 'deploy', '[]', \
             '/r', 'awaiting-approval', '2026-11-26T10:00:00Z', '[]', 1, 1, 'h')",
            [],
        )
        .unwrap();
        c.execute(
            "INSERT INTO pending_approvals (run_id, stage, request) VALUES ('r1', 'approve', ?1)",
            [
                json!({"stage": "approve", "digest": "sha", "subject": "apply", "details": "plan",
                    "checklist": ["a"], "approvers": [], "required": 1, "asked": "t"})
                .to_string(),
            ],
        )
        .unwrap();
    }
    let s = SqliteStore::open(&path).expect("migrated");
    assert_eq!(s.run("r1").unwrap().status, RunState::AwaitingApproval);
    assert_eq!(s.pending_approval("r1").unwrap().unwrap().details, "plan");
    assert!(s.approval_requests("r1").unwrap().is_empty());
    assert_eq!(s.run("r1").unwrap().audit_head, None);
    assert_eq!(s.run("r1").unwrap().approvers, None);
    assert!(s.drift_checks(None).unwrap().is_empty());
    let version: i64 = rusqlite::Connection::open(&path)
        .unwrap()
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .unwrap();
    assert_eq!(version, 8);
}

#[test]
fn a_store_from_a_newer_capstan_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("capstan.db");
    drop(SqliteStore::open(&path).unwrap());
    SqliteStore::open(&path).expect("reopening migrates nothing");
    rusqlite::Connection::open(&path)
        .unwrap()
        .pragma_update(None, "user_version", 99)
        .unwrap();
    let err = SqliteStore::open(&path).err().expect("refused").to_string();
    assert!(
        err.contains("capstan.db") && err.contains("migrate"),
        "{err}"
    );
}

fn a_dead_runs_lock_is_kept_while_processes_in_its_cgroups_still_run(s: &dyn RunStore) {
    let dead = dead_owner();
    let me = Owner::current();
    // Unique: the cgroups are the machine's, and both stores run this.
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let run = format!("lock-{}-{n}", std::process::id());
    s.create_run(&new_run(&run, "dev"), &dead).unwrap();
    assert!(matches!(
        s.try_lock("dev", &run, &dead).unwrap(),
        Lock::Acquired { .. }
    ));
    // Started by a program of the run, never recorded: only its cgroup
    // tells that it belongs to the run.
    let (cg, mut grandchild) = crate::caps::exec::cgroup::sleep_in(&run, "apply");
    s.create_run(&new_run("r2", "dev"), &me).unwrap();

    assert_eq!(s.reap().unwrap(), vec![run.clone()]);
    match s.try_lock("dev", "r2", &me).unwrap() {
        Lock::Held(h) => assert_eq!(
            (h.run_status, h.live_children),
            (
                Some(RunState::Interrupted),
                vec![Owner::of(grandchild.id()).unwrap()]
            )
        ),
        other => panic!("{other:?}"),
    }
    drop(cg);
    grandchild.wait().unwrap();
    assert!(matches!(
        s.try_lock("dev", "r2", &me).unwrap(),
        Lock::Acquired {
            released_stale: Some(_)
        }
    ));
}

fn a_dead_runs_lock_is_kept_while_programs_it_started_still_run(s: &dyn RunStore) {
    let dead = dead_owner();
    let me = Owner::current();
    s.create_run(&new_run("r1", "dev"), &dead).unwrap();
    assert!(matches!(
        s.try_lock("dev", "r1", &dead).unwrap(),
        Lock::Acquired { .. }
    ));
    let mut child = std::process::Command::new("sleep")
        .arg("30")
        .spawn()
        .unwrap();
    let orphan = Owner::of(child.id()).unwrap();
    let mut detail = serde_json::to_value(&orphan).unwrap();
    detail["program"] = json!("terraform");
    s.audit(
        "r1",
        &AuditRow {
            time: "t".into(),
            stage: "apply".into(),
            plugin: "terraform".into(),
            capability: AuditKind::ExecStarted,
            allowed: true,
            detail,
            reason: None,
        },
        "h",
    )
    .unwrap();
    s.create_run(&new_run("r2", "dev"), &me).unwrap();

    assert_eq!(s.reap().unwrap(), vec!["r1".to_string()]);
    match s.try_lock("dev", "r2", &me).unwrap() {
        Lock::Held(h) => assert_eq!(
            (h.run_status, h.live_children),
            (Some(RunState::Interrupted), vec![orphan])
        ),
        other => panic!("{other:?}"),
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(matches!(
        s.try_lock("dev", "r2", &me).unwrap(),
        Lock::Acquired {
            released_stale: Some(_)
        }
    ));
}

fn drift_checks_are_kept_per_environment_oldest_first(s: &dyn RunStore) {
    let check = |env: &str, at: &str, drifted| DriftCheck {
        environment: env.into(),
        run_id: format!("r-{at}"),
        checked: at.into(),
        drifted,
        detail: json!({"plan": {"has_changes": drifted}}),
    };
    s.record_drift(&check("prod", "2026-11-02T00:00:00Z", true))
        .unwrap();
    s.record_drift(&check("dev", "2026-11-01T00:00:00Z", false))
        .unwrap();
    s.record_drift(&check("prod", "2026-11-01T00:00:00Z", false))
        .unwrap();
    let prod = s.drift_checks(Some("prod")).unwrap();
    assert_eq!(
        prod,
        [
            check("prod", "2026-11-01T00:00:00Z", false),
            check("prod", "2026-11-02T00:00:00Z", true)
        ]
    );
    assert_eq!(s.drift_checks(None).unwrap().len(), 3);
}

/// The backend-neutral lease tests ([`super::lease_tests`]), each on a
/// SQLite file and on a PostgreSQL database, opened by several handles as
/// several hosts would.
mod leases {
    use super::super::lease_tests as t;
    use super::*;

    fn on_each_store(test: fn(&dyn Fn(Lease) -> Box<dyn RunStore>)) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("capstan.db");
        test(&|lease| Box::new(SqliteStore::open(&path).unwrap().with_lease(lease)));
        let url = capstan_test_artifacts::postgres::database();
        test(&|lease| Box::new(PostgresStore::open(&url).unwrap().with_lease(lease)));
    }

    #[test]
    fn a_twin_hosts_lock_holds_while_its_lease_does() {
        on_each_store(t::a_twin_hosts_lock_holds_while_its_lease_does);
    }

    #[test]
    fn an_expired_lease_is_taken_over_and_recorded() {
        on_each_store(t::an_expired_lease_is_taken_over_and_recorded);
    }

    #[test]
    fn programs_on_a_lost_host_need_a_forced_unlock() {
        on_each_store(t::programs_on_a_lost_host_need_a_forced_unlock);
    }

    #[test]
    fn renewals_keep_the_lease_until_the_run_is_taken() {
        on_each_store(t::renewals_keep_the_lease_until_the_run_is_taken);
    }
}

/// Objects read back with their keys in the order they were written
/// (`capstan show` prints outputs and plugin records as plugins wrote them).
fn objects_keep_the_order_of_their_keys(s: &dyn RunStore) {
    let plugins = json!([{"name": "x", "sha256": "s", "allowed": {"z": 1, "a": 2}}]);
    let run = NewRun {
        plugins: plugins.clone(),
        ..new_run("r", "dev")
    };
    s.create_run(&run, &Owner::current()).unwrap();
    let row = StageRow {
        outputs: json!({"zeta": 1, "alpha": {"y": [2], "b": null}}),
        report: Some(json!({"z": "a\u{0}b", "a": 1})),
        ..ended("build", StageState::Succeeded)
    };
    s.end_stage("r", None, &row).unwrap();
    let detail = json!({"program": "terraform", "argv": ["plan"], "cwd": "/"});
    let event = AuditRow {
        time: "t".into(),
        stage: "build".into(),
        plugin: "x".into(),
        capability: AuditKind::ExecStarted,
        allowed: true,
        detail: detail.clone(),
        reason: None,
    };
    s.audit("r", &event, "h").unwrap();

    assert_eq!(s.run("r").unwrap().plugins.to_string(), plugins.to_string());
    let stage = &s.stages("r").unwrap()[0];
    assert_eq!(
        stage.outputs.to_string(),
        r#"{"zeta":1,"alpha":{"y":[2],"b":null}}"#
    );
    assert_eq!(
        stage.report.as_ref().unwrap().to_string(),
        r#"{"z":"a\u0000b","a":1}"#,
        "a NUL inside JSON is kept"
    );
    assert_eq!(
        s.audit_events("r").unwrap()[0].detail.to_string(),
        detail.to_string()
    );
}

/// Names are matched as text, never as patterns.
fn names_with_like_wildcards_match_only_themselves(s: &dyn RunStore) {
    let me = Owner::current();
    for id in ["a%c-1", "abc-1", "x_y", "xzy", r"b\d"] {
        s.create_run(&new_run(id, "dev"), &me).unwrap();
    }
    assert_eq!(s.run("a%").unwrap().id, "a%c-1");
    assert_eq!(s.run("_y").unwrap().id, "x_y");
    assert_eq!(s.run(r"\d").unwrap().id, r"b\d");
    assert!(matches!(s.run("-1"), Err(StoreError::Ambiguous { .. })));
}
