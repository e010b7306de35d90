//! What the tests of a run's lifecycle rules start from: a pipeline, a run
//! store with runs in it, recorded stage attempts.

use std::sync::Arc;

use serde_json::json;

use crate::pipeline::Pipeline;
use crate::store::{
    AuditKind, AuditRow, NewRun, Owner, RunKind, RunRow, RunState, RunStore, SqliteStore, StageRow,
    StageState,
};

/// build → plan → apply → smoke; apply rolls back on failure, a rollback
/// reuses build.
pub const PIPELINE: &str = r#"
[pipeline]
name = "t"
environments = ["dev", "production"]

[plugins.x]
path = "x.wasm"

[stages.build]
plugin = "x"

[stages.plan]
plugin = "x"
needs = ["build"]

[stages.apply]
plugin = "x"
needs = ["plan"]
timeout = "7m"
on_failure = "rollback"

[stages.smoke]
plugin = "x"
needs = ["apply"]

[rollback]
reuse = ["build"]
"#;

/// `text` as a validated pipeline file (its plugin an empty file).
pub fn pipeline(text: &str) -> (tempfile::TempDir, Pipeline) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("x.wasm"), b"").unwrap();
    let file = dir.path().join("pipeline.toml");
    std::fs::write(&file, text).unwrap();
    let pipeline = Pipeline::load(&file).unwrap_or_else(|d| panic!("{d}"));
    (dir, pipeline)
}

/// A run store, and a directory for the run directories of its runs.
pub struct Runs {
    pub dir: tempfile::TempDir,
    pub store: Arc<dyn RunStore>,
}

impl Runs {
    pub fn new() -> Runs {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("capstan.db")).unwrap();
        Runs {
            dir,
            store: Arc::new(store),
        }
    }

    /// Record deploy run `id` of `dev` as `state`.
    pub fn run(&self, id: &str, state: RunState) -> RunRow {
        self.run_at(id, "dev", RunKind::Deploy, 0, state)
    }

    /// Record run `id` of `environment`, started at second `second` of
    /// the day, as `state`, with a run directory.
    pub fn run_at(
        &self,
        id: &str,
        environment: &str,
        kind: RunKind,
        second: u32,
        state: RunState,
    ) -> RunRow {
        let run_dir = self.dir.path().join(id);
        std::fs::create_dir_all(&run_dir).unwrap();
        let new = NewRun {
            id: id.into(),
            pipeline: "t".into(),
            pipeline_file: "/p/pipeline.toml".into(),
            pipeline_digest: "d".into(),
            environment: environment.into(),
            author: "alice".into(),
            kind,
            target: None,
            undoes: None,
            only: vec![],
            run_dir: run_dir.display().to_string(),
            started: format!("2026-11-26T10:00:{second:02}Z"),
            plugins: json!([]),
            approvers: None,
            author_keys: Vec::new(),
        };
        // Recorded as another process would (the host that ran it): this
        // store did not run it, so its writes about it are not fenced.
        let host = SqliteStore::open(&self.dir.path().join("capstan.db")).unwrap();
        host.create_run(&new, &Owner::current()).unwrap();
        if state != RunState::Running {
            host.finish_run(id, state, "t", None).unwrap();
        }
        self.store.run(id).unwrap()
    }
}

/// A program that runs until it is killed, leading its own process group
/// as `caps::exec` starts them; with an owner naming it, and one naming a
/// process that is gone (its pid with another start time).
pub fn sleeper() -> (std::process::Child, Owner, Owner) {
    use std::os::unix::process::CommandExt;
    let child = std::process::Command::new("sleep")
        .arg("600")
        .process_group(0)
        .spawn()
        .unwrap();
    let live = Owner::of(child.id()).unwrap();
    let gone = Owner {
        start: live.start + 1,
        ..live.clone()
    };
    (child, live, gone)
}

/// The audit event of stage `stage` starting `program` as `child`.
pub fn exec_started(stage: &str, program: &str, child: &Owner) -> AuditRow {
    let mut detail = serde_json::to_value(child).unwrap();
    detail["program"] = program.into();
    AuditRow {
        time: "t".into(),
        stage: stage.into(),
        plugin: "x".into(),
        capability: AuditKind::ExecStarted,
        allowed: true,
        detail,
        reason: None,
    }
}

/// An ended attempt of stage `name`.
pub fn attempt(name: &str, attempt: u32, status: StageState) -> StageRow {
    StageRow {
        name: name.into(),
        attempt,
        plugin: "x".into(),
        status,
        message: format!("{name} {}", status.as_str()),
        outputs: json!({ "from": name }),
        artifacts: json!([]),
        report: None,
        started: Some(format!("2026-11-26T10:00:{attempt:02}Z")),
        ended: None,
        duration_ms: Some(1),
    }
}
