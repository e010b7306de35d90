//! `capstan run`: load, check, and run a pipeline.

use std::path::PathBuf;
use std::sync::Arc;

use comfy_table::{Table, presets::UTF8_BORDERS_ONLY};

use crate::exit::{self, Failure};
use crate::run::stage::StageStatus;
use crate::run::{RunDir, RunOptions, RunStatus, execute, selected};

/// Run a pipeline: check every plugin and grant, then run the stages in
/// dependency order, independent ones at the same time.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
Examples:
  capstan run examples/hello/pipeline.toml
  capstan run pipeline.toml --env production --only plan
  capstan run pipeline.toml --dry-run

Each run gets a directory .capstan/runs/<run-id>/ with run.json, outputs.json,
audit.jsonl, logs/<stage>.log and stages/<stage>/ (the work dirs).")]
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
    /// Do not echo stage logs to the terminal (they are still in the run dir).
    #[arg(long, short = 'q')]
    pub quiet: bool,
    /// Print the run record as JSON on stdout at the end.
    #[arg(long)]
    pub json: bool,
    /// Who starts the run (recorded; may not approve it). Default: $CAPSTAN_ACTOR, the CI
    /// actor ($GITHUB_ACTOR, $GITLAB_USER_LOGIN), or $USER.
    #[arg(long = "as", value_name = "NAME")]
    pub author: Option<String>,
}

/// The run's author: `--as`, or the first identity the environment gives.
fn author(given: Option<&str>) -> String {
    given
        .map(str::to_string)
        .or_else(|| {
            [
                "CAPSTAN_ACTOR",
                "GITHUB_ACTOR",
                "GITLAB_USER_LOGIN",
                "USER",
                "LOGNAME",
            ]
            .iter()
            .find_map(|v| std::env::var(v).ok().filter(|s| !s.is_empty()))
        })
        .unwrap_or_else(|| "unknown".into())
}

pub async fn exec(args: &Args, cli: &super::Cli) -> Result<u8, Failure> {
    let pipeline = super::load_pipeline(&args.pipeline)?;
    let environment = args
        .environment
        .clone()
        .unwrap_or_else(|| pipeline.default_environment().to_string());
    if !pipeline.environments.contains(&environment) {
        return Err(Failure::new(
            exit::USAGE,
            format!(
                "error: environment `{environment}` is not one of {} (from [pipeline] environments in {})",
                pipeline.environments.join(", "),
                args.pipeline.display()
            ),
        ));
    }
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
    for (stage, extra) in &prepared.unrequested {
        eprintln!(
            "warning: stage `{stage}` grants {} that its plugin does not request; they are ignored",
            extra.join(", ")
        );
    }
    let opts = RunOptions {
        environment,
        only: args.only.clone(),
        echo: !args.quiet,
        author: author(args.author.as_deref()),
    };
    if args.dry_run {
        let chosen = selected(&prepared, &opts);
        println!(
            "pipeline `{}`, environment `{}` (dry run: nothing is started)",
            prepared.pipeline.name, opts.environment
        );
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
            println!(
                "  {mark} {name}: {} {}{needs}",
                plugin.info.name, plugin.info.version
            );
        }
        return Ok(exit::OK);
    }
    let dir = RunDir::create(&cli.state_dir).map_err(|e| {
        Failure::new(
            exit::INTERNAL,
            format!(
                "error: cannot create a run directory in {}: {e}",
                cli.state_dir.display()
            ),
        )
    })?;
    eprintln!(
        "run {} of `{}` in environment `{}` ({})",
        dir.id,
        prepared.pipeline.name,
        opts.environment,
        dir.path.display()
    );
    let record = execute(prepared, &runtime, &dir, &opts)
        .await
        .map_err(|e| {
            Failure::new(
                exit::INTERNAL,
                format!(
                    "error: run {}: cannot write the run directory {}: {e}",
                    dir.id,
                    dir.path.display()
                ),
            )
        })?;

    let mut table = Table::new();
    table
        .load_preset(UTF8_BORDERS_ONLY)
        .set_header(["stage", "status", "time", "summary"]);
    for s in &record.stages {
        let (status, text) = match &s.status {
            StageStatus::Succeeded { summary, .. } => ("succeeded", summary.as_str()),
            StageStatus::Failed { reason } => ("FAILED", reason.as_str()),
            StageStatus::Skipped { reason } => ("skipped", reason.as_str()),
            StageStatus::AwaitingApproval { reason } => ("WAITING", reason.as_str()),
        };
        let time = s
            .duration_ms
            .map(|ms| format!("{:.1}s", ms as f64 / 1000.0))
            .unwrap_or_default();
        table.add_row([s.name.as_str(), status, &time, &one_line(text, 110)]);
    }
    eprintln!("{table}");
    let (word, code) = match record.status {
        RunStatus::Succeeded => ("succeeded", exit::OK),
        RunStatus::Failed => ("FAILED", exit::STAGE_FAILED),
        RunStatus::AwaitingApproval => ("is WAITING FOR APPROVAL", exit::AWAITING_APPROVAL),
    };
    eprintln!(
        "run {} {} in {:.1}s; logs, outputs and audit log in {}",
        record.run_id,
        word,
        record.duration_ms as f64 / 1000.0,
        dir.path.display()
    );
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&record).expect("run records serialize")
        );
    }
    for s in &record.stages {
        if let StageStatus::AwaitingApproval { reason } = &s.status {
            eprintln!("waiting for approval: {reason}");
        }
    }
    Ok(code)
}

/// `text` on one line, cut at `max` characters (the full text is in run.json).
fn one_line(text: &str, max: usize) -> String {
    let line = text.split_whitespace().collect::<Vec<_>>().join(" ");
    match line.char_indices().nth(max) {
        Some((at, _)) => format!("{}…", &line[..at]),
        None => line,
    }
}
