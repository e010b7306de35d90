//! Running the checks.
//!
//! A plugin is one single-threaded WebAssembly instance, and every host
//! call (`network.tcp-probe`, `network.http-get`, `process.run`) blocks it
//! until the host answers; the contract has no way to start several and
//! wait for all. So what runs "in parallel" here is only what needs no host
//! call, or can share one:
//!
//! 1. `file` checks are made by the plugin itself through its WASI
//!    preopens (existence, content regex) — no child process, no network;
//! 2. the modes of *all* `file` checks with `mode` come from **one**
//!    `stat -L -c '%a %n' -- PATH…` (WASI has no permission bits);
//! 3. `tcp` and `http` probes, then `command` checks, run one after the
//!    other, each bounded by its own `timeout`. (An `ansible` command runs
//!    on all the hosts of its inventory pattern at once: that part *is*
//!    parallel, inside Ansible.)
//!
//! Results are reported in the order of the pipeline file whatever the
//! order they ran in. Independent *stages* do run concurrently, so slow
//! groups of checks can be split into several smoke stages.

use std::collections::BTreeMap;
use std::io::ErrorKind;
use std::time::{Duration, Instant};

use capstan_plugin::network::HttpResponse;
use capstan_plugin::{Exec, ExecErrorKind, Output};
use serde::Serialize;

use crate::config::{Check, Probe, format_mode};

/// How long the batched `stat` may take.
const STAT_TIMEOUT: Duration = Duration::from_secs(30);
/// How much captured output a result keeps (for the reports).
const OUTPUT_KEEP: usize = 4096;

/// How a check ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// As expected.
    Passed,
    /// Made, and not as expected.
    Failed,
    /// Could not be made (not granted, program missing, the plugin cannot
    /// see the file): a problem of the pipeline, not of the system checked.
    Error,
}

/// The result of one check.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckResult {
    /// As [`Check::name`].
    pub name: String,
    /// As [`Check::category`].
    pub category: crate::config::Category,
    /// As [`Probe::kind`].
    pub kind: crate::config::Kind,
    /// As [`Check::required`].
    pub required: bool,
    /// What was checked: `host:port`, `GET url`, command line, path.
    pub target: String,
    /// How it ended.
    pub status: Status,
    /// One line: why it failed, or what was seen when it passed.
    pub message: String,
    /// Time spent on it.
    pub duration: Duration,
    /// Captured output of a command, or the start of an HTTP body (capped).
    pub output: Option<String>,
}

impl CheckResult {
    /// Passed, or not.
    pub fn passed(&self) -> bool {
        self.status == Status::Passed
    }
}

/// Why a command did not run to completion.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unrun {
    /// True when the child was killed at its time limit (a finding about
    /// the system checked, not a pipeline problem).
    pub timed_out: bool,
    /// The message.
    pub message: String,
}

/// The host calls the checks make: the real ones in the component, a fake
/// in the unit tests (the imports do not exist on the build machine).
pub trait Host {
    /// [`capstan_plugin::network::tcp_probe`].
    fn tcp_probe(
        &mut self,
        host: &str,
        port: u16,
        timeout: Duration,
    ) -> Result<Result<Duration, String>, capstan_plugin::Error>;
    /// [`capstan_plugin::network::http_get`].
    fn http_get(
        &mut self,
        url: &str,
        timeout: Duration,
    ) -> Result<Result<HttpResponse, String>, capstan_plugin::Error>;
    /// [`Exec::run`].
    fn run(&mut self, exec: &Exec) -> Result<Output, Unrun>;
}

/// The Capstan host.
pub struct Capstan;

impl Host for Capstan {
    fn tcp_probe(
        &mut self,
        host: &str,
        port: u16,
        timeout: Duration,
    ) -> Result<Result<Duration, String>, capstan_plugin::Error> {
        capstan_plugin::network::tcp_probe(host, port, timeout)
    }

    fn http_get(
        &mut self,
        url: &str,
        timeout: Duration,
    ) -> Result<Result<HttpResponse, String>, capstan_plugin::Error> {
        capstan_plugin::network::http_get(url, timeout)
    }

    fn run(&mut self, exec: &Exec) -> Result<Output, Unrun> {
        exec.run().map_err(|e| Unrun {
            timed_out: matches!(e.kind(), ExecErrorKind::TimedOut(_)),
            message: e.to_string(),
        })
    }
}

