//! One stage's life: its store with exactly its capabilities, the call into
//! the plugin, and a clear reason when it fails.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::{Map, Value, json};
use wasmtime_wasi::FsPerms;

use super::Prepared;
use super::progress::Progress;
use super::stop::Stop;
use crate::bindings::capstan::plugin::types as wit;
use crate::caps::approval::RunInfo;
use crate::caps::audit::{AuditLog, StageAudit};
use crate::caps::exec::sandbox::{StageDirs, StageSandbox};
use crate::caps::fs::GrantDir;
use crate::caps::log::LogSink;
use crate::caps::secret::{self, Delivered, Origin, Redactor, resolve, scan};
use crate::caps::state::{StageState, StageStateBuilder};
use crate::caps::{GrantKind, StagePolicy, env};
use crate::pipeline::Stage;
use crate::runtime::plugin::LoadedPlugin;
use crate::store::{AuditKind, RunStore};

/// Cap on captured output returned to a plugin, per stream and exec.
pub const CAPTURE_CAP: usize = 4 << 20;

/// How a stage ended.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "status", rename_all = "kebab-case")]
pub enum StageStatus {
    Succeeded {
        summary: String,
        outputs: Map<String, Value>,
        artifacts: Vec<String>,
        report: Option<Value>,
    },
    Failed {
        reason: String,
    },
    /// Stopped at an approval nobody has given yet.
    AwaitingApproval {
        reason: String,
    },
    Skipped {
        reason: String,
    },
    /// Stopped by Ctrl-C, SIGTERM or `capstan cancel` (who and why), or not
    /// started because the run was.
    Cancelled {
        reason: String,
    },
}

/// Everything a stage run needs from the executor (owned, so it can run on
/// its own task).
pub struct StageRun {
    pub prepared: Arc<Prepared>,
    pub name: String,
    pub context: wit::StageContext,
    pub work_dir: PathBuf,
    /// The work dirs of the stages upstream, opened (see
    /// [`super::EndedDirs`]).
    pub upstream_dirs: Vec<GrantDir>,
    pub log_path: PathBuf,
    pub audit: AuditLog,
    pub progress: Progress,
    pub run: RunInfo,
    pub store: Arc<dyn RunStore>,
    pub stop: Stop,
    /// The run's directory (secret files, the search for leftovers).
    pub run_dir: PathBuf,
    /// The run's redactor: this stage's secrets are added to it.
    pub redactor: Redactor,
}

impl StageRun {
    fn stage(&self) -> &Stage {
        &self.prepared.pipeline.stages[&self.name]
    }

    fn policy(&self) -> &StagePolicy {
        &self.prepared.policies[&self.name]
    }

    fn plugin(&self) -> &LoadedPlugin {
        &self.prepared.plugins[&self.stage().plugin]
    }

