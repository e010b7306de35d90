//! On-disk cache of compiled components, keyed by the component's sha256,
//! the engine's compatibility hash (wasmtime's version and every setting
//! that changes compiled code) and the host's version, so that a second
//! load does not recompile.
//!
//! It is kept per user (`$XDG_CACHE_HOME/capstan`, see [`user`]), shared by
//! every state dir, else in the state dir (`<state>/cache`).
//!
//! Deserializing compiled code runs it without checks, so an entry is
//! trusted only when the host can tell it made it: each entry carries a
//! keyed BLAKE3 MAC over the component's digest, the engine tag and the
//! compiled bytes, with a key that only the host reads: the per-user key
//! (`$XDG_STATE_HOME/capstan/cache-key`, apart from the entries) or the
//! state dir's (`<state>/cache/key`), mode 0600, both out of every grant's
//! reach. The entry is copied once into a memfd sealed against writes,
//! verified there, and mapped from that memfd, so nothing can change between
//! the check and the use. Anything that fails verification (edited,
//! truncated, another plugin's entry under this name, written without the
//! key) is recompiled, and the load says so. Directories are opened without
//! following symlinks and refused unless this user owns them and nobody
//! else may write them (see [`dir`]).

mod dir;
mod seal;
pub mod user;

use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::PathBuf;
use std::sync::OnceLock;

use wasmtime::Engine;
use wasmtime::component::Component;

use dir::{KEY_LEN, PrivateDir};
use seal::{Kind, MAC_LEN, Mac, mac, sealed_if_verified};
pub use user::UserCache;

/// Where compiled components are kept: the places to try, in order, and the
/// one opened on first use.
pub struct Cache {
    places: Vec<Place>,
    opened: OnceLock<Option<Opened>>,
}

/// A cache directory (entries in its `components/`) and where its key is.
struct Place {
    dir: PathBuf,
    key_dir: PathBuf,
    key_name: &'static str,
    /// The per-user cache (else the state dir's).
    shared: bool,
}

struct Opened {
    components: PrivateDir,
    key: [u8; KEY_LEN],
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

/// Why a component could not be had.
#[derive(Debug)]
pub enum CompileError<E> {
    /// It failed the check made before compiling.
    Check(E),
    Compile(wasmtime::Error),
}

impl Cache {
    /// The cache in the state dir only (`state_cache` is `<state>/cache`).
    pub fn new(state_cache: PathBuf) -> Cache {
        Cache::with_places(vec![Place::state(state_cache)])
    }

    /// The per-user cache, or when it cannot be used (a warning says why)
    /// the state dir's.
    pub fn per_user(user: UserCache, state_cache: PathBuf) -> Cache {
        let shared = Place {
            dir: user.dir,
            key_dir: user.key_dir,
            key_name: user::KEY_NAME,
            shared: true,
        };
        Cache::with_places(vec![shared, Place::state(state_cache)])
    }

    /// No cache: compile every time, read and write nothing.
    pub fn disabled() -> Cache {
        Cache::with_places(Vec::new())
    }

    fn with_places(places: Vec<Place>) -> Cache {
        Cache {
            places,
            opened: OnceLock::new(),
        }
    }

    /// The first place that can be used, opened once.
    fn opened(&self) -> Option<&Opened> {
        self.opened
            .get_or_init(|| {
                self.places.iter().find_map(|place| match place.open() {
                    Ok(opened) => Some(opened),
                    Err(e) if place.shared => {
                        eprintln!(
                            "warning: not using the per-user compiled-plugin cache: {e}; plugins are cached in the state dir instead (--cache-dir or $CAPSTAN_CACHE_DIR chooses another place; `none` keeps them in the state dir)"
                        );
                        None
                    }
                    Err(e) => {
                        eprintln!(
                            "warning: the compiled-plugin cache in {} cannot be used ({e}); compiling without the cache",
                            place.dir.display()
                        );
                        None
                    }
                })
            })
            .as_ref()
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
            let compiled = Component::from_binary(engine, bytes).map_err(CompileError::Compile);
            release_freed_memory();
            compiled
        };
        let Some(opened) = self.opened() else {
            return Ok((compile()?, CacheUse::Disabled));
        };
        let (name, tag) = entry(engine, digest);
        // Anything under the entry's name counts as found: a symlink, a
        // FIFO or a directory there is not used, and the load says so.
        let opened_entry = opened.components.open_file(&name);
        let found = !matches!(&opened_entry, Err(e) if e.kind() == std::io::ErrorKind::NotFound);
        let max_len = max_compiled_len(bytes);
        if let Ok(file) = opened_entry
            && let Some(sealed) = sealed_if_verified(file, &opened.key, digest, tag, max_len)
        {
            // SAFETY: the bytes carry a MAC made with the host's own key
            // over this component's digest, this engine and this host
            // version (the host serialized them), and they sit in a sealed
            // memfd that nobody can change while wasmtime maps it. wasmtime
            // also checks the engine compatibility header.
            let path = crate::caps::fs::fd_path(&sealed);
            if let Ok(component) = unsafe { Component::deserialize_file(engine, path) } {
                return Ok((component, CacheUse::Hit));
            }
        }
        let component = compile()?;
        // Failing to keep it (a full disk, a read-only cache) costs the next
        // load a compile, not this one its plugin.
        if let Ok(compiled) = component.serialize()
            && compiled.len() as u64 <= max_len
        {
            let mac = mac(&opened.key, digest, tag, &compiled);
            let _ = opened
                .components
                .write_atomically(&name, &[mac.as_slice(), &compiled]);
        }
        let cache_use = if found {
            CacheUse::Recompiled
        } else {
            CacheUse::Miss
        };
        Ok((component, cache_use))
    }

