//! The run directory, `.capstan/runs/<run-id>/`:
//!
//! ```text
//! run.json        what happened (stages, statuses, times, summaries)
//! outputs.json    every finished stage's outputs, rewritten as stages finish
//! audit.jsonl     every capability use and denial
//! logs/<stage>.log
//! stages/<stage>/ each stage's work dir
//! stages/<stage>.attempt-<n>/
//!                 the work dir of attempt n, which failed, moved aside when
//!                 the next attempt starts (`capstan resume`): that one
//!                 starts in an empty one, never from a file the failed one
//!                 left half-written (a full disk, a crash of its tool)
//! ```
//!
//! A failed attempt's work dir stays in place until then, for a look and for
//! the stages that report the failure; when its failure could not even be
//! recorded (a full disk), it is moved aside at once. An attempt cut short
//! from outside (its host killed) leaves its work dir where it is: the next
//! attempt goes on from it (the terraform plugin's apply marker there keeps
//! an apply from running twice).

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
        // UTC straight from the clock: the system's zone (which loading walks
        // the zoneinfo database for) is not needed.
        let now = jiff::Timestamp::now().to_zoned(jiff::tz::TimeZone::UTC);
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

    /// The state dir the run directory is in (`<state>/runs/<id>`).
    pub fn state_dir(&self) -> PathBuf {
        self.path
            .parent()
            .and_then(Path::parent)
            .map_or_else(|| self.path.clone(), Path::to_path_buf)
    }

    pub fn audit(&self) -> PathBuf {
        self.path.join("audit.jsonl")
    }

    pub fn log(&self, stage: &str) -> PathBuf {
        self.path.join("logs").join(format!("{stage}.log"))
    }

    /// The work dir of the stage's current attempt (or of its last that
    /// succeeded).
    pub fn stage_dir(&self, stage: &str) -> PathBuf {
        self.path.join("stages").join(stage)
    }

    /// Where the stage's files of its latest attempt are: its work dir,
    /// or, when that was moved aside, the one its latest failed attempt left
    /// (what a stage reporting the failure reads).
    pub fn latest_dir(&self, stage: &str) -> PathBuf {
        let current = self.stage_dir(stage);
        if current.is_dir() {
            return current;
        }
        let prefix = format!("{stage}.attempt-");
        let failed = std::fs::read_dir(self.path.join("stages"))
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| {
                let name = e.file_name().into_string().ok()?;
                let (n, again) = attempt_of(name.strip_prefix(&prefix)?)?;
                Some(((n, again), e.path()))
            })
            .max();
        failed.map_or(current, |(_, path)| path)
    }

    /// Move the stage's work dir aside to `stages/<stage>.attempt-<n>/` (a
    /// rename: it needs no space on a full disk), so that its next attempt
    /// starts in an empty one. Returns where it went; `None`: there was
    /// nothing to move.
    pub fn set_aside(&self, stage: &str, attempt: u32) -> std::io::Result<Option<PathBuf>> {
        let from = self.stage_dir(stage);
        let empty = match std::fs::read_dir(&from) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
            Ok(mut entries) => entries.next().is_none(),
        };
        if empty {
            return Ok(None);
        }
        let stages = self.path.join("stages");
        let mut to = stages.join(format!("{stage}.attempt-{attempt}"));
        // Set aside once already (an attempt's number recorded twice).
        let mut again = 1;
        while to.exists() {
            again += 1;
            to = stages.join(format!("{stage}.attempt-{attempt}.{again}"));
        }
        std::fs::rename(&from, &to)?;
        Ok(Some(to))
    }

    /// The stage's work dir, created empty.
    pub fn work_dir(&self, stage: &str) -> std::io::Result<PathBuf> {
        let dir = self.stage_dir(stage);
        std::fs::create_dir_all(&dir)?;
        dir.canonicalize()
    }

    /// Write `outputs.json`. `durable` when the run ends; as each stage
    /// ends it is replaced atomically but not flushed to the disk: the run
    /// store has every stage's outputs durably by then (it is the record;
    /// a crash leaves this file a stage behind until the run is resumed),
    /// and a flush per stage is what bounds a run of many short stages on a
    /// busy disk.
    pub fn write_outputs(
        &self,
        outputs: &HashMap<String, Map<String, Value>>,
        durable: bool,
    ) -> std::io::Result<()> {
        let sorted: std::collections::BTreeMap<_, _> = outputs.iter().collect();
        write_json(&self.path.join("outputs.json"), &sorted, durable)
    }

    pub fn write_record(&self, record: &impl Serialize) -> std::io::Result<()> {
        write_json(&self.path.join("run.json"), record, true)
    }
}

/// `<n>` or `<n>.<again>` of a set-aside work dir's name.
fn attempt_of(suffix: &str) -> Option<(u32, u32)> {
    let (n, again) = suffix.split_once('.').unwrap_or((suffix, "1"));
    Some((n.parse().ok()?, again.parse().ok()?))
}

/// Replace a JSON file atomically, so a crash leaves the old or the new one.
fn write_json(path: &Path, value: &impl Serialize, durable: bool) -> std::io::Result<()> {
    let dir = path.parent().expect("run files live in the run dir");
    let tmp = tempfile::NamedTempFile::new_in(dir)?;
    // Serialised in memory, written at once: straight into the file, serde
    // makes one `write` per token (millions for a run of many stages).
    let text = serde_json::to_vec_pretty(value)?;
    std::io::Write::write_all(&mut tmp.as_file(), &text)?;
    if durable {
        tmp.as_file().sync_all()?;
    }
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_attempts_work_dir_is_set_aside_and_still_found_until_the_next() {
        let state = tempfile::tempdir().unwrap();
        let dir = RunDir::create(state.path()).unwrap();
        assert_eq!(dir.set_aside("apply", 1).unwrap(), None, "nothing yet");
        let work = dir.work_dir("apply").unwrap();
        assert_eq!(dir.set_aside("apply", 1).unwrap(), None, "empty");
        std::fs::write(work.join("terraform.tfstate"), "{\"ver").unwrap();
        let aside = dir.set_aside("apply", 1).unwrap().unwrap();
        assert_eq!(aside, dir.path.join("stages/apply.attempt-1"));
        assert_eq!(
            std::fs::read_to_string(aside.join("terraform.tfstate")).unwrap(),
            "{\"ver"
        );
        assert!(!dir.stage_dir("apply").exists());
        // A stage reporting the failure finds what the attempt left.
        assert_eq!(dir.latest_dir("apply"), aside);
        // The next attempt starts empty, and is the stage's from then on.
        let work = dir.work_dir("apply").unwrap();
        assert_eq!(std::fs::read_dir(&work).unwrap().count(), 0);
        assert_eq!(dir.latest_dir("apply"), work);
        std::fs::write(work.join("x"), "2").unwrap();
        let again = dir.set_aside("apply", 1).unwrap().unwrap();
        assert_eq!(again, dir.path.join("stages/apply.attempt-1.2"));
        std::fs::create_dir(dir.path.join("stages/apply.attempt-10")).unwrap();
        assert_eq!(
            dir.latest_dir("apply"),
            dir.path.join("stages/apply.attempt-10"),
            "by number, not by name"
        );
        assert_eq!(dir.latest_dir("plan"), dir.stage_dir("plan"));
    }
}
