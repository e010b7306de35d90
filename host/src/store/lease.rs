//! Leases: how a run store tells a lock holder that is alive from one whose
//! host was lost, the same way for every backend.
//!
//! A running run's process renews its lease (on its run and on its
//! environment's lock) every third of [`Lease::duration`]. A process on
//! this host is judged by its pid (see [`Owner`]); one on another host only
//! by its lease: once the lease has run out, the host counts as lost. A lost
//! host's lock is taken over, with a note, unless programs the run started
//! there may still run (started, with no recorded exit): then only
//! `capstan unlock --force` frees it, because nothing here can stop them.
//! A holder that finds its lease taken stops its run (see `run::lease`).

use std::time::Duration;

use serde::Serialize;
use serde_json::Value;

use super::owner::Liveness;
use super::{LockHolder, Owner, Release, RunState};
use crate::caps::exec::cgroup;

/// How long a holder that stops renewing keeps its lock.
pub const DEFAULT_LEASE: Duration = Duration::from_secs(60);

/// The shortest lease accepted: renewals every third of it must keep up.
pub const MIN_LEASE: Duration = Duration::from_secs(1);

/// The environment variable that sets the lease (`90s`, `2m`).
pub const LEASE_VAR: &str = "CAPSTAN_LEASE";

/// The lease a process takes, and the clock it is measured by (the store's:
/// PostgreSQL's server clock, SQLite's host clock), in Unix milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lease {
    pub duration: Duration,
}

impl Default for Lease {
    fn default() -> Lease {
        Lease {
            duration: DEFAULT_LEASE,
        }
    }
}

impl Lease {
    /// `$CAPSTAN_LEASE`, else the default.
    pub fn from_env() -> Result<Lease, String> {
        match std::env::var(LEASE_VAR) {
            Ok(text) if !text.trim().is_empty() => Lease::parse(&text),
            _ => Ok(Lease::default()),
        }
    }

    pub fn parse(text: &str) -> Result<Lease, String> {
        let duration = humantime::parse_duration(text.trim())
            .map_err(|e| format!("{LEASE_VAR}=`{text}`: {e} (expected a duration such as 60s)"))?;
        if duration < MIN_LEASE {
            return Err(format!(
                "{LEASE_VAR}=`{text}`: a lease must last at least {}",
                humantime::format_duration(MIN_LEASE)
            ));
        }
        Ok(Lease { duration })
    }

    /// When a lease taken at `now_ms` ends.
    pub fn until(&self, now_ms: i64) -> i64 {
        now_ms.saturating_add(self.duration.as_millis() as i64)
    }

    /// How often the holder renews it.
    pub fn renew_every(&self) -> Duration {
        self.duration / 3
    }
}

/// Unix milliseconds by this host's clock.
pub fn now_ms() -> i64 {
    jiff::Timestamp::now().as_millisecond()
}

/// RFC 3339 text of Unix milliseconds.
pub fn time_text(ms: i64) -> String {
    jiff::Timestamp::from_millisecond(ms).map_or_else(|_| ms.to_string(), |t| t.to_string())
}

/// What a lock request finds about the run holding the lock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Its holder lives (or it waits for approval, or its host's lease has
    /// not run out yet): the lock stays.
    Held,
    /// Its host is gone but programs it started still run, or may (on a lost
    /// host): the lock stays. `lost`: only a forced unlock frees it.
    ProgramsLeft { children: Vec<Owner>, lost: bool },
    /// Nothing of it runs any more: the lock may be taken over.
    Free { why: Release },
}

/// Judge the holder of a lock another run wants. `programs` lists the
/// programs its run started that still run or may (see [`programs_left`]);
/// it is called only when the holder's process is gone, since it reads the
/// audit trail.
pub fn judge(holder: &LockHolder, now_ms: i64, programs: impl FnOnce() -> Vec<Owner>) -> Verdict {
    let live = match holder.owner.liveness() {
        Liveness::Alive => true,
        Liveness::Dead => false,
        Liveness::Elsewhere => holder.lease_until.is_none_or(|until| until > now_ms),
    };
    let lost = holder.owner.liveness() == Liveness::Elsewhere;
    let gone = if lost {
        Release::LeaseExpired
    } else {
        Release::HostDied
    };
    match holder.run_status {
        // A paused run holds its lock without a process, on purpose.
        Some(RunState::AwaitingApproval) => Verdict::Held,
        // No row yet: the holder is between taking the lock and recording
        // its run.
        Some(RunState::Running) | None if live => Verdict::Held,
        Some(RunState::Running | RunState::Interrupted) | None => {
            let children = programs();
            if children.is_empty() {
                Verdict::Free { why: gone }
            } else {
                Verdict::ProgramsLeft { children, lost }
            }
        }
        Some(_) => Verdict::Free {
            why: Release::Ended,
        },
    }
}

