//! A second guard on environment locks, for the runs of one machine: the
//! host that holds an environment's lock in the run store also holds an
//! exclusive `flock` on `<state dir>/locks/<environment>.lock` for as long
//! as it runs (the kernel drops it when the process ends, however it
//! ends). A run store that lost the lock row of a running host (its WAL
//! removed under it) cannot let a second run on this machine change the
//! same environment meanwhile. A run paused for approval holds only the
//! store's lock: it has no process.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The lock, held until dropped.
#[derive(Debug)]
pub struct HostLock {
    _file: File,
}

/// Who holds the lock, as its holder wrote it into the file.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Holder {
    pub run: String,
    pub pid: u32,
    pub since: String,
    /// The lock file.
    #[serde(skip)]
    pub path: PathBuf,
}

/// The answer to [`try_take`].
#[derive(Debug)]
pub enum Taken {
    Yes(HostLock),
    /// Another process of this machine holds it.
    By(Holder),
}

/// The lock file of `environment` under `state_dir`.
pub fn path(state_dir: &Path, environment: &str) -> PathBuf {
    // Environment names are plain words (`pipeline::name_problem`); any
    // other text is spelt out rather than trusted as a file name.
    let name = match crate::pipeline::name_problem(environment) {
        None => environment.to_string(),
        Some(_) => format!("env-{}", hex::encode(environment)),
    };
    state_dir.join("locks").join(format!("{name}.lock"))
}

/// Take `environment`'s lock for `run` without waiting.
pub fn try_take(state_dir: &Path, environment: &str, run: &str) -> std::io::Result<Taken> {
    let path = path(state_dir, environment);
    std::fs::create_dir_all(path.parent().expect("in locks/"))?;
    // Never truncated before it is held: the holder's words stay readable.
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)?;
    match file.try_lock() {
        Ok(()) => {
            let me = Holder {
                run: run.to_string(),
                pid: std::process::id(),
                since: jiff::Timestamp::now().to_string(),
                path: PathBuf::new(),
            };
            file.set_len(0)?;
            file.rewind()?;
            file.write_all(serde_json::to_string(&me).expect("JSON").as_bytes())?;
            Ok(Taken::Yes(HostLock { _file: file }))
        }
        Err(TryLockError::WouldBlock) => {
            let mut text = String::new();
            file.read_to_string(&mut text)?;
            let holder = serde_json::from_str(&text).unwrap_or_default();
            Ok(Taken::By(Holder { path, ..holder }))
        }
        Err(TryLockError::Error(e)) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_holder_at_a_time_and_the_next_after_it_lets_go() {
        let dir = tempfile::tempdir().unwrap();
        let Taken::Yes(held) = try_take(dir.path(), "prod", "r1").unwrap() else {
            panic!("free")
        };
        // Another open file description, as another process has.
        match try_take(dir.path(), "prod", "r2").unwrap() {
            Taken::By(h) => {
                assert_eq!((h.run.as_str(), h.pid), ("r1", std::process::id()));
                assert_eq!(h.path, dir.path().join("locks/prod.lock"));
            }
            Taken::Yes(_) => panic!("taken twice"),
        }
        assert!(matches!(
            try_take(dir.path(), "dev", "r2").unwrap(),
            Taken::Yes(_)
        ));
        drop(held);
        assert!(matches!(
            try_take(dir.path(), "prod", "r2").unwrap(),
            Taken::Yes(_)
        ));
    }

    #[test]
    fn odd_environment_names_are_spelt_out() {
        assert_eq!(
            path(Path::new("/s"), "prod"),
            Path::new("/s/locks/prod.lock")
        );
        assert_eq!(
            path(Path::new("/s"), "../x"),
            Path::new("/s/locks/env-2e2e2f78.lock")
        );
    }
}
