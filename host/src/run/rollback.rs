//! Rolling back (`capstan rollback`, `on_failure = "rollback"`): which run
//! a rollback undoes, which good run it redeploys, and the stages whose
//! outputs it takes from that run instead of running them.

use std::path::{Path, PathBuf};

use super::stage::StageStatus;
use super::{RunRecord, StageRecord};
use crate::pipeline::Pipeline;
use crate::pipeline::file::OnFailure;
use crate::store::{
    RunFilter, RunKind, RunRow, RunState, RunStore, StageRow, StoreError, latest_attempts,
};

/// Why a rollback cannot start.
#[derive(Debug, thiserror::Error)]
pub enum RollbackError {
    #[error("run {id} deployed to `{deployed}`, not `{environment}`")]
    OtherEnvironment {
        id: String,
        deployed: String,
        environment: String,
    },
    #[error("run {id} is {state}, not a good run to roll back to")]
    NotGood { id: String, state: RunState },
    #[error(
        "no good run of `{environment}` before {} to roll back to; name one with --to",
        before.as_ref().map_or("now".to_string(), |u| format!("run {u}"))
    )]
    NoGoodRun {
        environment: String,
        /// The run being undone.
        before: Option<String>,
    },
    /// The pipeline file says nothing of what to redeploy.
    #[error(
        "{} has no [rollback] section, so Capstan does not know which stages' outputs to redeploy.\n  \
         add to the pipeline file:\n\n    [rollback]\n    reuse = [\"build\"]   # the stage(s) that produce what is deployed",
        file.display()
    )]
    NoReuse { file: PathBuf },
    #[error(
        "run {target} has no finished stage `{stage}` to reuse; roll back to another run with --to"
    )]
    NothingToReuse { target: String, stage: String },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The runs a rollback is about.
#[derive(Debug)]
pub struct Targets {
    /// The run being undone (none when the environment has no finished
    /// deploy run).
    pub undoes: Option<String>,
    /// The good run to redeploy.
    pub target: RunRow,
}

/// The run a rollback of `environment` undoes (`undoes`, else the newest
/// deploy run that is not running or paused) and the good run it redeploys
/// (`to`, else the newest succeeded run that started before the undone one).
pub fn targets(
    store: &dyn RunStore,
    environment: &str,
    to: Option<&str>,
    undoes: Option<&str>,
) -> Result<Targets, RollbackError> {
    let runs = store.runs(&RunFilter {
        environment: Some(environment.to_string()),
        limit: None,
    })?; // newest first
    let undone = match undoes {
        Some(id) => runs.iter().find(|r| r.id == id),
        None => runs.iter().find(|r| {
            r.kind == RunKind::Deploy
                && !matches!(r.status, RunState::Running | RunState::AwaitingApproval)
        }),
    };
    let target = match to {
        Some(to) => {
            let run = store.run(to)?;
            if run.environment != environment {
                return Err(RollbackError::OtherEnvironment {
                    id: run.id,
                    deployed: run.environment,
                    environment: environment.to_string(),
                });
            }
            if run.status != RunState::Succeeded || run.kind == RunKind::Drift {
                return Err(RollbackError::NotGood {
                    id: run.id,
                    state: run.status,
                });
            }
            run
        }
        None => runs
            .iter()
            .filter(|r| undone.is_none_or(|u| r.id < u.id))
            .find(|r| r.status == RunState::Succeeded && r.kind != RunKind::Drift)
            .cloned()
            .ok_or_else(|| RollbackError::NoGoodRun {
                environment: environment.to_string(),
                before: undone.map(|u| u.id.clone()),
            })?,
    };
    Ok(Targets {
        undoes: undone.map(|u| u.id.clone()),
        target,
    })
}

