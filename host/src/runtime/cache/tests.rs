//! The cache with a real engine and a real component: what is reused, what
//! is refused, and that nothing refused is ever run.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use super::*;

struct Dirs {
    _tmp: tempfile::TempDir,
    root: PathBuf,
}

impl Dirs {
    fn new() -> Dirs {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().to_path_buf();
        Dirs { _tmp: tmp, root }
    }

    fn user(&self) -> UserCache {
        UserCache {
            dir: self.root.join("xdg-cache/capstan"),
            key_dir: self.root.join("xdg-state/capstan"),
        }
    }

    /// A cache as a host with the state dir `state` makes it.
    fn cache(&self, state: &str) -> Cache {
        Cache::per_user(self.user(), self.root.join(state).join("cache"))
    }

    fn entries(&self, dir: &Path) -> Vec<PathBuf> {
        let mut found: Vec<PathBuf> = std::fs::read_dir(dir.join("components"))
            .map(|d| d.map(|e| e.unwrap().path()).collect())
            .unwrap_or_default();
        found.sort();
        found
    }

    fn compiled(&self, dir: &Path) -> PathBuf {
        let entries = self.entries(dir);
        let cwasm: Vec<_> = entries
            .iter()
            .filter(|p| p.extension().is_some_and(|e| e == "cwasm"))
            .collect();
        assert_eq!(cwasm.len(), 1, "one compiled entry: {entries:?}");
        cwasm[0].clone()
    }
}

fn engine() -> Engine {
    crate::runtime::Runtime::new().unwrap().engine
}

fn hello() -> (Vec<u8>, String) {
    use sha2::Digest;
    let bytes = std::fs::read(capstan_test_artifacts::HELLO).unwrap();
    let digest = hex::encode(sha2::Sha256::digest(&bytes));
    (bytes, digest)
}

/// A load that could not use the per-user cache: compiled, kept in the
/// state dir `s`, nothing written in the per-user cache.
fn assert_falls_back(dirs: &Dirs, engine: &Engine) {
    assert_eq!(load(&dirs.cache("s"), engine), CacheUse::Miss);
    assert!(
        dirs.entries(&dirs.user().dir).is_empty(),
        "nothing written there"
    );
    dirs.compiled(&dirs.root.join("s/cache"));
}

fn load(cache: &Cache, engine: &Engine) -> CacheUse {
    let (bytes, digest) = hello();
    let (_, used) = cache
        .component(engine, &digest, &bytes, || Ok::<(), ()>(()))
        .map_err(|_| "compile")
        .unwrap();
    used
}

#[test]
fn a_fresh_state_dir_reuses_what_another_compiled() {
    let (dirs, engine) = (Dirs::new(), engine());
    assert_eq!(load(&dirs.cache("state-a"), &engine), CacheUse::Miss);
    assert_eq!(load(&dirs.cache("state-b"), &engine), CacheUse::Hit);
    assert!(
        dirs.entries(&dirs.root.join("state-b/cache")).is_empty(),
        "nothing kept in the state dir"
    );
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&dirs.user().dir), 0o700);
    assert_eq!(mode(&dirs.user().key()), 0o600);
    // The description kept beside it is shared too.
    let (_, digest) = hello();
    dirs.cache("state-a")
        .keep_info(&engine, &digest, &"described");
    let info: Option<String> = dirs.cache("state-c").info(&engine, &digest);
    assert_eq!(info.as_deref(), Some("described"));
}

#[test]
fn a_tampered_or_truncated_entry_is_recompiled_and_replaced() {
    let (dirs, engine) = (Dirs::new(), engine());
    assert_eq!(load(&dirs.cache("s"), &engine), CacheUse::Miss);
    let entry = dirs.compiled(&dirs.user().dir);
    let good = std::fs::read(&entry).unwrap();
    let mut flipped = good.clone();
    flipped[good.len() / 2] ^= 0x40;
    for (what, bytes) in [
        ("a flipped bit", flipped),
        ("truncated", good[..good.len() / 3].to_vec()),
        ("empty", Vec::new()),
        ("huge", Vec::new()),
    ] {
        std::fs::write(&entry, &bytes).unwrap();
        if what == "huge" {
            // A sparse terabyte: the host must not copy it into memory.
            let file = std::fs::OpenOptions::new().write(true).open(&entry);
            file.unwrap().set_len(1 << 40).unwrap();
        }
        assert_eq!(
            load(&dirs.cache("s"), &engine),
            CacheUse::Recompiled,
            "{what}"
        );
        assert_eq!(std::fs::read(&entry).unwrap().len(), good.len(), "{what}");
        assert_eq!(load(&dirs.cache("s"), &engine), CacheUse::Hit, "{what}");
    }
}

