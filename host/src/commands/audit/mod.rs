//! `capstan audit`: what each stage may do, from the pipeline file and the
//! plugins alone. Nothing the plugins do runs except `describe`, which gets
//! no capabilities at all. The sandbox of the programs stages start is
//! shown by [`sandbox`]. With `--run`, what a run's stages did ([`run`]).

mod run;
mod sandbox;

use std::io::{self, Write};
use std::path::{Path, PathBuf};

use indexmap::IndexMap;

use serde::Serialize;
use serde_json::{Value, json};

use crate::bindings::{CONTRACT_PACKAGE, CONTRACT_VERSION};
use crate::caps::{self, Missing, Request};
use crate::exit::{self, Failure};
use crate::pipeline::sandbox::Sandbox;
use crate::pipeline::{Secret, Stage};
use crate::runtime::plugin::LoadedPlugin;
use crate::term::{self, Layout, Stream, Tone};
use crate::text::{block, inline};

/// Show, per stage, the plugin (path, sha256, contract), the capabilities it
/// requests with reasons, what the pipeline grants (secrets with their
/// source and how they reach which programs, never values), and what is
/// requested but not granted; and the sandbox of the programs it may start: their
/// file rules (and whether this machine enforces them), each exec grant's
/// network and limits, and the grants that amount to running arbitrary
/// code inside that sandbox (marked ⚠). Exits 4 when a request is not
/// granted or a plugin cannot be loaded. With `--run`: what a run's stages
/// did, every use and denial (and which secrets each received), and the
/// sandbox each program ran in.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
Examples:
  capstan audit examples/hello/pipeline.toml
  capstan audit examples/hello/pipeline.toml --json | jq '.stages[].missing'
  capstan audit target/wasm32-wasip2/release/capstan_hello.wasm
  capstan audit --run latest                           # what the last run's stages did
  capstan audit --run 20261126-101500-7f3a --denied    # only what was refused")]
