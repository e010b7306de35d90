//! Run history: runs, stage attempts, approvals, audit events and
//! environment locks, behind one small interface ([`RunStore`]): the
//! executor does not know where they are kept ([`Location`]). The embedded
//! implementation is SQLite ([`sqlite`]); teams share a PostgreSQL server
//! ([`postgres`]).
//!
//! Every method is one transaction: a host killed at any instant leaves the
//! record as it was before or after a change, never half of one.

pub mod fence;
pub mod lease;
pub mod location;
mod outcomes;
pub mod owner;
pub mod postgres;
mod rows;
pub mod run_id;
pub mod sqlite;
mod words;

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::Value;

pub use lease::{Lease, LockRelease};
pub use location::Location;
pub use owner::Owner;
pub use postgres::PostgresStore;
pub use run_id::RunRef;
pub use sqlite::{Access, SqliteStore};
pub use words::{ApprovalPolicy, AuditKind, Decision, Release, RunKind, RunState, StageState};

/// What went wrong talking to the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("run store {path}: {source}")]
    Sqlite {
        path: String,
        #[source]
        source: rusqlite::Error,
    },
    #[error("run store {path}: cannot migrate the schema: {source}")]
    Migration {
        path: String,
        #[source]
        source: rusqlite_migration::Error,
    },
    #[error("{}", postgres::describe(url, source))]
    Postgres {
        /// The server's URL, its password redacted.
        url: String,
        #[source]
        source: postgres::PgError,
    },
    #[error("no run `{0}` in the run store (list runs with `capstan runs`)")]
    NoSuchRun(String),
    /// `latest` or `latest@<environment>` with no such run.
    #[error("{}", run_id::no_latest(environment.as_deref(), known))]
    NoLatest {
        environment: Option<String>,
        /// The environments that have runs.
        known: Vec<String>,
    },
    #[error("{}", run_id::ambiguous(given, matches))]
    Ambiguous {
        given: String,
        /// Every id it names, sorted.
        matches: Vec<String>,
    },
    #[error(
        "run {run} is no longer this process's to record (it is {status}, last run by {owner}): its lease ran out, \
         or its lock was released by force (`capstan show {run}` says which)"
    )]
    Fenced {
        run: String,
        status: RunState,
        owner: Owner,
    },
    /// `PRAGMA quick_check` failed after an unclean shutdown: nothing may be
    /// recorded in it until it is recovered.
    #[error("{}", sqlite::health::damaged(path, problems))]
    Damaged { path: String, problems: Vec<String> },
    /// A write command on a store it cannot write (a read-only state dir).
    #[error("{}", sqlite::health::read_only(path, why))]
    ReadOnly { path: String, why: String },
    /// A store with an older schema, opened read-only: it cannot be migrated.
    #[error(
        "run store {path} has schema version {version}, older than this Capstan's ({latest}), and it \
         can only be read here, so it cannot be upgraded: run any write command (e.g. `capstan run`) \
         once with write access to it and its directory; read commands work after that"
    )]
    Outdated {
        path: String,
        version: i64,
        latest: i64,
    },
    /// One of the store's files (the database, its WAL or its shared-memory
    /// index) was removed or replaced while this process had it open.
    #[error("run store {path}: {what}")]
    Replaced { path: String, what: String },
    /// The file system holding the store is full.
    #[error(
        "run store {path}: no space left on device (SQLite: database or disk is full); nothing more \
         can be recorded until space is freed on the file system holding it"
    )]
    Full { path: String },
    #[error("run store: a stored {what} is not valid JSON: {source}")]
    Json {
        what: &'static str,
        #[source]
        source: serde_json::Error,
    },
}

impl StoreError {
    /// Whether the error is about how a run was named (a usage error), not
    /// about the store.
    pub fn is_unknown_run(&self) -> bool {
        matches!(
            self,
            StoreError::NoSuchRun(_) | StoreError::NoLatest { .. } | StoreError::Ambiguous { .. }
        )
    }

    /// Whether the message already says what to do (no generic hint about
    /// the store's path and permissions is added).
    pub fn says_how_to_fix(&self) -> bool {
        matches!(
            self,
            StoreError::Damaged { .. }
                | StoreError::ReadOnly { .. }
                | StoreError::Outdated { .. }
                | StoreError::Replaced { .. }
                | StoreError::Full { .. }
        )
    }

    /// Whether the file system holding the store is full.
    pub fn is_disk_full(&self) -> bool {
        matches!(self, StoreError::Full { .. })
    }

    /// Whether one of the store's files was removed or replaced under this
    /// process: the run that uses it must stop.
    pub fn is_replaced(&self) -> bool {
        matches!(self, StoreError::Replaced { .. })
    }
}

pub type Result<T> = std::result::Result<T, StoreError>;