    /// Run attempt number `attempt` of the stage.
    pub async fn run(self, attempt: u32) -> StageStatus {
        let stage = self.stage();
        let live = self
            .progress
            .wants_lines()
            .then(|| (self.progress.clone(), stage.name.clone()));
        let sink = match LogSink::create(&self.log_path, stage.max_output, live) {
            Ok(sink) => sink.redacting(self.redactor.clone()),
            Err(e) => {
                return StageStatus::Failed {
                    reason: format!(
                        "cannot create the stage log {}: {e}",
                        self.log_path.display()
                    ),
                };
            }
        };
        let audit = StageAudit {
            log: self.audit.clone(),
            stage: stage.name.clone(),
            plugin: stage.plugin.clone(),
            budget: sink.clone(),
        };
        if attempt > 1 {
            sink.line(&format!(
                "[capstan] ── attempt {attempt} of stage `{}` (run resumed) ──",
                stage.name
            ));
        }
        if let Some(gate) = &stage.requires_approval {
            let checked =
                super::gate::check(gate, &self.context.config, &self.run, self.store.as_ref());
            let detail = json!({"event": "approval-check", "stage": gate.stage, "digest_key": gate.digest_key});
            match checked {
                Ok(approved) => {
                    sink.line(&format!("[capstan] {approved}"));
                    audit.host(
                        AuditKind::Approval,
                        true,
                        json!({"approved": approved, "check": detail}),
                        None,
                    );
                }
                Err(reason) => {
                    sink.line(&format!("[capstan] {reason}"));
                    audit.host(AuditKind::Approval, false, detail, Some(reason.clone()));
                    let failed = StageStatus::Failed { reason };
                    return self.ended(&sink, &audit, failed, false);
                }
            }
        }
        // Resolved before the stage's clock starts (a command has its own
        // timeout), into memory, and known to the redactor before any
        // program can print them.
        let secrets = match self.secrets(&audit).await {
            Ok(secrets) => Arc::new(secrets),
            Err(reason) => return self.ended(&sink, &audit, StageStatus::Failed { reason }, false),
        };
        let (status, limited) = self.call(attempt, &sink, &audit, &secrets).await;
        // Programs are gone (the store and the sandbox were dropped with
        // the call): their secret files go, then what the stage left is
        // searched.
        if let Err(e) = secrets.remove() {
            sink.line(&format!(
                "[capstan] cannot remove the stage's secret files: {e}"
            ));
        }
        sink.flush();
        let status = match self.left_behind(&audit, &secrets) {
            Some(reason) => StageStatus::Failed { reason },
            None => status,
        };
        self.ended(&sink, &audit, status, limited)
    }

    /// Instantiate the plugin with exactly its capabilities and run it;
    /// how it ended, and whether a limit ended it.
    async fn call(
        &self,
        attempt: u32,
        sink: &LogSink,
        audit: &StageAudit,
        secrets: &Arc<Delivered>,
    ) -> (StageStatus, bool) {
        let stage = self.stage();
        let timeout = stage.timeout;
        let deadline = Instant::now() + timeout;
        let memory = Arc::new(AtomicBool::new(false));
        let pending = Arc::new(std::sync::Mutex::new(None));
        let state = match self.state(
            sink,
            audit,
            deadline,
            memory.clone(),
            pending.clone(),
            secrets.clone(),
        ) {
            Ok(state) => state,
            Err(reason) => return (StageStatus::Failed { reason }, false),
        };
        let mut start = json!({
            "event": "start",
            "attempt": attempt,
            "plugin_digest": self.plugin().digest,
            "pipeline_digest": self.prepared.pipeline.digest,
        });
        if let (Some(start), Value::Object(caps)) = (
            start.as_object_mut(),
            self.policy().summary(
                &self.work_dir,
                crate::caps::Upstream {
                    count: self.upstream_dirs.len(),
                    needs: &self.stage().needs,
                },
                &self.hidden_env(),
            ),
        ) {
            start.extend(caps);
        }
        if let (Some(start), Some(sandbox)) = (start.as_object_mut(), &state.process.sandbox) {
            start.insert("sandbox".into(), json!(sandbox.rules));
        }
        audit.host(AuditKind::Stage, true, start, None);
        if !secrets.names().is_empty() {
            // Which secrets, from where, to which programs: never values.
            let sources: Map<String, Value> = secrets
                .names()
                .into_iter()
                .filter_map(|n| {
                    let s = self.prepared.pipeline.secrets.get(n)?;
                    Some((n.to_string(), json!(s.source.to_string())))
                })
                .collect();
            audit.host(
                AuditKind::Secret,
                true,
                json!({ "event": "delivered", "secrets": secrets.summary(), "sources": sources, "private_dir": secrets.dir() }),
                None,
            );
        }
        let mut store = self.plugin().runtime.store(state, deadline);
        let call = async {
            let instance = self.plugin().pre.instantiate_async(&mut store).await?;
            instance
                .capstan_plugin_plugin()
                .call_run(&mut store, &self.context)
                .await
        };
        // Belt and braces: the epoch deadline stops plugin code and exec
        // timeouts stop children; this stops everything else.
        let call = tokio::time::timeout(timeout + Duration::from_secs(2), call);
        tokio::pin!(call);
        let stopped = tokio::select! {
            result = &mut call => match self.stop.requested() {
                None => Ok(result),
                // It returned while its programs were being ended: what it
                // made of their deaths is no outcome of the stage.
                Some(request) => Err(request),
            },
            request = self.stop.stopped() => {
                // The run's programs are being ended (see `run::stop`); the
                // plugin gets their outcome and the grace period to return,
                // then it is dropped at its next yield.
                let grace = self.stop.grace + Duration::from_secs(2);
                tokio::select! {
                    _ = tokio::time::timeout(grace, &mut call) => {}
                    // The programs are being killed now (see `Stop::end_programs`):
                    // their exec calls return at once.
                    () = self.stop.killed() => {
                        let _ = tokio::time::timeout(Duration::from_secs(2), &mut call).await;
                    }
                }
                Err(request)
            }
        };
        let result = match stopped {
            Ok(result) => result,
            Err(request) => {
                let reason = request.stage_reason();
                return (StageStatus::Cancelled { reason }, false);
            }
        };
        // What the plugin hands back is written to run.json, outputs.json
        // and the run store: it counts against the stage's output limit too.
        if let Ok(Ok(returned)) = &result {
            let _ = sink.charge(returned_size(returned));
        }
        // A limit that was hit explains the failure, whatever the plugin
        // made of it (it may have caught the error and returned its own).
        let limit = self.limit_hit(sink, memory.load(Ordering::SeqCst));
        // Whether a limit ended the stage is known here, never read back
        // from the text (a plugin's own message may say "limit").
        let (status, limited) = match (result, limit) {
            (Ok(Ok(Ok(outcome))), None) => (success(outcome), false),
            (Ok(Ok(Err(e))), None) => (
                StageStatus::Failed {
                    reason: plugin_error(e),
                },
                false,
            ),
            (Ok(Err(trap)), None) => {
                let (reason, limited) = self.trap_reason(&trap, sink, deadline);
                (StageStatus::Failed { reason }, limited)
            }
            (Err(_), None) => (
                StageStatus::Failed {
                    reason: self.timed_out(),
                },
                true,
            ),
            (_, Some(reason)) => (StageStatus::Failed { reason }, true),
        };
        // Whatever the plugin made of a `pending` answer, the stage waits.
        let status = match (status, pending.lock().expect("pending lock").take()) {
            (StageStatus::Failed { .. } | StageStatus::Succeeded { .. }, Some(reason)) => {
                StageStatus::AwaitingApproval { reason }
            }
            (status, _) => status,
        };
        (status, limited)
    }

