//! Environment locks: two runs on one environment never overlap. A run takes
//! its environment's lock before its first stage and keeps it until it ends
//! (also while it waits for approval: its plan must stay the one applied).
//! While it runs, its process renews the lock's lease (see `store::lease`);
//! a process that finds its run taken from it stops the run.
//! On one machine, a running host also holds the environment's
//! [`host_lock`](super::host_lock).

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::host_lock::{self, HostLock, Taken};
use super::stop::{Stop, StopRequest};
use crate::store::{
    Lock, LockHolder, LockRelease, Owner, Release, Renewal, RunStore, StoreError, lease,
};

/// Why the lock was not taken.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("environment `{}` is locked by run {}", .0.environment, .0.run_id)]
    Held(LockHolder),
    /// The store let the run in, but a process of this machine holds the
    /// environment's host lock: the store lost the holder's lock.
    #[error(
        "environment `{environment}` is in use by run {} on this machine (pid {} holds {}, since {}), \
         though the run store records no lock for it: the store may have lost records (was its \
         -wal file removed?)",
        holder.run, holder.pid, holder.path.display(), holder.since
    )]
    HeldHere {
        environment: String,
        holder: host_lock::Holder,
    },
    #[error("run {run} is being run by another process of this machine (pid {pid})")]
    SameRun { run: String, pid: u32 },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// How often a waiting run looks again.
const POLL: Duration = Duration::from_millis(250);

/// Take `environment`'s lock for `run`, waiting up to `wait` for the holder
/// to finish, and its host lock under `state_dir`. Returns the holder of a
/// stale lock that was released, and the host lock (held until dropped;
/// `None` where its file cannot be made, with a warning).
pub async fn acquire(
    store: &Arc<dyn RunStore>,
    state_dir: &Path,
    environment: &str,
    run: &str,
    wait: Option<Duration>,
) -> Result<(Option<LockRelease>, Option<HostLock>), LockError> {
    let me = Owner::current();
    let deadline = wait.map(|w| Instant::now() + w);
    let mut told = false;
    loop {
        let holder = match store.try_lock(environment, run, &me)? {
            Lock::Acquired { released_stale } => {
                match host_lock::try_take(state_dir, environment, run) {
                    Ok(Taken::Yes(host)) => return Ok((released_stale, Some(host))),
                    Ok(Taken::By(holder)) if holder.run == run => {
                        // Another process of this machine runs this very run
                        // (a second `capstan resume`): the lock is its own.
                        return Err(LockError::SameRun {
                            run: run.to_string(),
                            pid: holder.pid,
                        });
                    }
                    Ok(Taken::By(holder)) => {
                        // The store had no live lock of the holder's: the
                        // lock row is this run's, new.
                        store.unlock(environment, run)?;
                        if deadline.is_none_or(|d| Instant::now() >= d) {
                            return Err(LockError::HeldHere {
                                environment: environment.to_string(),
                                holder,
                            });
                        }
                        tokio::time::sleep(POLL).await;
                        continue;
                    }
                    // A second guard only: the store's lock stands.
                    Err(e) => {
                        eprintln!(
                            "warning: cannot take {}: {e}; runs on this machine rely on the run store's lock alone",
                            host_lock::path(state_dir, environment).display()
                        );
                        return Ok((released_stale, None));
                    }
                }
            }
            Lock::Held(holder) => holder,
        };
        let Some(deadline) = deadline.filter(|d| Instant::now() < *d) else {
            return Err(LockError::Held(holder));
        };
        if !told {
            super::events::emit(super::events::Event::LockWaited {
                environment,
                holder: &holder.run_id,
                up_to_s: deadline.saturating_duration_since(Instant::now()).as_secs(),
            });
            eprintln!(
                "environment `{environment}` is locked by run {} ({}); waiting up to {}…",
                holder.run_id,
                holder.run_status.map_or("starting", |s| s.as_str()),
                humantime::format_duration(Duration::from_secs(
                    deadline.saturating_duration_since(Instant::now()).as_secs()
                ))
            );
            told = true;
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Renew run `run`'s lease every third of its length until the task is
/// aborted. When the run turns out to be another process's now, or the
/// lease cannot be renewed before it ends (the store unreachable), the run
/// is stopped: past its lease another host may take the environment, and
/// two hosts must never act on it at once.
pub fn keep_lease(
    store: Arc<dyn RunStore>,
    run: String,
    stop: Stop,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let me = Owner::current();
        let lease = store.lease();
        // By this host's clock, conservatively: from before the request.
        let mut valid_until = Instant::now() + lease.duration;
        let mut warned = false;
        loop {
            tokio::time::sleep(lease.renew_every()).await;
            let asked = Instant::now();
            let (s, r, m) = (store.clone(), run.clone(), me.clone());
            let renewal = tokio::task::spawn_blocking(move || s.renew(&r, &m))
                .await
                .unwrap_or_else(|e| panic!("lease renewal panicked: {e}"));
            let reason = match renewal {
                Ok(Renewal::Kept { stop: asked_to, .. }) => {
                    valid_until = asked + lease.duration;
                    warned = false;
                    // Asked from another host; the run stays this host's
                    // (and renewed) while it winds down.
                    if let Some(a) = asked_to
                        && stop.requested().is_none()
                    {
                        let reason = a.reason.as_deref().map_or_else(
                            || "`capstan cancel` from another host".to_string(),
                            |r| format!("`capstan cancel` from another host: {r}"),
                        );
                        super::progress::println(&format!(
                            "[capstan] stopping run {run} ({}, by {}): its programs get SIGTERM, then SIGKILL after {}",
                            crate::text::inline(&reason),
                            crate::text::inline(&a.by),
                            humantime::format_duration(stop.grace)
                        ));
                        stop.request(StopRequest {
                            by: a.by,
                            reason,
                            fault: false,
                        });
                    }
                    continue;
                }
                Ok(Renewal::Lost { why }) => format!("this host no longer holds run {run}: {why}"),
                Err(e) if Instant::now() + lease.renew_every() < valid_until => {
                    if !warned {
                        super::progress::println(&format!(
                            "[capstan] warning: cannot renew the lease of run {run} (trying again): {e}"
                        ));
                        warned = true;
                    }
                    continue;
                }
                Err(e) => format!(
                    "its lease could not be renewed before it ends ({e}); it stops so that no other host acts beside it"
                ),
            };
            super::progress::println(&format!("[capstan] stopping run {run}: {reason}"));
            // Not cancelled: interrupted, for whoever holds it now to resume.
            stop.request(StopRequest::fault(reason));
            return;
        }
    })
}

/// The note for a lock taken over from a run that no longer held it.
pub fn took_over(stale: &LockRelease) -> String {
    let why = match stale.why {
        Release::LeaseExpired => format!(
            "its host ({}) stopped renewing its lease, which ended at {}",
            stale.holder,
            stale.lease_ended.as_deref().unwrap_or("?")
        ),
        Release::HostDied => format!("its host process ({}) is gone", stale.holder),
        Release::Ended | Release::Forced => "it had ended".to_string(),
    };
    format!(
        "took over the lock on `{}` from run {}: {why} (recorded; `capstan show {}` shows it)",
        stale.environment, stale.run_id, stale.run_id
    )
}

/// What a lock held by a run on a lost host means, and the way out.
pub fn lost_host(h: &LockHolder) -> String {
    let programs = h
        .live_children
        .iter()
        .map(|c| format!("pid {}", c.pid))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "ran on host {} ({}), which stopped renewing its lease at {}; programs it started there may still run \
         ({programs}), and nothing here can stop them.\n  If that host is lost for good (its programs cannot \
         be running), free the environment with `capstan unlock --env {} --force --reason \"…\"`; \
         then `capstan resume {}` continues the run here.",
        h.owner.host,
        h.owner,
        h.lease_until
            .map_or_else(|| "?".to_string(), lease::time_text),
        h.environment,
        h.run_id
    )
}

