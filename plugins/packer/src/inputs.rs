//! The inputs digest behind `skip_unchanged`: one sha256 over the
//! template, the variables and every file under the configured paths.
//!
//! Files are taken in sorted order of their names relative to the path they
//! were found under (so the digest does not depend on directory listing
//! order, nor on where the checkout lives), each with its relative name, its
//! length and its content. A symlink contributes its target, not what it
//! points to (no cycles, nothing outside the grant is followed).

use std::fmt::Write as _;
use std::io;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// What went into a digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inputs {
    /// Hex sha256.
    pub digest: String,
    /// How many files (and symlinks) were hashed under the paths.
    pub files: usize,
}

/// An input that cannot be read.
#[derive(Debug)]
pub struct InputError {
    /// The path that failed.
    pub path: PathBuf,
    /// Why.
    pub error: io::Error,
}

impl std::fmt::Display for InputError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "cannot read `{}`: {}", self.path.display(), self.error)
    }
}

/// Digest of the template's content, the `-var` pairs (in the order given;
/// the caller sorts them) and everything under `paths`.
pub fn digest(
    template: &Path,
    vars: &[(String, String)],
    paths: &[PathBuf],
) -> Result<Inputs, InputError> {
    let mut h = Sha256::new();
    h.update(b"capstan-packer inputs v1\n");
    let template_bytes = read(template)?;
    h.update(
        format!(
            "template {}\n",
            hex::encode(Sha256::digest(&template_bytes))
        )
        .as_bytes(),
    );
    for (k, v) in vars {
        h.update(format!("var {}={}\n", escape(k), escape(v)).as_bytes());
    }
    let mut count = 0;
    for (index, root) in paths.iter().enumerate() {
        h.update(format!("path {index}\n").as_bytes());
        let meta = std::fs::symlink_metadata(root).map_err(|error| InputError {
            path: root.clone(),
            error,
        })?;
        let mut entries = Vec::new();
        if meta.is_dir() {
            walk(root, "", &mut entries)?;
        } else {
            let name = root
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            entries.push((name, root.clone()));
        }
        entries.sort_by(|a, b| a.0.cmp(&b.0));
        for (rel, path) in entries {
            count += 1;
            let meta = std::fs::symlink_metadata(&path).map_err(|error| InputError {
                path: path.clone(),
                error,
            })?;
            if meta.file_type().is_symlink() {
                let target = std::fs::read_link(&path).map_err(|error| InputError {
                    path: path.clone(),
                    error,
                })?;
                h.update(
                    format!(
                        "link {} -> {}\n",
                        escape(&rel),
                        escape(&target.to_string_lossy())
                    )
                    .as_bytes(),
                );
            } else {
                let bytes = read(&path)?;
                h.update(format!("file {} {}\n", escape(&rel), bytes.len()).as_bytes());
                h.update(&bytes);
                h.update(b"\n");
            }
        }
    }
    Ok(Inputs {
        digest: hex::encode(h.finalize()),
        files: count,
    })
}

fn read(path: &Path) -> Result<Vec<u8>, InputError> {
    std::fs::read(path).map_err(|error| InputError {
        path: path.to_path_buf(),
        error,
    })
}

/// Names may hold newlines or spaces: keep the stream unambiguous.
fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            ' ' => out.push_str("\\s"),
            '=' => out.push_str("\\e"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out
}

