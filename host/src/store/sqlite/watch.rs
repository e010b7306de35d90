//! The store's files removed or replaced under a running host. They are
//! remembered by device and inode when the store opens, and looked at again
//! before every write ([`Watch`]; a running host also asks every few
//! seconds). One removed or replaced (a deleted `capstan.db-wal`) means
//! another process may now have a store of its own under the same name:
//! this process copies what only its WAL holds into the database file when
//! no other process has used the store since, reopens, and reports the
//! fault from then on, so that its run stops.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use rusqlite::Connection;

use super::health::{keep_wal_on_close, sidecar};

/// A file by device and inode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileId {
    dev: u64,
    ino: u64,
}

fn file_id(path: &Path) -> Option<FileId> {
    std::fs::metadata(path).ok().map(|m| FileId {
        dev: m.dev(),
        ino: m.ino(),
    })
}

/// When a file was last written, and its length.
fn stamp(path: &Path) -> Option<(i64, i64, u64)> {
    std::fs::metadata(path)
        .ok()
        .map(|m| (m.mtime(), m.mtime_nsec(), m.len()))
}

/// The store's three files as found at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Files {
    db: Option<FileId>,
    wal: Option<FileId>,
    shm: Option<FileId>,
}

impl Files {
    fn of(db: &Path) -> Files {
        Files {
            db: file_id(db),
            wal: file_id(&sidecar(db, "-wal")),
            shm: file_id(&sidecar(db, "-shm")),
        }
    }
}

/// One of the store's files is not the one this process opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Change {
    pub file: PathBuf,
    /// Removed (no file by that name), rather than replaced by another.
    pub gone: bool,
    /// The WAL (and maybe its index) went, and no other process has used
    /// the store since: what this connection wrote since the last
    /// checkpoint is in the WAL it still has open, and nobody else can have
    /// seen it missing yet.
    pub only_wal_gone: bool,
}

/// What a writer knows of the store's files: as opened, and the fault
/// found since, if any.
#[derive(Debug)]
pub(super) struct Watch {
    files: Files,
    /// The database file as this process last left it (after its last
    /// write, which may have checkpointed): changed since, another process
    /// has written into it.
    db: Option<(i64, i64, u64)>,
    /// Set when a file was found removed or replaced; every later health
    /// check reports it.
    fault: Option<String>,
    /// The store could not be reopened after the fault: no more writes.
    broken: bool,
}

impl Watch {
    /// The files of `db` as they are now, which `conn` has open.
    pub(super) fn new(db: &Path) -> Watch {
        Watch {
            files: Files::of(db),
            db: stamp(db),
            fault: None,
            broken: false,
        }
    }

    /// This process wrote (and maybe checkpointed): the database file is
    /// as it left it.
    pub(super) fn wrote(&mut self, db: &Path) {
        self.db = stamp(db);
    }

    pub(super) fn fault(&self) -> Option<&str> {
        self.fault.as_deref()
    }

    /// The fault, when the store could not be reopened after it: nothing
    /// can be read or written any more.
    pub(super) fn broken_fault(&self) -> Option<String> {
        self.broken.then(|| self.fault.clone().unwrap_or_default())
    }

    /// The first file of `db` removed or replaced since it was opened (a
    /// file that did not exist then is taken as it is now).
    pub(super) fn changed(&mut self, db: &Path) -> Option<Change> {
        let now = Files::of(db);
        let pairs = [
            (self.files.db, now.db, db.to_path_buf()),
            (self.files.wal, now.wal, sidecar(db, "-wal")),
            (self.files.shm, now.shm, sidecar(db, "-shm")),
        ];
        let change = pairs.into_iter().find_map(|(then, now, file)| {
            let then = then?;
            (now != Some(then)).then(|| (file, now.is_none()))
        });
        let Some((file, gone)) = change else {
            // Files made since (the WAL of a store just created) count from now.
            self.files = now;
            return None;
        };
        // No other process has made a WAL or an index of its own, nor
        // written into the database file (say, checkpointed a WAL of its
        // own and closed, removing it).
        let only_wal_gone = now.wal.is_none()
            && self.files.wal.is_some()
            && now.db == self.files.db
            && (now.shm.is_none() || now.shm == self.files.shm)
            && stamp(db) == self.db;
        Some(Change {
            file,
            gone,
            only_wal_gone,
        })
    }

