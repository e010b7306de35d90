//! On-disk cache of compiled components, keyed by the component's sha256 and
//! the engine's compatibility hash, so a second run does not recompile.
//!
//! Deserializing compiled code runs it without checks, so an entry is
//! trusted only when the host can tell it made it: each entry carries a
//! keyed BLAKE3 MAC over the component's digest, the engine tag and the
//! compiled bytes, with a key that only the host reads (`<cache>/key`, mode
//! 0600, inside the state dir that no grant may reach). The entry is copied
//! once into a memfd sealed against writes, verified there, and mapped from
//! that memfd, so nothing can change between the check and the use. Anything that fails
//! verification (edited, truncated, another plugin's entry under this
//! name, written without the key) is recompiled, and the load says so.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use nix::fcntl::{FcntlArg, SealFlag, fcntl};
use nix::sys::memfd::{MFdFlags, memfd_create};
use wasmtime::Engine;
use wasmtime::component::Component;

/// Where compiled components are kept (`<state dir>/cache`).
pub struct Cache {
    dir: Option<PathBuf>,
}

/// Whether a component came from the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum CacheUse {
    Hit,
    Miss,
    /// An entry was there but failed verification: it was not used, the
    /// component was compiled again and the entry replaced.
    Recompiled,
    Disabled,
}

const MAC_LEN: usize = 32;

/// Why a component could not be had.
#[derive(Debug)]
pub enum CompileError<E> {
    /// It failed the check made before compiling.
    Check(E),
    Compile(wasmtime::Error),
}

impl Cache {
    pub fn new(dir: PathBuf) -> Cache {
        Cache { dir: Some(dir) }
    }

    pub fn disabled() -> Cache {
        Cache { dir: None }
    }

    fn entry(&self, engine: &Engine, digest: &str) -> Option<(PathBuf, u64)> {
        let mut h = DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut h);
        env!("CARGO_PKG_VERSION").hash(&mut h);
        let tag = h.finish();
        let path = self
            .dir
            .as_ref()?
            .join("components")
            .join(format!("{digest}-{tag:016x}.cwasm"));
        Some((path, tag))
    }

    /// The compiled form of `bytes` (whose sha256 is `digest`): a verified
    /// entry, else compiled after `check` (the bounds a component must stay
    /// within to be compiled at all; a verified entry passed them when it
    /// was compiled, and its MAC binds it to this digest).
    pub fn component<E>(
        &self,
        engine: &Engine,
        digest: &str,
        bytes: &[u8],
        check: impl FnOnce() -> Result<(), E>,
    ) -> Result<(Component, CacheUse), CompileError<E>> {
        let compile = move || {
            check().map_err(CompileError::Check)?;
            Component::from_binary(engine, bytes).map_err(CompileError::Compile)
        };
        let (Some(root), Some((entry, tag))) = (&self.dir, self.entry(engine, digest)) else {
            return Ok((compile()?, CacheUse::Disabled));
        };
        let key = match key(root) {
            Ok(key) => key,
            Err(e) => {
                eprintln!(
                    "warning: the compiled-plugin cache key in {} cannot be used ({e}); compiling without the cache",
                    root.display()
                );
                return Ok((compile()?, CacheUse::Disabled));
            }
        };
        let mut found = false;
        if let Ok(file) = std::fs::File::open(&entry) {
            found = true;
            if let Some(sealed) = sealed_if_verified(file, &key, digest, tag) {
                // SAFETY: the bytes carry a MAC made with the host's own key
                // over this component's digest and this engine (the host
                // serialized them), and they sit in a sealed memfd that
                // nobody can change while wasmtime maps it. wasmtime also
                // checks the engine compatibility header.
                let path = crate::caps::fs::fd_path(&sealed);
                if let Ok(component) = unsafe { Component::deserialize_file(engine, path) } {
                    return Ok((component, CacheUse::Hit));
                }
            }
        }
        let component = compile()?;
        if let Ok(compiled) = component.serialize() {
            let mac = mac(&key, digest, tag, &compiled);
            let _ = write_atomically(&entry, &[mac.as_slice(), &compiled]);
        }
        let cache_use = if found {
            CacheUse::Recompiled
        } else {
            CacheUse::Miss
        };
        Ok((component, cache_use))
    }
}

