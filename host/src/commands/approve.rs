//! `capstan approve` and `capstan reject`: answer a paused run's approval
//! request from any terminal or CI job. An answer is for the digest the run
//! waits on (e.g. one plan file); `capstan resume` then continues the run.

use serde_json::json;

use crate::caps::approval::{Recorded, approver_problem, recorded, short};
use crate::caps::audit::AuditLog;
use crate::exit::{self, Failure};
use crate::store::{ApprovalRow, PendingApproval, RunRow, RunState, RunStore, latest_attempts};
use crate::text::inline;

/// Approve what a paused run waits for (then `capstan resume` it).
#[derive(Debug, clap::Args)]
#[command(after_help = "\
Examples:
  capstan approve 20261126-101500-7f3a --as bob --comment \"reviewed the plan\"
  capstan approve 20261126-101500-7f3a --as bob --digest 3f1c9a0b2d4e   # if still that plan
  capstan approve 20261126-101500-7f3a --as carol --emergency \"outage INC-42, rollback now\"
  capstan resume 20261126-101500-7f3a

The run's author may not approve it. When the request names approvers, only
they may; when it needs N approvals, N different people must approve.")]
pub struct ApproveArgs {
    #[command(flatten)]
    pub answer: Answer,
    /// The digest you reviewed (or its first 12+ characters): refused if the
    /// run now waits on another one (it was re-planned).
    #[arg(long)]
    pub digest: Option<String>,
    /// Approve without review, alone, for this reason (recorded loudly).
    #[arg(long, value_name = "REASON")]
    pub emergency: Option<String>,
}

/// Reject what a paused run waits for; the run ends as rejected.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
Example:
  capstan reject 20261126-101500-7f3a --as bob --comment \"destroys the database\"")]
pub struct RejectArgs {
    #[command(flatten)]
    pub answer: Answer,
}

/// Which run, who answers, why.
#[derive(Debug, clap::Args)]
pub struct Answer {
    /// The run: its id, a unique prefix or suffix of it, `latest` (the run
    /// that started last) or `latest@<environment>`.
    pub run: String,
    /// Who answers. Default: $CAPSTAN_ACTOR, the CI actor ($GITHUB_ACTOR,
    /// $GITLAB_USER_LOGIN), or $USER.
    #[arg(long = "as", value_name = "NAME")]
    pub by: Option<String>,
    /// Why, for the record.
    #[arg(long)]
    pub comment: Option<String>,
}

fn refused(message: String) -> Failure {
    Failure::new(exit::REFUSED, format!("error: {message}"))
}

/// The paused run and the request it waits on.
fn waiting(store: &dyn RunStore, id: &str) -> Result<(RunRow, PendingApproval), Failure> {
    let run = store.run(id).map_err(super::store_failure)?;
    if run.status != RunState::AwaitingApproval {
        return Err(refused(format!(
            "run {} is {}, not waiting for approval; nothing to answer",
            run.id,
            run.status.as_str()
        )));
    }
    let pending = store
        .pending_approval(&run.id)
        .map_err(super::store_failure)?
        .ok_or_else(|| refused(format!("run {} has no open approval request", run.id)))?;
    Ok((run, pending))
}

/// Keep a decision in the run store and append it to the run's audit.jsonl.
fn record(
    store: &std::sync::Arc<dyn RunStore>,
    run: &RunRow,
    row: &ApprovalRow,
    via: &str,
) -> Result<(), Failure> {
    store
        .record_approval(&run.id, row)
        .map_err(super::store_failure)?;
    let detail = json!({"decision": row.decision, "by": row.by, "digest": row.digest, "comment": row.comment,
                        "policy": row.policy, "override_reason": row.override_reason, "via": via});
    let path = std::path::Path::new(&run.run_dir).join("audit.jsonl");
    match AuditLog::open(&path, store.clone(), &run.id) {
        Ok(log) => {
            log.record(&row.stage, "capstan", "approval", true, detail, None);
        }
        Err(e) => eprintln!("warning: cannot append to {}: {e}", path.display()),
    }
    Ok(())
}

fn now() -> String {
    jiff::Timestamp::now().to_string()
}