    /// Record how the stage ended (audit log, stage log), with the run's
    /// secrets masked in everything it says, and return it.
    fn ended(
        &self,
        sink: &LogSink,
        audit: &StageAudit,
        mut status: StageStatus,
        limited: bool,
    ) -> StageStatus {
        redact_status(&self.redactor, &mut status);
        match &status {
            StageStatus::Cancelled { reason } => {
                audit.host(
                    AuditKind::Stage,
                    true,
                    json!({"event": "cancelled"}),
                    Some(reason.clone()),
                );
                sink.line(&format!("[capstan] stage cancelled: {reason}"));
            }
            StageStatus::Failed { reason } => {
                audit.host(
                    if limited {
                        AuditKind::Limit
                    } else {
                        AuditKind::Stage
                    },
                    !limited,
                    json!({"event": "failed"}),
                    Some(reason.clone()),
                );
                sink.line(&format!("[capstan] stage failed: {reason}"));
            }
            StageStatus::AwaitingApproval { .. } => {
                audit.host(
                    AuditKind::Stage,
                    true,
                    json!({ "event": "awaiting-approval" }),
                    None,
                );
            }
            StageStatus::Succeeded { .. } | StageStatus::Skipped { .. } => {
                audit.host(
                    AuditKind::Stage,
                    true,
                    json!({ "event": "succeeded" }),
                    None,
                );
            }
        }
        status
    }

