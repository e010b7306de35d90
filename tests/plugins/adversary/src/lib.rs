//! Test fixture: an adversarial stage plugin for the end-to-end tests.
//!
//! Its `with` table picks an action: `{ action = "...", ...params }`. The
//! benign actions (`exec`, `context`, `write-file`, `read-file`, `env`)
//! exercise what the tests grant; the attacks (see [`attacks`]) try to go
//! beyond the grants or the stage's limits; [`escapes`] holds the attacks
//! on the sandbox's edges (races on paths, floods on every path to a limit,
//! blocking host calls, text that poses as the host's).
//!
//! The tests grant everything `describe` requests (exec `echo`, `sleep`,
//! `yes`, `true`, `ln -s`, `pwd -P`; read; write; env `GRANTED_VAR`;
//! connect; approval). When the host refuses an attack the stage fails with
//! the host's error (mostly `not-permitted`, carrying the host's message);
//! when an attack succeeds the stage *succeeds* with output `escaped = true`
//! and a summary starting with `ESCAPED:`, so a test can never mistake an
//! escape for a refusal.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use capstan_plugin::{Context, Error, Exec, Info, Outcome, Stage};
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{Map, Value, json};

mod attacks;
mod escapes;

/// The action to take, and its parameters.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(tag = "action", rename_all = "kebab-case")]
enum Action {
    /// Run a granted program with capture; outputs `stdout`, `stderr`,
    /// `exit_code`, `signal`, `started_ms` and `ended_ms` (wall clock).
    Exec {
        program: String,
        #[serde(default)]
        args: Vec<String>,
        cwd: Option<String>,
        #[serde(default)]
        env: BTreeMap<String, String>,
        timeout_ms: Option<u64>,
    },
    /// Output the whole context the stage received. Extra keys in `with`
    /// are accepted and echoed back in `config` (to test interpolation).
    Context {
        #[serde(flatten)]
        extra: Map<String, Value>,
    },
    /// Write `content` to `path`.
    WriteFile { path: String, content: String },
    /// Read `path`; outputs `content`.
    ReadFile { path: String },
    /// Read env var `name`; outputs `value` (null when not visible).
    Env { name: String },
    /// Exec `cat /etc/hostname` (never granted).
    ExecUngranted,
    /// Exec `echo --evil-flag` (the tests grant echo only `hello|world`).
    ForbiddenArgs,
    /// Try to reach a shell through the program name.
    ShSmuggle,
    /// Exec `echo` in `cwd` (outside the grants).
    CwdOutside { cwd: String },
    /// Read `path` (outside the grants, through `..` or a symlink).
    ReadOutside { path: String },
    /// Write `path` (inside a read-only grant).
    WriteReadonly { path: String },
    /// Read env var `name` (not granted).
    EnvUngranted { name: String },
    /// Exec `echo` with `LD_PRELOAD` set.
    EnvSmuggle,
    /// Spin forever.
    Loop,
    /// Allocate 1 MiB chunks forever.
    Alloc,
    /// Print to stdout forever.
    Flood,
    /// Exec `yes` with capture.
    ExecFlood,
    /// Exec `sleep 1000`.
    ExecHang,
    /// Panic.
    Panic,
    /// TCP probe `host:port`; outputs `reachable` and `millis` or `error`.
    Probe {
        host: String,
        port: u16,
        timeout_ms: Option<u64>,
    },
    /// Rename `path` to `path` + ".moved", then make `path` a symlink to
    /// `target` (e.g. re-point a downstream stage's grant).
    Repoint { path: String, target: String },
    /// For `millis`, rename `dir`→`name`→`dir` and `link`→`name`→`link`
    /// alternately: `name` is a real directory, then a symlink pointing
    /// wherever `link` points; each state lasts `dwell_us` (default 0).
    Flip {
        dir: String,
        link: String,
        name: String,
        millis: u64,
        #[serde(default)]
        dwell_us: u64,
    },
    /// Exec `pwd -P` in `cwd`, `times` times; refusals are fine, a working
    /// directory outside `inside` (default: the parent of `cwd`) escaped.
    CwdRace {
        cwd: String,
        times: u32,
        inside: Option<String>,
    },
    /// Create and keep open up to `count` files in `dir`; output how many
    /// opened and the first error, hold them `hold_ms`, then succeed.
    HoldFiles {
        dir: String,
        count: u32,
        hold_ms: u64,
    },
    /// Sleep `delay_ms`, then exec like `exec` (captured).
    ExecAfter {
        delay_ms: u64,
        program: String,
        #[serde(default)]
        args: Vec<String>,
    },
    /// Exec an ungranted program `times` times, ignoring the refusals.
    DenyFlood { times: u32 },
    /// Return an output and a summary of `bytes` bytes each (what a stage
    /// returns is written to run.json and the run store).
    BigOutcome { bytes: usize },
    /// Exec `yes` with capture, unlogged.
    ExecFloodUnlogged,
    /// Read the FIFO at `path` (blocks until a writer comes).
    OpenFifo { path: String },
    /// GET `url` through the host within `timeout_ms`.
    HttpGet { url: String, timeout_ms: u64 },
    /// Put terminal escapes and lines posing as the host's into every text
    /// field; with `approval` (default), ask humans with such a request.
    ForgeText {
        #[serde(default = "yes")]
        approval: bool,
    },
}

fn yes() -> bool {
    true
}

