//! `capstan approve` and `capstan reject`: answer a paused run's approval
//! request from any terminal or CI job. An answer is for the digest the run
//! waits on (e.g. one plan file); `capstan resume` then continues the run.

use crate::caps::approval::{Recorded, short};
use crate::caps::audit::AppendError;
use crate::exit::{self, Failure};
use crate::run::answer::{self, AnswerError, Approval};
use crate::store::StoreError;
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

/// A refused answer as a failure: a run named wrong is a usage error.
fn failure(e: AnswerError) -> Failure {
    match e {
        AnswerError::Store(e) => super::store_failure(e),
        e => Failure::new(exit::REFUSED, format!("error: {e}")),
    }
}

fn now() -> String {
    jiff::Timestamp::now().to_string()
}

pub fn approve(args: &ApproveArgs, cli: &super::Cli) -> Result<u8, Failure> {
    // Who answers, before anything is read: nobody answers as an unknown.
    let by = super::identity(args.answer.by.as_deref())?;
    let store = cli.store()?;
    let waiting = answer::waiting(store.as_ref(), &args.answer.run).map_err(failure)?;
    let (run, pending) = (&waiting.run, &waiting.request);
    let at = now();
    let approval = Approval {
        by: &by,
        comment: args.answer.comment.as_deref(),
        reviewed: args.digest.as_deref(),
        emergency: args.emergency.as_deref(),
        at: &at,
    };
    let mut decisions = store.approvals(&run.id).map_err(super::store_failure)?;
    let row = waiting.approval(&approval, &decisions).map_err(failure)?;
    if let Some(reason) = &row.override_reason {
        eprintln!(
            "\n!!! EMERGENCY OVERRIDE of stage `{}` of run {} by {by}: {reason}\n",
            pending.stage, run.id
        );
    }
    warn(waiting.record(&store, &row, "capstan approve"))?;
    decisions.push(row);
    match waiting.tally(&decisions) {
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
    let by = super::identity(args.answer.by.as_deref())?;
    let store = cli.store()?;
    let waiting = answer::waiting(store.as_ref(), &args.answer.run).map_err(failure)?;
    warn(waiting.reject(&store, &by, args.answer.comment.as_deref(), &now()))?;
    eprintln!(
        "run {} rejected by {by}; it ends here and environment `{}` is unlocked",
        waiting.run.id, waiting.run.environment
    );
    Ok(exit::OK)
}

/// Say that the audit log missed a decision the store has.
fn warn(recorded: Result<Option<AppendError>, StoreError>) -> Result<(), Failure> {
    if let Some(e) = recorded.map_err(super::store_failure)? {
        eprintln!("warning: {e}");
    }
    Ok(())
}