    /// What was kept with [`Cache::keep_info`] for the component `digest`,
    /// when its MAC checks out.
    pub fn info<T: serde::de::DeserializeOwned>(&self, engine: &Engine, digest: &str) -> Option<T> {
        use std::io::Read;
        let opened = self.opened()?;
        let (name, tag) = entry(engine, digest);
        let mut stored = Vec::new();
        let file = opened.components.open_file(&info_name(&name)).ok()?;
        // A description is small: what is longer is not one of the host's.
        file.take(16 << 20).read_to_end(&mut stored).ok()?;
        let (given, json) = stored.split_at_checked(MAC_LEN)?;
        let mut mac = Mac::new(&opened.key, Kind::Info, digest, tag);
        mac.update(json);
        if !mac.matches(given.try_into().ok()?) {
            return None;
        }
        serde_json::from_slice(json).ok()
    }

    /// Keep `info` (a plugin's description) beside its compiled entry.
    pub fn keep_info<T: serde::Serialize>(&self, engine: &Engine, digest: &str, info: &T) {
        let (Some(opened), Ok(json)) = (self.opened(), serde_json::to_vec(info)) else {
            return;
        };
        let (name, tag) = entry(engine, digest);
        let mut mac = Mac::new(&opened.key, Kind::Info, digest, tag);
        mac.update(&json);
        let mac = mac.finalize();
        let _ = opened
            .components
            .write_atomically(&info_name(&name), &[mac.as_slice(), &json]);
    }
}

impl Place {
    fn state(dir: PathBuf) -> Place {
        Place {
            key_dir: dir.clone(),
            dir,
            key_name: "key",
            shared: false,
        }
    }

    fn open(&self) -> Result<Opened, dir::DirError> {
        let components = PrivateDir::open(&self.dir)?.subdir("components")?;
        let key = PrivateDir::open(&self.key_dir)?.key(self.key_name)?;
        Ok(Opened { components, key })
    }
}

/// Give the memory compiling freed back to the system. Compiling a plugin
/// allocates tens of MB (register allocation of its largest functions, on
/// every compiler thread), which glibc keeps in per-thread arenas; without
/// this, loading several plugins cold grows the process by each one's
/// leftovers (measured: ~4 MB less peak RSS loading the five first-party
/// plugins).
fn release_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns free memory of malloc's arenas, under
    // their locks.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// The entry of the component `digest` for this engine and host: its file
/// name, and the tag its MAC covers.
fn entry(engine: &Engine, digest: &str) -> (String, u64) {
    let mut h = DefaultHasher::new();
    engine.precompile_compatibility_hash().hash(&mut h);
    env!("CARGO_PKG_VERSION").hash(&mut h);
    let tag = h.finish();
    (format!("{digest}-{tag:016x}.cwasm"), tag)
}

/// The most compiled code the component `wasm` can come to: what an entry
/// may hold. Compiled code measured 2.8–3.0× its component (the first-party
/// plugins); the bound leaves ample room, and bounds what a file planted as
/// an entry makes the host copy into memory.
fn max_compiled_len(wasm: &[u8]) -> u64 {
    (16 << 20) + 16 * wasm.len() as u64
}

/// Where a compiled entry's description is kept.
fn info_name(entry: &str) -> String {
    format!("{}.info", entry.trim_end_matches(".cwasm"))
}

#[cfg(test)]
mod tests;
