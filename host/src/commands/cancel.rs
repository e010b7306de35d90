//! `capstan cancel`: end a run that will not be continued — paused,
//! interrupted or failed — so that it no longer waits, holds its
//! environment, or looks resumable.

use serde_json::json;

use crate::caps::audit::AuditLog;
use crate::exit::{self, Failure};
use crate::store::RunState;

/// End a paused, interrupted or failed run for good (it can no longer be
/// resumed); its environment lock is released. Recorded with who and why.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
Examples:
  capstan cancel 20261126-101500-7f3a --as alice --reason \"superseded by a new run\"

A running run cannot be cancelled: stop its host (Ctrl-C, kill); it then shows as
interrupted and can be cancelled or resumed. To refuse what a paused run waits
for, `capstan reject` it instead.")]
pub struct Args {
    /// The run: its id, a unique prefix or suffix of it, `latest` (the run
    /// that started last) or `latest@<environment>`.
    pub run: String,
    /// Who cancels (default: $CAPSTAN_ACTOR, the CI actor, or $USER).
    #[arg(long = "as", value_name = "NAME")]
    pub by: Option<String>,
    /// Why, for the record.
    #[arg(long)]
    pub reason: Option<String>,
}

pub fn exec(args: &Args, cli: &super::Cli) -> Result<u8, Failure> {
    let store = cli.store()?;
    let run = store.run(&args.run).map_err(super::store_failure)?;
    match run.status {
        RunState::AwaitingApproval | RunState::Interrupted | RunState::Failed => {}
        RunState::Running => {
            return Err(Failure::new(
                exit::REFUSED,
                format!(
                    "error: run {} is running ({}); stop that process first, then cancel it",
                    run.id, run.owner
                ),
            ));
        }
        done => {
            return Err(Failure::new(
                exit::REFUSED,
                format!(
                    "error: run {} has ended ({}); nothing to cancel",
                    run.id,
                    done.as_str()
                ),
            ));
        }
    }
    let by = super::identity(args.by.as_deref());
    let path = std::path::Path::new(&run.run_dir).join("audit.jsonl");
    match AuditLog::open(&path, store.clone(), &run.id) {
        Ok(log) => {
            log.record(
                "",
                "capstan",
                "run",
                true,
                json!({ "event": "cancelled", "by": by, "reason": args.reason, "was": run.status.as_str() }),
                None,
            );
        }
        Err(e) => eprintln!("warning: cannot append to {}: {e}", path.display()),
    }
    let now = jiff::Timestamp::now().to_string();
    store
        .finish_run(&run.id, RunState::Cancelled, &now, None)
        .map_err(super::store_failure)?;
    store
        .unlock(&run.environment, &run.id)
        .map_err(super::store_failure)?;
    eprintln!(
        "run {} ({}) cancelled by {by}; environment `{}` is not held by it",
        run.id,
        run.status.as_str(),
        run.environment
    );
    Ok(exit::OK)
}