/// A run as recorded.
#[derive(Debug, Clone, Serialize)]
pub struct RunRow {
    pub id: String,
    pub pipeline: String,
    pub pipeline_file: String,
    /// sha256 of the pipeline file when the run started; a resume refuses
    /// a changed file.
    pub pipeline_digest: String,
    pub environment: String,
    pub author: String,
    pub kind: RunKind,
    /// For a rollback: the run whose reused outputs it deploys.
    pub target: Option<String>,
    /// For a rollback: the run it undoes.
    pub undoes: Option<String>,
    /// `--only` stages (empty: all).
    pub only: Vec<String>,
    pub run_dir: String,
    pub status: RunState,
    pub started: String,
    pub ended: Option<String>,
    /// Whether the verification stages (those no other stage needs, e.g.
    /// smoke tests) ran and passed; `None`: they did not run.
    pub verified: Option<bool>,
    /// Plugins as loaded when the run started (name, path, sha256, …).
    pub plugins: Value,
    /// The process that runs it now (or last did).
    pub owner: Owner,
    /// The sha256 of the last line of its `audit.jsonl` when an event was
    /// last recorded (see `caps::audit::chain`); `None`: none was chained.
    pub audit_head: Option<String>,
    /// The approvers' keys (`allowed_signers` text) listed when the run
    /// started; `None`: none, approvals are names only.
    pub approvers: Option<String>,
    /// Fingerprints of the listed keys the author's ssh-agent held when the
    /// run started: their signatures are the author's.
    pub author_keys: Vec<String>,
}

/// A new run, before its first stage.
#[derive(Debug, Clone)]
pub struct NewRun {
    pub id: String,
    pub pipeline: String,
    pub pipeline_file: String,
    pub pipeline_digest: String,
    pub environment: String,
    pub author: String,
    pub kind: RunKind,
    pub target: Option<String>,
    pub undoes: Option<String>,
    pub only: Vec<String>,
    pub run_dir: String,
    pub started: String,
    pub plugins: Value,
    /// See [`RunRow::approvers`].
    pub approvers: Option<String>,
    /// See [`RunRow::author_keys`].
    pub author_keys: Vec<String>,
}

/// One attempt of one stage. A resumed run adds attempts; earlier ones stay.
#[derive(Debug, Clone, Serialize)]
pub struct StageRow {
    pub name: String,
    pub attempt: u32,
    pub plugin: String,
    pub status: StageState,
    /// Summary (succeeded) or reason (other statuses).
    pub message: String,
    pub outputs: Value,
    pub artifacts: Value,
    pub report: Option<Value>,
    pub started: Option<String>,
    pub ended: Option<String>,
    pub duration_ms: Option<u64>,
}

impl StageRow {
    /// This attempt as `runs.stage_times` keeps it (`[stage, duration_ms,
    /// succeeded]`), if it is one `capstan stats` times: it succeeded or
    /// failed and has a duration.
    pub(crate) fn stage_time(&self) -> Option<Value> {
        let succeeded = match self.status {
            StageState::Succeeded => true,
            StageState::Failed => false,
            _ => return None,
        };
        Some(serde_json::json!([self.name, self.duration_ms?, succeeded]))
    }
}

/// What the delivery metrics (`capstan stats`) need of one run: how it
/// went and how long its stage attempts took, none of the rest of its row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunOutcome {
    pub id: String,
    pub environment: String,
    pub kind: RunKind,
    /// See [`RunRow::undoes`].
    pub undoes: Option<String>,
    pub status: RunState,
    /// When it started; `None`: its start is not an RFC 3339 time.
    pub started: Option<jiff::Timestamp>,
    /// When it ended (or paused); `None`: it has not, or its end is not an
    /// RFC 3339 time.
    pub ended: Option<jiff::Timestamp>,
    /// See [`RunRow::verified`].
    pub verified: Option<bool>,
    /// Its succeeded or failed stage attempts that have a duration, in any
    /// order.
    pub stages: Vec<StageTime>,
}

/// One finished attempt (succeeded or failed) of a stage, timed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StageTime {
    /// The stage's name in the pipeline, one allocation shared by all its
    /// attempts: a long history has tens of thousands, of a few stages.
    pub name: Arc<str>,
    /// Wall-clock time of the attempt, in milliseconds.
    pub duration_ms: u64,
    /// Whether this attempt succeeded.
    pub succeeded: bool,
}

/// One person's (or policy's) decision on an approval request.
#[derive(Debug, Clone, Serialize)]
pub struct ApprovalRow {
    pub stage: String,
    /// The digest the decision is for (e.g. the plan file's sha256).
    pub digest: String,
    pub decision: Decision,
    pub by: String,
    pub at: String,
    pub comment: Option<String>,
    pub policy: ApprovalPolicy,
    /// An emergency override's reason.
    pub override_reason: Option<String>,
    /// The approver's SSH signature over the decision's statement
    /// (`caps::approval::signature`); `None`: unsigned.
    pub signature: Option<String>,
}

