//! `capstan run`: load, check, and run a pipeline.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;

use super::drive::{Begin, Drive, DriveFlags, drive};
use crate::exit::{self, Failure};
use crate::run::stage::StageStatus;
use crate::run::{RunOptions, StageRecord, changes, selected};
use crate::store::{RunFilter, RunKind, RunState, RunStore, latest_attempts};

/// Run a pipeline: check every plugin and grant, then run the stages in
/// dependency order, independent ones at the same time.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
Examples:
  capstan run examples/hello/pipeline.toml
  capstan run pipeline.toml --env production --only plan
  capstan run pipeline.toml --dry-run
  capstan run pipeline.toml --changed-since origin/main   # only what the change concerns
  capstan run pipeline.toml --force build                 # the scheduled rebuild

State lives in .capstan/ at the root of the git repository holding the pipeline
file (beside the file outside a repository), wherever capstan is started; see
--state-dir. Each run is recorded in its run store (.capstan/capstan.db, or the
PostgreSQL server --store names; see `capstan runs`, `capstan show`) and gets a directory .capstan/runs/<run-id>/ with
run.json, outputs.json, audit.jsonl, logs/<stage>.log and stages/<stage>/ (the
work dirs; a failed attempt's is moved to stages/<stage>.attempt-<n>/ when the stage
runs again). A run holds its environment's lock from its first stage to its end,
also while it waits for approval; a second run on the environment fails at once
naming it, or waits with --wait. Ctrl-C stops the run: its programs get SIGTERM,
then SIGKILL after --stop-grace (at once on a second Ctrl-C); it is recorded as
cancelled (exit code 8).")]
pub struct Args {
    /// The pipeline file.
    pub pipeline: PathBuf,
    /// The environment to target (default: the first in [pipeline] environments).
    #[arg(long = "env", short = 'e')]
    pub environment: Option<String>,
    /// Run only this stage and what it needs (repeatable).
    #[arg(long = "only", value_name = "STAGE")]
    pub only: Vec<String>,
    /// Check everything and show what would run, without running it.
    #[arg(long)]
    pub dry_run: bool,
    /// Who starts the run (recorded; may not approve it). Default: $CAPSTAN_ACTOR, the CI
    /// actor ($GITHUB_ACTOR, $GITLAB_USER_LOGIN), or $USER.
    #[arg(long = "as", value_name = "NAME")]
    pub author: Option<String>,
    /// Run only the stages whose `triggers.paths` match a file changed since this git ref
    /// (committed, staged, in the working tree, or new), and the stages that need them; the
    /// others keep the outputs of the environment's last good run.
    #[arg(long, value_name = "GIT_REF")]
    pub changed_since: Option<String>,
    /// Run this stage whatever changed (repeatable); `${stage.forced}` is true in its `with`
    /// (e.g. to make the Packer stage rebuild an unchanged image).
    #[arg(long, value_name = "STAGE")]
    pub force: Vec<String>,
    #[command(flatten)]
    pub flags: DriveFlags,
}

pub async fn exec(args: &Args, cli: &super::Cli) -> Result<u8, Failure> {
    let pipeline = super::load_pipeline(&args.pipeline)?;
    let environment = super::environment(&pipeline, args.environment.as_deref())?;
    let named = args.only.iter().map(|s| ("--only", s));
    for (flag, only) in named.chain(args.force.iter().map(|s| ("--force", s))) {
        if !pipeline.stages.contains_key(only) {
            let stages = pipeline
                .stages
                .keys()
                .cloned()
                .collect::<Vec<_>>()
                .join(", ");
            return Err(Failure::new(
                exit::USAGE,
                format!(
                    "error: {flag} `{only}` is not a stage of {}; stages are: {stages}",
                    args.pipeline.display()
                ),
            ));
        }
    }
    let changes = match &args.changed_since {
        Some(since) => Some(
            changes::since(&pipeline.dir, since)
                .map_err(|e| Failure::new(exit::USAGE, format!("error: {e}")))?,
        ),
        None => None,
    };
    let runtime = super::new_runtime()?;
    let prepared = Arc::new(super::prepare_pipeline(pipeline, &runtime, cli).await?);
    super::warn_unrequested(&prepared);
    let opts = RunOptions {
        environment,
        only: args.only.clone(),
        echo: !args.flags.quiet,
        author: super::identity(args.author.as_deref())?,
        stop: args.flags.stop(),
        forced: args.force.clone(),
    };
    if args.dry_run {
        let mut out = crate::term::stdout();
        dry_run(&mut out, &prepared, &opts)
            .and_then(|()| std::io::Write::flush(&mut out))
            .map_err(crate::term::output_failure)?;
        return Ok(exit::OK);
    }
    let store = cli.store()?;
    let done = match &changes {
        Some(changes) => unchanged(&prepared, &opts, changes, store.as_ref())?,
        None => Vec::new(),
    };
    let dir = super::create_run_dir(cli)?;
    let new = super::new_run(&prepared, &dir, &opts, RunKind::Deploy);
    let (code, record) = drive(Drive {
        prepared: prepared.clone(),
        dir,
        opts: opts.clone(),
        store: store.clone(),
        record_done: !done.is_empty(),
        done,
        flags: args.flags.clone(),
        begin: Begin::New(Box::new(new)),
    })
    .await?;
    super::rollback::if_failed(&record, &prepared, &opts, &args.flags, cli, &store).await;
    Ok(code)
}

