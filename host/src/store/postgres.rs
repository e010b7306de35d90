//! The run store on a PostgreSQL server, for teams: every runner and
//! reviewer sees the same runs, approvals and environment locks. It keeps
//! what the SQLite store keeps, with the same rules ([`rows`],
//! [`lease`], [`fence`], [`run_id`]); only the SQL differs.
//!
//! Every method is one transaction. Writes take one advisory lock first, so
//! they run one at a time as SQLite's do (a lock request reads, decides,
//! then writes: nothing may change in between); reads never wait for them.
//!
//! The client is `postgres` (synchronous), which runs a Tokio runtime of
//! its own and so must never be called on a thread of the host's runtime:
//! every call runs on a short-lived thread of its own ([`Link`]), which is
//! correct from sync and async code alike.
//!
//! The connection is TLS as the URL's `sslmode` says, with libpq's
//! meanings ([`tls`]): `prefer`, the default, encrypts when the server
//! offers it; `verify-full` checks who signed the server's certificate and
//! for which name.
//!
//! PostgreSQL text cannot hold NUL characters: in free text a plugin or a
//! person wrote (messages, reasons, comments) each is kept as U+FFFD.

mod link;
mod migrate;
mod tls;
pub mod url;

use std::borrow::Cow;
use std::time::SystemTime;

use ::postgres::fallible_iterator::FallibleIterator;
use ::postgres::{Row, Transaction};
use serde_json::Value;

use self::link::Link;
use super::fence::Fences;
use super::outcomes::{self, Names};
use super::rows::{self, Columns};
use super::*;

/// The class of Capstan's advisory locks (`pg_advisory_xact_lock(class,
/// id)`): "Caps".
const LOCK_CLASS: i32 = 0x4361_7073;
/// The advisory lock (with [`LOCK_CLASS`]) every write holds.
const WRITE_LOCK: i32 = 1;

