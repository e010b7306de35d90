//! Every expected value below is worked out by hand in the comment next to it.

use std::collections::HashMap;

use jiff::Timestamp;

use super::percentile::nearest_rank;
use super::*;

const EPS: f64 = 1e-12;

fn ts(s: &str) -> Timestamp {
    s.parse().expect("test timestamp")
}

fn close(actual: Option<f64>, expected: f64) -> bool {
    actual.is_some_and(|a| (a - expected).abs() < EPS)
}

#[allow(clippy::too_many_arguments)]
fn run(
    id: &str,
    environment: &str,
    kind: RunKind,
    undoes: Option<&str>,
    status: RunState,
    started: &str,
    ended: Option<&str>,
    verified: Option<bool>,
    stages: &[(&str, u64, bool)],
) -> RunFacts {
    RunFacts {
        id: id.to_string(),
        environment: environment.to_string(),
        kind,
        undoes: undoes.map(str::to_string),
        status,
        started: ts(started),
        ended: ended.map(ts),
        verified,
        stages: stages
            .iter()
            .map(|&(name, duration_ms, succeeded)| StageTime {
                name: name.into(),
                duration_ms,
                succeeded,
            })
            .collect(),
    }
}

use RunKind::{Deploy, Rollback};
use RunState::*;

/// Twelve runs, two environments, listed out of time order on purpose
/// (the store may hand them over in any order).
///
/// prod
/// - p0  03-01 10:00–10:20 deploy, succeeded, verified: BEFORE the prod window.
/// - p1  03-02 09:00–09:30 deploy, succeeded, verified (30 min incl. approval
///   wait); the deploy stage failed once (5 s) and was retried.
/// - p2  03-03 14:00–14:10 deploy, failed: smoke tests failed.
/// - p3  03-03 14:11–14:16 automatic rollback of p2, succeeded, verified.
/// - p4  03-05 08:00–08:45 deploy, succeeded, verified; later rolled back.
/// - p5  03-05 12:00–12:10 manual rollback of p4, succeeded, verified.
/// - p6  03-06 10:00–10:05 deploy, rejected at approval (build ran).
/// - p7  03-07 16:00–16:02 deploy, interrupted during deploy (build finished).
/// - p8  03-11 09:00–      deploy, awaiting approval (build finished).
///
/// staging
/// - s1  03-02 08:00–08:10 deploy, succeeded, verified.
/// - s2  03-04 09:00–09:05 deploy, failed: smoke tests failed, never fixed.
/// - s3  03-11 15:00–      deploy, running (build finished).
#[rustfmt::skip]
fn history() -> Vec<RunFacts> {
    let p = "prod";
    let s = "staging";
    vec![
        run("p5", p, Rollback, Some("p4"), Succeeded, "2025-03-05T12:00:00Z", Some("2025-03-05T12:10:00Z"), Some(true),
            &[("deploy", 85_000, true), ("smoke", 10_000, true)]),
        run("p0", p, Deploy, None, Succeeded, "2025-03-01T10:00:00Z", Some("2025-03-01T10:20:00Z"), Some(true),
            &[("build", 60_000, true), ("deploy", 120_000, true), ("smoke", 30_000, true)]),
        run("p1", p, Deploy, None, Succeeded, "2025-03-02T09:00:00Z", Some("2025-03-02T09:30:00Z"), Some(true),
            &[("build", 50_000, true), ("deploy", 5_000, false), ("deploy", 100_000, true), ("smoke", 20_000, true)]),
        run("p2", p, Deploy, None, Failed, "2025-03-03T14:00:00Z", Some("2025-03-03T14:10:00Z"), Some(false),
            &[("build", 40_000, true), ("deploy", 90_000, true), ("smoke", 25_000, false)]),
        run("p3", p, Rollback, Some("p2"), Succeeded, "2025-03-03T14:11:00Z", Some("2025-03-03T14:16:00Z"), Some(true),
            &[("deploy", 80_000, true), ("smoke", 15_000, true)]),
        run("s2", s, Deploy, None, Failed, "2025-03-04T09:00:00Z", Some("2025-03-04T09:05:00Z"), Some(false),
            &[("build", 35_000, true), ("deploy", 61_000, true), ("smoke", 9_000, false)]),
        run("p4", p, Deploy, None, Succeeded, "2025-03-05T08:00:00Z", Some("2025-03-05T08:45:00Z"), Some(true),
            &[("build", 70_000, true), ("deploy", 110_000, true), ("smoke", 35_000, true)]),
        run("p6", p, Deploy, None, Rejected, "2025-03-06T10:00:00Z", Some("2025-03-06T10:05:00Z"), None,
            &[("build", 45_000, true)]),
        run("p7", p, Deploy, None, Interrupted, "2025-03-07T16:00:00Z", Some("2025-03-07T16:02:00Z"), None,
            &[("build", 55_000, true)]),
        run("p8", p, Deploy, None, AwaitingApproval, "2025-03-11T09:00:00Z", None, None,
            &[("build", 65_000, true)]),
        run("s1", s, Deploy, None, Succeeded, "2025-03-02T08:00:00Z", Some("2025-03-02T08:10:00Z"), Some(true),
            &[("build", 30_000, true), ("deploy", 60_000, true), ("smoke", 12_000, true)]),
        run("s3", s, Deploy, None, Running, "2025-03-11T15:00:00Z", None, None,
            &[("build", 33_000, true)]),
    ]
}

