//! The PostgreSQL store's schema versions, applied in one transaction under
//! an advisory lock: two processes opening a new database at once apply
//! them once (the second waits, then finds them applied).

use ::postgres::Client;

use super::{LOCK_CLASS, PgError};

/// Schema versions, oldest first. Append; never edit a released one.
const VERSIONS: &[&str] = &[include_str!("schema-1.sql"), include_str!("schema-2.sql")];

/// The advisory lock (with [`LOCK_CLASS`]) held while migrating.
const MIGRATION_LOCK: i32 = 2;

/// The table that records which versions are applied.
const VERSION_TABLE: &str = "capstan_schema_version";

/// Bring the database's schema to the latest version.
pub(super) fn to_latest(client: &mut Client) -> Result<(), PgError> {
    let mut tx = client.transaction().map_err(PgError::Migration)?;
    let migrated = (|| {
        tx.execute(
            "SELECT pg_advisory_xact_lock($1, $2)",
            &[&LOCK_CLASS, &MIGRATION_LOCK],
        )?;
        // Looked up rather than `CREATE … IF NOT EXISTS`: a role allowed
        // only to read and write the tables (once migrated) may not create.
        let exists: bool = tx
            .query_one(
                &format!("SELECT to_regclass('{VERSION_TABLE}') IS NOT NULL"),
                &[],
            )?
            .get(0);
        if !exists {
            tx.batch_execute(&format!(
                "CREATE TABLE {VERSION_TABLE} (
                    version integer PRIMARY KEY,
                    applied timestamptz NOT NULL DEFAULT now()
                )"
            ))?;
        }
        let current: i32 = tx
            .query_one(
                &format!("SELECT COALESCE(MAX(version), 0) FROM {VERSION_TABLE}"),
                &[],
            )?
            .get(0);
        Ok::<_, ::postgres::Error>(current)
    })();
    let current = migrated.map_err(PgError::Migration)?;
    let known = VERSIONS.len() as i32;
    if current > known {
        return Err(PgError::Newer { current, known });
    }
    for (version, sql) in (1..).zip(VERSIONS).skip(current as usize) {
        tx.batch_execute(sql)
            .and_then(|()| {
                tx.execute(
                    &format!("INSERT INTO {VERSION_TABLE} (version) VALUES ($1)"),
                    &[&version],
                )
            })
            .map_err(PgError::Migration)?;
    }
    tx.commit().map_err(PgError::Migration)
}

/// The latest schema version this Capstan knows.
#[cfg(test)]
pub(in crate::store) fn latest() -> i32 {
    VERSIONS.len() as i32
}