/// What went wrong with a PostgreSQL run store (whose URL
/// [`StoreError::Postgres`] shows, without its password).
#[derive(Debug, thiserror::Error)]
pub enum PgError {
    #[error("invalid URL: {0}")]
    Url(String),
    /// A TLS parameter of the URL that cannot be used (a file that cannot
    /// be read, ...): which, and how to fix it.
    #[error("{0}")]
    TlsSetting(String),
    #[error("{}", said(.0))]
    Connect(#[source] ::postgres::Error),
    /// A connection that failed for TLS: what failed (the server's
    /// certificate is not trusted, is for another name, the server has no
    /// TLS...) and how to fix it.
    #[error("{what}; {fix}")]
    Tls {
        what: String,
        fix: String,
        #[source]
        source: ::postgres::Error,
    },
    #[error("{}", said(.0))]
    Query(#[source] ::postgres::Error),
    #[error("cannot migrate the schema: {}", said(.0))]
    Migration(#[source] ::postgres::Error),
    #[error(
        "its schema is version {current}, newer than this Capstan knows ({known}): \
         use the Capstan that wrote it, or a newer one"
    )]
    Newer { current: i32, known: i32 },
    #[error("a stored {column} is `{value}`, which this Capstan does not know")]
    Unknown { column: String, value: String },
    #[error("cannot start a thread to talk to the server: {0}")]
    Thread(#[source] std::io::Error),
}

/// What the client says, with its causes: its own text names only the kind
/// of failure ("db error").
pub(super) fn said(e: &::postgres::Error) -> String {
    let mut text = e.to_string();
    let mut cause = std::error::Error::source(e);
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    text
}

/// The message of [`StoreError::Postgres`]: a connection failure says what
/// to check.
pub(super) fn describe(url: &str, error: &PgError) -> String {
    match error {
        PgError::Connect(e) => format!(
            "cannot connect to the run store {url}: {}; {}",
            said(e),
            connect_hint(e)
        ),
        PgError::Tls { what, fix, .. } => {
            format!("cannot connect to the run store {url}: {what}; {fix}")
        }
        other => format!("run store {url}: {other}"),
    }
}

/// What to check when a connection fails the way `e` says.
fn connect_hint(e: &::postgres::Error) -> &'static str {
    use ::postgres::error::SqlState;
    match e.code() {
        Some(c)
            if *c == SqlState::INVALID_PASSWORD
                || *c == SqlState::INVALID_AUTHORIZATION_SPECIFICATION =>
        {
            "check the user and its password (in the URL, or $PGPASSWORD) and that the server \
             lets it connect from this host (pg_hba.conf)"
        }
        Some(c) if *c == SqlState::INVALID_CATALOG_NAME => {
            "create the database first (see the README, \"Choosing a store\")"
        }
        Some(_) => "check the URL and the server's settings",
        // The client's words: the server asked for a password.
        None if said(e).contains("password missing") => {
            "give the user's password (in the URL, or $PGPASSWORD)"
        }
        None => "is the server running, and reachable from this host?",
    }
}

/// A failure inside a transaction: the database's, or the store's.
pub(super) enum Fail {
    Db(::postgres::Error),
    Pg(PgError),
    Store(StoreError),
}

impl From<::postgres::Error> for Fail {
    fn from(e: ::postgres::Error) -> Fail {
        Fail::Db(e)
    }
}

impl From<StoreError> for Fail {
    fn from(e: StoreError) -> Fail {
        Fail::Store(e)
    }
}

type Tx<T> = std::result::Result<T, Fail>;

/// The PostgreSQL run store.
pub struct PostgresStore {
    link: Link,
    lease: Lease,
    fences: Fences,
}

const RUN_COLUMNS: &str = "id, pipeline, pipeline_file, pipeline_digest, environment, author, kind, \
    target, undoes, only_stages, run_dir, status, started, ended, verified, plugins, owner_pid, \
    owner_start, owner_host, owner_host_id, audit_head, approvers, author_keys";

const STAGE_COLUMNS: &str = "name, attempt, plugin, status, message, outputs, artifacts, report, started, ended, duration_ms";

/// [`RunStore::outcomes`]: every run but drift checks, with its timed
/// stage attempts (`stage_times`, schema version 2).
const OUTCOMES: &str = "SELECT id, environment, kind, undoes, status, started, ended, verified, \
    stage_times::text FROM runs WHERE kind <> 'drift'";

/// Rewrites `stage_times` of run $1 from its stage attempts, as schema
/// version 2 first wrote it: when an attempt that was timed is ended again.
const STAGE_TIMES: &str = "UPDATE runs SET stage_times = COALESCE(( \
        SELECT json_agg(json_build_array(name, duration_ms, status = 'succeeded')) \
        FROM stages \
        WHERE run_id = $1 AND status IN ('succeeded', 'failed') AND duration_ms IS NOT NULL \
    ), '[]') WHERE id = $1";

/// Appends attempts $2 (an array of `[stage, duration_ms, succeeded]`) to
/// `stage_times` of run $1: what a stage's end adds, without reading the
/// run's other stages (a long run would read them all at every stage).
const APPEND_STAGE_TIME: &str =
    "UPDATE runs SET stage_times = (stage_times::jsonb || $2::jsonb)::json WHERE id = $1";

/// Whether attempt ($1, $2, $3) is already in `stage_times`.
const WAS_TIMED: &str = "SELECT status IN ('succeeded', 'failed') AND duration_ms IS NOT NULL \
    FROM stages WHERE run_id = $1 AND name = $2 AND attempt = $3";

/// Newest first by start time (`started` as written has as many fractional
/// digits as needed, which does not sort as text); the id breaks the rare
/// tie. Runs whose start is not a time come last, as in SQLite.
const NEWEST_FIRST: &str = "started_at DESC NULLS LAST, id DESC";

impl PostgresStore {
    /// Connect to the server `url` names (a `postgres://` or
    /// `postgresql://` URL) and migrate its schema.
    pub fn open(url: &str) -> Result<PostgresStore> {
        let shown = url::redact(url);
        let (config, tls) = url::config(url).map_err(|source| StoreError::Postgres {
            url: shown.clone(),
            source,
        })?;
        let link = Link::open(config, tls, shown)?;
        Ok(PostgresStore {
            link,
            lease: Lease::default(),
            fences: Fences::default(),
        })
    }

    /// Take and renew leases of this length (see [`lease`]).
    pub fn with_lease(mut self, lease: Lease) -> PostgresStore {
        self.lease = lease;
        self
    }

