//! Everything checked before any stage runs: plugins load and describe
//! themselves, every request is granted, every granted program exists.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use indexmap::IndexMap;
use serde::Serialize;

use crate::caps::{self, Missing, StagePolicy};
use crate::pipeline::Pipeline;
use crate::runtime::Runtime;
use crate::runtime::cache::Cache;
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
    /// Grants that would expose Capstan's own state to a plugin.
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
                m.request.reason,
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
/// No read or write grant may cover a `protected` path (Capstan's state dir
/// and run store: a plugin that could write them could forge an approval or
/// rewrite the audit log).
pub async fn prepare(
    pipeline: Pipeline,
    runtime: &Runtime,
    cache: &Cache,
    protected: &[PathBuf],
) -> Result<Prepared, PrepareErrors> {
    let mut errors = PrepareErrors::default();
    for stage in pipeline.stages.values() {
        for (kind, dirs) in [("read", &stage.read_dirs), ("write", &stage.write_dirs)] {
            for dir in dirs {
                if let Some(p) = protected.iter().find(|p| covers(dir, p) || covers(p, dir)) {
                    errors.grants.push(format!(
                        "stage `{}`: the {kind} grant {} overlaps Capstan's own state ({}: run store, \
                         audit logs, other runs' work dirs); grant a directory outside it, or move the \
                         state with --state-dir / --store",
                        stage.name,
                        dir.display(),
                        p.display()
                    ));
                }
            }
        }
    }
    let mut plugins = IndexMap::new();
    for (name, plugin) in &pipeline.plugins {
        match LoadedPlugin::load(runtime, cache, &plugin.path, Some(&plugin.digest)).await {
            Ok(loaded) => {
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
        match StagePolicy::new(stage, requests) {
            Ok(policy) => {
                policies.insert(stage.name.clone(), policy);
            }
            Err(e) => errors.programs.push(format!("stage `{}`: {e}", stage.name)),
        }
    }
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

/// Whether `outer` is `inner` or one of its ancestors, compared by
/// components on canonical paths (absolute ones for paths that do not
/// exist yet).
fn covers(outer: &Path, inner: &Path) -> bool {
    let real = |p: &Path| {
        p.canonicalize()
            .or_else(|_| std::path::absolute(p))
            .unwrap_or_else(|_| p.to_path_buf())
    };
    real(inner).starts_with(real(outer))
}

#[cfg(test)]
mod tests {
    use super::covers;

    #[test]
    fn a_path_covers_its_descendants_by_components() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        std::fs::create_dir_all(root.join("project/.capstan")).unwrap();
        std::fs::create_dir_all(root.join("project-evil")).unwrap();
        let state = root.join("project/.capstan");
        assert!(covers(&root.join("project"), &state));
        assert!(covers(&state, &state));
        assert!(covers(
            &root.join("project"),
            &root.join("project/not-yet/capstan.db")
        ));
        assert!(!covers(&root.join("project-evil"), &state));
        assert!(covers(&state, &root.join("project/.capstan/runs")));
        assert!(!covers(&root.join("project/.capstan/runs"), &state));
    }
}
