//! From the file as written to a validated [`Pipeline`], finding every
//! problem in one pass, each located. Nothing here may panic, whatever the
//! file says (`fuzz` tests feed it mutated pipelines): a stage that is
//! invalid is left out of what is built, but what other stages say about
//! it (`needs`, references, cycles) is still checked against the file.

use std::collections::{HashMap, HashSet};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use indexmap::{IndexMap, IndexSet};
use serde_json::Value;
use toml::Spanned;

use super::dag::{self, Graph};
use super::diag::{self, Diagnostic, Diagnostics};
use super::file::{self, Grants};
use super::interpolate::{self, Reference};
use super::source::{Part, SourceMap};
use super::{
    DEFAULT_MAX_OUTPUT, DEFAULT_MEMORY, DEFAULT_TIMEOUT, Pipeline, PluginBytes, PluginRef, Stage,
    name_problem, patterns,
};

/// The most stages one pipeline may have.
pub const MAX_STAGES: usize = 1000;

pub(super) struct Validator<'a> {
    pub map: &'a Arc<SourceMap>,
    pub dir: &'a Path,
    pub errors: Vec<Diagnostic>,
}

impl Validator<'_> {
    fn error(&mut self, span: Option<Range<usize>>, message: String, help: Option<String>) {
        let mut d = self.map.error_at(span, message);
        d.help = help;
        self.errors.push(d);
    }

    /// Whether another problem will be shown: past [`diag::MAX_SHOWN`]
    /// they are only counted, so their hints are not worked out.
    fn room(&self) -> bool {
        self.errors.len() < diag::MAX_SHOWN
    }

    /// A problem of stage `stage` at `span`.
    fn stage_error(&mut self, stage: &str, span: Range<usize>, message: String, help: String) {
        let d = self
            .map
            .error_at(Some(span), message)
            .help(help)
            .stage(stage);
        self.errors.push(d);
    }

    pub fn validate(
        mut self,
        raw: file::PipelineFile,
        file: PathBuf,
    ) -> Result<Pipeline, Diagnostics> {
        // Upstream sets grow with the square of a chain's length.
        if let Some((name, _)) = raw.stages.get_index(MAX_STAGES) {
            self.error(
                Some(name.span()),
                format!(
                    "the pipeline has {} stages, more than {MAX_STAGES}",
                    raw.stages.len()
                ),
                Some("split it into several pipelines".into()),
            );
            return Err(Diagnostics::new(self.errors));
        }
        let environments = match &raw.pipeline.environments {
            Some(envs) if envs.get_ref().is_empty() => {
                self.error(
                    Some(envs.span()),
                    "`environments` is empty".into(),
                    Some("list at least one, e.g. environments = [\"dev\", \"production\"]".into()),
                );
                vec!["default".to_string()]
            }
            Some(envs) => envs.get_ref().clone(),
            None => vec!["default".to_string()],
        };
        let protected = self.protected(&raw.pipeline.protected, &environments);
        if raw.stages.is_empty() {
            let span = self.map.nearest(&["pipeline"], Part::Key);
            self.error(
                Some(span),
                "the pipeline has no stages".into(),
                Some("add at least one `[stages.<name>]` table with a `plugin`".into()),
            );
        }
        let plugins = self.plugins(&raw);
        let secrets = super::secrets::declared(&raw.secrets, self.dir, self.map, &mut self.errors);
        let (graph, bad_needs) = self.graph(&raw);
        let mut stages = IndexMap::new();
        for (name, entry) in &raw.stages {
            let stage = self.stage(name, entry, &raw, &graph, &plugins, &environments);
            self.errors.extend(super::secrets::check_stage(
                name.get_ref(),
                &entry.grants,
                &with_json(entry),
                &secrets,
                &raw.secrets,
                self.map,
            ));
            if let Some(stage) = stage.filter(|_| !bad_needs.contains(name.get_ref())) {
                stages.insert(name.get_ref().clone(), stage);
            }
        }
        let order = match dag::order(&graph) {
            Ok(order) => order,
            Err(cycle) => {
                let first = raw
                    .stages
                    .keys()
                    .find(|k| Some(k.get_ref()) == cycle.first())
                    .map(|k| k.span());
                self.error(
                    first,
                    format!("stages form a cycle: {}", cycle.join(" → ")),
                    Some("remove one of these `needs` so the stages can run in order".into()),
                );
                Vec::new()
            }
        };
        let names = dag::names(&graph);
        for (name, entry) in &raw.stages {
            let upstream = dag::upstream(&graph, name.get_ref(), &names);
            self.check_references(name.get_ref(), entry, &upstream, &graph);
            if let Some(stage) = stages.get_mut(name.get_ref()) {
                stage.upstream = upstream;
            }
        }
        let rollback_reuse = self.rollback(&raw);
        let drift_stages = self.drift(&raw);
        let sandbox =
            super::sandbox::validate(&raw.sandbox, self.dir, self.map).unwrap_or_else(|problems| {
                self.errors.extend(problems);
                Default::default()
            });
        let approvers = match &raw.approvers {
            Some(entry) => super::approvers::validate(entry.get_ref(), self.dir, self.map)
                .map_err(|problems| self.errors.extend(problems))
                .ok(),
            None => None,
        };
        for (name, entry) in &raw.stages {
            let gate = self.gate(name.get_ref(), entry, &raw, &stages);
            if let Some(stage) = stages.get_mut(name.get_ref()) {
                stage.requires_approval = gate;
            }
        }
        if !self.errors.is_empty() {
            return Err(Diagnostics::new(self.errors));
        }
        let stages: IndexMap<String, Stage> = order
            .into_iter()
            .filter_map(|name| stages.swap_remove(&name).map(|s| (name, s)))
            .collect();
        Ok(Pipeline {
            dir: self.dir.to_path_buf(),
            file,
            name: raw.pipeline.name,
            description: raw.pipeline.description,
            environments,
            protected,
            // More at once than there are stages changes nothing (and a
            // huge number would not make a semaphore).
            concurrency: raw
                .pipeline
                .concurrency
                .unwrap_or(4)
                .clamp(1, stages.len().max(1)),
            plugins,
            stages,
            digest: String::new(),
            rollback_reuse,
            sandbox,
            approvers,
            drift_stages,
            secrets,
            source: self.map.clone(),
        })
    }

    /// `[pipeline] protected` names environments of the pipeline.
    fn protected(&mut self, protected: &[Spanned<String>], environments: &[String]) -> Vec<String> {
        let known: HashSet<&str> = environments.iter().map(String::as_str).collect();
        let mut out: IndexSet<String> = IndexSet::new();
        for name in protected {
            let env = name.get_ref();
            if known.contains(env.as_str()) {
                out.insert(env.clone());
                continue;
            }
            let help = self.room().then(|| {
                match diag::closest(env, environments.iter().map(String::as_str)) {
                    Some(c) => format!("did you mean `{c}`?"),
                    None => format!(
                        "environments are: {}; a protected environment must be one of them",
                        diag::list(environments)
                    ),
                }
            });
            self.error(
                Some(name.span()),
                format!(
                    "`protected` names environment `{env}`, which is not in [pipeline] environments"
                ),
                help,
            );
        }
        out.into_iter().collect()
    }

    /// The `needs` of every stage of the file, valid or not, so that order,
    /// cycles and upstream stages are known for all of them; a stage that
    /// needs itself or an unknown stage is reported here (and is invalid).
    fn graph(&mut self, raw: &file::PipelineFile) -> (Graph, HashSet<String>) {
        let names: HashSet<&str> = raw.stages.keys().map(|k| k.get_ref().as_str()).collect();
        let mut graph = Graph::new();
        let mut invalid = HashSet::new();
        for (name, entry) in &raw.stages {
            let stage = name.get_ref();
            let mut needs: IndexSet<String> = IndexSet::new();
            for need in &entry.needs {
                let need_name = need.get_ref();
                if need_name == stage {
                    invalid.insert(stage.clone());
                    self.stage_error(
                        stage,
                        need.span(),
                        format!("stage `{stage}` needs itself"),
                        "remove it from `needs`".into(),
                    );
                } else if !names.contains(need_name.as_str()) {
                    invalid.insert(stage.clone());
                    let stages = || raw.stages.keys().map(|k| k.get_ref().as_str());
                    let help = self
                        .room()
                        .then(|| match diag::closest(need_name, stages()) {
                            Some(c) => format!("did you mean `{c}`?"),
                            None => format!("stages are: {}", diag::list(stages())),
                        });
                    let d = self.map.error_at(
                        Some(need.span()),
                        format!("stage `{stage}` needs `{need_name}`, which is not a stage in this pipeline"),
                    );
                    self.errors.push(Diagnostic { help, ..d }.stage(stage));
                } else {
                    needs.insert(need_name.clone());
                }
            }
            graph.insert(stage.clone(), needs.into_iter().collect());
        }
        (graph, invalid)
    }

    /// Every exec `args` and `connect` pattern of a stage follows the
    /// grammar in [`patterns`], so that each means one thing.
    fn patterns(&mut self, stage: &str, grants: &Grants) {
        for (e, grant) in grants.exec.iter().enumerate() {
            for (a, problem) in patterns::args_problems(&grant.args) {
                let (e, a) = (e.to_string(), a.to_string());
                let path = ["stages", stage, "grants", "exec", &e, "args", &a];
                let span = self.map.nearest(&path, Part::Value);
                let message = format!(
                    "stage `{stage}`, exec grant of `{}`: {}",
                    grant.program, problem.message
                );
                self.stage_error(stage, span, message, problem.help);
            }
            for (key, value) in [
                ("open_files", grant.limits.open_files),
                ("processes", grant.limits.processes),
            ] {
                if value == Some(0) {
                    let e = e.to_string();
                    let path = ["stages", stage, "grants", "exec", &e, "limits", key];
                    let d = super::sandbox::zero_limit(self.map, &path, key);
                    self.errors.push(d.stage(stage));
                }
            }
        }
        for (c, pattern) in grants.connect.iter().enumerate() {
            if let Err(problem) = patterns::ConnectPattern::parse(pattern) {
                let c = c.to_string();
                let path = ["stages", stage, "grants", "connect", &c];
                let span = self.map.nearest(&path, Part::Value);
                let message = format!("stage `{stage}`: {}", problem.message);
                self.stage_error(stage, span, message, problem.help);
            }
        }
    }

    /// `[rollback] reuse` names stages; `on_failure = "rollback"` needs it.
    fn rollback(&mut self, raw: &file::PipelineFile) -> Vec<String> {
        let mut reuse = Vec::new();
        if let Some(rollback) = &raw.rollback {
            for name in &rollback.get_ref().reuse {
                if raw.stages.contains_key(name.get_ref().as_str()) {
                    reuse.push(name.get_ref().clone());
                } else {
                    let stages = raw.stages.keys().map(|k| k.get_ref().as_str());
                    let help = match self.room().then(|| diag::closest(name.get_ref(), stages)) {
                        Some(Some(c)) => format!("did you mean `{c}`?"),
                        _ => "list the stages whose outputs a rollback takes from the run it redeploys, e.g. reuse = [\"build\"]".into(),
                    };
                    self.error(
                        Some(name.span()),
                        format!(
                            "[rollback] reuses `{}`, which is not a stage in this pipeline",
                            name.get_ref()
                        ),
                        Some(help),
                    );
                }
            }
            if rollback.get_ref().reuse.is_empty() {
                self.error(
                    Some(rollback.span()),
                    "[rollback] reuses no stage, so a rollback would redeploy nothing older".into(),
                    Some(
                        "name the stage that produces what to deploy, e.g. reuse = [\"build\"]"
                            .into(),
                    ),
                );
            }
        }
        for (name, entry) in &raw.stages {
            if let Some(on) = &entry.on_failure
                && *on.get_ref() == file::OnFailure::Rollback
                && raw.rollback.is_none()
            {
                self.stage_error(
                    name.get_ref(),
                    on.span(),
                    format!("stage `{}` rolls back on failure, but the pipeline has no [rollback] section", name.get_ref()),
                    "add [rollback] with reuse = [\"<the stage whose outputs to redeploy>\"], e.g. reuse = [\"build\"]".into(),
                );
            }
        }
        reuse
    }

    fn plugins(&mut self, raw: &file::PipelineFile) -> IndexMap<String, PluginRef> {
        let mut plugins: IndexMap<String, PluginRef> = IndexMap::new();
        // A file named twice is read and hashed once.
        let mut read: HashMap<PathBuf, (Arc<[u8]>, String)> = HashMap::new();
        for (name, entry) in &raw.plugins {
            let path = self.dir.join(entry.path.get_ref());
            let limit = crate::runtime::bounds::PLUGIN_LIMITS.size;
            let known = read.get(&path).cloned();
            let found = match known {
                Some(known) => Ok(known),
                None => super::read::read_bounded(&path, limit).map(|bytes| {
                    let digest = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&bytes));
                    let known = (Arc::from(bytes), digest);
                    read.insert(path.clone(), known.clone());
                    known
                }),
            };
            let (bytes, digest) = match found {
                Ok(found) => found,
                Err(e) => {
                    self.error(
                        Some(entry.path.span()),
                        format!("plugin `{}`: cannot read `{}`: {e}", name.get_ref(), path.display()),
                        Some(format!("paths are relative to the pipeline file's directory ({}); build the plugin or fix the path", self.dir.display())),
                    );
                    continue;
                }
            };
            if let Some(pin) = &entry.sha256
                && !pin.get_ref().eq_ignore_ascii_case(&digest)
            {
                self.error(
                    Some(pin.span()),
                    format!("plugin `{}`: sha256 of `{}` is {digest}, but the pipeline pins {}", name.get_ref(), path.display(), pin.get_ref()),
                    Some("the plugin file changed since it was pinned: review the new plugin (`capstan audit`), then update `sha256`".into()),
                );
            }
            plugins.insert(
                name.get_ref().clone(),
                PluginRef {
                    name: name.get_ref().clone(),
                    path,
                    digest,
                    pinned: entry.sha256.is_some(),
                    bytes: PluginBytes(bytes),
                },
            );
        }
        plugins
    }

    fn stage(
        &mut self,
        name: &Spanned<String>,
        entry: &file::StageEntry,
        raw: &file::PipelineFile,
        graph: &Graph,
        plugins: &IndexMap<String, PluginRef>,
        environments: &[String],
    ) -> Option<Stage> {
        let stage_name = name.get_ref();
        let mut ok = true;
        if let Some(problem) = name_problem(stage_name) {
            // Stage names become file names (its work dir, its log): one
            // that is not a plain name could put them anywhere, even on
            // Capstan's own state.
            self.stage_error(
                stage_name,
                name.span(),
                format!("stage name `{}` {problem}", crate::text::inline(stage_name)),
                "name stages with letters, digits, `_` and `-` (at most 64, not starting with `-`), e.g. [stages.plan]".into(),
            );
            ok = false;
        }
        let plugin = entry.plugin.get_ref();
        if !raw.plugins.contains_key(plugin.as_str()) {
            let known = || raw.plugins.keys().map(|k| k.get_ref().as_str());
            let help = self.room().then(|| match diag::closest(plugin, known()) {
                Some(c) => format!("did you mean `{c}`?"),
                None if raw.plugins.is_empty() => {
                    "declare it: [plugins.<name>] path = \"path/to/plugin.wasm\"".into()
                }
                None => format!("declared plugins: {}", diag::list(known())),
            });
            let d = self.map.error_at(
                Some(entry.plugin.span()),
                format!("stage `{stage_name}` uses plugin `{plugin}`, which is not declared under [plugins]"),
            );
            self.errors
                .push(Diagnostic { help, ..d }.stage(stage_name.as_str()));
            ok = false;
        } else if !plugins.contains_key(plugin) {
            ok = false; // its file problem is already reported
        }
        let stage_envs = entry.environments.as_ref().map(|e| e.get_ref().clone());
        if let Some(envs) = &entry.environments {
            let known: HashSet<&str> = environments.iter().map(String::as_str).collect();
            for (i, e) in envs.get_ref().iter().enumerate() {
                if known.contains(e.as_str()) {
                    continue;
                }
                let i = i.to_string();
                let path = ["stages", stage_name, "environments", &i];
                let span = self.map.nearest(&path, Part::Value);
                let help = self
                    .room()
                    .then(|| match diag::closest(e, known.iter().copied()) {
                        Some(c) => format!("did you mean `{c}`?"),
                        None => format!("environments are: {}", diag::list(environments)),
                    });
                let d = self.map.error_at(
                    Some(span),
                    format!("stage `{stage_name}` names environment `{e}`, which is not in [pipeline] environments"),
                );
                self.errors
                    .push(Diagnostic { help, ..d }.stage(stage_name.as_str()));
                ok = false;
            }
        }
        if let Some(run_if) = &entry.run_if
            && *run_if.get_ref() == file::RunIf::Failure
            && entry.needs.is_empty()
        {
            // Nothing before it could fail: it would always be skipped.
            self.stage_error(
                stage_name,
                run_if.span(),
                format!("stage `{stage_name}` has run_if = \"failure\" but needs no stage, so it could never run"),
                "list the stages whose failure it reports in `needs`, e.g. needs = [\"deploy\"]; it runs once they \
                 have all ended, if one of them (or a stage before them) failed or waits for approval"
                    .into(),
            );
            ok = false;
        }
        self.patterns(stage_name, &entry.grants);
        let read_dirs = self.dirs(stage_name, "read", &entry.grants.read);
        let write_dirs = self.dirs(stage_name, "write", &entry.grants.write);
        let d = &raw.defaults;
        ok.then(|| Stage {
            name: stage_name.clone(),
            plugin: plugin.clone(),
            needs: graph.get(stage_name).cloned().unwrap_or_default(),
            upstream: Default::default(),
            with: with_json(entry),
            grants: entry.grants.clone(),
            read_dirs: read_dirs.unwrap_or_default(),
            write_dirs: write_dirs.unwrap_or_default(),
            timeout: entry.timeout.or(d.timeout).unwrap_or(DEFAULT_TIMEOUT),
            memory: entry
                .memory
                .or(d.memory)
                .map_or(DEFAULT_MEMORY, |b| b.as_u64()),
            max_output: entry
                .max_output
                .or(d.max_output)
                .map_or(DEFAULT_MAX_OUTPUT, |b| b.as_u64()),
            environments: stage_envs,
            on_failure: entry
                .on_failure
                .as_ref()
                .map(|o| *o.get_ref())
                .unwrap_or_default(),
            requires_approval: None,
            image_digest: entry.image_digest.as_ref().map(|i| i.get_ref().clone()),
            trigger_paths: self.triggers(stage_name, entry),
            run_if: entry
                .run_if
                .as_ref()
                .map(|r| *r.get_ref())
                .unwrap_or_default(),
        })
    }

    /// `triggers.paths` are globs.
    fn triggers(&mut self, stage: &str, entry: &file::StageEntry) -> Vec<String> {
        let paths = entry.triggers.as_ref().map(|t| &t.paths[..]).unwrap_or(&[]);
        for path in paths {
            if let Err(e) = crate::run::changes::glob(path.get_ref()) {
                self.stage_error(
                    stage,
                    path.span(),
                    format!("stage `{stage}`: triggers.paths `{}` is not a glob: {}", path.get_ref(), e.kind()),
                    "write a glob relative to the pipeline file, e.g. \"packer/**\" or \"infrastructure/*.tf\"".into(),
                );
            }
        }
        paths.iter().map(|p| p.get_ref().clone()).collect()
    }

    /// `[drift] stages` are stages of the pipeline.
    fn drift(&mut self, raw: &file::PipelineFile) -> Vec<String> {
        let Some(drift) = &raw.drift else {
            return Vec::new();
        };
        if drift.stages.is_empty() {
            let span = self.map.nearest(&["drift"], Part::Key);
            self.error(
                Some(span),
                "[drift] stages is empty".into(),
                Some("name the plan stage(s), e.g. stages = [\"plan\"]".into()),
            );
        }
        for s in &drift.stages {
            if !raw.stages.contains_key(s.get_ref().as_str()) {
                let help =
                    diag::closest(s.get_ref(), raw.stages.keys().map(|k| k.get_ref().as_str()))
                        .map(|c| format!("did you mean `{c}`?"));
                self.error(
                    Some(s.span()),
                    format!(
                        "[drift] stages names `{}`, which is not a stage",
                        s.get_ref()
                    ),
                    help,
                );
            }
        }
        drift.stages.iter().map(|s| s.get_ref().clone()).collect()
    }

    /// `requires_approval` names an approval stage upstream of this one and
    /// a string key of this stage's `with`.
    fn gate(
        &mut self,
        name: &str,
        entry: &file::StageEntry,
        raw: &file::PipelineFile,
        stages: &IndexMap<String, Stage>,
    ) -> Option<super::Gate> {
        let gate = entry.requires_approval.as_ref()?.get_ref();
        let (from, key) = (gate.stage.get_ref(), gate.digest.get_ref());
        let upstream = stages.get(name).map(|s| &s.upstream);
        let approval_stage = raw.stages.get(from.as_str());
        let problem = if approval_stage.is_none() {
            Some((gate.stage.span(), format!("stage `{name}`: requires_approval names stage `{from}`, which does not exist"), "name the approval stage, e.g. requires_approval = { stage = \"approve\", digest = \"approved_digest\" }".to_string()))
        } else if upstream.is_some_and(|u| !u.contains(from.as_str())) {
            Some((
                gate.stage.span(),
                format!(
                    "stage `{name}`: requires_approval names stage `{from}`, which is not upstream of `{name}`"
                ),
                format!("add \"{from}\" to `needs` of stage `{name}`"),
            ))
        } else if approval_stage.is_some_and(|s| !s.grants.approval) {
            Some((
                gate.stage.span(),
                format!(
                    "stage `{name}`: requires_approval names stage `{from}`, which is not granted `approval`"
                ),
                format!(
                    "name the stage that asks for the approval, or grant it: [stages.{from}.grants] approval = true"
                ),
            ))
        } else if !entry
            .with
            .as_ref()
            .is_some_and(|w| w.get_ref().get(key).is_some_and(toml::Value::is_str))
        {
            Some((
                gate.digest.span(),
                format!(
                    "stage `{name}`: requires_approval digest = \"{key}\", but its `with` has no string `{key}`"
                ),
                format!(
                    "name the key of [stages.{name}.with] that holds the approved digest, e.g. \"approved_digest\""
                ),
            ))
        } else {
            None
        };
        if let Some((span, message, help)) = problem {
            self.stage_error(name, span, message, help);
            return None;
        }
        Some(super::Gate {
            stage: from.clone(),
            digest_key: key.clone(),
        })
    }

    /// Canonical paths of granted directories; each must exist.
    fn dirs(&mut self, stage: &str, kind: &str, dirs: &[String]) -> Option<Vec<PathBuf>> {
        let mut out = Vec::new();
        for (i, dir) in dirs.iter().enumerate() {
            let index = i.to_string();
            let span = self
                .map
                .nearest(&["stages", stage, "grants", kind, &index], Part::Value);
            let path = self.dir.join(dir);
            match path.canonicalize() {
                Ok(p) if p.is_dir() => out.push(p),
                Ok(p) => self.stage_error(
                    stage,
                    span,
                    format!(
                        "stage `{stage}`: `{kind}` grant `{dir}` ({}) is not a directory",
                        p.display()
                    ),
                    "grants are directories; grant the directory that holds the file".into(),
                ),
                Err(e) => self.stage_error(
                    stage,
                    span,
                    format!(
                        "stage `{stage}`: `{kind}` grant `{dir}` ({}): {e}",
                        path.display()
                    ),
                    format!(
                        "create the directory, or fix the path (relative to {})",
                        self.dir.display()
                    ),
                ),
            }
        }
        (out.len() == dirs.len()).then_some(out)
    }

    /// Every `${…}` in the stage's `with` is well-formed, and each stage
    /// output or status it names is of a stage upstream of this one.
    fn check_references(
        &mut self,
        name: &str,
        entry: &file::StageEntry,
        upstream: &dag::Upstream,
        graph: &Graph,
    ) {
        let with = with_json(entry);
        let image = entry.image_digest.as_ref().map(|i| i.get_ref().as_str());
        let image_path = vec!["image_digest".to_string()];
        let texts = strings(&with)
            .into_iter()
            .map(|(path, text)| (path, text, "with"))
            .chain(image.map(|text| (image_path.clone(), text, "")));
        for (path, text, table) in texts {
            let mut at: Vec<&str> = vec!["stages", name];
            at.extend((!table.is_empty()).then_some(table));
            at.extend(path.iter().map(String::as_str));
            let value = self.map.nearest(&at, Part::Value);
            let refs = match interpolate::references(text) {
                Ok(refs) => refs,
                Err(message) => {
                    let span = self.map.narrow(value.clone(), text);
                    let d = self
                        .map
                        .error_at(Some(span), format!("stage `{name}`: {message}"));
                    self.errors.push(d.stage(name));
                    continue;
                }
            };
            for (range, reference) in refs {
                let (Reference::StageOutput { stage: from, .. } | Reference::StageStatus(from)) =
                    &reference
                else {
                    continue;
                };
                let Some(written) = text.get(range) else {
                    continue;
                };
                let span = self.map.narrow(value.clone(), written);
                if !graph.contains_key(from) {
                    let mut d = self.map.error_at(
                        Some(span),
                        format!(
                            "stage `{name}` references `{written}`, but there is no stage `{from}`"
                        ),
                    );
                    if self.room() {
                        d.help = diag::closest(from, graph.keys().map(String::as_str))
                            .map(|c| format!("did you mean `{c}`?"));
                    }
                    self.errors.push(d.stage(name));
                } else if !upstream.contains(from.as_str()) {
                    self.stage_error(
                        name,
                        span,
                        format!("stage `{name}` references `{written}`, but `{from}` is not upstream of `{name}`"),
                        format!("add \"{from}\" to `needs` of stage `{name}`"),
                    );
                }
            }
        }
    }
}

