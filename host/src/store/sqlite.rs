//! The embedded run store: one SQLite file (`.capstan/capstan.db` by
//! default), WAL mode so that readers (`capstan runs`, `logs --follow`)
//! never block the run that writes, versioned migrations.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, Row, Transaction, TransactionBehavior, params};
use rusqlite_migration::{M, Migrations};
use serde_json::Value;

use super::fence::Fences;
use super::outcomes::{self, Names};
use super::rows::{self, Columns};
use super::*;

pub mod health;
mod watch;
pub use health::Access;
use health::Refusal;

/// Schema versions, oldest first. Append; never edit a released one.
fn migrations() -> Migrations<'static> {
    Migrations::new(vec![
        M::up(include_str!("schema.sql")),
        M::up(include_str!("schema-2.sql")),
        M::up(include_str!("schema-3.sql")),
        M::up(include_str!("schema-4.sql")),
        M::up(include_str!("schema-5.sql")),
        M::up(include_str!("schema-6.sql")),
        M::up(include_str!("schema-7.sql")),
        M::up(include_str!("schema-8.sql")),
    ])
}

/// The SQLite run store.
pub struct SqliteStore {
    path: PathBuf,
    conn: Mutex<Connection>,
    lease: Lease,
    fences: Fences,
    /// Why nothing may be written (a read command's read-only or damaged
    /// store); `None`: writable.
    refused: Option<Refusal>,
    /// What a reader of this store should know (see [`health`]).
    warnings: Vec<String>,
    /// The store's files as opened, and the fault found since.
    watch: Mutex<watch::Watch>,
}

const RUN_COLUMNS: &str = "id, pipeline, pipeline_file, pipeline_digest, environment, author, kind, \
    target, undoes, only_stages, run_dir, status, started, ended, verified, plugins, owner_pid, owner_start, owner_host, owner_host_id, audit_head, approvers, author_keys, lease_until";

const STAGE_COLUMNS: &str = "name, attempt, plugin, status, message, outputs, artifacts, report, started, ended, duration_ms";

/// [`RunStore::outcomes`]: every run but drift checks, with its timed
/// stage attempts (`stage_times`, schema version 8).
const OUTCOMES: &str = "SELECT id, environment, kind, undoes, status, started, ended, verified, \
    stage_times FROM runs WHERE kind <> 'drift'";

/// Rewrites `stage_times` of run ?1 from its stage attempts, as schema
/// version 8 first wrote it: when an attempt that was timed is ended again.
const STAGE_TIMES: &str = "UPDATE runs SET stage_times = ( \
        SELECT json_group_array( \
            json_array(name, duration_ms, json(iif(status = 'succeeded', 'true', 'false'))) \
        ) \
        FROM stages \
        WHERE run_id = ?1 AND status IN ('succeeded', 'failed') AND duration_ms IS NOT NULL \
    ) WHERE id = ?1";

/// Appends attempt ?2 (`[stage, duration_ms, succeeded]`) to `stage_times`
/// of run ?1: what a stage's end adds, without reading the run's other
/// stages (a long run would read them all at every stage).
const APPEND_STAGE_TIME: &str =
    "UPDATE runs SET stage_times = json_insert(stage_times, '$[#]', json(?2)) WHERE id = ?1";

/// Whether attempt (?1, ?2, ?3) is already in `stage_times`.
const WAS_TIMED: &str = "SELECT status IN ('succeeded', 'failed') AND duration_ms IS NOT NULL \
    FROM stages WHERE run_id = ?1 AND name = ?2 AND attempt = ?3";

/// Statements of the write paths, prepared once per connection: parsing
/// them again was a third of the cost of recording an audit event, and a
/// stage records several.
trait Cached {
    fn run(&self, sql: &str, params: impl rusqlite::Params) -> rusqlite::Result<usize>;
}

impl Cached for Connection {
    fn run(&self, sql: &str, params: impl rusqlite::Params) -> rusqlite::Result<usize> {
        self.prepare_cached(sql)?.execute(params)
    }
}

/// A connection to `path` as every writer has it.
fn connect(path: &Path) -> rusqlite::Result<Connection> {
    let conn = Connection::open(path)?;
    // Another process may be writing (a run, an approval): wait for it.
    conn.busy_timeout(Duration::from_secs(30))?;
    // Room for every statement of the write paths (see `Cached`).
    conn.set_prepared_statement_cache_capacity(64);
    conn.pragma_update(None, "journal_mode", "WAL")?;
    // In WAL mode NORMAL loses nothing a process crash could: committed
    // transactions are in the WAL file before the call returns.
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    Ok(conn)
}

