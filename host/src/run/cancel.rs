//! Cancelling a run (`capstan cancel`): which runs may be cancelled and
//! how, asking a live run's host to stop it, recording a run no process
//! runs as cancelled, and ending the programs it left running.

use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;
use serde_json::json;

use super::stop::CANCEL_REQUESTED;
use crate::caps::audit::{self, AppendError};
use crate::caps::exec::cgroup;
use crate::store::{AuditKind, Owner, RunRow, RunState, RunStore, StoreError};
use crate::text::inline;

/// How long programs get to die after SIGKILL before they count as left.
const AFTER_KILL: Duration = Duration::from_secs(5);

/// Why a run cannot be cancelled (or not entirely).
#[derive(Debug, thiserror::Error)]
pub enum CancelError {
    #[error("run {id} has ended ({state}); nothing to cancel")]
    Ended { id: String, state: RunState },
    #[error(
        "run {id}: its host process ({owner}) is gone; run `capstan cancel {id}` again to cancel the interrupted run"
    )]
    HostGone { id: String, owner: Owner },
    #[error("run {id}: cannot signal its host process ({owner}): {source}")]
    Signal {
        id: String,
        owner: Owner,
        #[source]
        source: nix::Error,
    },
    #[error(
        "run {id}: still running after {}; its host process is {owner}",
        humantime::format_duration(*waited)
    )]
    StillRunning {
        id: String,
        waited: Duration,
        owner: Owner,
    },
    #[error(
        "run {id} is cancelled, but programs it started still run after SIGKILL ({}); \
         environment `{environment}` stays locked until they end",
        left.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
    )]
    ProgramsLeft {
        id: String,
        environment: String,
        left: Vec<Orphan>,
    },
    /// The request could not be recorded for the run's host to read.
    #[error(transparent)]
    Audit(#[from] AppendError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What cancelling a run takes.
#[derive(Debug, PartialEq, Eq)]
pub enum Cancel {
    /// A live host process runs it: ask that process to stop it.
    Stop,
    /// A host process on another host runs it: ask through the store.
    Remote,
    /// No process runs it (paused, interrupted, failed): record it as
    /// cancelled and end what it left running.
    End,
}

/// How `run` is cancelled from this process, if it can be: a running run by
/// its host process (signalled here, or asked through the store when it runs
/// on another host), while that lives.
pub fn how(run: &RunRow) -> Result<Cancel, CancelError> {
    match run.status {
        RunState::AwaitingApproval | RunState::Interrupted | RunState::Failed => Ok(Cancel::End),
        // Its host reads the request when it renews its lease.
        RunState::Running if !run.owner.is_here() => Ok(Cancel::Remote),
        RunState::Running if !run.owner.is_alive() => Err(CancelError::HostGone {
            id: run.id.clone(),
            owner: run.owner.clone(),
        }),
        RunState::Running => Ok(Cancel::Stop),
        state @ (RunState::Succeeded | RunState::Rejected | RunState::Cancelled) => {
            Err(CancelError::Ended {
                id: run.id.clone(),
                state,
            })
        }
    }
}

/// Record who cancels and why (the host reads them from the store when
/// SIGTERM comes), then send the run's host SIGTERM.
pub fn request_stop(
    store: &Arc<dyn RunStore>,
    run: &RunRow,
    by: &str,
    reason: Option<&str>,
) -> Result<(), CancelError> {
    audit::append(
        store.clone(),
        run,
        "",
        AuditKind::Run,
        json!({ "event": CANCEL_REQUESTED, "by": by, "reason": reason }),
    )?;
    kill(Pid::from_raw(run.owner.pid as i32), Signal::SIGTERM).map_err(|source| {
        CancelError::Signal {
            id: run.id.clone(),
            owner: run.owner.clone(),
            source,
        }
    })
}

/// Wait (up to `wait`) until the run's host has stopped it; its state then.
pub async fn stopped(
    store: &dyn RunStore,
    run: &RunRow,
    wait: Duration,
) -> Result<RunState, CancelError> {
    let deadline = Instant::now() + wait;
    loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let now = store.run(&run.id)?;
        if now.status != RunState::Running || !run.owner.is_alive() {
            return Ok(now.status);
        }
        if Instant::now() >= deadline {
            return Err(CancelError::StillRunning {
                id: run.id.clone(),
                waited: wait,
                owner: run.owner.clone(),
            });
        }
    }
}

