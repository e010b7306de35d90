//! Host side of `capstan:plugin/process`: runs a program for a plugin after
//! checking it against the stage's exec grants, streams its output to the
//! stage log, records it in the audit log, and kills its whole process group
//! on timeout or when the stage is cancelled.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use serde_json::json;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use wasmtime::component::{HasSelf, Linker};

use super::audit::StageAudit;
use super::exec::{self, Denial, ExecPolicy};
use super::fs;
use super::log::LogSink;
use crate::runtime::StageState;
use crate::runtime::bindings::capstan::plugin::process as wit;

/// Per-stage state of the `process` interface.
pub struct ProcessHost {
    pub policies: Vec<ExecPolicy>,
    /// Directories an exec's cwd may be in (all grants plus the work dir).
    pub dirs: Vec<PathBuf>,
    pub work_dir: PathBuf,
    pub log: LogSink,
    pub audit: StageAudit,
    /// When the stage's wall-clock limit runs out.
    pub deadline: Instant,
    /// Cap on output returned to the plugin per stream.
    pub capture_cap: usize,
}

/// Kills the child's process group when dropped, so a cancelled stage (its
/// future dropped on timeout) leaves no process behind.
struct GroupGuard(Option<i32>);

impl GroupGuard {
    fn kill(&mut self) {
        if let Some(pgid) = self.0.take() {
            let _ = killpg(Pid::from_raw(pgid), Signal::SIGKILL);
        }
    }
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        self.kill();
    }
}

impl ProcessHost {
    fn deny(&self, cmd: &wit::Command, reason: String) -> wit::Error {
        self.audit.denied(
            "exec",
            json!({ "program": cmd.program, "args": cmd.args, "cwd": cmd.cwd }),
            &reason,
        );
        self.log.line(&format!("[capstan] denied: {reason}"));
        wit::Error::NotPermitted(reason)
    }

    /// Everything checked before a child starts.
    fn check(&self, cmd: &wit::Command) -> Result<(&ExecPolicy, PathBuf), wit::Error> {
        let policy =
            exec::find(&self.policies, &cmd.program).map_err(|d| self.deny(cmd, d.to_string()))?;
        policy
            .allows(&cmd.args)
            .map_err(|d| self.deny(cmd, d.to_string()))?;
        for (name, _) in &cmd.env {
            policy
                .allows_env(name)
                .map_err(|d| self.deny(cmd, d.to_string()))?;
        }
        let cwd = cmd
            .cwd
            .as_deref()
            .map_or_else(|| self.work_dir.clone(), PathBuf::from);
        if !cwd.exists() {
            return Err(wit::Error::NotFound(format!(
                "working directory `{}` does not exist",
                cwd.display()
            )));
        }
        let cwd = fs::inside(&self.dirs, &cwd).ok_or_else(|| {
            self.deny(
                cmd,
                Denial::Cwd {
                    cwd: cwd.display().to_string(),
                }
                .to_string(),
            )
        })?;
        Ok((policy, cwd))
    }