impl SqliteStore {
    /// Open (creating it and its directory if needed) and migrate, to write.
    pub fn open(path: &Path) -> Result<SqliteStore> {
        SqliteStore::open_for(path, Access::Write)
    }

    /// Open for `access`. A store whose last user did not close it is
    /// checked first (`PRAGMA quick_check`); one that fails is refused for
    /// writing and read with a warning. For reading, a store this process
    /// cannot write is read read-only, not migrated (see [`health`]).
    pub fn open_for(path: &Path, access: Access) -> Result<SqliteStore> {
        let text = path.display().to_string();
        let sql = |source| StoreError::Sqlite {
            path: text.clone(),
            source,
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty())
            && !dir.is_dir()
        {
            std::fs::create_dir_all(dir).map_err(|e| {
                sql(rusqlite::Error::SqliteFailure(
                    rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_CANTOPEN),
                    Some(format!("cannot create {}: {e}", dir.display())),
                ))
            })?;
        }
        let damaged = |problems| StoreError::Damaged {
            path: text.clone(),
            problems,
        };
        // Looked at before this process makes a WAL of its own.
        let hot = health::suspect(path);
        let mut conn = match connect(path) {
            Ok(conn) if !conn.is_readonly(rusqlite::MAIN_DB).unwrap_or(false) => conn,
            Err(e) if health::is_corrupt(&e) => return Err(damaged(vec![e.to_string()])),
            opened => {
                let why = match (health::unwritable(path), opened) {
                    (Some(why), _) => why,
                    (None, Err(e)) => return Err(sql(e)),
                    (None, Ok(_)) => "SQLite can open it only read-only".to_string(),
                };
                return match access {
                    Access::Write => Err(StoreError::ReadOnly { path: text, why }),
                    Access::Read => SqliteStore::read_only(path, why, hot),
                };
            }
        };
        if hot {
            let problems = health::quick_check(&conn);
            if problems.is_empty() {
                health::forget_damage(path);
            } else {
                health::keep_wal_on_close(&conn);
                health::remember_damage(path, &problems);
                let e = damaged(problems.clone());
                if access == Access::Write {
                    return Err(e);
                }
                return SqliteStore::damaged_copy(path, e, problems, Vec::new());
            }
        }
        migrations()
            .to_latest(&mut conn)
            // Two processes opening a new store at once both see version 0;
            // one migration wins, the other fails on its tables. Once more
            // sees the winner's version.
            .or_else(|_| migrations().to_latest(&mut conn))
            .map_err(|source| StoreError::Migration {
                path: text.clone(),
                source,
            })?;
        Ok(SqliteStore::new(path, conn, None, Vec::new()))
    }

    /// The store, its files (all made by now) remembered as they are.
    fn new(
        path: &Path,
        conn: Connection,
        refused: Option<Refusal>,
        warnings: Vec<String>,
    ) -> SqliteStore {
        SqliteStore {
            path: path.to_path_buf(),
            conn: Mutex::new(conn),
            refused,
            warnings,
            watch: Mutex::new(watch::Watch::new(path)),
            lease: Lease::default(),
            fences: Fences::default(),
        }
    }

    /// Take and renew leases of this length (see [`lease`]).
    pub fn with_lease(mut self, lease: Lease) -> SqliteStore {
        self.lease = lease;
        self
    }

    /// Whether this store may be written (not a read command's read-only
    /// or damaged one).
    pub fn writable(&self) -> bool {
        self.refused.is_none()
    }

    /// What a reader of this store should be told (a damaged store, records
    /// left out of a read-only one).
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    /// Run `f` in one immediate (write-locking) transaction, if the store's
    /// files are still the ones this process opened.
    fn write<T>(&self, f: impl FnOnce(&Transaction) -> rusqlite::Result<T>) -> Result<T> {
        self.write_checked(|_| Ok(()), f)
    }

    /// [`Self::write`] about run `run`: refused if this process ran it and
    /// has lost it since (see [`fence`]).
    fn write_as<T>(
        &self,
        run: &str,
        f: impl FnOnce(&Transaction) -> rusqlite::Result<T>,
    ) -> Result<T> {
        let Some(mine) = self.fences.expected(run) else {
            return self.write(f);
        };
        self.write_checked(
            |tx| {
                let recorded = tx
                    .query_row(
                        "SELECT status, owner_pid, owner_start, owner_host, owner_host_id FROM runs WHERE id = ?1",
                        [run],
                        |r| Ok((word(r, 0, RunState::parse)?, rows::owner(r)?)),
                    )
                    .optional()
                    .map_err(|source| self.error(source))?;
                Fences::check(run, Some(&mine), recorded)
            },
            f,
        )
    }

    /// `check`, then `f`, in one immediate transaction.
    fn write_checked<T>(
        &self,
        check: impl FnOnce(&Transaction) -> Result<()>,
        f: impl FnOnce(&Transaction) -> rusqlite::Result<T>,
    ) -> Result<T> {
        let mut conn = self.conn.lock().expect("store lock");
        self.guard(&mut conn)?;
        let result = (|| {
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(|source| self.error(source))?;
            check(&tx)?;
            let value = f(&tx).map_err(|source| self.error(source))?;
            tx.commit().map_err(|source| self.error(source))?;
            Ok(value)
        })();
        self.watch.lock().expect("watch lock").wrote(&self.path);
        result
    }

    fn read<T>(&self, f: impl FnOnce(&Connection) -> rusqlite::Result<T>) -> Result<T> {
        let conn = self.conn.lock().expect("store lock");
        if let Some(what) = self.watch.lock().expect("watch lock").broken_fault() {
            return Err(StoreError::Replaced {
                path: self.path.display().to_string(),
                what,
            });
        }
        f(&conn).map_err(|source| self.error(source))
    }

    fn error(&self, source: rusqlite::Error) -> StoreError {
        let path = self.path.display().to_string();
        if source.sqlite_error_code() == Some(rusqlite::ErrorCode::DiskFull) {
            return StoreError::Full { path };
        }
        StoreError::Sqlite { path, source }
    }

    /// The id of the run `given` names ([`RunRef`]).
    fn resolve(&self, given: &str) -> Result<String> {
        run_id::resolve(given, &mut Ids(self))
    }
}

