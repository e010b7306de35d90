//! Bench fixture: runs one granted program through the host, its output
//! kept in the stage log or, with `unlogged = true`, only counted against
//! the stage's `max_output` (`Exec::unlogged`, as the Terraform plugin runs
//! `show -json`). No first-party plugin lets a pipeline ask for unlogged
//! output, so `.ci/bench-perf` measures that path with this one.
//!
//! ```toml
//! [stages.flood]
//! plugin = "bench-output"
//! with = { run = ["cat", "/data/1GiB.txt"], unlogged = true }
//! ```
//!
//! Build: `cargo build --release --target wasm32-wasip2 -p capstan-bench-output`.

use capstan_plugin::{Context, Error, Exec, Info, Outcome, Stage};
use schemars::JsonSchema;
use serde::Deserialize;

/// The stage's `with` table.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct Config {
    /// The program and its arguments (argv: no shell).
    run: Vec<String>,
    /// Keep the program's output out of the stage log.
    #[serde(default)]
    unlogged: bool,
}

struct BenchOutput;

impl Stage for BenchOutput {
    type Config = Config;

    fn info() -> Info {
        Info::new("bench-output", env!("CARGO_PKG_VERSION"))
            .description("Bench fixture: runs one program, its output logged or unlogged.")
            .exec_granted("to run the one program `run` names, as the stage grants it")
            .read("so that the program may read the files the stage's read grants name")
    }

    fn run(ctx: Context<Config>) -> Result<Outcome, Error> {
        let Some((program, args)) = ctx.config.run.split_first() else {
            return Err(Error::config(
                "`run` is empty: give the program and its arguments, e.g. [\"cat\", \"file\"]",
            ));
        };
        let mut exec = Exec::new(program.as_str()).args(args);
        if ctx.config.unlogged {
            exec = exec.unlogged();
        }
        exec.run_ok()?;
        let how = if ctx.config.unlogged {
            "not logged"
        } else {
            "logged"
        };
        Ok(Outcome::new(format!("ran `{program}`, its output {how}")))
    }
}

capstan_plugin::export_stage!(BenchOutput);
