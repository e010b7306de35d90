//! A secret's value, got by the host when a stage granted it starts: from
//! the host's environment, a file, or a command the host runs (`pass show
//! …`, `vault kv get -field=…`), never from a plugin. Values stay in
//! memory (wiped when dropped); errors name the secret and its source,
//! never the value, nor a command's output (only the last line of its
//! stderr, which tools use to say what went wrong).

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt};
use zeroize::Zeroizing;

use super::redact::MIN_LEN;
use crate::pipeline::{Secret, SecretSource};

/// The largest value a secret may have.
pub const MAX_VALUE: usize = 1 << 20;

/// How much of a failed command's stderr is kept to explain it.
const STDERR_KEPT: usize = 64 * 1024;

/// A secret's value, in memory only.
pub struct Resolved {
    pub name: String,
    pub value: Zeroizing<Vec<u8>>,
}

impl std::fmt::Debug for Resolved {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Resolved({}, {} bytes)", self.name, self.value.len())
    }
}

/// Why a secret has no value.
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    #[error("secret `{name}`: host variable `{var}` is not set (or not valid UTF-8)")]
    EnvUnset { name: String, var: String },
    #[error("secret `{name}`: cannot read {source_}: {reason}")]
    File {
        name: String,
        source_: String,
        reason: String,
    },
    #[error("secret `{name}`: {command} {how}")]
    Command {
        name: String,
        command: String,
        how: String,
    },
    #[error("secret `{name}` ({source_}) is empty")]
    Empty { name: String, source_: String },
    #[error(
        "secret `{name}` ({source_}) is shorter than {MIN_LEN} bytes: too short to be told apart from ordinary text, so it could not be redacted"
    )]
    TooShort { name: String, source_: String },
    #[error("secret `{name}` ({source_}) is longer than {MAX_VALUE} bytes")]
    TooLong { name: String, source_: String },
}

/// Get the value of `secret`; a command runs in `dir` (the pipeline's
/// directory) with the host's environment.
pub async fn resolve(secret: &Secret, dir: &Path) -> Result<Resolved, ResolveError> {
    let name = secret.name.clone();
    let source_ = secret.source.to_string();
    let mut value: Zeroizing<Vec<u8>> = match &secret.source {
        SecretSource::Env { var } => match std::env::var(var) {
            Ok(v) => Zeroizing::new(v.into_bytes()),
            Err(_) => {
                return Err(ResolveError::EnvUnset {
                    name,
                    var: var.clone(),
                });
            }
        },
        SecretSource::File { path } => {
            let bytes =
                crate::pipeline::read::read_bounded(path, MAX_VALUE as u64).map_err(|e| {
                    ResolveError::File {
                        name: name.clone(),
                        source_: source_.clone(),
                        reason: e.to_string(),
                    }
                })?;
            trim_newline(Zeroizing::new(bytes))
        }
        SecretSource::Command { argv, timeout } => trim_newline(
            run(argv, *timeout, dir)
                .await
                .map_err(|how| ResolveError::Command {
                    name: name.clone(),
                    command: source_.clone(),
                    how,
                })?,
        ),
    };
    if value.iter().all(u8::is_ascii_whitespace) {
        value.clear();
        return Err(ResolveError::Empty { name, source_ });
    }
    if value.len() < MIN_LEN {
        return Err(ResolveError::TooShort { name, source_ });
    }
    if value.len() > MAX_VALUE {
        return Err(ResolveError::TooLong { name, source_ });
    }
    Ok(Resolved { name, value })
}

/// Without one trailing newline (`\n` or `\r\n`): what `echo`, `pass show`
/// and editors end a value with is not part of it.
fn trim_newline(mut value: Zeroizing<Vec<u8>>) -> Zeroizing<Vec<u8>> {
    if value.last() == Some(&b'\n') {
        value.pop();
        if value.last() == Some(&b'\r') {
            value.pop();
        }
    }
    value
}

/// Run `argv` and return its stdout, or why not (exit status, the last
/// line of stderr, a timeout: never stdout).
async fn run(argv: &[String], timeout: Duration, dir: &Path) -> Result<Zeroizing<Vec<u8>>, String> {
    let mut child = tokio::process::Command::new(&argv[0])
        .args(&argv[1..])
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("did not start: {e}"))?;
    let group = child.id().map(|id| nix::unistd::Pid::from_raw(id as i32));
    let mut stdout = child.stdout.take().expect("piped");
    let mut stderr = child.stderr.take().expect("piped");
    let work = async {
        let (out, err, status) = tokio::join!(
            read_capped(&mut stdout, MAX_VALUE),
            read_capped(&mut stderr, STDERR_KEPT),
            child.wait()
        );
        (out, err, status)
    };
    let Ok((out, err, status)) = tokio::time::timeout(timeout, work).await else {
        if let Some(group) = group {
            let _ = nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGKILL);
        }
        return Err(format!(
            "did not finish within {} (raise `timeout` of the secret)",
            humantime::format_duration(timeout)
        ));
    };
    let status = status.map_err(|e| format!("could not be waited for: {e}"))?;
    let (out, too_long) = out.map_err(|e| format!("could not be read: {e}"))?;
    if !status.success() {
        let err = err.map(|(e, _)| e).unwrap_or_default();
        let said = String::from_utf8_lossy(&err);
        let last = said
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("");
        let last: String = last.trim().chars().take(200).collect();
        return Err(if last.is_empty() {
            format!("failed ({status})")
        } else {
            format!("failed ({status}): {last}")
        });
    }
    if too_long {
        return Err(format!("printed more than {MAX_VALUE} bytes"));
    }
    Ok(out)
}

