//! The pipeline file: model, validation, DAG order and `${…}` interpolation.
//!
//! [`Pipeline::load`] reads a TOML file and returns either a validated
//! [`Pipeline`] (stages in dependency order, paths absolute) or every problem
//! found, each located by file, line and column.

mod dag;
pub mod diag;
pub mod file;
pub mod interpolate;
pub mod patterns;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use indexmap::IndexMap;
use serde_json::Value;
use sha2::{Digest, Sha256};

pub use diag::{Diagnostic, Diagnostics};
pub use file::{ExecGrant, Grants};
use interpolate::Reference;

/// Why `name` cannot name a stage: only letters, digits, `_` and `-`, at
/// most 64 of them, not starting with `-` (it names files and directories
/// in the run directory, and appears in command lines).
pub fn name_problem(name: &str) -> Option<&'static str> {
    if name.is_empty() {
        Some("is empty")
    } else if name.len() > 64 {
        Some("is longer than 64 characters")
    } else if name.starts_with('-') {
        Some("starts with `-`")
    } else if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        Some("may hold only letters, digits, `_` and `-`")
    } else {
        None
    }
}

/// Default wall-clock limit of a stage.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30 * 60);
/// Default linear-memory limit of a plugin.
pub const DEFAULT_MEMORY: u64 = 256 * 1024 * 1024;
/// Default cap on everything one stage may print.
pub const DEFAULT_MAX_OUTPUT: u64 = 16 * 1024 * 1024;

/// A validated pipeline.
#[derive(Debug, Clone)]
pub struct Pipeline {
    /// Absolute path of the pipeline file.
    pub file: PathBuf,
    /// Its directory; relative paths in the file are relative to it.
    pub dir: PathBuf,
    pub name: String,
    pub description: Option<String>,
    /// Allowed environments; the first is the default.
    pub environments: Vec<String>,
    /// `[pipeline] protected`: environments where only humans approve (no
    /// automatic approval, no override asked for by a plugin).
    pub protected: Vec<String>,
    pub concurrency: usize,
    pub plugins: IndexMap<String, PluginRef>,
    /// Stages in an order where every stage comes after what it needs.
    pub stages: IndexMap<String, Stage>,
    /// sha256 of the file's text: a resumed run refuses a changed file.
    pub digest: String,
    /// `[rollback] reuse`: stages whose outputs a rollback takes from the
    /// run it redeploys (empty: the pipeline cannot be rolled back).
    pub rollback_reuse: Vec<String>,
}

/// `[plugins.<name>]`, resolved.
#[derive(Debug, Clone)]
pub struct PluginRef {
    pub name: String,
    pub path: PathBuf,
    /// sha256 of the file as validated (hex).
    pub digest: String,
    /// Pin from the pipeline file, if any (already checked against `digest`).
    pub pinned: bool,
    /// The bytes that were hashed: loading uses these, never a second read
    /// of a file that could have changed since.
    pub bytes: PluginBytes,
}

/// A plugin file's content, shared (its `Debug` shows only the size).
#[derive(Clone)]
pub struct PluginBytes(pub std::sync::Arc<[u8]>);

impl std::fmt::Debug for PluginBytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "<{} bytes>", self.0.len())
    }
}

/// One stage, resolved.
#[derive(Debug, Clone)]
pub struct Stage {
    pub name: String,
    pub plugin: String,
    pub needs: Vec<String>,
    /// Every stage this one depends on, directly or not.
    pub upstream: BTreeSet<String>,
    /// The `with` table as JSON, references not yet resolved.
    pub with: Value,
    pub grants: Grants,
    /// `read` and `write` grants as canonical absolute paths.
    pub read_dirs: Vec<PathBuf>,
    pub write_dirs: Vec<PathBuf>,
    pub timeout: Duration,
    pub memory: u64,
    pub max_output: u64,
    /// Environments this stage runs in (`None`: all).
    pub environments: Option<Vec<String>>,
    pub on_failure: file::OnFailure,
}

