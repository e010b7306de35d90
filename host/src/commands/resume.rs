//! `capstan resume`: continue a run that waits for approval, was
//! interrupted (its host died), or failed — in the same run directory, with
//! the outputs its finished stages recorded.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::drive::{Begin, Drive, DriveFlags, drive};
use crate::exit::{self, Failure};
use crate::run::stage::StageStatus;
use crate::run::{RunDir, RunOptions, StageRecord};
use crate::store::{Owner, RunKind, RunRow, RunState, RunStore, StageRow, latest_attempts};

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

fn refused(message: String) -> Failure {
    Failure::new(exit::REFUSED, format!("error: {message}"))
}

pub async fn exec(args: &Args, cli: &super::Cli) -> Result<u8, Failure> {
    let store = cli.store()?;
    let run = store.run(&args.run).map_err(super::store_failure)?;
    match run.status {
        RunState::AwaitingApproval | RunState::Interrupted | RunState::Failed => {}
        RunState::Running => {
            return Err(refused(format!(
                "run {} is running ({}); it cannot be resumed twice",
                run.id, run.owner
            )));
        }
        RunState::Succeeded | RunState::Rejected | RunState::Cancelled => {
            let how = match run.status {
                RunState::Succeeded => "already succeeded",
                RunState::Rejected => "was rejected",
                _ => "was cancelled",
            };
            return Err(refused(format!(
                "run {} {how}; start a new run instead",
                run.id
            )));
        }
    }
    let pipeline = super::load_pipeline(&PathBuf::from(&run.pipeline_file))?;
    if pipeline.digest != run.pipeline_digest {
        return Err(refused(format!(
            "the pipeline file {} changed since run {} started (sha256 {} then, {} now). A resumed run \
             runs the pipeline it was planned and approved with: restore the file, or start a new run.",
            run.pipeline_file, run.id, run.pipeline_digest, pipeline.digest
        )));
    }
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
    same_plugins(&run, &prepared)?;
    let rows = latest_attempts(store.stages(&run.id).map_err(super::store_failure)?);
    wait_for_leftovers(store.as_ref(), &run, &rows, &prepared).await?;
    let rerun = |name: &str| {
        args.from.as_ref().is_some_and(|from| {
            name == from || prepared.pipeline.stages[name].upstream.contains(from)
        })
    };
    let done: Vec<StageRecord> = rows
        .into_iter()
        .filter(|r| matches!(r.status.as_str(), "succeeded" | "reused") && !rerun(&r.name))
        .filter(|r| prepared.pipeline.stages.contains_key(&r.name))
        .map(|r| finished(r, &run))
        .collect();
    eprintln!(
        "resuming run {} ({}): {} finished stage(s) kept{}",
        run.id,
        run.status.as_str(),
        done.len(),
        args.from
            .as_deref()
            .map(|f| format!("; `{f}` and what follows it run again"))
            .unwrap_or_default()
    );
    let opts = opts_of(&run, &args.flags);
    let (code, record) = drive(Drive {
        prepared: prepared.clone(),
        runtime,
        dir: RunDir {
            id: run.id.clone(),
            path: PathBuf::from(&run.run_dir),
        },
        opts,
        store: store.clone(),
        done,
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
        environment: run.environment.clone(),
        only: run.only.clone(),
        echo: !flags.quiet,
        author: run.author.clone(),
        stop: flags.stop(),
    }
}

/// The plugins must be the ones the run started with: an approved plan is
/// applied by the code that was reviewed.
fn same_plugins(run: &RunRow, prepared: &crate::run::Prepared) -> Result<(), Failure> {
    for p in run.plugins.as_array().into_iter().flatten() {
        let (Some(name), Some(then)) = (p["name"].as_str(), p["sha256"].as_str()) else {
            continue;
        };
        let now = prepared.plugins.get(name).map(|l| l.digest.as_str());
        if now != Some(then) {
            return Err(refused(format!(
                "plugin `{name}` changed since run {} started (sha256 {then} then, {} now); \
                 restore it, or start a new run",
                run.id,
                now.unwrap_or("missing")
            )));
        }
    }
    Ok(())
}

/// A recorded finished stage, as the executor keeps it.
pub fn finished(row: StageRow, run: &RunRow) -> StageRecord {
    let dir = std::path::Path::new(&run.run_dir)
        .join("logs")
        .join(format!("{}.log", row.name));
    StageRecord {
        name: row.name,
        plugin: row.plugin,
        status: StageStatus::Succeeded {
            summary: row.message,
            outputs: row.outputs.as_object().cloned().unwrap_or_default(),
            artifacts: serde_json::from_value(row.artifacts).unwrap_or_default(),
            report: row.report,
        },
        started: row.started,
        duration_ms: row.duration_ms,
        log: dir.display().to_string(),
    }
}

/// Programs an interrupted attempt started outlive the host that was killed
/// (they finish their work rather than stop halfway): wait for them before
/// the stage runs again, so that it never runs twice at once.
async fn wait_for_leftovers(
    store: &dyn RunStore,
    run: &RunRow,
    rows: &[StageRow],
    prepared: &crate::run::Prepared,
) -> Result<(), Failure> {
    let interrupted: Vec<&str> = rows
        .iter()
        .filter(|r| r.status == "interrupted")
        .map(|r| r.name.as_str())
        .collect();
    if interrupted.is_empty() {
        return Ok(());
    }
    let events = store.audit_events(&run.id).map_err(super::store_failure)?;
    let children = events
        .into_iter()
        .filter(|e| e.capability == "exec-started" && interrupted.contains(&e.stage.as_str()));
    for event in children {
        let Ok(child) = serde_json::from_value::<Owner>(event.detail.clone()) else {
            continue;
        };
        if !child.is_alive() {
            continue;
        }
        let program = crate::text::inline(event.detail["program"].as_str().unwrap_or("?"));
        let limit = prepared
            .pipeline
            .stages
            .get(&event.stage)
            .map_or(Duration::from_secs(600), |s| s.timeout);
        eprintln!(
            "waiting for `{program}` ({child}), started by the interrupted attempt of stage `{}`, \
             to finish (up to {})…",
            event.stage,
            humantime::format_duration(limit)
        );
        let deadline = Instant::now() + limit;
        while child.is_alive() {
            if Instant::now() >= deadline {
                return Err(refused(format!(
                    "`{program}` ({child}), started by the interrupted attempt of stage `{}`, still \
                     runs after {}; let it finish or stop it, then resume again",
                    event.stage,
                    humantime::format_duration(limit)
                )));
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
    Ok(())
}