/// Run every check; results in the order of `checks`. `on_result` is
/// called as each result is known (for the log and progress).
pub fn run_all(
    checks: &[Check],
    host: &mut dyn Host,
    mut on_result: impl FnMut(&CheckResult),
) -> Vec<CheckResult> {
    let mut results: Vec<Option<CheckResult>> = vec![None; checks.len()];
    let mut record = |i: usize, r: CheckResult, results: &mut Vec<Option<CheckResult>>| {
        on_result(&r);
        results[i] = Some(r);
    };

    // 1 + 2: file checks, in the plugin, with one batched `stat` for modes.
    let files: Vec<usize> = (0..checks.len())
        .filter(|&i| matches!(checks[i].probe, Probe::File { .. }))
        .collect();
    let started = Instant::now();
    let seen: Vec<Seen> = files.iter().map(|&i| look(&checks[i].probe)).collect();
    let mode_paths: Vec<&str> = files
        .iter()
        .filter_map(|&i| match &checks[i].probe {
            Probe::File {
                path,
                mode: Some(_),
                ..
            } => Some(path.as_str()),
            _ => None,
        })
        .collect();
    let modes = if mode_paths.is_empty() {
        Modes::default()
    } else {
        stat_modes(host, &mode_paths)
    };
    // The batch's time is shared out evenly, so that the times add up.
    let share = started.elapsed() / u32::try_from(files.len().max(1)).unwrap_or(u32::MAX);
    for (&i, seen) in files.iter().zip(seen) {
        let (status, message) = judge_file(&checks[i].probe, seen, &modes);
        record(
            i,
            result(&checks[i], status, message, share, None),
            &mut results,
        );
    }

    // 3: probes, then commands, one host call each.
    let order = (0..checks.len())
        .filter(|&i| matches!(checks[i].probe, Probe::Tcp { .. } | Probe::Http { .. }))
        .chain((0..checks.len()).filter(|&i| matches!(checks[i].probe, Probe::Command { .. })));
    for i in order.collect::<Vec<_>>() {
        let started = Instant::now();
        let (status, message, output) = match &checks[i].probe {
            Probe::Tcp {
                host: h,
                port,
                timeout,
            } => {
                let (s, m) = tcp(host, h, *port, *timeout);
                (s, m, None)
            }
            Probe::Http {
                url,
                status,
                body,
                timeout,
            } => http(host, url, *status, body.as_ref(), *timeout),
            Probe::Command { .. } => command(host, &checks[i].probe),
            Probe::File { .. } => unreachable!("file checks ran above"),
        };
        record(
            i,
            result(&checks[i], status, message, started.elapsed(), output),
            &mut results,
        );
    }
    results
        .into_iter()
        .map(|r| r.expect("every check ran"))
        .collect()
}

fn result(
    check: &Check,
    status: Status,
    message: String,
    duration: Duration,
    output: Option<String>,
) -> CheckResult {
    CheckResult {
        name: check.name.clone(),
        category: check.category,
        kind: check.probe.kind(),
        required: check.required,
        target: check.probe.target(),
        status,
        message,
        duration,
        output,
    }
}

/// What the plugin itself saw of a file check's path.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Seen {
    /// It exists; its content when the check has `contains`.
    Exists {
        content: Option<Result<String, String>>,
    },
    /// It does not exist, or is outside the stage's preopens.
    Missing,
    /// Any other error looking at it.
    Unreadable(String),
}

fn look(probe: &Probe) -> Seen {
    let Probe::File { path, contains, .. } = probe else {
        unreachable!("only file checks are looked at")
    };
    match std::fs::metadata(path) {
        Ok(meta) => {
            let content = contains.as_ref().map(|_| {
                if meta.is_dir() {
                    return Err("it is a directory".to_string());
                }
                std::fs::read(path)
                    .map(|b| String::from_utf8_lossy(&b).into_owned())
                    .map_err(|e| format!("cannot read it: {e}"))
            });
            Seen::Exists { content }
        }
        Err(e) if e.kind() == ErrorKind::NotFound => Seen::Missing,
        // Outside every preopen, WASI answers "not capable" (shown as
        // permission denied or "other"): to the plugin the path does not
        // exist, and the batched `stat` tells the two cases apart.
        Err(e) if matches!(e.kind(), ErrorKind::PermissionDenied | ErrorKind::Other) => {
            Seen::Missing
        }
        Err(e) => Seen::Unreadable(e.to_string()),
    }
}