pub fn approve(args: &ApproveArgs, cli: &super::Cli) -> Result<u8, Failure> {
    let store = cli.store()?;
    let (run, pending) = waiting(store.as_ref(), &args.answer.run)?;
    let by = super::identity(args.answer.by.as_deref());
    if let Some(reviewed) = &args.digest
        && (reviewed.len() < 12 || !pending.digest.starts_with(reviewed.as_str()))
    {
        return Err(refused(format!(
            "you reviewed {reviewed}, but run {} waits for approval of {} ({}), not of what you reviewed \
             (it may have been re-planned). Review it (`capstan show {}`) and approve that digest.",
            run.id,
            inline(&pending.digest),
            inline(&pending.subject),
            run.id
        )));
    }
    let mut decisions = store.approvals(&run.id).map_err(super::store_failure)?;
    let tally = |decisions: &[ApprovalRow]| {
        recorded(
            decisions,
            &pending.stage,
            &pending.digest,
            &run.author,
            &pending.approvers,
            pending.required,
        )
    };
    let row = ApprovalRow {
        stage: pending.stage.clone(),
        digest: pending.digest.clone(),
        decision: "approved".into(),
        by: by.clone(),
        at: now(),
        comment: args.answer.comment.clone(),
        policy: "manual".into(),
        override_reason: None,
    };
    let row = match &args.emergency {
        Some(reason) if reason.trim().is_empty() => {
            return Err(refused(
                "an emergency override needs a reason: --emergency \"<why>\"".into(),
            ));
        }
        Some(reason) => {
            eprintln!(
                "\n!!! EMERGENCY OVERRIDE of stage `{}` of run {} by {by}: {reason}\n",
                pending.stage, run.id
            );
            ApprovalRow {
                policy: "emergency-override".into(),
                override_reason: Some(reason.clone()),
                ..row
            }
        }
        None => {
            let Recorded::Open { approved_by, .. } = tally(&decisions) else {
                return Err(refused(format!(
                    "run {} is already decided for {}; `capstan resume {}` continues it",
                    run.id,
                    inline(short(&pending.digest)),
                    run.id
                )));
            };
            if let Some(problem) =
                approver_problem(&by, &run.author, &pending.approvers, &approved_by)
            {
                return Err(refused(format!(
                    "{} (run {}, environment `{}`)",
                    inline(&problem),
                    run.id,
                    run.environment
                )));
            }
            row
        }
    };
    record(&store, &run, &row, "capstan approve")?;
    decisions.push(row);
    match tally(&decisions) {
        Recorded::Approved(answers) => eprintln!(
            "approved {} for stage `{}` of run {} by {}. Continue it with: capstan resume {}",
            inline(short(&pending.digest)),
            pending.stage,
            run.id,
            inline(
                &answers
                    .iter()
                    .map(|a| a.by.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            run.id
        ),
        Recorded::Open { approved_by, .. } => eprintln!(
            "{by} approved {}: {} of {} approvals for stage `{}` of run {}; {} more needed from others",
            inline(short(&pending.digest)),
            approved_by.len(),
            pending.required,
            pending.stage,
            run.id,
            pending.required as usize - approved_by.len()
        ),
        Recorded::Rejected(_) => {}
    }
    Ok(exit::OK)
}

pub fn reject(args: &RejectArgs, cli: &super::Cli) -> Result<u8, Failure> {
    let store = cli.store()?;
    let (run, pending) = waiting(store.as_ref(), &args.answer.run)?;
    let by = super::identity(args.answer.by.as_deref());
    let at = now();
    let row = ApprovalRow {
        stage: pending.stage.clone(),
        digest: pending.digest.clone(),
        decision: "rejected".into(),
        by: by.clone(),
        at: at.clone(),
        comment: args.answer.comment.clone(),
        policy: "manual".into(),
        override_reason: None,
    };
    record(&store, &run, &row, "capstan reject")?;
    // The paused stage ends as failed, the run as rejected, and the
    // environment is free again.
    let stages = latest_attempts(store.stages(&run.id).map_err(super::store_failure)?);
    if let Some(stage) = stages.into_iter().find(|s| s.name == pending.stage) {
        let attempt = stage.attempt;
        let reason = format!(
            "rejected by {by}{}",
            args.answer
                .comment
                .as_deref()
                .map(|c| format!(": {c}"))
                .unwrap_or_default()
        );
        let ended = crate::store::StageRow {
            status: "failed".into(),
            message: reason,
            ended: Some(at.clone()),
            ..stage
        };
        store
            .end_stage(&run.id, Some(attempt), &ended)
            .map_err(super::store_failure)?;
    }
    store
        .finish_run(&run.id, RunState::Rejected, &at, None)
        .map_err(super::store_failure)?;
    store
        .unlock(&run.environment, &run.id)
        .map_err(super::store_failure)?;
    eprintln!(
        "run {} rejected by {by}; it ends here and environment `{}` is unlocked",
        run.id, run.environment
    );
    Ok(exit::OK)
}