/// An approval request as it was asked: what a paused run waits on, and
/// (kept after it is answered) what the reviewers saw.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PendingApproval {
    pub stage: String,
    pub digest: String,
    pub subject: String,
    pub details: String,
    pub checklist: Vec<String>,
    pub approvers: Vec<String>,
    pub required: u32,
    pub asked: String,
    /// The image the approved plan deploys (the approval stage's
    /// `image_digest`), part of a signed statement.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_digest: Option<String>,
}

/// One audit event, as `audit.jsonl` has it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AuditRow {
    pub time: String,
    pub stage: String,
    pub plugin: String,
    pub capability: AuditKind,
    pub allowed: bool,
    pub detail: Value,
    pub reason: Option<String>,
}

impl AuditRow {
    /// For an `exec-started` event: the program a stage started and its
    /// process (which may outlive the host that started it).
    pub fn started_program(&self) -> Option<(String, Owner)> {
        if self.capability != AuditKind::ExecStarted {
            return None;
        }
        let owner = serde_json::from_value(self.detail.clone()).ok()?;
        let program = self.detail["program"].as_str().unwrap_or("?").to_string();
        Some((program, owner))
    }
}

/// Which runs to list.
#[derive(Debug, Clone, Default)]
pub struct RunFilter {
    pub environment: Option<String>,
    pub limit: Option<usize>,
}

/// The answer to a lock request.
#[derive(Debug, Clone)]
pub enum Lock {
    Acquired {
        /// A lock left by a run whose process is gone (or whose host lost
        /// its lease), released to take it; recorded.
        released_stale: Option<LockRelease>,
    },
    Held(LockHolder),
}

/// `capstan cancel` of a run running on another host, as recorded for that
/// host to read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StopAsked {
    pub by: String,
    pub reason: Option<String>,
}

/// How a running run's lease renewal went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Renewal {
    /// The lease now ends at this time (Unix ms, by the store's clock).
    /// `stop`: someone asked, from another host, to stop the run.
    Kept { until: i64, stop: Option<StopAsked> },
    /// The run is no longer this process's to run: its lock was released by
    /// force, or another process took the run over. It must stop.
    Lost { why: String },
}

/// Who holds an environment's lock.
#[derive(Debug, Clone, Serialize)]
pub struct LockHolder {
    pub environment: String,
    pub run_id: String,
    pub owner: Owner,
    pub acquired: String,
    pub run_status: Option<RunState>,
    pub author: Option<String>,
    /// Programs the run started that still run (they outlive a killed
    /// host), or may (started on a lost host, no exit recorded).
    pub live_children: Vec<Owner>,
    /// When the holder's lease ends (Unix ms, the store's clock); `None`:
    /// taken before leases existed.
    pub lease_until: Option<i64>,
    /// Its host (another machine) stopped renewing the lease, and programs
    /// it started may still run there: only `capstan unlock --force` frees
    /// the lock.
    pub lost: bool,
}

/// The run store. One call, one transaction.
pub trait RunStore: Send + Sync {
    /// Record a new run, owned by `owner`, in state `running`.
    fn create_run(&self, run: &NewRun, owner: &Owner) -> Result<()>;
    /// Take over a paused, interrupted or failed run to continue it
    /// (`capstan resume`), and its lock if it has one; `false` if it is in
    /// no such state (e.g. another process claimed it first).
    fn claim_run(&self, id: &str, owner: &Owner) -> Result<bool>;
    /// Record how the run ended (or paused), and whether its verification
    /// stages passed.
    fn finish_run(
        &self,
        id: &str,
        status: RunState,
        at: &str,
        verified: Option<bool>,
    ) -> Result<()>;
    /// Record a new attempt of a stage as running; returns its number.
    fn start_stage(&self, run: &str, stage: &str, plugin: &str, at: &str) -> Result<u32>;
    /// Record a stage's end (or a stage decided without running: skipped,
    /// reused), as the given attempt, or a new one when `attempt` is `None`;
    /// the run's timed attempts ([`RunStore::outcomes`]) are rewritten with
    /// it.
    fn end_stage(&self, run: &str, attempt: Option<u32>, row: &StageRow) -> Result<()>;
    /// Record an event, and `head`, the hash of the `audit.jsonl` line
    /// that holds it: the run's audit chain now ends there.
    fn audit(&self, run: &str, event: &AuditRow, head: &str) -> Result<()>;
    fn ask_approval(&self, run: &str, pending: &PendingApproval) -> Result<()>;
    fn record_approval(&self, run: &str, decision: &ApprovalRow) -> Result<()>;

