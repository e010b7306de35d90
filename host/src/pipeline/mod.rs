//! The pipeline file: model, validation, DAG order and `${…}` interpolation.
//!
//! [`Pipeline::load`] reads a TOML file and returns either a validated
//! [`Pipeline`] (stages in dependency order, paths absolute) or every problem
//! found, each located by file, line and column.

pub mod approvers;
mod dag;
pub mod diag;
pub mod file;
#[cfg(test)]
mod fuzz;
pub mod interpolate;
pub mod patterns;
pub mod read;
pub mod sandbox;
pub mod schema;
pub mod secrets;
pub mod source;
mod validator;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use indexmap::IndexMap;
use serde_json::Value;
use sha2::{Digest, Sha256};

pub use diag::{Diagnostic, Diagnostics, Severity};
pub use file::{ChildLimits, Delivery, ExecGrant, Grants, Network, RunIf, SecretGrant};
pub use sandbox::Sandbox;
pub use secrets::{Secret, SecretSource};
pub use source::{Part, SourceMap};
pub use validator::toml_json;

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
    /// `[sandbox]`: how the programs stages start are confined.
    pub sandbox: Sandbox,
    /// `[approvers]`: keys whose signatures count as approvals (`None`:
    /// approvals are names only).
    pub approvers: Option<approvers::Approvers>,
    /// `[drift] stages`: what `capstan drift` runs (empty: no drift check).
    pub drift_stages: Vec<String>,
    /// `[secrets]`: where the host gets each secret stages may be granted.
    pub secrets: IndexMap<String, Secret>,
    /// The file's text and the places of its entries, for problems found
    /// later (plugin schemas, grants, programs) to point at.
    pub source: Arc<SourceMap>,
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
    pub upstream: dag::Upstream,
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
    /// When it runs, given how the stages before it ended.
    pub run_if: file::RunIf,
    /// `requires_approval`: the approval stage, and the `with` key holding
    /// the digest this stage acts on.
    pub requires_approval: Option<Gate>,
    /// `image_digest` of an approval stage, references not yet resolved.
    pub image_digest: Option<String>,
    /// `triggers.paths`: globs relative to the pipeline file, as written.
    pub trigger_paths: Vec<String>,
}

/// A stage's `requires_approval`, validated.
#[derive(Debug, Clone)]
pub struct Gate {
    /// The approval stage (upstream of the stage, granted `approval`).
    pub stage: String,
    /// The `with` key holding the digest the stage acts on.
    pub digest_key: String,
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
    /// Read and validate a pipeline file (a regular file of at most
    /// [`read::MAX_PIPELINE_FILE`] bytes).
    pub fn load(path: &Path) -> Result<Pipeline, Diagnostics> {
        let bytes = read::read_bounded(path, read::MAX_PIPELINE_FILE).map_err(|e| {
            Diagnostics(vec![
                Diagnostic::file(path, format!("cannot read the pipeline file: {e}"))
                    .help("pass the path of a pipeline TOML file, e.g. `capstan run examples/hello/pipeline.toml`"),
            ])
        })?;
        Self::from_bytes(path, &bytes)
    }

    /// Validate `bytes`, the content of the pipeline file at `path`.
    pub fn from_bytes(path: &Path, bytes: &[u8]) -> Result<Pipeline, Diagnostics> {
        match std::str::from_utf8(bytes) {
            Ok(source) => Self::parse(path, source),
            Err(e) => {
                // The text up to the first bad byte is shown as it is.
                let at = e.valid_up_to();
                let text = String::from_utf8_lossy(bytes);
                let d = Diagnostic::at(
                    path,
                    &text,
                    Some(at..at + 1),
                    format!(
                        "the pipeline file is not valid UTF-8 (byte 0x{:02x})",
                        bytes[at]
                    ),
                )
                .help("TOML files are UTF-8: save the file as UTF-8, or remove the byte");
                Err(Diagnostics(vec![d]))
            }
        }
    }

    /// Validate `source`, the text of the pipeline file at `path`.
    pub fn parse(path: &Path, source: &str) -> Result<Pipeline, Diagnostics> {
        let map = Arc::new(SourceMap::new(path, source.to_string()));
        let raw: file::PipelineFile = toml::from_str(source).map_err(|e| {
            let message = e.message().trim_end();
            // An error of the document as a whole (a missing table) is
            // placed at its start.
            let mut d = map.error_at(Some(e.span().unwrap_or(0..0)), message);
            if let Some(rest) = message.strip_prefix("unknown field `") {
                let (field, expected) = rest.split_once('`').unwrap_or((rest, ""));
                let known: Vec<&str> = expected.split('`').skip(1).step_by(2).collect();
                d = d.help(match diag::closest(field, known.iter().copied()) {
                    Some(c) => format!("did you mean `{c}`? (the pipeline file format is in the README, \"Pipeline file\")"),
                    None => "check the spelling; the pipeline file format is in the README (\"Pipeline file\")".into(),
                });
            } else if message.starts_with("missing field `") {
                d = d.help("add it; the pipeline file format is in the README (\"Pipeline file\")");
            } else if message.contains("duplicate key") {
                d = d.help("each key and table may appear once: rename one of them, or merge them");
            }
            Diagnostics(vec![d])
        })?;
        let file = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
        let dir = file.parent().map(Path::to_path_buf).unwrap_or_default();
        let mut pipeline = validator::Validator {
            map: &map,
            dir: &dir,
            errors: Vec::new(),
        }
        .validate(raw, file.clone())?;
        pipeline.digest = hex::encode(Sha256::digest(source.as_bytes()));
        Ok(pipeline)
    }

    /// The environment a run targets when `--env` is not given.
    pub fn default_environment(&self) -> &str {
        self.environments.first().map_or("default", String::as_str)
    }
}
