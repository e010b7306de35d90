//! Everything checked before any stage runs: plugins load and describe
//! themselves, every request is granted, every granted program exists.

use std::collections::HashMap;
use std::fmt;
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
}

impl PrepareErrors {
    fn is_empty(&self) -> bool {
        self.plugins.is_empty()
            && self.missing.is_empty()
            && self.programs.is_empty()
            && self.configs.is_empty()
    }
}

impl fmt::Display for PrepareErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for p in &self.plugins {
            writeln!(f, "error: {p}")?;
        }
        for p in self.programs.iter().chain(&self.configs) {
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
pub async fn prepare(
    pipeline: Pipeline,
    runtime: &Runtime,
    cache: &Cache,
) -> Result<Prepared, PrepareErrors> {
    let mut errors = PrepareErrors::default();
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