/// Everything `reader` gives, keeping the first `cap` bytes; whether there
/// was more.
async fn read_capped(
    reader: &mut (impl AsyncRead + Unpin),
    cap: usize,
) -> std::io::Result<(Zeroizing<Vec<u8>>, bool)> {
    let mut kept = Zeroizing::new(Vec::new());
    let mut more = false;
    let mut buf = Zeroizing::new(vec![0u8; 16 * 1024]);
    loop {
        let n = reader.read(&mut buf).await?;
        if n == 0 {
            return Ok((kept, more));
        }
        let room = cap.saturating_sub(kept.len());
        kept.extend_from_slice(&buf[..n.min(room)]);
        more |= n > room;
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    fn secret(source: SecretSource) -> Secret {
        Secret {
            name: "token".into(),
            source,
        }
    }

    fn command(argv: &[&str]) -> Secret {
        secret(SecretSource::Command {
            argv: argv.iter().map(|s| s.to_string()).collect(),
            timeout: Duration::from_secs(10),
        })
    }

    async fn value(secret: &Secret) -> Result<String, String> {
        resolve(secret, Path::new("/"))
            .await
            .map(|r| String::from_utf8(r.value.to_vec()).unwrap())
            .map_err(|e| e.to_string())
    }

    #[tokio::test]
    async fn sources_and_their_failures() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("token.txt");
        std::fs::write(&file, "from-a-file\n").unwrap();
        let path = |p: &PathBuf| SecretSource::File { path: p.clone() };
        assert_eq!(value(&secret(path(&file))).await.unwrap(), "from-a-file");
        std::fs::write(&file, "two\nlines\r\n").unwrap();
        assert_eq!(value(&secret(path(&file))).await.unwrap(), "two\nlines");
        std::fs::write(&file, "  \n").unwrap();
        assert_eq!(
            value(&secret(path(&file))).await.unwrap_err(),
            format!("secret `token` (file {}) is empty", file.display())
        );
        std::fs::write(&file, "abc").unwrap();
        assert!(
            value(&secret(path(&file)))
                .await
                .unwrap_err()
                .contains("is shorter than 4 bytes")
        );
        let missing = dir.path().join("missing");
        assert!(
            value(&secret(path(&missing)))
                .await
                .unwrap_err()
                .starts_with(&format!(
                    "secret `token`: cannot read file {}: ",
                    missing.display()
                ))
        );
        assert_eq!(
            value(&command(&["printf", "from-a-command\\n"]))
                .await
                .unwrap(),
            "from-a-command"
        );
        // A failing command is named with its exit and its last stderr
        // line, never its stdout.
        let e = value(&command(&[
            "sh",
            "-c",
            "echo the-value-so-far; echo 'vault: permission denied' >&2; exit 3",
        ]))
        .await
        .unwrap_err();
        assert_eq!(
            e,
            "secret `token`: command `sh -c echo the-value-so-far; echo 'vault: permission denied' >&2; exit 3` failed (exit status: 3): vault: permission denied"
        );
        let e = value(&command(&["no-such-program-here"]))
            .await
            .unwrap_err();
        assert!(
            e.starts_with("secret `token`: command `no-such-program-here` did not start: "),
            "{e}"
        );
        let e = value(&secret(SecretSource::Env {
            var: "CAPSTAN_TEST_NO_SUCH_VAR".into(),
        }))
        .await
        .unwrap_err();
        assert_eq!(
            e,
            "secret `token`: host variable `CAPSTAN_TEST_NO_SUCH_VAR` is not set (or not valid UTF-8)"
        );
    }

    #[tokio::test]
    async fn a_command_that_hangs_is_ended() {
        let slow = secret(SecretSource::Command {
            argv: vec!["sh".into(), "-c".into(), "sleep 600 & wait".into()],
            timeout: Duration::from_millis(200),
        });
        let e = value(&slow).await.unwrap_err();
        assert!(
            e.ends_with("did not finish within 200ms (raise `timeout` of the secret)"),
            "{e}"
        );
    }
}
