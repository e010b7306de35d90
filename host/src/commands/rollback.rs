//! `capstan rollback`: redeploy what an earlier good run deployed. A
//! rollback run is a new run of the pipeline in which the `[rollback]
//! reuse` stages (e.g. the image build) do not run: their outputs are the
//! ones the good run recorded, so plan → approval → apply → configure →
//! smoke redeploy its image.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use super::drive::{Begin, Drive, DriveFlags, drive};
use crate::exit::{self, Failure};
use crate::run::rollback::{self, RollbackError, Targets};
use crate::run::{Prepared, RunOptions, RunRecord};
use crate::store::{RunFilter, RunKind, RunStore};

/// Roll an environment back to the last good run (or the one named):
/// plan, approval, apply, configure and smoke tests run again with the
/// build outputs of that run. Recorded as a rollback run.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
Examples:
  capstan rollback --env production                 # to the last good run before the newest deploy
  capstan rollback --env production --to 20261120-093000-1a2b
  capstan rollback --env production --to 1a2b       # a unique prefix or suffix of the id
  capstan rollback --env dev --pipeline examples/golden-image/pipeline.toml

The default target is the newest succeeded run of the environment that started
before the newest deploy run (the one being undone). The pipeline file is the
target run's, as it is now; it needs a [rollback] section naming the stages
whose outputs are reused, e.g. reuse = [\"build\"].")]
pub struct Args {
    /// The environment to roll back: one of the pipeline's environments.
    #[arg(long = "env", short = 'e')]
    pub environment: String,
    /// The good run to redeploy: its id, a unique prefix or suffix of it,
    /// or `latest@<environment>` (the run that started last there).
    #[arg(long, value_name = "RUN")]
    pub to: Option<String>,
    /// The pipeline file (default: the one the target run used).
    #[arg(long)]
    pub pipeline: Option<PathBuf>,
    /// Who rolls back (default: $CAPSTAN_ACTOR, the CI actor, or $USER).
    #[arg(long = "as", value_name = "NAME")]
    pub author: Option<String>,
    #[command(flatten)]
    pub flags: DriveFlags,
}

/// A rollback to start (from the command line or `on_failure = "rollback"`).
pub struct Rollback {
    pub pipeline: Option<PathBuf>,
    pub environment: String,
    pub to: Option<String>,
    /// The run being undone (default: the newest deploy run).
    pub undoes: Option<String>,
    pub author: String,
    pub flags: DriveFlags,
}

pub async fn exec(args: &Args, cli: &super::Cli) -> Result<u8, Failure> {
    let store = cli.store()?;
    known_environment(args, store.as_ref())?;
    let rollback = Rollback {
        pipeline: args.pipeline.clone(),
        environment: args.environment.clone(),
        to: args.to.clone(),
        undoes: None,
        author: super::identity(args.author.as_deref())?,
        flags: args.flags.clone(),
    };
    start(&rollback, cli, &store).await
}

/// `on_failure = "rollback"`: when a deploy run failed in such a stage,
/// start a rollback of it (waiting up to a minute for the lock by default).
/// Its outcome is printed; the failed run's exit code stays.
pub async fn if_failed(
    record: &RunRecord,
    prepared: &Prepared,
    opts: &RunOptions,
    flags: &DriveFlags,
    cli: &super::Cli,
    store: &Arc<dyn RunStore>,
) {
    let Some(stage) = rollback::rolls_back(record, &prepared.pipeline) else {
        return;
    };
    eprintln!(
        "\nstage `{}` failed and rolls back on failure (`on_failure = \"rollback\"`): starting a rollback of run {}",
        stage.name, record.run_id
    );
    let rollback = Rollback {
        pipeline: Some(prepared.pipeline.file.clone()),
        environment: opts.environment.clone(),
        to: None,
        undoes: Some(record.run_id.clone()),
        author: opts.author.clone(),
        flags: DriveFlags {
            wait: Some(flags.wait.unwrap_or(Duration::from_secs(60))),
            ..flags.clone()
        },
    };
    if let Err(f) = start(&rollback, cli, store).await {
        eprintln!("{}", crate::text::block(f.message.trim_end()));
    }
}

