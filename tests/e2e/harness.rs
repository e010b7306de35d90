//! A sandbox directory per test, pipeline files with plugin paths filled in,
//! and helpers to run `capstan` and read what a run recorded.
//!
//! The run store is each sandbox's SQLite file, or with
//! `CAPSTAN_TEST_STORE=postgres` a new database of its own on a throw-away
//! PostgreSQL server (`capstan_test_artifacts::postgres`), which every
//! `capstan` of the test gets as `CAPSTAN_STORE`. Tests reach the store
//! through `capstan` or [`Sandbox::store`], never its file.

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

/// Placeholders in test pipelines, replaced by built plugin paths.
const PLUGINS: &[(&str, &str)] = &[
    ("{hello}", capstan_test_artifacts::HELLO),
    ("{command}", capstan_test_artifacts::COMMAND),
    ("{notify}", capstan_test_artifacts::NOTIFY),
    ("{approval}", capstan_test_artifacts::APPROVAL),
    ("{adversary}", capstan_test_artifacts::ADVERSARY),
    ("{leaky}", capstan_test_artifacts::LEAKY),
    ("{terraform}", capstan_test_artifacts::TERRAFORM),
    ("{old_contract}", capstan_test_artifacts::OLD_CONTRACT),
    ("{sleepy_describe}", capstan_test_artifacts::SLEEPY_DESCRIBE),
    ("{smoke}", capstan_test_artifacts::SMOKE_TEST),
    ("{approval}", capstan_test_artifacts::APPROVAL),
];

pub struct Sandbox {
    pub dir: tempfile::TempDir,
    /// The PostgreSQL store's URL (see the module's doc); `None`: the
    /// state dir's SQLite file.
    postgres: Option<String>,
}

/// Which run store the tests use (`CAPSTAN_TEST_STORE`).
fn postgres_store() -> bool {
    match std::env::var("CAPSTAN_TEST_STORE").as_deref() {
        Err(_) | Ok("" | "sqlite") => false,
        Ok("postgres") => true,
        Ok(other) => panic!("CAPSTAN_TEST_STORE={other}: use `sqlite` (the default) or `postgres`"),
    }
}

/// What one `capstan` invocation did.
pub struct Ran {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl From<Output> for Ran {
    fn from(o: Output) -> Ran {
        Ran {
            code: o.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }
}

impl std::fmt::Debug for Ran {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit {}\n--- stdout\n{}\n--- stderr\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

impl Sandbox {
    pub fn new() -> Sandbox {
        let sb = Sandbox {
            dir: tempfile::tempdir().expect("temp dir"),
            postgres: postgres_store().then(capstan_test_artifacts::postgres::database),
        };
        std::fs::create_dir(sb.path().join("ro")).unwrap();
        std::fs::create_dir(sb.path().join("rw")).unwrap();
        sb
    }

    pub fn path(&self) -> PathBuf {
        self.dir.path().canonicalize().expect("sandbox path")
    }

    /// The per-user compiled-plugin cache of this sandbox's `capstan`
    /// (`$XDG_CACHE_HOME/capstan`).
    pub fn user_cache(&self) -> PathBuf {
        self.path().join("xdg-cache/capstan")
    }

    /// The key that cache's entries are trusted with.
    pub fn user_cache_key(&self) -> PathBuf {
        self.path().join("xdg-state/capstan/cache-key")
    }

    /// Write a file (parents created) and return its path.
    pub fn write(&self, rel: &str, content: &str) -> PathBuf {
        let path = self.path().join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, content).unwrap();
        path
    }

    /// Write `pipeline.toml` with `{hello}`, `{command}`, `{notify}`, `{approval}`, `{smoke}`,
    /// `{adversary}`, `{leaky}`, `{terraform}`, `{old_contract}`, `{sleepy_describe}` and
    /// `{sandbox}` replaced.
    pub fn pipeline(&self, toml: &str) -> PathBuf {
        self.write("pipeline.toml", &self.fill(toml))
    }

