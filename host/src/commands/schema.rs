//! `capstan schema`: the pipeline file's JSON Schema, for editors and
//! linters.

use std::collections::BTreeMap;
use std::path::PathBuf;

use crate::exit::{self, Failure};
use crate::pipeline::schema::{pipeline_schema, pipeline_schema_with};
use crate::pipeline::{Diagnostics, Part};
use crate::runtime::plugin::LoadedPlugin;

/// Print the JSON Schema of pipeline files (draft 7), for editors (taplo,
/// Even Better TOML) and linters. Given a pipeline file, its plugins are
/// loaded (only `describe` runs, with no capabilities) and each stage's
/// `with` is described by the schema its plugin publishes.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
Examples:
  capstan schema > capstan.schema.json
  capstan schema pipeline.toml --out pipeline.schema.json

Point the editor at it with a first line in the pipeline file (taplo, Even
Better TOML):
  #:schema ./pipeline.schema.json
or, for many files, in .taplo.toml:
  [[rule]]
  include = [\"**/pipeline.toml\"]
  schema.path = \"./capstan.schema.json\"

The schema checks keys, types, names, durations and sizes (and, given a
pipeline, each stage's `with`); `capstan validate` checks everything else.
Generate it again after adding stages or changing plugins.")]
pub struct Args {
    /// A pipeline file: each of its stages' `with` gets its plugin's schema.
    /// Exit code 3 when the file is invalid, 4 when a plugin cannot be
    /// loaded.
    pub pipeline: Option<PathBuf>,
    /// Write the schema to FILE instead of standard output.
    #[arg(long, short, value_name = "FILE")]
    pub out: Option<PathBuf>,
}

pub async fn exec(args: &Args, cli: &super::Cli) -> Result<u8, Failure> {
    let schema = match &args.pipeline {
        None => pipeline_schema(),
        Some(path) => with_plugins(path, cli).await?,
    };
    let text = format!(
        "{}\n",
        serde_json::to_string_pretty(&schema).expect("a schema serializes")
    );
    match &args.out {
        None => crate::term::print(text)?,
        Some(file) => std::fs::write(file, text).map_err(|e| {
            Failure::new(
                exit::USAGE,
                format!("error: cannot write {}: {e}", file.display()),
            )
        })?,
    }
    Ok(exit::OK)
}

/// The schema of the pipeline at `path`, with its plugins' `with` schemas.
async fn with_plugins(
    path: &std::path::Path,
    cli: &super::Cli,
) -> Result<serde_json::Value, Failure> {
    let pipeline = super::load_pipeline(path)?;
    let runtime = super::new_runtime()?;
    let cache = cli.cache();
    let mut schemas = BTreeMap::new();
    let mut problems = Vec::new();
    for (name, plugin) in &pipeline.plugins {
        match LoadedPlugin::load_validated(&runtime, &cache, plugin).await {
            Ok(loaded) => {
                if let Some(schema) = loaded.info.config_schema {
                    schemas.insert(name.clone(), schema);
                }
            }
            Err(e) => problems.push(pipeline.source.error(
                &["plugins", name, "path"],
                Part::Value,
                format!("plugin `{name}`: {e}"),
            )),
        }
    }
    if !problems.is_empty() {
        let problems = Diagnostics::new(problems);
        return Err(Failure::new(
            exit::PLUGIN_OR_GRANT,
            problems.report(&format!(
                "; no schema was made for {} (its `with` tables need their plugins' schemas)",
                path.display()
            )),
        ));
    }
    let stages: Vec<(String, String)> = pipeline
        .stages
        .values()
        .map(|s| (s.name.clone(), s.plugin.clone()))
        .collect();
    pipeline_schema_with(&stages, &schemas)
        .map_err(|e| Failure::new(exit::PLUGIN_OR_GRANT, format!("error: {e}")))
}
