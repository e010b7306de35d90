//! The `read` and `write` capabilities: granted directories, opened **once**
//! and used as the same object from then on.
//!
//! A grant is checked and used through one handle ([`GrantDir`]): the plugin's
//! preopen is made from it (`/proc/self/fd/N` names the open directory, not a
//! path that a concurrent stage could re-point), an exec's working directory
//! is opened beneath it with cap-std (symlinks and `..` stay inside) and
//! entered with `fchdir`, and every overlap rule (grants vs Capstan's state,
//! the run store, plugin and program files) compares device + inode, walking
//! parents from the handle, never path strings.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

/// What a file system object is, whatever path leads to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Identity {
    pub dev: u64,
    pub ino: u64,
}

impl Identity {
    pub fn of(meta: &std::fs::Metadata) -> Identity {
        Identity {
            dev: meta.dev(),
            ino: meta.ino(),
        }
    }
}

/// A granted directory, open.
#[derive(Debug, Clone)]
pub struct GrantDir {
    /// The path the pipeline named (canonical when it was validated); the
    /// plugin sees the directory at this path, and so do its children.
    pub path: PathBuf,
    dir: Arc<File>,
    pub id: Identity,
}

impl GrantDir {
    /// Open the directory at `path` (canonical, as validated). Refused when
    /// the path no longer leads where it did: a component turned into a
    /// symlink since validation means someone re-pointed it.
    pub fn open(path: &Path) -> io::Result<GrantDir> {
        let dir = OpenOptions::new()
            .read(true)
            .custom_flags(libc_o_directory())
            .open(path)?;
        let grant = Self::from_file(path, dir)?;
        let actual = grant.actual_path()?;
        if actual != path {
            return Err(io::Error::other(format!(
                "{} now leads to {} (a symlink or a moved directory since the pipeline was \
                 checked); refusing to use it",
                path.display(),
                actual.display()
            )));
        }
        Ok(grant)
    }

    fn from_file(path: &Path, dir: File) -> io::Result<GrantDir> {
        let meta = dir.metadata()?;
        if !meta.is_dir() {
            return Err(io::Error::other(format!(
                "{} is not a directory",
                path.display()
            )));
        }
        Ok(GrantDir {
            path: path.to_path_buf(),
            id: Identity::of(&meta),
            dir: Arc::new(dir),
        })
    }

    /// A path that names this open directory (for APIs that take a path,
    /// such as WASI preopens): the kernel resolves it to the object, not to
    /// whatever `self.path` leads to now.
    pub fn fd_path(&self) -> PathBuf {
        fd_path(&*self.dir)
    }

    /// Where the open directory is now, as the kernel sees it.
    fn actual_path(&self) -> io::Result<PathBuf> {
        std::fs::read_link(self.fd_path())
    }

    /// The identities of this directory and of each of its parents, up to
    /// the root, walking `..` from the handle.
    pub fn lineage(&self) -> io::Result<Vec<Identity>> {
        lineage_of(self.dir.try_clone()?)
    }

    /// The open directory, for rules that bind it (Landlock).
    pub fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        use std::os::fd::AsFd;
        self.dir.as_fd()
    }

    /// Open `relative` beneath this directory: `..` and symlinks are
    /// resolved but never leave it (cap-std).
    pub fn open_dir_beneath(&self, relative: &Path) -> io::Result<OwnedFd> {
        let base = cap_std::fs::Dir::from_std_file(self.dir.try_clone()?);
        if relative.as_os_str().is_empty() {
            return Ok(base.into_std_file().into());
        }
        let sub = base.open_dir(relative)?;
        Ok(sub.into_std_file().into())
    }
}

/// The path that names the open file `fd` in this process (and in a child
/// that inherited it, until exec): the kernel resolves it to the object,
/// never by a path someone could re-point.
pub fn fd_path(fd: &impl AsRawFd) -> PathBuf {
    PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()))
}

/// `O_DIRECTORY`, so that opening a grant fails on anything but a directory.
fn libc_o_directory() -> i32 {
    nix::fcntl::OFlag::O_DIRECTORY.bits()
}

/// Identities from `dir` up to the root.
/// Identities of the open directory `dir` and of each of its parents.
pub fn lineage_of(dir: File) -> io::Result<Vec<Identity>> {
    let mut out = vec![Identity::of(&dir.metadata()?)];
    let mut current: OwnedFd = dir.into();
    loop {
        let parent = nix::fcntl::openat(
            &current,
            "..",
            nix::fcntl::OFlag::O_RDONLY
                | nix::fcntl::OFlag::O_DIRECTORY
                | nix::fcntl::OFlag::O_CLOEXEC,
            nix::sys::stat::Mode::empty(),
        )
        .map_err(io::Error::from)?;
        let id = Identity::of(&File::from(parent.try_clone()?).metadata()?);
        if out.last() == Some(&id) {
            return Ok(out); // `..` of the root is the root
        }
        out.push(id);
        current = parent;
    }
}

