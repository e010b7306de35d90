//! Delivery metrics computed from run history: pure functions, no I/O.
//!
//! The store layer builds one [`RunFacts`] per run; [`compute`] turns a slice
//! of them and a [`Window`] into [`Stats`], which renders as text
//! ([`Stats::render_text`]), JSON (`serde_json` on [`Stats`]) or the
//! Prometheus text format ([`Stats::render_prometheus`]).
//!
//! # Definitions
//!
//! - A run is *in the window* if its environment matches (when given) and
//!   `started` ∈ [since, until). `since` defaults to the earliest `started`
//!   among runs of the environment (all runs if none given).
//! - Runs: counts per outcome. **Success rate** = succeeded / (succeeded +
//!   failed + rejected); null when the denominator is 0.
//! - **Stage durations**: per stage name, over finished attempts (succeeded or
//!   failed) of runs in the window: count, p50 and p95 by the nearest-rank
//!   method (the ⌈p·n⌉-th smallest value), in milliseconds; stages ordered by
//!   name.
//! - A **deployment** is a run (deploy or rollback) in the window with
//!   `verified == Some(true)`. **Deployment frequency** = deployments / window
//!   days, where window days = (until − since) / 86 400 s, at least 1.
//! - **Lead time** (for changes) = `ended − started` of each deploy-kind
//!   deployment (includes time spent waiting for approval); report count, p50
//!   (nearest rank) and mean, in seconds.
//! - A **change** is a deploy-kind run in the window whose verification ran
//!   (`verified.is_some()`). A change **failed** if its verification failed, or
//!   if a rollback run anywhere in the history `undoes` it (count it once even
//!   if both). **Change failure rate** = failed changes / changes; null when no
//!   changes.
//! - **Time to recovery**: per environment, walk the history in time order. A
//!   *failure event* is: the `ended` time of a deploy-kind run whose
//!   verification failed; and the `started` time of every rollback run (the
//!   moment someone acted on a bad deployment). A *recovery event* is the
//!   `ended` time of any deployment (`verified == Some(true)`, deploy or
//!   rollback kind) that no rollback `undoes`. An incident starts at a failure
//!   event when no incident is open and ends at the first recovery event after
//!   it; failure events during an open incident belong to it. **MTTR** = mean
//!   duration (seconds) of incidents that started in the window and have ended;
//!   also report `recoveries` (that count) and `open_incidents` (incidents
//!   started in the window and not yet recovered). null when no incident ended.
//!
//! # Edge cases
//!
//! - With no run of the environment at all, `since` defaults to `until` (an
//!   empty window).
//! - A deployment without an `ended` time is left out of lead time (the lead
//!   time `count` says how many were measured), and gives no recovery event;
//!   a deploy-kind run whose verification failed gives a failure event only
//!   once it has an `ended` time.
//! - "Undoes" means: a rollback-kind run, whatever its outcome, in any
//!   environment and at any time (inside the window or not), names the run in
//!   `undoes`. `undoes` on a deploy-kind run is ignored.
//! - Time to recovery walks the environment's whole history, not only the
//!   window: an incident opened before `since` is not counted, even if failure
//!   events inside the window belong to it; an incident that started in the
//!   window and recovered after `until` counts as recovered.
//! - Events at the same instant: failure events come first, so a recovery at
//!   the very instant an incident opens ends it (a 0 s incident).
//! - Without an environment, each environment is walked separately (a
//!   recovery in one does not end an incident in another); `recoveries` and
//!   `open_incidents` are summed and MTTR is the mean over all their
//!   incidents.
//! - Durations are taken as recorded; a negative one (clock skew) is not
//!   clamped.

pub mod drift;
mod percentile;
mod recovery;
mod render;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashSet};

use jiff::{SignedDuration, Timestamp};
use serde::Serialize;

use percentile::nearest_rank;

/// Deploy or rollback, where a run is in its life, and a timed stage
/// attempt: the run store's own types.
pub use crate::store::{RunKind, RunState, StageTime};

