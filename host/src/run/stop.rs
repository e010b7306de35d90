//! Stopping a run: Ctrl-C (SIGINT), SIGTERM, or `capstan cancel` from
//! another process (which records who and why, then sends SIGTERM). No new
//! stage or program starts; every program the run started gets SIGTERM,
//! then SIGKILL after a grace period (at once on a second Ctrl-C); the
//! plugins are interrupted; the run and its stages are recorded as
//! cancelled; and the environment lock is released only when no program of
//! the run is left.

use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use tokio::sync::watch;

use crate::caps::exec::tree;
use crate::store::{AuditKind, RunStore};

/// Default time programs get between SIGTERM and SIGKILL.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(10);

/// Who stops a run, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StopRequest {
    pub by: String,
    pub reason: String,
    /// Capstan stops the run itself because it cannot go on recording it
    /// safely (the run store's files were removed under it): the run is
    /// recorded as interrupted, to be resumed, not as cancelled.
    pub fault: bool,
}

impl StopRequest {
    /// Capstan stops the run: `reason` says why it cannot go on.
    pub fn fault(reason: impl std::fmt::Display) -> StopRequest {
        StopRequest {
            by: "capstan".to_string(),
            reason: reason.to_string(),
            fault: true,
        }
    }

    /// How a stage it stopped ended, for its record.
    pub fn stage_reason(&self) -> String {
        if self.fault {
            format!("stopped by capstan: {}", self.reason)
        } else {
            format!("cancelled by {}: {}", self.by, self.reason)
        }
    }
}

#[derive(Debug, Clone, Default)]
struct State {
    request: Option<StopRequest>,
    /// No grace any more: kill what is left now.
    at_once: bool,
}

/// A run's stop switch, shared by the scheduler, every stage and every
/// program it starts.
#[derive(Debug, Clone)]
pub struct Stop {
    state: Arc<watch::Sender<State>>,
    /// Time programs get between SIGTERM and SIGKILL.
    pub grace: Duration,
}

impl Stop {
    pub fn new(grace: Duration) -> Stop {
        Stop {
            state: Arc::new(watch::Sender::new(State::default())),
            grace,
        }
    }

    /// Ask the run to stop; the first request is the one recorded.
    pub fn request(&self, request: StopRequest) {
        self.state.send_if_modified(|s| {
            let first = s.request.is_none();
            s.request.get_or_insert(request);
            first
        });
    }

    /// Stop waiting for programs to end: kill them now.
    pub fn kill_now(&self) {
        self.state
            .send_if_modified(|s| !std::mem::replace(&mut s.at_once, true));
    }

    /// The request, once the run is asked to stop.
    pub fn requested(&self) -> Option<StopRequest> {
        self.state.borrow().request.clone()
    }

    /// Wait until the run is asked to stop.
    pub async fn stopped(&self) -> StopRequest {
        let mut rx = self.state.subscribe();
        let state = rx
            .wait_for(|s| s.request.is_some())
            .await
            .expect("the sender lives in self");
        state.request.clone().expect("waited for it")
    }

    /// Wait until the grace period is cut short.
    pub async fn killed(&self) {
        let mut rx = self.state.subscribe();
        let _ = rx.wait_for(|s| s.at_once).await;
    }

