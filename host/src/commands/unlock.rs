//! `capstan unlock`: say who holds an environment's lock, and free a lock
//! whose host was lost (`--force`), recorded with who and why.

use crate::exit::{self, Failure};
use crate::run::lock;
use crate::store::owner::Liveness;
use crate::store::{LockHolder, RunState, lease};

/// Show who holds an environment's lock; with --force, release it.
///
/// A run's lock frees itself when the run ends, when its process dies on
/// this machine, or when its host (another machine) stops renewing its
/// lease (default 60 s, $CAPSTAN_LEASE) and no program it started may still
/// run there. Only a lock whose lost host may still have programs running
/// needs --force: you vouch that the host is gone, or that its programs
/// were stopped.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
Examples:
  capstan unlock --env production
  capstan unlock --env production --force --reason \"runner ci-7 destroyed; its apply was stopped\"

The run that held the lock is marked interrupted (`capstan resume <run>`
continues it on this machine), and the release is recorded: `capstan show
<run>` prints who released it, when and why. A process that still runs the
run elsewhere finds at its next lease renewal that it lost it, and stops.")]
pub struct Args {
    /// The environment whose lock to show or release.
    #[arg(long = "env", value_name = "ENVIRONMENT")]
    pub environment: String,
    /// Release the lock even though programs of its run may still run on
    /// its (lost) host.
    #[arg(long, requires = "reason")]
    pub force: bool,
    /// Why, for the record (required with --force).
    #[arg(long)]
    pub reason: Option<String>,
    /// Who releases it (default: $CAPSTAN_ACTOR, the CI actor, or $USER).
    #[arg(long = "as", value_name = "NAME")]
    pub by: Option<String>,
}

pub fn exec(args: &Args, cli: &super::Cli) -> Result<u8, Failure> {
    let store = cli.store()?;
    let env = &args.environment;
    let holder = store.lock_holder(env).map_err(super::store_failure)?;
    let Some(h) = holder else {
        println!("environment `{env}` is not locked");
        return Ok(exit::OK);
    };
    println!(
        "environment `{env}` is locked by run {}: {}",
        h.run_id,
        state(&h)
    );
    if !args.force {
        return Ok(exit::OK);
    }
    refuse_live(&h)?;
    let by = super::identity(args.by.as_deref())?;
    let reason = args.reason.as_deref().unwrap_or_default();
    let released = store
        .force_unlock(env, &by, reason)
        .map_err(super::store_failure)?;
    match released {
        Some(r) => {
            println!(
                "released the lock on `{env}` held by run {} ({}), by {by}: {reason} (recorded; `capstan show {}` shows it)",
                r.run_id, r.holder, r.run_id
            );
            if matches!(
                h.run_status,
                Some(RunState::Running | RunState::Interrupted | RunState::AwaitingApproval)
            ) {
                println!("`capstan resume {}` continues the run here", r.run_id);
            }
        }
        None => println!("environment `{env}` was unlocked meanwhile"),
    }
    Ok(exit::OK)
}

/// What the holder is doing, in words.
fn state(h: &LockHolder) -> String {
    if h.lost {
        return lock::lost_host(h);
    }
    if !h.live_children.is_empty() {
        return format!(
            "its host is gone, but programs it started still run ({}); the lock frees itself when they end",
            h.live_children
                .iter()
                .map(|c| format!("pid {}", c.pid))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    match h.run_status {
        Some(RunState::AwaitingApproval) => format!(
            "it waits for approval (`capstan approve|reject {0}`, or `capstan cancel {0}`)",
            h.run_id
        ),
        Some(RunState::Running) | None => lock::running(h),
        Some(s) => format!(
            "it is {s}, and holds nothing: the next run on `{}` takes the lock over",
            h.environment
        ),
    }
}

/// A holder that is demonstrably alive is stopped with `capstan cancel`,
/// not by taking its lock away.
fn refuse_live(h: &LockHolder) -> Result<(), Failure> {
    if !matches!(h.run_status, Some(RunState::Running) | None) {
        return Ok(());
    }
    let alive = match h.owner.liveness() {
        Liveness::Alive => true,
        Liveness::Dead => false,
        Liveness::Elsewhere => h.lease_until.is_some_and(|u| u > lease::now_ms()),
    };
    if !alive {
        return Ok(());
    }
    Err(Failure::new(
        exit::REFUSED,
        format!(
            "error: run {} is running ({}) and {}: it is not lost. Stop it with `capstan cancel {}` \
             on its host, or wait until its lease ends.",
            h.run_id,
            h.owner,
            match h.lease_until.filter(|_| !h.owner.is_here()) {
                Some(u) => format!("renewed its lease until {}", lease::time_text(u)),
                None => "its process is alive on this machine".to_string(),
            },
            h.run_id
        ),
    ))
}
