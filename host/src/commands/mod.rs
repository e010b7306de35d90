//! The command line: one file per subcommand; this file parses and
//! dispatches.

mod audit;
mod plugin;
mod run;
mod validate;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::exit::{self, Failure};
use crate::pipeline::Pipeline;
use crate::run::{Prepared, prepare};
use crate::runtime::Runtime;
use crate::runtime::cache::Cache;

/// Run infrastructure delivery pipelines whose stages are WebAssembly
/// components, each allowed only what its pipeline grants.
#[derive(Debug, Parser)]
#[command(name = "capstan", version, after_long_help = exit::HELP, after_help = "Run `capstan help <command>` for examples; `capstan --help` lists exit codes.")]
pub struct Cli {
    /// Where runs and the compiled-plugin cache are kept.
    #[arg(
        long,
        global = true,
        env = "CAPSTAN_STATE_DIR",
        default_value = ".capstan"
    )]
    pub state_dir: PathBuf,
    /// Compile plugins every time instead of using the compiled cache.
    #[arg(long, global = true)]
    pub no_cache: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    Run(run::Args),
    Validate(validate::Args),
    Audit(audit::Args),
    #[command(subcommand)]
    Plugin(plugin::Command),
}

/// Parse the command line, run the command, map the result to an exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return exit::code(exit::INTERNAL);
        }
    };
    let result = runtime.block_on(async {
        match &cli.command {
            Command::Run(args) => run::exec(args, &cli).await,
            Command::Validate(args) => validate::exec(args, &cli).await,
            Command::Audit(args) => audit::exec(args, &cli).await,
            Command::Plugin(cmd) => plugin::exec(cmd, &cli).await,
        }
    });
    match result {
        Ok(code) => exit::code(code),
        Err(failure) => {
            eprintln!("{}", failure.message.trim_end());
            exit::code(failure.code)
        }
    }
}

impl Cli {
    pub fn cache(&self) -> Cache {
        if self.no_cache {
            Cache::disabled()
        } else {
            Cache::new(self.state_dir.join("cache").join("components"))
        }
    }
}

/// Load and validate a pipeline file (exit code 3 on problems).
pub fn load_pipeline(path: &Path) -> Result<Pipeline, Failure> {
    Pipeline::load(path).map_err(|d| Failure::new(exit::INVALID_PIPELINE, d.to_string()))
}

pub fn new_runtime() -> Result<Runtime, Failure> {
    Runtime::new().map_err(|e| {
        Failure::new(
            exit::INTERNAL,
            format!("error: cannot create the WebAssembly engine: {e:#}"),
        )
    })
}

/// Load plugins and check grants (exit code 4 on problems).
pub async fn prepare_pipeline(
    pipeline: Pipeline,
    runtime: &Runtime,
    cli: &Cli,
) -> Result<Prepared, Failure> {
    let file = pipeline.file.clone();
    prepare(pipeline, runtime, &cli.cache()).await.map_err(|e| {
        Failure::new(
            exit::PLUGIN_OR_GRANT,
            format!(
                "{e}\n{} cannot run until these are fixed; no stage ran.",
                file.display()
            ),
        )
    })
}