/// Name resolution's queries ([`run_id::resolve`]).
struct Ids<'a>(&'a SqliteStore);

impl run_id::Ids for Ids<'_> {
    type Error = StoreError;

    fn exact(&mut self, id: &str) -> Result<Option<String>> {
        self.0.read(|c| {
            c.query_row("SELECT id FROM runs WHERE id = ?1", [id], |r| r.get(0))
                .optional()
        })
    }

    fn named(&mut self, given: &str) -> Result<Vec<String>> {
        // `substr` compares bytes, as `names` does (`LIKE` would ignore case).
        self.0.read(|c| {
            let mut q = c.prepare(
                "SELECT id FROM runs WHERE ?1 <> '' \
                 AND (substr(id, 1, length(?1)) = ?1 OR substr(id, -length(?1)) = ?1)",
            )?;
            q.query_map([given], |r| r.get(0))?.collect()
        })
    }

    fn latest(&mut self, environment: Option<&str>) -> Result<Option<String>> {
        self.0.read(|c| {
            c.query_row(
                &format!(
                    "SELECT id FROM runs WHERE (?1 IS NULL OR environment = ?1) ORDER BY {NEWEST_FIRST} LIMIT 1"
                ),
                [environment],
                |r| r.get(0),
            )
            .optional()
        })
    }

    fn environments(&mut self) -> Result<Vec<String>> {
        self.0.read(|c| {
            let mut q = c.prepare("SELECT DISTINCT environment FROM runs ORDER BY environment")?;
            q.query_map([], |r| r.get(0))?.collect()
        })
    }
}

/// Newest first by start time. `started` is RFC 3339 text with as many
/// fractional digits as needed (`…:00Z`, `…:00.12Z`, `…:00.123Z`), which
/// does not sort as text; `julianday` compares it to the millisecond, and
/// the id breaks the rare tie.
const NEWEST_FIRST: &str = "julianday(started) DESC, id DESC";

impl Columns for Row<'_> {
    type Error = rusqlite::Error;

    fn text(&self, column: &str) -> rusqlite::Result<String> {
        self.get(column)
    }

    fn opt_text(&self, column: &str) -> rusqlite::Result<Option<String>> {
        self.get(column)
    }

    fn int(&self, column: &str) -> rusqlite::Result<i64> {
        self.get(column)
    }

    fn opt_int(&self, column: &str) -> rusqlite::Result<Option<i64>> {
        self.get(column)
    }

    fn flag(&self, column: &str) -> rusqlite::Result<bool> {
        self.get(column)
    }

    fn opt_flag(&self, column: &str) -> rusqlite::Result<Option<bool>> {
        self.get(column)
    }

    fn json(&self, column: &str) -> rusqlite::Result<Value> {
        Ok(rows::json(self.get(column)?))
    }

    fn opt_json(&self, column: &str) -> rusqlite::Result<Option<Value>> {
        Ok(self.get::<_, Option<String>>(column)?.map(rows::json))
    }

    fn unknown(&self, column: &str, value: &str) -> rusqlite::Error {
        rusqlite::Error::FromSqlConversionFailure(
            self.as_ref().column_index(column).unwrap_or(0),
            rusqlite::types::Type::Text,
            format!("unknown value `{value}`").into(),
        )
    }
}

