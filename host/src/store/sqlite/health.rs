//! Whether the SQLite run store may be written, and how it is read when it
//! may not:
//!
//! - **After an unclean shutdown.** A WAL file with content when this
//!   process opens the store means its last user did not close it (a host
//!   killed, the machine stopped), or another process has it open now.
//!   Then `PRAGMA quick_check` runs before anything else (it reads every
//!   page: 0.33-0.42 s for 10 000 runs, 400 MB, so not on every open). A damaged
//!   store is refused to write commands and read with a warning by read
//!   commands; its WAL is kept (no checkpoint on close), so the next
//!   command checks again rather than find a clean-looking damaged file.
//! - **Read-only state dir.** A store this process cannot write is read
//!   read-only by read commands: through its WAL when the shared-memory
//!   index exists (or can be made), else as the database file alone
//!   (`immutable=1`); never migrated.
//! - **Files removed under a running host**: see [`super::watch`], which
//!   [`SqliteStore::guard`] consults before every write.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::config::DbConfig;
use rusqlite::{Connection, OpenFlags};

use super::{SqliteStore, connect, migrations};
use crate::store::{Result, StoreError};
use crate::text::inline;

/// What a command does with the run store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Only reads recorded runs (`runs`, `show`, `logs`, `stats`, `verify`,
    /// `audit --run`): a read-only or damaged store is still read.
    Read,
    /// Records (`run`, `resume`, `approve`, `reject`, `cancel`, `rollback`,
    /// `drift`).
    Write,
}

/// The commands of each kind, for messages.
const READERS: &str = "`capstan runs`, `show`, `logs`, `stats`, `verify` and `audit --run`";
const WRITERS: &str = "`run`, `resume`, `approve`, `reject`, `cancel`, `rollback` and `drift`";

