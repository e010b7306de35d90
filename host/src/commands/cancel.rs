//! `capstan cancel`: end a run that will not be continued — running,
//! paused, interrupted or failed — so that it no longer runs, waits, holds
//! its environment, or looks resumable.

use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::json;

use crate::caps::audit::AuditLog;
use crate::exit::{self, Failure};
use crate::run::stop::CANCEL_REQUESTED;
use crate::store::{RunRow, RunState, RunStore};

/// End a run for good (it can no longer be resumed), recorded with who and
/// why. A running run is stopped first: its programs get SIGTERM, then
/// SIGKILL after its host's --stop-grace; its environment lock is released
/// once none of them is left.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
Examples:
  capstan cancel 20261126-101500-7f3a --as alice --reason \"superseded by a new run\"
  capstan cancel latest@production --reason \"wrong image\"

A running run is stopped by its own host process (this command records the
request, sends that process SIGTERM and waits for the run to end), so it must
run on this machine. To refuse what a paused run waits for, `capstan reject` it
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

pub async fn exec(args: &Args, cli: &super::Cli) -> Result<u8, Failure> {
    let store = cli.store()?;
    let run = store.run(&args.run).map_err(super::store_failure)?;
    match run.status {
        RunState::AwaitingApproval | RunState::Interrupted | RunState::Failed => {}
        RunState::Running => return stop_running(args, &run, &store).await,
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
    // Programs an interrupted run started can outlive its host: they end
    // before the environment is free for another run.
    let left = end_orphans(&*store, &run, args.grace).await?;
    if !left.is_empty() {
        return Err(Failure::new(
            exit::REFUSED,
            format!(
                "error: run {} is cancelled, but programs it started still run after SIGKILL ({}); \
                 environment `{}` stays locked until they end",
                run.id,
                left.join(", "),
                run.environment
            ),
        ));
    }
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

/// Ask the host process running `run` to stop it, and wait until it has.
async fn stop_running(args: &Args, run: &RunRow, store: &Arc<dyn RunStore>) -> Result<u8, Failure> {
    let refused =
        |why: String| Failure::new(exit::REFUSED, format!("error: run {}: {why}", run.id));
    let here = crate::store::Owner::current();
    if run.owner.host != here.host {
        return Err(refused(format!(
            "it runs on host `{}` ({}); cancel it there",
            run.owner.host, run.owner
        )));
    }
    if !run.owner.is_alive() {
        return Err(refused(format!(
            "its host process ({}) is gone; run `capstan cancel {}` again to cancel the interrupted run",
            run.owner, run.id
        )));
    }
    let by = super::identity(args.by.as_deref());
    // Who and why first: the host reads them from the store when SIGTERM comes.
    let path = std::path::Path::new(&run.run_dir).join("audit.jsonl");
    let log = AuditLog::open(&path, store.clone(), &run.id).map_err(|e| {
        Failure::new(
            exit::INTERNAL,
            format!("error: cannot append to {}: {e}", path.display()),
        )
    })?;
    log.record(
        "",
        "capstan",
        "run",
        true,
        json!({ "event": CANCEL_REQUESTED, "by": by, "reason": args.reason }),
        None,
    );
    kill(Pid::from_raw(run.owner.pid as i32), Signal::SIGTERM).map_err(|e| {
        refused(format!(
            "cannot signal its host process ({}): {e}",
            run.owner
        ))
    })?;
    eprintln!(
        "stopping run {} ({}): its programs get SIGTERM, then SIGKILL after the host's --stop-grace…",
        run.id, run.owner
    );
    let deadline = Instant::now() + args.wait;
    loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let now = store.run(&run.id).map_err(super::store_failure)?;
        if now.status != RunState::Running || !run.owner.is_alive() {
            eprintln!(
                "run {} is {}; environment `{}` is free once its host released it",
                run.id,
                now.status.as_str(),
                run.environment
            );
            return Ok(if now.status == RunState::Cancelled {
                exit::OK
            } else {
                exit::REFUSED
            });
        }
        if Instant::now() >= deadline {
            return Err(refused(format!(
                "still running after {}; its host process is {}",
                humantime::format_duration(args.wait),
                run.owner
            )));
        }
    }
}

/// End the programs `run` started that outlived its host (recorded as
/// `exec-started`, identified by pid and start time): SIGTERM to each one's
/// process group, SIGKILL after `grace`. Returns those still alive.
async fn end_orphans(
    store: &dyn RunStore,
    run: &RunRow,
    grace: Duration,
) -> Result<Vec<String>, Failure> {
    use crate::store::Owner;
    let events = store.audit_events(&run.id).map_err(super::store_failure)?;
    let alive = || -> Vec<(Owner, String)> {
        events
            .iter()
            .filter(|e| e.capability == "exec-started")
            .filter_map(|e| {
                let owner = serde_json::from_value::<Owner>(e.detail.clone()).ok()?;
                let program = e.detail["program"].as_str().unwrap_or("?").to_string();
                owner.is_alive().then_some((owner, program))
            })
            .collect()
    };
    let signal = |signal: Signal| {
        for (owner, _) in alive() {
            // Each program leads its own process group (see caps::exec).
            let _ = nix::sys::signal::killpg(Pid::from_raw(owner.pid as i32), signal);
        }
    };
    if alive().is_empty() {
        return Ok(Vec::new());
    }
    for (owner, program) in alive() {
        eprintln!(
            "ending `{}` ({owner}), left running by run {}: SIGTERM, SIGKILL after {}",
            crate::text::inline(&program),
            run.id,
            humantime::format_duration(grace)
        );
    }
    signal(Signal::SIGTERM);
    let deadline = Instant::now() + grace;
    while !alive().is_empty() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    signal(Signal::SIGKILL);
    let deadline = Instant::now() + Duration::from_secs(5);
    while !alive().is_empty() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(alive()
        .into_iter()
        .map(|(owner, program)| format!("`{}` ({owner})", crate::text::inline(&program)))
        .collect())
}
