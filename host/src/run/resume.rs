//! Continuing a run (`capstan resume`): whether it may continue, which of
//! its stages keep their outcome, and which programs of an interrupted
//! attempt must end before that stage runs again.

use std::time::{Duration, Instant};

use super::StageRecord;
use crate::caps::exec::cgroup;
use crate::pipeline::Pipeline;
use crate::store::owner::Liveness;
use crate::store::{
    AuditKind, AuditRow, Owner, RunRow, RunState, StageRow, StageState, latest_attempts,
};
use crate::text::inline;

/// How long processes left in a run's cgroups get to die after SIGKILL.
const AFTER_KILL: Duration = Duration::from_secs(5);

/// How long to wait for a left-over program of a stage the pipeline no
/// longer has (it has no timeout to go by).
const UNKNOWN_STAGE_WAIT: Duration = Duration::from_secs(600);

/// Why a run may not continue.
#[derive(Debug, thiserror::Error)]
pub enum ResumeError {
    #[error("run {id} is running ({owner}); it cannot be resumed twice")]
    Running { id: String, owner: Owner },
    #[error("run {id} {}; start a new run instead", ended(*state))]
    Ended { id: String, state: RunState },
    #[error(
        "run {id}'s directory {dir} is not on this host (it was started on {host}). A run continues where its \
         directory is (plan files, logs, its audit log): resume it on {host}, or give every host the runs on a \
         shared volume mounted at the same path"
    )]
    DirElsewhere {
        id: String,
        dir: String,
        host: String,
    },
    #[error(
        "the pipeline file {file} changed since run {id} started (sha256 {then} then, {now} now). A resumed run \
         runs the pipeline it was planned and approved with: restore the file, or start a new run."
    )]
    PipelineChanged {
        file: String,
        id: String,
        then: String,
        now: String,
    },
    #[error(
        "plugin `{name}` changed since run {id} started (sha256 {then} then, {} now); \
         restore it, or start a new run",
        now.as_deref().unwrap_or("missing")
    )]
    PluginChanged {
        name: String,
        id: String,
        then: String,
        /// `None`: the pipeline no longer loads it.
        now: Option<String>,
    },
    #[error(
        "`{}` ({}), started by the interrupted attempt of stage `{}`, still runs after {}; \
         let it finish or stop it, then resume again",
        inline(&.0.program), .0.child, .0.stage, humantime::format_duration(.0.limit)
    )]
    StillRunning(Box<Leftover>),
    #[error(
        "`{}` ({}), started by the interrupted attempt of stage `{}` on host {}, may still run there, and this \
         host cannot see it. If that host is lost for good (or the program was stopped), release the run's lock \
         with `capstan unlock --env <environment> --force --reason \"…\"`, then resume again",
        inline(&.0.program), .0.child, .0.stage, .0.child.host
    )]
    Elsewhere(Box<Leftover>),
    #[error(
        "processes that programs of run {id} started still run after SIGKILL ({}); \
         stop them, then resume again",
        pids.iter().map(|p| format!("pid {p}")).collect::<Vec<_>>().join(", ")
    )]
    DescendantsLeft { id: String, pids: Vec<i32> },
}

fn ended(state: RunState) -> &'static str {
    match state {
        RunState::Succeeded => "already succeeded",
        RunState::Rejected => "was rejected",
        _ => "was cancelled",
    }
}

/// A run continues in its own directory: it must be reachable from here.
pub fn dir_here(run: &RunRow) -> Result<(), ResumeError> {
    if std::path::Path::new(&run.run_dir).is_dir() {
        return Ok(());
    }
    Err(ResumeError::DirElsewhere {
        id: run.id.clone(),
        dir: run.run_dir.clone(),
        host: run.owner.host.clone(),
    })
}

/// A paused, interrupted or failed run may continue; a running one is
/// someone else's, and an ended one is over.
pub fn may_resume(run: &RunRow) -> Result<(), ResumeError> {
    match run.status {
        RunState::AwaitingApproval | RunState::Interrupted | RunState::Failed => Ok(()),
        RunState::Running => Err(ResumeError::Running {
            id: run.id.clone(),
            owner: run.owner.clone(),
        }),
        state @ (RunState::Succeeded | RunState::Rejected | RunState::Cancelled) => {
            Err(ResumeError::Ended {
                id: run.id.clone(),
                state,
            })
        }
    }
}

