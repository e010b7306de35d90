//! `capstan stats` reads the history through [`RunStore::outcomes`], each
//! run with the stage times it keeps; the oracle here reads it as `stats`
//! did before, through the general interface (every run's whole row, then
//! its stage rows), and both must give the same metrics, as JSON, text and
//! Prometheus lines, also for runs recorded before runs kept their stage
//! times.

use crate::commands::stats::history;
use crate::stats::{RunFacts, StageTime, Stats, Window, compute};
use crate::term::Layout;
use strum::VariantArray;

use super::*;

const ENVIRONMENTS: [&str; 4] = ["dev", "staging", "prod", "prod-eu"];

/// A small deterministic generator, so that the history is varied but the
/// same on every run of the test.
struct Dice(u64);

impl Dice {
    fn roll(&mut self, sides: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) % sides
    }
}

/// Times as Capstan writes them: as many fractional digits as needed.
fn at(second: i64, nanos: u64) -> String {
    let start = jiff::Timestamp::from_second(1_772_323_200).unwrap(); // 2026-03-01
    (start + jiff::SignedDuration::new(second, nanos as i32)).to_string()
}

/// Every status, kind and verification outcome, retried, skipped, untimed,
/// unfinished and rerecorded attempts, rollbacks of runs in other
/// environments and of runs that are not there, drift checks with timed
/// stages, and times that are not RFC 3339.
fn record_varied_history(s: &dyn RunStore) {
    let me = Owner::current();
    let mut dice = Dice(14);
    let mut ids: Vec<String> = Vec::new();
    for n in 0..90 {
        let id = format!("20260301-{n:04}");
        let environment = ENVIRONMENTS[dice.roll(4) as usize];
        let kind = match dice.roll(10) {
            _ if n == 7 => RunKind::Deploy,
            0..=5 => RunKind::Deploy,
            6..=8 => RunKind::Rollback,
            _ => RunKind::Drift,
        };
        let undoes = (kind == RunKind::Rollback && !ids.is_empty()).then(|| match dice.roll(5) {
            0 => "20991231-gone".to_string(),
            _ => ids[dice.roll(ids.len() as u64) as usize].clone(),
        });
        let second = n * 1_800 + dice.roll(600) as i64;
        let nanos = [0, 500_000_000, 123_000_000, 123_456_789][dice.roll(4) as usize];
        let started = match n {
            7 => "t0".to_string(),
            _ => at(second, nanos),
        };
        s.create_run(
            &NewRun {
                kind,
                undoes: undoes.clone(),
                // A deploy that names a run it undoes: ignored.
                ..started_at(&id, environment, &started)
            },
            &me,
        )
        .unwrap();
        ids.push(id.clone());

        for (i, stage) in ["build", "plan", "apply", "smoke"].iter().enumerate() {
            let from = at(second + i as i64 * 60, 0);
            let attempts = 1 + dice.roll(3);
            for a in 0..attempts {
                let last = a + 1 == attempts;
                let status = match (last, dice.roll(12)) {
                    (false, _) => StageState::Failed,
                    (true, 0) => StageState::Skipped,
                    (true, 1) => StageState::Interrupted,
                    (true, 2) => StageState::Running,
                    (true, 3) => StageState::Failed,
                    _ => StageState::Succeeded,
                };
                let attempt = s.start_stage(&id, stage, "x", &from).unwrap();
                if status == StageState::Running {
                    continue;
                }
                let row = StageRow {
                    name: stage.to_string(),
                    attempt,
                    status,
                    started: Some(from.clone()),
                    duration_ms: (dice.roll(8) != 0).then(|| dice.roll(90_000)),
                    ..ended(stage, status)
                };
                s.end_stage(&id, Some(attempt), &row).unwrap();
                // An attempt recorded again replaces what it was.
                if dice.roll(10) == 0 {
                    let status = [StageState::Skipped, StageState::Failed][dice.roll(2) as usize];
                    let again = StageRow {
                        status,
                        duration_ms: Some(dice.roll(90_000)),
                        ..row
                    };
                    s.end_stage(&id, Some(attempt), &again).unwrap();
                }
            }
        }

        let status = RunState::VARIANTS[dice.roll(RunState::VARIANTS.len() as u64) as usize];
        let verified = [None, Some(true), Some(false), Some(true)][dice.roll(4) as usize];
        let end = match n {
            11 => "soon".to_string(),
            _ => at(second + 300 + dice.roll(3_000) as i64, 250_000_000),
        };
        if status != RunState::Running || dice.roll(2) == 0 {
            s.finish_run(&id, status, &end, verified).unwrap();
        }
    }
}

