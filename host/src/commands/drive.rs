//! Driving a run to its end, shared by `run`, `resume` and `rollback`: take
//! the environment lock, record the run, execute, release, report.

use std::sync::Arc;
use std::time::Duration;

use crate::exit::{self, Failure};
use crate::run::events::{self, Event};
use crate::run::github;
use crate::run::lock::{self, LockError};
use crate::run::stage::StageStatus;
use crate::run::stop::{self, Stop};
use crate::run::{ExecError, Prepared, RunDir, RunOptions, RunRecord, StageRecord, execute};
use crate::store::{NewRun, Owner, RunKind, RunStore};
use crate::store::{RunState, StageState};
use crate::term::{Layout, Stream, Tone};
use crate::text::inline;
pub use crate::text::one_line;

/// Flags of every command that drives a run (`run`, `resume`, `rollback`).
#[derive(Debug, Clone, clap::Args)]
pub struct DriveFlags {
    /// Do not echo stage logs to the terminal (they are still in the run dir).
    #[arg(long, short = 'q')]
    pub quiet: bool,
    /// Print the run record as JSON on stdout at the end.
    #[arg(long)]
    pub json: bool,
    /// If another run holds the environment's lock, wait for it this long (e.g. `10m`)
    /// instead of failing at once.
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub wait: Option<Duration>,
    /// When the run is stopped (Ctrl-C, SIGTERM, `capstan cancel`): how long its programs get
    /// between SIGTERM and SIGKILL. A second Ctrl-C kills them at once.
    #[arg(
        long,
        value_name = "DURATION",
        default_value = "10s",
        env = "CAPSTAN_STOP_GRACE",
        value_parser = humantime::parse_duration
    )]
    pub stop_grace: Duration,
    /// Write the run's events (stages started and finished, log lines,
    /// approvals, lock waits) as JSON lines to FILE (appended), or `-` for
    /// standard output; their shape is in the README ("Event stream").
    #[arg(long, value_name = "FILE|-")]
    pub events: Option<String>,
}

impl DriveFlags {
    /// A new stop switch for a run driven with these flags.
    pub fn stop(&self) -> Stop {
        Stop::new(self.stop_grace)
    }
}

/// A new run, or one that continues.
pub enum Begin {
    New(Box<NewRun>),
    Resume,
}

/// Everything `drive` needs.
pub struct Drive {
    pub prepared: Arc<Prepared>,
    pub dir: RunDir,
    pub opts: RunOptions,
    pub store: Arc<dyn RunStore>,
    /// Stages that keep their recorded outcome (see `run::execute`).
    pub done: Vec<StageRecord>,
    pub flags: DriveFlags,
    pub begin: Begin,
    /// Record `done` in the store as reused stages (a rollback's).
    pub record_done: bool,
}

/// Lock, record, execute, release; print the run's table. Returns the exit
/// code and the record.
pub async fn drive(d: Drive) -> Result<(u8, RunRecord), Failure> {
    if let Some(target) = &d.flags.events {
        events::open(target, &d.dir.id)
            .map_err(|e| Failure::new(exit::USAGE, format!("error: {e}")))?;
    }
    let driven = drive_events(d).await;
    events::close();
    driven
}