/// Modes from the batched `stat`, by path; or why there are none.
#[derive(Debug, Default)]
struct Modes {
    by_path: BTreeMap<String, u32>,
    /// stderr lines of `stat` (one per path it could not read).
    errors: Vec<String>,
    /// Set when `stat` could not run at all.
    unrun: Option<String>,
}

fn stat_modes(host: &mut dyn Host, paths: &[&str]) -> Modes {
    let exec = Exec::new("stat")
        .args(["-L", "-c", "%a %n", "--"])
        .args(paths)
        .timeout(STAT_TIMEOUT)
        .capture();
    match host.run(&exec) {
        Ok(out) => parse_stat(&out.stdout_str(), &out.stderr_str()),
        Err(e) => Modes {
            unrun: Some(e.message),
            ..Modes::default()
        },
    }
}

/// Parse `stat -c '%a %n'` output: `600 /etc/ssh/sshd_config` per line.
fn parse_stat(stdout: &str, stderr: &str) -> Modes {
    let by_path = stdout
        .lines()
        .filter_map(|line| {
            let (mode, path) = line.split_once(' ')?;
            Some((path.to_string(), u32::from_str_radix(mode, 8).ok()?))
        })
        .collect();
    let errors = stderr
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.trim().to_string())
        .collect();
    Modes {
        by_path,
        errors,
        unrun: None,
    }
}

fn judge_file(probe: &Probe, seen: Seen, modes: &Modes) -> (Status, String) {
    let Probe::File {
        path,
        exists,
        mode,
        contains,
    } = probe
    else {
        unreachable!("only file checks are judged here")
    };
    let found_by_stat = modes.by_path.get(path.as_str());
    match (seen, *exists) {
        (Seen::Unreadable(e), _) => (Status::Error, format!("cannot look at {path}: {e}")),
        (Seen::Missing, false) => (Status::Passed, "absent, as expected".into()),
        (Seen::Exists { .. }, false) => (Status::Failed, "exists, expected absent".into()),
        (Seen::Missing, true) if found_by_stat.is_some() => (
            Status::Error,
            format!(
                "{path} exists but the stage cannot read it: add its directory to the stage's `read` grants"
            ),
        ),
        (Seen::Missing, true) => (
            Status::Failed,
            "does not exist (or is outside the stage's `read` grants)".into(),
        ),
        (Seen::Exists { content }, true) => {
            let mut seen_parts = vec!["exists".to_string()];
            if let Some(expected) = mode {
                match found_by_stat {
                    Some(&actual) if actual == *expected => {
                        seen_parts.push(format!("mode {}", format_mode(actual)));
                    }
                    Some(&actual) => {
                        return (
                            Status::Failed,
                            format!(
                                "file mode is {}, expected {}",
                                format_mode(actual),
                                format_mode(*expected)
                            ),
                        );
                    }
                    None => {
                        let why = modes
                            .unrun
                            .clone()
                            .or_else(|| {
                                modes
                                    .errors
                                    .iter()
                                    .find(|l| l.contains(path.as_str()))
                                    .cloned()
                            })
                            .unwrap_or_else(|| "`stat` did not report it".into());
                        return (Status::Error, format!("cannot read the file mode: {why}"));
                    }
                }
            }
            if let (Some(pattern), Some(content)) = (contains, content) {
                match content {
                    Ok(text) if pattern.is_match(&text) => {
                        seen_parts.push(format!("contains {pattern}"));
                    }
                    Ok(_) => return (Status::Failed, format!("does not contain {pattern}")),
                    Err(e) => return (Status::Failed, format!("{e}, cannot contain {pattern}")),
                }
            }
            (Status::Passed, seen_parts.join(", "))
        }
    }
}

fn tcp(host: &mut dyn Host, h: &str, port: u16, timeout: Duration) -> (Status, String) {
    match host.tcp_probe(h, port, timeout) {
        Ok(Ok(took)) => (Status::Passed, format!("connected in {}", ms(took))),
        Ok(Err(why)) => (Status::Failed, tidy(&why)),
        Err(e) => (Status::Error, e.message().to_string()),
    }
}