    /// After `change`: copy what only `conn`'s WAL holds into the database
    /// file when that is safe, then replace `conn` by a new connection
    /// (`reconnect`) to the files as they are now. Records the fault and
    /// returns its text.
    pub(super) fn recover(
        &mut self,
        conn: &mut Connection,
        db: &Path,
        change: &Change,
        reconnect: impl FnOnce() -> rusqlite::Result<Connection>,
    ) -> String {
        let what = if change.gone { "removed" } else { "replaced" };
        let saved = if change.only_wal_gone {
            match checkpoint(conn) {
                Ok(true) => format!(
                    "what this process had recorded since the store's last checkpoint was still in the \
                     removed file, which it had open, and is now copied into {}",
                    db.display()
                ),
                Ok(false) => {
                    "what this process had recorded since the store's last checkpoint could be \
                     copied into the database only in part (other readers held it)"
                        .to_string()
                }
                Err(e) => format!(
                    "what this process had recorded since the store's last checkpoint could not be \
                     copied into the database ({e})"
                ),
            }
        } else {
            "what this process had recorded since the store's last checkpoint is not in the store any \
             more (another process has used the store since, and copying it in would damage what that \
             process recorded); the run directory's files keep it"
                .to_string()
        };
        // The old connection closes first, without a checkpoint (a WAL
        // another process made is never removed by it): a new one in this
        // process would share its index of the removed files.
        keep_wal_on_close(conn);
        let after = match Connection::open_in_memory() {
            Ok(placeholder) => {
                drop(std::mem::replace(conn, placeholder));
                let reopened = reconnect().and_then(|fresh| {
                    // Opening is lazy: read, so that its WAL exists to be watched.
                    fresh.query_row("PRAGMA user_version", [], |_| Ok(()))?;
                    Ok(fresh)
                });
                match reopened {
                    Ok(fresh) => {
                        *conn = fresh;
                        self.files = Files::of(db);
                        self.db = stamp(db);
                        "the store was reopened as its files are now".to_string()
                    }
                    Err(e) => {
                        self.broken = true;
                        format!("the store could not be reopened ({e}): nothing more is recorded")
                    }
                }
            }
            Err(e) => {
                self.broken = true;
                format!("the store could not be reopened ({e}): nothing more is recorded")
            }
        };
        let fault = format!(
            "{} was {what} while this process (pid {}) had the store open; {saved}; {after}. Another \
             process may have used the store without this process's latest records meanwhile, so this \
             process records no more of its run: it stops",
            change.file.display(),
            std::process::id()
        );
        self.fault = Some(fault.clone());
        fault
    }
}

/// Copy the WAL `conn` has open into the database file: whether all of it
/// went.
fn checkpoint(conn: &Connection) -> rusqlite::Result<bool> {
    let (busy, frames, copied): (i64, i64, i64) =
        conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })?;
    Ok(busy == 0 && frames == copied)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::store::sqlite::health::tests::new_run;
    use crate::store::{Owner, RunState, RunStore, SqliteStore};

    #[test]
    fn a_wal_removed_under_a_writer_is_found_and_what_only_it_held_saved() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("capstan.db");
        let store = SqliteStore::open(&db).unwrap();
        store.check_health().unwrap();
        store.create_run(&new_run("r1"), &Owner::current()).unwrap();
        std::fs::remove_file(sidecar(&db, "-wal")).unwrap();
        let e = store.check_health().expect_err("found").to_string();
        assert!(
            e.contains(&format!(
                "{} was removed while this process",
                sidecar(&db, "-wal").display()
            )) && e.contains("is now copied into")
                && e.contains("it stops"),
            "{e}"
        );
        // From then on, every health check says so; the stop is recorded.
        assert!(store.check_health().is_err());
        store
            .finish_run("r1", RunState::Interrupted, "t", None)
            .unwrap();
        drop(store);
        let after = SqliteStore::open(&db).unwrap();
        assert_eq!(after.run("r1").unwrap().status, RunState::Interrupted);
        after.check_health().unwrap();
    }

    #[test]
    fn a_database_another_process_wrote_into_meanwhile_gets_nothing_from_the_old_wal() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("capstan.db");
        let store = SqliteStore::open(&db).unwrap();
        store.create_run(&new_run("r1"), &Owner::current()).unwrap();
        std::fs::remove_file(sidecar(&db, "-wal")).unwrap();
        // Fixture: another process opened the store without the WAL, wrote,
        // checkpointed into the database file and closed, removing its files.
        let file = std::fs::OpenOptions::new().write(true).open(&db).unwrap();
        file.set_modified(std::time::SystemTime::now() + Duration::from_secs(5))
            .unwrap();
        let e = store.check_health().expect_err("found").to_string();
        assert!(e.contains("is not in the store any more"), "{e}");
    }

    #[test]
    fn a_wal_another_process_made_is_not_written_from_the_old_one() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("capstan.db");
        // Created and closed: the schema is in the database file.
        drop(SqliteStore::open(&db).unwrap());
        let store = SqliteStore::open(&db).unwrap();
        store.create_run(&new_run("r1"), &Owner::current()).unwrap();
        let wal = sidecar(&db, "-wal");
        std::fs::remove_file(&wal).unwrap();
        // Fixture: the new WAL another process makes when it opens the store.
        std::fs::write(&wal, b"").unwrap();
        let e = store
            .start_stage("r1", "build", "x", "t")
            .expect_err("refused")
            .to_string();
        assert!(
            e.contains(&format!(
                "{} was replaced while this process",
                wal.display()
            )) && e.contains("is not in the store any more"),
            "{e}"
        );
        assert!(store.check_health().is_err());
        assert!(wal.exists(), "the other process's WAL is left alone");
        // Reopened as the files are now: the run only the removed WAL held
        // is not there, and the store takes writes (the stop's records).
        let lost = store.run("r1").unwrap_err();
        assert!(lost.is_unknown_run(), "{lost}");
        store.create_run(&new_run("r2"), &Owner::current()).unwrap();
        assert_eq!(store.run("r2").unwrap().status, RunState::Running);
    }
}