/// Mark a run whose process died (or whose host lost its lease) as
/// interrupted, its running stages too, and release its lock unless
/// programs it started still run or may.
fn interrupt(tx: &Transaction, run: &str, why: &str) -> rusqlite::Result<()> {
    tx.run(
        "UPDATE runs SET status = 'interrupted' WHERE id = ?1 AND status = 'running'",
        [run],
    )?;
    tx.run(
        "UPDATE stages SET status = 'interrupted', message = ?2 WHERE run_id = ?1 AND status = 'running'",
        params![run, why],
    )?;
    // Programs it started outlive the host: the environment stays locked
    // until they end too (the next lock request sees them gone).
    if programs_left(tx, run)?.is_empty() {
        tx.run("DELETE FROM locks WHERE run_id = ?1", [run])?;
    }
    Ok(())
}

/// Programs the run started that still run, or may (see
/// [`lease::programs_left`]).
fn programs_left(conn: &Connection, run: &str) -> rusqlite::Result<Vec<Owner>> {
    let mut q = conn.prepare(
        "SELECT capability, stage, detail FROM audit_events \
         WHERE run_id = ?1 AND capability IN ('exec-started', 'exec-exit') ORDER BY id",
    )?;
    let rows: Vec<(String, String, String)> = q
        .query_map([run], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
        .collect::<rusqlite::Result<_>>()?;
    Ok(lease::programs_left(
        run,
        rows.iter()
            .map(|(capability, stage, detail)| lease::ExecEvent {
                capability,
                stage,
                detail,
            }),
    ))
}

/// The holder of `environment`'s lock, as recorded (children not looked for).
fn holder(conn: &Connection, environment: &str) -> rusqlite::Result<Option<LockHolder>> {
    conn.query_row(
        // The lock's owner is the process that runs (or last ran) the run: a
        // resume takes the lock over.
        "SELECT l.run_id, l.owner_pid, l.owner_start, l.owner_host, l.owner_host_id, l.acquired,
                l.lease_until, r.status, r.author
         FROM locks l LEFT JOIN runs r ON r.id = l.run_id WHERE l.environment = ?1",
        [environment],
        |r| rows::lock_holder(r, environment),
    )
    .optional()
}

/// Record a lock released without its run's consent.
fn record_release(tx: &Transaction, release: &LockRelease) -> rusqlite::Result<()> {
    tx.run(
        "INSERT INTO lock_releases (environment, run_id, holder, why, by, reason, at, lease_ended) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        params![
            release.environment,
            release.run_id,
            serde_json::to_string(&release.holder).expect("owners serialize"),
            release.why.as_str(),
            release.by,
            release.reason,
            release.at,
            release.lease_ended,
        ],
    )?;
    Ok(())
}

impl RunStore for SqliteStore {
    fn create_run(&self, run: &NewRun, owner: &Owner) -> Result<()> {
        self.write(|tx| {
            tx.run(
                &format!("INSERT INTO runs ({RUN_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, 'running', ?12, NULL, NULL, ?13, ?14, ?15, ?16, ?17, NULL, ?18, ?19, ?20)"),
                params![
                    run.id, run.pipeline, run.pipeline_file, run.pipeline_digest, run.environment,
                    run.author, run.kind.as_str(), run.target, run.undoes,
                    serde_json::to_string(&run.only).expect("strings serialize"),
                    run.run_dir, run.started, run.plugins.to_string(),
                    owner.pid, owner.start as i64, owner.host, owner.host_id, run.approvers,
                    serde_json::to_string(&run.author_keys).expect("strings serialize"),
                    self.lease.until(lease::now_ms()),
                ],
            )?;
            Ok(())
        })?;
        self.fences.claim(&run.id, owner);
        Ok(())
    }

    fn claim_run(&self, id: &str, owner: &Owner) -> Result<bool> {
        let until = self.lease.until(lease::now_ms());
        let claimed = self.write(|tx| {
            let changed = tx.run(
                "UPDATE runs SET status = 'running', ended = NULL, owner_pid = ?2, owner_start = ?3, owner_host = ?4,
                 owner_host_id = ?5, lease_until = ?6
                 WHERE id = ?1 AND status IN ('awaiting-approval', 'interrupted', 'failed')",
                params![id, owner.pid, owner.start as i64, owner.host, owner.host_id, until],
            )?;
            if changed == 1 {
                // The run's lock follows it to its new owner, whoever took
                // the lock a moment before.
                tx.run(
                    "UPDATE locks SET owner_pid = ?2, owner_start = ?3, owner_host = ?4, owner_host_id = ?5, lease_until = ?6
                     WHERE run_id = ?1",
                    params![id, owner.pid, owner.start as i64, owner.host, owner.host_id, until],
                )?;
            }
            Ok(changed == 1)
        })?;
        if claimed {
            self.fences.claim(id, owner);
        }
        Ok(claimed)
    }