struct Adversary;

impl Stage for Adversary {
    type Config = Action;

    fn info() -> Info {
        Info::new("adversary", env!("CARGO_PKG_VERSION"))
            .description("Test fixture that tries to escape its grants.")
            .exec("echo", "benign exec and argument attacks")
            .exec("sleep", "to hang a child process")
            .exec("yes", "to flood a child's output")
            .exec("true", "benign exec")
            .exec("ln", "to re-point a path with a symlink")
            .exec("pwd", "to see where a working directory really is")
            .read("to read files, and outside the grants")
            .write("to write files, and into read-only grants")
            .env("GRANTED_VAR", "to read a granted variable")
            .connect("to probe TCP endpoints")
            .approval("to ask humans with forged text")
    }

    fn run(ctx: Context<Action>) -> Result<Outcome, Error> {
        match ctx.config {
            Action::Exec {
                ref program,
                ref args,
                ref cwd,
                ref env,
                timeout_ms,
            } => {
                let mut exec = Exec::new(program.as_str()).args(args).capture();
                if let Some(cwd) = cwd {
                    exec = exec.cwd(cwd);
                }
                for (k, v) in env {
                    exec = exec.env(k.as_str(), v);
                }
                if let Some(ms) = timeout_ms {
                    exec = exec.timeout(Duration::from_millis(ms));
                }
                let started_ms = now_ms();
                let out = exec.run()?;
                let ended_ms = now_ms();
                Ok(Outcome::new(format!("{program} ended with {}", out.status))
                    .output("stdout", out.stdout_str())
                    .output("stderr", out.stderr_str())
                    .output("exit_code", out.status.code())
                    .output("signal", signal(&out.status))
                    .output("truncated", out.truncated)
                    .output("started_ms", started_ms)
                    .output("ended_ms", ended_ms))
            }
            Action::Context { ref extra } => {
                let mut config = extra.clone();
                config.insert("action".into(), json!("context"));
                let upstream: Map<String, Value> = ctx
                    .upstream
                    .iter()
                    .map(|u| {
                        (
                            u.stage.clone(),
                            json!({ "outputs": u.outputs, "work_dir": u.work_dir }),
                        )
                    })
                    .collect();
                let env_names: Vec<String> = std::env::vars_os()
                    .map(|(k, _)| k.to_string_lossy().into_owned())
                    .collect();
                Ok(Outcome::new(format!("context of {}", ctx.stage))
                    .output("run_id", &ctx.run_id)
                    .output("pipeline", &ctx.pipeline)
                    .output("stage", &ctx.stage)
                    .output("environment", &ctx.environment)
                    .output("config", config)
                    .output("upstream", upstream)
                    .output("work_dir", &ctx.work_dir)
                    .output("env_names", env_names))
            }
            Action::WriteFile { path, content } => {
                std::fs::write(&path, &content)
                    .map_err(|e| Error::from(e).context(format!("write {path}")))?;
                Ok(Outcome::new(format!("wrote {path}")).output("bytes", content.len()))
            }
            Action::ReadFile { path } => {
                let content = std::fs::read_to_string(&path)
                    .map_err(|e| Error::from(e).context(format!("read {path}")))?;
                Ok(Outcome::new(format!("read {path}")).output("content", content))
            }
            Action::Env { name } => {
                let value = std::env::var(&name).ok();
                Ok(Outcome::new(format!("env {name}")).output("value", value))
            }
            attack => attacks::run(attack),
        }
    }
}

/// Milliseconds since the Unix epoch, by the wall clock.
fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn signal(status: &capstan_plugin::ExitStatus) -> Option<i32> {
    match *status {
        capstan_plugin::ExitStatus::Signal(s) => Some(s),
        capstan_plugin::ExitStatus::Code(_) => None,
    }
}

capstan_plugin::export_stage!(Adversary);

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: Value) -> Action {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn actions_parse() {
        let a = parse(json!({"action": "exec", "program": "echo", "args": ["hi"]}));
        assert!(matches!(a, Action::Exec { ref program, .. } if program == "echo"));
        let a = parse(json!({"action": "context", "greeting": "${stages.a.outputs.x}"}));
        assert!(matches!(a, Action::Context { ref extra } if extra.contains_key("greeting")));
        assert!(matches!(
            parse(json!({"action": "sh-smuggle"})),
            Action::ShSmuggle
        ));
        assert!(matches!(
            parse(json!({"action": "forge-text"})),
            Action::ForgeText { approval: true }
        ));
        assert!(matches!(
            parse(json!({"action": "flip", "dir": "a", "link": "b", "name": "c", "millis": 5})),
            Action::Flip { millis: 5, .. }
        ));
        assert!(matches!(
            parse(json!({"action": "exec-after", "delay_ms": 1, "program": "echo"})),
            Action::ExecAfter { ref args, .. } if args.is_empty()
        ));
        assert!(serde_json::from_value::<Action>(json!({"action": "nope"})).is_err());
    }

    #[test]
    fn describe_requests_what_the_tests_grant() {
        let info = capstan_plugin::__private::describe::<Adversary>();
        assert_eq!(info.requests.len(), 11);
        let schema = info.config_schema.unwrap();
        for action in [
            "sh-smuggle",
            "repoint",
            "cwd-race",
            "deny-flood",
            "forge-text",
        ] {
            assert!(schema.contains(action), "{action}");
        }
    }
}
