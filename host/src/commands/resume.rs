//! `capstan resume`: continue a run that waits for approval, was
//! interrupted (its host died), or failed — in the same run directory, with
//! the outputs its finished stages recorded.

use std::path::PathBuf;
use std::sync::Arc;

use super::drive::{Begin, Drive, DriveFlags, drive};
use crate::caps::exec::cgroup;
use crate::exit::{self, Failure};
use crate::run::resume::{self, ResumeError};
use crate::run::{RunDir, RunOptions};
use crate::store::{Release, RunKind, RunRow};
use crate::text::inline;

/// Continue a paused, interrupted or failed run from its first unfinished
/// stage. Finished stages are not run again (a finished apply never runs
/// twice); the pipeline file and plugins must be the ones the run started with.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
Examples:
  capstan resume 20261126-101500-7f3a                 # after `capstan approve`, or a crash
  capstan resume 20261126-101500-7f3a --from plan     # re-plan: run plan and all after it again
  capstan resume 20261126-101500-7f3a --wait 10m")]
pub struct Args {
    /// The run: its id, a unique prefix or suffix of it, `latest` (the run
    /// that started last) or `latest@<environment>`.
    pub run: String,
    /// Run this stage and every stage after it again, even if they finished.
    #[arg(long, value_name = "STAGE")]
    pub from: Option<String>,
    #[command(flatten)]
    pub flags: DriveFlags,
}

/// A refusal as a failure.
fn refused(e: ResumeError) -> Failure {
    Failure::new(exit::REFUSED, format!("error: {e}"))
}

pub async fn exec(args: &Args, cli: &super::Cli) -> Result<u8, Failure> {
    let store = cli.store()?;
    let run = store.run(&args.run).map_err(super::store_failure)?;
    resume::may_resume(&run).map_err(refused)?;
    resume::dir_here(&run).map_err(refused)?;
    let pipeline = super::load_pipeline(&PathBuf::from(&run.pipeline_file))?;
    resume::same_pipeline(&run, &pipeline).map_err(refused)?;
    if let Some(from) = &args.from
        && !pipeline.stages.contains_key(from)
    {
        return Err(Failure::new(
            exit::USAGE,
            format!(
                "error: --from `{from}` is not a stage of {}; stages are: {}",
                run.pipeline_file,
                pipeline
                    .stages
                    .keys()
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ));
    }
    let runtime = super::new_runtime()?;
    let prepared = Arc::new(super::prepare_pipeline(pipeline, &runtime, cli).await?);
    resume::same_plugins(&run, |name| {
        prepared.plugins.get(name).map(|l| l.digest.as_str())
    })
    .map_err(refused)?;
    let rows = store.stages(&run.id).map_err(super::store_failure)?;
    let plan = resume::plan(&run, rows, &prepared.pipeline, args.from.as_deref());
    if !plan.interrupted.is_empty() {
        let events = store.audit_events(&run.id).map_err(super::store_failure)?;
        let forced = store
            .lock_releases(&run.id)
            .map_err(super::store_failure)?
            .iter()
            .any(|r| r.why == Release::Forced);
        for left in resume::leftovers(&events, &plan.interrupted, &prepared.pipeline, forced) {
            eprintln!(
                "waiting for `{}` ({}), started by the interrupted attempt of stage `{}`, \
                 to finish (up to {})…",
                inline(&left.program),
                left.child,
                left.stage,
                humantime::format_duration(left.limit)
            );
            left.wait().await.map_err(refused)?;
        }
    }
    let descendants = cgroup::run_members(&run.id);
    if !descendants.is_empty() {
        eprintln!(
            "ending what programs of run {} started and left running: {}",
            run.id,
            descendants
                .iter()
                .map(|p| format!("pid {p}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    resume::end_descendants(&run.id).await.map_err(refused)?;
    eprintln!(
        "resuming run {} ({}): {} finished stage(s) kept{}",
        run.id,
        run.status,
        plan.keep.len(),
        args.from
            .as_deref()
            .map(|f| format!("; `{f}` and what follows it run again"))
            .unwrap_or_default()
    );
    let opts = opts_of(&run, &args.flags);
    let (code, record) = drive(Drive {
        prepared: prepared.clone(),
        dir: RunDir {
            id: run.id.clone(),
            path: PathBuf::from(&run.run_dir),
        },
        opts,
        store: store.clone(),
        done: plan.keep,
        flags: args.flags.clone(),
        begin: Begin::Resume,
        record_done: false,
    })
    .await?;
    if run.kind == RunKind::Deploy {
        super::rollback::if_failed(
            &record,
            &prepared,
            &opts_of(&run, &args.flags),
            &args.flags,
            cli,
            &store,
        )
        .await;
    }
    Ok(code)
}

fn opts_of(run: &RunRow, flags: &DriveFlags) -> RunOptions {
    RunOptions {
        forced: Vec::new(),
        environment: run.environment.clone(),
        only: run.only.clone(),
        echo: !flags.quiet,
        author: run.author.clone(),
        stop: flags.stop(),
    }
}
