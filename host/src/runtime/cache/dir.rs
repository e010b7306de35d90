//! A cache directory the host owns, used only through handles: opened once
//! without following a symlink, checked (owned by this user, writable by
//! nobody else), and every entry in it opened, written and renamed relative
//! to that handle, so that a path re-pointed afterwards leads nowhere else.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag, RenameFlags, openat, renameat, renameat2};
use nix::sys::stat::{Mode, mkdirat};
use nix::unistd::{UnlinkatFlags, linkat, unlinkat};

/// Why a cache directory, or the key in it, is not used.
#[derive(Debug, thiserror::Error)]
pub enum DirError {
    #[error("cannot open {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "{path} is a symbolic link; Capstan does not follow one to its cache (give the real directory)"
    )]
    Symlink { path: PathBuf },
    #[error("{path} is not a directory")]
    NotDir { path: PathBuf },
    #[error(
        "{path} is owned by uid {owner}, not by this user (uid {uid}); remove it, or give a directory of your own"
    )]
    NotOwned { path: PathBuf, owner: u32, uid: u32 },
    #[error(
        "{path} is writable by its group or by everyone (mode {mode:o}), who could swap what Capstan trusts in it; `chmod 700 {path}`"
    )]
    Writable { path: PathBuf, mode: u32 },
    #[error(
        "{path} is not a regular file (a symbolic link, a FIFO, a directory...); remove it (a new key is made)"
    )]
    NotFile { path: PathBuf },
    #[error(
        "{path} can be read or written by others (mode {mode:o}); remove it (a new key is made) or `chmod 600 {path}`"
    )]
    KeyExposed { path: PathBuf, mode: u32 },
    #[error("{path} is not a key of {KEY_LEN} bytes; remove it (a new key is made)")]
    KeyLength { path: PathBuf },
    #[error(
        "{path} has {links} names (hard links): another name may be within others' reach; remove it (a new key is made)"
    )]
    KeyLinked { path: PathBuf, links: u64 },
}

pub const KEY_LEN: usize = 32;

/// An open, checked cache directory.
pub struct PrivateDir {
    pub path: PathBuf,
    fd: OwnedFd,
}

fn io(path: &Path) -> impl FnOnce(Errno) -> DirError + '_ {
    move |e| DirError::Io {
        path: path.to_path_buf(),
        source: e.into(),
    }
}

/// No symlink followed, no blocking on a FIFO planted as an entry.
fn read_flags() -> OFlag {
    OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC | OFlag::O_NONBLOCK
}