/// The stages whose outputs a rollback takes from the run it redeploys:
/// the `[rollback] reuse` stages and everything they need. `file` is the
/// pipeline file as named.
pub fn reused(pipeline: &Pipeline, file: &Path) -> Result<Vec<String>, RollbackError> {
    let reuse = &pipeline.rollback_reuse;
    if reuse.is_empty() {
        return Err(RollbackError::NoReuse {
            file: file.to_path_buf(),
        });
    }
    Ok(pipeline
        .stages
        .keys()
        .filter(|name| {
            reuse.contains(name)
                || reuse.iter().any(|u| {
                    pipeline
                        .stages
                        .get(u)
                        .is_some_and(|s| s.upstream.contains(name.as_str()))
                })
        })
        .cloned()
        .collect())
}

/// The `reused` stages as the target run recorded them (`rows`: its stage
/// attempts), each to be kept by the rollback run; every one must have
/// finished there.
pub fn reuse(
    target: &RunRow,
    rows: Vec<StageRow>,
    reused: &[String],
) -> Result<Vec<StageRecord>, RollbackError> {
    let rows = latest_attempts(rows);
    reused
        .iter()
        .map(|name| {
            let Some(row) = rows
                .iter()
                .find(|s| &s.name == name && s.status.is_finished())
            else {
                return Err(RollbackError::NothingToReuse {
                    target: target.id.clone(),
                    stage: name.clone(),
                });
            };
            let mut record = StageRecord::finished(row.clone(), &target.run_dir);
            if let StageStatus::Succeeded { summary, .. } = &mut record.status {
                *summary = format!("reused from run {}: {summary}", target.id);
            }
            Ok(record)
        })
        .collect()
}

