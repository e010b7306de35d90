//! `capstan cancel`: end a run that will not be continued — running,
//! paused, interrupted or failed — so that it no longer runs, waits, holds
//! its environment, or looks resumable.

use std::sync::Arc;
use std::time::Duration;

use crate::exit::{self, Failure};
use crate::run::cancel::{self, Cancel, CancelError};
use crate::store::{RunRow, RunState, RunStore, StopAsked};

/// End a run for good (it can no longer be resumed), recorded with who and
/// why. A running run is stopped first: its programs get SIGTERM, then
/// SIGKILL after its host's --stop-grace; its environment lock is released
/// once none of them is left.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
Examples:
  capstan cancel 20261126-101500-7f3a --as alice --reason \"superseded by a new run\"
  capstan cancel latest@production --reason \"wrong image\"

A running run is stopped by its own host process: on this machine this command
records the request, sends that process SIGTERM and waits for the run to end; on
another host sharing the run store, it records the request in the store, which
that host reads when it next renews its lease (every third of $CAPSTAN_LEASE). To refuse what a paused run waits for, `capstan reject` it
instead.")]
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
    /// How long programs left by an interrupted run get between SIGTERM and SIGKILL.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = humantime::parse_duration)]
    pub grace: Duration,
    /// How long to wait for a running run to stop.
    #[arg(long, value_name = "DURATION", default_value = "5m", value_parser = humantime::parse_duration)]
    pub wait: Duration,
}

/// A refusal as a failure: a run named wrong is a usage error, an audit log
/// that cannot take the request an internal one.
fn failure(e: CancelError) -> Failure {
    match e {
        CancelError::Store(e) => super::store_failure(e),
        CancelError::Audit(e) => Failure::new(exit::INTERNAL, format!("error: {e}")),
        e => Failure::new(exit::REFUSED, format!("error: {e}")),
    }
}

pub async fn exec(args: &Args, cli: &super::Cli) -> Result<u8, Failure> {
    let store = cli.store()?;
    let run = store.run(&args.run).map_err(super::store_failure)?;
    let how = cancel::how(&run).map_err(failure)?;
    let by = super::identity(args.by.as_deref())?;
    match how {
        Cancel::Stop => return stop_running(args, &run, &store, &by).await,
        Cancel::Remote => return stop_remote(args, &run, &store, &by).await,
        Cancel::End => {}
    }
    if let Some(e) = cancel::end(&store, &run, &by, args.reason.as_deref()).map_err(failure)? {
        eprintln!("warning: {e}");
    }
    // Programs an interrupted run started can outlive its host: they end
    // before the environment is free for another run.
    let orphans = cancel::orphans(store.as_ref(), &run.id).map_err(super::store_failure)?;
    for orphan in &orphans {
        eprintln!(
            "ending {orphan}, left running by run {}: SIGTERM, SIGKILL after {}",
            run.id,
            humantime::format_duration(args.grace)
        );
    }
    let left = cancel::end_orphans(&run.id, orphans, args.grace).await;
    // Secret files the dead host's stages had (each stage removes its own;
    // a killed host could not): nothing will read them any more.
    let secrets = crate::caps::secret::deliver::secrets_dir(std::path::Path::new(&run.run_dir));
    if left.is_empty()
        && let Err(e) = std::fs::remove_dir_all(&secrets)
        && e.kind() != std::io::ErrorKind::NotFound
    {
        eprintln!("warning: cannot remove {}: {e}", secrets.display());
    }
    if !left.is_empty() {
        return Err(failure(CancelError::ProgramsLeft {
            id: run.id.clone(),
            environment: run.environment.clone(),
            left,
        }));
    }
    store
        .unlock(&run.environment, &run.id)
        .map_err(super::store_failure)?;
    eprintln!(
        "run {} ({}) cancelled by {by}; environment `{}` is not held by it",
        run.id, run.status, run.environment
    );
    Ok(exit::OK)
}

/// Ask the host running `run` on another machine, through the store, to
/// stop it (it reads the request when it renews its lease), and wait until
/// it has.
async fn stop_remote(
    args: &Args,
    run: &RunRow,
    store: &Arc<dyn RunStore>,
    by: &str,
) -> Result<u8, Failure> {
    let asked = StopAsked {
        by: by.to_string(),
        reason: args.reason.clone(),
    };
    if !store
        .request_stop(&run.id, &asked)
        .map_err(super::store_failure)?
    {
        let now = store.run(&run.id).map_err(super::store_failure)?;
        eprintln!("run {} is {} already", run.id, now.status);
        return Ok(exit::REFUSED);
    }
    eprintln!(
        "asked {} to stop run {}: it reads the request when it next renews its lease (within {}); waiting…",
        run.owner,
        run.id,
        humantime::format_duration(store.lease().renew_every())
    );
    finished(run, cancel::stopped(store.as_ref(), run, args.wait).await)
}

/// Ask the host process running `run` to stop it, and wait until it has.
async fn stop_running(
    args: &Args,
    run: &RunRow,
    store: &Arc<dyn RunStore>,
    by: &str,
) -> Result<u8, Failure> {
    cancel::request_stop(store, run, by, args.reason.as_deref()).map_err(failure)?;
    eprintln!(
        "stopping run {} ({}): its programs get SIGTERM, then SIGKILL after the host's --stop-grace…",
        run.id, run.owner
    );
    finished(run, cancel::stopped(store.as_ref(), run, args.wait).await)
}

/// How a stopped run ended.
fn finished(run: &RunRow, now: Result<RunState, CancelError>) -> Result<u8, Failure> {
    let now = now.map_err(failure)?;
    eprintln!(
        "run {} is {now}; environment `{}` is free once its host released it",
        run.id, run.environment
    );
    Ok(if now == RunState::Cancelled {
        exit::OK
    } else {
        exit::REFUSED
    })
}
