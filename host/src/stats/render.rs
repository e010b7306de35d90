//! Rendering [`Stats`] as a text table and in the Prometheus text format.

use std::sync::atomic::AtomicU64;

use prometheus_client::{
    encoding::text::encode,
    metrics::{family::Family, gauge::Gauge},
    registry::{Registry, Unit},
};

use super::Stats;
use crate::term::Layout;

impl Stats {
    /// A human-readable summary: one line naming the window, a table of the
    /// delivery metrics and a table of stage durations, drawn with `layout`.
    /// Numbers are rounded here only; "n/a" stands for a null metric.
    pub fn render_text(&self, layout: Layout) -> String {
        let env = match &self.environment {
            Some(e) => format!("environment {e}"),
            None => "all environments".to_string(),
        };
        let r = &self.runs;
        let lt = &self.lead_time;
        let mut table = layout.table(["metric", "value", "detail"]);
        table.add_row([
            "runs".to_string(),
            r.total.to_string(),
            [
                (r.succeeded, "succeeded"),
                (r.failed, "failed"),
                (r.rejected, "rejected"),
                (r.awaiting_approval, "awaiting approval"),
                (r.running, "running"),
                (r.interrupted, "interrupted"),
                (r.cancelled, "cancelled"),
            ]
            .into_iter()
            .filter(|&(n, _)| n > 0)
            .map(|(n, what)| format!("{n} {what}"))
            .collect::<Vec<_>>()
            .join(", "),
        ]);
        table.add_row([
            "success rate".to_string(),
            percent(self.success_rate),
            "succeeded / (succeeded + failed + rejected)".to_string(),
        ]);
        table.add_row([
            "deployments".to_string(),
            self.deployments.to_string(),
            format!("{:.2} per day", self.deployment_frequency_per_day),
        ]);
        table.add_row([
            "lead time (p50)".to_string(),
            lt.p50_s.map_or_else(na, seconds),
            format!(
                "mean {}, {} measured",
                lt.mean_s.map_or_else(na, seconds),
                lt.count
            ),
        ]);
        table.add_row([
            "change failure rate".to_string(),
            percent(self.change_failure_rate),
            format!("{} of {} changes failed", self.failed_changes, self.changes),
        ]);
        table.add_row([
            "time to recovery (mean)".to_string(),
            self.mttr_s.map_or_else(na, seconds),
            format!(
                "{} recovered, {} open incidents",
                self.recoveries, self.open_incidents
            ),
        ]);
        let mut out = format!(
            "delivery metrics for {env}, {} to {}\n{table}\n",
            self.since, self.until
        );
        if !self.drift.is_empty() {
            let mut drift = layout.table(["environment", "drift", "last check", "time in drift"]);
            for d in &self.drift {
                let state = match &d.drifted_since {
                    Some(since) => format!("DRIFTED since {since}"),
                    None => "in sync".to_string(),
                };
                drift.add_row([
                    d.environment.clone(),
                    state,
                    format!(
                        "{} (run {}, {} in window)",
                        d.last_check, d.last_run, d.checks
                    ),
                    seconds(d.time_in_drift_s),
                ]);
            }
            out.push_str(&drift.to_string());
            out.push('\n');
        }
        if !self.stages.is_empty() {
            let mut stages = layout.table(["stage", "attempts", "p50", "p95"]);
            for s in &self.stages {
                stages.add_row([
                    s.name.clone(),
                    s.count.to_string(),
                    millis(s.p50_ms),
                    millis(s.p95_ms),
                ]);
            }
            out.push_str(&stages.to_string());
            out.push('\n');
        }
        out
    }