pub struct Args {
    /// A pipeline file, or a plugin `.wasm` to describe on its own.
    #[arg(required_unless_present = "run")]
    pub target: Option<PathBuf>,
    /// Instead: every capability use and denial recorded for this run, from
    /// the run store. The run: its id, a unique prefix or suffix of it,
    /// `latest` or `latest@<environment>`.
    #[arg(long, value_name = "RUN", conflicts_with = "target")]
    pub run: Option<String>,
    /// With --run: only this stage.
    #[arg(long, requires = "run")]
    pub stage: Option<String>,
    /// With --run: only denials and limits hit.
    #[arg(long, requires = "run")]
    pub denied: bool,
    /// Print JSON instead of tables.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Serialize)]
struct PluginReport {
    path: String,
    sha256: String,
    pinned: bool,
    contract: String,
    name: String,
    version: String,
    description: String,
    requests: Vec<Request>,
    config_schema: Option<Value>,
}

#[derive(Debug, Serialize)]
struct StageReport {
    stage: String,
    plugin_key: String,
    /// When it runs: `success`, `failure` or `always`.
    run_if: crate::pipeline::RunIf,
    plugin: Option<PluginReport>,
    load_error: Option<String>,
    requested: Vec<Value>,
    granted: Value,
    /// The file rules of the programs the stage starts (`null`: none).
    sandbox: Value,
    missing: Vec<Missing>,
    unrequested: Vec<String>,
}

pub async fn exec(args: &Args, cli: &super::Cli) -> Result<u8, Failure> {
    let Some(target) = &args.target else {
        return run::exec(args, cli);
    };
    if target.extension().is_some_and(|e| e == "wasm") {
        return super::plugin::describe_file(target, args.json, cli).await;
    }
    let pipeline = super::load_pipeline(target)?;
    let runtime = super::new_runtime()?;
    let cache = cli.cache();
    let mut loaded = std::collections::HashMap::new();
    for (name, plugin) in &pipeline.plugins {
        loaded.insert(
            name.clone(),
            LoadedPlugin::load_validated(&runtime, &cache, plugin)
                .await
                .map_err(|e| e.to_string()),
        );
    }
    let stages: Vec<StageReport> = pipeline
        .stages
        .values()
        .map(|stage| {
            let plugin = &loaded[&stage.plugin];
            let pinned = pipeline.plugins[&stage.plugin].pinned;
            report(
                stage,
                plugin.as_ref().ok(),
                plugin.as_ref().err().cloned(),
                pinned,
                &pipeline.sandbox,
                &pipeline.secrets,
            )
        })
        .collect();
    let failing = stages
        .iter()
        .any(|s| !s.missing.is_empty() || s.load_error.is_some());
    if args.json {
        let doc = json!({
            "pipeline": pipeline.name,
            "file": pipeline.file,
            "host_contract": format!("{CONTRACT_PACKAGE}@{CONTRACT_VERSION}"),
            "stages": stages,
        });
        term::print(format_args!(
            "{}\n",
            serde_json::to_string_pretty(&doc).expect("audit serializes")
        ))?;
    } else {
        let mut out = term::stdout();
        print_text(
            &mut out,
            Layout::of(Stream::Stdout),
            &pipeline.file,
            &stages,
        )
        .and_then(|()| out.flush())
        .map_err(term::output_failure)?;
    }
    Ok(if failing {
        exit::PLUGIN_OR_GRANT
    } else {
        exit::OK
    })
}

fn report(
    stage: &Stage,
    plugin: Option<&LoadedPlugin>,
    load_error: Option<String>,
    pinned: bool,
    sandbox: &Sandbox,
    secrets: &IndexMap<String, Secret>,
) -> StageReport {
    let requests = plugin.map(|p| p.info.requests.clone()).unwrap_or_default();
    let g = &stage.grants;
    let exec: Vec<Value> = g
        .exec
        .iter()
        .map(|e| {
            let mut entry = match caps::exec::ExecPolicy::resolve(e, sandbox) {
                Ok(p) => json!({"program": e.program, "path": p.path, "sha256": p.digest, "pinned": e.sha256.is_some(), "args": e.args, "env": e.env, "timeout": e.timeout.map(|t| humantime::format_duration(t).to_string())}),
                Err(err) => json!({"program": e.program, "error": err.to_string(), "args": e.args, "env": e.env}),
            };
            if let (Value::Object(entry), Value::Object(confined)) =
                (&mut entry, sandbox::grant(e, stage, sandbox))
            {
                entry.extend(confined);
            }
            entry
        })
        .collect();
    StageReport {
        stage: stage.name.clone(),
        plugin_key: stage.plugin.clone(),
        run_if: stage.run_if,
        plugin: plugin.map(|p| PluginReport {
            path: p.path.display().to_string(),
            sha256: p.digest.clone(),
            pinned,
            contract: format!("{CONTRACT_PACKAGE}@{}", p.contract),
            name: p.info.name.clone(),
            version: p.info.version.clone(),
            description: p.info.description.clone(),
            requests: p.info.requests.clone(),
            config_schema: p.info.config_schema.clone(),
        }),
        load_error,
        requested: requests.iter().map(|r| json!({"capability": r.capability, "reason": r.reason, "granted": caps::granted(stage, &r.capability)})).collect(),
        granted: json!({
            "exec": exec,
            "read": stage.read_dirs,
            "write": stage.write_dirs,
            "env": g.env,
            "connect": g.connect,
            "approval": g.approval,
            "secrets": g.secrets.iter().map(|(name, grant)| {
                let (how, var) = grant.delivery();
                json!({
                    "name": name,
                    "source": secrets.get(name).map(|s| &s.source),
                    "source_warning": secrets.get(name).and_then(|s| caps::secret::source_warning(&s.source)),
                    "delivery": how,
                    "variable": var,
                    "programs": grant.programs,
                    "requested": requests.iter().any(|r| r.capability == caps::Capability::Secret(name.clone()) || r.capability == caps::Capability::SecretGranted),
                    "text": caps::secret::describe_grant(name, grant),
                })
            }).collect::<Vec<_>>(),
            "implicit": "read-write: the stage's own work dir; read-only: the work dirs of the stages it needs",
            "limits": {"timeout": humantime::format_duration(stage.timeout).to_string(), "memory": bytesize::ByteSize(stage.memory).to_string(), "max_output": bytesize::ByteSize(stage.max_output).to_string()},
        }),
        sandbox: sandbox::stage(stage, sandbox),
        missing: caps::check(stage, &requests, secrets),
        unrequested: if plugin.is_some() { caps::unrequested(stage, &requests) } else { Vec::new() },
    }
}

/// The report as text. What the plugin says about itself (name, version,
/// description, reasons, requested values) is shown escaped, and so is
/// everything else quoted from files: a reviewer sees the characters that
/// are there, never text hidden or reordered by control characters.
fn print_text(
    out: &mut impl Write,
    layout: Layout,
    file: &Path,
    stages: &[StageReport],
) -> io::Result<()> {
    writeln!(
        out,
        "audit of {}  (host contract {CONTRACT_PACKAGE}@{CONTRACT_VERSION})",
        inline(&file.display().to_string())
    )?;
    for s in stages {
        writeln!(out)?;
        writeln!(
            out,
            "stage `{}` — plugin `{}`",
            inline(&s.stage),
            inline(&s.plugin_key)
        )?;
        if let Some(p) = &s.plugin {
            writeln!(
                out,
                "  {} {} — {}",
                inline(&p.name),
                inline(&p.version),
                inline(p.description.trim_end())
            )?;
            writeln!(out, "  file     {}", inline(&p.path))?;
            writeln!(
                out,
                "  sha256   {}{}",
                p.sha256,
                if p.pinned {
                    " (pinned)"
                } else {
                    " (not pinned)"
                }
            )?;
            writeln!(out, "  contract {}", inline(&p.contract))?;
        }
        if s.run_if != crate::pipeline::RunIf::Success {
            // A stage that runs after failures sees what went wrong before
            // it: a reviewer should know which stages do.
            writeln!(
                out,
                "  run_if   {} (runs once the stages it needs have ended, {})",
                s.run_if,
                match s.run_if {
                    crate::pipeline::RunIf::Failure => "if one failed or waits for approval",
                    _ => "however they ended",
                }
            )?;
        }
        if let Some(e) = &s.load_error {
            writeln!(out, "  CANNOT LOAD: {}", block(e.trim_end()))?;
        }
        let mut table = layout.table(["requested", "granted", "reason"]);
        for r in &s.requested {
            let cap: caps::Capability =
                serde_json::from_value(r["capability"].clone()).unwrap_or(caps::Capability::Read);
            let granted = if r["granted"].as_bool() == Some(true) {
                layout.cell("yes", Tone::Plain)
            } else {
                layout.cell("NO", Tone::Bad)
            };
            table.add_row([
                layout.cell(inline(&cap.to_string()), Tone::Plain),
                granted,
                layout.cell(
                    inline(r["reason"].as_str().unwrap_or_default()),
                    Tone::Plain,
                ),
            ]);
        }
        writeln!(out, "{table}")?;
        let g = &s.granted;
        sandbox::print_stage(out, &s.sandbox)?;
        for e in g["exec"].as_array().into_iter().flatten() {
            let at = e["path"]
                .as_str()
                .map(|p| format!(" = {p}"))
                .unwrap_or_else(|| format!(" (ERROR: {})", e["error"].as_str().unwrap_or("")));
            writeln!(
                out,
                "  exec     {}{} args {} env {}",
                inline(e["program"].as_str().unwrap_or("")),
                inline(&at),
                inline(&e["args"].to_string()),
                inline(&e["env"].to_string())
            )?;
            sandbox::print_grant(out, e)?;
        }
        for (k, label) in [
            ("read", "read    "),
            ("write", "write   "),
            ("env", "env     "),
            ("connect", "connect "),
        ] {
            if g[k].as_array().is_some_and(|a| !a.is_empty()) {
                writeln!(out, "  {label} {}", inline(&g[k].to_string()))?;
            }
        }
        if g["approval"] == true {
            writeln!(out, "  approval granted")?;
        }
        for secret in g["secrets"].as_array().into_iter().flatten() {
            let field = |key: &str| secret["source"][key].as_str().unwrap_or_default();
            let source = match secret["source"]["kind"].as_str() {
                Some("env") => format!("host variable {}", field("var")),
                Some("file") => format!("file {}", field("path")),
                // The argv as JSON: its arguments stay apart, whatever they hold.
                Some("command") => format!(
                    "command {} (timeout {})",
                    secret["source"]["argv"],
                    field("timeout")
                ),
                _ => "not declared".into(),
            };
            writeln!(
                out,
                "  secret   {} — from {}",
                inline(secret["text"].as_str().unwrap_or_default()),
                inline(&source)
            )?;
            if let Some(warning) = secret["source_warning"].as_str() {
                writeln!(out, "           ⚠ {}", inline(warning))?;
            }
        }
        writeln!(out, "  limits   {}", g["limits"])?;
        for m in &s.missing {
            writeln!(
                out,
                "  MISSING  {} — add:\n{}",
                inline(&m.request.capability.to_string()),
                m.toml
                    .lines()
                    .map(|l| format!("             {}", inline(l)))
                    .collect::<Vec<_>>()
                    .join("\n")
            )?;
        }
        if !s.unrequested.is_empty() {
            writeln!(
                out,
                "  ignored  granted but not requested: {}",
                inline(&s.unrequested.join(", "))
            )?;
        }
    }
    Ok(())
}