/// What the metrics need to know about one run; the store layer builds these.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunFacts {
    /// The run's id.
    pub id: String,
    /// The environment the run delivered to.
    pub environment: String,
    /// Deploy or rollback.
    pub kind: RunKind,
    /// For a rollback run: the id of the run it undid.
    pub undoes: Option<String>,
    /// How the run ended, or where it stands.
    pub status: RunState,
    /// When the run started.
    pub started: Timestamp,
    /// When the run ended; `None` while it runs or waits for approval.
    pub ended: Option<Timestamp>,
    /// Did the run's verification stages (smoke tests) run and pass?
    /// `None`: they did not run.
    pub verified: Option<bool>,
    /// Every finished attempt of every stage, in any order.
    pub stages: Vec<StageTime>,
}

/// Which runs the metrics cover: see the module documentation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Window {
    /// Only runs of this environment; `None`: all environments.
    pub environment: Option<String>,
    /// Start of the window (inclusive); `None`: the earliest `started` among
    /// runs of the environment.
    pub since: Option<Timestamp>,
    /// End of the window (exclusive), usually now.
    pub until: Timestamp,
}

/// Delivery metrics over one window; see the module documentation for the
/// definitions. Serializes with `snake_case` field names and unrounded floats.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Stats {
    /// The environment, or `None` for all environments.
    pub environment: Option<String>,
    /// Start of the window (inclusive), RFC 3339.
    pub since: String,
    /// End of the window (exclusive), RFC 3339.
    pub until: String,
    /// Runs in the window, per outcome.
    pub runs: RunCounts,
    /// succeeded / (succeeded + failed + rejected).
    pub success_rate: Option<f64>,
    /// Durations of finished stage attempts, ordered by stage name.
    pub stages: Vec<StageStats>,
    /// Runs in the window whose verification passed.
    pub deployments: u64,
    /// deployments / window days.
    pub deployment_frequency_per_day: f64,
    /// `ended − started` of deploy-kind deployments.
    pub lead_time: LeadTime,
    /// Deploy-kind runs in the window whose verification ran.
    pub changes: u64,
    /// Changes whose verification failed or that a rollback undoes.
    pub failed_changes: u64,
    /// `failed_changes / changes`.
    pub change_failure_rate: Option<f64>,
    /// Mean time to recovery, in seconds, of incidents that started in the
    /// window and have ended.
    pub mttr_s: Option<f64>,
    /// Incidents that started in the window and have ended.
    pub recoveries: u64,
    /// Incidents that started in the window and have not ended.
    pub open_incidents: u64,
    /// Drift per environment, from `capstan drift` checks.
    pub drift: Vec<drift::EnvDrift>,
}

/// Runs in the window, per outcome.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct RunCounts {
    /// All runs in the window.
    pub total: u64,
    /// Runs that succeeded.
    pub succeeded: u64,
    /// Runs that failed.
    pub failed: u64,
    /// Runs an approver rejected.
    pub rejected: u64,
    /// Runs waiting for approval.
    pub awaiting_approval: u64,
    /// Runs still running.
    pub running: u64,
    /// Runs that were interrupted.
    pub interrupted: u64,
    /// Runs ended by `capstan cancel` (neither a success nor a failure).
    pub cancelled: u64,
}

/// Durations of one stage's finished attempts in the window.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StageStats {
    /// The stage's name.
    pub name: String,
    /// Finished attempts (succeeded or failed).
    pub count: u64,
    /// Nearest-rank median, in milliseconds.
    pub p50_ms: u64,
    /// Nearest-rank 95th percentile, in milliseconds.
    pub p95_ms: u64,
}

/// Lead time for changes, in seconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct LeadTime {
    /// Deploy-kind deployments measured (those with an `ended` time).
    pub count: u64,
    /// Nearest-rank median.
    pub p50_s: Option<f64>,
    /// Arithmetic mean.
    pub mean_s: Option<f64>,
}