    /// Resolve the secrets the stage is granted (and its plugin asked
    /// for), add them to the run's redactor, and prepare their delivery.
    async fn secrets(&self, audit: &StageAudit) -> Result<Delivered, String> {
        let granted = &self.policy().secrets;
        if granted.is_empty() {
            return Ok(Delivered::none());
        }
        let pipeline = &self.prepared.pipeline;
        let mut values = Vec::new();
        for name in granted.keys() {
            let Some(secret) = pipeline.secrets.get(name) else {
                return Err(format!("secret `{name}` is not declared under [secrets]"));
            };
            match resolve::resolve(secret, &pipeline.dir).await {
                Ok(resolved) => {
                    self.redactor
                        .add(Origin::Secret(name.clone()), &resolved.value);
                    values.push(resolved);
                }
                Err(e) => {
                    let reason = e.to_string();
                    audit.host(
                        AuditKind::Secret,
                        false,
                        json!({ "event": "unresolved", "secret": name, "source": secret.source.to_string() }),
                        Some(reason.clone()),
                    );
                    return Err(reason);
                }
            }
        }
        Delivered::prepare(&self.name, &self.run_dir, granted, values).map_err(|e| e.to_string())
    }

    /// Why the stage fails for what it left in the run directory: the value
    /// of a secret it received, in a file (recorded in the audit log,
    /// named, never quoted). Values a plugin marked sensitive are redacted
    /// but not searched for: they are its tool's data, which the tool's own
    /// files in the work dir may hold (a Terraform plan file holds every
    /// sensitive value), and often short enough to turn up in any binary.
    fn left_behind(&self, audit: &StageAudit, secrets: &Delivered) -> Option<String> {
        let names = secrets.names();
        if names.is_empty() {
            return None;
        }
        let patterns = self.redactor.only(|origin| match origin {
            Origin::Secret(name) => names.contains(&name.as_str()),
            Origin::Sensitive { .. } => false,
        });
        let found = match scan::run_dir(&self.run_dir, &self.work_dir, &patterns) {
            Ok(found) => found,
            Err(e) => {
                return (!patterns.is_empty()).then(|| {
                    format!(
                        "cannot search the run directory for secrets the stage may have left: {e}"
                    )
                });
            }
        };
        if found.is_empty() {
            return None;
        }
        let reason = scan::reason(&self.name, &found);
        let files: Vec<Value> = found
            .iter()
            .map(
                |f| json!({ "file": f.file, "value_of": f.origin.to_string(), "masked": f.masked }),
            )
            .collect();
        audit.host(
            AuditKind::Secret,
            false,
            json!({ "event": "left-in-files", "files": files }),
            Some(reason.clone()),
        );
        Some(reason)
    }

    /// Host variables that are secrets' sources (never passed through).
    fn hidden_env(&self) -> Arc<[String]> {
        secret::source_vars(&self.prepared.pipeline.secrets)
    }

    fn state(
        &self,
        sink: &LogSink,
        audit: &StageAudit,
        deadline: Instant,
        memory: Arc<AtomicBool>,
        pending: Arc<std::sync::Mutex<Option<String>>>,
        secrets: Arc<Delivered>,
    ) -> Result<StageState, String> {
        let p = self.policy();
        let hidden = self.hidden_env();
        // The work dir and upstream dirs live in the run directory, which no
        // grant reaches; the grants were opened when the pipeline loaded.
        let open = |path: &PathBuf| {
            GrantDir::open(path)
                .map_err(|e| format!("cannot open the stage directory {}: {e}", path.display()))
        };
        let work = open(&self.work_dir)?;
        let upstream = self.upstream_dirs.clone();
        let mut writable: Vec<GrantDir> = p.write_dirs.clone();
        writable.push(work.clone());
        let mut readable: Vec<GrantDir> = p.read_dirs.clone();
        readable.extend(upstream.iter().cloned());
        readable.retain(|r| !writable.iter().any(|w| w.id == r.id));
        let sandbox = if p.exec.is_empty() {
            None
        } else {
            Some(Arc::new(self.sandbox(work, upstream, &secrets)?))
        };
        let host_vars = std::env::vars().filter(|(k, _)| !hidden.contains(k));
        let mut state = StageStateBuilder::new(audit.clone(), sink.clone(), deadline)
            .memory(self.stage().memory as usize, memory)
            .env(&env::select(&p.env, host_vars))
            .redactor(self.redactor.clone())
            .hidden_env(hidden.clone())
            .secrets(secrets);
        for dir in &writable {
            state = state.preopen(dir, FsPerms::ReadWrite)?;
        }
        for dir in &readable {
            state = state.preopen(dir, FsPerms::ReadOnly)?;
        }
        state = state
            .exec(
                p.exec.clone(),
                self.work_dir.clone(),
                CAPTURE_CAP,
                self.stop.clone(),
                sandbox,
                self.run.run_id.clone(),
            )
            .connect(p.connect.clone());
        if p.approval {
            state = state.approval(
                self.run.clone(),
                self.store.clone(),
                crate::caps::approval::interactive(),
                pending,
            );
        }
        Ok(state.build())
    }