fn http(
    host: &mut dyn Host,
    url: &str,
    expected: u16,
    body: Option<&crate::config::Pattern>,
    timeout: Duration,
) -> (Status, String, Option<String>) {
    let answer = match host.http_get(url, timeout) {
        Ok(Ok(answer)) => answer,
        // ureq, behind the host's `http-get`, says only "timeout: global".
        Ok(Err(why)) if why.starts_with("timeout") => {
            return (
                Status::Failed,
                format!("no answer within {}", ms(timeout)),
                None,
            );
        }
        Ok(Err(why)) => return (Status::Failed, tidy(&why), None),
        Err(e) => return (Status::Error, e.message().to_string(), None),
    };
    let text = answer.body_str().into_owned();
    let output = Some(cap(&text));
    if answer.status != expected {
        let message = format!("HTTP {}, expected {expected}", answer.status);
        return (Status::Failed, message, output);
    }
    if let Some(pattern) = body
        && !pattern.is_match(&text)
    {
        return (
            Status::Failed,
            format!(
                "HTTP {}, but the body does not match {pattern}",
                answer.status
            ),
            output,
        );
    }
    let message = format!("HTTP {} in {}", answer.status, ms(answer.duration));
    (Status::Passed, message, output)
}

fn command(host: &mut dyn Host, probe: &Probe) -> (Status, String, Option<String>) {
    let Probe::Command {
        program,
        args,
        cwd,
        env,
        expect_status,
        stdout,
        stderr,
        timeout,
    } = probe
    else {
        unreachable!("only command checks run here")
    };
    let mut exec = Exec::new(program).args(args).timeout(*timeout).capture();
    if let Some(cwd) = cwd {
        exec = exec.cwd(cwd);
    }
    for (name, value) in env {
        exec = exec.env(name, value);
    }
    let out = match host.run(&exec) {
        Ok(out) => out,
        Err(e) if e.timed_out => return (Status::Failed, e.message, None),
        Err(e) => return (Status::Error, e.message, None),
    };
    let (out_text, err_text) = (out.stdout_str(), out.stderr_str());
    let output = Some(cap(&format_output(&out_text, &err_text)));
    let hosts = ansible_failures(&out_text);
    let last = if hosts.is_empty() {
        last_line(&err_text)
            .or_else(|| last_line(&out_text))
            .map(str::to_string)
    } else {
        Some(hosts.join(", "))
    };
    let with_last = |m: String| match &last {
        Some(l) => format!("{m}: {l}"),
        None => m,
    };
    match out.status.code() {
        Some(code) if code == *expect_status => {}
        Some(code) => {
            let m = with_last(format!("exit code {code}, expected {expect_status}"));
            return (Status::Failed, m, output);
        }
        None => {
            let m = with_last(format!(
                "ended by {}, expected exit code {expect_status}",
                out.status
            ));
            return (Status::Failed, m, output);
        }
    }
    for (stream, pattern, text) in [("stdout", stdout, &out_text), ("stderr", stderr, &err_text)] {
        if let Some(pattern) = pattern
            && !pattern.is_match(text)
        {
            let cut = if out.truncated {
                " (output truncated)"
            } else {
                ""
            };
            let m = format!("{stream} does not match {pattern}{cut}");
            return (Status::Failed, m, output);
        }
    }
    (
        Status::Passed,
        format!("exit code {} in {}", expect_status, ms(out.duration)),
        output,
    )
}

fn format_output(stdout: &str, stderr: &str) -> String {
    match (stdout.trim().is_empty(), stderr.trim().is_empty()) {
        (_, true) => stdout.to_string(),
        (true, false) => stderr.to_string(),
        (false, false) => format!("{stdout}\n--- stderr ---\n{stderr}"),
    }
}

/// The hosts an `ansible` ad-hoc run failed on, from its default output:
/// `web-1 | FAILED | rc=1 >>` → `web-1 FAILED rc=1`; `web-2 | UNREACHABLE! => {`
/// → `web-2 UNREACHABLE`.
fn ansible_failures(stdout: &str) -> Vec<String> {
    stdout
        .lines()
        .filter_map(|line| {
            let (host, rest) = line.split_once(" | ")?;
            let status = ["FAILED", "UNREACHABLE"]
                .into_iter()
                .find(|s| rest.starts_with(s))?;
            let rc = rest
                .split_once("rc=")
                .map(|(_, r)| r.split(|c: char| !c.is_ascii_digit()).next().unwrap_or(""))
                .filter(|rc| !rc.is_empty());
            Some(match rc {
                Some(rc) => format!("{} {status} rc={rc}", host.trim()),
                None => format!("{} {status}", host.trim()),
            })
        })
        .collect()
}