/// Whoever can write the shared cache but not read the key cannot get code
/// run: an entry made with a key of their choosing (even one they leave
/// beside the entries) is not used, nor is a symlink to an entry.
#[test]
fn an_entry_made_without_the_key_is_not_run() {
    let (dirs, engine) = (Dirs::new(), engine());
    let (bytes, digest) = hello();
    assert_eq!(load(&dirs.cache("s"), &engine), CacheUse::Miss);
    let entry = dirs.compiled(&dirs.user().dir);
    // Their compiled code (here: the same component, which they could
    // compile too), MAC'd with their key, and their key planted where a
    // cache that kept its key with its entries would read it.
    let theirs = [9u8; KEY_LEN];
    std::fs::write(dirs.user().dir.join("key"), theirs).unwrap();
    std::fs::write(dirs.user().dir.join("cache-key"), theirs).unwrap();
    let compiled = Component::from_binary(&engine, &bytes)
        .unwrap()
        .serialize()
        .unwrap();
    let (_, tag) = super::entry(&engine, &digest);
    let forged = [mac(&theirs, &digest, tag, &compiled).as_slice(), &compiled].concat();
    std::fs::write(&entry, &forged).unwrap();
    assert_eq!(load(&dirs.cache("s"), &engine), CacheUse::Recompiled);
    // A symlink to an entry elsewhere (a valid one, even) is not followed.
    let elsewhere = dirs.root.join("elsewhere.cwasm");
    std::fs::copy(&entry, &elsewhere).unwrap();
    std::fs::remove_file(&entry).unwrap();
    std::os::unix::fs::symlink(&elsewhere, &entry).unwrap();
    assert_eq!(load(&dirs.cache("s"), &engine), CacheUse::Recompiled);
    assert!(
        !std::fs::symlink_metadata(&entry).unwrap().is_symlink(),
        "the link was replaced by an entry"
    );
    assert_eq!(load(&dirs.cache("s"), &engine), CacheUse::Hit);
}

/// An entry's name hard-linked to another file: not used, and replacing it
/// does not write through the link into that file.
#[test]
fn an_entry_hard_linked_to_another_file_is_not_used_nor_written_through() {
    let (dirs, engine) = (Dirs::new(), engine());
    assert_eq!(load(&dirs.cache("s"), &engine), CacheUse::Miss);
    let entry = dirs.compiled(&dirs.user().dir);
    let other = dirs.user().dir.join("components/other-file");
    std::fs::write(&other, b"someone's file").unwrap();
    std::fs::remove_file(&entry).unwrap();
    std::fs::hard_link(&other, &entry).unwrap();
    assert_eq!(load(&dirs.cache("s"), &engine), CacheUse::Recompiled);
    assert_eq!(std::fs::read(&other).unwrap(), b"someone's file");
    assert_eq!(load(&dirs.cache("s"), &engine), CacheUse::Hit);
}

