//! The run's audit log: one JSON line per capability use or denial, appended
//! as it happens so that a crash loses nothing already recorded, and the same
//! event in the run store (where `capstan show` and `capstan audit --run`
//! read it).

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::Path;
use std::sync::{Arc, Mutex};

use serde::Serialize;
use serde_json::Value;

use crate::store::{AuditRow, RunStore};

/// One audit record.
#[derive(Debug, Clone, Serialize)]
pub struct Event<'a> {
    pub time: String,
    pub stage: &'a str,
    pub plugin: &'a str,
    /// `exec`, `read`, `write`, `env`, `connect`, `approval`, `limit`, `load`, `stage`.
    pub capability: &'a str,
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

    /// Append one event as a line.
    pub fn record(
        &self,
        stage: &str,
        plugin: &str,
        capability: &str,
        allowed: bool,
        detail: Value,
        reason: Option<String>,
    ) {
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
        let mut file = self.file.lock().expect("audit lock");
        let Some(file) = file.as_mut() else { return };
        // One write per line so concurrent stages never interleave a record.
        if let Err(e) = file.write_all(&line) {
            eprintln!("capstan: cannot append to the audit log: {e}");
        }
        if let Some((store, run)) = &self.store {
            let row = AuditRow {
                time: event.time,
                stage: event.stage.to_string(),
                plugin: event.plugin.to_string(),
                capability: event.capability.to_string(),
                allowed: event.allowed,
                detail: event.detail,
                reason: event.reason,
            };
            // The JSONL line above already holds the event: say so and go on.
            if let Err(e) = store.audit(run, &row) {
                eprintln!("capstan: {e} (the event is in the run's audit.jsonl)");
            }
        }
    }
}

/// An `AuditLog` bound to one stage.
#[derive(Clone)]
pub struct StageAudit {
    pub log: AuditLog,
    pub stage: String,
    pub plugin: String,
}

impl StageAudit {
    pub fn allowed(&self, capability: &str, detail: Value) {
        self.log
            .record(&self.stage, &self.plugin, capability, true, detail, None);
    }

    pub fn denied(&self, capability: &str, detail: Value, reason: impl Into<String>) {
        self.log.record(
            &self.stage,
            &self.plugin,
            capability,
            false,
            detail,
            Some(reason.into()),
        );
    }
}