fn mac(key: &[u8; 32], digest: &str, tag: u64, compiled: &[u8]) -> [u8; MAC_LEN] {
    let mut m = Mac::new(key, digest, tag);
    m.update(compiled);
    *m.0.finalize().as_bytes()
}

impl Cache {
    /// What was kept with [`Cache::keep_info`] for the component `digest`,
    /// when its MAC checks out.
    pub fn info<T: serde::de::DeserializeOwned>(&self, engine: &Engine, digest: &str) -> Option<T> {
        let (root, (entry, tag)) = (self.dir.as_ref()?, self.entry(engine, digest)?);
        let key = key(root).ok()?;
        let stored = std::fs::read(info_path(&entry)).ok()?;
        let (given, json) = stored.split_at_checked(MAC_LEN)?;
        let mut mac = Mac::new(&key, digest, tag);
        mac.update(b"info\0");
        mac.update(json);
        if !mac.matches(given.try_into().ok()?) {
            return None;
        }
        serde_json::from_slice(json).ok()
    }

    /// Keep `info` (a plugin's description) beside its compiled entry.
    pub fn keep_info<T: serde::Serialize>(&self, engine: &Engine, digest: &str, info: &T) {
        let (Some(root), Some((entry, tag))) = (&self.dir, self.entry(engine, digest)) else {
            return;
        };
        let (Ok(key), Ok(json)) = (key(root), serde_json::to_vec(info)) else {
            return;
        };
        let mut mac = Mac::new(&key, digest, tag);
        mac.update(b"info\0");
        mac.update(&json);
        let mac = *mac.0.finalize().as_bytes();
        let _ = write_atomically(&info_path(&entry), &[mac.as_slice(), &json]);
    }
}

/// Where a compiled entry's description is kept.
fn info_path(entry: &Path) -> PathBuf {
    entry.with_extension("info")
}