    fn finish_run(
        &self,
        id: &str,
        status: RunState,
        at: &str,
        verified: Option<bool>,
    ) -> Result<()> {
        self.write_as(id, |tx| {
            tx.run(
                "UPDATE runs SET status = ?2, ended = ?3, verified = ?4 WHERE id = ?1",
                params![id, status.as_str(), at, verified],
            )?;
            if status != RunState::AwaitingApproval {
                tx.run("DELETE FROM pending_approvals WHERE run_id = ?1", [id])?;
            }
            Ok(())
        })
    }

    fn start_stage(&self, run: &str, stage: &str, plugin: &str, at: &str) -> Result<u32> {
        self.write_as(run, |tx| {
            let attempt: u32 = tx.query_row(
                "SELECT COALESCE(MAX(attempt), 0) + 1 FROM stages WHERE run_id = ?1 AND name = ?2",
                params![run, stage],
                |r| r.get(0),
            )?;
            tx.run(
                "INSERT INTO stages (run_id, name, attempt, plugin, status, started) VALUES (?1, ?2, ?3, ?4, 'running', ?5)",
                params![run, stage, attempt, plugin, at],
            )?;
            Ok(attempt)
        })
    }

    fn end_stage(&self, run: &str, attempt: Option<u32>, row: &StageRow) -> Result<()> {
        self.write_as(run, |tx| {
            let attempt = match attempt {
                Some(a) => a,
                None => tx.query_row(
                    "SELECT COALESCE(MAX(attempt), 0) + 1 FROM stages WHERE run_id = ?1 AND name = ?2",
                    params![run, row.name],
                    |r| r.get(0),
                )?,
            };
            let was_timed: bool = tx
                .query_row(WAS_TIMED, params![run, row.name, attempt], |r| r.get(0))
                .optional()?
                .unwrap_or(false);
            tx.run(
                &format!("INSERT OR REPLACE INTO stages (run_id, {STAGE_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)"),
                params![
                    run, row.name, attempt, row.plugin, row.status.as_str(), row.message,
                    row.outputs.to_string(), row.artifacts.to_string(),
                    row.report.as_ref().map(Value::to_string),
                    row.started, row.ended, row.duration_ms.map(|d| d as i64),
                ],
            )?;
            match row.stage_time() {
                _ if was_timed => tx.run(STAGE_TIMES, [run])?,
                Some(time) => tx.run(APPEND_STAGE_TIME, params![run, time.to_string()])?,
                None => 0,
            };
            if row.status != StageState::AwaitingApproval {
                tx.run(
                    "DELETE FROM pending_approvals WHERE run_id = ?1 AND stage = ?2",
                    params![run, row.name],
                )?;
            }
            Ok(())
        })
    }

    fn audit(&self, run: &str, e: &AuditRow, head: &str) -> Result<()> {
        self.write_as(run, |tx| {
            tx.run(
                "INSERT INTO audit_events (run_id, time, stage, plugin, capability, allowed, detail, reason) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                params![run, e.time, e.stage, e.plugin, e.capability.as_str(), e.allowed, e.detail.to_string(), e.reason],
            )?;
            tx.run(
                "UPDATE runs SET audit_head = ?2 WHERE id = ?1",
                params![run, head],
            )?;
            Ok(())
        })
    }

    fn ask_approval(&self, run: &str, pending: &PendingApproval) -> Result<()> {
        let request = serde_json::to_string(pending).expect("requests serialize");
        self.write_as(run, |tx| {
            tx.run(
                "INSERT OR REPLACE INTO pending_approvals (run_id, stage, request) VALUES (?1, ?2, ?3)",
                params![run, pending.stage, request],
            )?;
            Ok(())
        })
    }

    fn record_drift(&self, check: &DriftCheck) -> Result<()> {
        self.write(|tx| {
            tx.run(
                "INSERT INTO drift_checks (environment, run_id, checked, drifted, detail) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![check.environment, check.run_id, check.checked, check.drifted, check.detail.to_string()],
            )?;
            Ok(())
        })
    }

    fn drift_checks(&self, environment: Option<&str>) -> Result<Vec<DriftCheck>> {
        self.read(|c| {
            let mut q = c.prepare(
                "SELECT environment, run_id, checked, drifted, detail FROM drift_checks \
                 WHERE (?1 IS NULL OR environment = ?1) ORDER BY checked, id",
            )?;
            q.query_map([environment], |r| rows::drift_check(r))?
                .collect()
        })
    }

