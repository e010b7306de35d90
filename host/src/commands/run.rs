//! `capstan run`: load, check, and run a pipeline.

use std::path::PathBuf;
use std::sync::Arc;

use super::drive::{Begin, Drive, DriveFlags, drive};
use crate::exit::{self, Failure};
use crate::run::{RunOptions, selected};
use crate::store::RunKind;

/// Run a pipeline: check every plugin and grant, then run the stages in
/// dependency order, independent ones at the same time.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
Examples:
  capstan run examples/hello/pipeline.toml
  capstan run pipeline.toml --env production --only plan
  capstan run pipeline.toml --dry-run

State lives in .capstan/ at the root of the git repository holding the pipeline
file (beside the file outside a repository), wherever capstan is started; see
--state-dir. Each run is recorded in its run store (.capstan/capstan.db; see
`capstan runs`, `capstan show`) and gets a directory .capstan/runs/<run-id>/ with
run.json, outputs.json, audit.jsonl, logs/<stage>.log and stages/<stage>/ (the
work dirs). A run holds its environment's lock from its first stage to its end,
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
    #[command(flatten)]
    pub flags: DriveFlags,
}

pub async fn exec(args: &Args, cli: &super::Cli) -> Result<u8, Failure> {
    let pipeline = super::load_pipeline(&args.pipeline)?;
    let environment = super::environment(&pipeline, args.environment.as_deref())?;
    for only in &args.only {
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
                    "error: --only `{only}` is not a stage of {}; stages are: {stages}",
                    args.pipeline.display()
                ),
            ));
        }
    }
    let runtime = super::new_runtime()?;
    let prepared = Arc::new(super::prepare_pipeline(pipeline, &runtime, cli).await?);
    super::warn_unrequested(&prepared);
    let opts = RunOptions {
        environment,
        only: args.only.clone(),
        echo: !args.flags.quiet,
        author: super::identity(args.author.as_deref())?,
        stop: args.flags.stop(),
    };
    if args.dry_run {
        let mut out = crate::term::stdout();
        dry_run(&mut out, &prepared, &opts)
            .and_then(|()| std::io::Write::flush(&mut out))
            .map_err(crate::term::output_failure)?;
        return Ok(exit::OK);
    }
    let store = cli.store()?;
    let dir = super::create_run_dir(cli)?;
    let new = super::new_run(&prepared, &dir, &opts, RunKind::Deploy);
    let (code, record) = drive(Drive {
        prepared: prepared.clone(),
        runtime,
        dir,
        opts: opts.clone(),
        store: store.clone(),
        done: Vec::new(),
        flags: args.flags.clone(),
        begin: Begin::New(Box::new(new)),
        record_done: false,
    })
    .await?;
    super::rollback::if_failed(&record, &prepared, &opts, &args.flags, cli, &store).await;
    Ok(code)
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
        writeln!(
            out,
            "  {mark} {name}: {} {}{needs}",
            crate::text::inline(&plugin.info.name),
            crate::text::inline(&plugin.info.version)
        )?;
    }
    Ok(())
}
