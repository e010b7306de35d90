//! Making `apply` safe to run again after the host died.
//!
//! A resumed run repeats an interrupted stage with the same work dir and
//! the same `with` config. A Terraform apply must never run twice, and two
//! crashes look alike from the next attempt:
//!
//! 1. the host died after `terraform apply` finished (the state is
//!    written) but before the stage's success was recorded;
//! 2. the host died while `terraform apply` ran: that child outlives the
//!    host, and may still hold the state lock, or have finished since.
//!
//! So before `terraform apply` starts, the stage writes (and fsyncs) an
//! attempt marker, `<work dir>/apply-attempt.json`: the plan's digest, the
//! lineage and serial of the state before the apply, and when it started;
//! when `terraform apply` returns, it adds how it ended. The next attempt
//! of the same plan waits until the state is not locked ([`wait_unlocked`]:
//! an orphaned apply writes the state several times before it is done),
//! then reads the marker and the state again ([`decide`]): Terraform
//! increments the state's serial on every write that changes it, so a
//! serial past the marker's (same lineage), or a state where there was
//! none, means the earlier attempt applied this plan, and the stage reads
//! the outputs instead of applying again — unless that apply is recorded
//! as failed, when the plan is stale and the stage asks for a new one.
//!
//! A plan that changes nothing does not advance the serial: the next
//! attempt applies it again, which Terraform accepts and which changes
//! nothing.
//!
//! Terraform's own check is not enough: it refuses a saved plan whose
//! prior state differs from the current one ("Saved plan is stale",
//! [`is_stale_plan`]), but Terraform 1.0.3 skips that check for a plan
//! made when there was no state yet, and silently applies such a plan a
//! second time (1.11.4 refuses it).

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// File name of the marker in the stage's work dir.
pub const MARKER_FILE: &str = "apply-attempt.json";

/// What the stage records about one attempt to apply a plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Marker {
    /// sha256 (lower-case hex) of the plan being applied.
    pub plan_digest: String,
    /// The state file read before the apply (`state`); `null` when the
    /// configuration has its own backend, so the stage cannot read it.
    pub state_file: Option<PathBuf>,
    /// The state's lineage before the apply; `null` with no state.
    pub lineage_before: Option<String>,
    /// The state's serial before the apply; `null` with no state.
    pub serial_before: Option<u64>,
    /// When `terraform apply` was about to start (UTC, RFC 3339).
    pub started: String,
    /// How `terraform apply` ended; `null` while it runs, and for good
    /// when the host died during it.
    #[serde(default)]
    pub finished: Option<Finished>,
}

/// How the `terraform apply` of an attempt ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Finished {
    /// When it returned (UTC, RFC 3339).
    pub at: String,
    /// `exit code 0`, `signal 9`, or the host's error (e.g. a timeout).
    pub status: String,
    /// Exit code 0.
    pub success: bool,
}

impl Marker {
    /// The marker of an attempt about to apply `plan_digest` over `state`.
    pub fn new(
        plan_digest: &str,
        state_file: Option<&Path>,
        state: &State,
        started: String,
    ) -> Self {
        let (lineage_before, serial_before) = match state {
            State::Present(s) => (Some(s.lineage.clone()), Some(s.serial)),
            State::Absent | State::Unknown => (None, None),
        };
        Marker {
            plan_digest: plan_digest.to_string(),
            state_file: state_file.map(Path::to_path_buf),
            lineage_before,
            serial_before,
            started,
            finished: None,
        }
    }

    /// The state before the apply, as recorded.
    pub fn state_before(&self) -> State {
        match (&self.state_file, &self.lineage_before, self.serial_before) {
            (None, _, _) => State::Unknown,
            (Some(_), Some(lineage), Some(serial)) => State::Present(Snapshot {
                lineage: lineage.clone(),
                serial,
            }),
            (Some(_), _, _) => State::Absent,
        }
    }
}

/// What the stage knows of the Terraform state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum State {
    /// No `state` path (the configuration's own backend), or unreadable.
    Unknown,
    /// No state file, or an empty one (Terraform creates the file empty to
    /// lock it, and leaves it empty if it dies before writing).
    Absent,
    /// A state snapshot.
    Present(Snapshot),
}