    fn record_approval(&self, run: &str, a: &ApprovalRow) -> Result<()> {
        self.write(|tx| {
            tx.run(
                "INSERT INTO approvals (run_id, stage, digest, decision, approver, at, comment, policy, override_reason, signature) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
                params![run, a.stage, a.digest, a.decision.as_str(), a.by, a.at, a.comment, a.policy.as_str(), a.override_reason, a.signature],
            )?;
            Ok(())
        })
    }

    fn run(&self, id: &str) -> Result<RunRow> {
        let id = self.resolve(id)?;
        self.read(|c| {
            c.query_row(
                &format!("SELECT {RUN_COLUMNS} FROM runs WHERE id = ?1"),
                [&id],
                |r| rows::run(r),
            )
        })
    }

    fn runs(&self, filter: &RunFilter) -> Result<Vec<RunRow>> {
        let limit = filter.limit.map_or(-1, |l| l as i64);
        self.read(|c| {
            let mut q = c.prepare(&format!(
                "SELECT {RUN_COLUMNS} FROM runs WHERE (?1 IS NULL OR environment = ?1) ORDER BY {NEWEST_FIRST} LIMIT ?2"
            ))?;
            q.query_map(params![filter.environment, limit], |r| rows::run(r))?
                .collect()
        })
    }

    fn last_attempt(&self, run: &str, stage: &str) -> Result<Option<StageRow>> {
        self.read(|c| {
            c.query_row(
                &format!(
                    "SELECT {STAGE_COLUMNS} FROM stages WHERE run_id = ?1 AND name = ?2 \
                     ORDER BY attempt DESC LIMIT 1"
                ),
                [run, stage],
                |r| rows::stage(r),
            )
            .optional()
        })
    }

    fn stages(&self, run: &str) -> Result<Vec<StageRow>> {
        self.read(|c| {
            let mut q = c.prepare(&format!(
                "SELECT {STAGE_COLUMNS} FROM stages WHERE run_id = ?1 ORDER BY COALESCE(started, ended, ''), attempt"
            ))?;
            q.query_map([run], |r| rows::stage(r))?.collect()
        })
    }

    fn outcomes(&self) -> Result<Vec<RunOutcome>> {
        let mut names = Names::default();
        self.read(|c| {
            // Columns by position, and text that is only looked at
            // borrowed: read by name (as `rows::run` does), they would cost
            // more than the query.
            c.prepare(OUTCOMES)?
                .query_map([], |r| {
                    let times = r.get_ref(8)?.as_str()?;
                    Ok(RunOutcome {
                        id: r.get(0)?,
                        environment: r.get(1)?,
                        kind: rows::kind(r.get_ref(2)?.as_str()?),
                        undoes: r.get(3)?,
                        status: rows::status(r.get_ref(4)?.as_str()?),
                        started: outcomes::time(r.get_ref(5)?.as_str()?),
                        ended: r.get_ref(6)?.as_str_or_null()?.and_then(outcomes::time),
                        verified: r.get(7)?,
                        stages: outcomes::stage_times(times, &mut names).map_err(|e| {
                            rusqlite::Error::FromSqlConversionFailure(
                                8,
                                rusqlite::types::Type::Text,
                                e.into(),
                            )
                        })?,
                    })
                })?
                .collect()
        })
    }

    fn approvals(&self, run: &str) -> Result<Vec<ApprovalRow>> {
        self.read(|c| {
            let mut q = c.prepare(
                "SELECT stage, digest, decision, approver, at, comment, policy, override_reason, signature FROM approvals WHERE run_id = ?1 ORDER BY id",
            )?;
            q.query_map([run], |r| rows::approval(r))?.collect()
        })
    }

    fn pending_approval(&self, run: &str) -> Result<Option<PendingApproval>> {
        let text: Option<String> = self.read(|c| {
            c.query_row(
                "SELECT request FROM pending_approvals WHERE run_id = ?1 ORDER BY stage LIMIT 1",
                [run],
                |r| r.get(0),
            )
            .optional()
        })?;
        text.as_deref().map(rows::request).transpose()
    }

    fn record_request(&self, run: &str, request: &PendingApproval) -> Result<()> {
        let text = serde_json::to_string(request).expect("requests serialize");
        self.write_as(run, |tx| {
            tx.run(
                "INSERT OR REPLACE INTO approval_requests (run_id, stage, digest, asked, request) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![run, request.stage, request.digest, request.asked, text],
            )?;
            Ok(())
        })
    }

    fn approval_requests(&self, run: &str) -> Result<Vec<PendingApproval>> {
        let texts: Vec<String> = self.read(|c| {
            let mut q = c.prepare(
                "SELECT request FROM approval_requests WHERE run_id = ?1 ORDER BY asked, rowid",
            )?;
            q.query_map([run], |r| r.get(0))?.collect()
        })?;
        texts.iter().map(|t| rows::request(t)).collect()
    }