fn stage(name: &str, count: u64, p50_ms: u64, p95_ms: u64) -> StageStats {
    StageStats {
        name: name.to_string(),
        count,
        p50_ms,
        p95_ms,
    }
}

#[test]
fn prod_window_by_hand() {
    let window = Window {
        environment: Some("prod".into()),
        since: Some(ts("2025-03-02T00:00:00Z")),
        until: ts("2025-03-12T00:00:00Z"),
    };
    let s = compute(&history(), &window);

    assert_eq!(s.environment.as_deref(), Some("prod"));
    assert_eq!(s.since, "2025-03-02T00:00:00Z");
    assert_eq!(s.until, "2025-03-12T00:00:00Z");

    // In the window: p1..p8 (p0 started 03-01 10:00 < since; s* are staging).
    // succeeded p1 p3 p4 p5 = 4, failed p2 = 1, rejected p6 = 1,
    // awaiting p8 = 1, running 0, interrupted p7 = 1; 4+1+1+1+0+1 = 8.
    assert_eq!(
        s.runs,
        RunCounts {
            total: 8,
            succeeded: 4,
            failed: 1,
            rejected: 1,
            awaiting_approval: 1,
            running: 0,
            interrupted: 1,
            cancelled: 0,
        }
    );
    // 4 / (4 + 1 + 1) = 4/6
    assert!(close(s.success_rate, 4.0 / 6.0));

    // build:  p1 50, p2 40, p4 70, p6 45, p7 55, p8 65 (s) -> sorted 40 45 50 55 65 70, n=6
    //         p50 rank ⌈0.5·6⌉=3 -> 50 s; p95 rank ⌈0.95·6⌉=⌈5.7⌉=6 -> 70 s
    // deploy: p1 5 (failed attempt) and 100, p2 90, p3 80, p4 110, p5 85
    //         -> sorted 5 80 85 90 100 110, n=6; p50 rank 3 -> 85 s; p95 rank 6 -> 110 s
    // smoke:  p1 20, p2 25 (failed), p3 15, p4 35, p5 10 -> sorted 10 15 20 25 35, n=5
    //         p50 rank ⌈2.5⌉=3 -> 20 s; p95 rank ⌈4.75⌉=5 -> 35 s
    // (p0's 60/120/30 s are outside the window.)
    assert_eq!(
        s.stages,
        vec![
            stage("build", 6, 50_000, 70_000),
            stage("deploy", 6, 85_000, 110_000),
            stage("smoke", 5, 20_000, 35_000),
        ]
    );

    // Deployments (verified == Some(true)): p1 p3 p4 p5 = 4.
    // Window days = (03-12 − 03-02) = 864 000 s / 86 400 = 10; 4 / 10 = 0.4.
    assert_eq!(s.deployments, 4);
    assert_eq!(s.deployment_frequency_per_day, 0.4);

    // Deploy-kind deployments: p1 (09:00→09:30 = 1800 s), p4 (08:00→08:45 = 2700 s).
    // p50: rank ⌈0.5·2⌉=1 -> 1800; mean (1800 + 2700) / 2 = 2250.
    assert_eq!(
        s.lead_time,
        LeadTime {
            count: 2,
            p50_s: Some(1800.0),
            mean_s: Some(2250.0),
        }
    );

    // Changes (deploy kind, verified is Some): p1, p2, p4 = 3 (p6 p7 p8: None).
    // Failed: p2 (verification failed, and undone by p3: counted once),
    //         p4 (undone by p5) = 2. Rate 2/3.
    assert_eq!(s.changes, 3);
    assert_eq!(s.failed_changes, 2);
    assert!(close(s.change_failure_rate, 2.0 / 3.0));

    // prod timeline (F failure, R recovery):
    //   03-01 10:20 R p0 ended (no incident open: nothing)
    //   03-02 09:30 R p1 ended (nothing)
    //   03-03 14:10 F p2 ended, verification failed -> incident A opens
    //   03-03 14:11 F p3 (rollback) started -> belongs to A
    //   03-03 14:16 R p3 ended, verified, not undone -> A ends: 6 min = 360 s
    //   03-05 08:45    p4 ended verified but undone by p5 -> no event
    //   03-05 12:00 F p5 (rollback) started -> incident B opens
    //   03-05 12:10 R p5 ended -> B ends: 10 min = 600 s
    // Both started in the window: MTTR (360 + 600) / 2 = 480, 2 recoveries, 0 open.
    assert_eq!(s.mttr_s, Some(480.0));
    assert_eq!(s.recoveries, 2);
    assert_eq!(s.open_incidents, 0);
}