/// The record of a lock `run` took over from holder `h` at `now`.
pub fn taken_over(h: &LockHolder, why: Release, run: &str, now: i64) -> LockRelease {
    LockRelease {
        environment: h.environment.clone(),
        run_id: h.run_id.clone(),
        holder: h.owner.clone(),
        why,
        by: format!("run {run}"),
        reason: None,
        at: time_text(now),
        lease_ended: h
            .lease_until
            .filter(|_| why == Release::LeaseExpired)
            .map(time_text),
    }
}

/// Whether running run's `owner` is gone: dead here, or elsewhere with a
/// lease that ran out (runs from before leases, elsewhere, are never judged).
pub fn gone(owner: &Owner, lease_until: Option<i64>, now_ms: i64) -> bool {
    match owner.liveness() {
        Liveness::Alive => false,
        Liveness::Dead => true,
        Liveness::Elsewhere => lease_until.is_some_and(|u| u <= now_ms),
    }
}

/// Why a run was marked interrupted.
pub fn host_gone(run: &str, owner: &Owner, lease_until: Option<i64>) -> String {
    match lease_until.filter(|_| !owner.is_here()) {
        Some(until) => format!(
            "its host ({owner}) stopped renewing its lease, which ended at {}; `capstan resume {run}` continues it",
            time_text(until)
        ),
        None => format!("the host running it ({owner}) died; `capstan resume {run}` continues it"),
    }
}

/// Why a run's running stages were interrupted by `capstan unlock --force`.
pub fn forced_because(environment: &str, by: &str, reason: &str, run: &str) -> String {
    format!(
        "its lock on `{environment}` was released by force by {by} ({reason}); `capstan resume {run}` continues it"
    )
}

/// Why `owner` no longer runs `run`: `now` is the run's status and owner as
/// recorded, `forced` the latest forced release of its lock (by, reason).
pub fn lost_because(
    run: &str,
    owner: &Owner,
    now: Option<(String, Owner)>,
    forced: Option<(String, String)>,
) -> String {
    match (now, forced) {
        (_, Some((by, reason))) => {
            format!("its environment's lock was released by force by {by} ({reason})")
        }
        (Some((status, other)), None) if other != *owner => {
            format!("run {run} is {status} and runs elsewhere now ({other})")
        }
        (Some((status, _)), None) => format!("run {run} is {status} in the run store"),
        (None, None) => format!("run {run} is no longer in the run store"),
    }
}

/// One `exec-started` or `exec-exit` audit event of a run, as stored.
pub struct ExecEvent<'a> {
    pub capability: &'a str,
    pub stage: &'a str,
    pub detail: &'a str,
}

/// Programs run `run` started that still run (on this host: their pids and
/// the run's cgroups say) or may (on another host: started, and no exit
/// was recorded for them).
pub fn programs_left<'a>(run: &str, events: impl IntoIterator<Item = ExecEvent<'a>>) -> Vec<Owner> {
    let mut started: Vec<(String, Owner)> = Vec::new();
    for event in events {
        let Ok(detail) = serde_json::from_str::<Value>(event.detail) else {
            continue;
        };
        match event.capability {
            "exec-started" => {
                if let Ok(owner) = serde_json::from_value::<Owner>(detail) {
                    started.push((event.stage.to_string(), owner));
                }
            }
            // Exits record the pid since host ids exist; an older exit ends
            // the oldest open start of its stage.
            "exec-exit" => {
                let pid = detail["pid"].as_u64();
                if let Some(i) = started.iter().position(|(stage, o)| {
                    stage == event.stage && pid.is_none_or(|p| p == o.pid as u64)
                }) {
                    started.remove(i);
                }
            }
            _ => {}
        }
    }
    let mut left: Vec<Owner> = started
        .into_iter()
        .map(|(_, owner)| owner)
        .filter(|o| o.liveness() != Liveness::Dead)
        .collect();
    for pid in cgroup::run_members(run) {
        if let Some(p) = Owner::of(pid as u32)
            && !left.contains(&p)
        {
            left.push(p);
        }
    }
    left
}

