//! The run directory, `.capstan/runs/<run-id>/`:
//!
//! ```text
//! run.json        what happened (stages, statuses, times, summaries)
//! outputs.json    every finished stage's outputs, rewritten as stages finish
//! audit.jsonl     every capability use and denial
//! logs/<stage>.log
//! stages/<stage>/ each stage's work dir
//! ```

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde::Serialize;
use serde_json::{Map, Value};

/// One run's directory.
#[derive(Debug, Clone)]
pub struct RunDir {
    pub id: String,
    pub path: PathBuf,
}

impl RunDir {
    /// Create a new run directory under `<state>/runs/` with a fresh,
    /// sortable id (`20261126-101500-7f3a`).
    pub fn create(state: &Path) -> std::io::Result<RunDir> {
        let now = jiff::Zoned::now().with_time_zone(jiff::tz::TimeZone::UTC);
        loop {
            let id = format!(
                "{}-{:04x}",
                now.strftime("%Y%m%d-%H%M%S"),
                fastrand::u16(..)
            );
            let path = state.join("runs").join(&id);
            match std::fs::create_dir_all(path.parent().expect("runs dir"))
                .and_then(|()| std::fs::create_dir(&path))
            {
                Ok(()) => {
                    std::fs::create_dir(path.join("logs"))?;
                    std::fs::create_dir(path.join("stages"))?;
                    let path = path.canonicalize()?;
                    return Ok(RunDir { id, path });
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(e),
            }
        }
    }

    pub fn audit(&self) -> PathBuf {
        self.path.join("audit.jsonl")
    }

    pub fn log(&self, stage: &str) -> PathBuf {
        self.path.join("logs").join(format!("{stage}.log"))
    }

    pub fn stage_dir(&self, stage: &str) -> PathBuf {
        self.path.join("stages").join(stage)
    }

    /// The stage's work dir, created empty.
    pub fn work_dir(&self, stage: &str) -> std::io::Result<PathBuf> {
        let dir = self.stage_dir(stage);
        std::fs::create_dir_all(&dir)?;
        dir.canonicalize()
    }

    pub fn write_outputs(
        &self,
        outputs: &HashMap<String, Map<String, Value>>,
    ) -> std::io::Result<()> {
        let sorted: std::collections::BTreeMap<_, _> = outputs.iter().collect();
        write_json(&self.path.join("outputs.json"), &sorted)
    }

    pub fn write_record(&self, record: &impl Serialize) -> std::io::Result<()> {
        write_json(&self.path.join("run.json"), record)
    }
}

/// Replace a JSON file atomically, so a crash leaves the old or the new one.
fn write_json(path: &Path, value: &impl Serialize) -> std::io::Result<()> {
    let dir = path.parent().expect("run files live in the run dir");
    let tmp = tempfile::NamedTempFile::new_in(dir)?;
    serde_json::to_writer_pretty(tmp.as_file(), value)?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}
