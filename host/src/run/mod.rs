//! Running a prepared pipeline: the run directory, the scheduler, and the
//! record of what happened; and the rules of a run's life after it started
//! (resuming, rolling back, cancelling, answering its approval requests).

pub mod answer;
pub mod cancel;
pub mod changes;
pub mod config;
pub mod events;
mod gate;
pub mod github;
pub mod host_lock;
pub mod lock;
pub mod prepare;
pub mod progress;
pub mod record;
pub mod resume;
pub mod rollback;
pub mod run_if;
pub mod rundir;
pub mod stage;
pub mod stop;
#[cfg(test)]
mod testing;
pub mod verify;

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Instant;

use serde_json::{Map, Value};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::bindings::capstan::plugin::types as wit;
use crate::caps::audit::AuditLog;
use crate::caps::fs::GrantDir;
use crate::caps::secret::Redactor;
use crate::fault;
use crate::pipeline::interpolate::Scope;
use crate::store::{AuditKind, Decision, RunState, RunStore, StageRow, StageState, StoreError};
pub use prepare::{Prepared, prepare};
use progress::Progress;
use record::verified;
pub use record::{PluginRecord, RunRecord, StageRecord, plugin_records};
pub use rundir::RunDir;
use stage::{StageRun, StageStatus, path_text};
use stop::StopRequest;

/// How to run.
#[derive(Debug, Clone)]
pub struct RunOptions {
    pub environment: String,
    /// Run only these stages (and what they need); empty: all.
    pub only: Vec<String>,
    /// Echo stage logs to stderr as they come.
    pub echo: bool,
    /// `--force`: stages that run whatever changed (`${stage.forced}` is
    /// true in their `with`).
    pub forced: Vec<String>,
    /// Who started the run (may not approve it).
    pub author: String,
    /// Ctrl-C, SIGTERM and `capstan cancel` stop the run through this.
    pub stop: stop::Stop,
}