/// Identities of the nearest existing parent of `path` and of its parents.
fn existing_lineage(path: &Path) -> io::Result<Vec<Identity>> {
    let mut at = path.parent();
    while let Some(dir) = at {
        let dir = if dir.as_os_str().is_empty() {
            Path::new(".")
        } else {
            dir
        };
        if let Ok(file) = File::open(dir) {
            return lineage_of(file);
        }
        at = dir.parent();
    }
    Ok(Vec::new())
}

/// Something no grant may reach: Capstan's state dir, the run store, a
/// plugin's component, a granted program. Located once, by identity.
#[derive(Debug, Clone)]
pub struct Protected {
    /// What it is, for messages ("Capstan's state dir").
    pub what: String,
    pub path: PathBuf,
    /// How to move it out of a grant's way, when not with `--state-dir` /
    /// `--store`.
    pub moved_by: Option<String>,
    /// Its own identity, when it exists.
    itself: Option<Identity>,
    /// Its parents' identities (from the nearest existing one up), so that a
    /// grant of any of them is seen even before the thing is created.
    parents: Vec<Identity>,
}

impl Protected {
    /// Locate `path` (which need not exist yet). When it is reached through
    /// symlinks, the parents of both the link and its target count: a
    /// grant over either could change what the path leads to.
    pub fn locate(path: &Path, what: impl Into<String>) -> io::Result<Protected> {
        let what = what.into();
        let itself = std::fs::metadata(path).ok().map(|m| Identity::of(&m));
        let mut parents = existing_lineage(path)?;
        if let Ok(real) = path.canonicalize()
            && real != path
        {
            for id in existing_lineage(&real)? {
                if !parents.contains(&id) {
                    parents.push(id);
                }
            }
        }
        Ok(Protected {
            what,
            path: path.to_path_buf(),
            moved_by: None,
            itself,
            parents,
        })
    }

    /// Locate a file that is already open (a program that was hashed, a
    /// plugin that was read): its identity comes from the handle.
    pub fn of_open_file(
        path: &Path,
        file: &File,
        what: impl Into<String>,
    ) -> io::Result<Protected> {
        let mut p = Protected::locate(path, what)?;
        p.itself = Some(Identity::of(&file.metadata()?));
        Ok(p)
    }

    /// Whether a grant whose [`GrantDir::lineage`] is `lineage` (the grant
    /// first, then its parents) reaches this (the grant is it, or one of
    /// its parents) or lies inside it.
    pub fn overlaps(&self, lineage: &[Identity]) -> bool {
        let Some(grant) = lineage.first() else {
            return false;
        };
        self.parents.contains(grant) || self.itself.is_some_and(|id| lineage.contains(&id))
    }
}

/// A working directory for a child, resolved beneath one of `dirs`: the
/// grant whose path is the longest lexical prefix of `cwd` (compared by
/// components: `/srv/app` does not contain `/srv/app-evil`), then opened
/// beneath that grant's handle. `None` when no grant contains it.
pub fn resolve_beneath<'a>(dirs: &'a [GrantDir], cwd: &Path) -> Option<(&'a GrantDir, PathBuf)> {
    if cwd.components().any(|c| matches!(c, Component::ParentDir)) {
        return None; // `..` is resolved beneath the grant, never lexically
    }
    dirs.iter()
        .filter_map(|d| Some((d, cwd.strip_prefix(&d.path).ok()?.to_path_buf())))
        .max_by_key(|(d, _)| d.path.components().count())
}