#[test]
fn env_filter_and_default_since() {
    let window = Window {
        environment: Some("staging".into()),
        since: None,
        until: ts("2025-03-12T00:00:00Z"),
    };
    let s = compute(&history(), &window);

    // since = earliest staging start = s1 03-02 08:00 (not prod's p0 03-01 10:00).
    assert_eq!(s.since, "2025-03-02T08:00:00Z");
    // Only s1 s2 s3: succeeded 1, failed 1, running 1.
    assert_eq!(
        s.runs,
        RunCounts {
            total: 3,
            succeeded: 1,
            failed: 1,
            running: 1,
            ..RunCounts::default()
        }
    );
    // 1 / (1 + 1 + 0)
    assert_eq!(s.success_rate, Some(0.5));
    // build: 30 35 33 -> sorted 30 33 35; p50 rank ⌈1.5⌉=2 -> 33; p95 rank ⌈2.85⌉=3 -> 35
    // deploy: 60 61; p50 rank ⌈1⌉=1 -> 60; p95 rank ⌈1.9⌉=2 -> 61
    // smoke: 12 9 -> sorted 9 12; p50 -> 9; p95 -> 12
    assert_eq!(
        s.stages,
        vec![
            stage("build", 3, 33_000, 35_000),
            stage("deploy", 2, 60_000, 61_000),
            stage("smoke", 2, 9_000, 12_000),
        ]
    );
    // Deployments: s1 = 1. Window: 03-02 08:00 -> 03-12 00:00 = 9 d 16 h
    // = 835 200 s = 9.666… days; 1 / (835 200 / 86 400) = 86 400 / 835 200.
    assert_eq!(s.deployments, 1);
    assert!(close(
        Some(s.deployment_frequency_per_day),
        86_400.0 / 835_200.0
    ));
    // Lead time: s1 08:00 -> 08:10 = 600 s only.
    assert_eq!(
        s.lead_time,
        LeadTime {
            count: 1,
            p50_s: Some(600.0),
            mean_s: Some(600.0),
        }
    );
    // Changes s1 (true), s2 (false) = 2; failed s2 = 1; 1/2.
    assert_eq!((s.changes, s.failed_changes), (2, 1));
    assert_eq!(s.change_failure_rate, Some(0.5));
    // staging timeline: 03-02 08:10 R s1 (nothing open); 03-04 09:05 F s2 ->
    // incident opens, no recovery follows (prod's recoveries don't count here).
    assert_eq!(s.mttr_s, None);
    assert_eq!(s.recoveries, 0);
    assert_eq!(s.open_incidents, 1);
}

