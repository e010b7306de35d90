//! Rows as every backend reads them: a backend says how to read one column
//! of one of its rows ([`Columns`]); what the columns mean, and the
//! defaults for words an older or newer Capstan wrote, are decided here once.

use serde_json::Value;

use super::*;

/// One row of a query, read by column name.
pub(super) trait Columns {
    type Error;
    fn text(&self, column: &str) -> std::result::Result<String, Self::Error>;
    fn opt_text(&self, column: &str) -> std::result::Result<Option<String>, Self::Error>;
    fn int(&self, column: &str) -> std::result::Result<i64, Self::Error>;
    fn opt_int(&self, column: &str) -> std::result::Result<Option<i64>, Self::Error>;
    fn flag(&self, column: &str) -> std::result::Result<bool, Self::Error>;
    fn opt_flag(&self, column: &str) -> std::result::Result<Option<bool>, Self::Error>;
    /// A JSON column; text that is not JSON reads as a JSON string.
    fn json(&self, column: &str) -> std::result::Result<Value, Self::Error>;
    fn opt_json(&self, column: &str) -> std::result::Result<Option<Value>, Self::Error>;
    /// `column` holds `value`, which is none of the words it may hold.
    fn unknown(&self, column: &str, value: &str) -> Self::Error;
}

type Read<T, C> = std::result::Result<T, <C as Columns>::Error>;

/// JSON text as stored; text that is not JSON reads as a JSON string.
pub(super) fn json(text: String) -> Value {
    serde_json::from_str(&text).unwrap_or(Value::String(text))
}

/// A JSON array of strings (`only_stages`, `author_keys`); anything else is
/// none.
fn strings(value: Value) -> Vec<String> {
    serde_json::from_value(value).unwrap_or_default()
}

/// The process columns `owner_pid`, `owner_start`, `owner_host`,
/// `owner_host_id`.
pub(super) fn owner<C: Columns>(r: &C) -> Read<Owner, C> {
    Ok(Owner {
        pid: r.int("owner_pid")? as u32,
        start: r.int("owner_start")? as u64,
        host: r.text("owner_host")?,
        host_id: r.text("owner_host_id")?,
    })
}

/// A `runs` row (every column of it).
pub(super) fn run<C: Columns>(r: &C) -> Read<RunRow, C> {
    Ok(RunRow {
        id: r.text("id")?,
        pipeline: r.text("pipeline")?,
        pipeline_file: r.text("pipeline_file")?,
        pipeline_digest: r.text("pipeline_digest")?,
        environment: r.text("environment")?,
        author: r.text("author")?,
        kind: kind(&r.text("kind")?),
        target: r.opt_text("target")?,
        undoes: r.opt_text("undoes")?,
        only: strings(r.json("only_stages")?),
        run_dir: r.text("run_dir")?,
        status: status(&r.text("status")?),
        started: r.text("started")?,
        ended: r.opt_text("ended")?,
        verified: r.opt_flag("verified")?,
        plugins: r.json("plugins")?,
        owner: owner(r)?,
        audit_head: r.opt_text("audit_head")?,
        approvers: r.opt_text("approvers")?,
        author_keys: r.opt_json("author_keys")?.map(strings).unwrap_or_default(),
    })
}

/// A run's `kind`; one this Capstan does not know reads as a deploy.
pub(super) fn kind(text: &str) -> RunKind {
    RunKind::parse(text).unwrap_or(RunKind::Deploy)
}

/// A run's `status`; one this Capstan does not know reads as failed.
pub(super) fn status(text: &str) -> RunState {
    RunState::parse(text).unwrap_or(RunState::Failed)
}

/// A `locks` row (`run_id`, the owner's columns, `acquired`,
/// `lease_until`) with its run's `status` and `author`, NULL when the run
/// has no row yet.
pub(super) fn lock_holder<C: Columns>(r: &C, environment: &str) -> Read<LockHolder, C> {
    Ok(LockHolder {
        environment: environment.to_string(),
        run_id: r.text("run_id")?,
        owner: owner(r)?,
        acquired: r.text("acquired")?,
        run_status: r.opt_text("status")?.and_then(|s| RunState::parse(&s)),
        author: r.opt_text("author")?,
        live_children: Vec::new(),
        lease_until: r.opt_int("lease_until")?,
        lost: false,
    })
}

/// A `lock_releases` row.
pub(super) fn lock_release<C: Columns>(r: &C) -> Read<LockRelease, C> {
    let holder = r.text("holder")?;
    let why = r.text("why")?;
    Ok(LockRelease {
        environment: r.text("environment")?,
        run_id: r.text("run_id")?,
        holder: serde_json::from_str(&holder).map_err(|_| r.unknown("holder", &holder))?,
        why: Release::parse(&why).ok_or_else(|| r.unknown("why", &why))?,
        by: r.text("by")?,
        reason: r.opt_text("reason")?,
        at: r.text("at")?,
        lease_ended: r.opt_text("lease_ended")?,
    })
}

/// A `stages` row.
pub(super) fn stage<C: Columns>(r: &C) -> Read<StageRow, C> {
    Ok(StageRow {
        name: r.text("name")?,
        attempt: r.int("attempt")? as u32,
        plugin: r.text("plugin")?,
        status: StageState::parse(&r.text("status")?).unwrap_or(StageState::Failed),
        message: r.text("message")?,
        outputs: r.json("outputs")?,
        artifacts: r.json("artifacts")?,
        report: r.opt_json("report")?,
        started: r.opt_text("started")?,
        ended: r.opt_text("ended")?,
        duration_ms: r.opt_int("duration_ms")?.map(|d| d as u64),
    })
}

/// An `approvals` row. A decision or policy that cannot be read is an
/// error, never a guess (a decision that cannot be read counts for nothing).
pub(super) fn approval<C: Columns>(r: &C) -> Read<ApprovalRow, C> {
    Ok(ApprovalRow {
        stage: r.text("stage")?,
        digest: r.text("digest")?,
        decision: word(r, "decision", Decision::parse)?,
        by: r.text("approver")?,
        at: r.text("at")?,
        comment: r.opt_text("comment")?,
        policy: word(r, "policy", ApprovalPolicy::parse)?,
        override_reason: r.opt_text("override_reason")?,
        signature: r.opt_text("signature")?,
    })
}

/// An `audit_events` row.
pub(super) fn audit_event<C: Columns>(r: &C) -> Read<AuditRow, C> {
    Ok(AuditRow {
        time: r.text("time")?,
        stage: r.text("stage")?,
        plugin: r.text("plugin")?,
        capability: AuditKind::parse(&r.text("capability")?),
        allowed: r.flag("allowed")?,
        detail: r.json("detail")?,
        reason: r.opt_text("reason")?,
    })
}

/// A `drift_checks` row.
pub(super) fn drift_check<C: Columns>(r: &C) -> Read<DriftCheck, C> {
    Ok(DriftCheck {
        environment: r.text("environment")?,
        run_id: r.text("run_id")?,
        checked: r.text("checked")?,
        drifted: r.flag("drifted")?,
        detail: r.json("detail")?,
    })
}

/// An approval request as stored (JSON text).
pub(super) fn request(text: &str) -> Result<PendingApproval> {
    serde_json::from_str(text).map_err(|source| StoreError::Json {
        what: "approval request",
        source,
    })
}

fn word<C: Columns, T>(r: &C, column: &str, parse: fn(&str) -> Option<T>) -> Read<T, C> {
    let text = r.text(column)?;
    parse(&text).ok_or_else(|| r.unknown(column, &text))
}