/// `path` made absolute with every symlink along it resolved, dangling
/// ones included (a symlink to a directory that does not exist yet leads
/// where the directory *would* be created); the part that does not exist is
/// appended as written. Capstan's state dir and store are resolved this way
/// once, at start, and used by that path from then on.
pub fn resolve_existing(path: &Path) -> io::Result<PathBuf> {
    let mut pending: Vec<std::ffi::OsString> = std::path::absolute(path)?
        .components()
        .rev()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n.to_os_string()),
            Component::ParentDir => Some("..".into()),
            _ => None,
        })
        .collect();
    let mut out = PathBuf::from("/");
    let mut hops = 0;
    while let Some(part) = pending.pop() {
        if part == ".." {
            out.pop();
            continue;
        }
        let next = out.join(&part);
        match std::fs::symlink_metadata(&next) {
            Ok(m) if m.file_type().is_symlink() => {
                hops += 1;
                if hops > 40 {
                    return Err(io::Error::other(format!(
                        "too many symlinks resolving {}",
                        path.display()
                    )));
                }
                let target = std::fs::read_link(&next)?;
                if target.is_absolute() {
                    out = PathBuf::from("/");
                }
                pending.extend(target.components().rev().filter_map(|c| match c {
                    Component::Normal(n) => Some(n.to_os_string()),
                    Component::ParentDir => Some("..".into()),
                    _ => None,
                }));
            }
            _ => out = next,
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree() -> (tempfile::TempDir, PathBuf) {
        let root = tempfile::tempdir().unwrap();
        let r = root.path().canonicalize().unwrap();
        for d in ["app", "app-evil", "app/sub", "other", "project/.capstan"] {
            std::fs::create_dir_all(r.join(d)).unwrap();
        }
        std::os::unix::fs::symlink(r.join("other"), r.join("app/link-out")).unwrap();
        (root, r)
    }

    #[test]
    fn cwd_is_resolved_beneath_the_longest_grant_by_components() {
        let (_keep, r) = tree();
        let grants = vec![
            GrantDir::open(&r.join("app")).unwrap(),
            GrantDir::open(&r.join("app/sub")).unwrap(),
        ];
        let table: [(PathBuf, Option<&str>); 6] = [
            (r.join("app"), Some("")),
            (r.join("app/sub"), Some("")),
            (r.join("app/sub/x"), Some("x")),
            (r.join("app-evil"), None),
            (r.join("app/../other"), None),
            (PathBuf::from("/"), None),
        ];
        for (cwd, expected) in table {
            let got = resolve_beneath(&grants, &cwd).map(|(_, rel)| rel);
            assert_eq!(got.as_deref(), expected.map(Path::new), "{}", cwd.display());
        }
        // A symlink inside a grant that points out of it cannot be entered.
        let (grant, rel) = resolve_beneath(&grants, &r.join("app/link-out")).unwrap();
        assert!(grant.open_dir_beneath(&rel).is_err());
        let (grant, rel) = resolve_beneath(&grants, &r.join("app/sub")).unwrap();
        assert!(grant.open_dir_beneath(&rel).is_ok());
    }

    #[test]
    fn a_grant_is_refused_when_its_path_was_re_pointed() {
        let (_keep, r) = tree();
        std::fs::remove_dir(r.join("app/sub")).unwrap();
        std::os::unix::fs::symlink(r.join("project/.capstan"), r.join("app/sub")).unwrap();
        let err = GrantDir::open(&r.join("app/sub")).unwrap_err();
        assert!(err.to_string().contains("now leads to"), "{err}");
    }

    #[test]
    fn overlap_is_by_identity_both_ways_and_before_creation() {
        let (_keep, r) = tree();
        let state = Protected::locate(&r.join("project/.capstan"), "state").unwrap();
        let not_yet = Protected::locate(&r.join("project/new/capstan.db"), "store").unwrap();
        let open = |p: &str| GrantDir::open(&r.join(p)).unwrap();
        assert!(state.overlaps(&open("project").lineage().unwrap()));
        assert!(state.overlaps(&open("project/.capstan").lineage().unwrap()));
        assert!(!state.overlaps(&open("app").lineage().unwrap()));
        assert!(not_yet.overlaps(&open("project").lineage().unwrap()));
        assert!(!not_yet.overlaps(&open("project/.capstan").lineage().unwrap()));
        std::fs::create_dir(r.join("project/.capstan/runs")).unwrap();
        assert!(state.overlaps(&open("project/.capstan/runs").lineage().unwrap()));
        // A plugin reached through a symlink: a grant over the link's
        // directory or the target's reaches it.
        std::fs::write(r.join("other/plugin.wasm"), "x").unwrap();
        std::os::unix::fs::symlink(r.join("other/plugin.wasm"), r.join("app/sub/plugin.wasm"))
            .unwrap();
        let plugin = Protected::locate(&r.join("app/sub/plugin.wasm"), "plugin").unwrap();
        assert!(plugin.overlaps(&open("other").lineage().unwrap()));
        assert!(plugin.overlaps(&open("app/sub").lineage().unwrap()));
        assert!(!plugin.overlaps(&open("app-evil").lineage().unwrap()));
        // Through a symlink to the state dir: the same object.
        std::os::unix::fs::symlink(r.join("project"), r.join("alias")).unwrap();
        let via_link = Protected::locate(&r.join("alias/.capstan"), "state").unwrap();
        assert!(via_link.overlaps(&open("project/.capstan").lineage().unwrap()));
        assert!(via_link.overlaps(&open("project").lineage().unwrap()));
    }

    #[test]
    fn resolve_existing_follows_every_link_even_dangling_ones() {
        let (_keep, r) = tree();
        std::os::unix::fs::symlink(r.join("project"), r.join("alias")).unwrap();
        assert_eq!(
            resolve_existing(&r.join("alias/.capstan/not/yet")).unwrap(),
            r.join("project/.capstan/not/yet")
        );
        // A first run through a symlink to a directory not created yet.
        std::os::unix::fs::symlink("app/state", r.join("dangling")).unwrap();
        assert_eq!(
            resolve_existing(&r.join("dangling/runs")).unwrap(),
            r.join("app/state/runs")
        );
        assert_eq!(
            resolve_existing(&r.join("app/sub/../../other")).unwrap(),
            r.join("other")
        );
    }
}
