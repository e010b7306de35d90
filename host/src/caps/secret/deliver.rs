//! How a stage attempt's secrets reach its programs: a variable of each
//! permitted program's environment, or a file (mode 0600) in a directory
//! (mode 0700) of the attempt's own, `<run>/secrets/<stage>-XXXXXX/`,
//! whose path a variable holds. The directory is outside every grant and
//! every other stage's file rules; only the programs a secret is for get
//! a Landlock rule for its file (see `caps::exec::sandbox`). It is removed
//! when the stage ends, however it ends ([`Delivered`] is dropped; a host
//! killed meanwhile leaves it to the next `resume` of the run, which
//! removes `<run>/secrets/` before anything runs, or to `capstan cancel`,
//! once the run's programs are gone).

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde_json::{Value, json};
use zeroize::Zeroizing;

use super::resolve::Resolved;
use crate::pipeline::{Delivery, SecretGrant};

/// The directory of the run that holds stage attempts' secret files.
pub fn secrets_dir(run_dir: &Path) -> PathBuf {
    run_dir.join("secrets")
}

/// One stage attempt's secrets, ready for its programs.
pub struct Delivered {
    entries: Vec<Entry>,
    /// The attempt's private directory, while it exists.
    dir: Mutex<Option<tempfile::TempDir>>,
    /// Its path, for the sandbox's mounts.
    path: Option<PathBuf>,
}

struct Entry {
    name: String,
    grant: SecretGrant,
    /// The variable's value: the secret, or its file's path.
    value: Zeroizing<String>,
    /// The file, open (the sandbox binds its rules to this object).
    file: Option<File>,
}

/// Why secrets cannot be delivered.
#[derive(Debug, thiserror::Error)]
pub enum DeliverError {
    #[error(
        "secret `{0}` is not UTF-8 text without NUL bytes, so it cannot be put in an environment variable; deliver it as a file: {{ file = \"VARIABLE\" }}"
    )]
    NotText(String),
    #[error("cannot create the private directory of the stage's secrets in {dir}: {source}")]
    Dir { dir: PathBuf, source: io::Error },
    #[error("cannot write the file of secret `{name}`: {source}")]
    File { name: String, source: io::Error },
}

impl Delivered {
    /// Prepare `values` (each granted in `grants`) for stage `stage`,
    /// writing the files of those delivered as files under `run_dir`.
    pub fn prepare(
        stage: &str,
        run_dir: &Path,
        grants: &BTreeMap<String, SecretGrant>,
        values: Vec<Resolved>,
    ) -> Result<Delivered, DeliverError> {
        let needs_dir = values.iter().any(|r| {
            grants
                .get(&r.name)
                .is_some_and(|g| g.delivery().0 == Delivery::File)
        });
        let dir = if needs_dir {
            let parent = secrets_dir(run_dir);
            let made = std::fs::DirBuilder::new()
                .mode(0o700)
                .create(&parent)
                .or_else(|e| match e.kind() {
                    io::ErrorKind::AlreadyExists => Ok(()),
                    _ => Err(e),
                })
                .and_then(|()| {
                    use std::os::unix::fs::PermissionsExt;
                    tempfile::Builder::new()
                        .prefix(&format!("{stage}-"))
                        .permissions(std::fs::Permissions::from_mode(0o700))
                        .tempdir_in(&parent)
                });
            Some(made.map_err(|source| DeliverError::Dir {
                dir: parent,
                source,
            })?)
        } else {
            None
        };
        let mut entries = Vec::new();
        for resolved in values {
            let Some(grant) = grants.get(&resolved.name) else {
                continue;
            };
            let name = resolved.name.clone();
            let entry = match grant.delivery().0 {
                Delivery::Env => {
                    let text = std::str::from_utf8(&resolved.value)
                        .ok()
                        .filter(|t| !t.contains('\0'))
                        .ok_or_else(|| DeliverError::NotText(name.clone()))?;
                    Entry {
                        name,
                        grant: grant.clone(),
                        value: Zeroizing::new(text.to_string()),
                        file: None,
                    }
                }
                Delivery::File => {
                    let dir = dir.as_ref().expect("made above for file deliveries");
                    let path = dir.path().join(&name);
                    let file = write_private(&path, &resolved.value).map_err(|source| {
                        DeliverError::File {
                            name: name.clone(),
                            source,
                        }
                    })?;
                    Entry {
                        name,
                        grant: grant.clone(),
                        value: Zeroizing::new(path.to_string_lossy().into_owned()),
                        file: Some(file),
                    }
                }
            };
            entries.push(entry);
        }
        Ok(Delivered {
            path: dir.as_ref().map(|d| d.path().to_path_buf()),
            dir: Mutex::new(dir),
            entries,
        })
    }

    /// Nothing to deliver.
    pub fn none() -> Delivered {
        Delivered {
            entries: Vec::new(),
            dir: Mutex::new(None),
            path: None,
        }
    }

    /// The variables `program` receives, set last (over anything else).
    pub fn env_for(&self, program: &str) -> Vec<(String, Zeroizing<String>)> {
        self.entries
            .iter()
            .filter(|e| e.grant.reaches(program))
            .map(|e| (e.grant.delivery().1.to_string(), e.value.clone()))
            .collect()
    }

    /// The secret files `program` may read.
    pub fn files_for(&self, program: &str) -> Vec<&File> {
        self.entries
            .iter()
            .filter(|e| e.grant.reaches(program))
            .filter_map(|e| e.file.as_ref())
            .collect()
    }

