//! `capstan validate`: everything `run` checks before the first stage, and
//! nothing more.

use std::path::PathBuf;

use crate::exit::{self, Failure};

/// Check a pipeline file: syntax, stages and `needs`, references, plugin
/// files and pins, plugin contracts, requested vs granted capabilities,
/// and that granted programs exist. Runs nothing.
#[derive(Debug, clap::Args)]
#[command(after_help = "Example:\n  capstan validate examples/hello/pipeline.toml")]
pub struct Args {
    /// The pipeline file.
    pub pipeline: PathBuf,
}

pub async fn exec(args: &Args, cli: &super::Cli) -> Result<u8, Failure> {
    let pipeline = super::load_pipeline(&args.pipeline)?;
    let runtime = super::new_runtime()?;
    let prepared = super::prepare_pipeline(pipeline, &runtime, cli).await?;
    let p = &prepared.pipeline;
    for (stage, extra) in &prepared.unrequested {
        eprintln!(
            "warning: stage `{stage}` grants {} that its plugin does not request; they are ignored",
            extra.join(", ")
        );
    }
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