impl Stage {
    /// Whether the stage runs when the pipeline targets `environment`.
    pub fn runs_in(&self, environment: &str) -> bool {
        self.environments
            .as_ref()
            .is_none_or(|envs| envs.iter().any(|e| e == environment))
    }
}

impl Pipeline {
    /// Read and validate a pipeline file.
    pub fn load(path: &Path) -> Result<Pipeline, Diagnostics> {
        let source = std::fs::read_to_string(path).map_err(|e| {
            Diagnostics(vec![
                Diagnostic::file(path, format!("cannot read the pipeline file: {e}"))
                    .help("pass the path of a pipeline TOML file, e.g. `capstan run examples/hello/pipeline.toml`"),
            ])
        })?;
        Self::parse(path, &source)
    }

    /// Validate `source`, the text of the pipeline file at `path`.
    pub fn parse(path: &Path, source: &str) -> Result<Pipeline, Diagnostics> {
        let raw: file::PipelineFile = toml::from_str(source).map_err(|e| {
            let message = e.message().trim_end();
            let mut d = Diagnostic::at(path, source, e.span(), message);
            if let Some(rest) = message.strip_prefix("unknown field `") {
                let (field, expected) = rest.split_once('`').unwrap_or((rest, ""));
                let known: Vec<&str> = expected.split('`').skip(1).step_by(2).collect();
                d = d.help(match diag::closest(field, known.iter().copied()) {
                    Some(c) => format!("did you mean `{c}`? (the pipeline file format is in the README, \"Pipeline file\")"),
                    None => "check the spelling; the pipeline file format is in the README (\"Pipeline file\")".into(),
                });
            } else if message.contains("duplicate key") {
                d = d.help("each key and table may appear once: rename one of them, or merge them");
            }
            Diagnostics(vec![d])
        })?;
        let file = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
        let dir = file.parent().map(Path::to_path_buf).unwrap_or_default();
        let mut pipeline = Validator {
            path,
            source,
            dir: &dir,
            errors: Vec::new(),
            spans: None,
        }
        .validate(raw, file.clone())?;
        pipeline.digest = hex::encode(Sha256::digest(source.as_bytes()));
        Ok(pipeline)
    }

    /// The environment a run targets when `--env` is not given.
    pub fn default_environment(&self) -> &str {
        &self.environments[0]
    }
}

struct Validator<'a> {
    path: &'a Path,
    source: &'a str,
    dir: &'a Path,
    errors: Vec<Diagnostic>,
    /// Places of grant patterns, read when one is refused.
    spans: Option<file::PatternSpans>,
}