/// The identity of a state snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Snapshot {
    /// Set when the state is created, kept by every later write.
    pub lineage: String,
    /// Incremented by every write that changes the state.
    pub serial: u64,
}

impl State {
    /// The state in the text of a state file.
    pub fn parse(text: &str) -> Result<State, String> {
        if text.trim().is_empty() {
            return Ok(State::Absent);
        }
        serde_json::from_str::<Snapshot>(text)
            .map(State::Present)
            .map_err(|e| format!("not a Terraform state (with `lineage` and `serial`): {e}"))
    }

    /// Read the state file at `path`.
    pub fn read(path: &Path) -> Result<State, String> {
        match std::fs::read_to_string(path) {
            Ok(text) => State::parse(&text).map_err(|e| format!("{}: {e}", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(State::Absent),
            Err(e) => Err(format!("cannot read {}: {e}", path.display())),
        }
    }

    /// `serial 5`, `no state`, for messages.
    pub fn describe(&self) -> String {
        match self {
            State::Unknown => "an unknown state".to_string(),
            State::Absent => "no state".to_string(),
            State::Present(s) => format!("serial {}", s.serial),
        }
    }
}

/// What to do about a plan, given the marker of an earlier attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Run `terraform apply`, for this reason.
    Apply(Why),
    /// An earlier attempt applied this plan: do not apply it again.
    AppliedEarlier(Applied),
    /// An earlier attempt's `terraform apply` of this plan failed after
    /// changing the state: the plan is stale, and applying it again could
    /// repeat what it did (Terraform 1.0.3 would, for a plan made without a
    /// state). Fail, asking for a new plan.
    FailedAfterChanges(Applied),
}

/// Why the plan is applied (again).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Why {
    /// No earlier attempt of this stage got to `terraform apply`.
    NoMarker,
    /// The earlier attempt applied another plan (its digest).
    OtherPlan(String),
    /// The earlier attempt read another state file.
    OtherStateFile,
    /// The earlier attempt's `terraform apply` ended unsuccessfully (its
    /// status) without changing the state, or the stage cannot tell.
    EarlierFailed(String),
    /// The stage cannot read the state (now or then): Terraform's own
    /// stale-plan check decides.
    StateUnknown,
    /// The state has another lineage than before the earlier attempt: it
    /// was replaced, not written by that apply.
    LineageChanged,
    /// The state has not advanced since the earlier attempt: it did not
    /// apply the plan, or the plan changes nothing (then applying it again
    /// changes nothing either).
    NotAdvanced(State),
}

/// How the earlier attempt changed the state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    /// Serial before it (`None`: there was no state).
    pub serial_before: Option<u64>,
    /// Serial now.
    pub serial_now: u64,
    /// When it started.
    pub started: String,
    /// How its `terraform apply` ended; `None` when the host died during
    /// it: its exit status is unknown, only the state shows what it did.
    pub finished: Option<Finished>,
}

impl Applied {
    /// `serial 3 to serial 5`, `no state to serial 1`.
    pub fn serials(&self) -> String {
        let before = match self.serial_before {
            Some(s) => format!("serial {s}"),
            None => "no state".to_string(),
        };
        format!("{before} to serial {}", self.serial_now)
    }
}

