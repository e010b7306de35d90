//! On-disk cache of compiled components, keyed by the component's sha256 and
//! the engine's compatibility hash, so a second run does not recompile.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::{Path, PathBuf};

use wasmtime::Engine;
use wasmtime::component::Component;

/// Where compiled components are kept (`<state dir>/cache/components`).
pub struct Cache {
    dir: Option<PathBuf>,
}

/// Whether a component came from the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum CacheUse {
    Hit,
    Miss,
    Disabled,
}

impl Cache {
    pub fn new(dir: PathBuf) -> Cache {
        Cache { dir: Some(dir) }
    }

    pub fn disabled() -> Cache {
        Cache { dir: None }
    }

    fn entry(&self, engine: &Engine, digest: &str) -> Option<PathBuf> {
        let mut h = DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut h);
        env!("CARGO_PKG_VERSION").hash(&mut h);
        Some(
            self.dir
                .as_ref()?
                .join(format!("{digest}-{:016x}.cwasm", h.finish())),
        )
    }

    /// The compiled form of `bytes` (whose sha256 is `digest`).
    pub fn component(
        &self,
        engine: &Engine,
        digest: &str,
        bytes: &[u8],
    ) -> wasmtime::Result<(Component, CacheUse)> {
        let Some(entry) = self.entry(engine, digest) else {
            return Ok((Component::from_binary(engine, bytes)?, CacheUse::Disabled));
        };
        if entry.exists() {
            // SAFETY: the file was written by `serialize` below into the
            // host's own state directory, under a name that binds it to the
            // component digest and this engine; wasmtime also checks the
            // engine compatibility header and refuses a mismatch.
            if let Ok(component) = unsafe { Component::deserialize_file(engine, &entry) } {
                return Ok((component, CacheUse::Hit));
            }
        }
        let component = Component::from_binary(engine, bytes)?;
        if let Ok(compiled) = component.serialize() {
            let _ = write_atomically(&entry, &compiled);
        }
        Ok((component, CacheUse::Miss))
    }
}

/// Write through a temporary file and rename, so a concurrent reader never
/// sees half a file.
fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().expect("cache entries live in a directory");
    std::fs::create_dir_all(dir)?;
    let tmp = tempfile::NamedTempFile::new_in(dir)?;
    std::fs::write(tmp.path(), bytes)?;
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}
