//! What one plugin instance may reach: the store's data, one field per
//! interface, built by [`StageStateBuilder`], whose default is "nothing
//! granted" (as `WasiCtxBuilder`'s is): no preopens, no env, no programs, no
//! network, no approval, output counted and dropped. Each capability is
//! added explicitly from the stage's checked policy, so forgetting one
//! denies it rather than granting it.

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use wasmtime::component::ResourceTable;
use wasmtime_wasi::{FsPerms, WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

use super::approval::{ApprovalHost, RunInfo};
use super::audit::StageAudit;
use super::exec::sandbox::StageSandbox;
use super::exec::{ExecPolicy, ProcessHost};
use super::fs::GrantDir;
use super::limits::{Limiter, stage_handle_cap};
use super::log::{LogHost, LogSink};
use super::network::NetworkHost;
use super::secret::{Delivered, Redactor};
use crate::run::stop::Stop;
use crate::store::RunStore;

/// Everything one plugin instance may reach, as the store's data.
pub struct StageState {
    pub wasi: WasiCtx,
    pub table: ResourceTable,
    pub limiter: Limiter,
    pub log: LogHost,
    pub process: ProcessHost,
    pub network: NetworkHost,
    pub approval: ApprovalHost,
}

impl WasiView for StageState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl StageState {
    /// A state with no capabilities at all, for `describe`: output counted
    /// and dropped, `memory` bytes of linear memory.
    pub fn sealed(memory: usize) -> StageState {
        let sink = LogSink::discard(1 << 20);
        StageStateBuilder::new(StageAudit::discard(sink.clone()), sink, Instant::now())
            .memory(memory, Arc::new(AtomicBool::new(false)))
            .build()
    }
}

/// Builds a [`StageState`], starting from nothing granted.
pub struct StageStateBuilder {
    wasi: WasiCtxBuilder,
    sink: LogSink,
    audit: StageAudit,
    deadline: Instant,
    limiter: Limiter,
    handles: usize,
    exec: Vec<ExecPolicy>,
    dirs: Vec<GrantDir>,
    work_dir: PathBuf,
    capture_cap: usize,
    stop: Option<Stop>,
    sandbox: Option<Arc<StageSandbox>>,
    run_id: String,
    connect: Vec<String>,
    approval: Option<Approval>,
    redactor: Redactor,
    secrets: Option<Arc<Delivered>>,
    hidden_env: Arc<[String]>,
}

struct Approval {
    run: RunInfo,
    store: Arc<dyn RunStore>,
    interactive: bool,
    pending: Arc<Mutex<Option<String>>>,
}

impl StageStateBuilder {
    /// Nothing granted: the plugin's stdout and stderr go to `sink` (which
    /// also carries the stage's output budget), its requests are recorded
    /// in `audit`, and host calls end by `deadline`.
    pub fn new(audit: StageAudit, sink: LogSink, deadline: Instant) -> StageStateBuilder {
        let mut wasi = WasiCtxBuilder::new();
        wasi.stdout(sink.clone()).stderr(sink.clone());
        StageStateBuilder {
            wasi,
            sink,
            audit,
            deadline,
            limiter: Limiter::new(0, Arc::new(AtomicBool::new(false))),
            handles: stage_handle_cap(),
            exec: Vec::new(),
            dirs: Vec::new(),
            work_dir: PathBuf::from("/nonexistent"),
            capture_cap: 0,
            stop: None,
            sandbox: None,
            run_id: String::new(),
            connect: Vec::new(),
            approval: None,
            redactor: Redactor::new(),
            secrets: None,
            hidden_env: Arc::from([]),
        }
    }

    /// Host variables that are secrets' sources: programs never get them
    /// passed through (and the plugin's `env` is chosen without them).
    pub fn hidden_env(mut self, names: Arc<[String]>) -> Self {
        self.hidden_env = names;
        self
    }

    /// The run's redactor: what the plugin marks sensitive is added to it,
    /// and no program, probe or approval request may carry a value it
    /// knows. (The stage log and audit log redact on their own.)
    pub fn redactor(mut self, redactor: Redactor) -> Self {
        self.redactor = redactor;
        self
    }

    /// Secrets for the stage's programs, as the grants deliver them.
    pub fn secrets(mut self, delivered: Arc<Delivered>) -> Self {
        self.secrets = Some(delivered);
        self
    }

    /// Linear memory, in bytes, across all the instance's memories; `hit`
    /// is set when a growth was refused.
    pub fn memory(mut self, bytes: usize, hit: Arc<AtomicBool>) -> Self {
        self.limiter = Limiter::new(bytes, hit);
        self
    }

    /// Host environment variables the plugin sees.
    pub fn env(mut self, vars: &[(String, String)]) -> Self {
        self.wasi.envs(vars);
        self
    }

    /// A directory the plugin sees at its path, preopened from the handle
    /// that was checked (never by path again).
    pub fn preopen(mut self, dir: &GrantDir, perms: FsPerms) -> Result<Self, String> {
        let guest = dir.path.to_str().ok_or_else(|| {
            format!(
                "granted directory {} is not valid UTF-8",
                dir.path.display()
            )
        })?;
        self.wasi
            .preopened_dir(dir.fd_path(), guest, perms)
            .map_err(|e| format!("cannot open granted directory {}: {e}", dir.path.display()))?;
        self.dirs.push(dir.clone());
        Ok(self)
    }

    /// Programs the plugin may start, with the stage work dir (their
    /// default cwd), confined by `sandbox`; a cwd must lie beneath one of
    /// the preopened dirs. None starts once `stop` is requested.
    pub fn exec(
        mut self,
        policies: Vec<ExecPolicy>,
        work_dir: PathBuf,
        capture_cap: usize,
        stop: Stop,
        sandbox: Option<Arc<StageSandbox>>,
        run_id: String,
    ) -> Self {
        self.run_id = run_id;
        self.exec = policies;
        self.work_dir = work_dir;
        self.capture_cap = capture_cap;
        self.stop = Some(stop);
        self.sandbox = sandbox;
        self
    }

    /// `host:port` patterns the plugin may probe.
    pub fn connect(mut self, patterns: Vec<String>) -> Self {
        self.connect = patterns;
        self
    }

    /// The plugin may ask humans for approval in this run.
    pub fn approval(
        mut self,
        run: RunInfo,
        store: Arc<dyn RunStore>,
        interactive: bool,
        pending: Arc<Mutex<Option<String>>>,
    ) -> Self {
        self.approval = Some(Approval {
            run,
            store,
            interactive,
            pending,
        });
        self
    }

    pub fn build(mut self) -> StageState {
        let mut table = ResourceTable::new();
        // One stage cannot exhaust the host's descriptors for the others.
        table.set_max_capacity(self.handles);
        let audit = self.audit;
        let approval = match self.approval {
            Some(a) => ApprovalHost {
                redactor: self.redactor.clone(),
                granted: true,
                audit: audit.clone(),
                run: a.run,
                interactive: a.interactive,
                pending: a.pending,
                store: Some(a.store),
            },
            None => ApprovalHost {
                redactor: self.redactor.clone(),
                granted: false,
                audit: audit.clone(),
                run: RunInfo::default(),
                interactive: false,
                pending: Default::default(),
                store: None,
            },
        };
        StageState {
            wasi: self.wasi.build(),
            table,
            limiter: self.limiter,
            log: LogHost {
                sink: self.sink.clone(),
                redactor: self.redactor.clone(),
                stage: audit.stage.clone(),
                sensitive: (0, 0),
            },
            process: ProcessHost {
                policies: self.exec,
                dirs: self.dirs,
                work_dir: self.work_dir,
                log: self.sink,
                audit: audit.clone(),
                deadline: self.deadline,
                capture_cap: self.capture_cap,
                stop: self.stop,
                sandbox: self.sandbox,
                run_id: self.run_id,
                secrets: self.secrets.clone(),
                redactor: self.redactor.clone(),
                hidden_env: self.hidden_env,
            },
            network: NetworkHost {
                patterns: self.connect,
                audit,
                deadline: self.deadline,
                redactor: self.redactor.clone(),
                secrets: self.secrets.clone(),
            },
            approval,
        }
    }
}