/// A TOML value as JSON (what plugins receive, what JSON Schemas check);
/// dates and times are written as TOML writes them.
pub fn toml_json(value: &toml::Value) -> Value {
    match value {
        toml::Value::String(s) => Value::String(s.clone()),
        toml::Value::Integer(i) => Value::from(*i),
        toml::Value::Float(f) => Value::from(*f),
        toml::Value::Boolean(b) => Value::Bool(*b),
        toml::Value::Datetime(d) => Value::String(d.to_string()),
        toml::Value::Array(items) => Value::Array(items.iter().map(toml_json).collect()),
        toml::Value::Table(t) => table_json(t),
    }
}

fn table_json(t: &toml::Table) -> Value {
    Value::Object(t.iter().map(|(k, v)| (k.clone(), toml_json(v))).collect())
}

/// A stage's `with` table as JSON.
fn with_json(entry: &file::StageEntry) -> Value {
    match &entry.with {
        Some(t) => table_json(t.get_ref()),
        None => Value::Object(Default::default()),
    }
}

/// Every string inside a JSON value, with its path (keys and indexes).
pub fn strings(value: &Value) -> Vec<(Vec<String>, &str)> {
    fn walk<'a>(value: &'a Value, path: &mut Vec<String>, out: &mut Vec<(Vec<String>, &'a str)>) {
        match value {
            Value::String(s) => out.push((path.clone(), s)),
            Value::Array(items) => {
                for (i, v) in items.iter().enumerate() {
                    path.push(i.to_string());
                    walk(v, path, out);
                    path.pop();
                }
            }
            Value::Object(map) => {
                for (k, v) in map {
                    path.push(k.clone());
                    walk(v, path, out);
                    path.pop();
                }
            }
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(value, &mut Vec::new(), &mut out);
    out
}