    pub fn fill(&self, text: &str) -> String {
        let mut text = text.replace("{sandbox}", &self.path().to_string_lossy());
        for (placeholder, path) in PLUGINS {
            text = text.replace(placeholder, path);
        }
        text
    }

    /// Run `capstan` in the sandbox, with a known environment: a granted
    /// variable and a secret-looking one that no stage is granted.
    pub fn capstan(&self, args: &[&str]) -> Ran {
        self.command(args).output().expect("run capstan").into()
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = self.tool(env!("CARGO_BIN_EXE_capstan"));
        cmd.args(args);
        cmd
    }

    /// `program` in the sandbox, with the environment `capstan` gets.
    pub fn tool(&self, program: &str) -> Command {
        let mut cmd = Command::new(program);
        cmd.current_dir(self.path())
            .env("CAPSTAN_STATE_DIR", self.path().join(".capstan"))
            // The per-user compiled-plugin cache and its key: the sandbox's
            // own, so that tests share no cache unless they mean to.
            .env("XDG_CACHE_HOME", self.path().join("xdg-cache"))
            .env("XDG_STATE_HOME", self.path().join("xdg-state"))
            .env_remove("CAPSTAN_CACHE_DIR")
            .env("GRANTED_VAR", "granted-value")
            .env("SECRET_TOKEN", "hunter2-must-not-leak")
            .env_remove("RUST_LOG")
            .env_remove("CAPSTAN_STORE")
            .env_remove("PGPASSWORD");
        if let Some(url) = &self.postgres {
            cmd.env("CAPSTAN_STORE", url);
        }
        cmd
    }

    /// Whether the run store is a PostgreSQL server rather than the state
    /// dir's file.
    pub fn on_postgres(&self) -> bool {
        self.postgres.is_some()
    }

    /// The run store this sandbox's `capstan` uses, opened here.
    pub fn store(&self) -> std::sync::Arc<dyn capstan::store::RunStore> {
        self.store_location()
            .open(capstan::store::Lease::default())
            .expect("the run store opens")
    }

    fn store_location(&self) -> capstan::store::Location {
        match &self.postgres {
            Some(url) => capstan::store::Location::Postgres(url.clone()),
            None => capstan::store::Location::Sqlite(self.path().join(".capstan/capstan.db")),
        }
    }

    /// Change the run store behind Capstan's back (as someone with access
    /// to its database could): `sql` with text parameters `?1`, `?2`, …,
    /// on SQLite or PostgreSQL alike.
    pub fn tamper(&self, sql: &str, params: &[&str]) {
        match &self.postgres {
            None => {
                let c =
                    rusqlite::Connection::open(self.path().join(".capstan/capstan.db")).unwrap();
                c.execute(sql, rusqlite::params_from_iter(params)).unwrap();
            }
            Some(url) => {
                let sql = regex::Regex::new(r"\?(\d+)")
                    .unwrap()
                    .replace_all(sql, "$$$1")
                    .into_owned();
                let params: Vec<String> = params.iter().map(|p| p.to_string()).collect();
                let url = url.clone();
                // The sync client runs a runtime of its own: on a thread of its own.
                std::thread::spawn(move || {
                    let mut client = postgres::Client::connect(&url, postgres::NoTls).unwrap();
                    let params: Vec<&(dyn postgres::types::ToSql + Sync)> = params
                        .iter()
                        .map(|p| p as &(dyn postgres::types::ToSql + Sync))
                        .collect();
                    client.execute(&sql, &params).unwrap();
                })
                .join()
                .unwrap();
            }
        }
    }

    /// `capstan <args>` started in `dir`, with no state dir given: its state
    /// is found as an operator's would be (from the pipeline file, or
    /// upwards from `dir`).
    pub fn command_in(&self, dir: &Path, args: &[&str]) -> Command {
        let mut cmd = self.command(args);
        cmd.current_dir(dir).env_remove("CAPSTAN_STATE_DIR");
        cmd
    }

