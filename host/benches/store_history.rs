//! How the commands that read history scale: `capstan runs`, `show` and
//! `stats` over a store of H recorded runs (default 10 000,
//! `STORE_BENCH_RUNS`), on SQLite and on PostgreSQL (a throw-away server on
//! loopback, as the tests start it).
//!
//! The history is written through the store's own interface, shaped like
//! the golden-image pipeline's runs: seven stage attempts with outputs, an
//! approval request and decision, a few dozen audit events, spread over
//! three environments and a year, a tenth of them failed — real runs would
//! take hours to make. Each command is the release binary, timed from start
//! to exit; medians of N (default 10, `STORE_BENCH_N`). `STORE_BENCH_STORES`
//! picks the stores (default `sqlite,postgres`; `.ci/bench-perf` takes
//! `sqlite`: filling PostgreSQL with 10 000 runs takes minutes).
//!
//! To time (or profile) the commands again without filling anew:
//! `STORE_BENCH_KEEP=<dir>` keeps the SQLite store and the state dir in
//! `<dir>` (created if needed), and `STORE_BENCH_POSTGRES=<url>` uses that
//! server's database instead of a throw-away one. A kept store that already
//! holds runs is timed as it is.
//!
//! Run by `.ci/bench` (`cargo bench -p capstan --bench store_history`).

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use capstan::store::{
    ApprovalPolicy, ApprovalRow, AuditKind, AuditRow, Decision, Lease, Location, NewRun, Owner,
    PendingApproval, RunFilter, RunKind, RunState, RunStore, StageRow, StageState,
};
use serde_json::json;

const STAGES: [&str; 7] = [
    "lint",
    "build",
    "plan",
    "approve",
    "apply",
    "configure",
    "smoke",
];
const ENVIRONMENTS: [&str; 3] = ["dev", "staging", "production"];

