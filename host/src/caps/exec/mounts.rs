//! What a stage's programs see of the file system, in a mount namespace of
//! their own: at `/dev/shm` the `shm` subdirectory of the stage's private
//! temporary directory (POSIX semaphores and shared memory:
//! Ansible's workers need them), and an empty directory over every other
//! top-level directory but the system's (`/home`, `/root`, `/tmp`, `/run`,
//! `/var`, `/srv`, `/opt`, …); the private directory is at its own path
//! (`TMPDIR`). Landlock already refuses to open anything there; the
//! covers hide the Unix sockets too (an SSH agent's, tmux's, a database's,
//! Docker's, systemd's), which Landlock before ABI 9 does not keep a
//! program from connecting to.
//!
//! Directories the programs may use that lie under a hidden location (a
//! pipeline checked out in `/tmp`) are mounted back at their paths, from
//! the handles their rules were made from, never by path. Skeleton
//! directories for those mounts are made once, before any program of the
//! stage ran. Everything the child needs is formatted before `fork`.

use std::ffi::{CStr, CString};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use crate::caps::fs::fd_path;

/// Top-level directories programs see as they are: the system locations
/// Landlock rules cover (`/usr`, `/etc`) and the kernel's (`/proc`, `/sys`,
/// `/dev`). Every other one is covered by an empty directory.
const KEPT: &[&str] = &["usr", "etc", "proc", "sys", "dev"];

/// The mounts of one stage's programs.
#[derive(Debug, Default)]
pub struct Mounts {
    /// What is mounted where, in order: first the covers (an empty
    /// directory, the private `/tmp` and `/dev/shm`), then the handles
    /// mounted back under them, parents first.
    mounts: Vec<(OwnedFd, CString)>,
    /// Where covers are: a working directory under one is entered again by
    /// its path after the mounts (through `..` from a directory entered
    /// before, the hidden entries would still be reachable).
    covered: Vec<PathBuf>,
}

/// One program's copy of [`Mounts`]: a detached copy of each source's
/// mount (`open_tree`), made before `fork`. A bind mount from a path or
/// descriptor of the host's namespace is refused in the child's; a detached
/// copy can be attached there, once.
#[derive(Debug)]
pub struct MountPlan {
    /// Empty when the copies could not be made (no `CAP_SYS_ADMIN`, as
    /// when not root): the programs see the host's directories (the rules
    /// still apply to every file).
    trees: Vec<OwnedFd>,
}

impl MountPlan {
    /// Whether there is anything to mount.
    pub fn any(&self) -> bool {
        !self.trees.is_empty()
    }
}

impl Mounts {
    /// Covers for `/dev/shm` (from `tmp`, the stage's private temporary
    /// directory) and every top-level directory but [`KEPT`] (from empty
    /// directories made in `empty`), and `exposed` (paths the rules let
    /// programs use, each with its handle) mounted back where covered.
    ///
    /// `empty` must lie outside every rule: Landlock grants a file the
    /// rights of every directory above it, mount points included, so what
    /// is mounted under a writable cover would be writable.
    pub fn prepare(
        tmp: &Path,
        empty: &Path,
        exposed: Vec<(PathBuf, OwnedFd)>,
    ) -> io::Result<Mounts> {
        let open = |p: &Path| std::fs::File::open(p).map(OwnedFd::from);
        let mut covers: Vec<(PathBuf, PathBuf)> = Vec::new();
        let shm = tmp.join("shm");
        std::fs::create_dir(&shm)?;
        if Path::new("/dev/shm").is_dir() {
            covers.push(("/dev/shm".into(), shm));
        }
        let mut tops: Vec<PathBuf> = std::fs::read_dir("/")?
            .flatten()
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .filter(|e| !KEPT.iter().any(|k| e.file_name() == *k))
            .map(|e| e.path())
            .collect();
        tops.sort();
        for top in tops {
            let source = empty.join(top.file_name().expect("a top-level entry"));
            std::fs::create_dir(&source)?;
            covers.push((top, source));
        }
        let mut mounts = Mounts::default();
        for (target, source) in &covers {
            mounts.mounts.push((open(source)?, c(target)?));
            mounts.covered.push(target.clone());
        }
        let mut exposed = exposed;
        // Name resolution where `/etc/resolv.conf` leads into `/run`
        // (systemd-resolved): that one file is mounted back.
        if let Ok(resolv) = Path::new("/etc/resolv.conf").canonicalize()
            && let Ok(file) = std::fs::File::open(&resolv)
        {
            exposed.push((resolv, file.into()));
        }
        exposed.sort_by_key(|(path, _)| path.components().count());
        for (path, fd) in exposed {
            let Some((target, source)) = covers
                .iter()
                .find(|(target, _)| path.starts_with(target) && &path != target)
            else {
                continue;
            };
            let skeleton = source.join(path.strip_prefix(target).expect("checked above"));
            if std::fs::metadata(fd_path(&fd))?.is_dir() {
                std::fs::create_dir_all(&skeleton)?;
            } else {
                if let Some(parent) = skeleton.parent() {
                    std::fs::create_dir_all(parent)?;
                }
                std::fs::File::create(&skeleton)?;
            }
            mounts.mounts.push((fd, c(&path)?));
        }
        Ok(mounts)
    }

