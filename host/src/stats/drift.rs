//! Drift as a tracked metric, from the checks `capstan drift` recorded: per
//! environment, the last check, whether it found drift, since when the
//! environment has been drifted, and how long it spent drifted in the window.
//!
//! A check that finds drift starts a stretch of drift that lasts until the
//! next check that finds none (or the end of the window): time in drift is
//! the sum of those stretches, cut to the window.

use jiff::Timestamp;
use serde::Serialize;

use super::Window;
use crate::store::DriftCheck;

/// One environment's drift.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EnvDrift {
    pub environment: String,
    /// The newest check (RFC 3339), and its run.
    pub last_check: String,
    pub last_run: String,
    /// What the newest check found.
    pub drifted: bool,
    /// The first check of the current drifted stretch, when drifted.
    pub drifted_since: Option<String>,
    /// Seconds spent drifted within the window.
    pub time_in_drift_s: f64,
    /// Checks in the window.
    pub checks: u64,
}

/// The drift of each environment with checks before the window's end
/// (`checks` oldest first, as the store gives them).
pub fn summarize(checks: &[DriftCheck], window: &Window, since: Timestamp) -> Vec<EnvDrift> {
    let mut environments: Vec<&str> = checks.iter().map(|c| c.environment.as_str()).collect();
    environments.sort_unstable();
    environments.dedup();
    let until = window.until;
    environments
        .into_iter()
        .filter(|e| window.environment.as_deref().is_none_or(|w| w == *e))
        .filter_map(|env| {
            let mine: Vec<(Timestamp, &DriftCheck)> = checks
                .iter()
                .filter(|c| c.environment == env)
                .filter_map(|c| Some((c.checked.parse::<Timestamp>().ok()?, c)))
                .filter(|(t, _)| *t < until)
                .collect();
            let (last_at, last) = *mine.last()?;
            let mut in_drift = 0.0;
            let mut stretch: Option<Timestamp> = None;
            for (at, check) in &mine {
                match (check.drifted, stretch) {
                    (true, None) => stretch = Some(*at),
                    (false, Some(start)) => {
                        in_drift += overlap(start, *at, since, until);
                        stretch = None;
                    }
                    _ => {}
                }
            }
            if let Some(start) = stretch {
                in_drift += overlap(start, until, since, until);
            }
            Some(EnvDrift {
                environment: env.to_string(),
                last_check: last_at.to_string(),
                last_run: last.run_id.clone(),
                drifted: last.drifted,
                drifted_since: stretch.map(|s| s.to_string()),
                time_in_drift_s: in_drift,
                checks: mine.iter().filter(|(t, _)| *t >= since).count() as u64,
            })
        })
        .collect()
}

/// Seconds of [a, b) inside [since, until).
fn overlap(a: Timestamp, b: Timestamp, since: Timestamp, until: Timestamp) -> f64 {
    let (from, to) = (a.max(since), b.min(until));
    if to > from {
        to.duration_since(from).as_secs_f64()
    } else {
        0.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(env: &str, at: &str, drifted: bool) -> DriftCheck {
        DriftCheck {
            environment: env.into(),
            run_id: format!("r-{at}"),
            checked: at.into(),
            drifted,
            detail: serde_json::json!({}),
        }
    }

    #[test]
    fn time_in_drift_runs_from_a_drifted_check_to_the_next_clean_one() {
        let t = |s: &str| s.parse::<Timestamp>().unwrap();
        let checks = [
            check("prod", "2026-11-01T00:00:00Z", false),
            check("prod", "2026-11-02T00:00:00Z", true),
            check("prod", "2026-11-02T12:00:00Z", true),
            check("prod", "2026-11-03T00:00:00Z", false),
            check("prod", "2026-11-04T00:00:00Z", true),
            check("dev", "2026-11-01T00:00:00Z", false),
        ];
        let window = Window {
            environment: None,
            since: None,
            until: t("2026-11-04T06:00:00Z"),
        };
        let all = summarize(&checks, &window, t("2026-11-01T00:00:00Z"));
        assert_eq!(all.len(), 2);
        let dev = &all[0];
        assert_eq!(
            (dev.environment.as_str(), dev.drifted, dev.time_in_drift_s),
            ("dev", false, 0.0)
        );
        let prod = &all[1];
        assert!(prod.drifted);
        assert_eq!(prod.drifted_since.as_deref(), Some("2026-11-04T00:00:00Z"));
        // One day (2nd to 3rd) and six hours (4th, to the window's end).
        assert_eq!(prod.time_in_drift_s, 30.0 * 3600.0);
        assert_eq!(
            (prod.checks, prod.last_run.as_str()),
            (5, "r-2026-11-04T00:00:00Z")
        );
        // A window starting mid-stretch counts from its start.
        let late = summarize(&checks, &window, t("2026-11-02T18:00:00Z"));
        assert_eq!(late[1].time_in_drift_s, 12.0 * 3600.0);
        let only_dev = Window {
            environment: Some("dev".into()),
            ..window
        };
        assert_eq!(
            summarize(&checks, &only_dev, t("2026-11-01T00:00:00Z")).len(),
            1
        );
    }
}