/// The history as `capstan stats` read it before [`RunStore::outcomes`].
fn history_the_old_way(s: &dyn RunStore) -> Vec<RunFacts> {
    let time = |t: &str| t.parse::<jiff::Timestamp>().ok();
    s.runs(&RunFilter::default())
        .unwrap()
        .iter()
        .filter(|run| run.kind != RunKind::Drift)
        .map(|run| RunFacts {
            id: run.id.clone(),
            environment: run.environment.clone(),
            kind: run.kind,
            undoes: run.undoes.clone(),
            status: run.status,
            started: time(&run.started).unwrap_or_default(),
            ended: matches!(
                run.status,
                RunState::Succeeded | RunState::Failed | RunState::Rejected
            )
            .then(|| run.ended.as_deref().and_then(time))
            .flatten(),
            verified: run.verified,
            stages: s
                .stages(&run.id)
                .unwrap()
                .into_iter()
                .filter(|t| matches!(t.status, StageState::Succeeded | StageState::Failed))
                .filter_map(|t| {
                    Some(StageTime {
                        duration_ms: t.duration_ms?,
                        succeeded: t.status == StageState::Succeeded,
                        name: t.name.into(),
                    })
                })
                .collect(),
        })
        .collect()
}

/// Runs by id, each one's attempts in one order: the two ways may list
/// them in any.
fn sorted(mut history: Vec<RunFacts>) -> Vec<RunFacts> {
    history.sort_by(|a, b| a.id.cmp(&b.id));
    for run in &mut history {
        run.stages.sort_by(|a, b| {
            (&a.name, a.duration_ms, a.succeeded).cmp(&(&b.name, b.duration_ms, b.succeeded))
        });
    }
    history
}

/// Every way `capstan stats` shows the metrics. The Prometheus samples of
/// a family come in no fixed order (the exposition library keeps them in a
/// hash map), so their lines are compared sorted.
fn shown(stats: &Stats) -> (String, String, Vec<String>) {
    let mut prometheus: Vec<String> = stats
        .render_prometheus()
        .lines()
        .map(str::to_string)
        .collect();
    prometheus.sort();
    (
        serde_json::to_string_pretty(stats).unwrap(),
        stats.render_text(Layout::default()),
        prometheus,
    )
}

pub(super) fn stats_from_outcomes_equal_stats_from_whole_runs(s: &dyn RunStore) {
    record_varied_history(s);
    let old = history_the_old_way(s);
    let new = history(s).unwrap();
    // The history covers what it should: drift checks are left out, and
    // there are timed attempts, failed ones among them.
    assert_eq!(s.runs(&RunFilter::default()).unwrap().len(), 90);
    assert!((50..90).contains(&old.len()), "{} runs", old.len());
    let attempts = old.iter().flat_map(|r| &r.stages);
    assert!(attempts.clone().filter(|t| !t.succeeded).count() > 20);
    assert!(old.iter().any(|r| r.started == jiff::Timestamp::default()));
    assert_eq!(sorted(new.clone()), sorted(old.clone()));

    let t = |s: &str| s.parse::<jiff::Timestamp>().unwrap();
    let mut windows = Vec::new();
    for environment in [None, Some("dev"), Some("prod"), Some("prod-eu"), Some("qa")] {
        for (since, until) in [
            (None, t("2027-01-01T00:00:00Z")),
            (Some(t("2026-03-01T12:00:00Z")), t("2026-03-02T06:30:00Z")),
            (None, t("2026-03-01T08:00:00.123Z")),
            (Some(t("2026-03-02T00:00:00Z")), t("2027-01-01T00:00:00Z")),
        ] {
            windows.push(Window {
                environment: environment.map(str::to_string),
                since,
                until,
            });
        }
    }
    for window in &windows {
        let expected = compute(&old, window);
        assert_eq!(
            shown(&compute(&new, window)),
            shown(&expected),
            "{window:?}"
        );
    }
    // The metrics are not all empty.
    let all = compute(&old, &windows[0]);
    assert!(all.deployments > 5 && all.changes > 5 && all.failed_changes > 0);
    assert!(all.recoveries > 0 && all.stages.len() == 4);
}

