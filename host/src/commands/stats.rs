//! `capstan stats`: delivery metrics from the run history.

use crate::exit::{self, Failure};
use crate::stats::{RunFacts, Window, compute};
use crate::store::{RunOutcome, RunState, RunStore, StoreError};
use crate::term::{self, Layout, Stream};

/// Delivery metrics of the recorded runs: success rate, stage durations
/// (p50, p95), deployment frequency, lead time, change failure rate and mean
/// time to recovery. The README ("Delivery metrics") gives the formulas.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
Examples:
  capstan stats
  capstan stats --env production --since 2026-11-01
  capstan stats --env production --prometheus > /var/lib/node_exporter/capstan.prom

A deployment is a run whose verification stages (those no other stage needs,
e.g. smoke tests) passed; a failed change is a deploy run whose verification
failed or that a rollback undid; recovery is the time from a failure to the
next good deployment of the environment.")]
pub struct Args {
    /// Only runs of this environment.
    #[arg(long = "env", short = 'e')]
    pub environment: Option<String>,
    /// Start of the window: a date (2026-11-01) or RFC 3339 time. Default: the first run.
    #[arg(long, value_parser = parse_time)]
    pub since: Option<jiff::Timestamp>,
    /// End of the window (exclusive), after --since. Default: now.
    #[arg(long, value_parser = parse_time)]
    pub until: Option<jiff::Timestamp>,
    /// Print the metrics as JSON on stdout.
    #[arg(long, conflicts_with = "prometheus")]
    pub json: bool,
    /// Print the metrics in the Prometheus text exposition format.
    #[arg(long)]
    pub prometheus: bool,
}

/// A date (UTC midnight) or an RFC 3339 timestamp.
fn parse_time(text: &str) -> Result<jiff::Timestamp, String> {
    if let Ok(t) = text.parse::<jiff::Timestamp>() {
        return Ok(t);
    }
    text.parse::<jiff::civil::Date>()
        .ok()
        .and_then(|d| d.to_zoned(jiff::tz::TimeZone::UTC).ok())
        .map(|z| z.timestamp())
        .ok_or_else(|| format!("`{text}` is neither a date (2026-11-01) nor an RFC 3339 time (2026-11-01T09:30:00Z)"))
}

pub fn exec(args: &Args, cli: &super::Cli) -> Result<u8, Failure> {
    let window = window(args, jiff::Timestamp::now())?;
    let store = cli.store()?;
    let history = history(store.as_ref()).map_err(super::store_failure)?;
    let mut stats = compute(&history, &window);
    let checks = store
        .drift_checks(window.environment.as_deref())
        .map_err(super::store_failure)?;
    let since = stats.since.parse().unwrap_or(window.until);
    stats.drift = crate::stats::drift::summarize(&checks, &window, since);
    if args.json {
        term::print(format_args!(
            "{}\n",
            serde_json::to_string_pretty(&stats).expect("stats serialize")
        ))?;
    } else if args.prometheus {
        term::print(stats.render_prometheus())?;
    } else {
        term::print(format_args!(
            "{}\n",
            stats.render_text(Layout::of(Stream::Stdout))
        ))?;
    }
    Ok(exit::OK)
}

/// The window `--since`/`--until` name; one that ends before it starts is
/// a usage error.
fn window(args: &Args, now: jiff::Timestamp) -> Result<Window, Failure> {
    let until = args.until.unwrap_or(now);
    if let Some(since) = args.since
        && since >= until
    {
        let (until, fix) = match args.until {
            Some(u) => (format!("--until {u}"), "a --since earlier than --until"),
            None => (
                format!("now ({now}, the default --until)"),
                "a --since in the past, or a later --until",
            ),
        };
        return Err(Failure::new(
            exit::USAGE,
            format!(
                "error: --since {since} is not before {until}: the window [since, until) would be empty\n  \
                 give {fix}"
            ),
        ));
    }
    Ok(Window {
        environment: args.environment.clone(),
        since: args.since,
        until,
    })
}

/// What the metrics need of every recorded run. Drift checks change
/// nothing: they are no deliveries (drift has its own lines).
pub(crate) fn history(store: &dyn RunStore) -> Result<Vec<RunFacts>, StoreError> {
    Ok(store.outcomes()?.into_iter().map(facts).collect())
}

/// What the metrics need of one recorded run: its end counts only once it
/// succeeded, failed or was rejected.
fn facts(run: RunOutcome) -> RunFacts {
    let ended = matches!(
        run.status,
        RunState::Succeeded | RunState::Failed | RunState::Rejected
    )
    .then_some(run.ended)
    .flatten();
    RunFacts {
        id: run.id,
        environment: run.environment,
        kind: run.kind,
        undoes: run.undoes,
        status: run.status,
        started: run.started.unwrap_or_default(),
        ended,
        verified: run.verified,
        stages: run.stages,
    }
}
