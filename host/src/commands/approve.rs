//! `capstan approve` and `capstan reject`: answer a paused run's approval
//! request from any terminal or CI job. An answer is for the digest the run
//! waits on (e.g. one plan file); `capstan resume` then continues the run.

use crate::caps::approval::signature::Key;
use crate::caps::approval::{Recorded, short};
use crate::caps::audit::AppendError;
use crate::exit::{self, Failure};
use crate::run::answer::{self, AnswerError, Approval, Signing, Waiting};
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
they may; when it needs N approvals, N different people must approve.

When the pipeline lists approvers' keys ([approvers]), every answer is signed
with the approver's SSH key, --key FILE or else the first listed key in
ssh-agent (SSH_AUTH_SOCK), and recorded under that key's name; only signed
answers count:
  capstan approve 20261126-101500-7f3a --key ~/.ssh/id_ed25519")]
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
    /// Sign with this OpenSSH private key file (unencrypted; a key with a
    /// passphrase goes through ssh-agent). Default: ssh-agent's key that
    /// the pipeline lists. Only used when the pipeline lists approvers' keys.
    #[arg(long, value_name = "FILE")]
    pub key: Option<std::path::PathBuf>,
}

impl Answer {
    /// Who answers: for a run with approvers' keys, whoever's key signs
    /// (`--as` only checked against it); otherwise `--as` or the
    /// environment's name, and nobody answers as an unknown.
    fn who<'a>(
        &'a self,
        waiting: &Waiting,
        key: &'a Option<Key>,
    ) -> Result<(String, Signing<'a>), Failure> {
        if waiting.trust.signed() {
            let signing = Signing {
                key: key.as_ref(),
                claimed: self.by.as_deref(),
            };
            return Ok((self.by.clone().unwrap_or_default(), signing));
        }
        if self.key.is_some() {
            eprintln!(
                "note: run {} lists no approvers' keys ([approvers]): the answer is recorded by name, unsigned",
                waiting.run.id
            );
        }
        Ok((super::identity(self.by.as_deref())?, Signing::default()))
    }
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
    // Without a key, who answers is known before anything is read: nobody
    // answers as an unknown.
    if args.answer.key.is_none() {
        super::identity(args.answer.by.as_deref())?;
    }
    let store = cli.store()?;
    let waiting = answer::waiting(store.as_ref(), &args.answer.run).map_err(failure)?;
    let key = args.answer.key.clone().map(Key::File);
    let (by, signing) = args.answer.who(&waiting, &key)?;
    let (run, pending) = (&waiting.run, &waiting.request);
    let at = now();
    let approval = Approval {
        by: &by,
        comment: args.answer.comment.as_deref(),
        reviewed: args.digest.as_deref(),
        emergency: args.emergency.as_deref(),
        at: &at,
        signing,
    };
    let mut decisions = store.approvals(&run.id).map_err(super::store_failure)?;
    let row = waiting.approval(&approval, &decisions).map_err(failure)?;
    let by = row.by.clone();
    if let Some(reason) = &row.override_reason {
        eprintln!(
            "\n!!! EMERGENCY OVERRIDE of stage `{}` of run {} by {by}: {reason}\n",
            pending.stage, run.id
        );
    }
    let identity = if row.signature.is_some() {
        "signed with a listed key"
    } else {
        "identity not verified"
    };
    warn(
        waiting
            .record(&store, &row, "capstan approve")
            .map_err(super::store_failure)?,
    )?;
    decisions.push(row);
    match waiting.tally(&decisions) {
        Recorded::Approved(answers) => eprintln!(
            "approved {} ({identity}) for stage `{}` of run {} by {}. Continue it with: capstan resume {}",
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
            "{by} approved {} ({identity}): {} of {} approvals for stage `{}` of run {}; {} more needed from others",
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
    if args.answer.key.is_none() {
        super::identity(args.answer.by.as_deref())?;
    }
    let store = cli.store()?;
    let waiting = answer::waiting(store.as_ref(), &args.answer.run).map_err(failure)?;
    let key = args.answer.key.clone().map(Key::File);
    let (by, signing) = args.answer.who(&waiting, &key)?;
    let rejected = waiting.reject(
        &store,
        &by,
        args.answer.comment.as_deref(),
        &now(),
        &signing,
    );
    warn(rejected.map_err(failure)?)?;
    eprintln!(
        "run {} rejected by {by}; it ends here and environment `{}` is unlocked",
        waiting.run.id, waiting.run.environment
    );
    Ok(exit::OK)
}

/// Say that the audit log missed a decision the store has.
fn warn(appended: Option<AppendError>) -> Result<(), Failure> {
    if let Some(e) = appended {
        eprintln!("warning: {e}");
    }
    Ok(())
}