/// The stage whose failure rolls `record` back (`on_failure =
/// "rollback"`), if the run failed in one.
pub fn rolls_back<'a>(record: &'a RunRecord, pipeline: &Pipeline) -> Option<&'a StageRecord> {
    if record.status != RunState::Failed {
        return None;
    }
    record.stages.iter().find(|s| {
        matches!(s.status, StageStatus::Failed { .. })
            && pipeline
                .stages
                .get(&s.name)
                .is_some_and(|stage| stage.on_failure == OnFailure::Rollback)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::run::testing::{PIPELINE, Runs, attempt, pipeline};
    use crate::store::StageState;

    #[test]
    fn a_rollback_undoes_the_newest_deploy_and_redeploys_the_good_run_before_it() {
        let runs = Runs::new();
        let s = runs.store.as_ref();
        let deploy = |id, second, state| runs.run_at(id, "prod", RunKind::Deploy, second, state);
        deploy("20261126-100001-aaaa", 1, RunState::Succeeded);
        deploy("20261126-100002-bbbb", 2, RunState::Succeeded);
        deploy("20261126-100003-cccc", 3, RunState::Failed);
        runs.run_at(
            "20261126-100004-dddd",
            "prod",
            RunKind::Rollback,
            4,
            RunState::Succeeded,
        );
        // Still deciding: not what is undone.
        deploy("20261126-100005-eeee", 5, RunState::AwaitingApproval);
        runs.run_at(
            "20261126-100006-ffff",
            "dev",
            RunKind::Deploy,
            6,
            RunState::Succeeded,
        );

        let pick = |to, undoes| targets(s, "prod", to, undoes).map(|t| (t.undoes, t.target.id));
        let ids =
            |undoes: Option<&str>, target: &str| (undoes.map(str::to_string), target.to_string());
        assert_eq!(
            pick(None, None).unwrap(),
            ids(Some("20261126-100003-cccc"), "20261126-100002-bbbb")
        );
        assert_eq!(
            pick(None, Some("20261126-100002-bbbb")).unwrap(),
            ids(Some("20261126-100002-bbbb"), "20261126-100001-aaaa")
        );
        assert_eq!(
            pick(Some("aaaa"), None).unwrap(),
            ids(Some("20261126-100003-cccc"), "20261126-100001-aaaa"),
            "--to takes a run id as people type it"
        );

        let refused = |to, undoes| pick(to, undoes).unwrap_err().to_string();
        assert_eq!(
            refused(None, Some("20261126-100001-aaaa")),
            "no good run of `prod` before run 20261126-100001-aaaa to roll back to; name one with --to"
        );
        assert_eq!(
            refused(Some("cccc"), None),
            "run 20261126-100003-cccc is failed, not a good run to roll back to"
        );
        assert_eq!(
            refused(Some("ffff"), None),
            "run 20261126-100006-ffff deployed to `dev`, not `prod`"
        );
        assert!(matches!(
            pick(Some("zzzz"), None),
            Err(RollbackError::Store(e)) if e.is_unknown_run()
        ));
        assert_eq!(
            targets(s, "staging", None, None).unwrap_err().to_string(),
            "no good run of `staging` before now to roll back to; name one with --to"
        );
    }

    #[test]
    fn the_reused_stages_and_what_they_need_come_from_the_target() {
        let (_p, reusing_build) = pipeline(PIPELINE);
        let file = Path::new("pipeline.toml");
        assert_eq!(reused(&reusing_build, file).unwrap(), ["build"]);
        let (_p, reusing_plan) =
            pipeline(&PIPELINE.replace(r#"reuse = ["build"]"#, r#"reuse = ["plan"]"#));
        assert_eq!(reused(&reusing_plan, file).unwrap(), ["build", "plan"]);
        let without = PIPELINE
            .replace("[rollback]\nreuse = [\"build\"]", "")
            .replace("on_failure = \"rollback\"", "");
        let (_p, without) = pipeline(&without);
        let e = reused(&without, file).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("pipeline.toml has no [rollback] section"),
            "{e}"
        );

        let target = Runs::new().run("good", RunState::Succeeded);
        let rows = vec![
            attempt("build", 1, StageState::Failed),
            attempt("build", 2, StageState::Succeeded),
            attempt("plan", 1, StageState::Succeeded),
        ];
        let kept = reuse(&target, rows.clone(), &["build".into(), "plan".into()]).unwrap();
        let summaries: Vec<String> = kept
            .iter()
            .map(|r| match &r.status {
                StageStatus::Succeeded { summary, .. } => summary.clone(),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(
            summaries,
            [
                "reused from run good: build succeeded",
                "reused from run good: plan succeeded"
            ]
        );
        assert_eq!(
            reuse(&target, rows[..1].to_vec(), &["build".into()])
                .unwrap_err()
                .to_string(),
            "run good has no finished stage `build` to reuse; roll back to another run with --to"
        );
    }

    #[test]
    fn a_failed_stage_that_rolls_back_on_failure_starts_a_rollback() {
        let (_p, pipeline) = pipeline(PIPELINE);
        let stage = |name: &str, status| StageRecord {
            name: name.into(),
            plugin: "x".into(),
            status,
            started: None,
            duration_ms: None,
            log: String::new(),
        };
        let failed = || StageStatus::Failed {
            reason: "no".into(),
        };
        let record = |status, stages| RunRecord {
            run_id: "r".into(),
            pipeline: "t".into(),
            pipeline_file: "pipeline.toml".into(),
            pipeline_digest: "d".into(),
            environment: "prod".into(),
            author: "alice".into(),
            status,
            started: "t".into(),
            duration_ms: 0,
            plugins: vec![],
            stages,
        };
        let apply_failed = record(RunState::Failed, vec![stage("apply", failed())]);
        assert_eq!(
            rolls_back(&apply_failed, &pipeline).map(|s| s.name.as_str()),
            Some("apply")
        );
        // plan does not roll back on failure.
        let plan_failed = record(RunState::Failed, vec![stage("plan", failed())]);
        assert!(rolls_back(&plan_failed, &pipeline).is_none());
        // A rejected run failed at the gate, not in apply.
        let rejected = record(RunState::Rejected, vec![stage("apply", failed())]);
        assert!(rolls_back(&rejected, &pipeline).is_none());
    }
}
