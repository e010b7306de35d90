//! Host side of `capstan:plugin/process`: runs a program for a plugin after
//! checking it against the stage's exec grants, streams its output to the
//! stage log (through files, see [`super::child_output`]), records it in the
//! audit log, and kills its whole process group on timeout or when the stage
//! is cancelled. Every child starts confined by the stage's sandbox
//! ([`super::sandbox`]).

use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use serde_json::json;
use tokio::io::AsyncWriteExt;

use super::cgroup::{self, ExecCgroup};
use super::child_output::ChildOutput;
use super::policy::{self as exec, Denial, ExecPolicy};
use super::sandbox::StageSandbox;
use crate::bindings::capstan::plugin::process as wit;
use crate::caps::audit::StageAudit;
use crate::caps::fs;
use crate::caps::log::LogSink;
use crate::caps::secret::{Delivered, Redactor};
use crate::fault;
use crate::run::stop::Stop;
use crate::store::{AuditKind, Owner};

/// Per-stage state of the `process` interface.
pub struct ProcessHost {
    pub policies: Vec<ExecPolicy>,
    /// Directories an exec's cwd may be in (all grants plus the work dir),
    /// as opened handles: a cwd is opened beneath one of them.
    pub dirs: Vec<fs::GrantDir>,
    pub work_dir: PathBuf,
    pub log: LogSink,
    pub audit: StageAudit,
    /// When the stage's wall-clock limit runs out.
    pub deadline: Instant,
    /// Cap on output returned to the plugin per stream.
    pub capture_cap: usize,
    /// The run's stop switch: no program starts once the run is stopping.
    pub stop: Option<Stop>,
    /// File rules and private temporary directory of every child (`None`
    /// only where no program is granted).
    pub sandbox: Option<Arc<StageSandbox>>,
    /// The run's id: names the cgroups of its programs.
    pub run_id: String,
    /// The stage's secrets, for the programs they are granted to.
    pub secrets: Option<Arc<Delivered>>,
    /// The run's secrets and sensitive values: none may be an argument
    /// (command lines are visible to every user of the machine).
    pub redactor: Redactor,
    /// Host variables that are secrets' sources: never passed through by
    /// an exec grant's `env` pattern.
    pub hidden_env: Arc<[String]>,
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
            AuditKind::Exec,
            json!({ "program": cmd.program, "args": cmd.args, "cwd": cmd.cwd }),
            &reason,
        );
        self.log.line(&format!("[capstan] denied: {reason}"));
        wit::Error::NotPermitted(reason)
    }

    /// Everything checked before a child starts; the working directory
    /// comes back opened (the child enters it with `fchdir`).
    fn check(&self, cmd: &wit::Command) -> Result<(&ExecPolicy, PathBuf, OwnedFd), wit::Error> {
        let policy =
            exec::find(&self.policies, &cmd.program).map_err(|d| self.deny(cmd, d.to_string()))?;
        // First: a refusal for the arguments' patterns would quote the value.
        let texts = cmd.args.iter().chain(cmd.cwd.as_ref());
        for (position, text) in texts.enumerate() {
            if let Some(origin) = self.redactor.find(text.as_bytes()) {
                let denial = Denial::Secret {
                    program: policy.program.clone(),
                    what: if position < cmd.args.len() {
                        format!("argument {}", position + 1)
                    } else {
                        "the working directory".into()
                    },
                    origin: origin.to_string(),
                };
                return Err(self.deny(cmd, denial.to_string()));
            }
        }
        policy
            .allows(&cmd.args)
            .map_err(|d| self.deny(cmd, d.to_string()))?;
        for (name, _) in &cmd.env {
            policy
                .allows_env(name)
                .map_err(|d| self.deny(cmd, d.to_string()))?;
        }
        let cwd = match cmd.cwd.as_deref() {
            None => self.work_dir.clone(),
            Some(c) if Path::new(c).is_relative() => self.work_dir.join(c),
            Some(c) => PathBuf::from(c),
        };
        let outside = || {
            self.deny(
                cmd,
                Denial::Cwd {
                    cwd: cwd.display().to_string(),
                }
                .to_string(),
            )
        };
        let (grant, relative) = fs::resolve_beneath(&self.dirs, &cwd).ok_or_else(outside)?;
        let dir = match grant.open_dir_beneath(&relative) {
            Ok(dir) => dir,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(wit::Error::NotFound(format!(
                    "working directory `{}` does not exist",
                    cwd.display()
                )));
            }
            Err(_) => return Err(outside()),
        };
        if !policy.unchanged() {
            let denial = Denial::Changed {
                program: policy.program.clone(),
                path: policy.path.display().to_string(),
            };
            return Err(self.deny(cmd, denial.to_string()));
        }
        Ok((policy, cwd, dir))
    }

    async fn run_checked(
        &mut self,
        cmd: wit::Command,
    ) -> wasmtime::Result<Result<wit::Output, wit::Error>> {
        self.audit.within_budget()?;
        if let Some(request) = self.stop.as_ref().and_then(Stop::requested) {
            let reason = format!(
                "not started: the run is being cancelled ({} by {})",
                request.reason, request.by
            );
            return Ok(Err(self.deny(&cmd, reason)));
        }
        let (policy, cwd, cwd_dir) = match self.check(&cmd) {
            Ok(ok) => ok,
            Err(e) => return Ok(Err(e)),
        };
        let Some(sandbox) = self.sandbox.clone() else {
            return Ok(Err(
                self.deny(&cmd, "no sandbox was set up for this stage".into())
            ));
        };
        let hidden = self.hidden_env.clone();
        let host_vars = std::env::vars().filter(|(k, _)| !hidden.contains(k));
        let mut env = exec::child_env(
            policy,
            host_vars,
            &self.work_dir,
            Some(sandbox.tmp()),
            &cmd.env,
        );
        // Last, over anything else (no grant's `env` can match them: the
        // pipeline is refused at load otherwise).
        let secrets = self
            .secrets
            .as_ref()
            .map(|s| s.env_for(&policy.program))
            .unwrap_or_default();
        env.retain(|(k, _)| !secrets.iter().any(|(name, _)| name == k));
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
        let env_names: Vec<&str> = env
            .iter()
            .map(|(k, _)| k.as_str())
            .chain(secrets.iter().map(|(k, _)| k.as_str()))
            .collect();
        let secret_vars: Vec<&str> = secrets.iter().map(|(k, _)| k.as_str()).collect();
        // The whole tree of the program lives in one cgroup: found and
        // ended at its end whatever it did (`setsid`, double forks), and
        // limited in processes.
        let cgroups = cgroup::support();
        let group = match cgroups.available().then(|| {
            let max = cgroups
                .limits_processes()
                .then_some(policy.limits.processes);
            ExecCgroup::create(&self.run_id, &self.audit.stage, max)
        }) {
            Some(Err(e)) => {
                return Ok(Err(wit::Error::Failed(format!(
                    "cannot create the cgroup for `{}`: {e} ({cgroups})",
                    cmd.program
                ))));
            }
            Some(Ok(group)) => Some(group),
            None => None,
        };
        let processes_limited_by = match &group {
            Some(_) if cgroups.limits_processes() => "cgroup pids.max",
            _ if unsafe { libc::geteuid() } != 0 => "RLIMIT_NPROC",
            _ => "not limited (root, without a cgroup pids controller)",
        };
        let confinement = json!({
            "files": sandbox.rules.enforced,
            "network": policy.network,
            "limits": policy.limits,
            "processes_limited_by": processes_limited_by,
            "cgroup": group.as_ref().map(|g| g.path().to_path_buf()),
        });
        let mut detail = json!({ "program": cmd.program, "path": policy.path, "args": cmd.args, "cwd": cwd, "env": env_names, "output_logged": !cmd.unlogged, "sandbox": confinement });
        if !secret_vars.is_empty() {
            // Which variables hold secrets (their names; values never).
            detail["secret_env"] = json!(secret_vars);
        }
        self.audit.allowed(AuditKind::Exec, detail.clone());
        self.log
            .line(&format!("$ {} {}", cmd.program, shell_words(&cmd.args)));

        let (mut output, stdout, stderr) = match ChildOutput::create() {
            Ok(files) => files,
            Err(e) => {
                return Ok(Err(wit::Error::Failed(format!(
                    "cannot create the files for `{}`'s output: {e}",
                    cmd.program
                ))));
            }
        };
        let mut command = tokio::process::Command::new(policy.file.exec_path());
        // The child enters the directory that was checked through its own
        // copy of our descriptor (`/proc/self/fd/N` in the child is that
        // open directory, not a path that could be re-pointed).
        command.current_dir(fs::fd_path(&cwd_dir));
        let setup = sandbox.child(
            &policy.program,
            policy.network,
            policy.limits,
            group.as_ref().map(ExecCgroup::join_fds).unwrap_or_default(),
            group.is_some() && cgroups.limits_processes(),
            // Where the checked directory is (not the path as the plugin
            // wrote it, whose symlinks may lead elsewhere by now).
            &std::fs::read_link(fs::fd_path(&cwd_dir)).unwrap_or_else(|_| cwd.clone()),
        );
        let script = policy.file.script.then(|| policy.file.file.as_raw_fd());
        // SAFETY: between fork and exec the child only makes system calls
        // (`ChildSetup::apply` allocates nothing and takes no lock).
        unsafe {
            command.pre_exec(move || {
                setup.apply()?;
                // A script's descriptor stays open across exec, for its
                // interpreter to open.
                if let Some(fd) = script
                    && clear_cloexec(fd) < 0
                {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut child = match command
            .arg0(&policy.path)
            .args(&cmd.args)
            .env_clear()
            .envs(env.iter().map(|(k, v)| (k, v)))
            .envs(secrets.iter().map(|(k, v)| (k, v.as_str())))
            .stdin(if cmd.stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(stdout)
            .stderr(stderr)
            .process_group(0)
            .kill_on_drop(true)
            .spawn()
        {
            Ok(child) => child,
            Err(e) => {
                let reason = format!(
                    "cannot start `{}` ({}) in its sandbox: {e}",
                    cmd.program,
                    policy.path.display()
                );
                self.audit.log.record(
                    &self.audit.stage,
                    &self.audit.plugin,
                    AuditKind::Exec,
                    true,
                    detail,
                    Some(reason.clone()),
                );
                return Ok(Err(wit::Error::Failed(reason)));
            }
        };
        drop(cwd_dir);
        let pid = child.id();
        let mut guard = GroupGuard(pid.map(|id| id as i32));
        // Recorded so that a resumed stage can wait for a child that outlived
        // a killed host (see `run::resume`).
        if let Some(owner) = pid.and_then(Owner::of) {
            self.audit.allowed(
                AuditKind::ExecStarted,
                json!({ "program": cmd.program, "pid": owner.pid, "start": owner.start, "host": owner.host, "host_id": owner.host_id }),
            );
        }
        let started = Instant::now();
        if let (Some(input), Some(mut stdin)) = (cmd.stdin, child.stdin.take()) {
            tokio::spawn(async move {
                let _ = stdin.write_all(&input).await;
            });
        }
        fault::point(
            "exec-start",
            format_args!(
                "{}/{}",
                self.audit.stage,
                cmd.args.first().map_or("", String::as_str)
            ),
        );
        let cap = if cmd.capture { self.capture_cap } else { 0 };
        let logged = !cmd.unlogged;
        if cmd.unlogged {
            self.log
                .line("[capstan] (output not logged, at the plugin's request)");
        }
        let log = self.log.clone();
        let watch = async {
            let mut pause = POLL;
            loop {
                tokio::select! {
                    status = child.wait() => break status,
                    () = tokio::time::sleep(pause) => {}
                }
                // Past the stage's output cap the child's group is killed
                // (the guard), so the wait ends too. A child that is
                // writing is read again at once: what it can write beyond
                // the cap before it is stopped stays small.
                match output.drain(&log, logged, cap) {
                    Err(_) => guard.kill(),
                    Ok(0) => pause = POLL,
                    Ok(_) => pause = BUSY_POLL,
                }
            }
        };
        let outcome = tokio::time::timeout(timeout, watch).await;
        let _ = output.drain(&log, logged, cap);
        let elapsed = started.elapsed();
        let duration_ms = elapsed.as_millis() as u64;
        let Ok(status) = outcome else {
            guard.kill();
            self.end_tree(&cmd.program, group.as_ref()).await;
            let reason = format!(
                "`{}` timed out after {}",
                cmd.program,
                humantime::format_duration(round(timeout))
            );
            self.audit.log.record(
                &self.audit.stage,
                &self.audit.plugin,
                AuditKind::Exec,
                true,
                json!({ "program": cmd.program, "timed_out_ms": duration_ms }),
                Some(reason.clone()),
            );
            self.log
                .line(&format!("[capstan] {reason}; its process group was killed"));
            return Ok(Err(wit::Error::TimedOut(duration_ms)));
        };
        // The leader exited; make sure no straggler of its group, nor
        // anything it started elsewhere (`setsid`), lives on.
        guard.kill();
        let left_behind = self.end_tree(&cmd.program, group.as_ref()).await;
        let (stdout, stderr, truncated) = output.finish();
        if let Some(group) = group.as_ref().filter(|g| g.process_limit_hit()) {
            let limit = policy.limits.processes;
            self.audit.log.record(
                &self.audit.stage,
                &self.audit.plugin,
                AuditKind::Limit,
                false,
                json!({ "program": cmd.program, "limit": "processes", "max": limit, "cgroup": group.path() }),
                Some("process limit reached".into()),
            );
            return Err(wasmtime::Error::msg(format!(
                "process limit of {limit} reached: `{}` (with what it started) tried to run more processes at once; raise `limits.processes` of its exec grant if it needs them",
                cmd.program
            )));
        }
        if self.log.exceeded() {
            self.audit.log.record(
                &self.audit.stage,
                &self.audit.plugin,
                AuditKind::Limit,
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
            AuditKind::ExecExit,
            json!({ "program": cmd.program, "pid": pid, "status": exit_json, "duration_ms": duration_ms, "left_behind": left_behind }),
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
            truncated,
            duration_ms,
        }))
    }
}

impl ProcessHost {
    /// End every process left in the program's cgroup; how many there
    /// were. The stage does not go on (and its run keeps the environment
    /// locked) until they are gone.
    async fn end_tree(&self, program: &str, group: Option<&ExecCgroup>) -> usize {
        let Some(group) = group else { return 0 };
        let left = group.pids().len();
        if left > 0 {
            self.log.line(&format!(
                "[capstan] ending {left} process(es) `{program}` left running (background, `setsid` or double-forked)"
            ));
        }
        if !group.kill_and_wait(END_WAIT).await {
            self.log.line(&format!(
                "[capstan] processes of `{program}` still run {} after SIGKILL (cgroup {})",
                humantime::format_duration(END_WAIT),
                group.path().display()
            ));
        }
        left
    }
}

/// How long the processes a program left behind get to die after SIGKILL.
const END_WAIT: Duration = Duration::from_secs(10);

fn clear_cloexec(fd: i32) -> i32 {
    use nix::fcntl::{FcntlArg, FdFlag, fcntl};
    // SAFETY: `fd` is the program file, open in this (child) process.
    let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
    fcntl(fd, FcntlArg::F_SETFD(FdFlag::empty())).unwrap_or(-1)
}

/// How often a running child's output is copied to the stage log.
const POLL: Duration = Duration::from_millis(20);
/// How soon it is read again when the child is writing.
const BUSY_POLL: Duration = Duration::from_millis(1);

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