    /// The sandbox of the stage's programs: they may read the read grants
    /// and `upstream` work dirs, and write the `work` dir and write grants,
    /// whether or not the plugin itself asked for
    /// those directories: the pipeline granted them to the stage.
    fn sandbox(
        &self,
        work: GrantDir,
        upstream: Vec<GrantDir>,
        secrets: &Delivered,
    ) -> Result<StageSandbox, String> {
        let p = self.policy();
        let mut write = vec![work];
        let mut read = upstream;
        for (kind, dir) in &p.granted {
            match kind {
                GrantKind::Write => write.push(dir.clone()),
                GrantKind::Read => read.push(dir.clone()),
            }
        }
        read.retain(|r| !write.iter().any(|w| w.id == r.id));
        let stages = self
            .work_dir
            .parent()
            .map(GrantDir::open)
            .transpose()
            .map_err(|e| {
                format!(
                    "stage `{}`: cannot open the run's stages directory: {e}",
                    self.name
                )
            })?;
        let dirs = StageDirs {
            stages: stages.as_ref(),
            read: &read,
            write: &write,
            programs: p.exec.iter().map(|e| &e.file.file).collect(),
            secrets: p
                .exec
                .iter()
                .map(|e| (e.program.as_str(), secrets.files_for(&e.program)))
                .collect(),
            secret_dir: secrets.dir(),
        };
        // The private temporary directory lives in the run directory (out
        // of every other rule's reach), not in the host's `/tmp`, which the
        // programs' own `/tmp` hides.
        let tmp = self
            .work_dir
            .parent()
            .and_then(Path::parent)
            .map(|run| run.join("tmp"))
            .ok_or_else(|| format!("stage `{}`: its work dir has no run directory", self.name))?;
        StageSandbox::new(&self.name, &self.prepared.system, dirs, &tmp)
            .map_err(|e| format!("stage `{}`: {e}", self.name))
    }

    fn timed_out(&self) -> String {
        format!(
            "stage timed out after {} (limit `timeout`)",
            humantime::format_duration(self.stage().timeout)
        )
    }

    fn limit_hit(&self, sink: &LogSink, memory_hit: bool) -> Option<String> {
        let s = self.stage();
        if memory_hit {
            return Some(format!(
                "memory limit of {} exceeded (limit `memory`)",
                bytesize::ByteSize(s.memory)
            ));
        }
        if sink.exceeded() {
            return Some(format!(
                "output limit of {} exceeded (limit `max_output`)",
                bytesize::ByteSize(s.max_output)
            ));
        }
        None
    }

