//! Rollback to the last good image (by hand and on a failed smoke test),
//! and delivery metrics: over that real history, and over a seeded one
//! whose values are computed by hand.

use capstan::store::{NewRun, Owner, RunKind, RunState, StageRow, StageState};
use serde_json::{Value, json};

use crate::golden_image::{example, run};
use crate::harness::Sandbox;
use crate::recovery::new_image;

fn output(sb: &Sandbox, run: &str, stage: &str, key: &str) -> Value {
    let show = sb.show(run);
    show["stages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == stage)
        .unwrap()["outputs"][key]
        .clone()
}

#[test]
fn rollback_redeploys_the_last_good_image_by_hand_and_when_smoke_tests_fail() {
    let sb = Sandbox::new();
    let pipeline = example(&sb, |t| t);
    assert_eq!(run(&sb, &pipeline, &[]).0, 0);
    let good = sb.newest_run_id();
    let image_a = output(&sb, &good, "apply", "image_id");
    new_image(&sb, 1);
    assert_eq!(run(&sb, &pipeline, &[]).0, 0);
    let newer = sb.newest_run_id();
    let image_b = output(&sb, &newer, "apply", "image_id");
    assert_ne!(image_a, image_b);

    let rolled = sb.capstan(&["rollback", "--env", "dev", "-q", "--as", "oncall"]);
    assert_eq!(rolled.code, 0, "{rolled:?}");
    let rollback = sb.newest_run_id();
    let shown = sb.show(&rollback);
    assert_eq!(shown["run"]["kind"], "rollback");
    assert_eq!(shown["run"]["target"], good.as_str());
    assert_eq!(shown["run"]["undoes"], newer.as_str());
    let build = shown["stages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "build")
        .unwrap();
    assert_eq!(build["status"], "reused");
    assert_eq!(
        output(&sb, &rollback, "apply", "image_id"),
        image_a,
        "Terraform deployed the previous image"
    );
    assert_eq!(output(&sb, &rollback, "apply", "image_source"), "pinned");

    // A broken image: its healthcheck fails, the smoke test fails, and the
    // pipeline (`on_failure = "rollback"`) rolls back to the last good run.
    let healthcheck = sb
        .path()
        .join("gi/packer/files/rootfs/usr/local/bin/healthcheck");
    // It still reports the declared version, so the bake accepts it.
    let broken = "#!/bin/sh\nHEALTHCHECK_VERSION=1.0.0\n\
        [ \"${1:-}\" = --version ] && { echo \"healthcheck $HEALTHCHECK_VERSION\"; exit 0; }\n\
        echo 'unhealthy: 1 failed'\nexit 1\n";
    std::fs::write(&healthcheck, broken).unwrap();
    let (code, stderr, _) = run(&sb, &pipeline, &[]);
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("starting a rollback"), "{stderr}");
    let runs = sb.json(&["runs", "--json"]);
    let (auto, broken) = (&runs[0], &runs[1]);
    assert_eq!(broken["status"], "failed");
    assert_eq!(
        (auto["kind"].as_str(), auto["status"].as_str()),
        (Some("rollback"), Some("succeeded"))
    );
    assert_eq!(auto["undoes"], broken["id"]);
    assert_eq!(
        auto["target"],
        rollback.as_str(),
        "the newest good run before the broken one"
    );
    assert_eq!(
        output(&sb, auto["id"].as_str().unwrap(), "apply", "image_id"),
        image_a
    );

    // That history, as delivery metrics: changes are the three deploy runs;
    // two failed (one rolled back, one failed its smoke test).
    let stats = sb.json(&["stats", "--env", "dev", "--json"]);
    assert_eq!(stats["runs"]["total"], 5);
    assert_eq!(
        stats["deployments"], 4,
        "good, newer, and both rollbacks passed smoke tests"
    );
    assert_eq!(
        (stats["changes"].as_u64(), stats["failed_changes"].as_u64()),
        (Some(3), Some(2))
    );
    assert_eq!(stats["recoveries"], 2);
}

/// One seeded run: id, environment, kind, undoes, started, ended, status,
/// verified, and its stages' (name, duration ms, status).
type Seed<'a> = (
    &'a str,
    &'a str,
    RunKind,
    Option<&'a str>,
    &'a str,
    Option<&'a str>,
    RunState,
    Option<bool>,
    &'a [(&'a str, u64, StageState)],
);