/// Record a run no process runs as cancelled by `by`, in its audit log and
/// in the store. Returns a warning when the audit log could not be appended
/// to (the run is cancelled all the same).
pub fn end(
    store: &Arc<dyn RunStore>,
    run: &RunRow,
    by: &str,
    reason: Option<&str>,
) -> Result<Option<AppendError>, CancelError> {
    let logged = audit::append(
        store.clone(),
        run,
        "",
        AuditKind::Run,
        json!({ "event": "cancelled", "by": by, "reason": reason, "was": run.status }),
    );
    let now = jiff::Timestamp::now().to_string();
    store.finish_run(&run.id, RunState::Cancelled, &now, None)?;
    Ok(logged.err())
}

/// A program a run started (recorded as `exec-started`, identified by pid
/// and start time) that outlived its host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Orphan {
    pub program: String,
    pub owner: Owner,
}

impl std::fmt::Display for Orphan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "`{}` ({})", inline(&self.program), self.owner)
    }
}

/// The programs `run` started that still run, and the processes those
/// started (found in the run's cgroups: a killed host never recorded them).
pub fn orphans(store: &dyn RunStore, run: &str) -> Result<Vec<Orphan>, StoreError> {
    let recorded: Vec<Orphan> = store
        .audit_events(run)?
        .iter()
        .filter_map(|e| e.started_program())
        .map(|(program, owner)| Orphan { owner, program })
        .filter(|o| o.owner.is_alive())
        .collect();
    Ok(with_cgroup_members(run, recorded))
}

/// `known` plus the processes in `run`'s cgroups that are not among them.
fn with_cgroup_members(run: &str, mut known: Vec<Orphan>) -> Vec<Orphan> {
    for pid in cgroup::run_members(run) {
        if known.iter().any(|o| o.owner.pid == pid as u32) {
            continue;
        }
        if let Some(owner) = Owner::of(pid as u32) {
            known.push(Orphan {
                program: command_line(pid),
                owner,
            });
        }
    }
    known
}

/// What process `pid` runs, as its command line (its name if it has none).
fn command_line(pid: i32) -> String {
    let argv = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let words: Vec<String> = argv
        .split(|b| *b == 0)
        .filter(|w| !w.is_empty())
        .map(|w| String::from_utf8_lossy(w).into_owned())
        .collect();
    if words.is_empty() {
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
        return comm.trim().to_string();
    }
    words.join(" ")
}

