//! The run's audit log: one JSON line per capability use or denial, appended
//! as it happens so that a crash loses nothing already recorded, and the same
//! event in the run store (where `capstan show` and `capstan audit --run`
//! read it). Each line is chained to the one before it ([`chain`]), and the
//! run store keeps the hash of the last line with each event.

pub mod chain;
pub mod reconcile;

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use serde::Serialize;
use serde_json::Value;

use super::log::LogSink;
use super::secret::Redactor;
use crate::store::{AuditKind, AuditRow, RunRow, RunStore};

/// One audit record.
#[derive(Debug, Clone, Serialize)]
pub struct Event<'a> {
    /// The hash of the line before (see [`chain`]).
    pub prev: String,
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
    file: Arc<Mutex<Option<Writer>>>,
    /// The run store and the run's id.
    store: Option<(Arc<dyn RunStore>, String)>,
    /// The run's secrets, masked in every event before it is written (a
    /// plugin may pass one as an argument, a URL, an approval's text).
    redactor: Redactor,
    /// Whether a failure to record an event in the store was reported (once
    /// is enough: the file holds every event).
    store_failed: Arc<AtomicBool>,
}

/// The open file and where its chain stands.
struct Writer {
    file: File,
    /// The run's genesis hash (the first line's `prev`).
    genesis: String,
    /// The file's length after this writer's last line, and that line's
    /// hash; `None` before its first. Another length means another process
    /// (`capstan approve`, `capstan cancel`) appended since: read the tail.
    head: Option<(u64, String)>,
}

impl Writer {
    /// The hash the next line chains to, read from the file unless this
    /// writer wrote its last line; a torn last line is cut off first, and
    /// the detail of the record that says so returned. Called under the
    /// file lock. The flag: whether the file was read (another writer may
    /// have been there, or a host that was killed).
    fn head(&mut self) -> std::io::Result<(String, Option<Value>, bool)> {
        let len = self.file.metadata()?.len();
        if let Some((end, hash)) = &self.head
            && *end == len
        {
            return Ok((hash.clone(), None, false));
        }
        let tail = chain::Tail::read(&self.file, len)?;
        let repair = match &tail.torn {
            Some(torn) => {
                self.file.set_len(tail.end)?;
                Some(tail.repair_detail(torn))
            }
            None => None,
        };
        Ok((
            tail.last.unwrap_or_else(|| self.genesis.clone()),
            repair,
            true,
        ))
    }

    /// The whole file (its complete lines, once `head` has run).
    fn bytes(&self) -> std::io::Result<Vec<u8>> {
        use std::os::unix::fs::FileExt;
        let mut bytes = vec![0; self.file.metadata()?.len() as usize];
        self.file.read_exact_at(&mut bytes, 0)?;
        Ok(bytes)
    }
}

impl AuditLog {
    pub fn open(path: &Path, store: Arc<dyn RunStore>, run: &str) -> std::io::Result<AuditLog> {
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .read(true)
            .open(path)?;
        let writer = Writer {
            file,
            genesis: chain::genesis(run),
            head: None,
        };
        Ok(AuditLog {
            file: Arc::new(Mutex::new(Some(writer))),
            store: Some((store, run.to_string())),
            redactor: Redactor::new(),
            store_failed: Arc::default(),
        })
    }

    pub fn discard() -> AuditLog {
        AuditLog {
            file: Arc::new(Mutex::new(None)),
            store: None,
            redactor: Redactor::new(),
            store_failed: Arc::default(),
        }
    }

    /// Mask the values `redactor` knows (now and later) in every event.
    pub fn redacting(mut self, redactor: Redactor) -> AuditLog {
        self.redactor = redactor;
        self
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
        let mut detail = detail;
        self.redactor.redact_json(&mut detail);
        let reason = reason.map(|r| self.redactor.redact(&r).into_owned());
        let event = Event {
            prev: String::new(),
            time: jiff::Timestamp::now().to_string(),
            stage,
            plugin,
            capability,
            detail,
            allowed,
            reason,
        };
        // The in-process lock orders this host's stages; the file lock,
        // other processes appending to the same log.
        let mut writer = self.file.lock().expect("audit lock");
        let Some(writer) = writer.as_mut() else {
            return line(&event).len() as u64;
        };
        // Without the file lock the chain may fork; the line is still written.
        if let Err(e) = writer.file.lock() {
            eprintln!("capstan: cannot lock the audit log: {e}");
        }
        let (mut prev, repair, read) = match writer.head() {
            Ok(head) => head,
            Err(e) => {
                eprintln!("capstan: cannot read the end of the audit log: {e}");
                (writer.genesis.clone(), None, false)
            }
        };
        let reconciled = match read {
            true => self.reconcile(writer, &prev),
            false => None,
        };
        // Capstan's own records of what it found, chained before the event.
        for detail in repair.into_iter().chain(reconciled) {
            let record = Event {
                prev,
                time: event.time.clone(),
                stage: "",
                plugin: "capstan",
                capability: AuditKind::Run,
                detail,
                allowed: true,
                reason: None,
            };
            prev = self.append(writer, &record).1;
        }
        let event = Event { prev, ..event };
        let (size, _) = self.append(writer, &event);
        let _ = writer.file.unlock();
        size
    }