/// Whether the plan `digest` still has to be applied, given the marker of
/// an earlier attempt (if any), the state file the stage reads, and the
/// state now.
///
/// Terraform increments the serial on every write that changes the state
/// (several times during one apply) and keeps the lineage, so a serial past
/// the marker's, or a state where there was none, means the earlier
/// attempt's apply wrote it. The caller makes sure that apply is no longer
/// running (the state lock is free) before asking.
pub fn decide(
    earlier: Option<&Marker>,
    digest: &str,
    state_file: Option<&Path>,
    now: &State,
) -> Decision {
    let Some(m) = earlier else {
        return Decision::Apply(Why::NoMarker);
    };
    if m.plan_digest != digest {
        return Decision::Apply(Why::OtherPlan(m.plan_digest.clone()));
    }
    if m.state_file.as_deref() != state_file {
        return Decision::Apply(Why::OtherStateFile);
    }
    let failed = m.finished.as_ref().filter(|f| !f.success);
    let not_applied = |why: Why| match failed {
        Some(f) => Decision::Apply(Why::EarlierFailed(f.status.clone())),
        None => Decision::Apply(why),
    };
    let advanced = |serial_before: Option<u64>, serial_now: u64| {
        let applied = Applied {
            serial_before,
            serial_now,
            started: m.started.clone(),
            finished: m.finished.clone(),
        };
        if failed.is_some() {
            Decision::FailedAfterChanges(applied)
        } else {
            Decision::AppliedEarlier(applied)
        }
    };
    match (m.state_before(), now) {
        (State::Unknown, _) | (_, State::Unknown) => not_applied(Why::StateUnknown),
        (State::Absent, State::Present(s)) => advanced(None, s.serial),
        (State::Present(b), State::Present(s)) if b.lineage != s.lineage => {
            not_applied(Why::LineageChanged)
        }
        (State::Present(b), State::Present(s)) if s.serial > b.serial => {
            advanced(Some(b.serial), s.serial)
        }
        (_, now) => not_applied(Why::NotAdvanced(now.clone())),
    }
}

impl Why {
    /// A line for the stage log; `None` for a first attempt.
    pub fn explain(&self, earlier: Option<&Marker>) -> Option<String> {
        let started = earlier.map_or("?", |m| m.started.as_str());
        let text = match self {
            Why::NoMarker => return None,
            Why::OtherPlan(digest) => format!(
                "an earlier attempt of this stage (started {started}) applied another plan \
                 (sha256 {digest}); applying this one"
            ),
            Why::OtherStateFile => format!(
                "an earlier attempt of this stage (started {started}) used another state file; \
                 applying"
            ),
            Why::EarlierFailed(status) => format!(
                "the `terraform apply` of this plan by an earlier attempt (started {started}) \
                 failed ({status}) and the state shows no change by it: applying again \
                 (Terraform refuses the plan if the state changed since it was made)"
            ),
            Why::StateUnknown => format!(
                "an earlier attempt of this stage (started {started}) started applying this \
                 plan, and the stage cannot read the state to tell whether it did (no `state` \
                 field, or an unreadable state file): applying, Terraform refuses the plan if \
                 the state changed since it was made"
            ),
            Why::LineageChanged => format!(
                "an earlier attempt of this stage (started {started}) started applying this \
                 plan, but the state has another lineage since (it was replaced): applying, \
                 Terraform refuses the plan if it does not match the state"
            ),
            Why::NotAdvanced(now) => format!(
                "an earlier attempt of this stage (started {started}) started applying this \
                 plan, and the state has not changed since ({}): it did not apply it (or the \
                 plan changes nothing, and applying it again changes nothing): applying",
                now.describe()
            ),
        };
        Some(text)
    }
}

/// Whether Terraform's output (stderr or stdout of `apply`) reports a stale
/// saved plan: the state changed after the plan was made. The error is the
/// same in Terraform 1.0.3 and 1.11.4, plain with `-no-color` and in a `│`
/// box without it:
///
/// ```text
/// Error: Saved plan is stale
///
/// The given plan file can no longer be applied because the state was changed by
/// another operation after the plan was created.
/// ```
///
/// Colour codes (Terraform without `-no-color`, which the stage always
/// passes) are ignored.
///
/// Newer Terraform (1.11.4) reports a state of another lineage with a
/// different error ("Saved plan does not match the given state"), which is
/// not this: that state was replaced, not advanced by an earlier apply.
pub fn is_stale_plan(output: &str) -> bool {
    strip_ansi(output).lines().any(|line| {
        line.trim_start_matches(|c: char| c == '│' || c.is_whitespace())
            .trim_end()
            == "Error: Saved plan is stale"
    })
}

/// `text` without ANSI escape sequences (`ESC [ … letter`).
fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // Skip `[`, the parameters, and the final letter.
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Read the marker at `path`: `None` when there is none.
pub fn read_marker(path: &Path) -> Result<Option<Marker>, String> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
    };
    serde_json::from_str(&text).map(Some).map_err(|e| {
        format!(
            "{} is not an apply attempt marker ({e}). It records whether an earlier attempt of \
             this stage applied the plan: check the Terraform state, then remove the file to \
             apply",
            path.display()
        )
    })
}

