//! Where the run store is, as `--store` (or `$CAPSTAN_STORE`) says: a
//! SQLite file's path, or a PostgreSQL server's URL. A URL may hold a
//! password: it is shown (`Display`, `Debug`) without it.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::postgres::url;
use super::{Lease, PostgresStore, Result, RunStore, SqliteStore};

#[derive(Clone, PartialEq, Eq)]
pub enum Location {
    /// The embedded store: one SQLite file.
    Sqlite(PathBuf),
    /// A PostgreSQL server: a `postgres://` or `postgresql://` URL, as given.
    Postgres(String),
}

impl Location {
    /// A `--store` value: a URL if it starts with `postgres://` or
    /// `postgresql://`, else a path.
    pub fn parse(given: &str) -> Location {
        if url::is_postgres(given) {
            Location::Postgres(given.to_string())
        } else {
            Location::Sqlite(PathBuf::from(given))
        }
    }

    /// The file of a SQLite store.
    pub fn path(&self) -> Option<&Path> {
        match self {
            Location::Sqlite(path) => Some(path),
            Location::Postgres(_) => None,
        }
    }

    /// Open the store (creating a SQLite file, or a server's tables, on
    /// first use), taking leases of `lease`.
    pub fn open(&self, lease: Lease) -> Result<Arc<dyn RunStore>> {
        Ok(match self {
            Location::Sqlite(path) => Arc::new(SqliteStore::open(path)?.with_lease(lease)),
            Location::Postgres(url) => Arc::new(PostgresStore::open(url)?.with_lease(lease)),
        })
    }
}

/// A `--store` value as given on the command line (a path need not be
/// UTF-8).
impl From<std::ffi::OsString> for Location {
    fn from(given: std::ffi::OsString) -> Location {
        match given.into_string() {
            Ok(text) => Location::parse(&text),
            Err(path) => Location::Sqlite(PathBuf::from(path)),
        }
    }
}

impl std::fmt::Display for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Location::Sqlite(path) => write!(f, "{}", path.display()),
            Location::Postgres(given) => f.write_str(&url::redact(given)),
        }
    }
}

impl std::fmt::Debug for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Location::Sqlite(path) => f.debug_tuple("Sqlite").field(path).finish(),
            Location::Postgres(given) => f
                .debug_tuple("Postgres")
                .field(&url::redact(given))
                .finish(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_postgres_anything_else_a_path_and_no_form_shows_the_password() {
        for given in [
            "postgres://capstan:s3cret@db:5432/capstan",
            "postgresql://capstan:s3cret@db/capstan",
        ] {
            let location = Location::parse(given);
            assert!(matches!(&location, Location::Postgres(u) if u == given));
            assert_eq!(location.path(), None);
            let shown = format!("{location} {location:?}");
            assert!(
                !shown.contains("s3cret") && shown.contains("capstan:***@db"),
                "{shown}"
            );
        }
        for given in [
            "capstan.db",
            "/var/lib/capstan/runs.db",
            "postgres:/not-a-url",
        ] {
            assert_eq!(Location::parse(given), Location::Sqlite(given.into()));
        }
    }
}