/// `--env` must be one of the pipeline's environments (a usage error, exit
/// 2, naming them). The pipeline is `--pipeline`, else that of the `--to`
/// run, else that of the newest run; an environment with runs is known.
fn known_environment(args: &Args, store: &dyn RunStore) -> Result<(), Failure> {
    let environment = args.environment.as_str();
    let path = match (&args.pipeline, &args.to) {
        (Some(path), _) => path.clone(),
        (None, Some(to)) => store
            .run(to)
            .map_err(super::store_failure)?
            .pipeline_file
            .into(),
        (None, None) => {
            let runs_of = |environment: Option<&str>| {
                store
                    .runs(&RunFilter {
                        environment: environment.map(str::to_string),
                        limit: Some(1),
                    })
                    .map_err(super::store_failure)
            };
            if !runs_of(Some(environment))?.is_empty() {
                return Ok(());
            }
            match runs_of(None)?.into_iter().next() {
                Some(newest) => newest.pipeline_file.into(),
                // Nothing recorded: nothing to roll back to, whatever the
                // environment (`targets` says so).
                None => return Ok(()),
            }
        }
    };
    let pipeline = match crate::pipeline::Pipeline::load(&path) {
        Ok(pipeline) => pipeline,
        Err(_) if args.pipeline.is_none() => {
            // The recorded pipeline file is gone or broken: name the
            // environments the store knows.
            let known: std::collections::BTreeSet<String> = store
                .runs(&RunFilter::default())
                .map_err(super::store_failure)?
                .into_iter()
                .map(|r| r.environment)
                .collect();
            if known.contains(environment) {
                return Ok(());
            }
            return Err(Failure::new(
                exit::USAGE,
                format!(
                    "error: no run of environment `{environment}` is recorded; runs are recorded for: {}\n  \
                     (the pipeline file {} cannot be read to say more; name it with --pipeline)",
                    known.into_iter().collect::<Vec<_>>().join(", "),
                    path.display()
                ),
            ));
        }
        Err(diagnostics) => {
            return Err(Failure::new(
                exit::INVALID_PIPELINE,
                diagnostics.to_string(),
            ));
        }
    };
    super::environment(&pipeline, Some(environment)).map(drop)
}

/// A refusal as a failure: a run named wrong is a usage error, a pipeline
/// without `[rollback]` an invalid one.
fn failure(e: RollbackError) -> Failure {
    match e {
        RollbackError::Store(e) => super::store_failure(e),
        e @ RollbackError::NoReuse { .. } => {
            Failure::new(exit::INVALID_PIPELINE, format!("error: {e}"))
        }
        e => Failure::new(exit::REFUSED, format!("error: {e}")),
    }
}

pub async fn start(
    r: &Rollback,
    cli: &super::Cli,
    store: &Arc<dyn RunStore>,
) -> Result<u8, Failure> {
    let Targets { undoes, target } = rollback::targets(
        store.as_ref(),
        &r.environment,
        r.to.as_deref(),
        r.undoes.as_deref(),
    )
    .map_err(failure)?;
    let path = r
        .pipeline
        .clone()
        .unwrap_or_else(|| PathBuf::from(&target.pipeline_file));
    let pipeline = super::load_pipeline(&path)?;
    // The reused stages and everything they need come from the target.
    let reused = rollback::reused(&pipeline, &path).map_err(failure)?;
    let environment = super::environment(&pipeline, Some(&r.environment))?;
    let rows = store.stages(&target.id).map_err(super::store_failure)?;
    let done = rollback::reuse(&target, rows, &reused).map_err(failure)?;
    let runtime = super::new_runtime()?;
    let prepared = Arc::new(super::prepare_pipeline(pipeline, &runtime, cli).await?);
    let opts = RunOptions {
        forced: Vec::new(),
        environment,
        only: Vec::new(),
        echo: !r.flags.quiet,
        author: r.author.clone(),
        stop: r.flags.stop(),
    };
    let dir = super::create_run_dir(cli)?;
    let mut new = super::new_run(&prepared, &dir, &opts, RunKind::Rollback);
    new.target = Some(target.id.clone());
    new.undoes = undoes.clone();
    eprintln!(
        "rollback of `{}`{} to run {} (reusing {} from it)",
        opts.environment,
        undoes
            .as_deref()
            .map(|u| format!(" undoing run {u}"))
            .unwrap_or_default(),
        target.id,
        reused.join(", ")
    );
    let (code, _) = drive(Drive {
        prepared,
        dir,
        opts,
        store: store.clone(),
        done,
        flags: r.flags.clone(),
        begin: Begin::New(Box::new(new)),
        record_done: true,
    })
    .await?;
    Ok(code)
}