fn env_number(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Record `count` runs of the golden-image shape; returns the last id.
fn fill(store: &dyn RunStore, count: usize) -> String {
    let me = Owner::current();
    let start = jiff::Timestamp::from_second(1_767_225_600).unwrap(); // 2026-01-01
    let mut last = String::new();
    for n in 0..count {
        let at = start + jiff::SignedDuration::from_secs(n as i64 * 3_000);
        let id = format!("{}-{:04x}", at.strftime("%Y%m%d-%H%M%S"), n % 65_536);
        let environment = ENVIRONMENTS[n % 3];
        store
            .create_run(
                &NewRun {
                    id: id.clone(),
                    pipeline: "golden-image".into(),
                    pipeline_file: "/srv/infra/pipeline.toml".into(),
                    pipeline_digest: format!("{n:064x}"),
                    environment: environment.into(),
                    author: ["alice", "bob", "ci"][n % 3].into(),
                    kind: RunKind::Deploy,
                    target: None,
                    undoes: None,
                    only: Vec::new(),
                    run_dir: format!("/srv/infra/.capstan/runs/{id}"),
                    started: at.to_string(),
                    plugins: json!([{"name": "terraform", "sha256": "ab".repeat(32), "path": "/p/terraform.wasm"}]),
                    approvers: None,
                    author_keys: Vec::new(),
                },
                &me,
            )
            .unwrap();
        let failed = n % 10 == 9;
        for (i, stage) in STAGES.iter().enumerate() {
            let from = at + jiff::SignedDuration::from_secs(i as i64 * 20);
            let attempt = store
                .start_stage(&id, stage, "terraform", &from.to_string())
                .unwrap();
            for e in 0..5 {
                let event = AuditRow {
                    time: from.to_string(),
                    stage: stage.to_string(),
                    plugin: "terraform".into(),
                    capability: if e % 2 == 0 {
                        AuditKind::Exec
                    } else {
                        AuditKind::ExecExit
                    },
                    allowed: true,
                    detail: json!({"program": "terraform", "args": ["plan", "-out", "tfplan"], "pid": 4242, "duration_ms": 900}),
                    reason: None,
                };
                store.audit(&id, &event, &format!("{n}-{i}-{e}")).unwrap();
            }
            if *stage == "approve" {
                let request = PendingApproval {
                    stage: "approve".into(),
                    digest: format!("{n:064x}"),
                    subject: "apply 3 changes to production".into(),
                    details: "  + aws_instance.web[0]\n".repeat(40),
                    checklist: vec!["plan reviewed".into()],
                    approvers: vec!["bob".into(), "carol".into()],
                    required: 1,
                    asked: from.to_string(),
                    image_digest: None,
                };
                store.record_request(&id, &request).unwrap();
                store
                    .record_approval(
                        &id,
                        &ApprovalRow {
                            stage: "approve".into(),
                            digest: request.digest.clone(),
                            decision: Decision::Approved,
                            by: "carol".into(),
                            at: from.to_string(),
                            comment: Some("ok".into()),
                            policy: ApprovalPolicy::Manual,
                            override_reason: None,
                            signature: None,
                        },
                    )
                    .unwrap();
            }
            let fails_here = failed && *stage == "smoke";
            let to = from + jiff::SignedDuration::from_secs(15);
            store
                .end_stage(
                    &id,
                    Some(attempt),
                    &StageRow {
                        name: stage.to_string(),
                        attempt,
                        plugin: "terraform".into(),
                        status: if fails_here { StageState::Failed } else { StageState::Succeeded },
                        message: format!("{stage}: done in 15s"),
                        outputs: json!({"image_id": format!("golden-{n}"), "plan_digest": format!("{n:064x}")}),
                        artifacts: json!([]),
                        report: None,
                        started: Some(from.to_string()),
                        ended: Some(to.to_string()),
                        duration_ms: Some(15_000),
                    },
                )
                .unwrap();
        }
        let end = at + jiff::SignedDuration::from_secs(160);
        let status = if failed {
            RunState::Failed
        } else {
            RunState::Succeeded
        };
        store
            .finish_run(&id, status, &end.to_string(), Some(!failed))
            .unwrap();
        last = id;
    }
    last
}

/// Median wall time of `capstan <args>` against `store`.
fn time(store: &str, state: &Path, args: &[&str], n: usize) -> Duration {
    let mut walls: Vec<Duration> = (0..n)
        .map(|_| {
            let t = Instant::now();
            let status = Command::new(env!("CARGO_BIN_EXE_capstan"))
                .arg("--state-dir")
                .arg(state)
                .args(["--store", store])
                .args(args)
                .stdout(Stdio::null())
                .status()
                .unwrap();
            assert!(status.success(), "capstan {args:?} failed");
            t.elapsed()
        })
        .collect();
    walls.sort();
    walls[n / 2]
}

fn main() {
    // `cargo bench` passes `--bench`; nothing else is taken.
    let runs = env_number("STORE_BENCH_RUNS", 10_000);
    let n = env_number("STORE_BENCH_N", 10);
    let stores = std::env::var("STORE_BENCH_STORES").unwrap_or_else(|_| "sqlite,postgres".into());
    let stores: Vec<&str> = stores.split([',', ' ']).filter(|s| !s.is_empty()).collect();
    if let Some(bad) = stores.iter().find(|s| !["sqlite", "postgres"].contains(s)) {
        panic!("STORE_BENCH_STORES: unknown store `{bad}` (give sqlite, postgres or both)");
    }
    let temp = tempfile::tempdir().unwrap();
    let dir = match std::env::var_os("STORE_BENCH_KEEP") {
        Some(kept) => {
            std::fs::create_dir_all(&kept).unwrap();
            std::path::PathBuf::from(kept)
        }
        None => temp.path().to_path_buf(),
    };
    let sqlite = dir.join("capstan.db");
    for name in stores {
        let store = match name {
            "sqlite" => sqlite.display().to_string(),
            _ => std::env::var("STORE_BENCH_POSTGRES")
                .unwrap_or_else(|_| capstan_test_artifacts::postgres::database()),
        };
        let opened = Location::parse(&store).open(Lease::default()).unwrap();
        let t = Instant::now();
        let newest = opened
            .runs(&RunFilter {
                environment: None,
                limit: Some(1),
            })
            .unwrap();
        let (last, runs, written) = match newest.first() {
            Some(kept) => {
                let held = opened.runs(&RunFilter::default()).unwrap().len();
                (kept.id.clone(), held, "kept, read")
            }
            None => (fill(opened.as_ref(), runs), runs, "written"),
        };
        drop(opened);
        let filled = t.elapsed();
        let size = std::fs::metadata(&sqlite).map(|m| m.len()).unwrap_or(0);
        let state = dir.join("state");
        let shown = |args: &[&str]| time(&store, &state, args, n);
        println!(
            "{name:8} {runs} runs ({written} in {:.0?}{}):",
            filled,
            if name == "sqlite" {
                format!(", {:.0} MiB", size as f64 / 1_048_576.0)
            } else {
                String::new()
            }
        );
        for (what, args) in [
            ("runs", vec!["runs"]),
            (
                "runs --limit 1000 --json",
                vec!["runs", "--limit", "1000", "--json"],
            ),
            ("show <last> --json", vec!["show", &last, "--json"]),
            ("show <id suffix>", vec!["show", &last[last.len() - 4..]]),
            ("stats --json", vec!["stats", "--json"]),
        ] {
            println!(
                "  capstan {what:26} {:8.1} ms (median of {n})",
                shown(&args).as_secs_f64() * 1000.0
            );
        }
    }
}
