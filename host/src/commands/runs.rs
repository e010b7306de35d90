//! `capstan runs`: the run history, newest first.

use comfy_table::ColumnConstraint;

use crate::exit::{self, Failure};
use crate::store::{RunFilter, RunKind, RunRow, RunState, StageState};
use crate::term::{self, Layout, Stream, Tone};
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
        return term::print(format_args!(
            "{}\n",
            serde_json::to_string_pretty(&runs).expect("runs serialize")
        ))
        .map(|()| exit::OK);
    }
    if runs.is_empty() {
        eprintln!("no runs recorded yet in {}", cli.store_location());
        return Ok(exit::OK);
    }
    let layout = Layout::of(Stream::Stdout);
    let mut table = layout.table([
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
            layout.cell(run.id.clone(), Tone::Plain),
            layout.cell(inline(&run.environment), Tone::Plain),
            layout.cell(kind(run), Tone::Plain),
            layout.cell(run.status.as_str(), run_tone(run.status)),
            layout.cell(inline(&run.author), Tone::Plain),
            layout.cell(
                run.started
                    .get(..19)
                    .unwrap_or(&run.started)
                    .replace('T', " "),
                Tone::Plain,
            ),
            layout.cell(took(&run.started, run.ended.as_deref()), Tone::Plain),
            layout.cell(inline(&run.pipeline), Tone::Plain),
        ]);
    }
    // On a narrow terminal: the id (copied from here) and the status are
    // never wrapped; the least needed columns are left out first.
    for column in [0, 3] {
        if let Some(c) = table.column_mut(column) {
            c.set_constraint(ColumnConstraint::ContentWidth);
        }
    }
    layout.fit(&mut table, &[7, 4, 6, 2, 5, 1]);
    term::print(format_args!("{table}\n"))?;
    Ok(exit::OK)
}

/// How a run's status looks in a coloured table.
pub fn run_tone(status: RunState) -> Tone {
    match status {
        RunState::Succeeded => Tone::Good,
        RunState::Failed | RunState::Rejected => Tone::Bad,
        RunState::AwaitingApproval | RunState::Interrupted | RunState::Running => Tone::Attention,
        RunState::Cancelled => Tone::Stopped,
    }
}

/// How a stage's status looks in a coloured table.
pub fn stage_tone(status: StageState) -> Tone {
    match status {
        StageState::Succeeded => Tone::Good,
        StageState::Failed => Tone::Bad,
        StageState::AwaitingApproval | StageState::Interrupted | StageState::Running => {
            Tone::Attention
        }
        StageState::Cancelled => Tone::Stopped,
        StageState::Skipped | StageState::Reused => Tone::Plain,
    }
}

pub fn kind(run: &RunRow) -> String {
    match (run.kind, &run.target) {
        (RunKind::Rollback, Some(to)) => format!("rollback to {to}"),
        (RunKind::Rollback, None) => "rollback".into(),
        (RunKind::Deploy, _) => "deploy".into(),
        (RunKind::Drift, _) => "drift check".into(),
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