    /// The store's record of the run's events against the file, when the
    /// file's end (`last`, the hash of its last line) was read: lines a
    /// killed host wrote and did not record are recorded now; a store head
    /// the file lacks (lines cut off its end) is reported. Returns the
    /// detail of the record of what was done. Called under the file lock,
    /// a torn last line already cut off.
    fn reconcile(&self, writer: &Writer, last: &str) -> Option<Value> {
        let (store, run) = self.store.as_ref()?;
        let head = store.run(run).ok()?.audit_head;
        if head.as_deref() == Some(last) {
            return None;
        }
        let bytes = match writer.bytes() {
            Ok(bytes) => bytes,
            Err(e) => {
                eprintln!(
                    "capstan: cannot read the audit log to check it against the run store: {e}"
                );
                return None;
            }
        };
        // Only a missing head needs the count (a run from before the chain).
        let stored = match head {
            Some(_) => 0,
            None => store.audit_events(run).map_or(usize::MAX, |e| e.len()),
        };
        let found = reconcile::reconcile(run, &bytes, head.as_deref(), stored);
        if let reconcile::Reconcile::Behind(lines) = &found {
            for (number, hash, event) in lines {
                if let Err(e) = store.audit(run, event, hash) {
                    if !self.store_failed.swap(true, Ordering::Relaxed) {
                        eprintln!(
                            "capstan: cannot record line {number} of the audit log in the run store: {e}"
                        );
                    }
                    return None;
                }
            }
        }
        let stored = match &found {
            reconcile::Reconcile::Cut { .. } => store.audit_events(run).map_or(0, |e| e.len()),
            _ => stored,
        };
        found.record(stored)
    }

    /// Write one chained event and keep it in the store with the new head;
    /// returns the line's length and hash.
    fn append(&self, writer: &mut Writer, event: &Event) -> (u64, String) {
        let mut line = line(event);
        let hash = chain::hash(&line);
        line.push(b'\n');
        let size = line.len() as u64;
        // One write per line so concurrent stages never interleave a record.
        let written = match writer.file.write_all(&line) {
            Ok(()) => {
                writer.head = writer.file.metadata().ok().map(|m| (m.len(), hash.clone()));
                true
            }
            Err(e) => {
                writer.head = None;
                eprintln!("capstan: cannot append to the audit log: {e}");
                false
            }
        };
        crate::fault::point("audit-written", event.stage);
        if let Some((store, run)) = &self.store {
            let row = AuditRow {
                time: event.time.clone(),
                stage: event.stage.to_string(),
                plugin: event.plugin.to_string(),
                capability: event.capability.clone(),
                allowed: event.allowed,
                detail: event.detail.clone(),
                reason: event.reason.clone(),
            };
            // The chain ends where the file does: at this line, or, when it
            // could not be written, at the one before (the store still keeps
            // the event, its only record).
            let head = if written { &hash } else { &event.prev };
            if let Err(e) = store.audit(run, &row, head) {
                // The next line reads the file's end again, and records this
                // one in the store then (see `reconcile`).
                writer.head = None;
                if !self.store_failed.swap(true, Ordering::Relaxed) {
                    eprintln!("capstan: {e} (the event is in the run's audit.jsonl)");
                }
            }
        }
        (size, hash)
    }
}