/// Why a run could not be recorded (the stages' own failures are not errors).
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    #[error("cannot write the run directory {dir}: {source}")]
    RunDir {
        dir: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The stages to run: `only` and everything they need, in this environment.
pub fn selected(prepared: &Prepared, opts: &RunOptions) -> BTreeSet<String> {
    let stages = &prepared.pipeline.stages;
    let mut chosen: BTreeSet<String> = if opts.only.is_empty() {
        stages.keys().cloned().collect()
    } else {
        opts.only
            .iter()
            .flat_map(|s| {
                stages[s]
                    .upstream
                    .iter()
                    .map(|n| n.to_string())
                    .chain([s.clone()])
            })
            .collect()
    };
    chosen.retain(|s| stages[s].runs_in(&opts.environment));
    chosen
}

/// Run the prepared pipeline in `dir`; every stage's outcome is recorded
/// there and in the run store as soon as it is known. Stages in `done` (a
/// resumed run's finished stages, a rollback's reused ones) keep their
/// outcome and outputs and do not run.
pub async fn execute(
    prepared: Arc<Prepared>,
    dir: &RunDir,
    opts: &RunOptions,
    store: &Arc<dyn RunStore>,
    done: Vec<StageRecord>,
) -> Result<RunRecord, ExecError> {
    let io = |source| ExecError::RunDir {
        dir: dir.path.display().to_string(),
        source,
    };
    let started_at = jiff::Timestamp::now();
    let started = Instant::now();
    // Values become known as stages resolve their secrets (and plugins mark
    // values sensitive); every writer of the run masks what is known.
    let redactor = Redactor::new();
    let audit = AuditLog::open(&dir.audit(), store.clone(), &dir.id)
        .map_err(io)?
        .redacting(redactor.clone());
    // Secret files a host killed mid-stage left behind go before anything
    // runs (their values were never anywhere else).
    remove_secret_files(dir).map_err(io)?;
    let pipeline = &prepared.pipeline;
    let chosen = selected(&prepared, opts);
    let mut records: HashMap<String, StageRecord> = HashMap::new();
    let mut ended_dirs = EndedDirs::default();
    let mut outputs: HashMap<String, Map<String, Value>> = HashMap::new();
    for record in done {
        if let StageStatus::Succeeded { outputs: o, .. } = &record.status {
            outputs.insert(record.name.clone(), o.clone());
        }
        records.insert(record.name.clone(), record);
    }
    let progress = Progress::start(opts.echo);
    let semaphore = Arc::new(Semaphore::new(pipeline.concurrency));
    let mut ending: Option<tokio::task::JoinHandle<usize>> = None;
    let mut running = JoinSet::new();
    let mut pending: Vec<String> = pipeline
        .stages
        .keys()
        .filter(|s| !records.contains_key(*s))
        .cloned()
        .collect();
    let now = || jiff::Timestamp::now().to_string();
    // A write that finds the store's files removed or replaced stops the
    // run, and is made again in the store reopened as its files are now
    // (see `store::sqlite::watch`).
    let record_end = |attempt: Option<u32>, row: &StageRow| {
        let written = store.end_stage(&dir.id, attempt, row).or_else(|e| {
            after_fault(e, store.as_ref(), opts, || {
                store.end_stage(&dir.id, attempt, row)
            })
        });
        tolerated(written, opts, &format!("the end of stage `{}`", row.name))
    };

    let record = |name: &str,
                  status: StageStatus,
                  started: Option<String>,
                  duration_ms: Option<u64>| StageRecord {
        name: name.to_string(),
        plugin: pipeline.stages[name].plugin.clone(),
        status,
        started,
        duration_ms,
        log: path_text(&dir.log(name)),
    };

    loop {
        // Decide every pending stage that can be decided now.
        let mut progressed = true;
        while progressed {
            progressed = false;
            // No stage starts in a store whose files were removed under it.
            if opts.stop.requested().is_none()
                && let Err(e) = store.check_health()
            {
                opts.stop.request(StopRequest::fault(&e));
            }
            let mut still = Vec::new();
            for name in pending.drain(..) {
                let stage = &pipeline.stages[&name];
                if let Some(request) = opts.stop.requested() {
                    let reason = match request.fault {
                        true => format!("not started: {}", request.stage_reason()),
                        false => format!(
                            "not started: the run was cancelled by {} ({})",
                            request.by, request.reason
                        ),
                    };
                    let r = record(&name, StageStatus::Cancelled { reason }, None, None);
                    record_end(None, &r.row(Some(now())))?;
                    records.insert(name.clone(), r);
                    progressed = true;
                    continue;
                }
                let skip = if !chosen.contains(&name) {
                    Some(if stage.runs_in(&opts.environment) {
                        "not selected by --only".to_string()
                    } else {
                        format!("does not run in environment `{}`", opts.environment)
                    })
                } else {
                    match run_if::decide(stage, &records) {
                        run_if::Decision::Run => None,
                        run_if::Decision::Wait => Some(String::new()),
                        run_if::Decision::Skip(reason) => Some(reason),
                    }
                };
                match skip {
                    Some(reason) if reason.is_empty() => still.push(name),
                    Some(reason) => {
                        let r = record(&name, StageStatus::Skipped { reason }, None, None);
                        record_end(None, &r.row(None))?;
                        records.insert(name.clone(), r);
                        progressed = true;
                    }
                    None => {
                        let run = match stage_run(
                            &prepared,
                            dir,
                            &audit,
                            opts,
                            store,
                            &outputs,
                            &records,
                            &name,
                            &progress,
                            &redactor,
                            &mut ended_dirs,
                        ) {
                            Ok(run) => run,
                            Err(reason) => {
                                let r = record(&name, StageStatus::Failed { reason }, None, None);
                                record_end(None, &r.row(Some(now())))?;
                                records.insert(name.clone(), r);
                                progressed = true;
                                continue;
                            }
                        };
                        let semaphore = semaphore.clone();
                        let store = store.clone();
                        let (run_id, plugin) = (dir.id.clone(), stage.plugin.clone());
                        running.spawn(async move {
                            let _permit = semaphore.acquire_owned().await.expect("semaphore open");
                            run.progress.started(&name);
                            let at = jiff::Timestamp::now().to_string();
                            let attempt = store.start_stage(&run_id, &name, &plugin, &at);
                            let t = Instant::now();
                            let status = match &attempt {
                                Ok(attempt) => {
                                    let attempt = *attempt;
                                    fault::point("stage-start", &name);
                                    let status = run.run(attempt).await;
                                    fault::point("stage-end", &name);
                                    status
                                }
                                Err(e) if e.is_replaced() => {
                                    let request = StopRequest::fault(e);
                                    run.stop.request(request.clone());
                                    StageStatus::Cancelled {
                                        reason: format!("not started: {}", request.stage_reason()),
                                    }
                                }
                                Err(e) => StageStatus::Failed {
                                    reason: format!("cannot record the stage's start: {e}"),
                                },
                            };
                            (
                                name,
                                status,
                                at,
                                t.elapsed().as_millis() as u64,
                                attempt.ok(),
                            )
                        });
                    }
                }
            }
            pending = still;
        }
        let done = tokio::select! {
            done = running.join_next() => done,
            _ = opts.stop.stopped(), if ending.is_none() => {
                // End every program of the run, whichever stage started it;
                // the stages see the same request and return.
                let stop = opts.stop.clone();
                ending = Some(tokio::spawn(async move { stop.end_programs().await }));
                continue;
            }
        };
        let Some(done) = done else {
            break;
        };
        let (name, status, at, ms, attempt) = done.expect("stage task panicked");
        if let StageStatus::Succeeded { outputs: o, .. } = &status {
            outputs.insert(name.clone(), o.clone());
        }
        let failed = matches!(status, StageStatus::Failed { .. });
        let line = line_for(&name, &status, ms);
        progress.finished(&name, &line);
        observe_end(pipeline, dir, opts, &name, &status, &line, ms);
        let r = record(&name, status, Some(at), Some(ms));
        if let Err(e) = record_end(attempt, &r.row(Some(now()))) {
            // The store will say the attempt was interrupted, and a retry
            // would go on in its work dir: the files of an attempt that
            // failed (a full disk) go aside now, a rename needing no space.
            if let (true, Some(n)) = (failed, attempt) {
                let _ = dir.set_aside(&name, n);
            }
            return Err(e.into());
        }
        records.insert(name.clone(), r);
        dir.write_outputs(&outputs, false).map_err(io)?;
    }

    progress.finish();
    remove_secret_files(dir).map_err(io)?;
    if let Some(request) = opts.stop.requested() {
        // Stages can end before the programs they started: wait for those
        // (started above, or now if the request came as the last stage ended).
        let stop = opts.stop.clone();
        let ending =
            ending.unwrap_or_else(|| tokio::spawn(async move { stop.end_programs().await }));
        let killed = ending.await.unwrap_or(0);
        let left = crate::caps::exec::tree::own_descendants().len();
        audit.record(
            "",
            "capstan",
            AuditKind::Run,
            true,
            serde_json::json!({
                "event": if request.fault { "stopped" } else { "cancelled" },
                "by": request.by,
                "reason": request.reason,
                "programs_killed": killed,
                "programs_left": left,
            }),
            None,
        );
        if killed > 0 {
            eprintln!(
                "[capstan] {killed} program(s) did not end on SIGTERM and were killed (SIGKILL)"
            );
        }
    }
    let stages: Vec<StageRecord> = pipeline
        .stages
        .keys()
        .filter_map(|n| records.remove(n))
        .collect();
    let has = |f: fn(&StageStatus) -> bool| stages.iter().any(|s| f(&s.status));
    let rejected = store
        .approvals(&dir.id)?
        .iter()
        .any(|a| a.decision == Decision::Rejected);
    let status = if let Some(request) = opts.stop.requested() {
        // Stopped for a fault of the store's: to be resumed once checked.
        if request.fault {
            RunState::Interrupted
        } else {
            RunState::Cancelled
        }
    } else if has(|s| matches!(s, StageStatus::Failed { .. })) {
        if rejected {
            RunState::Rejected
        } else {
            RunState::Failed
        }
    } else if has(|s| matches!(s, StageStatus::AwaitingApproval { .. })) {
        RunState::AwaitingApproval
    } else {
        RunState::Succeeded
    };
    let run = RunRecord {
        run_id: dir.id.clone(),
        pipeline: pipeline.name.clone(),
        pipeline_file: path_text(&pipeline.file),
        pipeline_digest: pipeline.digest.clone(),
        environment: opts.environment.clone(),
        author: opts.author.clone(),
        status,
        started: started_at.to_string(),
        duration_ms: started.elapsed().as_millis() as u64,
        plugins: plugin_records(&prepared),
        stages,
    };
    dir.write_outputs(&outputs, true).map_err(io)?;
    dir.write_record(&run).map_err(io)?;
    let verified = verified(pipeline, &run.stages);
    let finished = store
        .finish_run(&dir.id, status, &now(), verified)
        .or_else(|e| {
            after_fault(e, store.as_ref(), opts, || {
                store.finish_run(&dir.id, status, &now(), verified)
            })
        });
    tolerated(finished, opts, "how the run ended")?;
    Ok(run)
}

/// A store write failed with `e`: when the store's files were removed or
/// replaced (found by this write, or earlier by another, e.g. an audit
/// event's), stop the run, and make the write `again` if this one found it
/// (the store is reopened as its files are now).
fn after_fault(
    e: StoreError,
    store: &dyn RunStore,
    opts: &RunOptions,
    again: impl FnOnce() -> Result<(), StoreError>,
) -> Result<(), StoreError> {
    if let Err(fault) = store.check_health() {
        opts.stop.request(StopRequest::fault(fault));
    }
    if e.is_replaced() { again() } else { Err(e) }
}

/// A store write that failed after the run was stopped for a fault of the
/// store's: the run directory keeps what it would have recorded, and the
/// stop is reported at the end (the store may have lost the run's row).
fn tolerated(
    written: Result<(), StoreError>,
    opts: &RunOptions,
    what: &str,
) -> Result<(), StoreError> {
    match written {
        Err(e) if opts.stop.requested().is_some_and(|r| r.fault) => {
            eprintln!("[capstan] cannot record {what} in the run store: {e}");
            Ok(())
        }
        written => written,
    }
}

/// A stage's end for the event stream and GitHub Actions.
fn observe_end(
    pipeline: &crate::pipeline::Pipeline,
    dir: &RunDir,
    opts: &RunOptions,
    name: &str,
    status: &StageStatus,
    line: &str,
    ms: u64,
) {
    let (word, message) = match status {
        StageStatus::Succeeded { summary, .. } => ("succeeded", summary),
        StageStatus::Failed { reason } => ("failed", reason),
        StageStatus::Skipped { reason } => ("skipped", reason),
        StageStatus::AwaitingApproval { reason } => ("awaiting-approval", reason),
        StageStatus::Cancelled { reason } => ("cancelled", reason),
    };
    events::emit(events::Event::StageFinished {
        stage: name,
        status: word,
        message,
        duration_ms: ms,
    });
    if github::active() {
        let (line_no, col) = pipeline
            .source
            .line_col(&["stages", name], crate::pipeline::source::Part::Key);
        // The group's title is Capstan's words only; what the plugin said
        // is in the log below it.
        let icon = line.split(' ').next().unwrap_or_default();
        let title = format!(
            "{icon} {} ({word}, {:.1}s)",
            crate::text::inline(name),
            ms as f64 / 1000.0
        );
        github::stage_finished(&github::StageEnd {
            stage: name,
            line: &title,
            failed: matches!(status, StageStatus::Failed { .. }).then_some(message.as_str()),
            log: &dir.log(name),
            place: github::Place {
                file: pipeline.file.display().to_string(),
                line: Some(line_no),
                col: Some(col),
            },
            with_log: opts.echo,
        });
    }
}

/// Remove the run's secret files directory (each stage removes its own;
/// this clears what a host killed meanwhile left).
fn remove_secret_files(dir: &RunDir) -> std::io::Result<()> {
    match std::fs::remove_dir_all(crate::caps::secret::deliver::secrets_dir(&dir.path)) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// One line per finished stage, as it finishes.
fn line_for(name: &str, status: &StageStatus, ms: u64) -> String {
    let secs = ms as f64 / 1000.0;
    // Plugin text on one line, escaped: it can neither drive the terminal
    // nor start a line of its own that looks like another stage's.
    let text = |s: &str| crate::text::inline(s.trim_end()).into_owned();
    match status {
        StageStatus::Succeeded { summary, .. } => {
            format!("✓ {name} ({secs:.1}s): {}", text(summary))
        }
        StageStatus::Failed { reason } => format!("✗ {name} ({secs:.1}s): {}", text(reason)),
        StageStatus::Skipped { reason } => format!("- {name}: skipped, {}", text(reason)),
        StageStatus::AwaitingApproval { reason } => {
            format!("⏸ {name}: waiting for approval: {}", text(reason))
        }
        StageStatus::Cancelled { reason } => format!("■ {name} ({secs:.1}s): {}", text(reason)),
    }
}

/// The work dirs of stages that ended, opened once per run process: those
/// of a stage's upstream stages are final when it starts (they all ended),
/// and a stage deep in a long chain has hundreds, so opening and checking
/// each again for every stage would make a run quadratic in its stages.
#[derive(Default)]
struct EndedDirs {
    opened: HashMap<String, Option<GrantDir>>,
}

impl EndedDirs {
    /// `stage`'s latest work dir, if it has one.
    fn get(&mut self, dir: &RunDir, stage: &str) -> Result<Option<GrantDir>, String> {
        if let Some(opened) = self.opened.get(stage) {
            return Ok(opened.clone());
        }
        let path = dir.latest_dir(stage);
        let opened = match GrantDir::open(&path) {
            Ok(opened) => Some(opened),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => {
                return Err(format!(
                    "cannot open the work dir of upstream stage `{stage}` ({}): {e}",
                    path.display()
                ));
            }
        };
        self.opened.insert(stage.to_string(), opened.clone());
        Ok(opened)
    }
}

/// Build the stage's run: its work dir, and its `with` with every reference
/// resolved.
#[allow(clippy::too_many_arguments)]
fn stage_run(
    prepared: &Arc<Prepared>,
    dir: &RunDir,
    audit: &AuditLog,
    opts: &RunOptions,
    store: &Arc<dyn RunStore>,
    outputs: &HashMap<String, Map<String, Value>>,
    records: &HashMap<String, StageRecord>,
    name: &str,
    progress: &Progress,
    redactor: &Redactor,
    ended_dirs: &mut EndedDirs,
) -> Result<StageRun, String> {
    let pipeline = &prepared.pipeline;
    let stage = &pipeline.stages[name];
    // The last attempt failed: its files go aside (for a look), and this
    // one starts in an empty work dir, never from a file the failed one left
    // half-written. An interrupted attempt's stay: this one goes on from
    // them (see `rundir`).
    let last = store
        .last_attempt(&dir.id, name)
        .map_err(|e| format!("cannot read the stage's earlier attempts: {e}"))?;
    if let Some(last) = last.filter(|r| r.status == StageState::Failed) {
        dir.set_aside(name, last.attempt).map_err(|e| {
            format!(
                "cannot move the work dir of failed attempt {} aside: {e}",
                last.attempt
            )
        })?;
    }
    let work_dir = dir
        .work_dir(name)
        .map_err(|e| format!("cannot create the stage work dir: {e}"))?;
    let env = |n: &str| std::env::var(n).ok();
    let ended_once = std::cell::OnceCell::new();
    let ended = || ended_once.get_or_init(|| run_if::ended(pipeline, stage, records));
    let scope = Scope {
        ended: &ended,
        run_status: run_if::so_far(stage, records).as_str(),
        outputs,
        env: &env,
        run_id: &dir.id,
        environment: &opts.environment,
        pipeline_dir: &path_text(&pipeline.dir),
        work_dir: &path_text(&work_dir),
        forced: opts.forced.iter().any(|f| f == name),
    };
    let config = scope
        .resolve(&stage.with)
        .map_err(|e| format!("cannot resolve `with`: {e}"))?;
    if let Some(plugin) = prepared.plugins.get(&stage.plugin) {
        config::check_resolved(pipeline, stage, plugin, &config)?;
    }
    let image_digest = match &stage.image_digest {
        Some(image) => match scope.resolve(&Value::String(image.clone())) {
            Ok(Value::String(s)) if !s.is_empty() => Some(s),
            Ok(other) => {
                return Err(format!(
                    "`image_digest` resolved to {other}, not a digest: give the image's digest, e.g. \
                     \"${{stages.build.outputs.inputs_digest}}\""
                ));
            }
            Err(e) => return Err(format!("cannot resolve `image_digest`: {e}")),
        },
        None => None,
    };
    // A run's approvals are checked against the keys it recorded when it
    // started, not the file as it is now.
    let (signers, author_keys) = if stage.grants.approval || stage.requires_approval.is_some() {
        let run = store
            .run(&dir.id)
            .map_err(|e| format!("cannot read the run's approvers: {e}"))?;
        let trust = crate::caps::approval::Trust::of_run(&run)?;
        (trust.signers, trust.author_keys)
    } else {
        (None, Vec::new())
    };
    let upstream: Vec<wit::Upstream> = stage
        .needs
        .iter()
        .map(|n| wit::Upstream {
            stage: n.clone(),
            outputs: Value::Object(outputs.get(n).cloned().unwrap_or_default()).to_string(),
            work_dir: path_text(&dir.latest_dir(n)),
        })
        .collect();
    let mut upstream_dirs = Vec::with_capacity(stage.upstream.len());
    for n in stage.upstream.iter() {
        upstream_dirs.extend(ended_dirs.get(dir, n)?);
    }
    Ok(StageRun {
        prepared: prepared.clone(),
        name: name.to_string(),
        context: wit::StageContext {
            run_id: dir.id.clone(),
            pipeline: pipeline.name.clone(),
            stage: name.to_string(),
            environment: opts.environment.clone(),
            config: config.to_string(),
            upstream,
            work_dir: path_text(&work_dir),
        },
        work_dir,
        upstream_dirs,
        log_path: dir.log(name),
        audit: audit.clone(),
        progress: progress.clone(),
        run: crate::caps::approval::RunInfo {
            run_id: dir.id.clone(),
            author: opts.author.clone(),
            environment: opts.environment.clone(),
            protected: pipeline.protected.contains(&opts.environment),
            pipeline_digest: pipeline.digest.clone(),
            signers,
            image_digest,
            author_keys,
        },
        store: store.clone(),
        stop: opts.stop.clone(),
        run_dir: dir.path.clone(),
        redactor: redactor.clone(),
    })
}
