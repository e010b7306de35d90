//! [`Exec`]: start a granted program on the host (the WIT `process`
//! interface).

use std::borrow::Cow;
use std::ffi::OsStr;
use std::fmt::{self, Write as _};
use std::path::Path;
use std::time::Duration;

use crate::bindings::capstan::plugin::process::{self, Command};

/// How a child ended (the WIT `exit-status`).
pub use crate::bindings::capstan::plugin::process::ExitStatus;

/// How many lines of a failed command's output [`Exec::run_ok`] keeps.
const TAIL_LINES: usize = 20;
/// ... and at most this many bytes of them.
const TAIL_BYTES: usize = 4096;

/// A program to run on the host, built up like [`std::process::Command`].
///
/// The host checks the program, every argument, the working directory and
/// each environment variable against the stage's `exec` grant; the child
/// gets a clean environment. Its stdout and stderr always go to the stage
/// log, and come back to the plugin only with [`Exec::capture`].
///
/// ```no_run
/// use capstan_plugin::Exec;
/// use std::time::Duration;
///
/// # fn main() -> Result<(), capstan_plugin::ExecError> {
/// let out = Exec::new("terraform")
///     .args(["plan", "-out", "tfplan"])
///     .cwd("/srv/infra")
///     .env("TF_IN_AUTOMATION", "1")
///     .timeout(Duration::from_secs(600))
///     .capture()
///     .run_ok()?;
/// println!("{}", out.stdout_str());
/// # Ok(())
/// # }
/// ```
///
/// Outside a Capstan host (e.g. in a plugin's unit tests on the build
/// machine) there is no `process` import, and running panics.
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use = "an `Exec` does nothing until `run` or `run_ok` is called"]
pub struct Exec {
    command: Command,
}

impl Exec {
    /// Run `program`: a bare name as granted, e.g. `terraform`; no shell.
    pub fn new(program: impl Into<String>) -> Self {
        Exec {
            command: Command {
                program: program.into(),
                args: Vec::new(),
                cwd: None,
                env: Vec::new(),
                stdin: None,
                timeout_ms: None,
                capture: false,
                unlogged: false,
            },
        }
    }

    /// Add one argument, passed as it is.
    pub fn arg(mut self, arg: impl AsRef<OsStr>) -> Self {
        self.command.args.push(string(arg));
        self
    }

    /// Add arguments, passed as they are.
    pub fn args<I>(mut self, args: I) -> Self
    where
        I: IntoIterator,
        I::Item: AsRef<OsStr>,
    {
        self.command.args.extend(args.into_iter().map(string));
        self
    }

    /// Run in `dir` (inside a granted directory; default: the work dir).
    pub fn cwd(mut self, dir: impl AsRef<Path>) -> Self {
        self.command.cwd = Some(dir.as_ref().to_string_lossy().into_owned());
        self
    }

    /// Set an environment variable of the child (the grant must allow it).
    pub fn env(mut self, name: impl Into<String>, value: impl AsRef<OsStr>) -> Self {
        self.command.env.push((name.into(), string(value)));
        self
    }

    /// Write `bytes` to the child's stdin, then close it.
    pub fn stdin(mut self, bytes: impl Into<Vec<u8>>) -> Self {
        self.command.stdin = Some(bytes.into());
        self
    }

    /// Kill the child and its children after `timeout` (the grant's and the
    /// stage's timeouts apply too).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.command.timeout_ms = Some(u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX));
        self
    }

    /// Return stdout and stderr in [`Output`] (capped by the host).
    pub fn capture(mut self) -> Self {
        self.command.capture = true;
        self
    }

    /// Keep the program's stdout and stderr out of the stage log, for
    /// output that may hold sensitive values (combine with
    /// [`Exec::capture`] to still read it). The command line and exit status
    /// are logged, and the output still counts against the output limit.
    ///
    /// ```no_run
    /// # use capstan_plugin::Exec;
    /// let outputs = Exec::new("terraform").args(["output", "-json"]).capture().unlogged().run_ok()?;
    /// # Ok::<(), capstan_plugin::ExecError>(())
    /// ```
    pub fn unlogged(mut self) -> Self {
        self.command.unlogged = true;
        self
    }

    /// The program to run.
    pub fn program(&self) -> &str {
        &self.command.program
    }

    /// Run to completion. A non-zero exit is not an error here: see
    /// [`Exec::run_ok`].
    pub fn run(&self) -> Result<Output, ExecError> {
        let out = process::run(&self.command).map_err(|e| self.error(ExecErrorKind::from(e)))?;
        Ok(Output {
            status: out.status,
            stdout: out.stdout,
            stderr: out.stderr,
            truncated: out.truncated,
            duration: Duration::from_millis(out.duration_ms),
        })
    }

    /// Run to completion and fail unless the program exits with code 0.
    /// The error names the command and its exit status and, when the
    /// output was captured, carries its last lines, so that the tool's own
    /// error reaches the stage summary.
    pub fn run_ok(&self) -> Result<Output, ExecError> {
        let out = self.run()?;
        if out.success() {
            Ok(out)
        } else {
            Err(self.error(ExecErrorKind::Exit(Box::new(out))))
        }
    }

    fn error(&self, kind: ExecErrorKind) -> ExecError {
        ExecError {
            program: self.command.program.clone(),
            args: self.command.args.clone(),
            kind,
        }
    }
}