    /// A run as a person names it ([`RunRef`]): its id, `latest`,
    /// `latest@<environment>`, or a unique prefix or suffix of its id.
    fn run(&self, id: &str) -> Result<RunRow>;
    fn runs(&self, filter: &RunFilter) -> Result<Vec<RunRow>>;
    /// Every attempt of every stage, oldest first.
    fn stages(&self, run: &str) -> Result<Vec<StageRow>>;
    /// The latest attempt of `stage` (what a run about to start it again
    /// needs, without reading every stage of a long run).
    fn last_attempt(&self, run: &str, stage: &str) -> Result<Option<StageRow>>;
    /// Every run but drift checks, in any order, with what `capstan stats`
    /// needs of it ([`RunOutcome`]): one row per run, its timed stage
    /// attempts kept with it (`stage_times`, rewritten by
    /// [`RunStore::end_stage`]) rather than read from every stage row.
    fn outcomes(&self) -> Result<Vec<RunOutcome>>;
    fn approvals(&self, run: &str) -> Result<Vec<ApprovalRow>>;
    fn pending_approval(&self, run: &str) -> Result<Option<PendingApproval>>;
    /// Keep a request as it was asked, answered or not, for `capstan show`;
    /// the same stage asking again for the same digest replaces it.
    fn record_request(&self, run: &str, request: &PendingApproval) -> Result<()>;
    /// Every request the run's stages asked, oldest first.
    fn approval_requests(&self, run: &str) -> Result<Vec<PendingApproval>>;
    fn audit_events(&self, run: &str) -> Result<Vec<AuditRow>>;
    /// Keep the result of a drift check (`capstan drift`).
    fn record_drift(&self, check: &DriftCheck) -> Result<()>;
    /// Drift checks, oldest first (of one environment, or all).
    fn drift_checks(&self, environment: Option<&str>) -> Result<Vec<DriftCheck>>;

    /// Take `environment`'s lock for `run`, unless a live run holds it. A
    /// run waiting for approval holds its lock without a process.
    fn try_lock(&self, environment: &str, run: &str, owner: &Owner) -> Result<Lock>;
    fn unlock(&self, environment: &str, run: &str) -> Result<()>;
    /// How long a holder that stops renewing keeps its lock.
    fn lease(&self) -> Lease;
    /// Renew the lease of running run `run`, if `owner` still runs it.
    fn renew(&self, run: &str, owner: &Owner) -> Result<Renewal>;
    /// Ask the host running `run` (elsewhere) to stop it: it reads the
    /// request when it next renews its lease. `false`: the run is not
    /// running.
    fn request_stop(&self, run: &str, asked: &StopAsked) -> Result<bool>;
    /// Release `environment`'s lock whoever holds it (`capstan unlock
    /// --force`): its run, if it was running, is marked interrupted, and the
    /// release recorded for `capstan show`. `None`: it was not locked.
    fn force_unlock(
        &self,
        environment: &str,
        by: &str,
        reason: &str,
    ) -> Result<Option<LockRelease>>;
    /// The holder of `environment`'s lock, judged as a lock request would
    /// judge it (its children looked for when its process is gone).
    fn lock_holder(&self, environment: &str) -> Result<Option<LockHolder>>;
    /// Locks run `run` held that were released without it, oldest first.
    fn lock_releases(&self, run: &str) -> Result<Vec<LockRelease>>;
    /// Mark runs whose process died as interrupted (and their running
    /// stages too); returns their ids.
    fn reap(&self) -> Result<Vec<String>>;

    /// Whether this process can go on recording in the store: an error
    /// when one of its files was removed or replaced since it was opened
    /// (see `sqlite::health`), from then on. Cheap: a running host asks
    /// every few seconds.
    fn check_health(&self) -> Result<()> {
        Ok(())
    }
}

/// One `capstan drift` check of an environment.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DriftCheck {
    pub environment: String,
    /// The drift run (its plans are in its run directory).
    pub run_id: String,
    /// When the check ended (RFC 3339).
    pub checked: String,
    pub drifted: bool,
    /// Per checked stage: whether its plan has changes, and their summary.
    pub detail: Value,
}

/// The latest attempt of each stage, in first-seen order.
pub fn latest_attempts(rows: Vec<StageRow>) -> Vec<StageRow> {
    let mut latest: indexmap::IndexMap<String, StageRow> = indexmap::IndexMap::new();
    for row in rows {
        let keep = latest
            .get(&row.name)
            .is_none_or(|old| row.attempt >= old.attempt);
        if keep {
            latest.insert(row.name.clone(), row);
        }
    }
    latest.into_values().collect()
}

#[cfg(test)]
mod lease_tests;
#[cfg(test)]
mod tests;