/// Write the marker at `path` durably: into a temporary file, fsynced,
/// renamed over `path` (so a crash leaves the old marker or the new one,
/// never half of one), then the directory fsynced where the platform
/// allows it.
pub fn write_marker(path: &Path, marker: &Marker) -> std::io::Result<()> {
    let mut text = serde_json::to_string_pretty(marker).map_err(std::io::Error::other)?;
    text.push('\n');
    let tmp = path.with_extension("json.tmp");
    let mut file = std::fs::File::create(&tmp)?;
    file.write_all(text.as_bytes())?;
    file.sync_all()?;
    drop(file);
    std::fs::rename(&tmp, path)?;
    // Best effort: not every file system (nor WASI) opens directories.
    if let Some(dir) = path.parent()
        && let Ok(dir) = std::fs::File::open(dir)
    {
        let _ = dir.sync_all();
    }
    Ok(())
}

/// Where Terraform's local backend records who holds the lock of the state
/// file `state` while it is locked: `.<name>.lock.info` next to it (one
/// leading `.` of the name dropped), removed on unlock. The lock itself is
/// an `fcntl` lock on the state file, which WASI cannot see; a Terraform
/// that dies without unlocking leaves the file behind.
pub fn lock_info_path(state: &Path) -> Option<PathBuf> {
    let name = state.file_name()?.to_string_lossy();
    let name = name.strip_prefix('.').unwrap_or(&name);
    Some(state.with_file_name(format!(".{name}.lock.info")))
}

/// The lock info of `state` when it is locked: `ID`, `Operation`, `Who`,
/// `Version`, `Created` as Terraform wrote them (`{}` when unreadable).
pub fn lock_info(state: &Path) -> Option<Value> {
    let path = lock_info_path(state)?;
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            Some(serde_json::from_str(&text).unwrap_or_else(|_| Value::Object(Default::default())))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(_) => Some(Value::Object(Default::default())),
    }
}

/// `apply by root@build-1 (Terraform 1.11.4) since 2026-11-26T01:52:10Z, lock ID 1b6…`
pub fn describe_lock(info: &Value) -> String {
    let field = |k: &str| {
        info.get(k)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
    };
    let operation = field("Operation")
        .map(|o| o.strip_prefix("OperationType").unwrap_or(o).to_lowercase())
        .unwrap_or_else(|| "an operation".to_string());
    let mut text = operation;
    if let Some(who) = field("Who") {
        text.push_str(&format!(" by {who}"));
    }
    if let Some(version) = field("Version") {
        text.push_str(&format!(" (Terraform {version})"));
    }
    if let Some(created) = field("Created") {
        text.push_str(&format!(" since {created}"));
    }
    if let Some(id) = field("ID") {
        text.push_str(&format!(", lock ID {id}"));
    }
    text
}