fn string(s: impl AsRef<OsStr>) -> String {
    s.as_ref().to_string_lossy().into_owned()
}

impl ExitStatus {
    /// True for exit code 0.
    pub fn success(&self) -> bool {
        *self == ExitStatus::Code(0)
    }

    /// The exit code, unless the child was killed by a signal.
    pub fn code(&self) -> Option<i32> {
        match *self {
            ExitStatus::Code(c) => Some(c),
            ExitStatus::Signal(_) => None,
        }
    }
}

impl fmt::Display for ExitStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExitStatus::Code(c) => write!(f, "exit code {c}"),
            ExitStatus::Signal(s) => write!(f, "signal {s}"),
        }
    }
}

/// A finished child.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Output {
    /// How it ended.
    pub status: ExitStatus,
    /// Captured stdout (empty unless [`Exec::capture`]).
    pub stdout: Vec<u8>,
    /// Captured stderr (empty unless [`Exec::capture`]).
    pub stderr: Vec<u8>,
    /// True when the captured output was cut at the host's cap.
    pub truncated: bool,
    /// Wall time of the child.
    pub duration: Duration,
}

impl Output {
    /// True for exit code 0.
    pub fn success(&self) -> bool {
        self.status.success()
    }

    /// Captured stdout as text (invalid UTF-8 replaced).
    pub fn stdout_str(&self) -> Cow<'_, str> {
        String::from_utf8_lossy(&self.stdout)
    }

    /// Captured stderr as text (invalid UTF-8 replaced).
    pub fn stderr_str(&self) -> Cow<'_, str> {
        String::from_utf8_lossy(&self.stderr)
    }

    /// The last lines of stderr, or of stdout when stderr is blank (some
    /// tools report errors on stdout).
    fn tail(&self) -> String {
        let stderr = self.stderr_str();
        let text = if stderr.trim().is_empty() {
            self.stdout_str()
        } else {
            stderr
        };
        tail(&text, TAIL_LINES, TAIL_BYTES)
    }
}

/// The last `lines` non-blank lines of `text`, at most `max` bytes of them.
fn tail(text: &str, lines: usize, max: usize) -> String {
    let kept: Vec<&str> = text
        .lines()
        .rev()
        .filter(|l| !l.trim().is_empty())
        .take(lines)
        .collect();
    let mut out = kept
        .into_iter()
        .rev()
        .map(str::trim_end)
        .collect::<Vec<_>>()
        .join("\n");
    if out.len() > max {
        let mut cut = out.len() - max;
        while !out.is_char_boundary(cut) {
            cut += 1;
        }
        out = format!("…{}", &out[cut..]);
    }
    out
}

/// Why a command did not run to completion (or, from [`Exec::run_ok`],
/// did not succeed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecError {
    program: String,
    args: Vec<String>,
    kind: ExecErrorKind,
}

/// What went wrong in an [`ExecError`]: the WIT `process` `error`, plus
/// [`ExecErrorKind::Exit`] from [`Exec::run_ok`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ExecErrorKind {
    /// Denied by the stage's grants; the host's message names what is
    /// missing and how to grant it.
    NotPermitted(String),
    /// The program or working directory does not exist.
    NotFound(String),
    /// Killed after this long.
    TimedOut(Duration),
    /// The child produced more output than the host allows (the WIT
    /// `output-limit` payload).
    OutputLimit(u64),
    /// Any other failure to start or wait for the child.
    Failed(String),
    /// It ran, but did not exit with code 0 (only from [`Exec::run_ok`]).
    Exit(Box<Output>),
}

impl From<process::Error> for ExecErrorKind {
    fn from(e: process::Error) -> Self {
        match e {
            process::Error::NotPermitted(m) => ExecErrorKind::NotPermitted(m),
            process::Error::NotFound(m) => ExecErrorKind::NotFound(m),
            process::Error::TimedOut(ms) => ExecErrorKind::TimedOut(Duration::from_millis(ms)),
            process::Error::OutputLimit(n) => ExecErrorKind::OutputLimit(n),
            process::Error::Failed(m) => ExecErrorKind::Failed(m),
        }
    }
}

impl ExecError {
    #[cfg(test)]
    pub(crate) fn from_wit(program: &str, e: process::Error) -> Self {
        Exec::new(program).error(e.into())
    }

    /// The program that was to run.
    pub fn program(&self) -> &str {
        &self.program
    }

    /// What went wrong.
    pub fn kind(&self) -> &ExecErrorKind {
        &self.kind
    }

    /// True when the host refused the command.
    pub fn is_not_permitted(&self) -> bool {
        matches!(self.kind, ExecErrorKind::NotPermitted(_))
    }

    /// The output of a command that exited unsuccessfully.
    pub fn output(&self) -> Option<&Output> {
        match &self.kind {
            ExecErrorKind::Exit(out) => Some(out),
            _ => None,
        }
    }