fn last_line(text: &str) -> Option<&str> {
    text.lines().rev().map(str::trim).find(|l| !l.is_empty())
}

/// At most [`OUTPUT_KEEP`] bytes of `text`, the end kept (where errors are).
fn cap(text: &str) -> String {
    if text.len() <= OUTPUT_KEEP {
        return text.to_string();
    }
    let mut cut = text.len() - OUTPUT_KEEP;
    while !text.is_char_boundary(cut) {
        cut += 1;
    }
    format!("…{}", &text[cut..])
}

/// `Connection refused (os error 111)` → `connection refused`.
pub fn tidy(message: &str) -> String {
    let mut m = message.trim();
    for prefix in ["io: ", "Io: "] {
        m = m.strip_prefix(prefix).unwrap_or(m);
    }
    if let Some(start) = m.rfind(" (os error ")
        && m.ends_with(')')
    {
        m = &m[..start];
    }
    let mut chars = m.chars();
    match (chars.next(), chars.next()) {
        (Some(first), Some(second)) if first.is_uppercase() && second.is_lowercase() => first
            .to_lowercase()
            .chain(m[first.len_utf8()..].chars())
            .collect(),
        _ => m.to_string(),
    }
}

/// `12 ms`, `1.5 s`.
pub fn ms(d: Duration) -> String {
    if d.as_millis() < 1000 {
        format!("{} ms", d.as_millis())
    } else {
        format!("{:.1} s", d.as_secs_f64())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use capstan_plugin::ExitStatus;
    use serde_json::json;

    /// Answers from a script; records what it was asked.
    #[derive(Default)]
    struct Fake {
        asked: Vec<String>,
        stat: Option<(String, String)>,
        command: Option<Result<Output, Unrun>>,
    }

    impl Host for Fake {
        fn tcp_probe(
            &mut self,
            host: &str,
            port: u16,
            _: Duration,
        ) -> Result<Result<Duration, String>, capstan_plugin::Error> {
            self.asked.push(format!("tcp {host}:{port}"));
            match port {
                22 => Ok(Ok(Duration::from_millis(2))),
                23 => Err(capstan_plugin::Error::not_permitted(
                    "connect to `h:23` is not granted",
                )),
                _ => Ok(Err("Connection refused (os error 111)".into())),
            }
        }

        fn http_get(
            &mut self,
            url: &str,
            _: Duration,
        ) -> Result<Result<HttpResponse, String>, capstan_plugin::Error> {
            self.asked.push(format!("GET {url}"));
            if url.ends_with("/slow") {
                return Ok(Err("timeout: global".into()));
            }
            let status = if url.ends_with("/down") { 503 } else { 200 };
            Ok(Ok(HttpResponse {
                status,
                body: b"<h1>ready</h1>".to_vec(),
                duration: Duration::from_millis(4),
            }))
        }

        fn run(&mut self, exec: &Exec) -> Result<Output, Unrun> {
            self.asked.push(format!("exec {}", exec.program()));
            if exec.program() == "stat" {
                let (out, err) = self.stat.clone().unwrap_or_default();
                return Ok(output(1, &out, &err));
            }
            self.command.clone().expect("a scripted command")
        }
    }

    fn output(code: i32, stdout: &str, stderr: &str) -> Output {
        Output {
            status: ExitStatus::Code(code),
            stdout: stdout.into(),
            stderr: stderr.into(),
            truncated: false,
            duration: Duration::from_millis(7),
        }
    }

    fn checks(value: serde_json::Value) -> Vec<Check> {
        let config: Config = serde_json::from_value(json!({ "checks": value })).unwrap();
        config.checks().unwrap()
    }

    fn summary(results: &[CheckResult]) -> Vec<(String, Status, String)> {
        results
            .iter()
            .map(|r| (r.name.clone(), r.status, r.message.clone()))
            .collect()
    }

    #[test]
    fn probes_in_file_order_with_tidy_messages() {
        let mut fake = Fake::default();
        let list = checks(json!([
            {"name": "ssh", "category": "connectivity", "kind": "tcp", "host": "h", "port": 22},
            {"name": "web answers", "category": "connectivity", "kind": "tcp", "host": "h", "port": 80},
            {"name": "telnet", "category": "connectivity", "kind": "tcp", "host": "h", "port": 23},
            {"name": "ready", "category": "service", "kind": "http", "url": "http://h/", "body": "ready"},
            {"name": "ready text", "category": "service", "kind": "http", "url": "http://h/", "body": "^ready$"},
            {"name": "down", "category": "service", "kind": "http", "url": "http://h/down"},
            {"name": "slow", "category": "service", "kind": "http", "url": "http://h/slow", "timeout": 900},
        ]));
        let mut seen = 0;
        let results = run_all(&list, &mut fake, |_| seen += 1);
        assert_eq!(seen, 7);
        assert_eq!(
            summary(&results),
            [
                ("ssh".into(), Status::Passed, "connected in 2 ms".into()),
                (
                    "web answers".into(),
                    Status::Failed,
                    "connection refused".into()
                ),
                (
                    "telnet".into(),
                    Status::Error,
                    "connect to `h:23` is not granted".into()
                ),
                ("ready".into(), Status::Passed, "HTTP 200 in 4 ms".into()),
                (
                    "ready text".into(),
                    Status::Failed,
                    "HTTP 200, but the body does not match /^ready$/".into()
                ),
                (
                    "down".into(),
                    Status::Failed,
                    "HTTP 503, expected 200".into()
                ),
                (
                    "slow".into(),
                    Status::Failed,
                    "no answer within 900 ms".into()
                ),
            ]
        );
        assert_eq!(results[3].output.as_deref(), Some("<h1>ready</h1>"));
        assert_eq!(results[0].target, "h:22");
    }

    #[test]
    fn commands_check_status_and_output() {
        let list = |extra: serde_json::Value| {
            let mut check = json!({"name": "c", "category": "functionality", "kind": "command",
                "program": "ansible", "args": ["all", "-m", "ping"]});
            check
                .as_object_mut()
                .unwrap()
                .extend(extra.as_object().unwrap().clone());
            checks(json!([check]))
        };
        let run = |check: Vec<Check>, answer: Result<Output, Unrun>| {
            let mut fake = Fake {
                command: Some(answer),
                ..Fake::default()
            };
            let r = run_all(&check, &mut fake, |_| {}).remove(0);
            (r.status, r.message)
        };
        let pong = "localhost | SUCCESS => {\"ping\": \"pong\"}\n";
        assert_eq!(
            run(list(json!({"stdout": "pong"})), Ok(output(0, pong, ""))),
            (Status::Passed, "exit code 0 in 7 ms".into())
        );
        assert_eq!(
            run(
                list(json!({})),
                Ok(output(
                    2,
                    "localhost | FAILED | rc=1 >>\nnon-zero return code\n",
                    ""
                ))
            ),
            (
                Status::Failed,
                "exit code 2, expected 0: localhost FAILED rc=1".into()
            )
        );
        assert_eq!(
            run(list(json!({"expect_status": 2})), Ok(output(2, "", ""))),
            (Status::Passed, "exit code 2 in 7 ms".into())
        );
        assert_eq!(
            run(
                list(json!({"stderr": "WARN"})),
                Ok(output(0, pong, "fine\n"))
            ),
            (Status::Failed, "stderr does not match /WARN/".into())
        );
        let timed_out = Unrun {
            timed_out: true,
            message: "`ansible` timed out after 2.0 s".into(),
        };
        assert_eq!(run(list(json!({})), Err(timed_out)).0, Status::Failed);
        let refused = Unrun {
            timed_out: false,
            message: "not permitted to run `ansible`: argument 2".into(),
        };
        assert_eq!(run(list(json!({})), Err(refused)).0, Status::Error);
        let mut killed = output(0, "", "");
        killed.status = ExitStatus::Signal(9);
        assert_eq!(
            run(list(json!({})), Ok(killed)).1,
            "ended by signal 9, expected exit code 0"
        );
    }

    #[test]
    fn file_checks_read_in_the_plugin_and_batch_stat() {
        let dir = std::env::temp_dir().join(format!("capstan-smoke-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let sshd = dir.join("sshd_config");
        std::fs::write(&sshd, "PermitRootLogin no\nPasswordAuthentication no\n").unwrap();
        let sshd = sshd.to_str().unwrap().to_string();
        let motd = dir.join("motd").to_str().unwrap().to_string();
        std::fs::write(&motd, "hi").unwrap();
        let gone = dir.join("gone").to_str().unwrap().to_string();
        let dir_s = dir.to_str().unwrap().to_string();
        let list = checks(json!([
            {"name": "sshd hardened", "category": "security", "kind": "file", "path": sshd,
             "mode": "0600", "contains": "(?m)^PermitRootLogin no$"},
            {"name": "sshd content", "category": "security", "kind": "file", "path": sshd, "contains": "PermitRootLogin yes"},
            {"name": "motd mode", "category": "security", "kind": "file", "path": motd, "mode": "0644"},
            {"name": "gone", "category": "security", "kind": "file", "path": gone, "exists": false},
            {"name": "gone but needed", "category": "security", "kind": "file", "path": gone},
            {"name": "motd absent", "category": "security", "kind": "file", "path": motd, "exists": false},
            {"name": "dir content", "category": "security", "kind": "file", "path": dir_s, "contains": "x"},
            {"name": "hidden", "category": "security", "kind": "file", "path": "/nowhere/visible", "mode": "0600"},
        ]));
        let mut fake = Fake {
            // What `stat` (on the host, which sees more) says.
            stat: Some((
                format!("600 {sshd}\n640 {motd}\n600 /nowhere/visible\n"),
                String::new(),
            )),
            ..Fake::default()
        };
        let results = run_all(&list, &mut fake, |_| {});
        assert_eq!(fake.asked, ["exec stat"], "one stat for all the modes");
        assert_eq!(
            summary(&results),
            [
                (
                    "sshd hardened".into(),
                    Status::Passed,
                    "exists, mode 0600, contains /(?m)^PermitRootLogin no$/".into()
                ),
                (
                    "sshd content".into(),
                    Status::Failed,
                    "does not contain /PermitRootLogin yes/".into()
                ),
                ("motd mode".into(), Status::Failed, "file mode is 0640, expected 0644".into()),
                ("gone".into(), Status::Passed, "absent, as expected".into()),
                (
                    "gone but needed".into(),
                    Status::Failed,
                    "does not exist (or is outside the stage's `read` grants)".into()
                ),
                ("motd absent".into(), Status::Failed, "exists, expected absent".into()),
                (
                    "dir content".into(),
                    Status::Failed,
                    "it is a directory, cannot contain /x/".into()
                ),
                (
                    "hidden".into(),
                    Status::Error,
                    "/nowhere/visible exists but the stage cannot read it: add its directory to the stage's `read` grants".into()
                ),
            ]
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn stat_output_and_errors() {
        let modes = parse_stat(
            "600 /a b/c\n4755 /usr/bin/sudo\n",
            "stat: cannot statx '/x': No such file or directory\n",
        );
        assert_eq!(modes.by_path["/a b/c"], 0o600);
        assert_eq!(modes.by_path["/usr/bin/sudo"], 0o4755);
        assert_eq!(modes.errors.len(), 1);
    }

    #[test]
    fn ansible_failures_name_the_hosts() {
        let out = "web-1 | FAILED | rc=1 >>\nnon-zero return code\nweb-2 | UNREACHABLE! => {\n    \"changed\": false\n}\nweb-3 | CHANGED | rc=0 >>\n";
        assert_eq!(
            ansible_failures(out),
            ["web-1 FAILED rc=1", "web-2 UNREACHABLE"]
        );
        assert!(ansible_failures("web-1 | SUCCESS => {").is_empty());
    }

    #[test]
    fn tidy_messages() {
        assert_eq!(
            tidy("Connection refused (os error 111)"),
            "connection refused"
        );
        assert_eq!(
            tidy("io: Connection refused (os error 111)"),
            "connection refused"
        );
        assert_eq!(tidy("timed out after 500 ms"), "timed out after 500 ms");
        assert_eq!(tidy("DNS failed"), "DNS failed");
        assert_eq!(cap(&"é".repeat(5000)).chars().next(), Some('…'));
        assert_eq!(ms(Duration::from_millis(1500)), "1.5 s");
    }
}
