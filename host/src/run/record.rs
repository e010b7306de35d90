//! What a run did, as `run.json` has it and as run-store rows.

use std::path::Path;

use serde::Serialize;
use serde_json::{Map, Value};

use super::Prepared;
use super::stage::{StageStatus, path_text};
use crate::store::{RunState, StageRow, StageState};

/// One stage's record in `run.json`.
#[derive(Debug, Clone, Serialize)]
pub struct StageRecord {
    pub name: String,
    pub plugin: String,
    #[serde(flatten)]
    pub status: StageStatus,
    pub started: Option<String>,
    pub duration_ms: Option<u64>,
    pub log: String,
}

/// What a run did, as written to `run.json`.
#[derive(Debug, Clone, Serialize)]
pub struct RunRecord {
    pub run_id: String,
    pub pipeline: String,
    pub pipeline_file: String,
    /// sha256 of the pipeline file (`capstan verify` compares it with the
    /// run store's and the stages' start records).
    pub pipeline_digest: String,
    pub environment: String,
    pub author: String,
    pub status: RunState,
    pub started: String,
    pub duration_ms: u64,
    pub plugins: Vec<PluginRecord>,
    pub stages: Vec<StageRecord>,
}

/// How a plugin was loaded for the run.
#[derive(Debug, Clone, Serialize)]
pub struct PluginRecord {
    pub name: String,
    pub path: String,
    pub sha256: String,
    pub contract: String,
    /// Whether the compiled form came from the cache.
    pub cache: crate::runtime::cache::CacheUse,
    /// Read, check, compile or deserialize, link, describe.
    pub load_ms: f64,
}

impl StageRecord {
    /// The record as a run-store row.
    pub fn row(&self, ended: Option<String>) -> StageRow {
        let (status, message) = match &self.status {
            StageStatus::Succeeded { summary, .. } => (StageState::Succeeded, summary),
            StageStatus::Failed { reason } => (StageState::Failed, reason),
            StageStatus::AwaitingApproval { reason } => (StageState::AwaitingApproval, reason),
            StageStatus::Skipped { reason } => (StageState::Skipped, reason),
            StageStatus::Cancelled { reason } => (StageState::Cancelled, reason),
        };
        let mut row = StageRow {
            name: self.name.clone(),
            attempt: 0,
            plugin: self.plugin.clone(),
            status,
            message: message.clone(),
            outputs: Value::Object(Map::new()),
            artifacts: Value::Array(Vec::new()),
            report: None,
            started: self.started.clone(),
            ended,
            duration_ms: self.duration_ms,
        };
        if let StageStatus::Succeeded {
            outputs,
            artifacts,
            report,
            ..
        } = &self.status
        {
            row.outputs = Value::Object(outputs.clone());
            row.artifacts = serde_json::json!(artifacts);
            row.report = report.clone();
        }
        row
    }

    /// A stage a run recorded as finished (see [`StageState::is_finished`]),
    /// as the executor keeps it: it does not run again, and what it output
    /// is there for the stages after it. `run_dir` is the recording run's.
    pub fn finished(row: StageRow, run_dir: &str) -> StageRecord {
        let log = Path::new(run_dir)
            .join("logs")
            .join(format!("{}.log", row.name));
        StageRecord {
            name: row.name,
            plugin: row.plugin,
            status: StageStatus::Succeeded {
                summary: row.message,
                outputs: row.outputs.as_object().cloned().unwrap_or_default(),
                artifacts: serde_json::from_value(row.artifacts).unwrap_or_default(),
                report: row.report,
            },
            started: row.started,
            duration_ms: row.duration_ms,
            log: log.display().to_string(),
        }
    }
}

/// Whether the pipeline's verification stages (those no other stage needs,
/// e.g. smoke tests) all ran and passed; `None` if any did not run. Stages
/// that run after failures (`run_if` other than `success`, such as a
/// notifier) report on the run and verify nothing: they are left out, and
/// what they need is judged instead.
pub fn verified(pipeline: &crate::pipeline::Pipeline, stages: &[StageRecord]) -> Option<bool> {
    let checks = || {
        pipeline
            .stages
            .values()
            .filter(|s| s.run_if == crate::pipeline::RunIf::Success)
    };
    let sinks = checks()
        .map(|s| &s.name)
        .filter(|name| !checks().any(|s| s.needs.contains(name)));
    let mut all = true;
    for sink in sinks {
        match stages.iter().find(|s| &s.name == sink).map(|s| &s.status) {
            Some(StageStatus::Succeeded { .. }) => {}
            Some(StageStatus::Failed { .. }) => all = false,
            _ => return None,
        }
    }
    Some(all)
}

/// How each plugin of the run was loaded.
pub fn plugin_records(prepared: &Prepared) -> Vec<PluginRecord> {
    prepared
        .plugins
        .iter()
        .map(|(name, p)| PluginRecord {
            name: name.clone(),
            path: path_text(&p.path),
            sha256: p.digest.clone(),
            contract: p.contract.clone(),
            cache: p.cache,
            load_ms: p.load_time.as_secs_f64() * 1000.0,
        })
        .collect()
}