/// The compiled part of the entry `file`, copied (in the kernel) into a
/// memfd sealed against every change, when its MAC checks out: what is
/// verified is exactly what is then mapped and run.
fn sealed_if_verified(
    mut file: std::fs::File,
    key: &[u8; 32],
    digest: &str,
    tag: u64,
) -> Option<std::fs::File> {
    use std::io::{Seek, SeekFrom};
    use std::os::unix::fs::FileExt;
    let mut given = [0u8; MAC_LEN];
    file.read_exact(&mut given).ok()?;
    let flags = MFdFlags::MFD_CLOEXEC | MFdFlags::MFD_ALLOW_SEALING;
    let mut sealed = std::fs::File::from(memfd_create("capstan-cwasm", flags).ok()?);
    file.seek(SeekFrom::Start(MAC_LEN as u64)).ok()?;
    std::io::copy(&mut file, &mut sealed).ok()?;
    let seals = SealFlag::F_SEAL_WRITE
        | SealFlag::F_SEAL_SHRINK
        | SealFlag::F_SEAL_GROW
        | SealFlag::F_SEAL_SEAL;
    fcntl(&sealed, FcntlArg::F_ADD_SEALS(seals)).ok()?;
    let mut mac = Mac::new(key, digest, tag);
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

/// The keyed MAC of an entry: the component's digest, the engine tag, then
/// the compiled bytes.
struct Mac(blake3::Hasher);

impl Mac {
    fn new(key: &[u8; 32], digest: &str, tag: u64) -> Mac {
        let mut h = blake3::Hasher::new_keyed(key);
        h.update(digest.as_bytes());
        h.update(&tag.to_le_bytes());
        Mac(h)
    }

    fn update(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }

    /// Whether `given` is this MAC (`blake3::Hash` compares in constant time).
    fn matches(&self, given: &[u8; MAC_LEN]) -> bool {
        self.0.finalize() == blake3::Hash::from(*given)
    }
}

/// The cache's key, created on first use (0600, published whole by a hard
/// link, so that two hosts starting at once agree on one key).
fn key(root: &Path) -> std::io::Result<[u8; 32]> {
    let path = root.join("key");
    let read = |path: &Path| -> std::io::Result<[u8; 32]> {
        let mut key = [0u8; 32];
        std::fs::File::open(path)?.read_exact(&mut key)?;
        Ok(key)
    };
    match read(&path) {
        Ok(key) => return Ok(key),
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        Err(_) => {}
    }
    std::fs::create_dir_all(root)?;
    let mut key = [0u8; 32];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut key)?;
    let tmp = root.join(format!("key.{}.tmp", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    {
        use std::io::Write;
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        file.write_all(&key)?;
        file.sync_all()?;
    }
    let linked = std::fs::hard_link(&tmp, &path);
    let _ = std::fs::remove_file(&tmp);
    match linked {
        Ok(()) => Ok(key),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => read(&path),
        Err(e) => Err(e),
    }
}

/// Write through a temporary file and rename, so a concurrent reader never
/// sees half a file.
fn write_atomically(path: &Path, parts: &[&[u8]]) -> std::io::Result<()> {
    use std::io::Write;
    let dir = path.parent().expect("cache entries live in a directory");
    std::fs::create_dir_all(dir)?;
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    for part in parts {
        tmp.write_all(part)?;
    }
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(dir: &Path, name: &str, bytes: &[u8]) -> std::fs::File {
        let path = dir.join(name);
        std::fs::write(&path, bytes).unwrap();
        std::fs::File::open(path).unwrap()
    }

    #[test]
    fn only_entries_made_with_the_key_for_this_digest_verify() {
        let dir = tempfile::tempdir().unwrap();
        let k = key(dir.path()).unwrap();
        assert_eq!(key(dir.path()).unwrap(), k, "the key is kept");
        let mode = std::fs::metadata(dir.path().join("key")).unwrap();
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&mode.permissions()) & 0o777,
            0o600
        );
        let compiled = b"compiled code".to_vec();
        let good = [mac(&k, "aaaa", 7, &compiled).as_slice(), &compiled].concat();
        let verifies = |key: &[u8; 32], digest: &str, tag: u64, bytes: &[u8]| {
            sealed_if_verified(entry(dir.path(), "e", bytes), key, digest, tag).map(|mut f| {
                use std::io::Seek;
                f.rewind().unwrap();
                let mut read = Vec::new();
                f.read_to_end(&mut read).unwrap();
                read
            })
        };
        assert_eq!(verifies(&k, "aaaa", 7, &good), Some(compiled.clone()));
        // Another plugin's entry, another engine, an edit, another key, a
        // truncated file: none verifies.
        assert_eq!(verifies(&k, "bbbb", 7, &good), None);
        assert_eq!(verifies(&k, "aaaa", 8, &good), None);
        let mut edited = good.clone();
        *edited.last_mut().unwrap() ^= 1;
        assert_eq!(verifies(&k, "aaaa", 7, &edited), None);
        assert_eq!(verifies(&[0u8; 32], "aaaa", 7, &good), None);
        assert_eq!(verifies(&k, "aaaa", 7, &good[..10]), None);
    }

    #[test]
    fn a_verified_entry_cannot_be_changed_afterwards() {
        let dir = tempfile::tempdir().unwrap();
        let k = key(dir.path()).unwrap();
        let compiled = b"compiled code".to_vec();
        let good = [mac(&k, "aaaa", 7, &compiled).as_slice(), &compiled].concat();
        let sealed = sealed_if_verified(entry(dir.path(), "e", &good), &k, "aaaa", 7).unwrap();
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
}