/// Regular files and symlinks under `dir`, with names relative to the root
/// (`/`-separated).
fn walk(dir: &Path, prefix: &str, out: &mut Vec<(String, PathBuf)>) -> Result<(), InputError> {
    let entries = std::fs::read_dir(dir).map_err(|error| InputError {
        path: dir.to_path_buf(),
        error,
    })?;
    for entry in entries {
        let entry = entry.map_err(|error| InputError {
            path: dir.to_path_buf(),
            error,
        })?;
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        let rel = if prefix.is_empty() {
            name
        } else {
            format!("{prefix}/{name}")
        };
        let file_type = entry.file_type().map_err(|error| InputError {
            path: path.clone(),
            error,
        })?;
        if file_type.is_dir() {
            walk(&path, &rel, out)?;
        } else if file_type.is_file() || file_type.is_symlink() {
            out.push((rel, path));
        }
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    /// A fresh empty directory under the system temp dir.
    pub(crate) fn scratch(name: &str) -> PathBuf {
        static N: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "capstan-packer-test-{}-{}-{name}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn tree(root: &Path, files: &[(&str, &str)]) {
        for (name, content) in files {
            let path = root.join(name);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, content).unwrap();
        }
    }

    #[test]
    fn same_content_same_digest_anywhere() {
        let (a, b) = (scratch("a"), scratch("b"));
        for root in [&a, &b] {
            tree(
                root,
                &[
                    ("t.json", "{}"),
                    ("files/x", "1"),
                    ("files/sub/y", "2"),
                    ("scripts/bake.sh", "echo"),
                ],
            );
        }
        let vars = vec![("base".to_string(), "debian-12".to_string())];
        let d = |r: &Path| {
            digest(
                &r.join("t.json"),
                &vars,
                &[r.join("files"), r.join("scripts")],
            )
        };
        let (da, db) = (d(&a).unwrap(), d(&b).unwrap());
        assert_eq!(da, db);
        assert_eq!(da.files, 3);
        assert_eq!(da.digest.len(), 64);
    }

    #[test]
    fn any_change_changes_the_digest() {
        let r = scratch("changes");
        tree(&r, &[("t.json", "{}"), ("files/x", "1"), ("files/y", "2")]);
        let vars = |v: &str| vec![("base".to_string(), v.to_string())];
        let d = |v: &str| {
            digest(&r.join("t.json"), &vars(v), &[r.join("files")])
                .unwrap()
                .digest
        };
        let first = d("a");
        assert_eq!(first, d("a"));
        assert_ne!(first, d("b"), "a variable");
        std::fs::write(r.join("files/x"), "changed").unwrap();
        let second = d("a");
        assert_ne!(first, second, "a file's content");
        std::fs::rename(r.join("files/y"), r.join("files/z")).unwrap();
        let third = d("a");
        assert_ne!(second, third, "a file's name");
        std::fs::write(r.join("files/new"), "").unwrap();
        let fourth = d("a");
        assert_ne!(third, fourth, "an empty new file");
        std::fs::write(r.join("t.json"), "{ }").unwrap();
        assert_ne!(fourth, d("a"), "the template");
        // Splitting differently between name and content is not a collision.
        let s = scratch("split");
        tree(&s, &[("t.json", ""), ("p/a", "b")]);
        let one = digest(&s.join("t.json"), &[], &[s.join("p")]).unwrap();
        std::fs::remove_file(s.join("p/a")).unwrap();
        tree(&s, &[("p/ab", "")]);
        assert_ne!(one, digest(&s.join("t.json"), &[], &[s.join("p")]).unwrap());
    }

    #[test]
    fn a_single_file_path_and_symlinks() {
        let r = scratch("single");
        tree(&r, &[("t.json", "{}"), ("dir/f", "x")]);
        let single = digest(&r.join("t.json"), &[], &[r.join("dir/f")]).unwrap();
        assert_eq!(single.files, 1);
        #[cfg(unix)]
        {
            // A link to a directory is hashed as a link: no loop.
            std::os::unix::fs::symlink(&r, r.join("dir/loop")).unwrap();
            let with_link = digest(&r.join("t.json"), &[], &[r.join("dir")]).unwrap();
            assert_eq!(with_link.files, 2);
        }
    }

    #[test]
    fn a_missing_path_is_an_error_naming_it() {
        let r = scratch("missing");
        tree(&r, &[("t.json", "{}")]);
        let e = digest(&r.join("t.json"), &[], &[r.join("nope")]).unwrap_err();
        assert!(e.to_string().contains("nope"), "{e}");
        let e = digest(&r.join("none.json"), &[], &[]).unwrap_err();
        assert!(e.to_string().contains("none.json"), "{e}");
    }
}