    fn audit_events(&self, run: &str) -> Result<Vec<AuditRow>> {
        self.read(|c| {
            let mut q = c.prepare(
                "SELECT time, stage, plugin, capability, allowed, detail, reason FROM audit_events WHERE run_id = ?1 ORDER BY id",
            )?;
            q.query_map([run], |r| rows::audit_event(r))?.collect()
        })
    }

    fn try_lock(&self, environment: &str, run: &str, me: &Owner) -> Result<Lock> {
        self.write(|tx| {
            let now = lease::now_ms();
            let holder = holder(tx, environment)?;
            if let Some(h) = &holder
                && h.run_id == run
                && h.owner != *me
                && h.run_status == Some(RunState::Running)
                && lease::judge(h, now, Vec::new) == lease::Verdict::Held
            {
                // Another process is resuming this same run right now.
                return Ok(Lock::Held(h.clone()));
            }
            let mut released_stale = None;
            if let Some(h) = holder.filter(|h| h.run_id != run) {
                // Programs its dead host started count only where the host
                // is gone (read lazily: `--wait` polls this).
                match lease::judge(&h, now, || programs_left(tx, &h.run_id).unwrap_or_default()) {
                    lease::Verdict::Held => return Ok(Lock::Held(h)),
                    lease::Verdict::ProgramsLeft { children, lost } => {
                        return Ok(Lock::Held(LockHolder {
                            live_children: children,
                            lost,
                            ..h
                        }));
                    }
                    lease::Verdict::Free { why } => {
                        if h.run_status == Some(RunState::Running) {
                            interrupt(tx, &h.run_id, &lease::host_gone(&h.run_id, &h.owner, h.lease_until))?;
                        }
                        let release = lease::taken_over(&h, why, run, now);
                        record_release(tx, &release)?;
                        released_stale = Some(release);
                    }
                }
            }
            tx.run(
                "INSERT OR REPLACE INTO locks (environment, run_id, owner_pid, owner_start, owner_host, owner_host_id, acquired, lease_until) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                params![environment, run, me.pid, me.start as i64, me.host, me.host_id, lease::time_text(now), self.lease.until(now)],
            )?;
            Ok(Lock::Acquired { released_stale })
        })
    }

    fn unlock(&self, environment: &str, run: &str) -> Result<()> {
        // A process that lost the run leaves the lock to whoever took it.
        let mine = self.fences.expected(run);
        self.write(|tx| {
            match mine {
                Some(me) => tx.run(
                    "DELETE FROM locks WHERE environment = ?1 AND run_id = ?2 \
                     AND owner_pid = ?3 AND owner_start = ?4 AND owner_host_id = ?5",
                    params![environment, run, me.pid, me.start as i64, me.host_id],
                )?,
                None => tx.run(
                    "DELETE FROM locks WHERE environment = ?1 AND run_id = ?2",
                    params![environment, run],
                )?,
            };
            Ok(())
        })
    }

    fn lease(&self) -> Lease {
        self.lease
    }