    /// `program arg…`, shortened for messages.
    fn command_line(&self) -> String {
        let mut line = self.program.clone();
        for arg in &self.args {
            line.push(' ');
            if arg.is_empty() || arg.contains(char::is_whitespace) {
                let _ = write!(line, "{arg:?}");
            } else {
                line.push_str(arg);
            }
        }
        if line.chars().count() > 200 {
            line = line.chars().take(199).chain(['…']).collect();
        }
        line
    }
}

impl fmt::Display for ExecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let p = &self.program;
        match &self.kind {
            ExecErrorKind::NotPermitted(m) => write!(f, "not permitted to run `{p}`: {m}"),
            ExecErrorKind::NotFound(m) => write!(f, "`{p}` not found: {m}"),
            ExecErrorKind::TimedOut(d) => write!(f, "`{p}` timed out after {}", seconds(*d)),
            ExecErrorKind::OutputLimit(n) => {
                write!(
                    f,
                    "`{p}` produced more output than the host allows ({n} bytes)"
                )
            }
            ExecErrorKind::Failed(m) => write!(f, "`{p}` failed: {m}"),
            ExecErrorKind::Exit(out) => {
                write!(f, "`{}` failed with {}", self.command_line(), out.status)?;
                let tail = out.tail();
                if tail.is_empty() {
                    write!(f, " (its output is in the stage log)")
                } else {
                    let cut = if out.truncated {
                        " (output truncated)"
                    } else {
                        ""
                    };
                    write!(f, "{cut}:\n{tail}")
                }
            }
        }
    }
}

fn seconds(d: Duration) -> String {
    if d.as_millis() < 1000 {
        format!("{} ms", d.as_millis())
    } else {
        format!("{:.1} s", d.as_secs_f64())
    }
}

impl std::error::Error for ExecError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builder_fills_the_wit_command() {
        let exec = Exec::new("terraform")
            .arg("plan")
            .args(["-out", "tfplan"])
            .arg(Path::new("/srv/x"))
            .cwd("/srv")
            .env("TF_LOG", "info")
            .stdin("yes\n")
            .timeout(Duration::from_secs(2))
            .capture();
        let c = &exec.command;
        assert_eq!(c.program, "terraform");
        assert_eq!(c.args, ["plan", "-out", "tfplan", "/srv/x"]);
        assert_eq!(c.cwd.as_deref(), Some("/srv"));
        assert_eq!(c.env, [("TF_LOG".to_string(), "info".to_string())]);
        assert_eq!(c.stdin.as_deref(), Some(&b"yes\n"[..]));
        assert_eq!(c.timeout_ms, Some(2000));
        assert!(c.capture);
    }

    fn exit(status: ExitStatus, stdout: &str, stderr: &str) -> ExecError {
        let out = Output {
            status,
            stdout: stdout.into(),
            stderr: stderr.into(),
            truncated: false,
            duration: Duration::from_millis(5),
        };
        Exec::new("terraform")
            .args(["plan", "-var", "a b"])
            .error(ExecErrorKind::Exit(Box::new(out)))
    }

    #[test]
    fn failed_exit_shows_the_last_lines() {
        let stderr: String = (1..=30).map(|i| format!("line {i}\n")).collect();
        let msg = exit(ExitStatus::Code(1), "", &stderr).to_string();
        assert!(
            msg.starts_with("`terraform plan -var \"a b\"` failed with exit code 1:\nline 11\n")
        );
        assert!(msg.ends_with("line 30"), "{msg}");
        let msg = exit(ExitStatus::Signal(9), "Error: on stdout\n\n", "  \n").to_string();
        assert!(
            msg.ends_with("failed with signal 9:\nError: on stdout"),
            "{msg}"
        );
        let msg = exit(ExitStatus::Code(2), "", "").to_string();
        assert!(
            msg.ends_with("exit code 2 (its output is in the stage log)"),
            "{msg}"
        );
    }

    #[test]
    fn tail_is_bounded() {
        let long = "é".repeat(5000);
        let t = tail(&long, 20, 100);
        assert!(t.starts_with('…') && t.len() <= 100 + '…'.len_utf8());
        assert_eq!(tail("a\n\nb\nc\n", 2, 100), "b\nc");
    }

    #[test]
    fn wit_errors_display() {
        let e = |k| ExecError::from_wit("cat", k).to_string();
        use process::Error as W;
        assert_eq!(
            e(W::NotPermitted("x".into())),
            "not permitted to run `cat`: x"
        );
        assert_eq!(e(W::TimedOut(1500)), "`cat` timed out after 1.5 s");
        assert_eq!(e(W::TimedOut(20)), "`cat` timed out after 20 ms");
        assert!(e(W::OutputLimit(10)).contains("(10 bytes)"));
        assert!(ExecError::from_wit("cat", W::NotPermitted("x".into())).is_not_permitted());
        assert!(ExitStatus::Code(0).success() && !ExitStatus::Signal(0).success());
        assert_eq!(ExitStatus::Signal(9).code(), None);
    }
}