#[test]
fn all_environments_walk_recovery_per_environment() {
    let window = Window {
        environment: None,
        since: None,
        until: ts("2025-03-12T00:00:00Z"),
    };
    let s = compute(&history(), &window);

    // since = earliest start of any run = p0 03-01 10:00.
    assert_eq!(s.environment, None);
    assert_eq!(s.since, "2025-03-01T10:00:00Z");
    // All 12: succeeded p0 p1 p3 p4 p5 s1 = 6, failed p2 s2 = 2, rejected p6,
    // awaiting p8, running s3, interrupted p7 (1 each); 6+2+1+1+1+1 = 12.
    assert_eq!(
        s.runs,
        RunCounts {
            total: 12,
            succeeded: 6,
            failed: 2,
            rejected: 1,
            awaiting_approval: 1,
            running: 1,
            interrupted: 1,
            cancelled: 0,
        }
    );
    // 6 / (6 + 2 + 1) = 6/9
    assert!(close(s.success_rate, 6.0 / 9.0));
    // build attempts: p0 p1 p2 p4 p6 p7 p8 + s1 s2 s3 = 10
    assert_eq!(s.stages[0].name, "build");
    assert_eq!(s.stages[0].count, 10);
    // Deployments p0 p1 p3 p4 p5 s1 = 6. Window 03-01 10:00 -> 03-12 00:00 =
    // 10 d 14 h = 914 400 s; 6 / (914 400 / 86 400) = 6 · 86 400 / 914 400.
    assert_eq!(s.deployments, 6);
    assert!(close(
        Some(s.deployment_frequency_per_day),
        6.0 * 86_400.0 / 914_400.0
    ));
    // Lead times: s1 600, p0 1200, p1 1800, p4 2700 (sorted), n=4.
    // p50 rank ⌈0.5·4⌉=2 -> 1200; mean (600+1200+1800+2700)/4 = 6300/4 = 1575.
    assert_eq!(
        s.lead_time,
        LeadTime {
            count: 4,
            p50_s: Some(1200.0),
            mean_s: Some(1575.0),
        }
    );
    // Changes p0 p1 p2 p4 s1 s2 = 6; failed p2 p4 s2 = 3; 3/6.
    assert_eq!((s.changes, s.failed_changes), (6, 3));
    assert_eq!(s.change_failure_rate, Some(0.5));
    // Per environment: prod as in prod_window_by_hand (360 s, 600 s; both
    // start after 03-01 10:00), staging has s2's incident still open. Walked
    // together, p5's recovery would wrongly close s2's incident.
    // MTTR (360 + 600) / 2 = 480; 2 recoveries; 1 open.
    assert_eq!(s.mttr_s, Some(480.0));
    assert_eq!(s.recoveries, 2);
    assert_eq!(s.open_incidents, 1);
}