/// Seed the store with a history at fixed times, then compare `capstan stats`
/// with values computed by hand.
#[test]
fn stats_over_a_seeded_history_equal_hand_computed_values() {
    let sb = Sandbox::new();
    let store = sb.store();
    let me = Owner::current();
    // id, env, kind, undoes, started, ended, status, verified, [(stage, ms, status)]
    #[rustfmt::skip]
    let history: &[Seed] = &[
        ("r1", "production", RunKind::Deploy, None, "2026-11-01T10:00:00Z", Some("2026-11-01T10:10:00Z"), RunState::Succeeded, Some(true), &[("plan", 60_000, StageState::Succeeded), ("smoke", 30_000, StageState::Succeeded)]),
        ("r2", "production", RunKind::Deploy, None, "2026-11-02T10:00:00Z", Some("2026-11-02T10:20:00Z"), RunState::Failed, Some(false), &[("plan", 120_000, StageState::Succeeded), ("smoke", 60_000, StageState::Failed)]),
        ("r3", "production", RunKind::Rollback, Some("r2"), "2026-11-02T10:30:00Z", Some("2026-11-02T10:40:00Z"), RunState::Succeeded, Some(true), &[("plan", 30_000, StageState::Succeeded), ("smoke", 30_000, StageState::Succeeded)]),
        ("r4", "production", RunKind::Deploy, None, "2026-11-03T09:00:00Z", Some("2026-11-03T12:00:00Z"), RunState::Succeeded, Some(true), &[("plan", 90_000, StageState::Succeeded), ("smoke", 45_000, StageState::Succeeded)]),
        ("r5", "production", RunKind::Deploy, None, "2026-11-04T09:00:00Z", Some("2026-11-04T09:30:00Z"), RunState::Rejected, None, &[("plan", 60_000, StageState::Succeeded)]),
        ("r6", "production", RunKind::Deploy, None, "2026-11-05T09:00:00Z", None, RunState::AwaitingApproval, None, &[("plan", 60_000, StageState::Succeeded)]),
        ("r7", "dev", RunKind::Deploy, None, "2026-11-05T09:00:00Z", Some("2026-11-05T09:01:00Z"), RunState::Succeeded, Some(true), &[("plan", 1_000, StageState::Succeeded)]),
        ("r0", "production", RunKind::Deploy, None, "2026-10-20T09:00:00Z", Some("2026-10-20T09:01:00Z"), RunState::Failed, Some(false), &[("plan", 999_000, StageState::Failed)]),
    ];
    for (id, env, kind, undoes, started, ended, status, verified, stages) in history {
        store
            .create_run(
                &NewRun {
                    id: id.to_string(),
                    pipeline: "seed".into(),
                    pipeline_file: "/seed/pipeline.toml".into(),
                    pipeline_digest: "0".into(),
                    environment: env.to_string(),
                    author: "seed".into(),
                    kind: *kind,
                    target: None,
                    undoes: undoes.map(str::to_string),
                    only: vec![],
                    run_dir: "/seed".into(),
                    started: started.to_string(),
                    plugins: json!([]),
                    approvers: None,
                    author_keys: Vec::new(),
                },
                &me,
            )
            .unwrap();
        for (name, ms, s) in *stages {
            let row = StageRow {
                name: name.to_string(),
                attempt: 0,
                plugin: "seed".into(),
                status: *s,
                message: String::new(),
                outputs: json!({}),
                artifacts: json!([]),
                report: None,
                started: Some(started.to_string()),
                ended: None,
                duration_ms: Some(*ms),
            };
            store.end_stage(id, None, &row).unwrap();
        }
        store
            .finish_run(id, *status, ended.unwrap_or(started), *verified)
            .unwrap();
    }
    drop(store);
    // Production, over the ten days 2026-11-01 .. 2026-11-11.
    let window = [
        "stats",
        "--env",
        "production",
        "--since",
        "2026-11-01",
        "--until",
        "2026-11-11",
    ];
    let stats = sb.json(&[&window[..], &["--json"]].concat());
    // r0 started before --since, r7 is another environment: both left out.
    assert_eq!(
        stats["runs"],
        json!({"total": 6, "succeeded": 3, "failed": 1, "rejected": 1, "awaiting_approval": 1, "running": 0, "interrupted": 0, "cancelled": 0})
    );
    // 3 succeeded / (3 succeeded + 1 failed + 1 rejected)
    assert_eq!(stats["success_rate"], json!(0.6));
    // deployments (verified): r1, r3, r4 over 10 days
    assert_eq!(stats["deployments"], 3);
    assert_eq!(stats["deployment_frequency_per_day"], json!(0.3));
    // lead time of deploy-kind deployments: r1 600 s, r4 10 800 s (3 h waiting for approval):
    // p50 = the ⌈0.5·2⌉ = 1st smallest = 600; mean = 5 700
    assert_eq!(
        stats["lead_time"],
        json!({"count": 2, "p50_s": 600.0, "mean_s": 5700.0})
    );
    // changes: r1, r2, r4 (verification ran); failed: r2 → 1/3
    assert_eq!(
        (stats["changes"].as_u64(), stats["failed_changes"].as_u64()),
        (Some(3), Some(1))
    );
    assert!((stats["change_failure_rate"].as_f64().unwrap() - 1.0 / 3.0).abs() < 1e-12);
    // incident: r2 failed at 11-02 10:20 (r3's start at 10:30 belongs to it), recovered when r3
    // ended at 10:40 → 1 200 s
    assert_eq!(
        (
            stats["mttr_s"].as_f64(),
            stats["recoveries"].as_u64(),
            stats["open_incidents"].as_u64()
        ),
        (Some(1200.0), Some(1), Some(0))
    );
    // plan: 30 000, 60 000 ×3, 90 000, 120 000 → p50 = 3rd = 60 000, p95 = ⌈5.7⌉ = 6th = 120 000;
    // smoke: 30 000 ×2, 45 000, 60 000 → p50 = 2nd = 30 000, p95 = ⌈3.8⌉ = 4th = 60 000
    let stages: Vec<Value> = stats["stages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| json!([s["name"], s["count"], s["p50_ms"], s["p95_ms"]]))
        .collect();
    assert_eq!(
        stages,
        vec![
            json!(["plan", 6, 60000, 120000]),
            json!(["smoke", 4, 30000, 60000])
        ]
    );

    let prom = sb.capstan(&[&window[..], &["--prometheus"]].concat());
    assert_eq!(prom.code, 0, "{prom:?}");
    assert!(
        prom.stdout
            .lines()
            .any(|l| l.starts_with("capstan_change_failure_ratio") && l.contains("production")),
        "{}",
        prom.stdout
    );
}