/// A description (what a plugin asks for) is kept only as the host wrote
/// it: an edited one, one MAC'd for another plugin, or a symlink to a good
/// one is not taken.
#[test]
fn a_description_not_written_by_the_host_is_not_taken() {
    let (dirs, engine) = (Dirs::new(), engine());
    let (_, digest) = hello();
    let cache = dirs.cache("s");
    assert_eq!(load(&cache, &engine), CacheUse::Miss);
    cache.keep_info(&engine, &digest, &"described");
    let info = dirs.compiled(&dirs.user().dir).with_extension("info");
    let good = std::fs::read(&info).unwrap();
    let taken = || dirs.cache("s").info::<String>(&engine, &digest);
    assert_eq!(taken().as_deref(), Some("described"));
    let mut edited = good[..MAC_LEN].to_vec();
    edited.extend_from_slice(br#""forged""#);
    std::fs::write(&info, &edited).unwrap();
    assert_eq!(taken(), None, "edited");
    let elsewhere = dirs.root.join("elsewhere.info");
    std::fs::write(&elsewhere, &good).unwrap();
    std::fs::remove_file(&info).unwrap();
    std::os::unix::fs::symlink(&elsewhere, &info).unwrap();
    assert_eq!(taken(), None, "a symlink");
    // Another plugin's description under this one's name.
    std::fs::remove_file(&info).unwrap();
    dirs.cache("s")
        .keep_info(&engine, &"0".repeat(64), &"another");
    let another = info.with_file_name(
        info.file_name()
            .unwrap()
            .to_string_lossy()
            .replace(&digest, &"0".repeat(64)),
    );
    std::fs::rename(another, &info).unwrap();
    assert_eq!(taken(), None, "another plugin's");
}

/// A cache dir or a `components/` that is a symlink, or a key that cannot
/// be used (here a FIFO: it must not block), makes the per-user cache
/// unusable as a whole: the state dir's stands in, nothing is written
/// through a link.
#[test]
fn a_symlinked_cache_dir_or_components_or_a_bad_key_falls_back_to_the_state_dir() {
    let engine = engine();
    for components in [false, true] {
        let dirs = Dirs::new();
        let elsewhere = dirs.root.join("elsewhere");
        std::fs::create_dir_all(&elsewhere).unwrap();
        let mut at = dirs.user().dir;
        if components {
            at.push("components");
        }
        std::fs::create_dir_all(at.parent().unwrap()).unwrap();
        std::os::unix::fs::symlink(&elsewhere, &at).unwrap();
        assert_falls_back(&dirs, &engine);
        let through = std::fs::read_dir(&elsewhere).unwrap().count();
        assert_eq!(through, 0, "nothing written through {}", at.display());
    }
    let dirs = Dirs::new();
    std::fs::create_dir_all(&dirs.user().key_dir).unwrap();
    nix::unistd::mkfifo(&dirs.user().key(), nix::sys::stat::Mode::S_IRWXU).unwrap();
    assert_falls_back(&dirs, &engine);
}

#[test]
fn a_per_user_cache_others_can_write_is_not_used() {
    let (dirs, engine) = (Dirs::new(), engine());
    std::fs::create_dir_all(&dirs.user().dir).unwrap();
    std::fs::set_permissions(&dirs.user().dir, std::fs::Permissions::from_mode(0o777)).unwrap();
    // The state dir's cache stands in.
    assert_falls_back(&dirs, &engine);
    assert_eq!(load(&dirs.cache("s"), &engine), CacheUse::Hit);
    // So does it when the key's directory is another's to write.
    let dirs = Dirs::new();
    std::fs::create_dir_all(&dirs.user().key_dir).unwrap();
    let key_dir = &dirs.user().key_dir;
    std::fs::set_permissions(key_dir, std::fs::Permissions::from_mode(0o775)).unwrap();
    assert_falls_back(&dirs, &engine);
}

#[test]
fn two_hosts_compiling_at_once_both_succeed_and_leave_one_whole_entry() {
    let (dirs, engine) = (Dirs::new(), engine());
    let used: Vec<CacheUse> = std::thread::scope(|s| {
        let hosts: Vec<_> = ["a", "b", "c"]
            .map(|state| {
                let (dirs, engine) = (&dirs, &engine);
                s.spawn(move || load(&dirs.cache(state), engine))
            })
            .into_iter()
            .collect();
        hosts.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert!(
        used.iter()
            .all(|u| matches!(u, CacheUse::Miss | CacheUse::Hit)),
        "{used:?}"
    );
    dirs.compiled(&dirs.user().dir);
    assert!(
        dirs.entries(&dirs.user().dir)
            .iter()
            .all(|p| !p.to_string_lossy().ends_with(".tmp")),
        "no temporary file left"
    );
    assert_eq!(load(&dirs.cache("d"), &engine), CacheUse::Hit);
}

#[test]
fn a_disabled_cache_reads_and_writes_nothing() {
    let engine = engine();
    assert_eq!(load(&Cache::disabled(), &engine), CacheUse::Disabled);
}