    /// [`Link::write`] about run `run`: refused if this process ran it and
    /// has lost it since (see [`fence`]).
    fn write_as<T: Send>(
        &self,
        run: &str,
        f: impl FnOnce(&mut Transaction) -> Tx<T> + Send,
    ) -> Result<T> {
        let mine = self.fences.expected(run);
        self.link.write(|tx| {
            if let Some(mine) = &mine {
                let recorded = tx
                    .query_opt(
                        "SELECT status, owner_pid, owner_start, owner_host, owner_host_id FROM runs WHERE id = $1",
                        &[&run],
                    )?
                    .map(|r| -> Tx<(RunState, Owner)> {
                        let status = r.text("status")?;
                        Ok((
                            RunState::parse(&status).ok_or_else(|| r.unknown("status", &status))?,
                            rows::owner(&r)?,
                        ))
                    })
                    .transpose()?;
                Fences::check(run, Some(mine), recorded)?;
            }
            f(tx)
        })
    }
}

/// Free text, with the NUL characters PostgreSQL cannot hold as U+FFFD.
fn text(s: &str) -> Cow<'_, str> {
    if s.contains('\0') {
        Cow::Owned(s.replace('\0', "\u{FFFD}"))
    } else {
        Cow::Borrowed(s)
    }
}

fn opt_text(s: &Option<String>) -> Option<Cow<'_, str>> {
    s.as_deref().map(text)
}

/// `started` as an instant to sort by, if it is RFC 3339.
fn instant(started: &str) -> Option<SystemTime> {
    started
        .parse::<jiff::Timestamp>()
        .ok()
        .map(SystemTime::from)
}

fn strings(list: &[String]) -> Value {
    serde_json::to_value(list).expect("strings serialize")
}

impl Columns for Row {
    type Error = Fail;

    fn text(&self, column: &str) -> Tx<String> {
        Ok(self.try_get(column)?)
    }

    fn opt_text(&self, column: &str) -> Tx<Option<String>> {
        Ok(self.try_get(column)?)
    }

    fn int(&self, column: &str) -> Tx<i64> {
        Ok(self.try_get(column)?)
    }

    fn opt_int(&self, column: &str) -> Tx<Option<i64>> {
        Ok(self.try_get(column)?)
    }

    fn flag(&self, column: &str) -> Tx<bool> {
        Ok(self.try_get(column)?)
    }

    fn opt_flag(&self, column: &str) -> Tx<Option<bool>> {
        Ok(self.try_get(column)?)
    }

    fn json(&self, column: &str) -> Tx<Value> {
        Ok(self.try_get(column)?)
    }

    fn opt_json(&self, column: &str) -> Tx<Option<Value>> {
        Ok(self.try_get(column)?)
    }

    fn unknown(&self, column: &str, value: &str) -> Fail {
        Fail::Pg(PgError::Unknown {
            column: column.to_string(),
            value: value.to_string(),
        })
    }
}

/// Name resolution's queries ([`run_id::resolve`]), in one transaction.
struct Ids<'a, 'b>(&'a mut Transaction<'b>);

impl run_id::Ids for Ids<'_, '_> {
    type Error = Fail;

    fn exact(&mut self, id: &str) -> Tx<Option<String>> {
        let row = self
            .0
            .query_opt("SELECT id FROM runs WHERE id = $1", &[&id])?;
        Ok(row.map(|r| r.get(0)))
    }