    /// Why the plugin trapped, and whether a limit of the stage's did it.
    fn trap_reason(
        &self,
        trap: &wasmtime::Error,
        sink: &LogSink,
        deadline: Instant,
    ) -> (String, bool) {
        if matches!(
            trap.downcast_ref::<wasmtime::Trap>(),
            Some(wasmtime::Trap::Interrupt)
        ) || Instant::now() >= deadline
        {
            return (self.timed_out(), true);
        }
        let table_full = trap.chain().any(|e| {
            matches!(
                e.downcast_ref::<wasmtime::component::ResourceTableError>(),
                Some(wasmtime::component::ResourceTableError::Full)
            )
        });
        if table_full {
            return (
                format!(
                    "handle limit of {} exceeded (a stage may hold at most that many open files, \
                     directories and streams at once)",
                    crate::caps::limits::stage_handle_cap()
                ),
                true,
            );
        }
        let cause = match trap.downcast_ref::<wasmtime::Trap>() {
            Some(t) => t.to_string(),
            None => format!("{:#}", trap.root_cause()),
        };
        // A Rust plugin's panic prints "thread … panicked at FILE:LINE:COL:"
        // and the message on the next line, to stderr (the stage log).
        let tail = sink.tail();
        let lines: Vec<&str> = tail.lines().collect();
        let reason = match lines.iter().rposition(|l| l.contains("panicked at")) {
            Some(i) => {
                let at = lines[i]
                    .rsplit("panicked at ")
                    .next()
                    .unwrap_or_default()
                    .trim_end_matches(':');
                let message = lines.get(i + 1).copied().unwrap_or_default();
                format!("plugin crashed: panicked: {message} (at {at})")
            }
            None => format!("plugin crashed: {cause}"),
        };
        (reason, false)
    }
}

/// Everything `status` says (summary, outputs and their keys, artifacts,
/// report, reason) with the run's secrets masked: it is shown on the
/// terminal and kept in run.json, outputs.json and the run store, and
/// later stages read its outputs.
pub fn redact_status(redactor: &Redactor, status: &mut StageStatus) {
    if redactor.is_empty() {
        return;
    }
    match status {
        StageStatus::Succeeded {
            summary,
            outputs,
            artifacts,
            report,
        } => {
            redactor.redact_string(summary);
            let mut all = Value::Object(std::mem::take(outputs));
            redactor.redact_json(&mut all);
            if let Value::Object(map) = all {
                *outputs = map;
            }
            artifacts.iter_mut().for_each(|a| redactor.redact_string(a));
            if let Some(report) = report {
                redactor.redact_json(report);
            }
        }
        StageStatus::Failed { reason }
        | StageStatus::AwaitingApproval { reason }
        | StageStatus::Skipped { reason }
        | StageStatus::Cancelled { reason } => redactor.redact_string(reason),
    }
}

/// Bytes of text a plugin returned (summary, outputs, artifacts, report, or
/// its error message).
fn returned_size(returned: &Result<wit::StageOutcome, wit::StageError>) -> u64 {
    let text = match returned {
        Ok(o) => {
            o.summary.len()
                + o.outputs
                    .iter()
                    .map(|(k, v)| k.len() + v.len())
                    .sum::<usize>()
                + o.artifacts.iter().map(String::len).sum::<usize>()
                + o.report.as_ref().map_or(0, String::len)
        }
        Err(
            wit::StageError::InvalidConfig(m)
            | wit::StageError::NotPermitted(m)
            | wit::StageError::Failed(m),
        ) => m.len(),
    };
    text as u64
}

fn plugin_error(e: wit::StageError) -> String {
    match e {
        wit::StageError::InvalidConfig(m) => format!("invalid `with` config: {m}"),
        wit::StageError::NotPermitted(m) => format!("not permitted: {m}"),
        wit::StageError::Failed(m) => m,
    }
}

fn success(outcome: wit::StageOutcome) -> StageStatus {
    let mut outputs = Map::new();
    for (key, text) in outcome.outputs {
        match serde_json::from_str(&text) {
            Ok(value) => {
                outputs.insert(key, value);
            }
            Err(e) => {
                return StageStatus::Failed {
                    reason: format!("the plugin returned output `{key}` that is not JSON ({e})"),
                };
            }
        }
    }
    let report = match outcome.report.map(|r| serde_json::from_str(&r)).transpose() {
        Ok(report) => report,
        Err(e) => {
            return StageStatus::Failed {
                reason: format!("the plugin returned a report that is not JSON ({e})"),
            };
        }
    };
    StageStatus::Succeeded {
        summary: outcome.summary,
        outputs,
        artifacts: outcome.artifacts,
        report,
    }
}

/// The text of a directory path, for the stage context.
pub fn path_text(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}