async fn drive_events(d: Drive) -> Result<(u8, RunRecord), Failure> {
    let env = d.opts.environment.clone();
    let id = d.dir.id.clone();
    let forget_new = || {
        if matches!(d.begin, Begin::New(_)) {
            // Nothing ran: leave no empty run directory behind.
            let _ = std::fs::remove_dir_all(&d.dir.path);
        }
    };
    // Held until the store's lock is released (the process ends, at the
    // latest), and let go just before it: a run taking the store's lock the
    // moment it is free finds this one free too.
    let host_lock = match lock::acquire(&d.store, &d.dir.state_dir(), &env, &id, d.flags.wait).await
    {
        Ok((stale, host_lock)) => {
            if let Some(stale) = stale {
                eprintln!("note: {}", lock::took_over(&stale));
            }
            host_lock
        }
        Err(e @ LockError::HeldHere { .. }) => {
            forget_new();
            return Err(Failure::new(
                exit::LOCKED,
                format!(
                    "error: {e}.\n  Two runs never change one environment at once: wait for that run to \
                     end (or `--wait 10m`); if its store lost records, it stops itself and says so."
                ),
            ));
        }
        Err(e @ LockError::SameRun { .. }) => {
            return Err(Failure::new(
                exit::REFUSED,
                format!("error: {e}; see `capstan show {id}`"),
            ));
        }
        Err(LockError::Held(h)) => {
            forget_new();
            let what = match h.run_status {
                Some(RunState::AwaitingApproval) => format!(
                    "waits for approval; approve it (`capstan approve {0}`; `capstan show {0}` says how), then `capstan resume {0}`, or reject it (`capstan reject {0}`)",
                    h.run_id
                ),
                _ if h.lost => lock::lost_host(&h),
                // Its host is dead (live children are only looked for then),
                // also where the store has not marked it interrupted yet.
                Some(RunState::Interrupted | RunState::Running) | None
                    if !h.live_children.is_empty() =>
                {
                    format!(
                        "was interrupted, but programs it started still run ({}, with their descendants); \
                     the environment is free when they end",
                        h.live_children
                            .iter()
                            .map(|c| format!("pid {}", c.pid))
                            .collect::<Vec<_>>()
                            .join(", ")
                    )
                }
                _ => lock::running(&h),
            };
            return Err(Failure::new(
                exit::LOCKED,
                format!(
                    "error: environment `{env}` is locked by run {} (started by {}), which {what}.\n  \
                     Two runs never change one environment at once: wait for it with `--wait 10m`, or try again later.",
                    h.run_id,
                    h.author.as_deref().unwrap_or("unknown"),
                ),
            ));
        }
        Err(LockError::Store(e)) => {
            return Err(Failure::new(exit::INTERNAL, format!("error: {e}")));
        }
    };
    let begun = match &d.begin {
        // A run starts when it holds the lock, not while it waits for it.
        Begin::New(run) => d.store.create_run(
            &NewRun {
                started: jiff::Timestamp::now().to_string(),
                ..(**run).clone()
            },
            &Owner::current(),
        ),
        Begin::Resume => match d.store.claim_run(&id, &Owner::current()) {
            Ok(true) => Ok(()),
            Ok(false) => {
                return Err(Failure::new(
                    exit::REFUSED,
                    format!(
                        "error: run {id} was resumed by another process meanwhile; see `capstan show {id}`"
                    ),
                ));
            }
            Err(e) => Err(e),
        },
    };
    let begun = begun.and_then(|()| {
        if !d.record_done {
            return Ok(());
        }
        d.done.iter().try_for_each(|r| {
            let mut row = r.row(r.started.clone());
            // Outputs taken from another run; a stage that did not run keeps
            // its own status (skipped, and why).
            if row.status == StageState::Succeeded {
                row.status = StageState::Reused;
            }
            d.store.end_stage(&id, None, &row)
        })
    });
    if let Err(e) = begun {
        drop(host_lock);
        let _ = d.store.unlock(&env, &id);
        return Err(Failure::new(exit::INTERNAL, format!("error: {e}")));
    }
    eprintln!(
        "run {id} of `{}` in environment `{env}` ({})",
        d.prepared.pipeline.name,
        d.dir.path.display()
    );
    let kind = match &d.begin {
        Begin::New(run) => run.kind,
        Begin::Resume => d.store.run(&id).map(|r| r.kind).unwrap_or(RunKind::Deploy),
    };
    events::emit(Event::RunStarted {
        pipeline: &d.prepared.pipeline.name,
        environment: &env,
        kind: kind.as_str(),
        resumed: matches!(d.begin, Begin::Resume),
        author: &d.opts.author,
    });
    let listener = stop::listen(
        d.opts.stop.clone(),
        d.store.clone(),
        id.clone(),
        // Who pressed Ctrl-C or sent SIGTERM: this process's operator.
        super::identity(None)
            .unwrap_or_else(|_| format!("a signal to capstan (pid {})", std::process::id())),
    );
    let lease = lock::keep_lease(d.store.clone(), id.clone(), d.opts.stop.clone());
    let watch = stop::watch_store(d.opts.stop.clone(), d.store.clone());
    let result = execute(d.prepared.clone(), &d.dir, &d.opts, &d.store, d.done).await;
    lease.abort();
    // Ended, not only told to end: each holds the store, which must close
    // (and checkpoint its WAL away) when the command ends.
    if let Some(listener) = listener {
        listener.abort();
        let _ = listener.await;
    }
    watch.abort();
    let _ = watch.await;
    let record = match result {
        Ok(record) => record,
        Err(e) => {
            drop(host_lock);
            let _ = d.store.unlock(&env, &id);
            return Err(Failure::new(exit::INTERNAL, not_recorded(&id, &e, &d.dir)));
        }
    };
    // A stopped run's programs were ended before `execute` returned; the
    // environment is freed only if none is left (see `run::stop`).
    let programs_left =
        record.status == RunState::Cancelled && !Stop::programs_ended(Duration::from_secs(5)).await;
    if programs_left {
        eprintln!(
            "warning: programs of run {id} are still running; environment `{env}` stays locked until they end"
        );
    } else if record.status != RunState::AwaitingApproval {
        drop(host_lock);
        if let Err(e) = d.store.unlock(&env, &id) {
            eprintln!("warning: cannot release the lock on `{env}`: {e}");
        }
    }
    let code = report(&record, &d.dir);
    if let Some(fault) = d.opts.stop.requested().filter(|r| r.fault) {
        return Err(Failure::new(
            exit::INTERNAL,
            stopped_for(&id, &env, &fault.reason, d.store.as_ref(), &d.dir),
        ));
    }
    events::emit(Event::RunFinished {
        status: record.status.as_str(),
        duration_ms: record.duration_ms,
        exit_code: code,
    });
    if github::active() {
        let waiting = d.store.pending_approval(&id).ok().flatten();
        github::finished(&record, waiting.as_ref());
    }
    if d.flags.json
        && let Err(f) = crate::term::print(format_args!(
            "{}\n",
            serde_json::to_string_pretty(&record).expect("run records serialize")
        ))
        && !f.message.is_empty()
    {
        // The run's own exit code stands; a reader gone is no news.
        eprintln!("{}", f.message);
    }
    Ok((code, record))
}