/// Computes the delivery metrics of `history` over `window` (definitions in
/// the module documentation). `history` may be in any order.
pub fn compute(history: &[RunFacts], window: &Window) -> Stats {
    let env = window.environment.as_deref();
    let of_env = |r: &&RunFacts| env.is_none_or(|e| r.environment == e);
    let until = window.until;
    let since = window
        .since
        .or_else(|| history.iter().filter(of_env).map(|r| r.started).min())
        .unwrap_or(until);
    let in_window: Vec<&RunFacts> = history
        .iter()
        .filter(of_env)
        .filter(|r| since <= r.started && r.started < until)
        .collect();
    let undone: HashSet<&str> = history
        .iter()
        .filter(|r| r.kind == RunKind::Rollback)
        .filter_map(|r| r.undoes.as_deref())
        .collect();

    let runs = count_runs(&in_window);
    let decided = runs.succeeded + runs.failed + runs.rejected;

    let deployments: Vec<&RunFacts> = in_window
        .iter()
        .copied()
        .filter(|r| r.verified == Some(true))
        .collect();
    let window_days = (until.duration_since(since).as_secs_f64() / 86_400.0).max(1.0);

    let changes: Vec<&RunFacts> = in_window
        .iter()
        .copied()
        .filter(|r| r.kind == RunKind::Deploy && r.verified.is_some())
        .collect();
    let failed_changes = changes
        .iter()
        .filter(|r| r.verified == Some(false) || undone.contains(r.id.as_str()))
        .count() as u64;

    let incidents = recovery::incidents(history, env, &undone, since, until);

    Stats {
        environment: window.environment.clone(),
        since: since.to_string(),
        until: until.to_string(),
        runs,
        success_rate: ratio(runs.succeeded, decided),
        stages: stage_stats(&in_window),
        deployments: deployments.len() as u64,
        deployment_frequency_per_day: deployments.len() as f64 / window_days,
        lead_time: lead_time(&deployments),
        changes: changes.len() as u64,
        failed_changes,
        change_failure_rate: ratio(failed_changes, changes.len() as u64),
        mttr_s: mean_secs(&incidents.recovered),
        recoveries: incidents.recovered.len() as u64,
        open_incidents: incidents.open,
        drift: Vec::new(),
    }
}

fn count_runs(runs: &[&RunFacts]) -> RunCounts {
    let mut c = RunCounts {
        total: runs.len() as u64,
        ..RunCounts::default()
    };
    for r in runs {
        *match r.status {
            RunState::Succeeded => &mut c.succeeded,
            RunState::Failed => &mut c.failed,
            RunState::Rejected => &mut c.rejected,
            RunState::AwaitingApproval => &mut c.awaiting_approval,
            RunState::Running => &mut c.running,
            RunState::Interrupted => &mut c.interrupted,
            RunState::Cancelled => &mut c.cancelled,
        } += 1;
    }
    c
}

fn stage_stats(runs: &[&RunFacts]) -> Vec<StageStats> {
    let mut by_name: BTreeMap<&str, Vec<u64>> = BTreeMap::new();
    for s in runs.iter().flat_map(|r| &r.stages) {
        by_name.entry(&s.name).or_default().push(s.duration_ms);
    }
    by_name
        .into_iter()
        .map(|(name, mut ms)| {
            ms.sort_unstable();
            StageStats {
                name: name.to_string(),
                count: ms.len() as u64,
                p50_ms: nearest_rank(&ms, 50).expect("a stage in the map has an attempt"),
                p95_ms: nearest_rank(&ms, 95).expect("a stage in the map has an attempt"),
            }
        })
        .collect()
}

fn lead_time(deployments: &[&RunFacts]) -> LeadTime {
    let mut times: Vec<SignedDuration> = deployments
        .iter()
        .filter(|r| r.kind == RunKind::Deploy)
        .filter_map(|r| Some(r.ended?.duration_since(r.started)))
        .collect();
    times.sort_unstable();
    LeadTime {
        count: times.len() as u64,
        p50_s: nearest_rank(&times, 50).map(|d| d.as_secs_f64()),
        mean_s: mean_secs(&times),
    }
}

/// `num / den`, or `None` when `den` is 0.
fn ratio(num: u64, den: u64) -> Option<f64> {
    (den > 0).then(|| num as f64 / den as f64)
}

/// The mean of `durations` in seconds (summed exactly in nanoseconds), or
/// `None` when there are none.
fn mean_secs(durations: &[SignedDuration]) -> Option<f64> {
    if durations.is_empty() {
        return None;
    }
    let total_ns: i128 = durations.iter().map(SignedDuration::as_nanos).sum();
    Some(total_ns as f64 / 1e9 / durations.len() as f64)
}