impl Validator<'_> {
    fn error(
        &mut self,
        span: Option<std::ops::Range<usize>>,
        message: String,
        help: Option<String>,
    ) {
        let mut d = Diagnostic::at(self.path, self.source, span, message);
        d.help = help;
        self.errors.push(d);
    }

    fn validate(mut self, raw: file::PipelineFile, file: PathBuf) -> Result<Pipeline, Diagnostics> {
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
            self.error(
                None,
                "the pipeline has no stages".into(),
                Some("add at least one `[stages.<name>]` table with a `plugin`".into()),
            );
        }
        let plugins = self.plugins(&raw);
        let mut stages = IndexMap::new();
        for (name, entry) in &raw.stages {
            if let Some(stage) = self.stage(name, entry, &raw, &plugins, &environments) {
                stages.insert(name.get_ref().clone(), stage);
            }
        }
        let order = match dag::order(&stages) {
            Ok(order) => order,
            Err(cycle) => {
                let first = raw
                    .stages
                    .keys()
                    .find(|k| k.get_ref() == &cycle[0])
                    .map(|k| k.span());
                self.error(
                    first,
                    format!("stages form a cycle: {}", cycle.join(" → ")),
                    Some("remove one of these `needs` so the stages can run in order".into()),
                );
                Vec::new()
            }
        };
        for name in &order {
            let upstream = dag::upstream(&stages, name);
            stages[name].upstream = upstream;
        }
        for (name, entry) in &raw.stages {
            if let Some(stage) = stages.get(name.get_ref()) {
                self.check_references(name.get_ref(), entry, stage, &stages);
            }
        }
        let rollback_reuse = self.rollback(&raw);
        if !self.errors.is_empty() {
            return Err(Diagnostics(self.errors));
        }
        let stages = order
            .into_iter()
            .map(|name| {
                let s = stages.swap_remove(&name).expect("ordered stage exists");
                (name, s)
            })
            .collect();
        Ok(Pipeline {
            dir: self.dir.to_path_buf(),
            file,
            name: raw.pipeline.name,
            description: raw.pipeline.description,
            environments,
            protected,
            concurrency: raw.pipeline.concurrency.unwrap_or(4).max(1),
            plugins,
            stages,
            digest: String::new(),
            rollback_reuse,
        })
    }

    /// `[pipeline] protected` names environments of the pipeline.
    fn protected(
        &mut self,
        protected: &[toml::Spanned<String>],
        environments: &[String],
    ) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for name in protected {
            let env = name.get_ref();
            if !environments.contains(env) {
                let help = match diag::closest(env, environments.iter().map(String::as_str)) {
                    Some(c) => format!("did you mean `{c}`?"),
                    None => format!(
                        "environments are: {}; a protected environment must be one of them",
                        environments.join(", ")
                    ),
                };
                self.error(
                    Some(name.span()),
                    format!("`protected` names environment `{env}`, which is not in [pipeline] environments"),
                    Some(help),
                );
            } else if !out.contains(env) {
                out.push(env.clone());
            }
        }
        out
    }

    /// Every exec `args` and `connect` pattern of a stage follows the
    /// grammar in [`patterns`], so that each means one thing.
    fn patterns(&mut self, stage: &str, grants: &Grants) {
        let mut found = Vec::new();
        for (e, grant) in grants.exec.iter().enumerate() {
            for (a, problem) in patterns::args_problems(&grant.args) {
                found.push((Some((e, a)), None, problem));
            }
        }
        for (c, pattern) in grants.connect.iter().enumerate() {
            if let Err(problem) = patterns::ConnectPattern::parse(pattern) {
                found.push((None, Some(c), problem));
            }
        }
        if found.is_empty() {
            return;
        }
        let source = self.source;
        let spans = self
            .spans
            .get_or_insert_with(|| toml::from_str(source).unwrap_or_default());
        let grant_spans = spans.stages.get(stage).map(|s| &s.grants);
        let located: Vec<_> = found
            .into_iter()
            .map(|(arg, connect, problem)| {
                let span = match (arg, connect) {
                    (Some((e, a)), _) => grant_spans
                        .and_then(|g| g.exec.get(e))
                        .and_then(|x| x.args.get(a)),
                    (_, Some(c)) => grant_spans.and_then(|g| g.connect.get(c)),
                    _ => None,
                }
                .map(|s| s.span());
                let message = match arg {
                    Some((e, _)) => format!(
                        "stage `{stage}`, exec grant of `{}`: {}",
                        grants.exec[e].program, problem.message
                    ),
                    None => format!("stage `{stage}`: {}", problem.message),
                };
                (span, message, problem.help)
            })
            .collect();
        for (span, message, help) in located {
            self.error(span, message, Some(help));
        }
    }

    /// `[rollback] reuse` names stages; `on_failure = "rollback"` needs it.
    fn rollback(&mut self, raw: &file::PipelineFile) -> Vec<String> {
        let mut reuse = Vec::new();
        if let Some(rollback) = &raw.rollback {
            for name in &rollback.get_ref().reuse {
                if raw.stages.keys().any(|k| k.get_ref() == name.get_ref()) {
                    reuse.push(name.get_ref().clone());
                } else {
                    let stages = raw.stages.keys().map(|k| k.get_ref().as_str());
                    let help = match diag::closest(name.get_ref(), stages) {
                        Some(c) => format!("did you mean `{c}`?"),
                        None => "list the stages whose outputs a rollback takes from the run it redeploys, e.g. reuse = [\"build\"]".into(),
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
                self.error(
                    Some(on.span()),
                    format!("stage `{}` rolls back on failure, but the pipeline has no [rollback] section", name.get_ref()),
                    Some("add [rollback] with reuse = [\"<the stage whose outputs to redeploy>\"], e.g. reuse = [\"build\"]".into()),
                );
            }
        }
        reuse
    }

    fn plugins(&mut self, raw: &file::PipelineFile) -> IndexMap<String, PluginRef> {
        let mut plugins = IndexMap::new();
        for (name, entry) in &raw.plugins {
            let path = self.dir.join(entry.path.get_ref());
            let bytes = match std::fs::read(&path) {
                Ok(bytes) => bytes,
                Err(e) => {
                    self.error(
                        Some(entry.path.span()),
                        format!("plugin `{}`: cannot read `{}`: {e}", name.get_ref(), path.display()),
                        Some(format!("paths are relative to the pipeline file's directory ({}); build the plugin or fix the path", self.dir.display())),
                    );
                    continue;
                }
            };
            let digest = hex::encode(Sha256::digest(&bytes));
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
                    bytes: PluginBytes(bytes.into()),
                },
            );
        }
        plugins
    }

    fn stage(
        &mut self,
        name: &toml::Spanned<String>,
        entry: &file::StageEntry,
        raw: &file::PipelineFile,
        plugins: &IndexMap<String, PluginRef>,
        environments: &[String],
    ) -> Option<Stage> {
        let stage_name = name.get_ref();
        let mut ok = true;
        if let Some(problem) = name_problem(stage_name) {
            // Stage names become file names (its work dir, its log): one
            // that is not a plain name could put them anywhere, even on
            // Capstan's own state.
            self.error(
                Some(name.span()),
                format!("stage name `{}` {problem}", crate::text::inline(stage_name)),
                Some(
                    "name stages with letters, digits, `_` and `-` (at most 64, not starting with `-`), e.g. [stages.plan]"
                        .into(),
                ),
            );
            ok = false;
        }
        if !raw
            .plugins
            .keys()
            .any(|k| k.get_ref() == entry.plugin.get_ref())
        {
            let known: Vec<&str> = raw.plugins.keys().map(|k| k.get_ref().as_str()).collect();
            let help = match diag::closest(entry.plugin.get_ref(), known.iter().copied()) {
                Some(c) => format!("did you mean `{c}`?"),
                None if known.is_empty() => {
                    "declare it: [plugins.<name>] path = \"path/to/plugin.wasm\"".into()
                }
                None => format!("declared plugins: {}", known.join(", ")),
            };
            self.error(
                Some(entry.plugin.span()),
                format!(
                    "stage `{stage_name}` uses plugin `{}`, which is not declared under [plugins]",
                    entry.plugin.get_ref()
                ),
                Some(help),
            );
            ok = false;
        } else if !plugins.contains_key(entry.plugin.get_ref()) {
            ok = false; // its file problem is already reported
        }
        let mut needs = Vec::new();
        for need in &entry.needs {
            let need_name = need.get_ref();
            if need_name == stage_name {
                self.error(
                    Some(need.span()),
                    format!("stage `{stage_name}` needs itself"),
                    Some("remove it from `needs`".into()),
                );
                ok = false;
            } else if !raw.stages.keys().any(|k| k.get_ref() == need_name) {
                let help =
                    match diag::closest(need_name, raw.stages.keys().map(|k| k.get_ref().as_str()))
                    {
                        Some(c) => format!("did you mean `{c}`?"),
                        None => format!(
                            "stages are: {}",
                            raw.stages
                                .keys()
                                .map(|k| k.get_ref().as_str())
                                .collect::<Vec<_>>()
                                .join(", ")
                        ),
                    };
                self.error(Some(need.span()), format!("stage `{stage_name}` needs `{need_name}`, which is not a stage in this pipeline"), Some(help));
                ok = false;
            } else {
                needs.push(need_name.clone());
            }
        }
        let stage_envs = entry.environments.as_ref().map(|e| e.get_ref().clone());
        if let Some(envs) = &entry.environments {
            for e in envs.get_ref().iter().filter(|e| !environments.contains(e)) {
                self.error(Some(envs.span()), format!("stage `{stage_name}` names environment `{e}`, which is not in [pipeline] environments"), Some(format!("environments are: {}", environments.join(", "))));
                ok = false;
            }
        }
        self.patterns(stage_name, &entry.grants);
        let read_dirs = self.dirs(name, "read", &entry.grants.read);
        let write_dirs = self.dirs(name, "write", &entry.grants.write);
        let with = match &entry.with {
            Some(table) => serde_json::to_value(table.get_ref()).unwrap_or(Value::Null),
            None => Value::Object(Default::default()),
        };
        let d = &raw.defaults;
        ok.then(|| Stage {
            name: stage_name.clone(),
            plugin: entry.plugin.get_ref().clone(),
            needs,
            upstream: BTreeSet::new(),
            with,
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
        })
    }

    /// Canonical paths of granted directories; each must exist.
    fn dirs(
        &mut self,
        stage: &toml::Spanned<String>,
        kind: &str,
        dirs: &[String],
    ) -> Option<Vec<PathBuf>> {
        let mut out = Vec::new();
        for dir in dirs {
            let path = self.dir.join(dir);
            match path.canonicalize() {
                Ok(p) if p.is_dir() => out.push(p),
                Ok(p) => self.error(
                    Some(stage.span()),
                    format!(
                        "stage `{}`: `{kind}` grant `{dir}` ({}) is not a directory",
                        stage.get_ref(),
                        p.display()
                    ),
                    Some("grants are directories; grant the directory that holds the file".into()),
                ),
                Err(e) => self.error(
                    Some(stage.span()),
                    format!(
                        "stage `{}`: `{kind}` grant `{dir}` ({}): {e}",
                        stage.get_ref(),
                        path.display()
                    ),
                    Some(format!(
                        "create the directory, or fix the path (relative to {})",
                        self.dir.display()
                    )),
                ),
            }
        }
        (out.len() == dirs.len()).then_some(out)
    }

    fn check_references(
        &mut self,
        name: &str,
        entry: &file::StageEntry,
        stage: &Stage,
        stages: &IndexMap<String, Stage>,
    ) {
        let Some(with) = &entry.with else { return };
        let with_span = with.span();
        for text in interpolate::strings(&stage.with) {
            let refs = match interpolate::references(text) {
                Ok(refs) => refs,
                Err(message) => {
                    let span = self.find(with_span.clone(), text);
                    self.error(span, format!("stage `{name}`: {message}"), None);
                    continue;
                }
            };
            for (range, reference) in refs {
                let Reference::StageOutput { stage: from, .. } = &reference else {
                    continue;
                };
                let span = self.find(with_span.clone(), &text[range.clone()]);
                if !stages.contains_key(from) {
                    let help = diag::closest(from, stages.keys().map(String::as_str))
                        .map(|c| format!("did you mean `{c}`?"));
                    self.error(
                        span,
                        format!(
                            "stage `{name}` references `{}`, but there is no stage `{from}`",
                            &text[range]
                        ),
                        help,
                    );
                } else if !stage.upstream.contains(from) {
                    self.error(span, format!("stage `{name}` references `{}`, but `{from}` is not upstream of `{name}`", &text[range]), Some(format!("add \"{from}\" to `needs` of stage `{name}`")));
                }
            }
        }
    }

    /// Where `needle` stands inside `within` of the source (for carets).
    fn find(&self, within: std::ops::Range<usize>, needle: &str) -> Option<std::ops::Range<usize>> {
        let hay = self.source.get(within.clone())?;
        let at = hay.find(needle).map(|i| within.start + i)?;
        Some(at..at + needle.len())
    }
}
