//! The run's audit log: one JSON line per capability use or denial, appended
//! as it happens so that a crash loses nothing already recorded, and the same
//! event in the run store (where `capstan show` and `capstan audit --run`
//! read it).

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde::Serialize;
use serde_json::Value;

use super::log::LogSink;
use crate::store::{AuditKind, AuditRow, RunRow, RunStore};

/// One audit record.
#[derive(Debug, Clone, Serialize)]
pub struct Event<'a> {
    pub time: String,
    pub stage: &'a str,
    pub plugin: &'a str,
    pub capability: AuditKind,
    /// What was asked or done (argv, cwd, exit status, …).
    pub detail: Value,
    pub allowed: bool,
    /// For denials and failures: why.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// Append-only JSONL audit log shared by every stage of a run.
#[derive(Clone)]
pub struct AuditLog {
    /// `None` where nothing can happen worth recording (describing a plugin,
    /// which has no capabilities).
    file: Arc<Mutex<Option<File>>>,
    /// The run store and the run's id.
    store: Option<(Arc<dyn RunStore>, String)>,
}

impl AuditLog {
    pub fn open(path: &Path, store: Arc<dyn RunStore>, run: &str) -> std::io::Result<AuditLog> {
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        Ok(AuditLog {
            file: Arc::new(Mutex::new(Some(file))),
            store: Some((store, run.to_string())),
        })
    }

    pub fn discard() -> AuditLog {
        AuditLog {
            file: Arc::new(Mutex::new(None)),
            store: None,
        }
    }

    /// Append one event as a line; returns the line's length.
    pub fn record(
        &self,
        stage: &str,
        plugin: &str,
        capability: AuditKind,
        allowed: bool,
        detail: Value,
        reason: Option<String>,
    ) -> u64 {
        let event = Event {
            time: jiff::Timestamp::now().to_string(),
            stage,
            plugin,
            capability,
            detail,
            allowed,
            reason,
        };
        let mut line = serde_json::to_vec(&event).expect("audit events serialize");
        line.push(b'\n');
        let size = line.len() as u64;
        let mut file = self.file.lock().expect("audit lock");
        let Some(file) = file.as_mut() else {
            return size;
        };
        // One write per line so concurrent stages never interleave a record.
        if let Err(e) = file.write_all(&line) {
            eprintln!("capstan: cannot append to the audit log: {e}");
        }
        if let Some((store, run)) = &self.store {
            let row = AuditRow {
                time: event.time,
                stage: event.stage.to_string(),
                plugin: event.plugin.to_string(),
                capability: event.capability,
                allowed: event.allowed,
                detail: event.detail,
                reason: event.reason,
            };
            // The JSONL line above already holds the event: say so and go on.
            if let Err(e) = store.audit(run, &row) {
                eprintln!("capstan: {e} (the event is in the run's audit.jsonl)");
            }
        }
        size
    }
}

/// The audit log of a run could not be appended to.
#[derive(Debug, thiserror::Error)]
#[error("cannot append to {}: {source}", path.display())]
pub struct AppendError {
    pub path: PathBuf,
    #[source]
    pub source: std::io::Error,
}

/// Append one event of Capstan's own (`plugin` "capstan") to the audit log
/// of a run this process does not run, and to the run store: a decision,
/// a cancellation.
pub fn append(
    store: Arc<dyn RunStore>,
    run: &RunRow,
    stage: &str,
    kind: AuditKind,
    detail: Value,
) -> Result<(), AppendError> {
    let path = Path::new(&run.run_dir).join("audit.jsonl");
    let log = AuditLog::open(&path, store, &run.id).map_err(|source| AppendError {
        path: path.clone(),
        source,
    })?;
    log.record(stage, "capstan", kind, true, detail, None);
    Ok(())
}

/// An `AuditLog` bound to one stage, whose records count against the
/// stage's output limit (a stage cannot flood the audit log with denials).
#[derive(Clone)]
pub struct StageAudit {
    pub log: AuditLog,
    pub stage: String,
    pub plugin: String,
    /// The stage's output budget (its log sink).
    pub budget: LogSink,
}

impl StageAudit {
    /// Records nothing (a plugin describing itself can do nothing worth
    /// recording); `budget` still counts.
    pub fn discard(budget: LogSink) -> StageAudit {
        StageAudit {
            log: AuditLog::discard(),
            stage: String::new(),
            plugin: String::new(),
            budget,
        }
    }

    pub fn allowed(&self, capability: AuditKind, detail: Value) {
        let n = self
            .log
            .record(&self.stage, &self.plugin, capability, true, detail, None);
        let _ = self.budget.charge(n);
    }

    pub fn denied(&self, capability: AuditKind, detail: Value, reason: impl Into<String>) {
        let n = self.log.record(
            &self.stage,
            &self.plugin,
            capability,
            false,
            detail,
            Some(reason.into()),
        );
        let _ = self.budget.charge(n);
    }

    /// Record an event the host decided on (a failure, a limit) without
    /// charging the stage for it.
    pub fn host(
        &self,
        capability: AuditKind,
        allowed: bool,
        detail: Value,
        reason: Option<String>,
    ) {
        self.log.record(
            &self.stage,
            &self.plugin,
            capability,
            allowed,
            detail,
            reason,
        );
    }

    /// Count `bytes` the stage's request will have written (e.g. an approval
    /// request kept in the run store) against its output limit.
    pub fn charge(&self, bytes: usize) -> wasmtime::Result<()> {
        let _ = self.budget.charge(bytes as u64);
        self.within_budget()
    }

    /// Refuse further requests once the stage is over its output limit: the
    /// stage ends, named, instead of producing more records.
    pub fn within_budget(&self) -> wasmtime::Result<()> {
        if self.budget.exceeded() {
            return Err(wasmtime::Error::msg(
                "output limit exceeded: the stage's output and audit records passed its max_output",
            ));
        }
        Ok(())
    }
}