    fn named(&mut self, given: &str) -> Tx<Vec<String>> {
        // Prefixes by the primary key, suffixes by the index of reversed
        // ids: no scan of every run.
        let prefix = format!("{}%", run_id::like_escaped(given));
        let reversed: String = given.chars().rev().collect();
        let suffix = format!("{}%", run_id::like_escaped(&reversed));
        let rows = self.0.query(
            r"SELECT id FROM runs WHERE id LIKE $1 ESCAPE '\' OR reverse(id) LIKE $2 ESCAPE '\'",
            &[&prefix, &suffix],
        )?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    fn latest(&mut self, environment: Option<&str>) -> Tx<Option<String>> {
        let row = self.0.query_opt(
            &format!(
                "SELECT id FROM runs WHERE ($1::text IS NULL OR environment = $1) \
                 ORDER BY {NEWEST_FIRST} LIMIT 1"
            ),
            &[&environment],
        )?;
        Ok(row.map(|r| r.get(0)))
    }

    fn environments(&mut self) -> Tx<Vec<String>> {
        let rows = self.0.query(
            "SELECT DISTINCT environment FROM runs ORDER BY environment",
            &[],
        )?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }
}

/// The server's clock, in Unix milliseconds: every host's leases are
/// measured by it, so hosts' clocks need not agree.
fn now_ms(tx: &mut Transaction) -> Tx<i64> {
    Ok(tx
        .query_one(
            "SELECT (extract(epoch FROM clock_timestamp()) * 1000)::bigint",
            &[],
        )?
        .get(0))
}

/// Mark a run whose process died (or whose host lost its lease) as
/// interrupted, its running stages too, and release its lock unless
/// programs it started still run or may.
fn interrupt(tx: &mut Transaction, run: &str, why: &str) -> Tx<()> {
    tx.execute(
        "UPDATE runs SET status = 'interrupted' WHERE id = $1 AND status = 'running'",
        &[&run],
    )?;
    tx.execute(
        "UPDATE stages SET status = 'interrupted', message = $2 WHERE run_id = $1 AND status = 'running'",
        &[&run, &why],
    )?;
    if programs_left(tx, run)?.is_empty() {
        tx.execute("DELETE FROM locks WHERE run_id = $1", &[&run])?;
    }
    Ok(())
}

/// Programs the run started that still run, or may
/// ([`lease::programs_left`]).
fn programs_left(tx: &mut Transaction, run: &str) -> Tx<Vec<Owner>> {
    let rows: Vec<(String, String, String)> = tx
        .query(
            "SELECT capability, stage, detail::text FROM audit_events \
             WHERE run_id = $1 AND capability IN ('exec-started', 'exec-exit') ORDER BY id",
            &[&run],
        )?
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
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
fn holder(tx: &mut Transaction, environment: &str) -> Tx<Option<LockHolder>> {
    tx.query_opt(
        // The lock's owner is the process that runs (or last ran) the run: a
        // resume takes the lock over.
        "SELECT l.run_id, l.owner_pid, l.owner_start, l.owner_host, l.owner_host_id, l.acquired, \
         l.lease_until, r.status, r.author \
         FROM locks l LEFT JOIN runs r ON r.id = l.run_id WHERE l.environment = $1",
        &[&environment],
    )?
    .map(|r| rows::lock_holder(&r, environment))
    .transpose()
}

/// Record a lock released without its run's consent.
fn record_release(tx: &mut Transaction, release: &LockRelease) -> Tx<()> {
    tx.execute(
        "INSERT INTO lock_releases (environment, run_id, holder, why, by, reason, at, lease_ended) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        &[
            &release.environment,
            &release.run_id,
            &serde_json::to_string(&release.holder).expect("owners serialize"),
            &release.why.as_str(),
            &text(&release.by),
            &opt_text(&release.reason),
            &release.at,
            &release.lease_ended,
        ],
    )?;
    Ok(())
}

/// The next attempt number of a stage.
fn next_attempt(tx: &mut Transaction, run: &str, stage: &str) -> Tx<i64> {
    Ok(tx
        .query_one(
            "SELECT COALESCE(MAX(attempt), 0) + 1 FROM stages WHERE run_id = $1 AND name = $2",
            &[&run, &stage],
        )?
        .get(0))
}

impl RunStore for PostgresStore {
    fn create_run(&self, run: &NewRun, owner: &Owner) -> Result<()> {
        self.link.write(|tx| {
            let until = self.lease.until(now_ms(tx)?);
            tx.execute(
                "INSERT INTO runs (id, pipeline, pipeline_file, pipeline_digest, environment, author, \
                 kind, target, undoes, only_stages, run_dir, status, started, started_at, plugins, \
                 owner_pid, owner_start, owner_host, approvers, author_keys, owner_host_id, lease_until) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, 'running', $12, $13, $14, \
                 $15, $16, $17, $18, $19, $20, $21)",
                &[
                    &run.id,
                    &run.pipeline,
                    &run.pipeline_file,
                    &run.pipeline_digest,
                    &run.environment,
                    &run.author,
                    &run.kind.as_str(),
                    &run.target,
                    &run.undoes,
                    &strings(&run.only),
                    &run.run_dir,
                    &run.started,
                    &instant(&run.started),
                    &run.plugins,
                    &i64::from(owner.pid),
                    &(owner.start as i64),
                    &owner.host,
                    &run.approvers,
                    &strings(&run.author_keys),
                    &owner.host_id,
                    &until,
                ],
            )?;
            Ok(())
        })?;
        self.fences.claim(&run.id, owner);
        Ok(())
    }