    /// `capstan <args>` in the background, under a [`Guarded`] watch.
    pub fn spawn(&self, args: &[&str]) -> Guarded {
        Guarded::spawn(self.command(args))
    }

    /// `capstan <args>`, killed (and the test failed) if it runs longer
    /// than `limit`; also returns how long it took.
    pub fn capstan_within(&self, args: &[&str], limit: Duration) -> (Ran, Duration) {
        self.spawn(args).wait(limit)
    }

    /// Run the shell command `line` in the sandbox on a pseudo-terminal
    /// (util-linux `script`), typing `input` at it.
    pub fn on_a_terminal(&self, line: &str, input: &[u8]) -> Output {
        use std::io::Write;
        let mut script = self.tool("script");
        script.args(["-qec", line, "/dev/null"]);
        script
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        let mut child = script.spawn().expect("script (util-linux) runs");
        child.stdin.take().unwrap().write_all(input).unwrap();
        child.wait_with_output().unwrap()
    }

    /// `capstan <args>` that must succeed and print JSON.
    pub fn json(&self, args: &[&str]) -> Value {
        let ran = self.capstan(args);
        assert_eq!(ran.code, 0, "capstan {args:?}: {ran:?}");
        serde_json::from_str(&ran.stdout)
            .unwrap_or_else(|e| panic!("capstan {args:?}: {e}: {ran:?}"))
    }

    /// `capstan show <run> --json`: the run, its stages (latest attempts),
    /// every attempt, approvals, the pending request.
    pub fn show(&self, run: &str) -> Value {
        self.json(&["show", run, "--json"])
    }

    /// The newest run's id, from the run store.
    pub fn newest_run_id(&self) -> String {
        self.json(&["runs", "--json", "--limit", "1"])[0]["id"]
            .as_str()
            .expect("a run")
            .to_string()
    }

    /// The only (or newest) run recorded in the sandbox: the one that
    /// started last (run ids of one second sort by their random part).
    pub fn last_run(&self) -> Run {
        let runs = self.path().join(".capstan/runs");
        let started = |dir: &Path| -> Option<jiff::Timestamp> {
            let text = std::fs::read_to_string(dir.join("run.json")).ok()?;
            let record: Value = serde_json::from_str(&text).ok()?;
            record["started"].as_str()?.parse().ok()
        };
        let mut dirs: Vec<_> = std::fs::read_dir(&runs)
            .expect("runs dir")
            .map(|e| e.unwrap().path())
            .collect();
        dirs.sort_by_key(|d| (started(d), d.clone()));
        Run::read(dirs.last().expect("a run"))
    }
}

/// A finished run's directory.
pub struct Run {
    pub dir: PathBuf,
    pub record: Value,
    pub audit: Vec<Value>,
}

impl Run {
    pub fn read(dir: &Path) -> Run {
        let record =
            serde_json::from_str(&std::fs::read_to_string(dir.join("run.json")).expect("run.json"))
                .expect("run.json is JSON");
        let audit = std::fs::read_to_string(dir.join("audit.jsonl"))
            .expect("audit.jsonl")
            .lines()
            .map(|l| serde_json::from_str(l).expect("audit line is JSON"))
            .collect();
        Run {
            dir: dir.to_path_buf(),
            record,
            audit,
        }
    }