/// What [`RunStore::outcomes`] reads of a run and its attempts.
pub(super) fn outcomes_are_every_run_but_drift_checks_with_its_timed_attempts(s: &dyn RunStore) {
    let me = Owner::current();
    s.create_run(
        &NewRun {
            kind: RunKind::Rollback,
            undoes: Some("r0".into()),
            ..started_at("r1", "prod", "2026-11-26T10:00:00.5Z")
        },
        &me,
    )
    .unwrap();
    s.create_run(&new_run("r2", "dev"), &me).unwrap();
    let drift = NewRun {
        kind: RunKind::Drift,
        ..new_run("d1", "prod")
    };
    s.create_run(&drift, &me).unwrap();
    s.end_stage("r1", None, &ended("smoke", StageState::Failed))
        .unwrap();
    s.end_stage("r1", None, &ended("build", StageState::Succeeded))
        .unwrap();
    s.end_stage("r1", None, &ended("plan", StageState::Skipped))
        .unwrap();
    let untimed = StageRow {
        duration_ms: None,
        ..ended("apply", StageState::Succeeded)
    };
    s.end_stage("r1", None, &untimed).unwrap();
    s.start_stage("r1", "deploy", "x", "2026-11-26T10:00:03Z")
        .unwrap();
    s.end_stage("d1", None, &ended("plan", StageState::Succeeded))
        .unwrap();
    s.finish_run("r1", RunState::Failed, "2026-11-26T10:05:00Z", Some(false))
        .unwrap();

    let mut outcomes = s.outcomes().unwrap();
    outcomes.sort_by(|a, b| a.id.cmp(&b.id));
    outcomes[0].stages.sort_by(|a, b| a.name.cmp(&b.name));
    let timing = |name: &str, succeeded| StageTime {
        name: name.into(),
        succeeded,
        duration_ms: 1000,
    };
    assert_eq!(
        outcomes,
        [
            RunOutcome {
                id: "r1".into(),
                environment: "prod".into(),
                kind: RunKind::Rollback,
                undoes: Some("r0".into()),
                status: RunState::Failed,
                started: Some("2026-11-26T10:00:00.5Z".parse().unwrap()),
                ended: Some("2026-11-26T10:05:00Z".parse().unwrap()),
                verified: Some(false),
                stages: vec![timing("build", true), timing("smoke", false)],
            },
            RunOutcome {
                id: "r2".into(),
                environment: "dev".into(),
                kind: RunKind::Deploy,
                undoes: None,
                status: RunState::Running,
                started: Some("2026-11-26T10:00:00Z".parse().unwrap()),
                ended: None,
                verified: None,
                stages: Vec::new(),
            },
        ]
    );
}

/// Runs recorded before their stage times were kept (SQLite schema 7,
/// PostgreSQL 1) have them once the store is migrated: the store is
/// rewound to that version (the column dropped), then opened again.
fn recorded_before_stage_times_were_kept(open: &dyn Fn() -> Box<dyn RunStore>, rewind: &dyn Fn()) {
    record_varied_history(open().as_ref());
    rewind();
    let s = open();
    let old = history_the_old_way(s.as_ref());
    assert!(old.iter().any(|r| !r.stages.is_empty()));
    assert_eq!(sorted(history(s.as_ref()).unwrap()), sorted(old));
}

#[test]
fn sqlite_runs_recorded_before_stage_times_were_kept_have_them_once_migrated() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("capstan.db");
    recorded_before_stage_times_were_kept(&|| Box::new(SqliteStore::open(&path).unwrap()), &|| {
        let c = rusqlite::Connection::open(&path).unwrap();
        c.execute_batch("ALTER TABLE runs DROP COLUMN stage_times; PRAGMA user_version = 7;")
            .unwrap();
    });
}

#[test]
fn postgres_runs_recorded_before_stage_times_were_kept_have_them_once_migrated() {
    let url = capstan_test_artifacts::postgres::database();
    recorded_before_stage_times_were_kept(
        &|| Box::new(PostgresStore::open(&url).unwrap()),
        &|| {
            super::postgres_only::query(&url, "ALTER TABLE runs DROP COLUMN stage_times");
            super::postgres_only::query(
                &url,
                "DELETE FROM capstan_schema_version WHERE version = 2",
            );
        },
    );
}