/// A resumed run runs the pipeline file it was planned and approved with.
pub fn same_pipeline(run: &RunRow, pipeline: &Pipeline) -> Result<(), ResumeError> {
    if pipeline.digest == run.pipeline_digest {
        return Ok(());
    }
    Err(ResumeError::PipelineChanged {
        file: run.pipeline_file.clone(),
        id: run.id.clone(),
        then: run.pipeline_digest.clone(),
        now: pipeline.digest.clone(),
    })
}

/// The plugins must be the ones the run started with: an approved plan is
/// applied by the code that was reviewed. `now` is a plugin's sha256 as
/// loaded now.
pub fn same_plugins<'a>(
    run: &RunRow,
    now: impl Fn(&str) -> Option<&'a str>,
) -> Result<(), ResumeError> {
    for p in run.plugins.as_array().into_iter().flatten() {
        let (Some(name), Some(then)) = (p["name"].as_str(), p["sha256"].as_str()) else {
            continue;
        };
        let now = now(name);
        if now != Some(then) {
            return Err(ResumeError::PluginChanged {
                name: name.to_string(),
                id: run.id.clone(),
                then: then.to_string(),
                now: now.map(str::to_string),
            });
        }
    }
    Ok(())
}

/// What a resumed run starts from.
#[derive(Debug)]
pub struct Plan {
    /// Stages that keep their recorded outcome and do not run again (a
    /// finished apply never runs twice).
    pub keep: Vec<StageRecord>,
    /// Stages whose last attempt was interrupted: programs it started may
    /// still run (see [`leftovers`]).
    pub interrupted: Vec<String>,
}

/// Plan the resumption of `run` from its recorded stage attempts: the
/// latest attempt of each stage that finished is kept, unless it is `from`
/// or comes after it (`--from`: run it and what follows again), or it runs
/// whatever happened before it (`run_if` failure or always).
pub fn plan(run: &RunRow, rows: Vec<StageRow>, pipeline: &Pipeline, from: Option<&str>) -> Plan {
    let rerun = |name: &str| {
        from.is_some_and(|from| {
            name == from
                || pipeline
                    .stages
                    .get(name)
                    .is_some_and(|s| s.upstream.contains(from))
        })
    };
    let rows = latest_attempts(rows);
    let interrupted = rows
        .iter()
        .filter(|r| r.status == StageState::Interrupted)
        .map(|r| r.name.clone())
        .collect();
    let keep = rows
        .into_iter()
        .filter(|r| r.status.is_finished() && !rerun(&r.name))
        // A stage that reports on the run (`run_if` failure or always, a
        // notifier) told how things stood then; it runs again, after the
        // stages that now run, and says how they stand now.
        .filter(|r| {
            pipeline
                .stages
                .get(&r.name)
                .is_some_and(|s| s.run_if == crate::pipeline::RunIf::Success)
        })
        .map(|r| StageRecord::finished(r, &run.run_dir))
        .collect();
    Plan { keep, interrupted }
}

/// A program an interrupted attempt started that outlived the host that
/// was killed (programs finish their work rather than stop halfway).
#[derive(Debug, Clone)]
pub struct Leftover {
    pub stage: String,
    pub program: String,
    pub child: Owner,
    /// How long to wait for it: its stage's timeout.
    pub limit: Duration,
}

/// The programs the `interrupted` stages started (their `exec-started`
/// audit events) that still run, or may: each must end before its stage
/// runs again, so that it never runs twice at once. A program whose exit
/// was recorded has ended. One started on another host cannot be watched
/// from here: it counts until an operator vouched that its host is lost
/// (`forced`: the run's lock was released with `capstan unlock --force`).
pub fn leftovers(
    events: &[AuditRow],
    interrupted: &[String],
    pipeline: &Pipeline,
    forced: bool,
) -> Vec<Leftover> {
    let mut open: Vec<Leftover> = Vec::new();
    for e in events.iter().filter(|e| interrupted.contains(&e.stage)) {
        if let Some((program, child)) = e.started_program() {
            open.push(Leftover {
                stage: e.stage.clone(),
                program,
                child,
                limit: pipeline
                    .stages
                    .get(&e.stage)
                    .map_or(UNKNOWN_STAGE_WAIT, |s| s.timeout),
            });
        } else if e.capability == AuditKind::ExecExit {
            let pid = e.detail["pid"].as_u64();
            if let Some(i) = open
                .iter()
                .position(|l| l.stage == e.stage && pid.is_none_or(|p| p == l.child.pid as u64))
            {
                open.remove(i);
            }
        }
    }
    open.retain(|l| match l.child.liveness() {
        Liveness::Alive => true,
        Liveness::Dead => false,
        Liveness::Elsewhere => !forced,
    });
    open
}

