//! `capstan runs`: the run history, newest first.

use comfy_table::{Table, presets::UTF8_BORDERS_ONLY};

use crate::exit::{self, Failure};
use crate::store::{RunFilter, RunKind, RunRow};
use crate::text::inline;

/// List recorded runs, newest first.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
Examples:
  capstan runs
  capstan runs --env production --limit 5
  capstan runs --json | jq '.[0].id'")]
pub struct Args {
    /// Only runs of this environment.
    #[arg(long = "env", short = 'e')]
    pub environment: Option<String>,
    /// At most this many runs.
    #[arg(long, default_value_t = 20)]
    pub limit: usize,
    /// Print the runs as a JSON array on stdout.
    #[arg(long)]
    pub json: bool,
}

pub fn exec(args: &Args, cli: &super::Cli) -> Result<u8, Failure> {
    let store = cli.store()?;
    let runs = store
        .runs(&RunFilter {
            environment: args.environment.clone(),
            limit: Some(args.limit),
        })
        .map_err(super::store_failure)?;
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&runs).expect("runs serialize")
        );
        return Ok(exit::OK);
    }
    if runs.is_empty() {
        eprintln!("no runs recorded yet in {}", cli.state_dir.display());
        return Ok(exit::OK);
    }
    let mut table = Table::new();
    table.load_preset(UTF8_BORDERS_ONLY).set_header([
        "run",
        "environment",
        "kind",
        "status",
        "by",
        "started",
        "took",
        "pipeline",
    ]);
    for run in &runs {
        table.add_row([
            run.id.clone(),
            inline(&run.environment).into_owned(),
            kind(run),
            run.status.as_str().to_string(),
            inline(&run.author).into_owned(),
            run.started
                .get(..19)
                .unwrap_or(&run.started)
                .replace('T', " "),
            took(&run.started, run.ended.as_deref()),
            inline(&run.pipeline).into_owned(),
        ]);
    }
    println!("{table}");
    Ok(exit::OK)
}

pub fn kind(run: &RunRow) -> String {
    match (run.kind, &run.target) {
        (RunKind::Rollback, Some(to)) => format!("rollback to {to}"),
        (RunKind::Rollback, None) => "rollback".into(),
        (RunKind::Deploy, _) => "deploy".into(),
    }
}

/// Wall time between two RFC 3339 times, e.g. `7.2s` or `3h 2m`.
pub fn took(started: &str, ended: Option<&str>) -> String {
    let (Ok(a), Some(Ok(b))) = (
        started.parse::<jiff::Timestamp>(),
        ended.map(str::parse::<jiff::Timestamp>),
    ) else {
        return String::new();
    };
    let ms = b.duration_since(a).as_millis().max(0) as u64;
    if ms < 60_000 {
        format!("{:.1}s", ms as f64 / 1000.0)
    } else {
        humantime::format_duration(std::time::Duration::from_secs(ms / 1000)).to_string()
    }
}