/// The stages a change does not concern, kept as the environment's last
/// good run recorded them (see `run::changes`).
fn unchanged(
    prepared: &crate::run::Prepared,
    opts: &RunOptions,
    changes: &changes::Changes,
    store: &dyn RunStore,
) -> Result<Vec<StageRecord>, Failure> {
    let selection = changes::select(&prepared.pipeline, changes, &opts.forced);
    keep_from_last_good(
        prepared,
        opts,
        selection.unchanged,
        &selection.run,
        store,
        |name, by| {
            format!(
                "stage `{name}` is unchanged since {}, but `{by}` needs its outputs and no good run of \
             `{}` has them; run it too with --force {name}, or run without --changed-since",
                changes.since, opts.environment
            )
        },
    )
}

/// `kept` stages (with why they do not run) as the environment's last good
/// run recorded them, their outputs what the `running` stages see; one
/// that a running stage needs and no good run has is refused with
/// `missing(stage, needed_by)`, the others are recorded as skipped.
pub(super) fn keep_from_last_good(
    prepared: &crate::run::Prepared,
    opts: &RunOptions,
    kept: Vec<(String, String)>,
    running: &BTreeSet<String>,
    store: &dyn RunStore,
    missing: impl Fn(&str, &str) -> String,
) -> Result<Vec<StageRecord>, Failure> {
    let pipeline = &prepared.pipeline;
    let store_error = super::store_failure;
    let runs = store
        .runs(&RunFilter {
            environment: Some(opts.environment.clone()),
            limit: None,
        })
        .map_err(store_error)?;
    let good = runs
        .iter()
        .find(|r| r.status == RunState::Succeeded && r.kind != RunKind::Drift);
    let rows = match good {
        Some(run) => latest_attempts(store.stages(&run.id).map_err(store_error)?),
        None => Vec::new(),
    };
    let mut done = Vec::new();
    for (name, reason) in kept {
        if !pipeline.stages[&name].runs_in(&opts.environment) {
            continue;
        }
        let row = rows
            .iter()
            .find(|r| r.name == name && r.status.is_finished());
        match (good, row) {
            (Some(run), Some(row)) => {
                let mut record = StageRecord::finished(row.clone(), &run.run_dir);
                if let StageStatus::Succeeded { summary, .. } = &mut record.status {
                    *summary = format!("{reason} (outputs of run {})", run.id);
                }
                done.push(record);
            }
            _ => {
                let needed_by = running
                    .iter()
                    .find(|s| pipeline.stages[*s].needs.contains(&name));
                if let Some(by) = needed_by {
                    return Err(Failure::new(
                        exit::USAGE,
                        format!("error: {}", missing(&name, by)),
                    ));
                }
                done.push(StageRecord {
                    name: name.clone(),
                    plugin: pipeline.stages[&name].plugin.clone(),
                    status: StageStatus::Skipped { reason },
                    started: None,
                    duration_ms: None,
                    log: String::new(),
                });
            }
        }
    }
    Ok(done)
}

fn dry_run(
    out: &mut impl std::io::Write,
    prepared: &crate::run::Prepared,
    opts: &RunOptions,
) -> std::io::Result<()> {
    let chosen = selected(prepared, opts);
    writeln!(
        out,
        "pipeline `{}`, environment `{}` (dry run: nothing is started)",
        prepared.pipeline.name, opts.environment
    )?;
    for (name, stage) in &prepared.pipeline.stages {
        let plugin = &prepared.plugins[&stage.plugin];
        let mark = if chosen.contains(name) {
            "run "
        } else {
            "skip"
        };
        let needs = if stage.needs.is_empty() {
            String::new()
        } else {
            format!(" after {}", stage.needs.join(", "))
        };
        let needs = match stage.run_if {
            crate::pipeline::RunIf::Success => needs,
            other => format!("{needs} (run_if = \"{other}\")"),
        };
        writeln!(
            out,
            "  {mark} {name}: {} {}{needs}",
            crate::text::inline(&plugin.info.name),
            crate::text::inline(&plugin.info.version)
        )?;
    }
    Ok(())
}
