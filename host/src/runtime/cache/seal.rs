//! What makes a cached entry trusted: a keyed BLAKE3 MAC over what the
//! bytes are (compiled code or a description), the component's digest, the
//! engine tag and the bytes, checked on a copy sealed against writes, so
//! that what was verified is what is run.

use std::io::Read;

use nix::fcntl::{FcntlArg, SealFlag, fcntl};
use nix::sys::memfd::{MFdFlags, memfd_create};

use super::dir::KEY_LEN;

pub const MAC_LEN: usize = 32;

/// What a MAC'd file holds. Each kind is MAC'd with its own prefix (no
/// prefix of another), so that a description the host MAC'd can never pass
/// for compiled code under another name.
#[derive(Clone, Copy)]
pub enum Kind {
    Compiled,
    Info,
}

/// The keyed MAC of an entry: its kind, the component's digest, the engine
/// tag, then the entry's bytes.
pub struct Mac(blake3::Hasher);

impl Mac {
    pub fn new(key: &[u8; KEY_LEN], kind: Kind, digest: &str, tag: u64) -> Mac {
        let mut h = blake3::Hasher::new_keyed(key);
        h.update(match kind {
            Kind::Compiled => b"cwasm\0".as_slice(),
            Kind::Info => b"info\0",
        });
        h.update(digest.as_bytes());
        h.update(&tag.to_le_bytes());
        Mac(h)
    }

    pub fn update(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }

    pub fn finalize(&self) -> [u8; MAC_LEN] {
        *self.0.finalize().as_bytes()
    }

    /// Whether `given` is this MAC (`blake3::Hash` compares in constant time).
    pub fn matches(&self, given: &[u8; MAC_LEN]) -> bool {
        self.0.finalize() == blake3::Hash::from(*given)
    }
}

/// The MAC of compiled bytes.
pub fn mac(key: &[u8; KEY_LEN], digest: &str, tag: u64, compiled: &[u8]) -> [u8; MAC_LEN] {
    let mut m = Mac::new(key, Kind::Compiled, digest, tag);
    m.update(compiled);
    m.finalize()
}