    fn renew(&self, run: &str, owner: &Owner) -> Result<Renewal> {
        self.write(|tx| {
            let until = self.lease.until(lease::now_ms());
            let kept = tx.run(
                "UPDATE runs SET lease_until = ?2 WHERE id = ?1 AND status = 'running' \
                 AND owner_pid = ?3 AND owner_start = ?4 AND owner_host_id = ?5",
                params![run, until, owner.pid, owner.start as i64, owner.host_id],
            )?;
            if kept == 1 {
                tx.run(
                    "UPDATE locks SET lease_until = ?2 WHERE run_id = ?1 \
                     AND owner_pid = ?3 AND owner_start = ?4 AND owner_host_id = ?5",
                    params![run, until, owner.pid, owner.start as i64, owner.host_id],
                )?;
                let stop: Option<String> = tx.query_row(
                    "SELECT stop_request FROM runs WHERE id = ?1",
                    [run],
                    |r| r.get(0),
                )?;
                return Ok(Renewal::Kept {
                    until,
                    stop: stop.and_then(|s| serde_json::from_str(&s).ok()),
                });
            }
            let now: Option<(String, Owner)> = tx
                .query_row(
                    "SELECT status, owner_pid, owner_start, owner_host, owner_host_id FROM runs WHERE id = ?1",
                    [run],
                    |r| Ok((r.get(0)?, rows::owner(r)?)),
                )
                .optional()?;
            let forced: Option<(String, String)> = tx
                .query_row(
                    "SELECT by, COALESCE(reason, '') FROM lock_releases WHERE run_id = ?1 AND why = 'forced' \
                     ORDER BY id DESC LIMIT 1",
                    [run],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()?;
            let why = lease::lost_because(run, owner, now, forced);
            Ok(Renewal::Lost { why })
        })
    }

    fn request_stop(&self, run: &str, asked: &StopAsked) -> Result<bool> {
        let text = serde_json::to_string(asked).expect("requests serialize");
        self.write(|tx| {
            Ok(tx.run(
                "UPDATE runs SET stop_request = ?2 WHERE id = ?1 AND status = 'running'",
                params![run, text],
            )? == 1)
        })
    }

    fn force_unlock(
        &self,
        environment: &str,
        by: &str,
        reason: &str,
    ) -> Result<Option<LockRelease>> {
        self.write(|tx| {
            let Some(h) = holder(tx, environment)? else {
                return Ok(None);
            };
            let now = lease::now_ms();
            let release = LockRelease {
                environment: environment.to_string(),
                run_id: h.run_id.clone(),
                holder: h.owner.clone(),
                why: Release::Forced,
                by: by.to_string(),
                reason: Some(reason.to_string()),
                at: lease::time_text(now),
                lease_ended: h.lease_until.filter(|u| *u <= now).map(lease::time_text),
            };
            if h.run_status == Some(RunState::Running) {
                let why = lease::forced_because(environment, by, reason, &h.run_id);
                tx.run(
                    "UPDATE runs SET status = 'interrupted' WHERE id = ?1 AND status = 'running'",
                    [&h.run_id],
                )?;
                tx.run(
                    "UPDATE stages SET status = 'interrupted', message = ?2 WHERE run_id = ?1 AND status = 'running'",
                    params![h.run_id, why],
                )?;
            }
            tx.run("DELETE FROM locks WHERE environment = ?1", [environment])?;
            record_release(tx, &release)?;
            Ok(Some(release))
        })
    }

    fn lock_holder(&self, environment: &str) -> Result<Option<LockHolder>> {
        self.read(|c| {
            let Some(h) = holder(c, environment)? else {
                return Ok(None);
            };
            Ok(Some(
                match lease::judge(&h, lease::now_ms(), || {
                    programs_left(c, &h.run_id).unwrap_or_default()
                }) {
                    lease::Verdict::ProgramsLeft { children, lost } => LockHolder {
                        live_children: children,
                        lost,
                        ..h
                    },
                    _ => h,
                },
            ))
        })
    }

    fn lock_releases(&self, run: &str) -> Result<Vec<LockRelease>> {
        self.read(|c| {
            let mut q = c.prepare(
                "SELECT environment, run_id, holder, why, by, reason, at, lease_ended FROM lock_releases \
                 WHERE run_id = ?1 ORDER BY id",
            )?;
            q.query_map([run], |r| rows::lock_release(r))?.collect()
        })
    }

    fn reap(&self) -> Result<Vec<String>> {
        self.write(|tx| {
            let running: Vec<(String, Owner, Option<i64>)> = {
                let mut q = tx.prepare(
                    "SELECT id, owner_pid, owner_start, owner_host, owner_host_id, lease_until FROM runs WHERE status = 'running'",
                )?;
                q.query_map([], |r| Ok((r.get(0)?, rows::owner(r)?, r.get(5)?)))?
                    .collect::<rusqlite::Result<_>>()?
            };
            let now = lease::now_ms();
            let mut dead = Vec::new();
            for (id, owner, lease_until) in running {
                let gone = lease::gone(&owner, lease_until, now);
                if gone {
                    interrupt(tx, &id, &lease::host_gone(&id, &owner, lease_until))?;
                    dead.push(id);
                }
            }
            Ok(dead)
        })
    }

    fn check_health(&self) -> Result<()> {
        if !self.writable() {
            return Ok(());
        }
        let mut conn = self.conn.lock().expect("store lock");
        self.guard(&mut conn)?;
        match self.watch.lock().expect("watch lock").fault() {
            Some(what) => Err(StoreError::Replaced {
                path: self.path.display().to_string(),
                what: what.to_string(),
            }),
            None => Ok(()),
        }
    }
}

/// Column `index` as one of the words `parse` knows; an unknown word is an
/// error, never a guess (a decision that cannot be read counts for nothing).
fn word<T>(r: &Row, index: usize, parse: fn(&str) -> Option<T>) -> rusqlite::Result<T> {
    let text: String = r.get(index)?;
    parse(&text).ok_or_else(|| {
        rusqlite::Error::FromSqlConversionFailure(
            index,
            rusqlite::types::Type::Text,
            format!("unknown value `{text}`").into(),
        )
    })
}