/// Wait until the state `state` is not locked (its lock info file is
/// gone), checking every `poll`, for at most `timeout`. Returns the lock
/// info when it is still locked then.
pub fn wait_unlocked(state: &Path, timeout: Duration, poll: Duration) -> Option<Value> {
    let started = Instant::now();
    loop {
        let info = lock_info(state)?;
        let elapsed = started.elapsed();
        if elapsed >= timeout {
            return Some(info);
        }
        std::thread::sleep(poll.min(timeout - elapsed));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const DIGEST: &str = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";
    const OTHER: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
    const LINEAGE: &str = "d14bd6ee-8bdf-12e9-11d4-bebb785f16f3";
    const STATE_FILE: &str = "/srv/state/terraform.tfstate";
    const STARTED: &str = "2026-11-26T01:51:00Z";

    fn present(lineage: &str, serial: u64) -> State {
        State::Present(Snapshot {
            lineage: lineage.to_string(),
            serial,
        })
    }

    fn marker(digest: &str, before: &State, finished: Option<bool>) -> Marker {
        let mut m = Marker::new(digest, Some(Path::new(STATE_FILE)), before, STARTED.into());
        m.finished = finished.map(|success| Finished {
            at: "2026-11-26T01:52:00Z".into(),
            status: if success {
                "exit code 0"
            } else {
                "exit code 1"
            }
            .into(),
            success,
        });
        m
    }

    fn applied(serial_before: Option<u64>, serial_now: u64, finished: Option<bool>) -> Applied {
        Applied {
            serial_before,
            serial_now,
            started: STARTED.into(),
            finished: marker(DIGEST, &State::Absent, finished).finished,
        }
    }

    #[test]
    fn decisions() {
        let state_file = Some(Path::new(STATE_FILE));
        let cases: Vec<(&str, Option<Marker>, State, Decision)> = vec![
            (
                "no marker: a first attempt",
                None,
                present(LINEAGE, 3),
                Decision::Apply(Why::NoMarker),
            ),
            (
                "same plan, serial advanced while the host was down",
                Some(marker(DIGEST, &present(LINEAGE, 3), None)),
                present(LINEAGE, 5),
                Decision::AppliedEarlier(applied(Some(3), 5, None)),
            ),
            (
                "same plan, serial advanced, apply recorded as succeeded",
                Some(marker(DIGEST, &present(LINEAGE, 3), Some(true))),
                present(LINEAGE, 4),
                Decision::AppliedEarlier(applied(Some(3), 4, Some(true))),
            ),
            (
                "same plan, serial unchanged: not applied (or changes nothing)",
                Some(marker(DIGEST, &present(LINEAGE, 3), None)),
                present(LINEAGE, 3),
                Decision::Apply(Why::NotAdvanced(present(LINEAGE, 3))),
            ),
            (
                "same plan, a no-op apply recorded as succeeded: harmless again",
                Some(marker(DIGEST, &present(LINEAGE, 3), Some(true))),
                present(LINEAGE, 3),
                Decision::Apply(Why::NotAdvanced(present(LINEAGE, 3))),
            ),
            (
                "same plan, serial went back (state restored)",
                Some(marker(DIGEST, &present(LINEAGE, 3), None)),
                present(LINEAGE, 2),
                Decision::Apply(Why::NotAdvanced(present(LINEAGE, 2))),
            ),
            (
                "another plan",
                Some(marker(OTHER, &present(LINEAGE, 3), Some(true))),
                present(LINEAGE, 4),
                Decision::Apply(Why::OtherPlan(OTHER.into())),
            ),
            (
                "lineage changed: the state was replaced",
                Some(marker(DIGEST, &present(LINEAGE, 3), None)),
                present("0f6c2c1e-0000-4000-8000-000000000000", 9),
                Decision::Apply(Why::LineageChanged),
            ),
            (
                "no state before, a state now",
                Some(marker(DIGEST, &State::Absent, None)),
                present(LINEAGE, 1),
                Decision::AppliedEarlier(applied(None, 1, None)),
            ),
            (
                "no state before, none now (or still the empty locked file)",
                Some(marker(DIGEST, &State::Absent, None)),
                State::Absent,
                Decision::Apply(Why::NotAdvanced(State::Absent)),
            ),
            (
                "state deleted since",
                Some(marker(DIGEST, &present(LINEAGE, 3), None)),
                State::Absent,
                Decision::Apply(Why::NotAdvanced(State::Absent)),
            ),
            (
                "the earlier apply failed after changing the state: never again",
                Some(marker(DIGEST, &present(LINEAGE, 3), Some(false))),
                present(LINEAGE, 4),
                Decision::FailedAfterChanges(applied(Some(3), 4, Some(false))),
            ),
            (
                "the earlier first apply failed after creating the state",
                Some(marker(DIGEST, &State::Absent, Some(false))),
                present(LINEAGE, 1),
                Decision::FailedAfterChanges(applied(None, 1, Some(false))),
            ),
            (
                "the earlier apply failed without changing anything: retry",
                Some(marker(DIGEST, &present(LINEAGE, 3), Some(false))),
                present(LINEAGE, 3),
                Decision::Apply(Why::EarlierFailed("exit code 1".into())),
            ),
            (
                "state unreadable now",
                Some(marker(DIGEST, &present(LINEAGE, 3), None)),
                State::Unknown,
                Decision::Apply(Why::StateUnknown),
            ),
        ];
        for (name, earlier, now, want) in cases {
            assert_eq!(
                decide(earlier.as_ref(), DIGEST, state_file, &now),
                want,
                "{name}"
            );
            if let Decision::Apply(why) = &want {
                // Every re-apply is explained in the log; a first attempt is not.
                assert_eq!(
                    why.explain(earlier.as_ref()).is_some(),
                    earlier.is_some(),
                    "{name}"
                );
            }
        }
    }

    #[test]
    fn no_state_file_configured() {
        // The configuration has its own backend: the stage sees no state.
        let m = Marker::new(DIGEST, None, &State::Unknown, STARTED.into());
        assert_eq!(m.state_before(), State::Unknown);
        assert_eq!(
            decide(Some(&m), DIGEST, None, &State::Unknown),
            Decision::Apply(Why::StateUnknown)
        );
        // A marker of another state file is another story.
        let m = marker(DIGEST, &present(LINEAGE, 3), None);
        assert_eq!(
            decide(
                Some(&m),
                DIGEST,
                Some(Path::new("/elsewhere.tfstate")),
                &present(LINEAGE, 4)
            ),
            Decision::Apply(Why::OtherStateFile)
        );
    }

    #[test]
    fn serials_in_messages() {
        assert_eq!(applied(Some(3), 5, None).serials(), "serial 3 to serial 5");
        assert_eq!(
            applied(None, 1, Some(true)).serials(),
            "no state to serial 1"
        );
    }

    #[test]
    fn marker_format() {
        let mut m = marker(DIGEST, &present(LINEAGE, 3), None);
        assert_eq!(
            serde_json::to_value(&m).unwrap(),
            json!({
                "plan_digest": DIGEST,
                "state_file": STATE_FILE,
                "lineage_before": LINEAGE,
                "serial_before": 3,
                "started": STARTED,
                "finished": null
            })
        );
        m.finished = Some(Finished {
            at: "2026-11-26T01:52:00Z".into(),
            status: "exit code 0".into(),
            success: true,
        });
        let back: Marker = serde_json::from_value(serde_json::to_value(&m).unwrap()).unwrap();
        assert_eq!(back, m);
        // No state yet: both `null`, and read back as "no state".
        let m = marker(DIGEST, &State::Absent, None);
        let v = serde_json::to_value(&m).unwrap();
        assert_eq!(
            (&v["lineage_before"], &v["serial_before"]),
            (&json!(null), &json!(null))
        );
        assert_eq!(m.state_before(), State::Absent);
    }

    #[test]
    fn marker_files() {
        let dir = std::env::temp_dir().join(format!("capstan-tf-attempt-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(MARKER_FILE);
        let _ = std::fs::remove_file(&path);
        assert_eq!(read_marker(&path), Ok(None));
        let m = marker(DIGEST, &present(LINEAGE, 3), Some(true));
        write_marker(&path, &m).unwrap();
        assert_eq!(read_marker(&path), Ok(Some(m)));
        assert!(!path.with_extension("json.tmp").exists());
        std::fs::write(&path, "{\"plan_digest\": ").unwrap();
        let e = read_marker(&path).unwrap_err();
        assert!(e.contains("is not an apply attempt marker"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// Real state files: Terraform 1.11.4 after the golden-image example's
    /// first apply (trimmed), the empty file Terraform creates to lock a
    /// new state, and garbage.
    #[test]
    fn state_files() {
        let real = r#"{
  "version": 4,
  "terraform_version": "1.11.4",
  "serial": 1,
  "lineage": "d14bd6ee-8bdf-12e9-11d4-bebb785f16f3",
  "outputs": {"image_source": {"value": "fallback", "type": "string"}},
  "resources": [],
  "check_results": null
}"#;
        assert_eq!(State::parse(real), Ok(present(LINEAGE, 1)));
        assert_eq!(State::parse(""), Ok(State::Absent));
        assert_eq!(State::parse("\n"), Ok(State::Absent));
        let e = State::parse("{\"version\": 4").unwrap_err();
        assert!(e.starts_with("not a Terraform state"), "{e}");
        assert!(State::parse("{\"version\": 4}").is_err());
        assert_eq!(
            State::read(Path::new("/nonexistent/capstan/terraform.tfstate")),
            Ok(State::Absent)
        );
        assert_eq!(State::Absent.describe(), "no state");
        assert_eq!(present(LINEAGE, 7).describe(), "serial 7");
    }

    /// Real stderr of `terraform apply -input=false -no-color <plan>` when
    /// the plan is stale: Terraform 1.0.3 and 1.11.4 print the same text;
    /// without `-no-color`, 1.11.4 draws a box around it.
    #[test]
    fn stale_plan_errors() {
        let no_color = "\nError: Saved plan is stale\n\nThe given plan file can no longer be \
                        applied because the state was changed by\nanother operation after the \
                        plan was created.\n";
        let boxed = "╷\n│ Error: Saved plan is stale\n│ \n│ The given plan file can no longer be \
                     applied because the state was changed by\n│ another operation after the \
                     plan was created.\n╵\n";
        let after_lock =
            format!("Acquiring state lock. This may take a few moments...\n{no_color}");
        // Terraform 1.11.4 without `-no-color`, as it printed it.
        let coloured = "\u{1b}[31m╷\u{1b}[0m\u{1b}[0m\n\u{1b}[31m│\u{1b}[0m \u{1b}[0m\u{1b}[1m\u{1b}[31mError: \
                        \u{1b}[0m\u{1b}[0m\u{1b}[1mSaved plan is stale\u{1b}[0m\n\u{1b}[31m│\u{1b}[0m \
                        \u{1b}[0m\n";
        for text in [no_color, boxed, &after_lock, coloured] {
            assert!(is_stale_plan(text), "{text}");
        }
        let not_stale = [
            "",
            "Apply complete! Resources: 0 added, 0 changed, 0 destroyed.\n",
            // Terraform 1.11.4, another lineage.
            "\nError: Saved plan does not match the given state\n\nThe given plan file can not be \
             applied because it was created from a different state lineage.\n",
            "\nError: Error acquiring the state lock\n\nError message: resource temporarily \
             unavailable\nLock Info:\n  ID:        1b6d…\n",
            // Only the exact summary counts, not a mention in other text.
            "Error: Invalid plan file\n\nSaved plan is stale? no: Failed to read plan from plan file.\n",
        ];
        for text in not_stale {
            assert!(!is_stale_plan(text), "{text}");
        }
    }

    #[test]
    fn lock_info_files() {
        assert_eq!(
            lock_info_path(Path::new("/s/terraform-dev.tfstate")).unwrap(),
            Path::new("/s/.terraform-dev.tfstate.lock.info")
        );
        // Terraform drops one leading dot of the state's name.
        assert_eq!(
            lock_info_path(Path::new("/s/.hidden.tfstate")).unwrap(),
            Path::new("/s/.hidden.tfstate.lock.info")
        );
        assert_eq!(lock_info_path(Path::new("/")), None);

        let dir = std::env::temp_dir().join(format!("capstan-tf-lock-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let state = dir.join("tf.tfstate");
        assert_eq!(lock_info(&state), None);
        assert_eq!(
            wait_unlocked(&state, Duration::from_secs(5), Duration::from_millis(10)),
            None
        );
        // Real lock info of Terraform 1.11.4 during an apply.
        let real = r#"{"ID":"5cba2d55-e7ab-9fd4-f3bb-5e0b3bbb3bcd","Operation":"OperationTypeApply","Info":"","Who":"root@build-1","Version":"1.11.4","Created":"2026-11-26T01:52:10.123456Z","Path":"/tmp/tfz/state/tf.tfstate"}"#;
        std::fs::write(lock_info_path(&state).unwrap(), real).unwrap();
        let info =
            wait_unlocked(&state, Duration::from_millis(30), Duration::from_millis(10)).unwrap();
        assert_eq!(
            describe_lock(&info),
            "apply by root@build-1 (Terraform 1.11.4) since 2026-11-26T01:52:10.123456Z, lock ID \
             5cba2d55-e7ab-9fd4-f3bb-5e0b3bbb3bcd"
        );
        // Released while waiting.
        let info_path = lock_info_path(&state).unwrap();
        let remover = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            std::fs::remove_file(info_path).unwrap();
        });
        assert_eq!(
            wait_unlocked(&state, Duration::from_secs(10), Duration::from_millis(10)),
            None
        );
        remover.join().unwrap();
        std::fs::write(lock_info_path(&state).unwrap(), "garbage").unwrap();
        assert_eq!(describe_lock(&lock_info(&state).unwrap()), "an operation");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
