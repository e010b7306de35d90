//! The run store and run directory under faults: a store damaged after an
//! unclean shutdown, a read-only state dir, a full disk, the WAL removed
//! under a running host, and an audit event the store never got.
//!
//! Read-only and full file systems are real: a private mount namespace
//! (`unshare --mount`) held open by a sleeping process, with a read-only
//! bind mount or a small tmpfs, which goes away with the process; commands
//! enter it with `nsenter`.

use std::io::{BufRead, BufReader};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::harness::{self, Guarded, Ran, Sandbox, adversary_stage, eventually, started_programs};

const PIPELINE: &str = r#"
[pipeline]
name = "faults"
environments = ["dev"]
[plugins.hello]
path = "{hello}"
[stages.greet]
plugin = "hello"
with = { message = "hi" }
[[stages.greet.grants.exec]]
program = "echo"
args = ["*"]
"#;

/// A private mount namespace in which `setup` (a shell script) ran, held
/// open by a process that sleeps until dropped.
struct Namespace {
    holder: Child,
}

impl Namespace {
    fn new(setup: &str) -> Namespace {
        let mut holder = Command::new("unshare")
            .args(["--mount", "--propagation", "private", "--", "sh", "-c"])
            .arg(format!("set -e; {setup}; echo ready; exec sleep 100000"))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("unshare (util-linux) runs");
        let mut line = String::new();
        BufReader::new(holder.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        if line.trim() != "ready" {
            let out = holder.wait_with_output().unwrap();
            panic!(
                "cannot set up the mount namespace ({setup}): {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Namespace { holder }
    }

    /// `capstan <args>` in the namespace, as `sb.capstan` runs it outside.
    fn capstan(&self, sb: &Sandbox, args: &[&str]) -> Ran {
        self.command(sb, env!("CARGO_BIN_EXE_capstan"), args)
            .output()
            .unwrap()
            .into()
    }

    /// `program <args>` in the namespace, in the sandbox, with the
    /// environment `capstan` gets. The working directory is entered inside
    /// the namespace: one opened outside would still reach the old mounts.
    fn command(&self, sb: &Sandbox, program: &str, args: &[&str]) -> Command {
        let mut cmd = sb.tool("nsenter");
        cmd.arg("--target")
            .arg(self.holder.id().to_string())
            .args(["--mount", "--", "sh", "-c", r#"cd "$0" && exec "$@""#])
            .arg(sb.path())
            .arg(program)
            .args(args);
        cmd
    }
}

impl Drop for Namespace {
    fn drop(&mut self) {
        let _ = self.holder.kill();
        let _ = self.holder.wait();
    }
}

/// Run `pipeline` with the host killed (SIGKILL) at `point`.
fn killed_at(sb: &Sandbox, pipeline: &Path, point: &str) {
    let out = sb
        .command(&["run", pipeline.to_str().unwrap(), "-q"])
        .env("CAPSTAN_FAULT", point)
        .output()
        .unwrap();
    assert_eq!(
        out.status.signal(),
        Some(9),
        "{point}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn runs(ran: &Ran) -> Vec<Value> {
    assert_eq!(ran.code, 0, "{ran:?}");
    serde_json::from_str::<Value>(&ran.stdout)
        .unwrap_or_else(|e| panic!("{e}: {ran:?}"))
        .as_array()
        .unwrap()
        .clone()
}

/// The page numbers a WAL file holds frames of.
fn pages_in_wal(wal: &Path) -> Vec<u32> {
    let bytes = std::fs::read(wal).unwrap();
    let page_size = u32::from_be_bytes(bytes[8..12].try_into().unwrap()) as usize;
    bytes[32..]
        .chunks(24 + page_size)
        .filter(|f| f.len() == 24 + page_size)
        .map(|f| u32::from_be_bytes(f[..4].try_into().unwrap()))
        .collect()
}

/// Damage an index of the store's database file that its WAL does not
/// hold a newer copy of (SQLite would read that one): overwrite the header
/// of the index's root page. Returns the index's name.
fn damage_an_index(db: &Path) -> String {
    let (indexes, page_size) = {
        // The database file alone, as it is on disk (not through the WAL).
        let uri = format!("file:{}?immutable=1", db.display());
        let c = rusqlite::Connection::open_with_flags(
            uri,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_URI,
        )
        .unwrap();
        let mut q = c
            .prepare("SELECT name, rootpage FROM sqlite_schema WHERE type = 'index' ORDER BY name")
            .unwrap();
        let indexes: Vec<(String, u32)> = q
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        let page_size: u32 = c
            .pragma_query_value(None, "page_size", |r| r.get(0))
            .unwrap();
        (indexes, page_size)
    };
    let in_wal = pages_in_wal(&PathBuf::from(format!("{}-wal", db.display())));
    let (name, root) = indexes
        .into_iter()
        .find(|(_, root)| !in_wal.contains(root))
        .expect("an index the killed host did not change");
    use std::os::unix::fs::FileExt;
    let file = std::fs::OpenOptions::new().write(true).open(db).unwrap();
    file.write_all_at(&[0xff; 32], (u64::from(root) - 1) * u64::from(page_size))
        .unwrap();
    name
}

#[test]
fn a_store_damaged_after_an_unclean_shutdown_is_refused_to_writers_and_read_by_readers() {
    let sb = Sandbox::new();
    let pipeline = sb.pipeline(PIPELINE);
    let p = pipeline.to_str().unwrap();
    let ok = sb.capstan(&["run", p, "-q"]);
    assert_eq!(ok.code, 0, "{ok:?}");
    let db = sb.path().join(".capstan/capstan.db");
    let wal = sb.path().join(".capstan/capstan.db-wal");
    assert!(
        !wal.exists(),
        "a command that ends closes the store: no WAL is left"
    );
    // An unclean shutdown: the host dies with the store open, leaving its WAL.
    killed_at(&sb, &pipeline, "stage-start:greet");
    assert!(
        wal.metadata().unwrap().len() > 0,
        "the killed host's WAL is left"
    );
    let index = damage_an_index(&db);

    let refused = sb.capstan(&["run", p, "-q"]);
    assert_eq!(refused.code, 10, "{index}: {refused:?}");
    for part in [
        &format!("error: run store {} is damaged", db.display()),
        "PRAGMA quick_check",
        "not closed cleanly",
        "sqlite3 capstan.db .recover | sqlite3 recovered-capstan.db",
        "restore a copy of capstan.db",
        "`capstan runs`, `show`, `logs`, `stats`, `verify` and `audit --run` still read it",
    ] {
        assert!(refused.stderr.contains(part), "{part:?}: {refused:?}");
    }
    // Readers still list the history, with the warning.
    let listed = sb.capstan(&["runs", "--json"]);
    assert_eq!(runs(&listed).len(), 2, "{listed:?}");
    assert!(
        listed.stderr.contains("warning: run store")
            && listed.stderr.contains("is damaged")
            && listed
                .stderr
                .contains("Showing what can still be read of it"),
        "{listed:?}"
    );
    let first = runs(&listed)[1]["id"].as_str().unwrap().to_string();
    let shown = sb.capstan(&["show", &first, "--json"]);
    assert_eq!(shown.code, 0, "{shown:?}");
    // Reading left the evidence: every writer is still refused.
    assert!(wal.metadata().unwrap().len() > 0);
    let killed = runs(&listed)[0]["id"].as_str().unwrap().to_string();
    for args in [
        vec!["run", p, "-q"],
        vec!["resume", killed.as_str(), "-q"],
        vec!["cancel", killed.as_str(), "--as", "alice", "--reason", "x"],
    ] {
        let again = sb.capstan(&args);
        assert_eq!(again.code, 10, "{args:?}: {again:?}");
        assert!(again.stderr.contains("is damaged"), "{args:?}: {again:?}");
    }
}

#[test]
fn a_read_only_state_dir_is_read_and_writers_are_told_why_they_cannot_record() {
    let sb = Sandbox::new();
    let pipeline = sb.pipeline(PIPELINE);
    let p = pipeline.to_str().unwrap();
    let ok = sb.capstan(&["run", p, "-q"]);
    assert_eq!(ok.code, 0, "{ok:?}");
    let state = sb.path().join(".capstan");
    let id = sb.newest_run_id();
    let read_only = || {
        let s = state.display();
        Namespace::new(&format!(
            "mount --bind '{s}' '{s}'; mount -o remount,ro,bind '{s}' '{s}'"
        ))
    };

    // Closed cleanly: no WAL, no shared-memory file, none can be made.
    let ns = read_only();
    let made = ns
        .command(&sb, "touch", &[state.join("probe").to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&made.stderr).contains("Read-only file system"),
        "the state dir is read-only in the namespace: {made:?}"
    );
    assert_eq!(runs(&ns.capstan(&sb, &["runs", "--json"])).len(), 1);
    for args in [
        vec!["show", id.as_str()],
        vec!["logs", id.as_str()],
        vec!["stats"],
        vec!["verify", id.as_str()],
        vec!["audit", "--run", id.as_str()],
    ] {
        let ran = ns.capstan(&sb, &args);
        assert_eq!(ran.code, 0, "{args:?}: {ran:?}");
    }
    let refused = ns.capstan(&sb, &["run", p, "-q"]);
    assert_eq!(refused.code, 10, "{refused:?}");
    for part in [
        &format!(
            "cannot record anything in the run store {}/capstan.db: its directory {} is not writable (Read-only file system)",
            state.display(),
            state.display()
        ),
        "need write access",
        "`capstan runs`, `show`, `logs`, `stats`, `verify` and `audit --run` work without it",
    ] {
        assert!(refused.stderr.contains(part), "{part:?}: {refused:?}");
    }
    let refused = ns.capstan(&sb, &["cancel", &id, "--as", "alice", "--reason", "x"]);
    assert_eq!(refused.code, 10, "{refused:?}");
    drop(ns);

    // A host killed with the store open left its WAL and shared-memory
    // file: read through them, the killed run is listed too.
    killed_at(&sb, &pipeline, "stage-start:greet");
    let ns = read_only();
    let listed = ns.capstan(&sb, &["runs", "--json"]);
    let listed_runs = runs(&listed);
    assert_eq!(listed_runs.len(), 2, "{listed:?}");
    assert_eq!(
        listed_runs[0]["status"], "running",
        "not reaped: {listed:?}"
    );
    assert!(!listed.stderr.contains("warning"), "{listed:?}");
}

/// A pipeline whose one stage holds the run: `sleep 600`.
fn holding(sb: &Sandbox) -> PathBuf {
    let stage = adversary_stage(
        "hold",
        r#"{ action = "exec", program = "sleep", args = ["600"] }"#,
        "",
    );
    sb.write(
        "hold.toml",
        &sb.fill(&format!(
            "[pipeline]\nname = \"hold\"\nenvironments = [\"dev\"]\n[plugins.adversary]\npath = \"{{adversary}}\"\n{stage}"
        )),
    )
}

/// The run directory of the run that started `sleep`, and its pid.
fn sleeping(sb: &Sandbox) -> (PathBuf, i64) {
    eventually(Duration::from_secs(120), "`sleep` starts", || {
        let runs = std::fs::read_dir(sb.path().join(".capstan/runs")).ok()?;
        runs.flatten().find_map(|run| {
            let pid = started_programs(&run.path())
                .into_iter()
                .find(|(p, _)| p == "sleep")?
                .1;
            Some((run.path(), pid))
        })
    })
}

fn run_json(dir: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(dir.join("run.json")).unwrap()).unwrap()
}

#[test]
fn a_wal_removed_under_a_running_host_stops_it_and_its_records_are_saved() {
    let sb = Sandbox::new();
    // A store with history, closed cleanly.
    let ok = sb.capstan(&["run", sb.pipeline(PIPELINE).to_str().unwrap(), "-q"]);
    assert_eq!(ok.code, 0, "{ok:?}");
    let hold = holding(&sb);
    let host = sb.spawn(&["run", hold.to_str().unwrap(), "-q"]);
    let (run_dir, sleep) = sleeping(&sb);
    let id = run_dir.file_name().unwrap().to_str().unwrap().to_string();
    let wal = sb.path().join(".capstan/capstan.db-wal");
    std::fs::remove_file(&wal).unwrap();
    // No other capstan opens the store meanwhile: the host finds its WAL gone
    // by itself (it looks every 2 s), with nothing written by anyone since.
    let (ran, _) = host.wait(Duration::from_secs(120));
    assert!(!harness::alive(sleep), "the stage's program was ended");
    assert_eq!(ran.code, 10, "{ran:?}");
    for part in [
        &format!("error: run {id} stopped: run store "),
        &format!("{} was removed while this process (pid ", wal.display()),
        "is now copied into",
        "It is recorded as interrupted.",
        &format!("`capstan resume {id}` continues it"),
    ] {
        assert!(ran.stderr.contains(part), "{part:?}: {ran:?}");
    }
    // Its records were saved into the database file, and the stop recorded.
    let shown = sb.show(&id);
    assert_eq!(shown["run"]["status"], "interrupted", "{shown:#}");
    let stage = &shown["stages"][0];
    assert_eq!(stage["status"], "cancelled", "{shown:#}");
    let reason = stage["message"].as_str().unwrap();
    assert!(
        reason.starts_with("stopped by capstan: run store ")
            && reason.contains("capstan.db-wal was removed"),
        "{reason}"
    );
    assert_eq!(run_json(&run_dir)["status"], "interrupted");
    let verified = sb.capstan(&["verify", &id]);
    assert_eq!(verified.code, 0, "{verified:?}");
}

#[test]
fn a_second_run_on_this_machine_is_refused_when_the_store_lost_the_first_ones_lock() {
    let sb = Sandbox::new();
    let ok = sb.capstan(&["run", sb.pipeline(PIPELINE).to_str().unwrap(), "-q"]);
    assert_eq!(ok.code, 0, "{ok:?}");
    let hold = holding(&sb);
    let hold = hold.to_str().unwrap();
    // This host looks at the store only when it writes: the second run
    // comes first, deterministically.
    let mut first = sb.command(&["run", hold, "-q"]);
    first.env("CAPSTAN_STORE_WATCH", "1h");
    let first = Guarded::spawn(first);
    let (run_dir, sleep) = sleeping(&sb);
    let id = run_dir.file_name().unwrap().to_str().unwrap().to_string();
    // Its WAL and the WAL's index removed: what it recorded since the store
    // was last closed (its run, its lock) is gone from the store's view.
    for file in ["capstan.db-wal", "capstan.db-shm"] {
        std::fs::remove_file(sb.path().join(".capstan").join(file)).unwrap();
    }
    let second = sb.capstan(&["run", hold, "-q"]);
    assert_eq!(second.code, 6, "{second:?}");
    for part in [
        &format!("error: environment `dev` is in use by run {id} on this machine (pid "),
        &format!("holds {}/.capstan/locks/dev.lock", sb.path().display()),
        "though the run store records no lock for it",
    ] {
        assert!(second.stderr.contains(part), "{part:?}: {second:?}");
    }
    assert!(
        !second.stderr.contains("of `hold` in environment"),
        "{second:?}"
    );
    assert_eq!(
        std::fs::read_dir(sb.path().join(".capstan/runs"))
            .unwrap()
            .count(),
        2,
        "the refused run left no run directory"
    );
    assert_eq!(sleepers_of(&run_dir), 1, "only the first run's stage ran");

    // The first host's stage ends; its next write finds the store changed
    // (the second run used it), keeps its records out of it, and stops.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(sleep as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let (ran, _) = first.wait(Duration::from_secs(120));
    assert_eq!(ran.code, 10, "{ran:?}");
    for part in [
        &format!("error: run {id} stopped: run store "),
        "capstan.db-wal was ",
        "is not in the store any more",
        &format!(
            "its run directory {} keeps what happened",
            run_dir.display()
        ),
    ] {
        assert!(ran.stderr.contains(part), "{part:?}: {ran:?}");
    }
    assert_eq!(run_json(&run_dir)["status"], "interrupted");
}

/// How many `sleep` programs the runs of this sandbox started.
fn sleepers_of(run_dir: &Path) -> usize {
    let runs = run_dir.parent().unwrap();
    std::fs::read_dir(runs)
        .unwrap()
        .flatten()
        .map(|r| {
            started_programs(&r.path())
                .into_iter()
                .filter(|(p, _)| p == "sleep")
                .count()
        })
        .sum()
}

/// A stage that writes an 8 MiB file `big` in its work dir, and refuses to
/// start where an earlier attempt left one (as a tool does with a state
/// file it cannot read).
const FILLING: &str = r#"
[pipeline]
name = "fill"
environments = ["dev"]
[plugins.command]
path = "{command}"
[stages.fill]
plugin = "command"
with.run = ["sh", "-c", '[ ! -e big ] || { echo "big is left from an earlier attempt" >&2; exit 3; }; dd if=/dev/zero of=big bs=1M count=8 2>&1']
[[stages.fill.grants.exec]]
program = "sh"
args = ["-c", "*"]
env = ["CAPSTAN_OUTPUT"]
[stages.fill.grants]
read = ["ro"]
"#;

#[test]
fn a_run_cut_short_by_a_full_disk_resumes_in_a_clean_work_dir_once_space_is_back() {
    let sb = Sandbox::new();
    let pipeline = sb.pipeline(FILLING);
    let p = pipeline.to_str().unwrap();
    let state = sb.path().join(".capstan");
    std::fs::create_dir(&state).unwrap();
    // 16 MiB, 12 of them taken: the stage's 8 MiB do not fit.
    let s = state.display();
    let ns = Namespace::new(&format!(
        "mount -t tmpfs -o size=16m tmpfs '{s}'; head -c 12582912 /dev/zero > '{s}/ballast'"
    ));
    let sh = |script: &str| -> Ran {
        ns.command(&sb, "sh", &["-c", script])
            .output()
            .unwrap()
            .into()
    };

    let full = ns.capstan(&sb, &["run", p, "-q", "--no-cache"]);
    let id = sh("ls .capstan/runs").stdout.trim().to_string();
    assert_eq!(full.code, 10, "{full:?}");
    for part in [
        &format!("error: run {id}: run store {s}/capstan.db: no space left on device"),
        &format!("Free space on the file system holding {s}"),
        "stages/<stage>.attempt-<n>/",
        &format!("`capstan resume {id}` continues the run"),
    ] {
        assert!(full.stderr.contains(part), "{part:?}: {full:?}");
    }
    // The failed attempt's half-written file went aside with its work dir.
    let run = format!(".capstan/runs/{id}");
    let left = sh(&format!(
        "stat -c %s {run}/stages/fill.attempt-1/big; ls {run}/stages"
    ));
    let mut lines = left.stdout.lines();
    let half: u64 = lines.next().unwrap().parse().unwrap();
    assert!(half > 0 && half < 8 << 20, "{left:?}");
    assert_eq!(lines.collect::<Vec<_>>(), ["fill.attempt-1"], "{left:?}");

    // Space back: the stage runs again, from an empty work dir.
    assert_eq!(sh(&format!("rm {s}/ballast")).code, 0);
    let resumed = ns.capstan(&sb, &["resume", &id, "-q", "--no-cache"]);
    assert_eq!(resumed.code, 0, "{resumed:?}");
    assert!(
        resumed
            .stderr
            .contains(&format!("note: run {id} was interrupted")),
        "the host could not record how it ended: {resumed:?}"
    );
    let after = sh(&format!(
        "stat -c %s {run}/stages/fill/big {run}/stages/fill.attempt-1/big"
    ));
    let sizes: Vec<u64> = after.stdout.lines().map(|l| l.parse().unwrap()).collect();
    assert_eq!(sizes, [8 << 20, half], "{after:?}");
    let shown: Value =
        serde_json::from_str(&ns.capstan(&sb, &["show", &id, "--json"]).stdout).unwrap();
    assert_eq!(shown["run"]["status"], "succeeded", "{shown:#}");
    assert_eq!(shown["stages"][0]["attempt"], 2, "{shown:#}");
    // The audit log lines the full disk kept from the store are in it now.
    let verified = ns.capstan(&sb, &["verify", &id]);
    assert_eq!(verified.code, 0, "{verified:?}");
}

#[test]
fn an_event_written_to_the_audit_log_but_not_the_store_is_recorded_on_resume() {
    let sb = Sandbox::new();
    let pipeline = sb.pipeline(PIPELINE);
    // Killed between writing greet's first audit line and recording it.
    killed_at(&sb, &pipeline, "audit-written:greet");
    let id = sb.newest_run_id();
    let stored = |sb: &Sandbox| -> Vec<Value> {
        sb.json(&["audit", "--run", &id, "--json"])
            .as_array()
            .unwrap()
            .clone()
    };
    let before = stored(&sb);
    let run_dir = sb.show(&id)["run"]["run_dir"].as_str().unwrap().to_string();
    let lines = |dir: &str| -> Vec<Value> {
        std::fs::read_to_string(Path::new(dir).join("audit.jsonl"))
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    };
    let written = lines(&run_dir);
    assert_eq!(written.len(), before.len() + 1, "one line the store lacks");
    let unrecorded = written.last().unwrap().clone();
    assert_eq!(unrecorded["stage"], "greet");
    let verified = sb.capstan(&["verify", &id]);
    assert!(
        verified.stdout.contains(&format!(
            "the run store has recorded none of the {} lines yet",
            written.len()
        )),
        "{verified:?}"
    );

    let resumed = sb.capstan(&["resume", &id, "-q"]);
    assert_eq!(resumed.code, 0, "{resumed:?}");
    let after = stored(&sb);
    let n = written.len();
    assert_eq!(after[n - 1]["detail"], unrecorded["detail"], "recorded now");
    assert_eq!(after[n]["detail"]["event"], "audit-store-reconciled");
    assert_eq!(after[n]["detail"]["lines"], serde_json::json!([n, n]));
    let verified = sb.capstan(&["verify", &id]);
    assert_eq!(verified.code, 0, "{verified:?}");
    assert!(
        verified.stdout.contains(&format!(
            "line {} records that lines {n}–{n} were recorded in the run store late",
            n + 1
        )),
        "{verified:?}"
    );
}

/// Fixture: the state an audit log left cut short of the store's head
/// (a machine that stopped before the file's last write reached the disk).
#[test]
fn an_audit_log_cut_short_of_the_stores_head_is_recorded_and_named_by_verify() {
    let sb = Sandbox::new();
    let pipeline = sb.pipeline(PIPELINE);
    killed_at(&sb, &pipeline, "stage-end:greet");
    let id = sb.newest_run_id();
    let run_dir = PathBuf::from(sb.show(&id)["run"]["run_dir"].as_str().unwrap());
    let audit = run_dir.join("audit.jsonl");
    let text = std::fs::read_to_string(&audit).unwrap();
    let keep = text.trim_end().rfind('\n').unwrap() + 1;
    std::fs::write(&audit, &text[..keep]).unwrap();
    let lines = text[..keep].lines().count();

    let resumed = sb.capstan(&["resume", &id, "-q"]);
    assert_eq!(resumed.code, 0, "{resumed:?}");
    let verified = sb.capstan(&["verify", &id]);
    assert_eq!(verified.code, 9, "{verified:?}");
    assert!(
        verified.stdout.contains(&format!(
            "audit.jsonl:{}: line {} records that the file was cut",
            lines + 1,
            lines + 1
        )) && verified.stdout.contains(&format!("the file {lines} lines")),
        "{verified:?}"
    );
}