    fn claim_run(&self, id: &str, owner: &Owner) -> Result<bool> {
        let (pid, start) = (i64::from(owner.pid), owner.start as i64);
        let claimed = self.link.write(|tx| {
            let until = self.lease.until(now_ms(tx)?);
            let changed = tx.execute(
                "UPDATE runs SET status = 'running', ended = NULL, owner_pid = $2, owner_start = $3, owner_host = $4, \
                 owner_host_id = $5, lease_until = $6, stop_request = NULL \
                 WHERE id = $1 AND status IN ('awaiting-approval', 'interrupted', 'failed')",
                &[&id, &pid, &start, &owner.host, &owner.host_id, &until],
            )?;
            if changed == 1 {
                // The run's lock follows it to its new owner, whoever took
                // the lock a moment before.
                tx.execute(
                    "UPDATE locks SET owner_pid = $2, owner_start = $3, owner_host = $4, owner_host_id = $5, \
                     lease_until = $6 WHERE run_id = $1",
                    &[&id, &pid, &start, &owner.host, &owner.host_id, &until],
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
            tx.execute(
                "UPDATE runs SET status = $2, ended = $3, verified = $4 WHERE id = $1",
                &[&id, &status.as_str(), &at, &verified],
            )?;
            if status != RunState::AwaitingApproval {
                tx.execute("DELETE FROM pending_approvals WHERE run_id = $1", &[&id])?;
            }
            Ok(())
        })
    }

    fn start_stage(&self, run: &str, stage: &str, plugin: &str, at: &str) -> Result<u32> {
        self.write_as(run, |tx| {
            let attempt = next_attempt(tx, run, stage)?;
            tx.execute(
                "INSERT INTO stages (run_id, name, attempt, plugin, status, started) VALUES ($1, $2, $3, $4, 'running', $5)",
                &[&run, &stage, &attempt, &plugin, &at],
            )?;
            Ok(attempt as u32)
        })
    }

    fn end_stage(&self, run: &str, attempt: Option<u32>, row: &StageRow) -> Result<()> {
        self.write_as(run, |tx| {
            let attempt = match attempt {
                Some(a) => i64::from(a),
                None => next_attempt(tx, run, &row.name)?,
            };
            let was_timed = tx
                .query_opt(WAS_TIMED, &[&run, &row.name, &attempt])?
                .is_some_and(|r| r.get::<_, bool>(0));
            tx.execute(
                &format!(
                    "INSERT INTO stages (run_id, {STAGE_COLUMNS}) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) \
                     ON CONFLICT (run_id, name, attempt) DO UPDATE SET plugin = EXCLUDED.plugin, \
                     status = EXCLUDED.status, message = EXCLUDED.message, outputs = EXCLUDED.outputs, \
                     artifacts = EXCLUDED.artifacts, report = EXCLUDED.report, started = EXCLUDED.started, \
                     ended = EXCLUDED.ended, duration_ms = EXCLUDED.duration_ms"
                ),
                &[
                    &run,
                    &row.name,
                    &attempt,
                    &row.plugin,
                    &row.status.as_str(),
                    &text(&row.message),
                    &row.outputs,
                    &row.artifacts,
                    &row.report,
                    &row.started,
                    &row.ended,
                    &row.duration_ms.map(|d| d as i64),
                ],
            )?;
            match row.stage_time() {
                _ if was_timed => tx.execute(STAGE_TIMES, &[&run])?,
                Some(time) => tx.execute(APPEND_STAGE_TIME, &[&run, &Value::Array(vec![time])])?,
                None => 0,
            };
            if row.status != StageState::AwaitingApproval {
                tx.execute(
                    "DELETE FROM pending_approvals WHERE run_id = $1 AND stage = $2",
                    &[&run, &row.name],
                )?;
            }
            Ok(())
        })
    }

    fn audit(&self, run: &str, e: &AuditRow, head: &str) -> Result<()> {
        self.write_as(run, |tx| {
            tx.execute(
                "INSERT INTO audit_events (run_id, time, stage, plugin, capability, allowed, detail, reason) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                &[
                    &run,
                    &e.time,
                    &e.stage,
                    &e.plugin,
                    &e.capability.as_str(),
                    &e.allowed,
                    &e.detail,
                    &opt_text(&e.reason),
                ],
            )?;
            tx.execute(
                "UPDATE runs SET audit_head = $2 WHERE id = $1",
                &[&run, &head],
            )?;
            Ok(())
        })
    }

    fn ask_approval(&self, run: &str, pending: &PendingApproval) -> Result<()> {
        let request = serde_json::to_value(pending).expect("requests serialize");
        self.write_as(run, |tx| {
            tx.execute(
                "INSERT INTO pending_approvals (run_id, stage, request) VALUES ($1, $2, $3) \
                 ON CONFLICT (run_id, stage) DO UPDATE SET request = EXCLUDED.request",
                &[&run, &pending.stage, &request],
            )?;
            Ok(())
        })
    }

    fn record_approval(&self, run: &str, a: &ApprovalRow) -> Result<()> {
        self.link.write(|tx| {
            tx.execute(
                "INSERT INTO approvals (run_id, stage, digest, decision, approver, at, comment, policy, \
                 override_reason, signature) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
                &[
                    &run,
                    &a.stage,
                    &a.digest,
                    &a.decision.as_str(),
                    &a.by,
                    &a.at,
                    &opt_text(&a.comment),
                    &a.policy.as_str(),
                    &opt_text(&a.override_reason),
                    &a.signature,
                ],
            )?;
            Ok(())
        })
    }

    fn run(&self, id: &str) -> Result<RunRow> {
        self.link.read(|tx| {
            let id = run_id::resolve(id, &mut Ids(tx))?;
            let row = tx.query_one(
                &format!("SELECT {RUN_COLUMNS} FROM runs WHERE id = $1"),
                &[&id],
            )?;
            rows::run(&row)
        })
    }

    fn runs(&self, filter: &RunFilter) -> Result<Vec<RunRow>> {
        let limit = filter.limit.map(|l| l as i64);
        self.link.read(|tx| {
            tx.query(
                &format!(
                    "SELECT {RUN_COLUMNS} FROM runs WHERE ($1::text IS NULL OR environment = $1) \
                     ORDER BY {NEWEST_FIRST} LIMIT $2"
                ),
                &[&filter.environment, &limit],
            )?
            .iter()
            .map(rows::run)
            .collect()
        })
    }

    fn last_attempt(&self, run: &str, stage: &str) -> Result<Option<StageRow>> {
        self.link.read(|tx| {
            tx.query_opt(
                &format!(
                    "SELECT {STAGE_COLUMNS} FROM stages WHERE run_id = $1 AND name = $2 \
                     ORDER BY attempt DESC LIMIT 1"
                ),
                &[&run, &stage],
            )?
            .as_ref()
            .map(rows::stage)
            .transpose()
        })
    }

    fn stages(&self, run: &str) -> Result<Vec<StageRow>> {
        self.link.read(|tx| {
            tx.query(
                &format!(
                    "SELECT {STAGE_COLUMNS} FROM stages WHERE run_id = $1 \
                     ORDER BY COALESCE(started, ended, ''), attempt"
                ),
                &[&run],
            )?
            .iter()
            .map(rows::stage)
            .collect()
        })
    }

    fn outcomes(&self) -> Result<Vec<RunOutcome>> {
        let mut names = Names::default();
        self.link.read(|tx| {
            let mut runs = Vec::new();
            let mut read = tx.query_raw(OUTCOMES, std::iter::empty::<&str>())?;
            while let Some(r) = read.next()? {
                let times = outcomes::stage_times(r.try_get(8)?, &mut names).map_err(|source| {
                    StoreError::Json {
                        what: "run's list of stage times",
                        source,
                    }
                })?;
                runs.push(RunOutcome {
                    id: r.try_get(0)?,
                    environment: r.try_get(1)?,
                    kind: rows::kind(r.try_get(2)?),
                    undoes: r.try_get(3)?,
                    status: rows::status(r.try_get(4)?),
                    started: outcomes::time(r.try_get(5)?),
                    ended: r.try_get::<_, Option<&str>>(6)?.and_then(outcomes::time),
                    verified: r.try_get(7)?,
                    stages: times,
                });
            }
            Ok(runs)
        })
    }

    fn approvals(&self, run: &str) -> Result<Vec<ApprovalRow>> {
        self.link.read(|tx| {
            tx.query(
                "SELECT stage, digest, decision, approver, at, comment, policy, override_reason, signature \
                 FROM approvals WHERE run_id = $1 ORDER BY id",
                &[&run],
            )?
            .iter()
            .map(rows::approval)
            .collect()
        })
    }

    fn pending_approval(&self, run: &str) -> Result<Option<PendingApproval>> {
        self.link.read(|tx| {
            let row = tx.query_opt(
                "SELECT request::text FROM pending_approvals WHERE run_id = $1 ORDER BY stage LIMIT 1",
                &[&run],
            )?;
            Ok(row
                .map(|r| rows::request(r.get::<_, &str>(0)))
                .transpose()?)
        })
    }

    fn record_request(&self, run: &str, request: &PendingApproval) -> Result<()> {
        let value = serde_json::to_value(request).expect("requests serialize");
        self.write_as(run, |tx| {
            // Replaced by a new row (not updated): a request asked again
            // sorts after those asked before it.
            tx.execute(
                "DELETE FROM approval_requests WHERE run_id = $1 AND stage = $2 AND digest = $3",
                &[&run, &request.stage, &request.digest],
            )?;
            tx.execute(
                "INSERT INTO approval_requests (run_id, stage, digest, asked, request) VALUES ($1, $2, $3, $4, $5)",
                &[&run, &request.stage, &request.digest, &request.asked, &value],
            )?;
            Ok(())
        })
    }

    fn approval_requests(&self, run: &str) -> Result<Vec<PendingApproval>> {
        self.link.read(|tx| {
            tx.query(
                "SELECT request::text FROM approval_requests WHERE run_id = $1 ORDER BY asked, seq",
                &[&run],
            )?
            .iter()
            .map(|r| Ok(rows::request(r.get::<_, &str>(0))?))
            .collect()
        })
    }

    fn audit_events(&self, run: &str) -> Result<Vec<AuditRow>> {
        self.link.read(|tx| {
            tx.query(
                "SELECT time, stage, plugin, capability, allowed, detail, reason FROM audit_events \
                 WHERE run_id = $1 ORDER BY id",
                &[&run],
            )?
            .iter()
            .map(rows::audit_event)
            .collect()
        })
    }

    fn record_drift(&self, check: &DriftCheck) -> Result<()> {
        self.link.write(|tx| {
            tx.execute(
                "INSERT INTO drift_checks (environment, run_id, checked, drifted, detail) VALUES ($1, $2, $3, $4, $5)",
                &[
                    &check.environment,
                    &check.run_id,
                    &check.checked,
                    &check.drifted,
                    &check.detail,
                ],
            )?;
            Ok(())
        })
    }

    fn drift_checks(&self, environment: Option<&str>) -> Result<Vec<DriftCheck>> {
        self.link.read(|tx| {
            tx.query(
                "SELECT environment, run_id, checked, drifted, detail FROM drift_checks \
                 WHERE ($1::text IS NULL OR environment = $1) ORDER BY checked, id",
                &[&environment],
            )?
            .iter()
            .map(rows::drift_check)
            .collect()
        })
    }

    fn try_lock(&self, environment: &str, run: &str, me: &Owner) -> Result<Lock> {
        self.link.write(|tx| {
            let now = now_ms(tx)?;
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
                let mut left = Ok(Vec::new());
                let verdict = lease::judge(&h, now, || {
                    left = programs_left(tx, &h.run_id);
                    left.as_ref().map(Vec::clone).unwrap_or_default()
                });
                left?;
                match verdict {
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
            tx.execute(
                "INSERT INTO locks (environment, run_id, owner_pid, owner_start, owner_host, owner_host_id, acquired, lease_until) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (environment) DO UPDATE SET \
                 run_id = EXCLUDED.run_id, owner_pid = EXCLUDED.owner_pid, owner_start = EXCLUDED.owner_start, \
                 owner_host = EXCLUDED.owner_host, owner_host_id = EXCLUDED.owner_host_id, \
                 acquired = EXCLUDED.acquired, lease_until = EXCLUDED.lease_until",
                &[
                    &environment,
                    &run,
                    &i64::from(me.pid),
                    &(me.start as i64),
                    &me.host,
                    &me.host_id,
                    &lease::time_text(now),
                    &self.lease.until(now),
                ],
            )?;
            Ok(Lock::Acquired { released_stale })
        })
    }

    fn unlock(&self, environment: &str, run: &str) -> Result<()> {
        // A process that lost the run leaves the lock to whoever took it.
        let mine = self.fences.expected(run);
        self.link.write(|tx| {
            match &mine {
                Some(me) => tx.execute(
                    "DELETE FROM locks WHERE environment = $1 AND run_id = $2 \
                     AND owner_pid = $3 AND owner_start = $4 AND owner_host_id = $5",
                    &[
                        &environment,
                        &run,
                        &i64::from(me.pid),
                        &(me.start as i64),
                        &me.host_id,
                    ],
                )?,
                None => tx.execute(
                    "DELETE FROM locks WHERE environment = $1 AND run_id = $2",
                    &[&environment, &run],
                )?,
            };
            Ok(())
        })
    }

    fn lease(&self) -> Lease {
        self.lease
    }

    fn renew(&self, run: &str, owner: &Owner) -> Result<Renewal> {
        self.link.write(|tx| {
            let until = self.lease.until(now_ms(tx)?);
            let (pid, start) = (i64::from(owner.pid), owner.start as i64);
            let kept = tx.query_opt(
                "UPDATE runs SET lease_until = $2 WHERE id = $1 AND status = 'running' \
                 AND owner_pid = $3 AND owner_start = $4 AND owner_host_id = $5 RETURNING stop_request::text",
                &[&run, &until, &pid, &start, &owner.host_id],
            )?;
            if let Some(row) = kept {
                tx.execute(
                    "UPDATE locks SET lease_until = $2 WHERE run_id = $1 \
                     AND owner_pid = $3 AND owner_start = $4 AND owner_host_id = $5",
                    &[&run, &until, &pid, &start, &owner.host_id],
                )?;
                let stop: Option<String> = row.get(0);
                return Ok(Renewal::Kept {
                    until,
                    stop: stop.and_then(|s| serde_json::from_str(&s).ok()),
                });
            }
            let now = tx
                .query_opt(
                    "SELECT status, owner_pid, owner_start, owner_host, owner_host_id FROM runs WHERE id = $1",
                    &[&run],
                )?
                .map(|r| -> Tx<(String, Owner)> { Ok((r.text("status")?, rows::owner(&r)?)) })
                .transpose()?;
            let forced = tx
                .query_opt(
                    "SELECT by, COALESCE(reason, '') FROM lock_releases WHERE run_id = $1 AND why = 'forced' \
                     ORDER BY id DESC LIMIT 1",
                    &[&run],
                )?
                .map(|r| (r.get::<_, String>(0), r.get::<_, String>(1)));
            Ok(Renewal::Lost {
                why: lease::lost_because(run, owner, now, forced),
            })
        })
    }

    fn request_stop(&self, run: &str, asked: &StopAsked) -> Result<bool> {
        let asked = serde_json::to_value(asked).expect("requests serialize");
        self.link.write(|tx| {
            Ok(tx.execute(
                "UPDATE runs SET stop_request = $2 WHERE id = $1 AND status = 'running'",
                &[&run, &asked],
            )? == 1)
        })
    }

    fn force_unlock(
        &self,
        environment: &str,
        by: &str,
        reason: &str,
    ) -> Result<Option<LockRelease>> {
        self.link.write(|tx| {
            let Some(h) = holder(tx, environment)? else {
                return Ok(None);
            };
            let now = now_ms(tx)?;
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
                tx.execute(
                    "UPDATE runs SET status = 'interrupted' WHERE id = $1 AND status = 'running'",
                    &[&h.run_id],
                )?;
                tx.execute(
                    "UPDATE stages SET status = 'interrupted', message = $2 WHERE run_id = $1 AND status = 'running'",
                    &[&h.run_id, &text(&why)],
                )?;
            }
            tx.execute("DELETE FROM locks WHERE environment = $1", &[&environment])?;
            record_release(tx, &release)?;
            Ok(Some(release))
        })
    }

    fn lock_holder(&self, environment: &str) -> Result<Option<LockHolder>> {
        self.link.read(|tx| {
            let Some(h) = holder(tx, environment)? else {
                return Ok(None);
            };
            let now = now_ms(tx)?;
            let mut left = Ok(Vec::new());
            let verdict = lease::judge(&h, now, || {
                left = programs_left(tx, &h.run_id);
                left.as_ref().map(Vec::clone).unwrap_or_default()
            });
            left?;
            Ok(Some(match verdict {
                lease::Verdict::ProgramsLeft { children, lost } => LockHolder {
                    live_children: children,
                    lost,
                    ..h
                },
                _ => h,
            }))
        })
    }

    fn lock_releases(&self, run: &str) -> Result<Vec<LockRelease>> {
        self.link.read(|tx| {
            tx.query(
                "SELECT environment, run_id, holder, why, by, reason, at, lease_ended FROM lock_releases \
                 WHERE run_id = $1 ORDER BY id",
                &[&run],
            )?
            .iter()
            .map(rows::lock_release)
            .collect()
        })
    }

    fn reap(&self) -> Result<Vec<String>> {
        self.link.write(|tx| {
            let now = now_ms(tx)?;
            let running = tx.query(
                "SELECT id, owner_pid, owner_start, owner_host, owner_host_id, lease_until FROM runs WHERE status = 'running'",
                &[],
            )?;
            let mut dead = Vec::new();
            for row in running {
                let (id, owner, lease_until): (String, Owner, Option<i64>) =
                    (row.get("id"), rows::owner(&row)?, row.get("lease_until"));
                if lease::gone(&owner, lease_until, now) {
                    interrupt(tx, &id, &lease::host_gone(&id, &owner, lease_until))?;
                    dead.push(id);
                }
            }
            Ok(dead)
        })
    }
}

#[cfg(test)]
pub(in crate::store) use migrate::latest as latest_schema;
