//! Everything checked before any stage runs: plugins load and describe
//! themselves, every request is granted, every granted program exists.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use indexmap::IndexMap;

use crate::caps::exec::{ExecPolicy, sandbox};
use crate::caps::fs::{GrantDir, Protected};
use crate::caps::{self, GrantKind, PolicyError, StagePolicy};
use crate::pipeline::{Diagnostic, Diagnostics, Part, Pipeline, Stage};
use crate::runtime::Runtime;
use crate::runtime::cache::{Cache, CacheUse};
use crate::runtime::plugin::LoadedPlugin;

/// A pipeline whose plugins are loaded and whose grants are checked.
pub struct Prepared {
    pub pipeline: Pipeline,
    pub plugins: IndexMap<String, Arc<LoadedPlugin>>,
    pub policies: HashMap<String, StagePolicy>,
    /// Grants no plugin asked for, per stage (ignored, but worth a look).
    pub unrequested: IndexMap<String, Vec<String>>,
    /// `[sandbox]`'s locations as opened and checked here.
    pub system: Arc<sandbox::SystemPaths>,
}

impl Prepared {
    /// Grants no plugin asked for, as warnings at the stage's grants.
    /// Grants no plugin asked for, at the stage's grants; secret files
    /// that others than their owner may read, at the file.
    pub fn warnings(&self) -> Vec<Diagnostic> {
        let map = &self.pipeline.source;
        let secret_files = self.pipeline.secrets.values().filter_map(|s| {
            let warning = caps::secret::source_warning(&s.source)?;
            Some(
                map.error(
                    &["secrets", &s.name, "file"],
                    Part::Value,
                    format!("secret `{}`: {warning}", s.name),
                )
                .help("a secret's file should be readable by its owner only, as SSH keys must be")
                .warning(),
            )
        });
        let secret_files: Vec<Diagnostic> = secret_files.collect();
        self.unrequested
            .iter()
            .map(|(stage, extra)| {
                map.error(
                    &["stages", stage, "grants"],
                    Part::Key,
                    format!(
                        "stage `{stage}` grants {} that its plugin does not request; they are ignored",
                        extra.join(", ")
                    ),
                )
                .help("remove them, or check that the stage uses the plugin you meant")
                .stage(stage.as_str())
                .warning()
            })
            .chain(secret_files)
            .collect()
    }
}