/// The compiled part of the entry `file`, copied (in the kernel) into a
/// memfd sealed against every change, when it is at most `max_len` bytes
/// and its MAC checks out: what is verified is exactly what is then mapped
/// and run. The bound keeps a planted giant (or growing) file from filling
/// memory: the memfd lives in RAM.
pub fn sealed_if_verified(
    mut file: std::fs::File,
    key: &[u8; KEY_LEN],
    digest: &str,
    tag: u64,
    max_len: u64,
) -> Option<std::fs::File> {
    use std::io::{Seek, SeekFrom};
    use std::os::unix::fs::FileExt;
    if file.metadata().ok()?.len() > MAC_LEN as u64 + max_len {
        return None;
    }
    let mut given = [0u8; MAC_LEN];
    file.read_exact(&mut given).ok()?;
    let flags = MFdFlags::MFD_CLOEXEC | MFdFlags::MFD_ALLOW_SEALING;
    let mut sealed = std::fs::File::from(memfd_create("capstan-cwasm", flags).ok()?);
    file.seek(SeekFrom::Start(MAC_LEN as u64)).ok()?;
    // One byte more than allowed tells a file grown since it was measured.
    let copied = std::io::copy(&mut (&mut file).take(max_len + 1), &mut sealed).ok()?;
    if copied > max_len {
        return None;
    }
    let seals = SealFlag::F_SEAL_WRITE
        | SealFlag::F_SEAL_SHRINK
        | SealFlag::F_SEAL_GROW
        | SealFlag::F_SEAL_SEAL;
    fcntl(&sealed, FcntlArg::F_ADD_SEALS(seals)).ok()?;
    let mut mac = Mac::new(key, Kind::Compiled, digest, tag);
    let mut buf = vec![0u8; 256 * 1024];
    let mut offset = 0u64;
    loop {
        let n = sealed.read_at(&mut buf, offset).ok()?;
        if n == 0 {
            break;
        }
        mac.update(&buf[..n]);
        offset += n as u64;
    }
    mac.matches(&given).then_some(sealed)
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    const K: [u8; KEY_LEN] = [3u8; KEY_LEN];

    /// An entry as the host makes it with the key `K`, for the digest
    /// "aaaa" and the tag 7: the MAC, then `compiled`.
    fn made(compiled: &[u8]) -> Vec<u8> {
        [mac(&K, "aaaa", 7, compiled).as_slice(), compiled].concat()
    }

    fn entry(dir: &Path, name: &str, bytes: &[u8]) -> std::fs::File {
        let path = dir.join(name);
        std::fs::write(&path, bytes).unwrap();
        std::fs::File::open(path).unwrap()
    }

    #[test]
    fn only_entries_made_with_the_key_for_this_digest_verify() {
        let (dir, k) = (tempfile::tempdir().unwrap(), K);
        let compiled = b"compiled code".to_vec();
        let good = made(&compiled);
        let verifies = |key: &[u8; 32], digest: &str, tag: u64, bytes: &[u8]| {
            sealed_if_verified(entry(dir.path(), "e", bytes), key, digest, tag, 1 << 20).map(
                |mut f| {
                    use std::io::Seek;
                    f.rewind().unwrap();
                    let mut read = Vec::new();
                    f.read_to_end(&mut read).unwrap();
                    read
                },
            )
        };
        assert_eq!(verifies(&k, "aaaa", 7, &good), Some(compiled.clone()));
        // Another plugin's entry, another engine, an edit, another key, a
        // truncated file, an empty one: none verifies.
        assert_eq!(verifies(&k, "bbbb", 7, &good), None);
        assert_eq!(verifies(&k, "aaaa", 8, &good), None);
        let mut edited = good.clone();
        *edited.last_mut().unwrap() ^= 1;
        assert_eq!(verifies(&k, "aaaa", 7, &edited), None);
        assert_eq!(verifies(&[0u8; 32], "aaaa", 7, &good), None);
        assert_eq!(verifies(&k, "aaaa", 7, &good[..10]), None);
        assert_eq!(verifies(&k, "aaaa", 7, &good[..MAC_LEN + 3]), None);
        assert_eq!(verifies(&k, "aaaa", 7, b""), None);
    }

    #[test]
    fn a_verified_entry_cannot_be_changed_afterwards() {
        let (dir, k) = (tempfile::tempdir().unwrap(), K);
        let compiled = b"compiled code".to_vec();
        let good = made(&compiled);
        let sealed =
            sealed_if_verified(entry(dir.path(), "e", &good), &k, "aaaa", 7, 1 << 20).unwrap();
        // Rewriting the entry file does not reach the sealed copy, and the
        // copy itself refuses writes.
        std::fs::write(dir.path().join("e"), b"other").unwrap();
        use std::os::unix::fs::FileExt;
        let mut read = vec![0u8; compiled.len()];
        sealed.read_exact_at(&mut read, 0).unwrap();
        assert_eq!(read, compiled);
        let writable = std::fs::OpenOptions::new()
            .write(true)
            .open(crate::caps::fs::fd_path(&sealed));
        assert!(writable.is_err() || writable.unwrap().write_at(b"x", 0).is_err());
    }

    /// A description the host MAC'd, moved to an entry's name with its MAC
    /// in front of its bytes, does not pass for compiled code.
    #[test]
    fn a_description_does_not_verify_as_compiled_code() {
        let (dir, k) = (tempfile::tempdir().unwrap(), K);
        let json = br#"{"name":"x"}"#;
        let mut info = Mac::new(&k, Kind::Info, "aaaa", 7);
        info.update(json);
        let moved = [info.finalize().as_slice(), json].concat();
        let entry = entry(dir.path(), "e", &moved);
        assert!(sealed_if_verified(entry, &k, "aaaa", 7, 1 << 20).is_none());
    }

    /// A file larger than an entry may be (a sparse terabyte costs its
    /// planter nothing) is refused before anything is copied into memory.
    #[test]
    fn an_entry_over_the_bound_is_not_copied() {
        let (dir, k) = (tempfile::tempdir().unwrap(), K);
        let good = made(&[1u8; 1000]);
        let verifies = |max| sealed_if_verified(entry(dir.path(), "e", &good), &k, "aaaa", 7, max);
        assert!(verifies(1000).is_some());
        assert!(verifies(999).is_none());
        let huge = entry(dir.path(), "huge", &good);
        let planted = std::fs::OpenOptions::new()
            .write(true)
            .open(dir.path().join("huge"))
            .unwrap();
        planted.set_len(1 << 40).unwrap();
        assert!(sealed_if_verified(huge, &k, "aaaa", 7, 1 << 20).is_none());
    }
}
