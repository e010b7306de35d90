//! `capstan drift`: compare an environment with its configuration. A drift
//! run plans what the last good run deployed (the `[drift] stages`, e.g.
//! the Terraform plan; the stages they need keep the last good run's
//! outputs, so the plan uses the deployed image) and changes nothing. A
//! plan with changes is drift: recorded in the run store, reported, and
//! the exit code says so; `capstan stats` tracks it.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;

use serde_json::{Value, json};

use super::drive::{Begin, Drive, DriveFlags, drive};
use crate::exit::{self, Failure};
use crate::run::RunOptions;
use crate::run::stage::StageStatus;
use crate::store::{DriftCheck, RunKind};
use crate::text::inline;

/// Check an environment for drift: run the pipeline's `[drift] stages`
/// (its plans) against what the last good run deployed, record whether
/// they have changes, and exit 11 when they do.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
Examples:
  capstan drift examples/golden-image/pipeline.toml --env production
  capstan drift pipeline.toml --env production --events drift.jsonl   # for a dashboard
  capstan stats --env production                                      # last check, time in drift

The pipeline names its plan stages: [drift] stages = [\"plan\"]. Each must
output `has_changes` (the Terraform plugin's plan does: a plan with changes,
as `terraform plan -detailed-exitcode` exits 2). The stages they need keep
the outputs of the environment's last good run; nothing after them runs.
Exit code 0: no drift; 11: drift found; otherwise as `capstan run`.")]
pub struct Args {
    /// The pipeline file.
    pub pipeline: PathBuf,
    /// The environment to check (default: the first in [pipeline] environments).
    #[arg(long = "env", short = 'e')]
    pub environment: Option<String>,
    /// Who checks (default: $CAPSTAN_ACTOR, the CI actor, or $USER).
    #[arg(long = "as", value_name = "NAME")]
    pub author: Option<String>,
    #[command(flatten)]
    pub flags: DriveFlags,
}

pub async fn exec(args: &Args, cli: &super::Cli) -> Result<u8, Failure> {
    let pipeline = super::load_pipeline(&args.pipeline)?;
    if pipeline.drift_stages.is_empty() {
        return Err(Failure::new(
            exit::USAGE,
            format!(
                "error: {} names no drift stages; add\n\n    [drift]\n    stages = [\"plan\"]   # the stage(s) that plan the environment",
                args.pipeline.display()
            ),
        ));
    }
    let environment = super::environment(&pipeline, args.environment.as_deref())?;
    let checked: BTreeSet<String> = pipeline.drift_stages.iter().cloned().collect();
    // What the plans need is kept from the last good run; nothing after them runs.
    let kept: Vec<(String, String)> = pipeline
        .stages
        .iter()
        .filter(|(name, _)| !checked.contains(*name))
        .filter(|(name, _)| {
            checked
                .iter()
                .any(|c| pipeline.stages[c].upstream.contains(name.as_str()))
        })
        .map(|(name, _)| {
            (
                name.clone(),
                "kept from the last good run (drift check)".to_string(),
            )
        })
        .collect();
    let runtime = super::new_runtime()?;
    let prepared = Arc::new(super::prepare_pipeline(pipeline, &runtime, cli).await?);
    let opts = RunOptions {
        environment: environment.clone(),
        only: prepared.pipeline.drift_stages.clone(),
        echo: !args.flags.quiet,
        author: super::identity(args.author.as_deref())?,
        stop: args.flags.stop(),
        forced: Vec::new(),
    };
    let store = cli.store()?;
    let done = super::run::keep_from_last_good(
        &prepared,
        &opts,
        kept,
        &checked,
        store.as_ref(),
        |name, by| {
            format!(
                "no good run of `{environment}` has the outputs of stage `{name}` that `{by}` needs: \
                 deploy first (`capstan run --env {environment}`), then check for drift"
            )
        },
    )?;
    let dir = super::create_run_dir(cli)?;
    let new = super::new_run(&prepared, &dir, &opts, RunKind::Drift);
    let (code, record) = drive(Drive {
        prepared: prepared.clone(),
        dir,
        opts,
        store: store.clone(),
        record_done: !done.is_empty(),
        done,
        flags: args.flags.clone(),
        begin: Begin::New(Box::new(new)),
    })
    .await?;
    if code != exit::OK {
        eprintln!("drift check of `{environment}` did not finish: no drift recorded");
        return Ok(code);
    }
    let mut detail = serde_json::Map::new();
    let mut drifted = false;
    for s in record.stages.iter().filter(|s| checked.contains(&s.name)) {
        let StageStatus::Succeeded { outputs, .. } = &s.status else {
            continue;
        };
        let Some(changes) = outputs.get("has_changes").and_then(Value::as_bool) else {
            return Err(Failure::new(
                exit::PLUGIN_OR_GRANT,
                format!(
                    "error: drift stage `{}` has no boolean output `has_changes`: [drift] stages must \
                     plan and say whether the plan has changes (the Terraform plugin's `plan` does)",
                    s.name
                ),
            ));
        };
        drifted |= changes;
        detail.insert(
            s.name.clone(),
            json!({ "has_changes": changes, "summary": outputs.get("summary_text") }),
        );
    }
    let check = DriftCheck {
        environment: environment.clone(),
        run_id: record.run_id.clone(),
        checked: jiff::Timestamp::now().to_string(),
        drifted,
        detail: Value::Object(detail),
    };
    store.record_drift(&check).map_err(super::store_failure)?;
    if drifted {
        let what: Vec<String> = check
            .detail
            .as_object()
            .into_iter()
            .flatten()
            .filter(|(_, d)| d["has_changes"] == true)
            .map(|(stage, d)| {
                format!(
                    "{stage}: {}",
                    inline(d["summary"].as_str().unwrap_or("changes"))
                )
            })
            .collect();
        eprintln!(
            "DRIFT: `{environment}` differs from its configuration ({}); see `capstan show {}`",
            what.join("; "),
            record.run_id
        );
        Ok(exit::DRIFT)
    } else {
        eprintln!("no drift: `{environment}` matches its configuration");
        Ok(exit::OK)
    }
}