/// Why a run could not go on being recorded (`execute` failed), and what to do.
fn not_recorded(id: &str, e: &ExecError, dir: &RunDir) -> String {
    let full = match e {
        ExecError::Store(e) => e.is_disk_full(),
        ExecError::RunDir { source, .. } => {
            source.kind() == std::io::ErrorKind::StorageFull
                || source.kind() == std::io::ErrorKind::QuotaExceeded
        }
    };
    if !full {
        return format!("error: run {id}: {e}; `capstan resume {id}` continues it once fixed");
    }
    let state = dir.state_dir();
    format!(
        "error: run {id}: {e}\n  No space left on device: nothing more of the run could be recorded \
         (the next capstan command shows it as interrupted). Free space on the file system holding {} \
         (`df {}`): old run directories under {}, the work dirs of failed attempts \
         (stages/<stage>.attempt-<n>/ in a run directory), or whatever else fills it; then \
         `capstan resume {id}` continues the run, and a stage cut short runs again in an empty work dir.",
        state.display(),
        state.display(),
        state.join("runs").display()
    )
}

/// Why the run stopped for a fault of the run store (`fault`), how it is
/// recorded, and what to do.
fn stopped_for(id: &str, env: &str, fault: &str, store: &dyn RunStore, dir: &RunDir) -> String {
    let check = format!(
        "Check that no other run changed environment `{env}` meanwhile (`capstan runs --env {env}`)"
    );
    let resume = format!("then `capstan resume {id}` continues it");
    let next = match store.run(id) {
        Ok(run) if run.status == RunState::Running => format!(
            "The run store could not record that it stopped: it shows as running until a command \
             that can write the store marks it interrupted. {check}, {resume}."
        ),
        Ok(run) if crate::run::resume::may_resume(&run).is_ok() => {
            format!("It is recorded as {}. {check}, {resume}.", run.status)
        }
        Ok(run) => format!(
            "It is recorded as {}: nothing of it is left to run. {check}.",
            run.status
        ),
        Err(e) => format!(
            "{} its run directory {} keeps what happened (run.json, audit.jsonl, logs/). {check}, \
             then start a new run.",
            if e.is_unknown_run() {
                "The run store has no record of it any more:"
            } else {
                "The run store cannot be read any more:"
            },
            dir.path.display()
        ),
    };
    format!("error: run {id} stopped: {fault}.\n  {next}")
}