impl PrivateDir {
    /// Open the directory `path` (created, mode 0700, when missing; its
    /// parents with the usual mode), refusing a symlink, a directory of
    /// another user and one that others may write.
    pub fn open(path: &Path) -> Result<PrivateDir, DirError> {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|source| DirError::Io {
                path: parent.to_path_buf(),
                source,
            })?;
        }
        let cwd = nix::fcntl::AT_FDCWD;
        Self::open_at(cwd, path, path.to_path_buf())
    }

    /// The subdirectory `name` of this one, opened and checked alike.
    pub fn subdir(&self, name: &str) -> Result<PrivateDir, DirError> {
        Self::open_at(self.fd.as_fd(), Path::new(name), self.path.join(name))
    }

    fn open_at(at: impl AsFd, rel: &Path, path: PathBuf) -> Result<PrivateDir, DirError> {
        match mkdirat(at.as_fd(), rel, Mode::S_IRWXU) {
            Ok(()) | Err(Errno::EEXIST) => {}
            Err(e) => return Err(io(&path)(e)),
        }
        let flags = OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        let fd =
            openat(at.as_fd(), rel, flags, Mode::empty()).map_err(
                |e| match nix::sys::stat::fstatat(at.as_fd(), rel, AtFlags::AT_SYMLINK_NOFOLLOW) {
                    Ok(st) if st.st_mode & libc::S_IFMT == libc::S_IFLNK => {
                        DirError::Symlink { path: path.clone() }
                    }
                    Ok(_) if e == Errno::ENOTDIR => DirError::NotDir { path: path.clone() },
                    _ => io(&path)(e),
                },
            )?;
        let meta = File::from(fd.try_clone().map_err(|source| DirError::Io {
            path: path.clone(),
            source,
        })?)
        .metadata()
        .map_err(|source| DirError::Io {
            path: path.clone(),
            source,
        })?;
        owned_by_this_user(&path, &meta)?;
        if meta.mode() & 0o022 != 0 {
            return Err(DirError::Writable {
                path,
                mode: meta.mode() & 0o7777,
            });
        }
        Ok(PrivateDir { path, fd })
    }

    /// The regular file `name`, when there is one (never through a
    /// symlink).
    pub fn open_file(&self, name: &str) -> std::io::Result<File> {
        let file = File::from(openat(self.fd.as_fd(), name, read_flags(), Mode::empty())?);
        if !file.metadata()?.is_file() {
            return Err(std::io::Error::other("not a regular file"));
        }
        Ok(file)
    }

    /// Write `name` whole: through a new temporary file (mode 0600) renamed
    /// over it, so a concurrent reader sees the old entry or the new one,
    /// never half of one; two hosts writing at once each rename a whole
    /// file, and the last one stays.
    pub fn write_atomically(&self, name: &str, parts: &[&[u8]]) -> std::io::Result<()> {
        let tmp = self.write_new(name, parts, false)?;
        let renamed = renameat(self.fd.as_fd(), tmp.as_str(), self.fd.as_fd(), name);
        if renamed.is_err() {
            let _ = unlinkat(self.fd.as_fd(), tmp.as_str(), UnlinkatFlags::NoRemoveDir);
        }
        Ok(renamed?)
    }

    /// A new file with `parts` under a temporary name, returned.
    fn write_new(&self, name: &str, parts: &[&[u8]], sync: bool) -> std::io::Result<String> {
        let tmp = format!(
            ".{name}.{}.{:016x}.tmp",
            std::process::id(),
            fastrand::u64(..)
        );
        let flags =
            OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        let mode = Mode::S_IRUSR | Mode::S_IWUSR;
        let mut file = File::from(openat(self.fd.as_fd(), tmp.as_str(), flags, mode)?);
        let written = parts
            .iter()
            .try_for_each(|part| file.write_all(part))
            .and_then(|()| if sync { file.sync_all() } else { Ok(()) });
        if let Err(e) = written {
            let _ = unlinkat(self.fd.as_fd(), tmp.as_str(), UnlinkatFlags::NoRemoveDir);
            return Err(e);
        }
        Ok(tmp)
    }

    /// The key kept in `name` (mode 0600, this user's, its only name),
    /// created on first use and published whole by a rename that replaces
    /// nothing, so that two hosts starting at once agree on one key.
    pub fn key(&self, name: &str) -> Result<[u8; KEY_LEN], DirError> {
        let path = self.path.join(name);
        let io = |source: std::io::Error| DirError::Io {
            path: path.clone(),
            source,
        };
        match self.read_key(name) {
            Err(DirError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {}
            read => return read,
        }
        let mut key = [0u8; KEY_LEN];
        File::open("/dev/urandom")
            .and_then(|mut r| r.read_exact(&mut key))
            .map_err(io)?;
        let tmp = self.write_new(name, &[&key], true).map_err(io)?;
        let (dir, tmp) = (self.fd.as_fd(), tmp.as_str());
        let published = match renameat2(dir, tmp, dir, name, RenameFlags::RENAME_NOREPLACE) {
            // A file system without it: a hard link, which for an instant
            // gives the key two names (a host reading it then refuses it).
            Err(Errno::EINVAL) => linkat(dir, tmp, dir, name, AtFlags::empty()),
            renamed => renamed,
        };
        let _ = unlinkat(dir, tmp, UnlinkatFlags::NoRemoveDir);
        match published {
            Ok(()) => Ok(key),
            Err(Errno::EEXIST) => self.read_key(name),
            Err(e) => Err(io(e.into())),
        }
    }

    fn read_key(&self, name: &str) -> Result<[u8; KEY_LEN], DirError> {
        let path = self.path.join(name);
        let io = |source: std::io::Error| DirError::Io {
            path: path.clone(),
            source,
        };
        let mut file = File::from(
            openat(self.fd.as_fd(), name, read_flags(), Mode::empty()).map_err(|e| {
                if e == Errno::ELOOP {
                    DirError::NotFile { path: path.clone() }
                } else {
                    io(e.into())
                }
            })?,
        );
        let meta = file.metadata().map_err(io)?;
        if !meta.is_file() {
            return Err(DirError::NotFile { path });
        }
        owned_by_this_user(&path, &meta)?;
        if meta.mode() & 0o077 != 0 {
            return Err(DirError::KeyExposed {
                path,
                mode: meta.mode() & 0o7777,
            });
        }
        if meta.nlink() != 1 {
            return Err(DirError::KeyLinked {
                path,
                links: meta.nlink(),
            });
        }
        if meta.len() != KEY_LEN as u64 {
            return Err(DirError::KeyLength { path });
        }
        let mut key = [0u8; KEY_LEN];
        file.read_exact(&mut key).map_err(io)?;
        Ok(key)
    }
}