#[test]
fn incident_opened_before_the_window_is_not_counted() {
    // p2's incident opens 03-03 14:10, before since = 14:15, and ends 14:16
    // (p3): it did not start in the window, so neither MTTR nor recoveries
    // count it, although p3's failure event (14:11) and recovery are in it.
    let window = Window {
        environment: Some("prod".into()),
        since: Some(ts("2025-03-03T14:15:00Z")),
        until: ts("2025-03-05T12:05:00Z"),
    };
    let s = compute(&history(), &window);
    // Incident B opens 12:00 (in the window) and ends 12:10 (after until):
    // it counts as recovered, 600 s.
    assert_eq!(s.recoveries, 1);
    assert_eq!(s.mttr_s, Some(600.0));
    assert_eq!(s.open_incidents, 0);
}

#[test]
fn nearest_rank_percentiles() {
    // n=1: every percentile is the only value.
    assert_eq!(nearest_rank(&[7], 50), Some(7));
    assert_eq!(nearest_rank(&[7], 95), Some(7));
    // n=2: p50 rank ⌈0.5·2⌉=1 -> 10; p95 rank ⌈1.9⌉=2 -> 20.
    assert_eq!(nearest_rank(&[10, 20], 50), Some(10));
    assert_eq!(nearest_rank(&[10, 20], 95), Some(20));
    // n=20 (1..=20): p50 rank ⌈10⌉=10 -> 10; p95 rank ⌈19⌉=19 -> 19 (not 20).
    let twenty: Vec<u64> = (1..=20).collect();
    assert_eq!(nearest_rank(&twenty, 50), Some(10));
    assert_eq!(nearest_rank(&twenty, 95), Some(19));
    assert_eq!(nearest_rank(&twenty, 100), Some(20));
    assert_eq!(nearest_rank::<u64>(&[], 50), None);
}

#[test]
fn empty_history() {
    let window = Window {
        environment: None,
        since: None,
        until: ts("2025-03-12T00:00:00Z"),
    };
    let s = compute(&[], &window);
    // No runs: since falls back to until.
    assert_eq!(s.since, "2025-03-12T00:00:00Z");
    assert_eq!(s.runs, RunCounts::default());
    assert_eq!(s.success_rate, None);
    assert!(s.stages.is_empty());
    assert_eq!(s.deployments, 0);
    // 0 / max(0 days, 1)
    assert_eq!(s.deployment_frequency_per_day, 0.0);
    assert_eq!(s.lead_time, LeadTime::default());
    assert_eq!((s.changes, s.failed_changes), (0, 0));
    assert_eq!(s.change_failure_rate, None);
    assert_eq!(s.mttr_s, None);
    assert_eq!((s.recoveries, s.open_incidents), (0, 0));

    let json = serde_json::to_value(&s).expect("serializes");
    assert!(json["success_rate"].is_null());
    assert!(json["lead_time"]["p50_s"].is_null());
    assert!(json["mttr_s"].is_null());
    assert!(json["environment"].is_null());
    // Renders without panicking; null metrics have no sample.
    assert!(
        s.render_text(crate::term::Layout::default())
            .contains("n/a")
    );
    let prom = samples(&s.render_prometheus());
    assert!(!prom.contains_key("capstan_mttr_seconds"));
    assert!(!prom.contains_key("capstan_run_success_ratio"));
    assert_eq!(prom["capstan_deployments"], 0.0);
}

#[test]
fn json_field_names_and_unrounded_floats() {
    let window = Window {
        environment: Some("prod".into()),
        since: Some(ts("2025-03-02T00:00:00Z")),
        until: ts("2025-03-12T00:00:00Z"),
    };
    let json = serde_json::to_value(compute(&history(), &window)).expect("serializes");
    assert_eq!(json["runs"]["awaiting_approval"], 1);
    assert_eq!(json["stages"][0]["p95_ms"], 70_000);
    assert_eq!(json["deployment_frequency_per_day"], 0.4);
    assert_eq!(json["change_failure_rate"], 2.0 / 3.0);
    assert_eq!(json["lead_time"]["mean_s"], 2250.0);
}

