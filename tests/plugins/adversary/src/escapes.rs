//! Attacks on the edges of the sandbox: paths that change between the
//! host's check and its use, floods on every path to a limit, host calls
//! that block, and text that poses as the host's. As in [`crate::attacks`],
//! a refusal fails the stage and a success is [`escaped`]; the helpers that
//! only set up a race ([`Action::Repoint`], [`Action::Flip`]) or hold a
//! resource ([`Action::HoldFiles`]) succeed plainly.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use capstan_plugin::approval::{self, Decision, Request};
use capstan_plugin::{Error, Exec, Outcome, log, network};

use crate::Action;
use crate::attacks::{escaped, exec_flood};

/// Terminal escapes and lookalikes of the host's own lines: clear the
/// screen, return the cursor to overwrite the line with a forged result,
/// set the window title, reverse the text that follows.
const FORGED: &str = "\x1b[2J\r✓ deploy (0.1s): approved \x1b]0;title\x07 \u{202e}desrever txet";
/// A line that looks like the host's approval record.
const HOST_LINE: &str = "[capstan] approved by bob";

pub(crate) fn run(action: Action) -> Result<Outcome, Error> {
    match action {
        Action::Repoint { path, target } => repoint(&path, &target),
        Action::Flip {
            dir,
            link,
            name,
            millis,
            dwell_us,
        } => flip(&dir, &link, &name, millis, Duration::from_micros(dwell_us)),
        Action::CwdRace { cwd, times, inside } => {
            let inside = inside.map(PathBuf::from).unwrap_or_else(|| {
                Path::new(&cwd)
                    .parent()
                    .map(Path::to_path_buf)
                    .unwrap_or_default()
            });
            cwd_race(&cwd, times, &inside)
        }
        Action::HoldFiles {
            dir,
            count,
            hold_ms,
        } => hold_files(&dir, count, hold_ms),
        Action::ExecAfter {
            delay_ms,
            program,
            args,
        } => {
            std::thread::sleep(Duration::from_millis(delay_ms));
            let out = Exec::new(program.as_str()).args(&args).capture().run()?;
            Ok(Outcome::new(format!("{program} ended with {}", out.status))
                .output("stdout", out.stdout_str())
                .output("exit_code", out.status.code()))
        }
        Action::DenyFlood { times } => deny_flood(times),
        Action::BigOutcome { bytes } => {
            Ok(Outcome::new("x".repeat(bytes)).output("big", "y".repeat(bytes)))
        }
        Action::ExecFloodUnlogged => exec_flood(Exec::new("yes").unlogged()),
        Action::OpenFifo { path } => match std::fs::read(&path) {
            Ok(bytes) => Ok(
                Outcome::new(format!("read {} bytes from {path}", bytes.len()))
                    .output("bytes", bytes.len()),
            ),
            Err(e) => Err(Error::failed(format!("read {path}: {e}"))),
        },
        Action::HttpGet { url, timeout_ms } => {
            match network::http_get(&url, Duration::from_millis(timeout_ms))? {
                Ok(answer) => Ok(Outcome::new(format!("{url}: HTTP {}", answer.status))
                    .output("status", answer.status)),
                Err(why) => Err(Error::failed(format!("{url}: no answer: {why}"))),
            }
        }
        Action::ForgeText { approval } => forge_text(approval),
        benign => unreachable!("action {benign:?} handled elsewhere"),
    }
}

/// Move `path` aside and put a symlink to `target` in its place: through
/// WASI if the host lets a symlink be made there, else through `ln -s`.
fn repoint(path: &str, target: &str) -> Result<Outcome, Error> {
    let moved = format!("{path}.moved");
    std::fs::rename(path, &moved)
        .map_err(|e| Error::failed(format!("rename {path} to {moved}: {e}")))?;
    #[allow(deprecated)] // `std::os::wasi::fs::symlink_path` is unstable.
    let wasi = std::fs::soft_link(target, path);
    let via = match wasi {
        Ok(()) => "wasi".to_string(),
        Err(wasi) => {
            let out = Exec::new("ln").args(["-s", target, path]).capture().run()?;
            if !out.success() {
                return Err(Error::failed(format!(
                    "symlink {path} -> {target}: WASI: {wasi}; ln -s: {}: {}",
                    out.status,
                    out.stderr_str().trim()
                )));
            }
            format!("ln (WASI: {wasi})")
        }
    };
    Ok(Outcome::new(format!("{path} now points to {target}, via {via}")).output("via", via))
}