/// The end-of-run table and verdict on stderr; the exit code. On a
/// terminal the table fits its width and statuses are coloured (as
/// `--color` and `NO_COLOR` allow); elsewhere it is one line per stage.
fn report(record: &RunRecord, dir: &RunDir) -> u8 {
    let layout = Layout::of(Stream::Stderr);
    let mut table = layout.table(["stage", "status", "time", "summary"]);
    for s in &record.stages {
        let (status, tone, text) = match &s.status {
            StageStatus::Succeeded { summary, .. } => ("succeeded", Tone::Good, summary.as_str()),
            StageStatus::Failed { reason } => ("FAILED", Tone::Bad, reason.as_str()),
            StageStatus::Skipped { reason } => ("skipped", Tone::Plain, reason.as_str()),
            StageStatus::AwaitingApproval { reason } => {
                ("WAITING", Tone::Attention, reason.as_str())
            }
            StageStatus::Cancelled { reason } => ("CANCELLED", Tone::Stopped, reason.as_str()),
        };
        let time = s
            .duration_ms
            .map(|ms| format!("{:.1}s", ms as f64 / 1000.0))
            .unwrap_or_default();
        table.add_row([
            layout.cell(inline(&s.name), Tone::Plain),
            layout.cell(status, tone),
            layout.cell(time, Tone::Plain),
            layout.cell(one_line(text, 110), Tone::Plain),
        ]);
    }
    eprintln!("{table}");
    let (word, code) = match record.status {
        RunState::Succeeded => ("succeeded", exit::OK),
        RunState::AwaitingApproval => ("is WAITING FOR APPROVAL", exit::AWAITING_APPROVAL),
        RunState::Rejected => ("was REJECTED", exit::STAGE_FAILED),
        RunState::Cancelled => ("was CANCELLED", exit::CANCELLED),
        // Stopped by Capstan itself (a fault of the run store's).
        RunState::Interrupted => ("was STOPPED", exit::INTERNAL),
        _ => ("FAILED", exit::STAGE_FAILED),
    };
    eprintln!(
        "run {} {} in {:.1}s; logs, outputs and audit log in {}",
        record.run_id,
        word,
        record.duration_ms as f64 / 1000.0,
        dir.path.display()
    );
    for s in &record.stages {
        if let StageStatus::AwaitingApproval { reason } = &s.status {
            eprintln!("waiting for approval: {}", inline(reason.trim_end()));
        }
    }
    code
}

#[cfg(test)]
mod tests {
    use crate::text::one_line;

    #[test]
    fn one_line_is_one_line_of_inert_text() {
        let table: &[(&str, usize, &str)] = &[
            ("plan: 3 to add", 110, "plan: 3 to add"),
            ("  spaced   out  \n", 110, "spaced out"),
            ("two\nlines", 110, r"two\nlines"),
            (
                "ok\n✓ deploy (0.1s): forged",
                110,
                r"ok\n✓ deploy (0.1s): forged",
            ),
            ("\x1b[2Jcleared", 110, r"\x1b[2Jcleared"),
            ("50%\r100%", 110, r"50%\r100%"),
            ("rtl\u{202e}txt", 110, r"rtl\u{202e}txt"),
            ("abcdef", 3, "abc…"),
            ("ab\x1bcdef", 3, r"ab\x1b…"),
        ];
        for (text, max, want) in table {
            assert_eq!(one_line(text, *max), *want, "{text:?}");
        }
    }
}