/// An event as its line, without the newline.
fn line(event: &Event) -> Vec<u8> {
    serde_json::to_vec(event).expect("audit events serialize")
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

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::store::{NewRun, Owner, RunKind, SqliteStore};

    /// A run store with run `r`, and the run's audit.jsonl path.
    fn run() -> (tempfile::TempDir, Arc<dyn RunStore>, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("capstan.db")).unwrap();
        let new = NewRun {
            id: "r".into(),
            pipeline: "p".into(),
            pipeline_file: "/p/pipeline.toml".into(),
            pipeline_digest: "d".into(),
            environment: "dev".into(),
            author: "alice".into(),
            kind: RunKind::Deploy,
            target: None,
            undoes: None,
            only: vec![],
            run_dir: dir.path().display().to_string(),
            started: "2026-11-26T10:00:00Z".into(),
            plugins: json!([]),
            approvers: None,
            author_keys: Vec::new(),
        };
        store.create_run(&new, &Owner::current()).unwrap();
        let path = dir.path().join("audit.jsonl");
        (dir, Arc::new(store), path)
    }

    fn event(log: &AuditLog, i: usize) {
        log.record("s", "p", AuditKind::Exec, true, json!({ "i": i }), None);
    }

    /// The walk of the log, and the hash of its last line.
    fn walked(path: &Path) -> (chain::Walk, String) {
        let bytes = std::fs::read(path).unwrap();
        let last = bytes[..bytes.len() - 1]
            .rsplit(|&b| b == b'\n')
            .next()
            .unwrap();
        (chain::walk("r", &bytes), chain::hash(last))
    }

    #[test]
    fn lines_chain_and_the_store_keeps_the_head() {
        let (_dir, store, path) = run();
        let log = AuditLog::open(&path, store.clone(), "r").unwrap();
        for i in 0..3 {
            event(&log, i);
        }
        let (walk, last) = walked(&path);
        assert_eq!((walk.broken, walk.lines, walk.torn), (None, 3, None));
        assert_eq!(store.run("r").unwrap().audit_head, Some(last));
        let first: Value = serde_json::from_str(
            std::fs::read_to_string(&path)
                .unwrap()
                .lines()
                .next()
                .unwrap(),
        )
        .unwrap();
        assert_eq!(first["prev"], chain::genesis("r").as_str());
    }

    #[test]
    fn a_reopened_log_and_another_writer_continue_the_chain() {
        let (_dir, store, path) = run();
        let host = AuditLog::open(&path, store.clone(), "r").unwrap();
        event(&host, 0);
        event(&host, 1);
        // `capstan cancel` appends while the host runs; then the host goes on.
        append(
            store.clone(),
            &store.run("r").unwrap(),
            "",
            AuditKind::Run,
            json!({"event": "cancel-requested"}),
        )
        .unwrap();
        event(&host, 2);
        drop(host);
        // A resumed run: a new process, the same file.
        let resumed = AuditLog::open(&path, store.clone(), "r").unwrap();
        event(&resumed, 3);
        let (walk, last) = walked(&path);
        assert_eq!((walk.broken, walk.lines), (None, 5));
        assert_eq!(store.run("r").unwrap().audit_head, Some(last));
    }

    #[test]
    fn a_torn_last_line_is_cut_off_and_the_repair_recorded() {
        let (_dir, store, path) = run();
        let host = AuditLog::open(&path, store.clone(), "r").unwrap();
        event(&host, 0);
        drop(host);
        // The host was killed while writing its second line.
        let torn = br#"{"prev":"0123","time":"2026-"#;
        let mut file = OpenOptions::new().append(true).open(&path).unwrap();
        file.write_all(torn).unwrap();
        assert_eq!(
            chain::walk("r", &std::fs::read(&path).unwrap()).torn,
            Some(torn.len())
        );

        let resumed = AuditLog::open(&path, store.clone(), "r").unwrap();
        event(&resumed, 1);
        let (walk, last) = walked(&path);
        assert_eq!((walk.broken, walk.lines, walk.torn), (None, 3, None));
        assert_eq!(walk.repairs, [(2, torn.len() as u64)]);
        assert_eq!(store.run("r").unwrap().audit_head, Some(last));
        let text = std::fs::read_to_string(&path).unwrap();
        let repair: Value = serde_json::from_str(text.lines().nth(1).unwrap()).unwrap();
        assert_eq!(repair["detail"]["text"], std::str::from_utf8(torn).unwrap());
        assert_eq!(repair["detail"]["sha256"], chain::hash(torn).as_str());
        let events = store.audit_events("r").unwrap();
        assert_eq!(events[1].detail["event"], chain::REPAIRED);
    }

    /// A line as a host writes it after `prev`, without recording it in the
    /// store: what a host killed between the two leaves.
    fn written_only(path: &Path, prev: &str, i: usize) -> String {
        let line = serde_json::to_vec(&json!({
            "prev": prev, "time": "2026-11-26T10:00:09Z", "stage": "s", "plugin": "p",
            "capability": "exec", "detail": { "i": i }, "allowed": true,
        }))
        .unwrap();
        let mut file = OpenOptions::new().append(true).open(path).unwrap();
        file.write_all(&[&line[..], b"\n"].concat()).unwrap();
        chain::hash(&line)
    }

    #[test]
    fn lines_a_killed_host_wrote_and_never_recorded_are_recorded_by_the_next_writer() {
        let (_dir, store, path) = run();
        let host = AuditLog::open(&path, store.clone(), "r").unwrap();
        event(&host, 0);
        drop(host);
        let head = store.run("r").unwrap().audit_head.unwrap();
        let second = written_only(&path, &head, 1);
        written_only(&path, &second, 2);
        assert_eq!(store.audit_events("r").unwrap().len(), 1);

        let resumed = AuditLog::open(&path, store.clone(), "r").unwrap();
        event(&resumed, 3);
        let events = store.audit_events("r").unwrap();
        let details: Vec<&Value> = events.iter().map(|e| &e.detail).collect();
        assert_eq!(details[1..3], [&json!({ "i": 1 }), &json!({ "i": 2 })]);
        assert_eq!(details[3]["event"], reconcile::RECONCILED);
        assert_eq!(details[3]["lines"], json!([2, 3]));
        assert_eq!(details[4], &json!({ "i": 3 }));
        let (walk, last) = walked(&path);
        assert_eq!((walk.broken, walk.lines), (None, 5));
        assert_eq!(store.run("r").unwrap().audit_head, Some(last));
    }

    #[test]
    fn a_log_cut_short_of_the_stores_head_is_recorded_by_the_next_writer() {
        let (_dir, store, path) = run();
        let host = AuditLog::open(&path, store.clone(), "r").unwrap();
        for i in 0..3 {
            event(&host, i);
        }
        drop(host);
        let head = store.run("r").unwrap().audit_head.unwrap();
        // Fixture: the last line lost (a machine that stopped before it was on disk).
        let text = std::fs::read_to_string(&path).unwrap();
        let keep = text.trim_end().rfind('\n').unwrap() + 1;
        std::fs::write(&path, &text[..keep]).unwrap();

        let next = AuditLog::open(&path, store.clone(), "r").unwrap();
        event(&next, 3);
        let events = store.audit_events("r").unwrap();
        let cut = &events[3].detail;
        assert_eq!(cut["event"], reconcile::CUT);
        assert_eq!(
            (&cut["store_head"], &cut["file_lines"], &cut["store_events"]),
            (&json!(head), &json!(2), &json!(3))
        );
        let (walk, last) = walked(&path);
        assert_eq!((walk.broken, walk.lines), (None, 4));
        assert_eq!(store.run("r").unwrap().audit_head, Some(last));
    }

    #[test]
    fn secrets_are_masked_in_the_file_and_the_store() {
        let (_dir, store, path) = run();
        let redactor = Redactor::new();
        let log = AuditLog::open(&path, store.clone(), "r")
            .unwrap()
            .redacting(redactor.clone());
        redactor.add(
            crate::caps::secret::Origin::Secret("token".into()),
            b"s3cret-t0ken",
        );
        log.record(
            "s",
            "p",
            AuditKind::Exec,
            false,
            json!({ "program": "curl", "args": ["-H", "Authorization: Bearer s3cret-t0ken"], "s3cret-t0ken": 1 }),
            Some("`curl` argument 2 holds s3cret-t0ken".into()),
        );
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(!text.contains("s3cret-t0ken"), "{text}");
        let line: Value = serde_json::from_str(text.trim_end()).unwrap();
        assert_eq!(line["detail"]["args"][1], "Authorization: Bearer ***");
        assert_eq!(line["detail"]["***"], 1);
        assert_eq!(line["reason"], "`curl` argument 2 holds ***");
        let stored = &store.audit_events("r").unwrap()[0];
        assert_eq!(stored.detail, line["detail"]);
        assert_eq!(
            stored.reason.as_deref(),
            Some("`curl` argument 2 holds ***")
        );
        // The chain is over what was written.
        assert_eq!(walked(&path).0.broken, None);
    }
}