/// A running holder, and until when its lease holds when it is elsewhere.
pub fn running(h: &LockHolder) -> String {
    match h.lease_until.filter(|_| !h.owner.is_here()) {
        Some(until) => format!(
            "is running ({}, since {}; its lease runs until {} unless renewed)",
            h.owner,
            h.acquired,
            lease::time_text(until)
        ),
        None => format!("is running ({}, since {})", h.owner, h.acquired),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::run::testing::Runs;
    use crate::store::RunState;

    #[tokio::test]
    async fn a_host_lock_held_here_refuses_what_the_store_would_let_in_and_keeps_its_row() {
        let runs = Runs::new();
        let state = runs.dir.path();
        let store = &runs.store;
        // Run `r` paused for approval holds `dev` in the store, and another
        // process of this machine is continuing it (it holds the host lock).
        runs.run("r", RunState::AwaitingApproval);
        store.try_lock("dev", "r", &Owner::current()).unwrap();
        let Taken::Yes(continuing) = host_lock::try_take(state, "dev", "r").unwrap() else {
            panic!("free")
        };
        let again = acquire(store, state, "dev", "r", None).await.unwrap_err();
        assert!(
            matches!(&again, LockError::SameRun { run, .. } if run == "r"),
            "{again}"
        );
        assert!(
            matches!(store.try_lock("dev", "x", &Owner::current()).unwrap(), Lock::Held(h) if h.run_id == "r"),
            "the paused run keeps its lock row"
        );

        // The store lost that row: a new run gets it from the store, not here.
        store.unlock("dev", "r").unwrap();
        let refused = acquire(store, state, "dev", "y", None).await.unwrap_err();
        let text = refused.to_string();
        assert!(
            matches!(refused, LockError::HeldHere { .. })
                && text.contains("environment `dev` is in use by run r on this machine (pid ")
                && text.contains("locks/dev.lock"),
            "{text}"
        );
        assert!(
            matches!(
                store.try_lock("dev", "z", &Owner::current()).unwrap(),
                Lock::Acquired { .. }
            ),
            "the refused run left no lock row"
        );
        store.unlock("dev", "z").unwrap();
        drop(continuing);
        let (_, host) = acquire(store, state, "dev", "y", None).await.unwrap();
        assert!(host.is_some());
    }
}