/// Make `name` a real directory, then a symlink, then a directory…, for
/// `millis`, each for `dwell`, so that a path checked as `name` may be used
/// as the other.
fn flip(dir: &str, link: &str, name: &str, millis: u64, dwell: Duration) -> Result<Outcome, Error> {
    let rename = |from: &str, to: &str| {
        std::fs::rename(from, to).map_err(|e| Error::failed(format!("rename {from} to {to}: {e}")))
    };
    let stay = || {
        if !dwell.is_zero() {
            std::thread::sleep(dwell);
        }
    };
    let start = Instant::now();
    let mut flips: u64 = 0;
    while start.elapsed() < Duration::from_millis(millis) {
        rename(dir, name)?;
        stay();
        rename(name, dir)?;
        rename(link, name)?;
        stay();
        rename(name, link)?;
        flips += 1;
    }
    Ok(Outcome::new(format!("flipped {name} {flips} times")).output("flips", flips))
}

/// Exec `pwd -P` in `cwd` again and again while another stage flips it:
/// a physical working directory outside `inside` escaped.
fn cwd_race(cwd: &str, times: u32, inside: &Path) -> Result<Outcome, Error> {
    // Start when the flipping has: `cwd` exists (as one or the other).
    let start = Instant::now();
    while std::fs::symlink_metadata(cwd).is_err() && start.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(1));
    }
    let (mut ran, mut refused) = (0u32, 0u32);
    let mut first_refusal = None;
    for _ in 0..times {
        match Exec::new("pwd").arg("-P").cwd(cwd).capture().run() {
            Ok(out) => {
                let seen = out.stdout_str().trim().to_string();
                if out.success() && !Path::new(&seen).starts_with(inside) {
                    return escaped(format!("`pwd -P` in {cwd} ran in {seen}"));
                }
                ran += 1;
            }
            Err(e) => {
                refused += 1;
                first_refusal.get_or_insert_with(|| e.to_string());
            }
        }
    }
    Ok(Outcome::new(format!(
        "{ran} runs stayed inside {}, {refused} refused",
        inside.display()
    ))
    .output("ran", ran)
    .output("refused", refused)
    .output("first_refusal", first_refusal))
}

/// Open files until `count` or the first error, and keep them open.
fn hold_files(dir: &str, count: u32, hold_ms: u64) -> Result<Outcome, Error> {
    let mut files = Vec::new();
    let mut first_error = None;
    for i in 0..count {
        match std::fs::File::create(Path::new(dir).join(format!("held-{i}"))) {
            Ok(file) => files.push(file),
            Err(e) => {
                first_error = Some(e.to_string());
                break;
            }
        }
    }
    let opened = files.len();
    std::thread::sleep(Duration::from_millis(hold_ms));
    drop(files);
    Ok(Outcome::new(format!("held {opened} files open"))
        .output("opened", opened)
        .output("first_error", first_error))
}

/// Ask for what is never granted, `times` times: each refusal is an audit
/// line the stage causes.
fn deny_flood(times: u32) -> Result<Outcome, Error> {
    for _ in 0..times {
        if let Ok(out) = Exec::new("cat").arg("/etc/hostname").capture().run() {
            return escaped(format!("cat ran ({})", out.status));
        }
    }
    Ok(Outcome::new(format!("{times} execs refused")).output("refused", times))
}

/// Forged text in the summary, a log record, stdout, an output, an exec's
/// arguments, and (with `ask`) an approval request's subject, details and
/// checklist.
fn forge_text(ask: bool) -> Result<Outcome, Error> {
    log::info(&format!("{HOST_LINE} {FORGED}"));
    log::warn(FORGED);
    {
        let mut stdout = std::io::stdout().lock();
        let _ = writeln!(stdout, "{HOST_LINE}");
        let _ = writeln!(stdout, "$ rm -rf / {FORGED}");
        let _ = stdout.flush();
    }
    // Refused (the grant allows `hello|world`), and audited with its
    // arguments.
    let _ = Exec::new("echo").arg("\u{202e}\x1b[2J\rforged").run();
    if ask {
        let request = Request::new(format!("deploy {FORGED}"), "sha256:0123456789abcdef")
            .details(format!("{HOST_LINE}\n{FORGED}"))
            .check(format!("{HOST_LINE} {FORGED}"));
        return match approval::ask(&request)? {
            Decision::Approved(answers) => Ok(Outcome::new(format!(
                "approved by {} {FORGED}",
                answers
                    .iter()
                    .map(|a| a.by.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))),
            Decision::Rejected(answer) => {
                Err(Error::failed(format!("rejected by {} {FORGED}", answer.by)))
            }
            Decision::Pending(how) => Err(Error::failed(format!("{how}\n{HOST_LINE} {FORGED}"))),
        };
    }
    Ok(Outcome::new(format!("forged {FORGED}\n{HOST_LINE}"))
        .output("forged", FORGED)
        .output("host_line", HOST_LINE))
}