/// Sample lines of an exposition, `name{labels}` → value; comments skipped.
fn samples(text: &str) -> HashMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let (key, value) = l.rsplit_once(' ').expect("sample line has a value");
            (key.to_string(), value.parse().expect("sample value"))
        })
        .collect()
}

#[test]
fn prometheus_lines() {
    let window = Window {
        environment: Some("prod".into()),
        since: Some(ts("2025-03-02T00:00:00Z")),
        until: ts("2025-03-12T00:00:00Z"),
    };
    let text = compute(&history(), &window).render_prometheus();
    let got = samples(&text);
    let expect = [
        (
            r#"capstan_runs{environment="prod",outcome="succeeded"}"#,
            4.0,
        ),
        (
            r#"capstan_runs{environment="prod",outcome="interrupted"}"#,
            1.0,
        ),
        (r#"capstan_runs{environment="prod",outcome="running"}"#, 0.0),
        (
            r#"capstan_stage_attempts{environment="prod",stage="deploy"}"#,
            6.0,
        ),
        (
            r#"capstan_stage_duration_seconds{environment="prod",stage="build",quantile="0.5"}"#,
            50.0,
        ),
        (
            r#"capstan_stage_duration_seconds{environment="prod",stage="smoke",quantile="0.95"}"#,
            35.0,
        ),
        (r#"capstan_deployments{environment="prod"}"#, 4.0),
        (r#"capstan_deployments_per_day{environment="prod"}"#, 0.4),
        (
            r#"capstan_lead_time_seconds{environment="prod",quantile="0.5"}"#,
            1800.0,
        ),
        (
            r#"capstan_lead_time_mean_seconds{environment="prod"}"#,
            2250.0,
        ),
        (r#"capstan_lead_time_deployments{environment="prod"}"#, 2.0),
        (r#"capstan_changes{environment="prod"}"#, 3.0),
        (r#"capstan_failed_changes{environment="prod"}"#, 2.0),
        (r#"capstan_mttr_seconds{environment="prod"}"#, 480.0),
        (r#"capstan_recoveries{environment="prod"}"#, 2.0),
        (r#"capstan_open_incidents{environment="prod"}"#, 0.0),
    ];
    for (key, value) in expect {
        assert_eq!(got.get(key), Some(&value), "{key} in\n{text}");
    }
    let ratio = got[r#"capstan_change_failure_ratio{environment="prod"}"#];
    assert!((ratio - 2.0 / 3.0).abs() < 1e-9);
    let ratio = got[r#"capstan_run_success_ratio{environment="prod"}"#];
    assert!((ratio - 4.0 / 6.0).abs() < 1e-9);

    // Every metric family is a documented gauge.
    let families: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .collect();
    assert_eq!(families.len(), 15, "{text}");
    for family in families {
        let (name, kind) = family.split_once(' ').expect("TYPE line");
        assert_eq!(kind, "gauge", "{name}");
        assert!(name.starts_with("capstan_"), "{name}");
        assert!(
            text.lines()
                .any(|l| l.starts_with(&format!("# HELP {name} ")) && l.len() > 20),
            "no HELP for {name}"
        );
    }
    assert!(text.ends_with("# EOF\n"));
}

#[test]
fn text_rendering() {
    let window = Window {
        environment: Some("prod".into()),
        since: Some(ts("2025-03-02T00:00:00Z")),
        until: ts("2025-03-12T00:00:00Z"),
    };
    let text = compute(&history(), &window).render_text(crate::term::Layout::default());
    for needle in [
        "environment prod, 2025-03-02T00:00:00Z to 2025-03-12T00:00:00Z",
        "66.7%", // success and change failure rates
        "0.40 per day",
        "30m 00s", // lead time p50
        "37m 30s", // lead time mean
        "8m 00s",  // MTTR
        "2 of 3 changes failed",
        "85.0s", // deploy p50
    ] {
        assert!(text.contains(needle), "{needle:?} in\n{text}");
    }
}