/// Load every plugin the pipeline declares and check every stage's grants.
/// No read or write grant may reach a `protected` thing (Capstan's state dir
/// and run store: a plugin that could write them could forge an approval or
/// rewrite the audit log), and no write grant may reach the pipeline file, a
/// plugin's component or a program a stage runs. Compared by identity, on
/// the handles the stages will use.
pub async fn prepare(
    pipeline: Pipeline,
    runtime: &Runtime,
    cache: &Cache,
    protected: &[Protected],
) -> Result<Prepared, Diagnostics> {
    let mut errors = Vec::new();
    // Grants are opened and checked against Capstan's state before anything
    // is loaded: loading compiles plugins into the state dir's cache, which
    // must not be created inside a grant.
    let mut opened = HashMap::new();
    let mut reach_state = Vec::new();
    let secret_files = secret_files(&pipeline);
    for stage in pipeline.stages.values() {
        match caps::open_grants(stage) {
            Ok(granted) => {
                reach_state.extend(reached(&pipeline, stage, &granted, protected, &[]));
                errors.extend(reach_secrets(&pipeline, stage, &granted, &secret_files));
                opened.insert(stage.name.clone(), granted);
            }
            Err(e) => errors.extend(policy_errors(&pipeline, stage, &e)),
        }
    }
    // When a grant reaches the state dir, plugins are still loaded (to find
    // every other problem too) but without the cache, so nothing is written.
    let no_cache = Cache::disabled();
    let cache = if reach_state.is_empty() {
        cache
    } else {
        &no_cache
    };
    errors.extend(reach_state);
    let system = sandbox::SystemPaths::open(&pipeline.sandbox);
    errors.extend(sandbox_errors(&pipeline, &system, protected));
    errors.extend(sandbox_reads_secrets(&pipeline, &system, &secret_files));
    let map = &pipeline.source;
    let mut plugins = IndexMap::new();
    for (name, plugin) in &pipeline.plugins {
        match LoadedPlugin::load_validated(runtime, cache, plugin).await {
            Ok(loaded) => {
                if loaded.cache == CacheUse::Recompiled {
                    eprintln!(
                        "warning: plugin `{name}`: its compiled-cache entry failed verification \
                         (damaged, not a plain file, or not made with this host's key for this \
                         component); it was not used, the plugin was compiled again (recorded in \
                         run.json as `recompiled`)"
                    );
                }
                plugins.insert(name.clone(), Arc::new(loaded));
            }
            Err(e) => errors.push(map.error(
                &["plugins", name, "path"],
                Part::Value,
                format!("plugin `{name}`: {e}"),
            )),
        }
    }
    let mut policies = HashMap::new();
    let mut unrequested = IndexMap::new();
    for stage in pipeline.stages.values() {
        let Some(plugin) = plugins.get(&stage.plugin) else {
            continue;
        };
        let requests = &plugin.info.requests;
        if let Some(schema) = &plugin.info.config_schema {
            errors.extend(config_errors(&pipeline, stage, schema));
        }
        for m in caps::check(stage, requests, &pipeline.secrets) {
            let help = format!("add to the pipeline file:\n\n{}", indent(&m.toml));
            errors.push(
                map.error(
                    &["stages", &stage.name, "grants"],
                    Part::Key,
                    format!(
                        "stage `{}` (plugin `{}`) requests {} — \"{}\" — but the pipeline does not grant it",
                        stage.name,
                        stage.plugin,
                        m.request.capability,
                        crate::text::inline(&m.request.reason),
                    ),
                )
                .help(help)
                .stage(stage.name.as_str()),
            );
        }
        let extra = caps::unrequested(stage, requests);
        if !extra.is_empty() {
            unrequested.insert(stage.name.clone(), extra);
        }
        let granted = opened.remove(&stage.name).unwrap_or_default();
        match StagePolicy::new(stage, requests, granted, &pipeline.sandbox) {
            Ok(policy) => {
                policies.insert(stage.name.clone(), policy);
            }
            Err(e) => errors.extend(policy_errors(&pipeline, stage, &e)),
        }
    }
    errors.extend(not_writable(&pipeline, &policies));
    if !errors.is_empty() {
        return Err(Diagnostics::new(errors));
    }
    Ok(Prepared {
        system: Arc::new(system),
        pipeline,
        plugins,
        policies,
        unrequested,
    })
}

/// The stage's `with` against its plugin's schema, each problem at its key
/// or value. Values still holding a `${…}` reference are checked when the
/// stage starts.
fn config_errors(
    pipeline: &Pipeline,
    stage: &Stage,
    schema: &serde_json::Value,
) -> Vec<Diagnostic> {
    let map = &pipeline.source;
    let prefix = format!("stage `{}` (plugin `{}`)", stage.name, stage.plugin);
    match super::config::problems(schema, &stage.with, true) {
        Ok(problems) => problems
            .into_iter()
            .map(|p| {
                let mut path = vec!["stages", stage.name.as_str(), "with"];
                path.extend(p.path.iter().map(String::as_str));
                let mut d = map.error(&path, p.part, format!("{prefix}: {}", p.message));
                d.help = p.help;
                d.stage(stage.name.as_str())
            })
            .collect(),
        Err(e) => vec![
            map.error(
                &["stages", &stage.name, "plugin"],
                Part::Value,
                format!("{prefix}: {e}"),
            )
            .help("the plugin is broken: tell its author, or use another version")
            .stage(stage.name.as_str()),
        ],
    }
}

/// A grant of `stage` that cannot be used, at the grant. A missing program
/// stops [`StagePolicy::new`] at the first one: every exec grant is tried
/// again here so that all of them are reported at once.
fn policy_errors(pipeline: &Pipeline, stage: &Stage, e: &PolicyError) -> Vec<Diagnostic> {
    let map = &pipeline.source;
    match e {
        PolicyError::Program(_) => stage
            .grants
            .exec
            .iter()
            .enumerate()
            .filter_map(|(i, grant)| {
                let e = ExecPolicy::resolve(grant, &pipeline.sandbox).err()?;
                let i = i.to_string();
                let path = ["stages", &stage.name, "grants", "exec", &i, "program"];
                Some(
                    map.error(&path, Part::Value, format!("stage `{}`: {e}", stage.name))
                        .stage(stage.name.as_str()),
                )
            })
            .collect(),
        PolicyError::Dir { kind, path, .. } => vec![
            map.error(
                &grant_path(stage, *kind, path),
                Part::Value,
                format!("stage `{}`: {e}", stage.name),
            )
            .stage(stage.name.as_str()),
        ],
    }
}

