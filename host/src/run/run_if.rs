//! `run_if`: whether a pending stage runs now, given how the stages before
//! it ended; and what a stage is told of them (`${run.status}`,
//! `${run.stages}`, `${stages.<stage>.status}`).
//!
//! `success` (the default) runs a stage when every stage it needs
//! succeeded, and skips it as soon as one did not. `failure` and `always`
//! wait until every stage before it (those it needs, directly or not) has
//! ended, then run it: `always` whatever happened, `failure` only if one of
//! them failed, waits for approval or was cancelled — what an operator
//! wants to hear about. A stage that never started because of such a
//! stage was skipped, and so counts through the stage that caused it.

use std::collections::HashMap;

use serde_json::{Map, Value, json};

use super::record::StageRecord;
use super::stage::StageStatus;
use crate::pipeline::{Pipeline, RunIf, Stage};
use crate::store::RunState;

/// What to do with a pending stage now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// A stage it waits for has not ended yet.
    Wait,
    /// It does not run, for this reason.
    Skip(String),
    Run,
}

/// Whether `stage` runs now, given the `records` of the stages that have
/// ended so far.
pub fn decide(stage: &Stage, records: &HashMap<String, StageRecord>) -> Decision {
    let status = |name: &str| records.get(name).map(|r| &r.status);
    if stage.run_if == RunIf::Success {
        return stage
            .needs
            .iter()
            .find_map(|n| match status(n) {
                Some(StageStatus::Succeeded { .. }) => None,
                Some(StageStatus::Failed { .. }) => {
                    Some(Decision::Skip(format!("needs `{n}`, which failed")))
                }
                Some(StageStatus::Skipped { .. }) => {
                    Some(Decision::Skip(format!("needs `{n}`, which was skipped")))
                }
                Some(StageStatus::AwaitingApproval { .. }) => Some(Decision::Skip(format!(
                    "needs `{n}`, which waits for approval"
                ))),
                Some(StageStatus::Cancelled { .. }) => {
                    Some(Decision::Skip(format!("needs `{n}`, which was cancelled")))
                }
                None => Some(Decision::Wait),
            })
            .unwrap_or(Decision::Run);
    }
    // A stage a failed stage kept from running is skipped at once, while
    // stages beside it may still run: wait for all of them.
    if stage.upstream.iter().any(|n| status(n).is_none()) {
        return Decision::Wait;
    }
    if stage.run_if == RunIf::Always || so_far(stage, records) != RunState::Succeeded {
        Decision::Run
    } else {
        Decision::Skip(
            "nothing before it failed or waits for approval (run_if = \"failure\")".into(),
        )
    }
}

/// How the run stands as seen from `stage`, over the stages it needs,
/// directly or not, that have ended: failed if one failed, else cancelled
/// if one was, else waiting for approval if one waits, else succeeded.
pub fn so_far(stage: &Stage, records: &HashMap<String, StageRecord>) -> RunState {
    let before = || {
        stage
            .upstream
            .iter()
            .filter_map(|n| records.get(n).map(|r| &r.status))
    };
    let any = |f: fn(&StageStatus) -> bool| before().any(f);
    if any(|s| matches!(s, StageStatus::Failed { .. })) {
        RunState::Failed
    } else if any(|s| matches!(s, StageStatus::Cancelled { .. })) {
        RunState::Cancelled
    } else if any(|s| matches!(s, StageStatus::AwaitingApproval { .. })) {
        RunState::AwaitingApproval
    } else {
        RunState::Succeeded
    }
}