    pub fn stage(&self, name: &str) -> &Value {
        self.record["stages"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"] == name)
            .unwrap_or_else(|| panic!("no stage {name} in {:#}", self.record))
    }

    pub fn status(&self, name: &str) -> String {
        self.stage(name)["status"].as_str().unwrap().to_string()
    }

    pub fn reason(&self, name: &str) -> String {
        self.stage(name)["reason"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    pub fn output(&self, stage: &str, key: &str) -> Value {
        self.stage(stage)["outputs"][key].clone()
    }

    pub fn log(&self, stage: &str) -> String {
        std::fs::read_to_string(self.dir.join("logs").join(format!("{stage}.log")))
            .unwrap_or_default()
    }

    /// Audit events of one stage.
    pub fn audit_of(&self, stage: &str) -> Vec<&Value> {
        self.audit.iter().filter(|e| e["stage"] == stage).collect()
    }

    /// Bytes of the raw `audit.jsonl` lines of one stage.
    pub fn audit_bytes(&self, stage: &str) -> usize {
        std::fs::read_to_string(self.dir.join("audit.jsonl"))
            .expect("audit.jsonl")
            .lines()
            .filter(|l| serde_json::from_str::<Value>(l).is_ok_and(|e| e["stage"] == stage))
            .map(|l| l.len() + 1)
            .sum()
    }

    /// `stage` failed with a reason containing every one of `words`, and
    /// the failure, with that reason, is in audit.jsonl.
    pub fn assert_failed_naming(&self, stage: &str, words: &[&str]) {
        assert_eq!(
            self.status(stage),
            "failed",
            "{stage} must fail: {:#}",
            self.stage(stage)
        );
        let reason = self.reason(stage);
        for w in words {
            assert!(reason.contains(w), "{stage}: `{reason}` lacks `{w}`");
        }
        let failed = self
            .audit_of(stage)
            .into_iter()
            .find(|e| e["detail"]["event"] == "failed")
            .unwrap_or_else(|| panic!("{stage}: no failure in audit.jsonl"));
        assert_eq!(failed["reason"], reason.as_str(), "{stage}");
    }

    /// Audit denials of one stage.
    pub fn denials(&self, stage: &str) -> Vec<&Value> {
        self.audit_of(stage)
            .into_iter()
            .filter(|e| e["allowed"] == false)
            .collect()
    }
}

/// The adversary's requests, all granted (a request without a grant stops
/// the pipeline); attacks then try to go beyond them. Grants `ro/` and `rw/`
/// of the sandbox, which [`Sandbox::new`] creates.
const ADVERSARY_GRANTS: &str = r#"
[[stages.NAME.grants.exec]]
program = "echo"
args = ["hello|world"]
[[stages.NAME.grants.exec]]
program = "sleep"
args = ["*"]
[[stages.NAME.grants.exec]]
program = "yes"
[[stages.NAME.grants.exec]]
program = "true"
[[stages.NAME.grants.exec]]
program = "ln"
args = ["-s", "*", "*"]
[[stages.NAME.grants.exec]]
program = "pwd"
args = ["-P"]
[stages.NAME.grants]
read = ["ro"]
write = ["rw"]
env = ["GRANTED_VAR"]
connect = ["127.0.0.1:*"]
approval = true
"#;

/// A stage of the adversary plugin with `with` and extra stage keys.
pub fn adversary_stage(name: &str, with: &str, extra: &str) -> String {
    format!(
        "[stages.{name}]\nplugin = \"adversary\"\nwith = {with}\n{extra}\n{}",
        ADVERSARY_GRANTS.replace("NAME", name)
    )
}

/// A process started in the background (in a process group of its own),
/// whose output is collected as it comes. [`Guarded::wait`] fails the test
/// if it outlives its limit, and dropping it kills the group: a host that
/// hangs never outlives its test.
pub struct Guarded {
    child: Child,
    started: Instant,
    stdout: Arc<Mutex<Vec<u8>>>,
    stderr: Arc<Mutex<Vec<u8>>>,
    readers: Vec<std::thread::JoinHandle<()>>,
}

impl Guarded {
    pub fn spawn(mut cmd: Command) -> Guarded {
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        let mut child = cmd.spawn().expect("start the process");
        let stdout = Arc::new(Mutex::new(Vec::new()));
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let readers = vec![
            collect(child.stdout.take().unwrap(), stdout.clone()),
            collect(child.stderr.take().unwrap(), stderr.clone()),
        ];
        Guarded {
            child,
            started: Instant::now(),
            stdout,
            stderr,
            readers,
        }
    }

    /// Time since it started.
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// Send it `signal` (as a terminal's Ctrl-C would: to it alone; the
    /// programs it started are in process groups of their own).
    pub fn signal(&self, signal: nix::sys::signal::Signal) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        nix::sys::signal::kill(pid, signal).expect("signal the process");
    }

    /// What it printed on stderr so far.
    pub fn stderr_so_far(&self) -> String {
        String::from_utf8_lossy(&self.stderr.lock().unwrap()).into_owned()
    }

    /// Whether it is still running.
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Wait until it exits, at most `limit` after it started; past that,
    /// kill its process group and fail the test with what it printed.
    /// Returns what it did and how long it ran.
    pub fn wait(mut self, limit: Duration) -> (Ran, Duration) {
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                let took = self.started.elapsed();
                return (self.output(status.code().unwrap_or(-1)), took);
            }
            if self.started.elapsed() > limit {
                self.kill();
                let ran = self.output(-1);
                panic!("still running after {limit:?}: killed\n{ran:?}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// What it printed so far; waits a little for the readers once it has
    /// exited (a child it left behind may hold the pipes open).
    fn output(&mut self, code: i32) -> Ran {
        let until = Instant::now() + Duration::from_secs(2);
        while self.readers.iter().any(|r| !r.is_finished()) && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(10));
        }
        let text =
            |buf: &Arc<Mutex<Vec<u8>>>| String::from_utf8_lossy(&buf.lock().unwrap()).into_owned();
        Ran {
            code,
            stdout: text(&self.stdout),
            stderr: text(&self.stderr),
        }
    }

    fn kill(&mut self) {
        if self.running() {
            let group = nix::unistd::Pid::from_raw(self.child.id() as i32);
            let _ = nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGKILL);
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

impl Drop for Guarded {
    fn drop(&mut self) {
        self.kill();
    }
}

fn collect(
    mut from: impl Read + Send + 'static,
    into: Arc<Mutex<Vec<u8>>>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut buf = [0u8; 8192];
        while let Ok(n) = from.read(&mut buf) {
            if n == 0 {
                break;
            }
            into.lock().unwrap().extend_from_slice(&buf[..n]);
        }
    })
}

/// Poll `check` every 50 ms until it returns something, for at most `limit`.
pub fn eventually<T>(limit: Duration, what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(found) = check() {
            return found;
        }
        assert!(Instant::now() < deadline, "not within {limit:?}: {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Whether process `pid` still runs (a zombie does not).
pub fn alive(pid: i64) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        let state = stat.rsplit_once(')').map(|(_, rest)| rest.trim_start());
        !state.is_some_and(|s| s.starts_with('Z') || s.starts_with('X'))
    })
}

/// The `exec-started` audit events of the run whose directory is `run_dir`
/// (read while the run goes on): (program, pid).
pub fn started_programs(run_dir: &Path) -> Vec<(String, i64)> {
    std::fs::read_to_string(run_dir.join("audit.jsonl"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|e| e["capability"] == "exec-started")
        .filter_map(|e| {
            Some((
                e["detail"]["program"].as_str()?.to_string(),
                e["detail"]["pid"].as_i64()?,
            ))
        })
        .collect()
}

/// Living processes whose command line is exactly `line` (arguments joined
/// by spaces), e.g. a task a test made distinctive (`sleep 313`).
pub fn sleepers(line: &str) -> Vec<i64> {
    processes_where(|l| l == line.as_bytes())
}

/// Living processes whose command line (arguments joined by spaces)
/// satisfies `matches`.
pub fn processes_where(matches: impl Fn(&[u8]) -> bool) -> Vec<i64> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i64>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| {
                let args: Vec<&[u8]> = c.split(|b| *b == 0).filter(|a| !a.is_empty()).collect();
                matches(&args.join(&b' '))
            })
        })
        .filter(|pid| alive(*pid))
        .collect()
}