/// Where the `kind` grant of `stage` naming the directory `dir` (canonical,
/// as validated) is written.
fn grant_path(stage: &Stage, kind: GrantKind, dir: &Path) -> Vec<String> {
    let (key, dirs) = match kind {
        GrantKind::Read => ("read", &stage.read_dirs),
        GrantKind::Write => ("write", &stage.write_dirs),
    };
    let mut path = vec![
        "stages".to_string(),
        stage.name.clone(),
        "grants".into(),
        key.into(),
    ];
    if let Some(i) = dirs.iter().position(|d| d == dir) {
        path.push(i.to_string());
    }
    path
}

fn indent(text: &str) -> String {
    text.lines()
        .map(|l| format!("    {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Write grants that reach what only the operator writes: the pipeline
/// file itself (a stage that could edit it would grant itself anything on
/// the next run), the plugins' components and the programs stages run.
fn not_writable(pipeline: &Pipeline, policies: &HashMap<String, StagePolicy>) -> Vec<Diagnostic> {
    let map = &pipeline.source;
    let mut files: Vec<Protected> = Vec::new();
    let mut locate = |path: &Path, what: String| match Protected::locate(path, what) {
        Ok(p) => {
            files.push(p);
            None
        }
        Err(e) => Some(format!("cannot locate {}: {e}", path.display())),
    };
    if let Some(e) = locate(&pipeline.file, "the pipeline file".into()) {
        return vec![map.error_at(None, e)];
    }
    for (name, plugin) in &pipeline.plugins {
        if let Some(e) = locate(&plugin.path, format!("plugin `{name}`'s component")) {
            return vec![map.error(&["plugins", name, "path"], Part::Value, e)];
        }
    }
    for stage in pipeline.stages.values() {
        let Some(policy) = policies.get(&stage.name) else {
            continue;
        };
        for program in &policy.exec {
            let what = format!("the program `{}`", program.program);
            match Protected::of_open_file(&program.path, &program.file.file, what) {
                Ok(p) => files.push(p),
                Err(e) => {
                    let at = stage
                        .grants
                        .exec
                        .iter()
                        .position(|g| g.program == program.program)
                        .unwrap_or_default()
                        .to_string();
                    let path = ["stages", &stage.name, "grants", "exec", &at, "program"];
                    let message = format!("cannot locate {}: {e}", program.path.display());
                    return vec![map.error(&path, Part::Value, message)];
                }
            }
        }
    }
    let mut problems = Vec::new();
    for stage in pipeline.stages.values() {
        if let Some(policy) = policies.get(&stage.name) {
            problems.extend(reached(pipeline, stage, &policy.granted, &[], &files));
        }
    }
    problems
}

/// The grants of `stage` that reach one of `protected` (any grant) or of
/// `files` (write grants only), each at the grant.
fn reached(
    pipeline: &Pipeline,
    stage: &Stage,
    granted: &[(GrantKind, GrantDir)],
    protected: &[Protected],
    files: &[Protected],
) -> Vec<Diagnostic> {
    let name = &stage.name;
    let mut problems = Vec::new();
    for (kind, dir) in granted {
        let at = |message: String| {
            pipeline
                .source
                .error(&grant_path(stage, *kind, &dir.path), Part::Value, message)
                .stage(name.as_str())
        };
        let writable = *kind == GrantKind::Write;
        // Walked once per grant, compared with everything protected.
        let lineage = match dir.lineage() {
            Ok(lineage) => lineage,
            Err(e) => {
                problems.push(at(format!(
                    "stage `{name}`: cannot check the {kind} grant {}: {e}",
                    dir.path.display()
                )));
                continue;
            }
        };
        let mut candidates = protected
            .iter()
            .map(|p| (p, true))
            .chain(files.iter().filter(|_| writable).map(|p| (p, false)));
        if let Some((p, is_state)) = candidates.find(|(p, _)| p.overlaps(&lineage)) {
            problems.push(
                at(format!(
                    "stage `{name}`: the {kind} grant {} reaches {} ({})",
                    dir.path.display(),
                    p.what,
                    p.path.display(),
                ))
                .help(format!(
                    "grant a directory that neither contains it nor lies inside it{}",
                    match (&p.moved_by, is_state) {
                        (Some(how), _) => format!(", or move it {how}"),
                        (None, true) =>
                            ", or move Capstan's state with --state-dir / --store".into(),
                        (None, false) => String::new(),
                    }
                )),
            );
        }
    }
    problems
}

/// The files secrets are read from, located (they need not exist yet).
fn secret_files(pipeline: &Pipeline) -> Vec<(String, Protected)> {
    pipeline
        .secrets
        .values()
        .filter_map(|s| match &s.source {
            crate::pipeline::SecretSource::File { path } => {
                let what = format!("the file of secret `{}`", s.name);
                Some((s.name.clone(), Protected::locate(path, what).ok()?))
            }
            _ => None,
        })
        .collect()
}

/// Grants of `stage` that hold a secret's file: its plugin and programs
/// could read the secret without being granted it (and unredacted).
fn reach_secrets(
    pipeline: &Pipeline,
    stage: &Stage,
    granted: &[(GrantKind, GrantDir)],
    files: &[(String, Protected)],
) -> Vec<Diagnostic> {
    let mut problems = Vec::new();
    for (kind, dir) in granted {
        let Ok(lineage) = dir.lineage() else {
            continue; // `reached` reports it
        };
        for (name, file) in files.iter().filter(|(_, f)| f.overlaps(&lineage)) {
            problems.push(
                pipeline
                    .source
                    .error(&grant_path(stage, *kind, &dir.path), Part::Value, format!(
                        "stage `{}`: the {kind} grant {} holds {} ({}): the stage could read it without being granted it",
                        stage.name,
                        dir.path.display(),
                        file.what,
                        file.path.display()
                    ))
                    .help(format!("keep the file of secret `{name}` out of every directory a stage is granted (move it, or grant a narrower directory)"))
                    .stage(stage.name.as_str()),
            );
        }
    }
    problems
}

/// Locations every program may read (`[sandbox] read`, the system ones)
/// that hold a secret's file.
fn sandbox_reads_secrets(
    pipeline: &Pipeline,
    system: &sandbox::SystemPaths,
    files: &[(String, Protected)],
) -> Vec<Diagnostic> {
    let mut problems = Vec::new();
    for opened in &system.read {
        let Ok(lineage) = opened.lineage() else {
            continue;
        };
        for (name, file) in files.iter().filter(|(_, f)| f.overlaps(&lineage)) {
            problems.push(
                pipeline
                    .source
                    .error(&["secrets", name, "file"], Part::Value, format!(
                        "every program stages start may read {} ([sandbox] read, or a default system location), which holds {} ({})",
                        opened.path.display(),
                        file.what,
                        file.path.display()
                    ))
                    .help("keep secret files out of the locations every program may read (e.g. in the pipeline's directory, not under /etc or /usr)"),
            );
        }
    }
    problems
}

/// What keeps the stages' programs from being confined: a kernel without
/// Landlock (unless `[sandbox] require = false`), or a location every
/// program may read that holds Capstan's state (Landlock cannot carve it
/// out again).
fn sandbox_errors(
    pipeline: &Pipeline,
    system: &sandbox::SystemPaths,
    protected: &[Protected],
) -> Vec<Diagnostic> {
    let map = &pipeline.source;
    let mut problems = Vec::new();
    let execs = pipeline.stages.values().any(|s| !s.grants.exec.is_empty());
    if execs && pipeline.sandbox.require && sandbox::landlock_abi().is_none() {
        problems.push(
            map.error(&["sandbox"], Part::Key, "this kernel has no Landlock, so the programs stages start cannot be confined to their grants")
                .help("run on Linux 5.13 or later with `landlock` in its LSM list (`cat /sys/kernel/security/lsm`), or accept unconfined programs with `[sandbox] require = false` (`capstan audit` shows it)"),
        );
    }
    for opened in &system.read {
        let path = &opened.path;
        let Ok(lineage) = opened.lineage() else {
            continue;
        };
        if let Some(p) = protected.iter().find(|p| p.overlaps(&lineage)) {
            problems.push(
                map.error(&["sandbox"], Part::Key, format!(
                    "every program stages start may read {} ([sandbox] read, or a default system location), which reaches {} ({})",
                    path.display(),
                    p.what,
                    p.path.display()
                ))
                .help(format!(
                    "keep Capstan's state out of the locations programs may read: move it {}, or narrow [sandbox] read (`system = false` drops the defaults)",
                    p.moved_by.as_deref().unwrap_or("with --state-dir / --store")
                )),
            );
        }
    }
    problems
}