    /// The metrics in the Prometheus (OpenMetrics) text format: one gauge
    /// family per metric, named `capstan_…`, with an `environment` label when
    /// the stats are for one environment. A null metric has no sample (its
    /// `# HELP` and `# TYPE` lines remain). The text ends with `# EOF`.
    pub fn render_prometheus(&self) -> String {
        let base: Vec<(String, String)> = self
            .environment
            .iter()
            .map(|e| ("environment".to_string(), e.clone()))
            .collect();
        let with = |extra: &[(&str, &str)]| -> Vec<(String, String)> {
            let mut l = base.clone();
            l.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
            l
        };
        let mut m = Metrics::new();
        let r = &self.runs;
        let runs = m.count(
            "runs",
            "Runs in the window, by outcome (succeeded, failed, rejected, awaiting_approval, running, interrupted, cancelled)",
        );
        for (outcome, n) in [
            ("succeeded", r.succeeded),
            ("failed", r.failed),
            ("rejected", r.rejected),
            ("awaiting_approval", r.awaiting_approval),
            ("running", r.running),
            ("interrupted", r.interrupted),
            ("cancelled", r.cancelled),
        ] {
            runs.get_or_create(&with(&[("outcome", outcome)])).set(n);
        }
        m.float(
            "run_success_ratio",
            "Runs that succeeded / runs that succeeded, failed or were rejected; absent when there are none",
        )
        .set_opt(&base, self.success_rate);

        let attempts = m.count(
            "stage_attempts",
            "Finished attempts (succeeded or failed) of each stage in runs in the window",
        );
        let durations = m.seconds(
            "stage_duration",
            "Duration of finished stage attempts by nearest-rank quantile (0.5, 0.95)",
        );
        for s in &self.stages {
            attempts
                .get_or_create(&with(&[("stage", &s.name)]))
                .set(s.count);
            for (q, ms) in [("0.5", s.p50_ms), ("0.95", s.p95_ms)] {
                durations
                    .get_or_create(&with(&[("stage", &s.name), ("quantile", q)]))
                    .set(ms as f64 / 1000.0);
            }
        }

        let drifted = m.count(
            "drifted",
            "1 when the newest `capstan drift` check of the environment found drift, else 0",
        );
        let in_drift = m.seconds("drift", "Time the environment spent drifted in the window");
        let last = m.float(
            "drift_last_check_timestamp_seconds",
            "When the newest drift check of the environment ended (Unix seconds)",
        );
        for d in &self.drift {
            let labels = vec![("environment".to_string(), d.environment.clone())];
            drifted.get_or_create(&labels).set(u64::from(d.drifted));
            in_drift.get_or_create(&labels).set(d.time_in_drift_s);
            if let Ok(t) = d.last_check.parse::<jiff::Timestamp>() {
                last.get_or_create(&labels).set(t.as_second() as f64);
            }
        }

        m.count(
            "deployments",
            "Runs (deploy or rollback) in the window whose verification passed",
        )
        .get_or_create(&base)
        .set(self.deployments);
        m.float(
            "deployments_per_day",
            "Deployments / window days (at least 1)",
        )
        .get_or_create(&base)
        .set(self.deployment_frequency_per_day);

        let lt = &self.lead_time;
        m.count(
            "lead_time_deployments",
            "Deploy-kind deployments whose lead time was measured",
        )
        .get_or_create(&base)
        .set(lt.count);
        m.seconds(
            "lead_time",
            "Lead time for changes (ended - started of deploy-kind deployments, approval wait included) by nearest-rank quantile; absent when none",
        )
        .set_opt(&with(&[("quantile", "0.5")]), lt.p50_s);
        m.seconds(
            "lead_time_mean",
            "Mean lead time for changes; absent when none",
        )
        .set_opt(&base, lt.mean_s);

        m.count(
            "changes",
            "Deploy-kind runs in the window whose verification ran",
        )
        .get_or_create(&base)
        .set(self.changes);
        m.count(
            "failed_changes",
            "Changes whose verification failed or that a rollback undoes",
        )
        .get_or_create(&base)
        .set(self.failed_changes);
        m.float(
            "change_failure_ratio",
            "Failed changes / changes; absent when there are no changes",
        )
        .set_opt(&base, self.change_failure_rate);

        m.seconds(
            "mttr",
            "Mean time to recovery of incidents that started in the window and have ended; absent when none ended",
        )
        .set_opt(&base, self.mttr_s);
        m.count(
            "recoveries",
            "Incidents that started in the window and have ended",
        )
        .get_or_create(&base)
        .set(self.recoveries);
        m.count(
            "open_incidents",
            "Incidents that started in the window and have not ended",
        )
        .get_or_create(&base)
        .set(self.open_incidents);

        let mut out = String::new();
        encode(&mut out, &m.registry).expect("writing to a String cannot fail");
        out
    }
}

type Labels = Vec<(String, String)>;
type CountFamily = Family<Labels, Gauge<u64, AtomicU64>>;
type FloatFamily = Family<Labels, Gauge<f64, AtomicU64>>;

/// A registry prefixed `capstan` whose helpers register a gauge family and
/// hand it back to be filled. (prometheus-client ends each HELP text with a
/// period, so the texts given here have none.)
struct Metrics {
    registry: Registry,
}

impl Metrics {
    fn new() -> Self {
        Metrics {
            registry: Registry::with_prefix("capstan"),
        }
    }

    fn count(&mut self, name: &str, help: &str) -> CountFamily {
        let f = CountFamily::default();
        self.registry.register(name, help, f.clone());
        f
    }

    fn float(&mut self, name: &str, help: &str) -> FloatFamily {
        let f = FloatFamily::default();
        self.registry.register(name, help, f.clone());
        f
    }

    fn seconds(&mut self, name: &str, help: &str) -> FloatFamily {
        let f = FloatFamily::default();
        self.registry
            .register_with_unit(name, help, Unit::Seconds, f.clone());
        f
    }
}

trait SetOpt {
    /// Sets the sample for `labels` when there is a value; leaves the family
    /// without that sample otherwise.
    fn set_opt(&self, labels: &Labels, value: Option<f64>);
}

impl SetOpt for FloatFamily {
    fn set_opt(&self, labels: &Labels, value: Option<f64>) {
        if let Some(v) = value {
            self.get_or_create(labels).set(v);
        }
    }
}

fn na() -> String {
    "n/a".to_string()
}

fn percent(v: Option<f64>) -> String {
    v.map_or_else(na, |v| format!("{:.1}%", v * 100.0))
}

fn millis(ms: u64) -> String {
    format!("{:.1}s", ms as f64 / 1000.0)
}

/// Seconds rounded for reading: `42.5s`, `12m 05s`, `3h 07m`.
fn seconds(s: f64) -> String {
    if s.abs() < 60.0 {
        return format!("{s:.1}s");
    }
    let whole = s.round() as i64;
    let sign = if whole < 0 { "-" } else { "" };
    let whole = whole.abs();
    if whole < 3600 {
        format!("{sign}{}m {:02}s", whole / 60, whole % 60)
    } else {
        let minutes = (whole + 30) / 60;
        format!("{sign}{}h {:02}m", minutes / 60, minutes % 60)
    }
}
