//! The event stream (`--events FILE|-`): one JSON object per line for each
//! thing that happens in a run, so dashboards and other CI systems can
//! follow it without parsing the terminal output.
//!
//! Every object has `v` (the shape's version, [`VERSION`]), `event`, `time`
//! (RFC 3339, UTC) and `run`; the other fields are those of its
//! [`Event`]. A consumer ignores fields and events it does not know: new
//! ones are added without a new version; a field renamed or removed, or a
//! meaning changed, gets one. The README documents every event.
//!
//! What a plugin wrote (log lines, reasons, summaries) is passed as it is,
//! as JSON strings: escaping is the reader's job, and JSON cannot carry a
//! terminal escape out of its string.

use std::io::Write;
use std::sync::{Mutex, OnceLock};

use serde::Serialize;

/// The version of the events' shape.
pub const VERSION: u32 = 1;

/// One thing that happened.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "event", rename_all = "kebab-case")]
pub enum Event<'a> {
    /// The run holds its environment's lock and starts (or resumes).
    RunStarted {
        pipeline: &'a str,
        environment: &'a str,
        /// `deploy` or `rollback`.
        kind: &'a str,
        /// A resumed run's earlier stages keep their outcome.
        resumed: bool,
        author: &'a str,
    },
    /// Another run holds the environment's lock; this one waits (`--wait`).
    LockWaited {
        environment: &'a str,
        holder: &'a str,
        /// How long it waits at most, in seconds.
        up_to_s: u64,
    },
    StageStarted {
        stage: &'a str,
    },
    /// One line of a stage's log (the plugin's, its programs' or the host's
    /// `[capstan]` lines), without its line break.
    Log {
        stage: &'a str,
        line: &'a str,
    },
    StageFinished {
        stage: &'a str,
        /// `succeeded`, `failed`, `skipped`, `awaiting-approval`, `cancelled`.
        status: &'a str,
        /// The summary (succeeded) or the reason (otherwise).
        message: &'a str,
        duration_ms: u64,
    },
    /// A stage waits for humans: how to answer is in `how`.
    ApprovalRequested {
        stage: &'a str,
        digest: &'a str,
        subject: &'a str,
        required: u32,
        how: &'a str,
    },
    /// A request was decided in this run (from the run store, the terminal,
    /// or a policy).
    ApprovalDecided {
        stage: &'a str,
        digest: &'a str,
        /// `approved` or `rejected`.
        decision: &'a str,
        by: Vec<&'a str>,
    },
    RunFinished {
        /// `succeeded`, `failed`, `awaiting-approval`, `rejected`, `cancelled`.
        status: &'a str,
        duration_ms: u64,
        /// The exit code `capstan` ends with.
        exit_code: u8,
    },
}

/// Where events go while a run is driven.
struct Sink {
    run: String,
    out: Box<dyn Write + Send>,
}

static SINK: OnceLock<Mutex<Option<Sink>>> = OnceLock::new();

/// Why the stream cannot be opened.
#[derive(Debug, thiserror::Error)]
#[error("cannot write events to {path}: {source}")]
pub struct OpenError {
    path: String,
    source: std::io::Error,
}

/// Send the events of run `run` to `target` (`-`: standard output; else a
/// file, appended to) until [`close`].
pub fn open(target: &str, run: &str) -> Result<(), OpenError> {
    let out: Box<dyn Write + Send> = if target == "-" {
        Box::new(std::io::stdout())
    } else {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(target)
            .map_err(|source| OpenError {
                path: target.to_string(),
                source,
            })?;
        Box::new(file)
    };
    *SINK
        .get_or_init(Default::default)
        .lock()
        .expect("events lock") = Some(Sink {
        run: run.to_string(),
        out,
    });
    Ok(())
}

/// Stop sending events.
pub fn close() {
    if let Some(sink) = SINK.get() {
        *sink.lock().expect("events lock") = None;
    }
}

/// Whether events are being sent.
pub fn enabled() -> bool {
    SINK.get()
        .and_then(|s| s.lock().ok().map(|s| s.is_some()))
        .unwrap_or(false)
}

/// Send `event`, one line, flushed: a follower sees it at once. A reader
/// gone or a full disk stops the stream (said once), never the run.
pub fn emit(event: Event) {
    let Some(sink) = SINK.get() else { return };
    let mut guard = sink.lock().expect("events lock");
    let Some(s) = guard.as_mut() else { return };
    let mut line = serde_json::to_value(&event).expect("events serialize");
    line["v"] = VERSION.into();
    line["time"] = jiff::Timestamp::now().to_string().into();
    line["run"] = s.run.clone().into();
    let mut text = line.to_string();
    text.push('\n');
    if let Err(e) = s
        .out
        .write_all(text.as_bytes())
        .and_then(|()| s.out.flush())
    {
        *guard = None;
        drop(guard);
        eprintln!("warning: the event stream stopped: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_versioned_json_lines_with_time_and_run() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.jsonl");
        open(path.to_str().unwrap(), "r1").unwrap();
        assert!(enabled());
        emit(Event::StageStarted { stage: "plan" });
        emit(Event::Log {
            stage: "plan",
            line: "\u{1b}[2J\"quoted\"",
        });
        close();
        emit(Event::StageStarted { stage: "after" });
        assert!(!enabled());
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 2, "{text}");
        assert_eq!(
            (
                &lines[0]["v"],
                &lines[0]["event"],
                &lines[0]["run"],
                &lines[0]["stage"]
            ),
            (
                &1.into(),
                &"stage-started".into(),
                &"r1".into(),
                &"plan".into()
            )
        );
        assert!(
            lines[0]["time"]
                .as_str()
                .unwrap()
                .parse::<jiff::Timestamp>()
                .is_ok()
        );
        assert_eq!(lines[1]["line"], "\u{1b}[2J\"quoted\"");
        assert!(
            !text.contains('\u{1b}'),
            "escaped inside JSON strings: {text}"
        );
    }
}