/// `<db>-wal`, `<db>-shm`.
pub(super) fn sidecar(db: &Path, suffix: &str) -> PathBuf {
    let mut name = db.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

/// Whether `db` has a WAL file with content, looked at before this process
/// opens it: the last process that had it open did not close it, or one
/// has it open now. The last connection to close checkpoints the WAL and
/// removes it.
pub(super) fn hot_wal(db: &Path) -> bool {
    std::fs::metadata(sidecar(db, "-wal")).is_ok_and(|m| m.len() > 0)
}

/// `<db>-damaged`: what the last failed check found, left for every later
/// opener (the process that closes the store last may be one that never
/// checked it, and would remove the WAL that says it was not closed
/// cleanly). Removed by the first check that passes (a recovered store).
pub(super) fn damage_marker(db: &Path) -> PathBuf {
    sidecar(db, "-damaged")
}

/// Whether `db` is to be checked before use: not closed cleanly, or found
/// damaged before.
pub(super) fn suspect(db: &Path) -> bool {
    hot_wal(db) || damage_marker(db).exists()
}

/// Remember what a failed check found (where the directory can be written).
pub(super) fn remember_damage(db: &Path, problems: &[String]) {
    let _ = std::fs::write(damage_marker(db), problems.join("\n") + "\n");
}

/// The problems a failed check left in the marker, if it is there.
pub(super) fn remembered_damage(db: &Path) -> Option<Vec<String>> {
    let text = std::fs::read_to_string(damage_marker(db)).ok()?;
    Some(text.lines().map(str::to_string).collect())
}

/// The check passed: the store was recovered, or never damaged.
pub(super) fn forget_damage(db: &Path) {
    let _ = std::fs::remove_file(damage_marker(db));
}

/// `PRAGMA quick_check`: the problems it names (none: the store is sound).
/// A check that cannot even run is one.
pub(super) fn quick_check(conn: &Connection) -> Vec<String> {
    let rows = conn.prepare("PRAGMA quick_check").and_then(|mut q| {
        q.query_map([], |r| r.get::<_, String>(0))?
            .collect::<rusqlite::Result<Vec<_>>>()
    });
    match rows {
        Ok(rows) if rows == ["ok"] => Vec::new(),
        // One problem a line, without the header naming the schema.
        Ok(rows) => rows
            .iter()
            .flat_map(|r| r.lines())
            .filter(|l| !l.starts_with("*** in database"))
            .map(|l| l.trim().to_string())
            .collect(),
        Err(e) => vec![e.to_string()],
    }
}

/// Whether an error opening the store says its file is not a sound database.
pub(super) fn is_corrupt(e: &rusqlite::Error) -> bool {
    matches!(
        e.sqlite_error_code(),
        Some(rusqlite::ErrorCode::DatabaseCorrupt | rusqlite::ErrorCode::NotADatabase)
    )
}

/// Keep the WAL when `conn` closes: nothing is copied into a damaged
/// database, the evidence of the unclean shutdown stays for the next
/// command, and a WAL file another process made is never removed by name.
pub(super) fn keep_wal_on_close(conn: &Connection) {
    let _ = conn.set_db_config(DbConfig::SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, true);
}

/// The text of [`super::StoreError::Damaged`].
pub fn damaged(path: &str, problems: &[String]) -> String {
    let file = Path::new(path);
    let dir = file.parent().unwrap_or(Path::new("."));
    let name = file
        .file_name()
        .map_or("capstan.db".into(), |n| n.to_string_lossy());
    const SHOWN: usize = 5;
    let mut found: Vec<String> = problems
        .iter()
        .take(SHOWN)
        .map(|p| format!("    {}", inline(p.trim())))
        .collect();
    if problems.len() > SHOWN {
        found.push(format!("    … and {} more", problems.len() - SHOWN));
    }
    let q = |s: &str| shell_quote(s);
    format!(
        "run store {path} is damaged: `PRAGMA quick_check`, run because the store was not closed \
         cleanly (a host or the machine stopped while it was open), found:\n{found}\n  \
         Capstan records nothing in a damaged store. With no capstan running, recover its records \
         into a new file and keep the damaged ones:\n    \
         cd {dir} && sqlite3 {db} .recover | sqlite3 {new}\n    \
         for f in {db} {db}-wal {db}-shm; do [ ! -e \"$f\" ] || mv \"$f\" \"damaged-$f\"; done && mv {new} {db}\n  \
         (see \"When things go wrong\" in the README if your sqlite3 lacks .recover), or restore a copy \
         of {db}. Until then {READERS} still read it (with a warning); {WRITERS} refuse it.",
        found = found.join("\n"),
        dir = q(&dir.display().to_string()),
        db = q(&name),
        new = q(&format!("recovered-{name}")),
    )
}

/// The text of [`super::StoreError::ReadOnly`].
pub fn read_only(path: &str, why: &str) -> String {
    format!(
        "cannot record anything in the run store {path}: {why}. {WRITERS} need write access to \
         the store, its directory (for its -wal and -shm files) and the state dir; {READERS} work \
         without it"
    )
}

/// `s` as one shell word.
fn shell_quote(s: &str) -> String {
    if !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/._-+=:,@".contains(&b))
    {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// Why this process cannot write the store at `db` (its directory or the
/// file is read-only, or not writable by it); `None`: both are writable.
pub(super) fn unwritable(db: &Path) -> Option<String> {
    use nix::unistd::{AccessFlags, access};
    let dir = db
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    if let Err(e) = access(dir, AccessFlags::W_OK) {
        return Some(format!(
            "its directory {} is not writable ({})",
            dir.display(),
            e.desc()
        ));
    }
    match access(db, AccessFlags::W_OK) {
        Err(nix::errno::Errno::ENOENT) | Ok(()) => None,
        Err(e) => Some(format!("the file is not writable ({})", e.desc())),
    }
}

/// Open `db` read-only: through its WAL when its shared-memory index
/// exists or can be made, else the database file alone (`immutable=1`),
/// with a note when that leaves records out.
pub(super) fn open_read_only(db: &Path) -> rusqlite::Result<(Connection, Option<String>)> {
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY
        | OpenFlags::SQLITE_OPEN_URI
        | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let open = |name: &str| {
        let conn = Connection::open_with_flags(name, flags)?;
        conn.busy_timeout(Duration::from_secs(30))?;
        // Opening is lazy: read something to find out.
        conn.query_row("SELECT count(*) FROM sqlite_schema", [], |_| Ok(()))?;
        Ok(conn)
    };
    let first = match open(&uri(db, None)) {
        Ok(conn) => return Ok((conn, None)),
        Err(e) => e,
    };
    let Ok(conn) = open(&uri(db, Some("immutable=1"))) else {
        return Err(first);
    };
    // Without a WAL with content, the database file alone is all there is.
    let note = hot_wal(db).then(|| {
        format!(
            "the run store {} is read-only here and has no shared-memory file ({}) this process \
             could use or make: it is read as the database file alone, without what is recorded in \
             {} and not yet in the database file",
            db.display(),
            sidecar(db, "-shm").display(),
            sidecar(db, "-wal").display()
        )
    });
    Ok((conn, note))
}

/// `db` as an SQLite URI (`file:` with `?`, `#` and `%` escaped).
fn uri(db: &Path, query: Option<&str>) -> String {
    use percent_encoding::{AsciiSet, CONTROLS, percent_encode};
    const ESCAPED: &AsciiSet = &CONTROLS.add(b'?').add(b'#').add(b'%');
    let path = percent_encode(db.as_os_str().as_encoded_bytes(), ESCAPED);
    match query {
        Some(q) => format!("file:{path}?{q}"),
        None => format!("file:{path}"),
    }
}

/// What can be read of the damaged store at `db`, copied into a temporary
/// database of this Capstan's schema: each table read through its own
/// pages (`WHERE 1` keeps SQLite from copying its indexes page by page), so
/// a damaged index costs nothing and a damaged table only itself. Returns
/// the copy and the tables that could not be read.
pub(super) fn readable_copy(db: &Path) -> rusqlite::Result<(Connection, Vec<String>)> {
    // "": a temporary file of SQLite's own, removed when it closes.
    let mut copy = Connection::open_with_flags(
        "",
        OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_URI
            | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    super::migrations().to_latest(&mut copy).map_err(|e| {
        rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_ERROR),
            Some(format!("cannot make a copy of the store's schema: {e}")),
        )
    })?;
    keep_wal_on_close(&copy);
    copy.execute("ATTACH DATABASE ?1 AS damaged", [uri(db, Some("mode=ro"))])?;
    let columns = |schema: &str, table: &str| -> rusqlite::Result<Vec<String>> {
        let mut q = copy.prepare(&format!("PRAGMA {schema}.table_info(\"{table}\")"))?;
        q.query_map([], |r| r.get::<_, String>(1))?.collect()
    };
    let tables: Vec<String> = {
        let mut q = copy.prepare(
            "SELECT name FROM main.sqlite_schema WHERE type = 'table' AND name NOT LIKE 'sqlite_%'",
        )?;
        q.query_map([], |r| r.get(0))?
            .collect::<rusqlite::Result<_>>()?
    };
    let mut unread = Vec::new();
    for table in tables {
        let copied = columns("damaged", &table).and_then(|there| {
            let shared: Vec<String> = columns("main", &table)?
                .into_iter()
                .filter(|c| there.contains(c))
                .map(|c| format!("\"{c}\""))
                .collect();
            let shared = shared.join(", ");
            copy.execute(
                &format!(
                    "INSERT INTO main.\"{table}\" ({shared}) SELECT {shared} FROM damaged.\"{table}\" WHERE 1"
                ),
                [],
            )
        });
        if let Err(e) = copied {
            unread.push(format!("{table} ({e})"));
        }
    }
    copy.execute("DETACH DATABASE damaged", [])?;
    Ok((copy, unread))
}

/// The warning of a read command reading a damaged store (`damage`).
pub(super) fn reading_damaged(damage: &str, unread: &[String]) -> String {
    let unread = match unread {
        [] => String::new(),
        _ => format!(
            " These tables could not be read, and show as empty: {}.",
            unread.join("; ")
        ),
    };
    format!(
        "{damage}\n  Showing what can still be read of it (a copy read table by table, without its indexes).{unread}"
    )
}

/// Why a store opened for reading refuses writes.
#[derive(Debug, Clone)]
pub(super) enum Refusal {
    ReadOnly(String),
    Damaged(Vec<String>),
}

impl SqliteStore {
    /// Open a store this process cannot write (`why`), for reading.
    pub(super) fn read_only(path: &Path, why: String, hot: bool) -> Result<SqliteStore> {
        let text = path.display().to_string();
        let (mut conn, note) = open_read_only(path).map_err(|source| StoreError::Sqlite {
            path: text.clone(),
            source,
        })?;
        let migration = |source| StoreError::Migration {
            path: text.clone(),
            source,
        };
        let pending = migrations().pending_migrations(&conn).map_err(migration)?;
        if pending > 0 {
            let version: i64 = conn
                .pragma_query_value(None, "user_version", |r| r.get(0))
                .map_err(|source| StoreError::Sqlite {
                    path: text.clone(),
                    source,
                })?;
            return Err(StoreError::Outdated {
                path: text,
                version,
                latest: version + i64::from(pending),
            });
        }
        if pending < 0 {
            // A newer Capstan's store: the migration refuses it, writing nothing.
            migrations().to_latest(&mut conn).map_err(migration)?;
        }
        let warnings: Vec<String> = note.into_iter().collect();
        if hot {
            let problems = quick_check(&conn);
            if !problems.is_empty() {
                let e = StoreError::Damaged {
                    path: text,
                    problems: problems.clone(),
                };
                return SqliteStore::damaged_copy(path, e, problems, warnings);
            }
        }
        let refused = Some(Refusal::ReadOnly(why));
        Ok(SqliteStore::new(path, conn, refused, warnings))
    }

    /// A damaged store (`e`) for reading: what can be read of it, copied.
    pub(super) fn damaged_copy(
        path: &Path,
        e: StoreError,
        problems: Vec<String>,
        mut warnings: Vec<String>,
    ) -> Result<SqliteStore> {
        let (copy, unread) = readable_copy(path).map_err(|source| StoreError::Sqlite {
            path: path.display().to_string(),
            source,
        })?;
        warnings.push(reading_damaged(&e.to_string(), &unread));
        let refused = Some(Refusal::Damaged(problems));
        Ok(SqliteStore::new(path, copy, refused, warnings))
    }

    /// Before a write: refuse it in a store opened for reading, or when one
    /// of the store's files was removed or replaced since it was opened
    /// (then save what can be saved, reopen, and remember the fault).
    pub(super) fn guard(&self, conn: &mut Connection) -> Result<()> {
        let path = self.path.display().to_string();
        match &self.refused {
            Some(Refusal::ReadOnly(why)) => {
                return Err(StoreError::ReadOnly {
                    path,
                    why: why.clone(),
                });
            }
            Some(Refusal::Damaged(problems)) => {
                return Err(StoreError::Damaged {
                    path,
                    problems: problems.clone(),
                });
            }
            None => {}
        }
        // Another process found the store damaged since this one opened it.
        if let Some(problems) = remembered_damage(&self.path) {
            return Err(StoreError::Damaged { path, problems });
        }
        let mut watch = self.watch.lock().expect("watch lock");
        if let Some(what) = watch.broken_fault() {
            return Err(StoreError::Replaced { path, what });
        }
        let Some(change) = watch.changed(&self.path) else {
            return Ok(());
        };
        let what = watch.recover(conn, &self.path, &change, || connect(&self.path));
        Err(StoreError::Replaced { path, what })
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::store::{
        NewRun, Owner, RunFilter, RunKind, RunState, RunStore, SqliteStore, StoreError,
    };

    pub(crate) fn new_run(id: &str) -> NewRun {
        NewRun {
            id: id.into(),
            pipeline: "p".into(),
            pipeline_file: "/p/pipeline.toml".into(),
            pipeline_digest: "d".into(),
            environment: "dev".into(),
            author: "alice".into(),
            kind: RunKind::Deploy,
            target: None,
            undoes: None,
            only: vec![],
            run_dir: format!("/p/.capstan/runs/{id}"),
            started: "2026-11-26T10:00:00Z".into(),
            plugins: serde_json::json!([]),
            approvers: None,
            author_keys: Vec::new(),
        }
    }

    fn ids(store: &SqliteStore) -> Vec<String> {
        let mut ids: Vec<String> = store
            .runs(&RunFilter::default())
            .unwrap()
            .into_iter()
            .map(|r| r.id)
            .collect();
        ids.sort();
        ids
    }

    /// Overwrite the header of `index`'s root page in the database file.
    fn damage(db: &Path, index: &str) {
        let c = Connection::open_with_flags(
            uri(db, Some("immutable=1")),
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_URI,
        )
        .unwrap();
        let root: i64 = c
            .query_row(
                "SELECT rootpage FROM sqlite_schema WHERE name = ?1",
                [index],
                |r| r.get(0),
            )
            .unwrap();
        let size: i64 = c
            .pragma_query_value(None, "page_size", |r| r.get(0))
            .unwrap();
        use std::os::unix::fs::FileExt;
        let file = std::fs::OpenOptions::new().write(true).open(db).unwrap();
        file.write_all_at(&[0xff; 32], ((root - 1) * size) as u64)
            .unwrap();
    }

    #[test]
    fn a_damaged_store_found_open_is_refused_to_writers_and_copied_for_readers() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("capstan.db");
        let first = SqliteStore::open(&db).unwrap();
        first.create_run(&new_run("r1"), &Owner::current()).unwrap();
        // Closed cleanly: everything is in the database file, no WAL left.
        drop(first);
        assert!(!hot_wal(&db));
        let open = SqliteStore::open(&db).unwrap();
        open.create_run(&new_run("r2"), &Owner::current()).unwrap();
        // The store is open (its WAL has content) when an index is damaged.
        assert!(hot_wal(&db));
        // One the WAL holds no newer copy of (SQLite would read that one).
        damage(&db, "approvals_by_run");
        let refused = SqliteStore::open(&db).err().expect("refused");
        assert!(
            matches!(&refused, StoreError::Damaged { problems, .. } if !problems.is_empty()),
            "{refused}"
        );
        let reader = SqliteStore::open_for(&db, Access::Read).unwrap();
        assert!(!reader.writable());
        assert!(
            reader.warnings()[0].contains("is damaged")
                && reader.warnings()[0].contains("without its indexes"),
            "{:?}",
            reader.warnings()
        );
        // Read from a copy that does not use the damaged index.
        assert_eq!(ids(&reader), ["r1", "r2"]);
        assert_eq!(reader.run("r2").unwrap().status, RunState::Running);
        let write = reader.reap().expect_err("no writes").to_string();
        assert!(write.contains("is damaged"), "{write}");
        // The writer that had it open all along writes no more either.
        let write = open.create_run(&new_run("r3"), &Owner::current());
        assert!(
            matches!(write, Err(StoreError::Damaged { .. })),
            "{write:?}"
        );
        drop(reader);
        // The last to close removes the WAL: what was found stays.
        drop(open);
        assert!(!hot_wal(&db));
        assert!(SqliteStore::open(&db).is_err());

        // Recovered into a new file (as `.recover` would), put in place.
        let recovered = dir.path().join("recovered.db");
        let (copy, unread) = readable_copy(&db).unwrap();
        assert!(unread.is_empty(), "{unread:?}");
        copy.execute("VACUUM INTO ?1", [recovered.to_str().unwrap()])
            .unwrap();
        drop(copy);
        for suffix in ["-wal", "-shm"] {
            let _ = std::fs::remove_file(sidecar(&db, suffix));
        }
        std::fs::rename(&recovered, &db).unwrap();
        let store = SqliteStore::open(&db).expect("recovered");
        assert_eq!(ids(&store), ["r1", "r2"]);
        assert!(!damage_marker(&db).exists(), "the passing check forgot it");
    }

    #[test]
    fn an_outdated_store_read_read_only_says_how_to_upgrade_it() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("capstan.db");
        {
            let c = Connection::open(&db).unwrap();
            c.execute_batch(include_str!("../schema.sql")).unwrap();
            c.pragma_update(None, "user_version", 1).unwrap();
        }
        let e = SqliteStore::read_only(&db, "read-only".into(), false)
            .err()
            .expect("refused")
            .to_string();
        assert!(
            e.contains("has schema version 1, older than this Capstan's")
                && e.contains("run any write command (e.g. `capstan run`) once with write access"),
            "{e}"
        );
        // Migrated by a writer, it reads.
        drop(SqliteStore::open(&db).unwrap());
        let reader = SqliteStore::read_only(&db, "read-only".into(), false).unwrap();
        assert!(ids(&reader).is_empty());
        let write = reader.reap().expect_err("no writes").to_string();
        assert!(
            write.contains("cannot record anything in the run store")
                && write.contains("read-only"),
            "{write}"
        );
    }

    #[test]
    fn a_damaged_store_says_what_was_found_how_to_recover_and_what_still_works() {
        let problems: Vec<String> = (1..=7)
            .map(|i| format!("Page {i}: btreeInitPage() returns error code 11"))
            .collect();
        let text = damaged("/srv/my repo/.capstan/capstan.db", &problems);
        for part in [
            "run store /srv/my repo/.capstan/capstan.db is damaged",
            "not closed cleanly",
            "    Page 1: btreeInitPage() returns error code 11\n",
            "    Page 5: btreeInitPage()",
            "    … and 2 more",
            "cd '/srv/my repo/.capstan' && sqlite3 capstan.db .recover | sqlite3 recovered-capstan.db",
            "mv \"$f\" \"damaged-$f\"; done && mv recovered-capstan.db capstan.db",
            "restore a copy of capstan.db",
            "`capstan runs`, `show`, `logs`, `stats`, `verify` and `audit --run` still read it",
            "`run`, `resume`, `approve`, `reject`, `cancel`, `rollback` and `drift` refuse it",
        ] {
            assert!(text.contains(part), "{part:?} not in:\n{text}");
        }
        assert!(!text.contains("Page 6"), "{text}");
    }

    #[test]
    fn quoting_keeps_plain_paths_and_quotes_the_rest() {
        assert_eq!(shell_quote("/a/b.c-d_e"), "/a/b.c-d_e");
        assert_eq!(shell_quote("it's here"), r"'it'\''s here'");
        assert_eq!(shell_quote(""), "''");
    }

    #[test]
    fn uris_escape_what_sqlite_would_read_as_query_or_fragment() {
        assert_eq!(
            uri(Path::new("/a/100%?#/c.db"), Some("immutable=1")),
            "file:/a/100%25%3F%23/c.db?immutable=1"
        );
    }
}