    /// End every program this host started: SIGTERM, then SIGKILL after
    /// the grace period (or at once after [`Stop::kill_now`]). Returns
    /// how many were still there for SIGKILL.
    pub async fn end_programs(&self) -> usize {
        let deadline = Instant::now() + self.grace;
        tree::signal(&tree::own_descendants(), Signal::SIGTERM);
        let killed = self.killed();
        tokio::pin!(killed);
        loop {
            if tree::own_descendants().is_empty() {
                return 0;
            }
            if Instant::now() >= deadline {
                break;
            }
            tokio::select! {
                () = &mut killed => break,
                () = tokio::time::sleep(Duration::from_millis(100)) => {}
            }
        }
        let mut left = 0;
        // Children that fork while being killed are caught on a later pass.
        for _ in 0..50 {
            let pids = tree::own_descendants();
            if pids.is_empty() {
                break;
            }
            left = left.max(pids.len());
            tree::signal(&pids, Signal::SIGKILL);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        left
    }

    /// Wait (up to `limit`) until no program this host started is alive.
    pub async fn programs_ended(limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        loop {
            if tree::own_descendants().is_empty() {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// The audit event `capstan cancel` records for a live run before it sends
/// the run's host SIGTERM; the host reads who and why from it.
pub const CANCEL_REQUESTED: &str = "cancel-requested";

/// Turn SIGINT and SIGTERM into stop requests for `stop` (the run `run`).
/// A second SIGINT kills the programs at once. Without this, a signal would
/// kill the host and leave its programs running.
pub fn listen(
    stop: Stop,
    store: Arc<dyn RunStore>,
    run: String,
    operator: String,
) -> Option<tokio::task::JoinHandle<()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut int), Ok(mut term)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) else {
        eprintln!(
            "warning: cannot catch SIGINT/SIGTERM; stopping the host would leave its programs running"
        );
        return None;
    };
    Some(tokio::spawn(async move {
        loop {
            let request = tokio::select! {
                Some(()) = int.recv() => StopRequest {
                    by: operator.clone(),
                    reason: "interrupted (Ctrl-C)".into(),
                    fault: false,
                },
                Some(()) = term.recv() => cancel_request(&*store, &run).unwrap_or(StopRequest {
                    by: operator.clone(),
                    reason: "terminated (SIGTERM)".into(),
                    fault: false,
                }),
                else => return,
            };
            if stop.requested().is_none() {
                super::progress::println(&format!(
                    "[capstan] stopping run {run} ({}, by {}): its programs get SIGTERM, then SIGKILL after {}; \
                     press Ctrl-C again to kill them at once.",
                    request.reason,
                    request.by,
                    humantime::format_duration(stop.grace)
                ));
                stop.request(request);
            } else {
                super::progress::println(&format!(
                    "[capstan] killing every program of run {run} at once (SIGKILL)."
                ));
                stop.kill_now();
            }
        }
    }))
}

/// How often a running host looks at the run store's files (default 2 s;
/// `CAPSTAN_STORE_WATCH`, e.g. `500ms`).
fn watch_every() -> Duration {
    std::env::var("CAPSTAN_STORE_WATCH")
        .ok()
        .and_then(|v| humantime::parse_duration(&v).ok())
        .unwrap_or(Duration::from_secs(2))
}

/// Look at the run store's health every few seconds while the run goes on
/// (between its writes too: a stage may write nothing for an hour), and
/// stop the run when its files were removed or replaced: another process
/// may be using a store without this run's records.
pub fn watch_store(stop: Stop, store: Arc<dyn RunStore>) -> tokio::task::JoinHandle<()> {
    let every = watch_every();
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(every).await;
            let store = store.clone();
            // A write may hold the store for its busy timeout: not on this thread.
            let health = tokio::task::spawn_blocking(move || store.check_health()).await;
            if let Ok(Err(e)) = health {
                if stop.requested().is_none() {
                    super::progress::println(&format!(
                        "[capstan] stopping the run: {e}; its programs get SIGTERM, then SIGKILL after {}.",
                        humantime::format_duration(stop.grace)
                    ));
                }
                stop.request(StopRequest::fault(e));
                return;
            }
        }
    })
}

/// The newest `capstan cancel` request recorded for `run`.
fn cancel_request(store: &dyn RunStore, run: &str) -> Option<StopRequest> {
    let events = store.audit_events(run).ok()?;
    let event = events.iter().rev().find(|e| {
        e.capability == AuditKind::Run && e.detail["event"].as_str() == Some(CANCEL_REQUESTED)
    })?;
    Some(StopRequest {
        by: event.detail["by"].as_str().unwrap_or("unknown").to_string(),
        reason: event.detail["reason"]
            .as_str()
            .map_or("`capstan cancel`".to_string(), |r| {
                format!("`capstan cancel`: {r}")
            }),
        fault: false,
    })
}