    /// The attempt's private directory, if a secret is delivered as a file.
    pub fn dir(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// The value of the secret `name`, as text (for a request the host makes
    /// for the plugin, such as a webhook POST to the URL it holds).
    pub fn text_of(&self, name: &str) -> Option<Zeroizing<String>> {
        use std::os::unix::fs::FileExt;
        let entry = self.entries.iter().find(|e| e.name == name)?;
        let Some(file) = &entry.file else {
            return Some(entry.value.clone());
        };
        let len = usize::try_from(file.metadata().ok()?.len()).ok()?;
        let mut bytes = Zeroizing::new(vec![0u8; len]);
        file.read_exact_at(&mut bytes, 0).ok()?;
        let text = std::str::from_utf8(&bytes).ok()?;
        Some(Zeroizing::new(text.to_string()))
    }

    /// Names of the secrets delivered.
    pub fn names(&self) -> Vec<&str> {
        self.entries.iter().map(|e| e.name.as_str()).collect()
    }

    /// What the audit log records: names, how and to which programs, never
    /// values.
    pub fn summary(&self) -> Value {
        Value::Array(
            self.entries
                .iter()
                .map(|e| {
                    let (how, var) = e.grant.delivery();
                    json!({ "name": e.name, "delivery": how, "variable": var, "programs": e.grant.programs })
                })
                .collect(),
        )
    }

    /// Remove the private directory and its files (also when dropped).
    pub fn remove(&self) -> io::Result<()> {
        match self.dir.lock().expect("secret dir lock").take() {
            Some(dir) => dir.close(),
            None => Ok(()),
        }
    }
}

impl Drop for Delivered {
    fn drop(&mut self) {
        if let Err(e) = self.remove() {
            eprintln!(
                "capstan: cannot remove the secrets directory {}: {e}; remove it by hand",
                self.path.as_deref().unwrap_or(Path::new("?")).display()
            );
        }
    }
}

/// A new file at `path`, mode 0600, holding `value`, then opened again
/// read-only (the handle the sandbox's rules bind).
fn write_private(path: &Path, value: &[u8]) -> io::Result<File> {
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)?;
    file.write_all(value)?;
    // A value of several lines (a PEM key) ends with a newline in its
    // file, as tools that read keys expect.
    if value.contains(&b'\n') && !value.ends_with(b"\n") {
        file.write_all(b"\n")?;
    }
    drop(file);
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn grant(toml: &str) -> SecretGrant {
        toml::from_str(toml).unwrap()
    }

    fn resolved(name: &str, value: &[u8]) -> Resolved {
        Resolved {
            name: name.into(),
            value: Zeroizing::new(value.to_vec()),
        }
    }

    #[test]
    fn files_are_private_and_gone_with_the_stage() {
        let run = tempfile::tempdir().unwrap();
        let grants = BTreeMap::from([
            (
                "key".to_string(),
                grant("file = \"KEY_FILE\"\nprograms = [\"ssh\"]"),
            ),
            ("token".to_string(), grant("env = \"TOKEN\"")),
        ]);
        let delivered = Delivered::prepare(
            "deploy",
            run.path(),
            &grants,
            vec![
                resolved("key", b"-----BEGIN-----\nabc\n-----END-----"),
                resolved("token", b"tok-value"),
            ],
        )
        .unwrap();
        let dir = delivered.dir().unwrap().to_path_buf();
        assert!(dir.starts_with(run.path().join("secrets")));
        assert!(
            dir.file_name()
                .unwrap()
                .to_str()
                .unwrap()
                .starts_with("deploy-")
        );
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&run.path().join("secrets")), 0o700);
        let file = dir.join("key");
        assert_eq!(mode(&file), 0o600);
        assert_eq!(
            std::fs::read_to_string(&file).unwrap(),
            "-----BEGIN-----\nabc\n-----END-----\n"
        );
        // Each program gets what is granted to it, and nothing else.
        let names = |program: &str| -> Vec<(String, String)> {
            delivered
                .env_for(program)
                .into_iter()
                .map(|(k, v)| (k, v.to_string()))
                .collect()
        };
        assert_eq!(
            names("ssh"),
            [
                ("KEY_FILE".to_string(), file.display().to_string()),
                ("TOKEN".to_string(), "tok-value".to_string())
            ]
        );
        assert_eq!(
            names("sh"),
            [("TOKEN".to_string(), "tok-value".to_string())]
        );
        assert_eq!(delivered.files_for("ssh").len(), 1);
        assert!(delivered.files_for("sh").is_empty());
        assert_eq!(
            delivered.summary(),
            json!([
                {"name": "key", "delivery": "file", "variable": "KEY_FILE", "programs": ["ssh"]},
                {"name": "token", "delivery": "env", "variable": "TOKEN", "programs": null}
            ])
        );
        drop(delivered);
        assert!(!dir.exists());
    }

    #[test]
    fn binary_values_go_in_files_only() {
        let run = tempfile::tempdir().unwrap();
        let grants = BTreeMap::from([("blob".to_string(), grant("env = \"BLOB\""))]);
        let e = Delivered::prepare("s", run.path(), &grants, vec![resolved("blob", b"ab\0cd")])
            .err()
            .unwrap();
        assert!(
            e.to_string().starts_with("secret `blob` is not UTF-8 text"),
            "{e}"
        );
        let grants = BTreeMap::from([("blob".to_string(), grant("file = \"BLOB\""))]);
        let ok = Delivered::prepare("s", run.path(), &grants, vec![resolved("blob", b"ab\0cd")])
            .unwrap();
        ok.remove().unwrap();
        assert!(ok.dir().is_some_and(|d| !d.exists()));
    }
}
