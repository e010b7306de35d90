//! What a stage's programs see of the file system, in a mount namespace of
//! their own: at `/dev/shm` the `shm` subdirectory of the stage's private
//! temporary directory (POSIX semaphores and shared memory:
//! Ansible's workers need them), and an empty, read-only tmpfs over every
//! other top-level directory but the system's (`/home`, `/root`, `/tmp`,
//! `/run`, `/var`, `/srv`, `/opt`, …); the private directory is at its own
//! path (`TMPDIR`). Landlock already refuses to open anything there; the
//! covers hide the Unix sockets too (an SSH agent's, tmux's, a database's,
//! Docker's, systemd's), which Landlock before ABI 9 does not keep a
//! program from connecting to.
//!
//! Directories the programs may use that lie under a hidden location (a
//! pipeline checked out in `/tmp`) are mounted back at their paths, from
//! the handles their rules were made from, never by path. The covers and
//! the mount points in them are made by the child in its own namespace:
//! the host makes and removes nothing per program. (Removing mount points
//! in the host, right after a program's namespace died, waited for the
//! kernel to tear that namespace's mounts down: an RCU grace period per
//! directory, most of a short program's cost.) Everything the child needs
//! is formatted before `fork`.

use std::collections::HashSet;
use std::ffi::{CStr, CString};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Component, Path, PathBuf};

use crate::caps::fs::fd_path;

/// Top-level directories programs see as they are: the system locations
/// Landlock rules cover (`/usr`, `/etc`) and the kernel's (`/proc`, `/sys`,
/// `/dev`). Every other one is covered by an empty tmpfs.
const KEPT: &[&str] = &["usr", "etc", "proc", "sys", "dev"];

/// The mounts of one stage's programs.
#[derive(Debug, Default)]
pub struct Mounts {
    /// The top-level directories covered, each by an empty tmpfs of the
    /// child's (no Landlock rule reaches its files: nothing in it can be
    /// opened, and it is read-only besides).
    covers: Vec<CString>,
    /// Mount points made in the covers before anything is mounted back,
    /// parents first: `(path, whether a directory)`.
    skeleton: Vec<(CString, bool)>,
    /// What is mounted where, in order: the private `/dev/shm`, then the
    /// handles mounted back under the covers, parents first.
    binds: Vec<(OwnedFd, CString)>,
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
    /// `None` when the copies could not be made (no `CAP_SYS_ADMIN`, as
    /// when not root): the programs see the host's directories (the rules
    /// still apply to every file).
    trees: Option<Vec<OwnedFd>>,
}

impl MountPlan {
    /// Whether there is anything to mount.
    pub fn any(&self) -> bool {
        self.trees.is_some()
    }
}

impl Mounts {
    /// A cover for `/dev/shm` (from `tmp`, the stage's private temporary
    /// directory) and for every top-level directory but [`KEPT`], and
    /// `exposed` (paths the rules let programs use, each with its handle)
    /// mounted back where covered.
    pub fn prepare(tmp: &Path, exposed: Vec<(PathBuf, OwnedFd)>) -> io::Result<Mounts> {
        let mut mounts = Mounts::default();
        let shm = tmp.join("shm");
        std::fs::create_dir(&shm)?;
        if Path::new("/dev/shm").is_dir() {
            let shm = std::fs::File::open(&shm)?;
            mounts.binds.push((shm.into(), c"/dev/shm".into()));
        }
        let mut tops: Vec<PathBuf> = std::fs::read_dir("/")?
            .flatten()
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .filter(|e| !KEPT.iter().any(|k| e.file_name() == *k))
            .map(|e| e.path())
            .collect();
        tops.sort();
        for top in tops {
            mounts.covers.push(c(&top)?);
            mounts.covered.push(top);
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
        let mut made: HashSet<PathBuf> = HashSet::new();
        for (path, fd) in exposed {
            let Some(cover) = mounts
                .covered
                .iter()
                .find(|cover| path.starts_with(cover) && &path != *cover)
            else {
                continue;
            };
            let is_dir = std::fs::metadata(fd_path(&fd))?.is_dir();
            let below: Vec<Component> = path
                .strip_prefix(cover)
                .expect("checked above")
                .components()
                .collect();
            if !below.iter().all(|c| matches!(c, Component::Normal(_))) {
                return Err(io::Error::other(format!(
                    "{} is not a plain absolute path",
                    path.display()
                )));
            }
            let mut at = cover.clone();
            for (i, part) in below.iter().enumerate() {
                at.push(part);
                if made.insert(at.clone()) {
                    let dir = i + 1 < below.len() || is_dir;
                    mounts.skeleton.push((c(&at)?, dir));
                }
            }
            mounts.binds.push((fd, c(&path)?));
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
        for (fd, _) in &self.binds {
            let tree = unsafe {
                libc::syscall(
                    libc::SYS_open_tree,
                    fd.as_raw_fd(),
                    c"".as_ptr(),
                    OPEN_TREE_CLONE | libc::O_CLOEXEC as u32 | libc::AT_EMPTY_PATH as u32,
                )
            };
            if tree < 0 {
                return MountPlan { trees: None };
            }
            // SAFETY: a new descriptor, owned from here.
            trees.push(unsafe { OwnedFd::from_raw_fd(tree as i32) });
        }
        MountPlan { trees: Some(trees) }
    }

    /// Make the mounts (in the child, in its new mount namespace), then
    /// enter `cwd` again. System calls only.
    pub fn apply(&self, plan: &MountPlan, cwd: Option<&CStr>) -> io::Result<()> {
        let Some(trees) = &plan.trees else {
            return Ok(());
        };
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
        let flags = libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;
        for cover in &self.covers {
            check(unsafe {
                libc::mount(
                    c"tmpfs".as_ptr(),
                    cover.as_ptr(),
                    c"tmpfs".as_ptr(),
                    flags,
                    c"mode=0755,size=64k".as_ptr().cast(),
                )
            })?;
        }
        // The mount points, in the fresh tmpfs only: nothing is mounted
        // back yet, and nothing but these was made there.
        for (path, dir) in &self.skeleton {
            if *dir {
                check(unsafe { libc::mkdir(path.as_ptr(), 0o755) })?;
            } else {
                let fd = unsafe {
                    libc::open(
                        path.as_ptr(),
                        libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_CLOEXEC,
                        0o644,
                    )
                };
                check(fd)?;
                check(unsafe { libc::close(fd) })?;
            }
        }
        for cover in &self.covers {
            check(unsafe {
                libc::mount(
                    none,
                    cover.as_ptr(),
                    none,
                    libc::MS_REMOUNT | libc::MS_RDONLY | flags,
                    std::ptr::null(),
                )
            })?;
        }
        for (tree, (_, target)) in trees.iter().zip(&self.binds) {
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
