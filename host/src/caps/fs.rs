//! The `read` and `write` capabilities: granted directories, mapped into the
//! plugin at the same absolute paths the host sees (WASI preopens enforce
//! them, with `..` and symlinks kept inside by cap-std), and the containment
//! check for paths the host uses on a plugin's behalf (an exec's cwd).

use std::path::{Path, PathBuf};

/// Whether `path` lies inside one of `dirs`. Both sides are canonicalized,
/// so symlinks and `..` are resolved first, and compared by components:
/// `/srv/app` does not contain `/srv/app-evil`.
pub fn inside(dirs: &[PathBuf], path: &Path) -> Option<PathBuf> {
    let path = path.canonicalize().ok()?;
    dirs.iter()
        .any(|d| d.canonicalize().is_ok_and(|d| path.starts_with(d)))
        .then_some(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn containment() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path().canonicalize().unwrap();
        for d in ["app", "app-evil", "app/sub", "other"] {
            std::fs::create_dir_all(r.join(d)).unwrap();
        }
        std::os::unix::fs::symlink(r.join("other"), r.join("app/link-out")).unwrap();
        let grants = vec![r.join("app")];
        let table = [
            (r.join("app"), true),
            (r.join("app/sub"), true),
            (r.join("app/sub/.."), true),
            (r.join("app-evil"), false),
            (r.join("app/../other"), false),
            (r.join("app/link-out"), false),
            (r.join("app/missing"), false),
            (PathBuf::from("/"), false),
        ];
        for (path, expected) in table {
            assert_eq!(
                inside(&grants, &path).is_some(),
                expected,
                "{}",
                path.display()
            );
        }
    }
}
