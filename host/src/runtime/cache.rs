//! On-disk cache of compiled components, keyed by the component's sha256 and
//! the engine's compatibility hash, so a second run does not recompile.
//!
//! Deserializing compiled code runs it without checks, so an entry is
//! trusted only when the host can tell it made it: each entry carries a
//! keyed BLAKE3 MAC over the component's digest, the engine tag and the
//! compiled bytes, with a key that only the host reads (`<cache>/key`, mode
//! 0600, inside the state dir that no grant may reach). The entry is read
//! into memory once, verified, and deserialized from those same bytes, so
//! nothing can change between the check and the use. Anything that fails
//! verification (edited, truncated, another plugin's entry under this
//! name, written without the key) is recompiled, and the load says so.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

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

    /// The compiled form of `bytes` (whose sha256 is `digest`).
    pub fn component(
        &self,
        engine: &Engine,
        digest: &str,
        bytes: &[u8],
    ) -> wasmtime::Result<(Component, CacheUse)> {
        let (Some(root), Some((entry, tag))) = (&self.dir, self.entry(engine, digest)) else {
            return Ok((Component::from_binary(engine, bytes)?, CacheUse::Disabled));
        };
        let key = match key(root) {
            Ok(key) => key,
            Err(e) => {
                eprintln!(
                    "warning: the compiled-plugin cache key in {} cannot be used ({e}); compiling without the cache",
                    root.display()
                );
                return Ok((Component::from_binary(engine, bytes)?, CacheUse::Disabled));
            }
        };
        let mut found = false;
        if let Ok(stored) = std::fs::read(&entry) {
            found = true;
            if let Some(compiled) = verified(&key, digest, tag, &stored) {
                // SAFETY: these bytes carry a MAC made with the host's own
                // key over this component's digest and this engine: the
                // host serialized them. wasmtime also checks the engine
                // compatibility header and refuses a mismatch.
                if let Ok(component) = unsafe { Component::deserialize(engine, compiled) } {
                    return Ok((component, CacheUse::Hit));
                }
            }
        }
        let component = Component::from_binary(engine, bytes)?;
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
    let mut h = blake3::Hasher::new_keyed(key);
    h.update(digest.as_bytes());
    h.update(&tag.to_le_bytes());
    h.update(compiled);
    *h.finalize().as_bytes()
}

/// The compiled bytes of an entry whose MAC checks out.
fn verified<'a>(key: &[u8; 32], digest: &str, tag: u64, stored: &'a [u8]) -> Option<&'a [u8]> {
    if stored.len() < MAC_LEN {
        return None;
    }
    let (given, compiled) = stored.split_at(MAC_LEN);
    let expected = blake3::Hash::from(mac(key, digest, tag, compiled));
    // `blake3::Hash` compares in constant time.
    (expected == blake3::Hash::from(<[u8; MAC_LEN]>::try_from(given).ok()?)).then_some(compiled)
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
        let entry = [mac(&k, "aaaa", 7, &compiled).as_slice(), &compiled].concat();
        assert_eq!(verified(&k, "aaaa", 7, &entry), Some(compiled.as_slice()));
        // Another plugin's entry, another engine, an edit, another key, a
        // truncated file: none verifies.
        assert_eq!(verified(&k, "bbbb", 7, &entry), None);
        assert_eq!(verified(&k, "aaaa", 8, &entry), None);
        let mut edited = entry.clone();
        *edited.last_mut().unwrap() ^= 1;
        assert_eq!(verified(&k, "aaaa", 7, &edited), None);
        assert_eq!(verified(&[0u8; 32], "aaaa", 7, &entry), None);
        assert_eq!(verified(&k, "aaaa", 7, &entry[..10]), None);
    }
}