    /// `cwd` as the child must enter it again after the mounts, when it
    /// lies under a cover.
    pub fn reenter(&self, cwd: &Path) -> Option<CString> {
        self.covered
            .iter()
            .any(|cover| cwd.starts_with(cover))
            .then(|| c(cwd).ok())
            .flatten()
    }

    /// The detached copies one program mounts (in the host, before
    /// `fork`).
    pub fn plan(&self) -> MountPlan {
        let mut trees = Vec::new();
        for (fd, _) in &self.mounts {
            let tree = unsafe {
                libc::syscall(
                    libc::SYS_open_tree,
                    fd.as_raw_fd(),
                    c"".as_ptr(),
                    OPEN_TREE_CLONE | libc::O_CLOEXEC as u32 | libc::AT_EMPTY_PATH as u32,
                )
            };
            if tree < 0 {
                return MountPlan { trees: Vec::new() };
            }
            // SAFETY: a new descriptor, owned from here.
            trees.push(unsafe { OwnedFd::from_raw_fd(tree as i32) });
        }
        MountPlan { trees }
    }

    /// Make the mounts (in the child, in its new mount namespace), then
    /// enter `cwd` again. System calls only.
    pub fn apply(&self, plan: &MountPlan, cwd: Option<&CStr>) -> io::Result<()> {
        if plan.trees.is_empty() {
            return Ok(());
        }
        let none = std::ptr::null::<libc::c_char>();
        // Private propagation first, so nothing reaches the host's mounts.
        check(unsafe {
            libc::mount(
                none,
                c"/".as_ptr(),
                none,
                libc::MS_REC | libc::MS_PRIVATE,
                std::ptr::null(),
            )
        })?;
        for (tree, (_, target)) in plan.trees.iter().zip(&self.mounts) {
            check(unsafe {
                libc::syscall(
                    libc::SYS_move_mount,
                    tree.as_raw_fd(),
                    c"".as_ptr(),
                    libc::AT_FDCWD,
                    target.as_ptr(),
                    MOVE_MOUNT_F_EMPTY_PATH,
                ) as libc::c_int
            })?;
        }
        if let Some(cwd) = cwd {
            check(unsafe { libc::chdir(cwd.as_ptr()) })?;
        }
        Ok(())
    }
}

const OPEN_TREE_CLONE: u32 = 1;
const MOVE_MOUNT_F_EMPTY_PATH: u32 = 0x4;

fn c(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_encoded_bytes()).map_err(io::Error::other)
}

/// A system call's result as an `io::Result` (see [`super::sandbox`]).
fn check(result: libc::c_int) -> io::Result<()> {
    super::sandbox::check(result.into()).map(drop)
}