/// End `orphans` of run `run`, and everything else in its cgroups:
/// SIGTERM, SIGKILL after `grace`. Returns those still alive: the
/// environment stays locked until they end.
pub async fn end_orphans(run: &str, orphans: Vec<Orphan>, grace: Duration) -> Vec<Orphan> {
    let alive = || -> Vec<Orphan> {
        let alive = orphans.iter().filter(|o| o.owner.is_alive()).cloned();
        with_cgroup_members(run, alive.collect())
    };
    let signal = |signal: Signal| {
        for o in alive() {
            // A recorded program leads its own process group (see
            // caps::exec); a process found in a cgroup leads none, or one
            // of the run's own.
            let pid = Pid::from_raw(o.owner.pid as i32);
            let _ = killpg(pid, signal);
            let _ = kill(pid, signal);
        }
    };
    if alive().is_empty() {
        cgroup::kill_run(run);
        return Vec::new();
    }
    signal(Signal::SIGTERM);
    let deadline = Instant::now() + grace;
    while !alive().is_empty() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    signal(Signal::SIGKILL);
    let deadline = Instant::now() + AFTER_KILL;
    loop {
        // Also ends what forked since, and removes the cgroups emptied.
        cgroup::kill_run(run);
        let left = alive();
        if left.is_empty() || Instant::now() >= deadline {
            return left;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::run::testing::{Runs, exec_started, sleeper};
    use crate::store::AuditRow;

    #[test]
    fn a_live_run_is_stopped_by_its_host_and_others_are_ended_here() {
        let runs = Runs::new();
        let here = Owner::current();
        let mut live = runs.run("live", RunState::Running);
        assert_eq!(how(&live).unwrap(), Cancel::Stop);

        live.owner.host_id = "another-machine0".into();
        assert_eq!(how(&live).unwrap(), Cancel::Remote);
        live.owner = Owner {
            start: here.start + 1,
            ..here.clone()
        };
        assert_eq!(
            how(&live).unwrap_err().to_string(),
            format!(
                "run live: its host process ({}) is gone; run `capstan cancel live` again to cancel the interrupted run",
                live.owner
            )
        );

        for state in [
            RunState::AwaitingApproval,
            RunState::Interrupted,
            RunState::Failed,
        ] {
            let run = runs.run(state.as_str(), state);
            assert_eq!(how(&run).unwrap(), Cancel::End, "{state:?}");
        }
        for state in [RunState::Succeeded, RunState::Rejected, RunState::Cancelled] {
            let run = runs.run(state.as_str(), state);
            assert_eq!(
                how(&run).unwrap_err().to_string(),
                format!("run {state} has ended ({state}); nothing to cancel")
            );
        }
    }

    #[test]
    fn an_ended_run_is_recorded_with_who_and_why() {
        let runs = Runs::new();
        let store = &runs.store;
        let run = runs.run("r", RunState::AwaitingApproval);
        assert!(
            end(store, &run, "bob", Some("superseded"))
                .unwrap()
                .is_none()
        );
        assert_eq!(store.run("r").unwrap().status, RunState::Cancelled);
        let events = store.audit_events("r").unwrap();
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].capability, AuditKind::Run);
        assert_eq!(
            events[0].detail,
            json!({ "event": "cancelled", "by": "bob", "reason": "superseded", "was": "awaiting-approval" })
        );
        let line = std::fs::read_to_string(runs.dir.path().join("r/audit.jsonl")).unwrap();
        assert!(line.contains(r#""capability":"run""#), "{line}");

        // Without its run directory the store still records it, with a warning.
        let gone = runs.run("g", RunState::Failed);
        std::fs::remove_dir_all(&gone.run_dir).unwrap();
        let warning = end(store, &gone, "bob", None).unwrap().expect("a warning");
        assert!(
            warning.to_string().starts_with("cannot append to "),
            "{warning}"
        );
        assert_eq!(store.run("g").unwrap().status, RunState::Cancelled);
    }

    #[tokio::test]
    async fn programs_left_by_a_dead_host_are_ended() {
        let runs = Runs::new();
        runs.run("r", RunState::Interrupted);
        let (mut sleeper, live, dead) = sleeper();
        for event in [
            exec_started("apply", "sleep 600", &live),
            exec_started("apply", "sleep 600", &dead),
            AuditRow {
                capability: AuditKind::Exec,
                ..exec_started("apply", "sleep 600", &live)
            },
        ] {
            runs.store.audit("r", &event, "h").unwrap();
        }
        let found = orphans(runs.store.as_ref(), "r").unwrap();
        assert_eq!(
            found,
            [Orphan {
                program: "sleep 600".into(),
                owner: live.clone()
            }]
        );
        assert_eq!(found[0].to_string(), format!("`sleep 600` ({live})"));
        assert!(
            end_orphans("r", found, Duration::from_secs(60))
                .await
                .is_empty()
        );
        assert!(!live.is_alive());
        sleeper.wait().unwrap();
    }

    #[tokio::test]
    async fn processes_in_a_dead_runs_cgroups_are_ended_too() {
        let runs = Runs::new();
        let id = format!("cancel-{}", std::process::id());
        runs.run(&id, RunState::Interrupted);
        // A process the host never recorded (started by one of its
        // programs, say), left in the run's cgroup by the killed host.
        let (cg, mut left) = cgroup::sleep_in(&id, "apply");
        std::mem::forget(cg);
        let owner = Owner::of(left.id()).unwrap();
        let found = orphans(runs.store.as_ref(), &id).unwrap();
        assert_eq!(
            found,
            [Orphan {
                program: "sleep 600".into(),
                owner: owner.clone()
            }]
        );
        assert!(
            end_orphans(&id, found, Duration::from_secs(60))
                .await
                .is_empty()
        );
        assert!(!owner.is_alive());
        assert!(cgroup::run_members(&id).is_empty());
        left.wait().unwrap();
    }
}
