//! `capstan plugin describe`: look at one plugin on its own.

use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde_json::json;

use crate::bindings::CONTRACT_PACKAGE;
use crate::exit::{self, Failure};
use crate::runtime::plugin::LoadedPlugin;
use crate::term;
use crate::text::inline;

/// Show what a plugin is and which capabilities it requests, with its
/// sha256 and contract version. Only `describe` runs, with no
/// capabilities.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Example:\n  capstan plugin describe target/wasm32-wasip2/release/capstan_hello.wasm --json"
)]
pub struct Args {
    /// The plugin component (`.wasm`).
    pub plugin: PathBuf,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

pub async fn exec(args: &Args, cli: &crate::commands::Cli) -> Result<u8, Failure> {
    describe_file(&args.plugin, args.json, cli).await
}

pub async fn describe_file(
    path: &Path,
    as_json: bool,
    cli: &crate::commands::Cli,
) -> Result<u8, Failure> {
    let runtime = crate::commands::new_runtime()?;
    let plugin = LoadedPlugin::load(&runtime, &cli.cache(), path, None)
        .await
        .map_err(|e| Failure::new(exit::PLUGIN_OR_GRANT, format!("error: {e}")))?;
    let info = &plugin.info;
    if as_json {
        let doc = json!({
            "path": plugin.path,
            "sha256": plugin.digest,
            "contract": format!("{CONTRACT_PACKAGE}@{}", plugin.contract),
            "name": info.name,
            "version": info.version,
            "description": info.description,
            "requests": info.requests,
            "config_schema": info.config_schema,
        });
        term::print(format_args!(
            "{}\n",
            serde_json::to_string_pretty(&doc).expect("plugin info serializes")
        ))?;
    } else {
        let mut out = term::stdout();
        print_text(&mut out, &plugin)
            .and_then(|()| out.flush())
            .map_err(term::output_failure)?;
    }
    Ok(exit::OK)
}

/// What the plugin says about itself is data: shown escaped.
fn print_text(out: &mut impl Write, plugin: &LoadedPlugin) -> io::Result<()> {
    let info = &plugin.info;
    writeln!(
        out,
        "{} {} — {}",
        inline(&info.name),
        inline(&info.version),
        inline(info.description.trim_end())
    )?;
    writeln!(
        out,
        "  file     {}",
        inline(&plugin.path.display().to_string())
    )?;
    writeln!(out, "  sha256   {}", plugin.digest)?;
    writeln!(out, "  contract {CONTRACT_PACKAGE}@{}", plugin.contract)?;
    writeln!(out, "  requests:")?;
    for r in &info.requests {
        writeln!(
            out,
            "    {:<24} {}",
            inline(&r.capability.to_string()),
            inline(&r.reason)
        )?;
    }
    if info.config_schema.is_some() {
        writeln!(out, "  config schema: published (see --json)")?;
    }
    Ok(())
}