impl Leftover {
    /// Wait until the program has ended, up to its stage's timeout.
    pub async fn wait(&self) -> Result<(), ResumeError> {
        if self.child.liveness() == Liveness::Elsewhere {
            return Err(ResumeError::Elsewhere(Box::new(self.clone())));
        }
        let deadline = Instant::now() + self.limit;
        while self.child.is_alive() {
            if Instant::now() >= deadline {
                return Err(ResumeError::StillRunning(Box::new(self.clone())));
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        Ok(())
    }
}

/// End what is left in `run`'s cgroups once its left-over programs have
/// ended: processes they started (a `setsid` daemon, say) that the killed
/// host could not end at the end of their stage. They end before any stage
/// runs again, so that no stage's processes run twice at once.
pub async fn end_descendants(run: &str) -> Result<(), ResumeError> {
    let deadline = Instant::now() + AFTER_KILL;
    loop {
        // Also removes the run's cgroups that are empty.
        cgroup::kill_run(run);
        let pids = cgroup::run_members(run);
        if pids.is_empty() {
            cgroup::kill_run(run);
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(ResumeError::DescendantsLeft {
                id: run.to_string(),
                pids,
            });
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::run::stage::StageStatus;
    use crate::run::testing::{PIPELINE, Runs, attempt, exec_started, pipeline, sleeper};
    use crate::store::AuditKind;

    #[test]
    fn a_run_resumes_only_where_its_directory_is() {
        let runs = Runs::new();
        let run = runs.run("r", RunState::Interrupted);
        assert!(dir_here(&run).is_ok());
        std::fs::remove_dir_all(&run.run_dir).unwrap();
        let refused = dir_here(&run).unwrap_err().to_string();
        assert!(
            refused.contains(&run.run_dir) && refused.contains("shared volume"),
            "{refused}"
        );
    }

    #[test]
    fn paused_interrupted_and_failed_runs_resume() {
        let runs = Runs::new();
        for (i, (state, refused)) in [
            (RunState::AwaitingApproval, None),
            (RunState::Interrupted, None),
            (RunState::Failed, None),
            (RunState::Running, Some("is running (pid ")),
            (
                RunState::Succeeded,
                Some("already succeeded; start a new run instead"),
            ),
            (
                RunState::Rejected,
                Some("was rejected; start a new run instead"),
            ),
            (
                RunState::Cancelled,
                Some("was cancelled; start a new run instead"),
            ),
        ]
        .into_iter()
        .enumerate()
        {
            let id = format!("r{i}");
            match (may_resume(&runs.run(&id, state)), refused) {
                (Ok(()), None) => {}
                (Err(e), Some(why)) => {
                    let text = e.to_string();
                    assert!(text.starts_with(&format!("run {id} ")), "{text}");
                    assert!(text.contains(why), "{state:?}: {text}");
                }
                (got, want) => panic!("{state:?}: {got:?}, wanted a refusal: {want:?}"),
            }
        }
    }

    #[test]
    fn finished_stages_keep_their_outcome_and_the_rest_runs_again() {
        let (_p, pipeline) = pipeline(PIPELINE);
        let runs = Runs::new();
        let run = runs.run("r", RunState::Interrupted);
        let rows = || {
            vec![
                attempt("build", 1, StageState::Reused),
                attempt("plan", 1, StageState::Failed),
                attempt("plan", 2, StageState::Succeeded),
                attempt("apply", 3, StageState::Interrupted),
                attempt("smoke", 3, StageState::Skipped),
                // A stage the pipeline no longer has is not kept.
                attempt("gone", 1, StageState::Succeeded),
            ]
        };
        let names = |plan: &Plan| plan.keep.iter().map(|r| r.name.clone()).collect::<Vec<_>>();

        let all = plan(&run, rows(), &pipeline, None);
        assert_eq!(names(&all), ["build", "plan"]);
        assert_eq!(all.interrupted, ["apply"]);
        let kept = &all.keep[1];
        assert_eq!(kept.log, format!("{}/logs/plan.log", run.run_dir));
        match &kept.status {
            StageStatus::Succeeded {
                summary, outputs, ..
            } => {
                assert_eq!(summary, "plan succeeded", "the latest attempt's");
                assert_eq!(outputs["from"], "plan");
            }
            other => panic!("{other:?}"),
        }

        // --from plan: plan and what comes after it run again.
        assert_eq!(
            names(&plan(&run, rows(), &pipeline, Some("plan"))),
            ["build"]
        );
        assert!(names(&plan(&run, rows(), &pipeline, Some("build"))).is_empty());
    }

    #[test]
    fn stages_that_report_on_the_run_run_again() {
        let text = format!(
            "{PIPELINE}\n[stages.notify]\nplugin = \"x\"\nneeds = [\"smoke\"]\nrun_if = \"always\"\n\
             [stages.alarm]\nplugin = \"x\"\nneeds = [\"smoke\"]\nrun_if = \"failure\"\n\
             [stages.report]\nplugin = \"x\"\nneeds = [\"plan\"]\n"
        );
        let (_p, pipeline) = pipeline(&text);
        let run = Runs::new().run("r", RunState::AwaitingApproval);
        // Paused after plan: both notifiers told of the pause.
        let rows = vec![
            attempt("build", 1, StageState::Succeeded),
            attempt("plan", 1, StageState::Succeeded),
            attempt("report", 1, StageState::Succeeded),
            attempt("apply", 1, StageState::AwaitingApproval),
            attempt("smoke", 1, StageState::Skipped),
            attempt("notify", 1, StageState::Succeeded),
            attempt("alarm", 1, StageState::Succeeded),
        ];
        let kept: Vec<String> = plan(&run, rows, &pipeline, None)
            .keep
            .into_iter()
            .map(|r| r.name)
            .collect();
        assert_eq!(kept, ["build", "plan", "report"]);
    }

    #[test]
    fn a_changed_pipeline_or_plugin_is_refused() {
        let (_p, pipeline) = pipeline(PIPELINE);
        let mut run = Runs::new().run("r", RunState::Failed);
        let changed = same_pipeline(&run, &pipeline).unwrap_err().to_string();
        assert!(
            changed.starts_with(
                "the pipeline file /p/pipeline.toml changed since run r started (sha256 d then, "
            ),
            "{changed}"
        );
        run.pipeline_digest = pipeline.digest.clone();
        same_pipeline(&run, &pipeline).unwrap();

        run.plugins =
            serde_json::json!([{ "name": "x", "sha256": "aaa" }, { "name": "y", "sha256": "bbb" }]);
        let now = |name: &str| match name {
            "x" => Some("aaa"),
            _ => None,
        };
        assert_eq!(
            same_plugins(&run, now).unwrap_err().to_string(),
            "plugin `y` changed since run r started (sha256 bbb then, missing now); restore it, or start a new run"
        );
        same_plugins(&run, |_| Some("aaa")).unwrap_err();
        run.plugins = serde_json::json!([{ "name": "x", "sha256": "aaa" }]);
        same_plugins(&run, now).unwrap();
    }

    #[tokio::test]
    async fn programs_of_interrupted_attempts_that_still_run_are_waited_for() {
        let (_p, pipeline) = pipeline(PIPELINE);
        let (mut sleeper, live, dead) = sleeper();
        let program = "terraform\x1b[2J";
        let events = [
            exec_started("apply", program, &dead),
            exec_started("plan", program, &live),
            exec_started("apply", program, &live),
            AuditRow {
                capability: AuditKind::Exec,
                ..exec_started("apply", program, &live)
            },
        ];
        let left = leftovers(&events, &["apply".to_string()], &pipeline, false);
        assert_eq!(left.len(), 1, "{left:?}");
        assert_eq!((left[0].stage.as_str(), &left[0].child), ("apply", &live));
        assert_eq!(
            left[0].limit,
            Duration::from_secs(7 * 60),
            "the stage's timeout"
        );

        let still = Leftover {
            limit: Duration::ZERO,
            ..left[0].clone()
        };
        assert_eq!(
            still.wait().await.unwrap_err().to_string(),
            format!(
                "`terraform\\x1b[2J` ({live}), started by the interrupted attempt of stage `apply`, still runs \
                 after 0s; let it finish or stop it, then resume again"
            )
        );
        sleeper.kill().unwrap();
        sleeper.wait().unwrap();
        left[0].wait().await.unwrap();
    }

    #[tokio::test]
    async fn processes_left_in_the_runs_cgroups_end_before_it_resumes() {
        let id = format!("resume-{}", std::process::id());
        // Started by a program of the killed host's stage, outliving both.
        let (cg, mut left) = cgroup::sleep_in(&id, "apply");
        std::mem::forget(cg);
        let owner = Owner::of(left.id()).unwrap();
        assert_eq!(cgroup::run_members(&id), [left.id() as i32]);
        end_descendants(&id).await.unwrap();
        assert!(!owner.is_alive());
        assert!(cgroup::run_members(&id).is_empty());
        left.wait().unwrap();
    }
}
