//! Everything checked before any stage runs: plugins load and describe
//! themselves, every request is granted, every granted program exists.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use indexmap::IndexMap;
use serde::Serialize;

use crate::caps::fs::{GrantDir, Protected};
use crate::caps::{self, GrantKind, Missing, StagePolicy};
use crate::pipeline::Pipeline;
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
}

/// Problems that stop a pipeline before it starts.
#[derive(Debug, Default, Serialize)]
pub struct PrepareErrors {
    pub plugins: Vec<String>,
    pub missing: Vec<(String, String, Missing)>,
    pub programs: Vec<String>,
    pub configs: Vec<String>,
    /// Grants that would expose Capstan's own state, a component or a
    /// program to a plugin.
    pub grants: Vec<String>,
}

impl PrepareErrors {
    fn is_empty(&self) -> bool {
        self.plugins.is_empty()
            && self.missing.is_empty()
            && self.programs.is_empty()
            && self.configs.is_empty()
            && self.grants.is_empty()
    }
}

impl fmt::Display for PrepareErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for p in &self.plugins {
            writeln!(f, "error: {p}")?;
        }
        for p in self
            .programs
            .iter()
            .chain(&self.configs)
            .chain(&self.grants)
        {
            writeln!(f, "error: {p}")?;
        }
        for (stage, plugin, m) in &self.missing {
            writeln!(
                f,
                "error: stage `{stage}` (plugin `{plugin}`) requests {} — \"{}\" — but the pipeline does not grant it.\n  add to the pipeline file:\n\n{}\n",
                m.request.capability,
                crate::text::inline(&m.request.reason),
                indent(&m.toml)
            )?;
        }
        Ok(())
    }
}

impl std::error::Error for PrepareErrors {}

fn indent(text: &str) -> String {
    text.lines()
        .map(|l| format!("    {l}"))
        .collect::<Vec<_>>()
        .join("\n")
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
) -> Result<Prepared, PrepareErrors> {
    let mut errors = PrepareErrors::default();
    // Grants are opened and checked against Capstan's state before anything
    // is loaded: loading compiles plugins into the state dir's cache, which
    // must not be created inside a grant.
    let mut opened = HashMap::new();
    for stage in pipeline.stages.values() {
        match caps::open_grants(stage) {
            Ok(granted) => {
                errors
                    .grants
                    .extend(reached(&stage.name, &granted, protected, &[]));
                opened.insert(stage.name.clone(), granted);
            }
            Err(e) => errors.programs.push(format!("stage `{}`: {e}", stage.name)),
        }
    }
    if !errors.grants.is_empty() {
        return Err(errors);
    }
    let mut plugins = IndexMap::new();
    for (name, plugin) in &pipeline.plugins {
        match LoadedPlugin::load_validated(runtime, cache, plugin).await {
            Ok(loaded) => {
                if loaded.cache == CacheUse::Recompiled {
                    eprintln!(
                        "warning: plugin `{name}`: its compiled-cache entry failed verification \
                         (not made by this host's key for this component); it was not used, the \
                         plugin was compiled again (recorded in run.json as `recompiled`)"
                    );
                }
                plugins.insert(name.clone(), Arc::new(loaded));
            }
            Err(e) => errors.plugins.push(format!("plugin `{name}`: {e}")),
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
            for problem in super::config::problems(schema, &stage.with, true) {
                errors.configs.push(format!(
                    "stage `{}` (plugin `{}`): {problem}",
                    stage.name, stage.plugin
                ));
            }
        }
        for m in caps::check(stage, requests) {
            errors
                .missing
                .push((stage.name.clone(), stage.plugin.clone(), m));
        }
        let extra = caps::unrequested(stage, requests);
        if !extra.is_empty() {
            unrequested.insert(stage.name.clone(), extra);
        }
        let granted = opened.remove(&stage.name).unwrap_or_default();
        match StagePolicy::new(stage, requests, granted) {
            Ok(policy) => {
                policies.insert(stage.name.clone(), policy);
            }
            Err(e) => errors.programs.push(format!("stage `{}`: {e}", stage.name)),
        }
    }
    errors.grants = not_writable(&pipeline, &policies);
    if !errors.is_empty() {
        return Err(errors);
    }
    Ok(Prepared {
        pipeline,
        plugins,
        policies,
        unrequested,
    })
}

/// Write grants that reach what only the operator writes: the pipeline
/// file itself (a stage that could edit it would grant itself anything on
/// the next run), the plugins' components and the programs stages run.
fn not_writable(pipeline: &Pipeline, policies: &HashMap<String, StagePolicy>) -> Vec<String> {
    let mut files: Vec<Protected> = Vec::new();
    let mut locate = |path: &std::path::Path, what: String| match Protected::locate(path, what) {
        Ok(p) => {
            files.push(p);
            None
        }
        Err(e) => Some(format!("cannot locate {}: {e}", path.display())),
    };
    if let Some(e) = locate(&pipeline.file, "the pipeline file".into()) {
        return vec![e];
    }
    for (name, plugin) in &pipeline.plugins {
        if let Some(e) = locate(&plugin.path, format!("plugin `{name}`'s component")) {
            return vec![e];
        }
    }
    for policy in policies.values() {
        for program in &policy.exec {
            let what = format!("the program `{}`", program.program);
            match Protected::of_open_file(&program.path, &program.file.file, what) {
                Ok(p) => files.push(p),
                Err(e) => return vec![format!("cannot locate {}: {e}", program.path.display())],
            }
        }
    }
    let mut problems = Vec::new();
    for stage in pipeline.stages.values() {
        if let Some(policy) = policies.get(&stage.name) {
            problems.extend(reached(&stage.name, &policy.granted, &[], &files));
        }
    }
    problems
}

/// The grants of `stage` that reach one of `protected` (any grant) or of
/// `files` (write grants only), as messages.
fn reached(
    stage: &str,
    granted: &[(GrantKind, GrantDir)],
    protected: &[Protected],
    files: &[Protected],
) -> Vec<String> {
    let mut problems = Vec::new();
    for (kind, dir) in granted {
        let writable = *kind == GrantKind::Write;
        // Walked once per grant, compared with everything protected.
        let lineage = match dir.lineage() {
            Ok(lineage) => lineage,
            Err(e) => {
                problems.push(format!(
                    "stage `{stage}`: cannot check the {kind} grant {}: {e}",
                    dir.path.display()
                ));
                continue;
            }
        };
        let mut candidates = protected
            .iter()
            .map(|p| (p, true))
            .chain(files.iter().filter(|_| writable).map(|p| (p, false)));
        if let Some((p, is_state)) = candidates.find(|(p, _)| p.overlaps(&lineage)) {
            problems.push(format!(
                "stage `{stage}`: the {kind} grant {} reaches {} ({}); grant a directory that \
                     neither contains it nor lies inside it{}",
                dir.path.display(),
                p.what,
                p.path.display(),
                if is_state {
                    ", or move Capstan's state with --state-dir / --store"
                } else {
                    ""
                }
            ));
        }
    }
    problems
}
