//! The attacks. Each either fails with the host's refusal or returns
//! [`escaped`]. The attacks on the sandbox's edges are in
//! [`crate::escapes`].

use std::fmt::Display;
use std::hint::black_box;
use std::io::Write;
use std::time::Duration;

use capstan_plugin::{Error, Exec, ExecErrorKind, ExitStatus, Outcome, network};

use crate::Action;

/// Captured output above this means the host did not cap it.
const UNCAPPED_OUTPUT: usize = 16 << 20;

/// The attack worked: the stage succeeds, loudly.
pub(crate) fn escaped(what: impl Display) -> Result<Outcome, Error> {
    Ok(Outcome::new(format!("ESCAPED: {what}")).output("escaped", true))
}

/// Run `exec`; a refusal is the expected result.
fn exec_attack(exec: Exec, what: &str) -> Result<Outcome, Error> {
    let out = exec.capture().run()?;
    escaped(format!(
        "{what} ran ({}): {}",
        out.status,
        out.stdout_str().trim()
    ))
}

pub(crate) fn run(action: Action) -> Result<Outcome, Error> {
    match action {
        Action::ExecUngranted => exec_attack(Exec::new("cat").arg("/etc/hostname"), "cat"),
        Action::ForbiddenArgs => {
            exec_attack(Exec::new("echo").arg("--evil-flag"), "echo --evil-flag")
        }
        Action::ShSmuggle => sh_smuggle(),
        Action::CwdOutside { cwd } => {
            exec_attack(Exec::new("echo").arg("hello").cwd(&cwd), "echo in cwd")
        }
        Action::ReadOutside { path } => match std::fs::read_to_string(&path) {
            Ok(content) => escaped(format!("read {path}: {}", content.trim())),
            Err(e) => Err(Error::not_permitted(format!("read {path}: {e}"))),
        },
        Action::WriteReadonly { path } => match std::fs::write(&path, "pwned by the adversary\n") {
            Ok(()) => escaped(format!("wrote {path}")),
            Err(e) => Err(Error::not_permitted(format!("write {path}: {e}"))),
        },
        Action::EnvUngranted { name } => match std::env::var_os(&name) {
            Some(value) => escaped(format!("env var {name} = {}", value.to_string_lossy())),
            None => Err(Error::not_permitted(format!("env var {name} not visible"))),
        },
        Action::EnvSmuggle => exec_attack(
            Exec::new("echo")
                .arg("hello")
                .env("LD_PRELOAD", "/tmp/x.so"),
            "echo with LD_PRELOAD",
        ),
        Action::Loop => {
            let mut i: u64 = 0;
            loop {
                i = black_box(i.wrapping_add(1));
            }
        }
        Action::Alloc => {
            let mut chunks: Vec<Vec<u8>> = Vec::new();
            loop {
                chunks.push(vec![0xA5; 1 << 20]);
                black_box(&mut chunks);
            }
        }
        Action::Flood => flood(),
        Action::ExecFlood => exec_flood(Exec::new("yes")),
        Action::ExecHang => {
            let out = Exec::new("sleep").arg("1000").run()?;
            if out.status == ExitStatus::Code(0) {
                return escaped(format!(
                    "sleep 1000 ran to completion in {:?}",
                    out.duration
                ));
            }
            Ok(Outcome::new(format!(
                "sleep ended with {} after {:?}",
                out.status, out.duration
            )))
        }
        Action::Panic => panic!("adversary panicked on purpose"),
        Action::Probe {
            host,
            port,
            timeout_ms,
        } => {
            let timeout = Duration::from_millis(timeout_ms.unwrap_or(2000));
            match network::tcp_probe(&host, port, timeout)? {
                Ok(took) => Ok(Outcome::new(format!("{host}:{port} reachable"))
                    .output("reachable", true)
                    .output("millis", took.as_millis() as u64)),
                Err(why) => Ok(Outcome::new(format!("{host}:{port} unreachable: {why}"))
                    .output("reachable", false)
                    .output("error", why)),
            }
        }
        other => crate::escapes::run(other),
    }
}

/// Run `yes` (with capture) until the host stops it; returning more than
/// [`UNCAPPED_OUTPUT`] escaped.
pub(crate) fn exec_flood(yes: Exec) -> Result<Outcome, Error> {
    let out = yes.capture().run()?;
    if out.stdout.len() > UNCAPPED_OUTPUT {
        return escaped(format!("yes returned {} bytes uncapped", out.stdout.len()));
    }
    Ok(Outcome::new(format!(
        "yes ended with {}, {} bytes captured (truncated: {})",
        out.status,
        out.stdout.len(),
        out.truncated
    ))
    .output("stdout_bytes", out.stdout.len())
    .output("truncated", out.truncated))
}

/// Every way of naming a shell must be refused; any that runs escaped.
fn sh_smuggle() -> Result<Outcome, Error> {
    let attempts = [
        ("sh", &["-c", "cat /etc/passwd"][..]),
        ("/bin/sh", &["-c", "cat /etc/passwd"][..]),
        ("echo; cat /etc/passwd", &[][..]),
        ("../../../bin/sh", &["-c", "cat /etc/passwd"][..]),
    ];
    let mut refusals = Vec::new();
    let mut all_not_permitted = true;
    for (program, args) in attempts {
        match Exec::new(program).args(args).capture().run() {
            Ok(out) => {
                return escaped(format!(
                    "`{program}` ran ({}): {}",
                    out.status,
                    out.stdout_str().trim()
                ));
            }
            Err(e) => match e.kind() {
                ExecErrorKind::NotPermitted(host) => refusals.push(format!("`{program}`: {host}")),
                _ => {
                    all_not_permitted = false;
                    refusals.push(format!("`{program}`: {e}"));
                }
            },
        }
    }
    let message = format!("all {} refused: {}", refusals.len(), refusals.join("; "));
    Err(if all_not_permitted {
        Error::not_permitted(message)
    } else {
        Error::failed(message)
    })
}

/// Print a long line forever; stop only if the host closes stdout.
fn flood() -> Result<Outcome, Error> {
    let line = "flood ".repeat(200);
    let mut stdout = std::io::stdout().lock();
    let mut written: u64 = 0;
    loop {
        if let Err(e) = writeln!(stdout, "{line}") {
            return Err(Error::failed(format!(
                "stdout closed after {written} bytes: {e}"
            )));
        }
        written += line.len() as u64 + 1;
    }
}