/// A lock released without its run's consent, as recorded (shown by
/// `capstan show` of the run that held it).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LockRelease {
    pub environment: String,
    /// The run that held the lock.
    pub run_id: String,
    /// Its process when the lock was released.
    pub holder: Owner,
    pub why: Release,
    /// Who released it: a person (`--force`) or the run that took it over.
    pub by: String,
    pub reason: Option<String>,
    pub at: String,
    /// For a lease that ran out: when.
    pub lease_ended: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn holder(status: Option<RunState>, owner: Owner, lease_until: Option<i64>) -> LockHolder {
        LockHolder {
            environment: "prod".into(),
            run_id: "r".into(),
            owner,
            acquired: "2026-11-29T10:00:00Z".into(),
            run_status: status,
            author: None,
            live_children: Vec::new(),
            lease_until,
            lost: false,
        }
    }

    fn elsewhere() -> Owner {
        Owner {
            host_id: "another-machine0".into(),
            host: "twin".into(),
            ..Owner::current()
        }
    }

    fn dead_here() -> Owner {
        Owner {
            pid: u32::MAX - 1,
            ..Owner::current()
        }
    }

    const NOW: i64 = 1_800_000_000_000;

    #[test]
    fn a_live_holder_keeps_its_lock() {
        let none = || -> Vec<Owner> { panic!("not asked for a live holder") };
        let here = holder(Some(RunState::Running), Owner::current(), Some(NOW - 1));
        assert_eq!(
            judge(&here, NOW, none),
            Verdict::Held,
            "a live pid needs no lease"
        );
        let leased = holder(Some(RunState::Running), elsewhere(), Some(NOW + 1));
        assert_eq!(judge(&leased, NOW, none), Verdict::Held);
        let starting = holder(None, elsewhere(), Some(NOW + 1));
        assert_eq!(judge(&starting, NOW, none), Verdict::Held);
        let paused = holder(Some(RunState::AwaitingApproval), dead_here(), Some(NOW - 1));
        assert_eq!(judge(&paused, NOW, none), Verdict::Held);
    }

    #[test]
    fn a_lost_host_frees_its_lock_unless_its_programs_may_still_run() {
        let expired = holder(Some(RunState::Running), elsewhere(), Some(NOW - 1));
        assert_eq!(
            judge(&expired, NOW, Vec::new),
            Verdict::Free {
                why: Release::LeaseExpired
            }
        );
        let child = Owner {
            pid: 4242,
            ..elsewhere()
        };
        assert_eq!(
            judge(&expired, NOW, || vec![child.clone()]),
            Verdict::ProgramsLeft {
                children: vec![child],
                lost: true
            }
        );
        let dead = holder(Some(RunState::Running), dead_here(), None);
        assert_eq!(
            judge(&dead, NOW, Vec::new),
            Verdict::Free {
                why: Release::HostDied
            }
        );
        let ended = holder(Some(RunState::Succeeded), Owner::current(), None);
        assert_eq!(
            judge(&ended, NOW, Vec::new),
            Verdict::Free {
                why: Release::Ended
            }
        );
    }

    #[test]
    fn programs_left_on_another_host_are_those_without_an_exit() {
        let a = serde_json::json!({"program": "terraform", "pid": 10, "start": 5, "host": "twin", "host_id": "another-machine0"}).to_string();
        let b = serde_json::json!({"program": "ansible", "pid": 11, "start": 6, "host": "twin", "host_id": "another-machine0"}).to_string();
        let exit_a = serde_json::json!({"program": "terraform", "pid": 10, "status": {"code": 0}})
            .to_string();
        let events = [
            ExecEvent {
                capability: "exec-started",
                stage: "apply",
                detail: &a,
            },
            ExecEvent {
                capability: "exec-started",
                stage: "configure",
                detail: &b,
            },
            ExecEvent {
                capability: "exec-exit",
                stage: "apply",
                detail: &exit_a,
            },
        ];
        let left = programs_left("no-such-run", events);
        assert_eq!(left.len(), 1);
        assert_eq!(left[0].pid, 11);
        // An exit recorded without a pid (before host ids) ends its stage's start.
        let old_exit = serde_json::json!({"program": "ansible", "status": {"code": 0}}).to_string();
        let events = [
            ExecEvent {
                capability: "exec-started",
                stage: "configure",
                detail: &b,
            },
            ExecEvent {
                capability: "exec-exit",
                stage: "configure",
                detail: &old_exit,
            },
        ];
        assert!(programs_left("no-such-run", events).is_empty());
    }

    #[test]
    fn leases_parse_and_refuse_nonsense() {
        assert_eq!(
            Lease::parse("90s").unwrap().duration,
            Duration::from_secs(90)
        );
        assert_eq!(
            Lease::parse("3s").unwrap().renew_every(),
            Duration::from_secs(1)
        );
        assert!(Lease::parse("10ms").unwrap_err().contains("at least 1s"));
        assert!(Lease::parse("soon").unwrap_err().contains("CAPSTAN_LEASE"));
        assert_eq!(Lease::default().until(1000), 61_000);
    }
}