/// `${run.stages}` of `stage`: how each stage before it ended, in pipeline
/// order, as `{"status", "summary"}` or `{"status", "reason"}`.
pub fn ended(
    pipeline: &Pipeline,
    stage: &Stage,
    records: &HashMap<String, StageRecord>,
) -> Map<String, Value> {
    pipeline
        .stages
        .keys()
        .filter(|n| stage.upstream.contains(n))
        .filter_map(|n| records.get(n))
        .map(|r| {
            let row = r.row(None);
            let text = match r.status {
                StageStatus::Succeeded { .. } => "summary",
                _ => "reason",
            };
            let entry = json!({ "status": row.status.as_str(), text: row.message });
            (r.name.clone(), entry)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::run::testing::pipeline;

    /// build → deploy → smoke, and beside them `docs`; `notify` (run_if
    /// as given) needs smoke and docs.
    fn stages_of(run_if: &str) -> (tempfile::TempDir, Pipeline) {
        pipeline(&format!(
            r#"
[pipeline]
name = "t"
[plugins.x]
path = "x.wasm"
[stages.build]
plugin = "x"
[stages.deploy]
plugin = "x"
needs = ["build"]
[stages.smoke]
plugin = "x"
needs = ["deploy"]
[stages.docs]
plugin = "x"
[stages.notify]
plugin = "x"
needs = ["smoke", "docs"]
run_if = "{run_if}"
"#
        ))
    }

    /// The stages that have ended, as the scheduler keeps them.
    type Recorded = Vec<(String, StageRecord)>;

    fn record(name: &str, status: StageStatus) -> (String, StageRecord) {
        let r = StageRecord {
            name: name.into(),
            plugin: "x".into(),
            status,
            started: None,
            duration_ms: None,
            log: String::new(),
        };
        (name.into(), r)
    }

    fn ok(name: &str) -> (String, StageRecord) {
        let status = StageStatus::Succeeded {
            summary: format!("{name} done"),
            outputs: Map::new(),
            artifacts: Vec::new(),
            report: None,
        };
        record(name, status)
    }

    fn failed(name: &str) -> (String, StageRecord) {
        record(
            name,
            StageStatus::Failed {
                reason: "exit 1".into(),
            },
        )
    }

    fn skipped(name: &str, reason: &str) -> (String, StageRecord) {
        record(
            name,
            StageStatus::Skipped {
                reason: reason.into(),
            },
        )
    }

    fn waiting(name: &str) -> (String, StageRecord) {
        record(
            name,
            StageStatus::AwaitingApproval {
                reason: "approve with `capstan approve r --as <name>`".into(),
            },
        )
    }

    #[test]
    fn each_run_if_decides_as_documented() {
        let run = || Decision::Run;
        let wait = || Decision::Wait;
        let skip = |r: &str| Decision::Skip(r.into());
        let nothing = "nothing before it failed or waits for approval (run_if = \"failure\")";
        let after_deploy = || skipped("smoke", "needs `deploy`, which failed");
        #[rustfmt::skip]
        let table: Vec<(&str, Recorded, Decision)> = vec![
            // success: today's rule, decided on the direct needs as they end
            ("success", vec![], wait()),
            ("success", vec![ok("build"), ok("deploy"), ok("smoke"), ok("docs")], run()),
            // (the needs are looked at in order: smoke has not ended yet)
            ("success", vec![failed("docs")], wait()),
            ("success", vec![ok("build"), ok("deploy"), ok("smoke"), failed("docs")],
                skip("needs `docs`, which failed")),
            ("success", vec![ok("build"), failed("deploy"), after_deploy()],
                skip("needs `smoke`, which was skipped")),
            ("success", vec![ok("build"), failed("deploy"), after_deploy(), ok("docs")],
                skip("needs `smoke`, which was skipped")),
            ("success", vec![ok("build"), waiting("deploy"), skipped("smoke", "…"), ok("docs")],
                skip("needs `smoke`, which was skipped")),
            // failure and always wait for every stage before them, even
            // once one has failed, then look at all of them
            ("failure", vec![failed("docs")], wait()),
            ("failure", vec![ok("build"), failed("deploy"), after_deploy()], wait()),
            ("failure", vec![ok("build"), failed("deploy"), after_deploy(), ok("docs")], run()),
            ("failure", vec![ok("build"), ok("deploy"), ok("smoke"), failed("docs")], run()),
            ("failure", vec![ok("build"), waiting("deploy"), skipped("smoke", "…"), ok("docs")], run()),
            ("failure", vec![ok("build"), ok("deploy"), ok("smoke"), ok("docs")], skip(nothing)),
            ("failure", vec![ok("build"), ok("deploy"), skipped("smoke", "not selected by --only"), ok("docs")],
                skip(nothing)),
            ("always", vec![ok("build"), ok("deploy"), ok("smoke")], wait()),
            ("always", vec![ok("build"), ok("deploy"), ok("smoke"), ok("docs")], run()),
            ("always", vec![ok("build"), failed("deploy"), after_deploy(), ok("docs")], run()),
        ];
        for (run_if, records, expected) in table {
            let (_dir, p) = stages_of(run_if);
            let names: Vec<String> = records.iter().map(|(n, _)| n.clone()).collect();
            let records: HashMap<_, _> = records.into_iter().collect();
            assert_eq!(
                decide(&p.stages["notify"], &records),
                expected,
                "{run_if} after {names:?}"
            );
        }
    }

    #[test]
    fn a_stage_is_told_how_the_stages_before_it_ended() {
        let (_dir, p) = stages_of("always");
        let records: HashMap<_, _> = [
            ok("build"),
            waiting("deploy"),
            skipped("smoke", "needs `deploy`, which waits for approval"),
            ok("docs"),
        ]
        .into_iter()
        .collect();
        let notify = &p.stages["notify"];
        assert_eq!(so_far(notify, &records), RunState::AwaitingApproval);
        assert_eq!(
            Value::Object(ended(&p, notify, &records)),
            json!({
                "build": {"status": "succeeded", "summary": "build done"},
                "deploy": {"status": "awaiting-approval", "reason": "approve with `capstan approve r --as <name>`"},
                "smoke": {"status": "skipped", "reason": "needs `deploy`, which waits for approval"},
                "docs": {"status": "succeeded", "summary": "docs done"},
            })
        );
        let records: HashMap<_, _> = [ok("build"), failed("deploy"), waiting("docs")]
            .into_iter()
            .collect();
        assert_eq!(so_far(notify, &records), RunState::Failed);
        // Only the stages before it count: smoke's view is its own chain.
        assert_eq!(so_far(&p.stages["smoke"], &records), RunState::Failed);
        assert_eq!(so_far(&p.stages["deploy"], &records), RunState::Succeeded);
        assert_eq!(
            ended(&p, &p.stages["deploy"], &records)
                .keys()
                .collect::<Vec<_>>(),
            ["build"]
        );
    }

    #[test]
    fn stages_that_report_on_the_run_verify_nothing() {
        use crate::run::record::verified;
        let stages = |recorded: Recorded| -> Vec<StageRecord> {
            recorded.into_iter().map(|(_, r)| r).collect()
        };
        let (_dir, p) = stages_of("always");
        // smoke and docs are what verifies the run, not the notifier after them.
        let told = || ok("notify");
        let bad = stages(vec![
            ok("build"),
            ok("deploy"),
            failed("smoke"),
            ok("docs"),
            told(),
        ]);
        assert_eq!(verified(&p, &bad), Some(false));
        let good = stages(vec![
            ok("build"),
            ok("deploy"),
            ok("smoke"),
            ok("docs"),
            told(),
        ]);
        assert_eq!(verified(&p, &good), Some(true));
        let (_dir, p) = stages_of("failure");
        let quiet = skipped("notify", "nothing before it failed or waits for approval");
        let good = stages(vec![
            ok("build"),
            ok("deploy"),
            ok("smoke"),
            ok("docs"),
            quiet,
        ]);
        assert_eq!(verified(&p, &good), Some(true));
        // A notifier that runs on success is the last stage like any other.
        let (_dir, p) = stages_of("success");
        let good = stages(vec![
            ok("build"),
            ok("deploy"),
            ok("smoke"),
            ok("docs"),
            told(),
        ]);
        assert_eq!(verified(&p, &good), Some(true));
        let notify_skipped = skipped("notify", "needs `smoke`, which failed");
        let bad = stages(vec![
            ok("build"),
            ok("deploy"),
            failed("smoke"),
            ok("docs"),
            notify_skipped,
        ]);
        assert_eq!(verified(&p, &bad), None);
    }
}