fn owned_by_this_user(path: &Path, meta: &std::fs::Metadata) -> Result<(), DirError> {
    let uid = nix::unistd::geteuid().as_raw();
    if meta.uid() != uid {
        return Err(DirError::NotOwned {
            path: path.to_path_buf(),
            owner: meta.uid(),
            uid,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn mode(path: &Path) -> u32 {
        std::fs::symlink_metadata(path)
            .unwrap()
            .permissions()
            .mode()
            & 0o7777
    }

    #[test]
    fn a_new_dir_and_key_are_private_and_the_key_is_kept() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = PrivateDir::open(&tmp.path().join("a/b/capstan")).unwrap();
        assert_eq!(mode(&tmp.path().join("a/b/capstan")), 0o700);
        let key = dir.key("key").unwrap();
        assert_eq!(mode(&tmp.path().join("a/b/capstan/key")), 0o600);
        assert_eq!(dir.key("key").unwrap(), key, "the key is kept");
        let sub = dir.subdir("components").unwrap();
        assert_eq!(mode(&sub.path), 0o700);
    }

    #[test]
    fn a_dir_others_may_write_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        for m in [0o770, 0o707, 0o777, 0o1777] {
            let path = tmp.path().join(format!("d{m:o}"));
            std::fs::create_dir(&path).unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(m)).unwrap();
            let err = PrivateDir::open(&path).err().expect("refused");
            assert!(matches!(err, DirError::Writable { .. }), "{m:o}: {err}");
            assert!(err.to_string().contains("chmod 700"), "{err}");
        }
        // Readable by others is no threat to what the host runs.
        let path = tmp.path().join("d755");
        std::fs::create_dir(&path).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        assert!(PrivateDir::open(&path).is_ok());
    }

    #[test]
    fn a_symlinked_dir_or_key_is_not_followed() {
        let tmp = tempfile::tempdir().unwrap();
        let real = tmp.path().join("real");
        std::fs::create_dir(&real).unwrap();
        let link = tmp.path().join("link");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        let err = PrivateDir::open(&link).err().expect("refused");
        assert!(matches!(err, DirError::Symlink { .. }), "{err}");
        // A key that is a symlink to a key file the attacker made.
        let dir = PrivateDir::open(&real).unwrap();
        let theirs = tmp.path().join("their-key");
        std::fs::write(&theirs, [7u8; KEY_LEN]).unwrap();
        std::fs::set_permissions(&theirs, std::fs::Permissions::from_mode(0o600)).unwrap();
        std::os::unix::fs::symlink(&theirs, real.join("key")).unwrap();
        let err = dir.key("key").expect_err("refused");
        assert!(matches!(err, DirError::NotFile { .. }), "{err}");
        // Nor an entry.
        std::os::unix::fs::symlink(&theirs, real.join("entry")).unwrap();
        assert!(dir.open_file("entry").is_err());
    }

    #[test]
    fn a_dir_of_another_user_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let theirs = tmp.path().join("theirs");
        std::fs::create_dir(&theirs).unwrap();
        std::fs::set_permissions(&theirs, std::fs::Permissions::from_mode(0o700)).unwrap();
        // Root owns every directory it makes; anyone else meets root's `/`.
        let theirs = if nix::unistd::geteuid().is_root() {
            let nobody = nix::unistd::Uid::from_raw(65534);
            nix::unistd::chown(&theirs, Some(nobody), None).unwrap();
            theirs
        } else {
            PathBuf::from("/")
        };
        let err = PrivateDir::open(&theirs).err().expect("refused");
        assert!(matches!(err, DirError::NotOwned { .. }), "{err}");
    }

    #[test]
    fn a_key_others_can_read_or_of_the_wrong_size_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = PrivateDir::open(tmp.path()).unwrap();
        dir.key("key").unwrap();
        let key = tmp.path().join("key");
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o640)).unwrap();
        let err = dir.key("key").expect_err("refused");
        assert!(matches!(err, DirError::KeyExposed { .. }), "{err}");
        std::fs::write(&key, b"short").unwrap();
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
        let err = dir.key("key").expect_err("refused");
        assert!(matches!(err, DirError::KeyLength { .. }), "{err}");
    }

    /// A key that is not a plain private file of its own is refused, never
    /// read through or blocked on: the host falls back (see the cache's
    /// tests) and a new key is made once the file is removed.
    #[test]
    fn a_key_that_is_a_fifo_a_dir_a_hard_link_or_anothers_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = PrivateDir::open(tmp.path()).unwrap();
        let key = tmp.path().join("key");
        nix::unistd::mkfifo(&key, Mode::S_IRUSR | Mode::S_IWUSR).unwrap();
        let err = dir.key("key").expect_err("a FIFO");
        assert!(matches!(err, DirError::NotFile { .. }), "{err}");
        std::fs::remove_file(&key).unwrap();
        std::fs::create_dir(&key).unwrap();
        let err = dir.key("key").expect_err("a directory");
        assert!(matches!(err, DirError::NotFile { .. }), "{err}");
        std::fs::remove_dir(&key).unwrap();
        // A second name, here where others could read it.
        let made = dir.key("key").unwrap();
        std::fs::hard_link(&key, tmp.path().join("copy")).unwrap();
        let err = dir.key("key").expect_err("a hard link");
        assert!(matches!(err, DirError::KeyLinked { links: 2, .. }), "{err}");
        std::fs::remove_file(tmp.path().join("copy")).unwrap();
        assert_eq!(dir.key("key").unwrap(), made);
        // Huge.
        std::fs::OpenOptions::new()
            .write(true)
            .open(&key)
            .unwrap()
            .set_len(1 << 40)
            .unwrap();
        let err = dir.key("key").expect_err("huge");
        assert!(matches!(err, DirError::KeyLength { .. }), "{err}");
        std::fs::remove_file(&key).unwrap();
        assert_ne!(dir.key("key").unwrap(), made, "a new key once removed");
        // Another user's.
        if nix::unistd::geteuid().is_root() {
            let nobody = nix::unistd::Uid::from_raw(65534);
            nix::unistd::chown(&key, Some(nobody), None).unwrap();
            let err = dir.key("key").expect_err("another user's");
            assert!(
                matches!(err, DirError::NotOwned { owner: 65534, .. }),
                "{err}"
            );
        } else {
            // Only root can give away a file: the same check on one of root's.
            let err = owned_by_this_user(&key, &std::fs::metadata("/").unwrap()).unwrap_err();
            assert!(matches!(err, DirError::NotOwned { owner: 0, .. }), "{err}");
        }
    }

    #[test]
    fn a_key_is_published_whole_once_by_hosts_starting_at_once() {
        let tmp = tempfile::tempdir().unwrap();
        let keys: Vec<_> = std::thread::scope(|s| {
            let hosts: Vec<_> = (0..4)
                .map(|_| s.spawn(|| PrivateDir::open(tmp.path()).unwrap().key("key")))
                .collect();
            hosts.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let first = keys[0].as_ref().unwrap();
        assert!(
            keys.iter().all(|k| k.as_ref().ok() == Some(first)),
            "{keys:?}"
        );
        let left: Vec<_> = std::fs::read_dir(tmp.path()).unwrap().collect();
        assert_eq!(left.len(), 1, "only the key: {left:?}");
    }

    #[test]
    fn a_fifo_planted_as_an_entry_does_not_block() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = PrivateDir::open(tmp.path()).unwrap();
        nix::unistd::mkfifo(&tmp.path().join("entry"), Mode::S_IRWXU).unwrap();
        assert!(dir.open_file("entry").is_err());
    }

    #[test]
    fn an_entry_is_replaced_whole() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = PrivateDir::open(tmp.path()).unwrap();
        dir.write_atomically("e", &[b"one", b"two"]).unwrap();
        let mut old = dir.open_file("e").unwrap();
        dir.write_atomically("e", &[b"three"]).unwrap();
        // A reader that opened the old entry reads it whole.
        let mut read = String::new();
        old.read_to_string(&mut read).unwrap();
        assert_eq!(read, "onetwo");
        let mut read = String::new();
        dir.open_file("e")
            .unwrap()
            .read_to_string(&mut read)
            .unwrap();
        assert_eq!(read, "three");
        let left: Vec<_> = std::fs::read_dir(tmp.path()).unwrap().collect();
        assert_eq!(left.len(), 1, "no temporary file is left: {left:?}");
        assert_eq!(mode(&tmp.path().join("e")), 0o600);
    }
}