    async fn run_checked(
        &mut self,
        cmd: wit::Command,
    ) -> wasmtime::Result<Result<wit::Output, wit::Error>> {
        let (policy, cwd) = match self.check(&cmd) {
            Ok(ok) => ok,
            Err(e) => return Ok(Err(e)),
        };
        let env = exec::child_env(policy, std::env::vars(), &self.work_dir, &cmd.env);
        let remaining = self.deadline.saturating_duration_since(Instant::now());
        let timeout = [
            cmd.timeout_ms.map(Duration::from_millis),
            policy.timeout,
            Some(remaining),
        ]
        .into_iter()
        .flatten()
        .min()
        .unwrap_or(remaining);
        let env_names: Vec<&str> = env.iter().map(|(k, _)| k.as_str()).collect();
        let detail = json!({ "program": cmd.program, "path": policy.path, "args": cmd.args, "cwd": cwd, "env": env_names, "output_logged": !cmd.unlogged });
        self.audit.allowed("exec", detail.clone());
        self.log
            .line(&format!("$ {} {}", cmd.program, shell_words(&cmd.args)));

        let mut child = match tokio::process::Command::new(&policy.path)
            .args(&cmd.args)
            .current_dir(&cwd)
            .env_clear()
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(if cmd.stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true)
            .spawn()
        {
            Ok(child) => child,
            Err(e) => {
                let reason = format!(
                    "cannot start `{}` ({}): {e}",
                    cmd.program,
                    policy.path.display()
                );
                self.audit.log.record(
                    &self.audit.stage,
                    &self.audit.plugin,
                    "exec",
                    true,
                    detail,
                    Some(reason.clone()),
                );
                return Ok(Err(wit::Error::Failed(reason)));
            }
        };
        let mut guard = GroupGuard(child.id().map(|id| id as i32));
        let started = Instant::now();
        if let (Some(input), Some(mut stdin)) = (cmd.stdin, child.stdin.take()) {
            tokio::spawn(async move {
                let _ = stdin.write_all(&input).await;
            });
        }
        let stdout = child.stdout.take().expect("piped stdout");
        let stderr = child.stderr.take().expect("piped stderr");
        let cap = if cmd.capture { self.capture_cap } else { 0 };
        let pgid = guard.0;
        let logged = !cmd.unlogged;
        if cmd.unlogged {
            self.log
                .line("[capstan] (output not logged, at the plugin's request)");
        }
        let pump = async {
            let (out, err) = tokio::join!(
                pump(stdout, &self.log, logged, cap, pgid),
                pump(stderr, &self.log, logged, cap, pgid)
            );
            let status = child.wait().await;
            (out, err, status)
        };
        let outcome = tokio::time::timeout(timeout, pump).await;
        let elapsed = started.elapsed();
        let duration_ms = elapsed.as_millis() as u64;
        let Ok((out, err, status)) = outcome else {
            guard.kill();
            let reason = format!(
                "`{}` timed out after {}",
                cmd.program,
                humantime::format_duration(round(timeout))
            );
            self.audit.log.record(
                &self.audit.stage,
                &self.audit.plugin,
                "exec",
                true,
                json!({ "program": cmd.program, "timed_out_ms": duration_ms }),
                Some(reason.clone()),
            );
            self.log
                .line(&format!("[capstan] {reason}; its process group was killed"));
            return Ok(Err(wit::Error::TimedOut(duration_ms)));
        };
        // The leader exited; make sure no straggler of its group lives on.
        guard.kill();
        let (stdout, out_truncated) = out;
        let (stderr, err_truncated) = err;
        if self.log.exceeded() {
            self.audit.log.record(
                &self.audit.stage,
                &self.audit.plugin,
                "limit",
                false,
                json!({ "program": cmd.program, "limit": "max_output" }),
                Some("output limit exceeded".into()),
            );
            return Err(wasmtime::Error::msg(format!(
                "output limit exceeded: `{}` printed more than the stage's max_output",
                cmd.program
            )));
        }
        let status = match status {
            Ok(s) => s,
            Err(e) => {
                return Ok(Err(wit::Error::Failed(format!(
                    "waiting for `{}`: {e}",
                    cmd.program
                ))));
            }
        };
        use std::os::unix::process::ExitStatusExt;
        let exit = match (status.code(), status.signal()) {
            (Some(code), _) => wit::ExitStatus::Code(code),
            (None, Some(sig)) => wit::ExitStatus::Signal(sig),
            (None, None) => wit::ExitStatus::Code(-1),
        };
        let exit_json = match exit {
            wit::ExitStatus::Code(c) => json!({ "code": c }),
            wit::ExitStatus::Signal(s) => json!({ "signal": s }),
        };
        self.audit.allowed(
            "exec-exit",
            json!({ "program": cmd.program, "status": exit_json, "duration_ms": duration_ms }),
        );
        let how = match exit {
            wit::ExitStatus::Code(c) => format!("code {c}"),
            wit::ExitStatus::Signal(s) => format!("signal {s}"),
        };
        self.log.line(&format!(
            "[capstan] `{}` exited with {how} in {elapsed:.1?}",
            cmd.program
        ));
        Ok(Ok(wit::Output {
            status: exit,
            stdout,
            stderr,
            truncated: out_truncated || err_truncated,
            duration_ms,
        }))
    }
}

/// Copy a child stream to the stage log, keeping up to `cap` bytes. Past the
/// stage's output cap the child's group is killed, so the other stream and
/// the wait end too.
async fn pump(
    mut stream: impl AsyncRead + Unpin,
    log: &LogSink,
    logged: bool,
    cap: usize,
    pgid: Option<i32>,
) -> (Vec<u8>, bool) {
    let mut kept = Vec::new();
    let mut truncated = false;
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match stream.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let appended = if logged {
            log.write(&buf[..n])
        } else {
            log.count(&buf[..n])
        };
        if appended.is_err() {
            if let Some(pgid) = pgid {
                let _ = killpg(Pid::from_raw(pgid), Signal::SIGKILL);
            }
            break;
        }
        let room = cap.saturating_sub(kept.len());
        kept.extend_from_slice(&buf[..n.min(room)]);
        truncated |= n > room;
    }
    (kept, truncated)
}

fn round(d: Duration) -> Duration {
    Duration::from_millis(d.as_millis() as u64)
}

/// Arguments quoted for display in the log.
fn shell_words(args: &[String]) -> String {
    args.iter()
        .map(|a| {
            if a.is_empty() || a.contains(|c: char| c.is_whitespace() || "'\"$`\\;|&".contains(c)) {
                format!("'{}'", a.replace('\'', "'\\''"))
            } else {
                a.clone()
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

impl wit::Host for ProcessHost {
    async fn run(
        &mut self,
        command: wit::Command,
    ) -> wasmtime::Result<Result<wit::Output, wit::Error>> {
        self.run_checked(command).await
    }
}

pub fn add_to_linker(linker: &mut Linker<StageState>) -> wasmtime::Result<()> {
    wit::add_to_linker::<StageState, HasSelf<ProcessHost>>(linker, |s| &mut s.process)
}
