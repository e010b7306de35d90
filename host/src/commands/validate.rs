//! `capstan validate`: everything `run` checks before the first stage, and
//! nothing more.

use std::path::PathBuf;

use crate::exit::{self, Failure};
use crate::pipeline::{Diagnostics, Pipeline};

/// Check a pipeline file: syntax, stages and `needs`, references, plugin
/// files and pins, plugin contracts, `with` tables against each plugin's
/// config schema, requested vs granted capabilities, and that granted
/// programs exist. Runs nothing.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
Examples:
  capstan validate examples/hello/pipeline.toml
  capstan validate pipeline.toml --json

Every problem is reported at once, with its file, line and column. Exit code 3:
the pipeline file is invalid; 4: a plugin, a grant, a program or a `with` table
is wrong (checked only once the file is valid).

--json prints an array on stdout, one object per problem (warnings too):
  {\"severity\": \"error\"|\"warning\", \"file\", \"line\", \"column\", \"stage\",
   \"message\", \"help\"}
(line, column, stage and help may be null); the exit code is the same.")]
pub struct Args {
    /// The pipeline file.
    pub pipeline: PathBuf,
    /// Print the problems as a JSON array on stdout (for editors and CI).
    #[arg(long)]
    pub json: bool,
}

pub async fn exec(args: &Args, cli: &super::Cli) -> Result<u8, Failure> {
    let pipeline = match Pipeline::load(&args.pipeline) {
        Ok(pipeline) => pipeline,
        Err(problems) if args.json => {
            crate::term::print(format_args!("{}\n", problems.to_json()))?;
            return Ok(exit::INVALID_PIPELINE);
        }
        Err(problems) => {
            let report = super::with_annotations(&problems, problems.to_string());
            return Err(Failure::new(exit::INVALID_PIPELINE, report));
        }
    };
    let runtime = super::new_runtime()?;
    let prepared = match super::check_pipeline(pipeline, &runtime, cli).await? {
        Ok(prepared) => prepared,
        Err(problems) if args.json => {
            crate::term::print(format_args!("{}\n", problems.to_json()))?;
            return Ok(exit::PLUGIN_OR_GRANT);
        }
        Err(problems) => {
            let report = super::not_runnable(&problems, &args.pipeline);
            return Err(Failure::new(
                exit::PLUGIN_OR_GRANT,
                super::with_annotations(&problems, report),
            ));
        }
    };
    if args.json {
        crate::term::print(format_args!(
            "{}\n",
            Diagnostics(prepared.warnings()).to_json()
        ))?;
        return Ok(exit::OK);
    }
    super::warn_unrequested(&prepared);
    let p = &prepared.pipeline;
    crate::term::print(format_args!(
        "{}: pipeline `{}` is valid: {} stages ({}), {} plugins, environments {}\n",
        args.pipeline.display(),
        p.name,
        p.stages.len(),
        p.stages.keys().cloned().collect::<Vec<_>>().join(" → "),
        p.plugins.len(),
        p.environments.join(", ")
    ))?;
    Ok(exit::OK)
}
