//! The pipeline file as written (TOML), with source spans kept for error
//! messages. `super::Pipeline` is the validated form the rest of the host uses.
//!
//! The JSON Schema editors check the file with (`capstan schema`) is derived
//! from these types, so the two cannot drift: `#[schemars(...)]` attributes
//! say what a `Spanned`, duration or size is written as (see
//! `super::schema`), and doc comments become the schema's descriptions.

use std::collections::BTreeMap;
use std::time::Duration;

use indexmap::IndexMap;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use toml::Spanned;

use super::schema::{ByteSizeText, DurationText, WithTable};

/// A Capstan pipeline file: stages whose plugins are WebAssembly
/// components, and what each stage is granted. (`capstan validate` checks
/// what a schema cannot: `needs` and references naming stages, paths,
/// plugins against their grants.)
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "Capstan pipeline file")]
pub struct PipelineFile {
    pub pipeline: Header,
    #[serde(default)]
    pub defaults: Limits,
    /// The plugins stages use, by name: `[plugins.<name>]`.
    #[serde(default)]
    #[schemars(with = "BTreeMap<String, PluginEntry>")]
    pub plugins: IndexMap<Spanned<String>, PluginEntry>,
    /// The stages, by name: `[stages.<name>]`. They run in the order their
    /// `needs` give; independent ones at the same time.
    #[serde(default)]
    #[schemars(schema_with = "super::schema::stages")]
    pub stages: IndexMap<Spanned<String>, StageEntry>,
    #[serde(default)]
    #[schemars(with = "Option<RollbackEntry>")]
    pub rollback: Option<Spanned<RollbackEntry>>,
    #[serde(default)]
    pub sandbox: SandboxEntry,
    #[serde(default)]
    #[schemars(with = "Option<ApproversEntry>")]
    pub approvers: Option<Spanned<ApproversEntry>>,
    /// `[drift]`: what `capstan drift` runs.
    #[serde(default)]
    pub drift: Option<DriftEntry>,
    /// `[secrets.<name>]`: where the host gets each secret (see
    /// `super::secrets`).
    #[serde(default)]
    #[schemars(with = "BTreeMap<String, SecretEntry>")]
    pub secrets: IndexMap<Spanned<String>, SecretEntry>,
}

/// `[secrets.<name>]`: one secret and where the host reads it when a stage
/// granted it starts. Exactly one source.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SecretEntry {
    /// A host environment variable.
    #[serde(default)]
    pub env: Option<String>,
    /// A file, relative to the pipeline file.
    #[serde(default)]
    pub file: Option<String>,
    /// A command the host runs (argv, no shell), e.g. `["pass", "show",
    /// "ci/token"]`: its stdout is the value.
    #[serde(default)]
    pub command: Option<Vec<String>>,
    /// How long the command may take (default 30s).
    #[serde(default, with = "humantime_serde_opt")]
    #[schemars(with = "Option<DurationText>")]
    pub timeout: Option<Duration>,
}

/// `[approvers]`: the SSH keys whose signatures count as approvals (see
/// `caps::approval::signature`), in `allowed_signers` format.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ApproversEntry {
    /// An `allowed_signers` file (relative to the pipeline file), as
    /// `ssh-keygen -Y verify -f` reads it.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub allowed_signers: Option<Spanned<String>>,
    /// `allowed_signers` lines written in the pipeline file itself, e.g.
    /// `"bob ssh-ed25519 AAAA..."`.
    #[serde(default)]
    #[schemars(with = "Vec<String>")]
    pub keys: Vec<Spanned<String>>,
}

/// `[drift]`: the stages `capstan drift` runs to compare an environment
/// with its configuration (Terraform plans); each reports `has_changes`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DriftEntry {
    #[schemars(with = "Vec<String>")]
    pub stages: Vec<Spanned<String>>,
}

/// `requires_approval` of a stage: it runs only on a digest approved at
/// another stage.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RequiresApproval {
    /// The approval stage whose decisions count (upstream of this one).
    #[schemars(with = "String")]
    pub stage: Spanned<String>,
    /// The key of this stage's `with` that holds the digest it acts on,
    /// e.g. `approved_digest`.
    #[schemars(with = "String")]
    pub digest: Spanned<String>,
}

// Applied by `caps::exec::sandbox`.
/// `[sandbox]`: how the programs that stages start are confined
/// (Landlock, namespaces, limits).
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SandboxEntry {
    /// Refuse to run where the kernel lacks Landlock (default `true`);
    /// `false` runs children without file rules there, and says so.
    #[serde(default)]
    pub require: Option<bool>,
    /// Whether every child may read and execute the default system
    /// locations (`/usr`, `/lib*`, `/bin`, a few `/etc` entries; default
    /// `true`). `false` leaves only `read` below and the stage's grants.
    #[serde(default)]
    pub system: Option<bool>,
    /// More paths every child may read and execute (absolute, or relative
    /// to the pipeline file), e.g. a tool installed under `/opt`.
    #[serde(default)]
    pub read: Vec<String>,
    /// The network of exec grants that do not set their own.
    #[serde(default)]
    pub network: Option<Network>,
    /// Limits of exec grants that do not set their own.
    #[serde(default)]
    pub limits: ChildLimits,
}

/// What network a started program sees.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema, strum::Display)]
#[serde(rename_all = "kebab-case")]
#[strum(serialize_all = "kebab-case")]
pub enum Network {
    /// A network namespace of its own with no interface up: every connect
    /// fails, loopback included.
    None,
    /// A network namespace of its own with only `lo` up: it reaches what it
    /// starts itself, nothing of the host.
    Loopback,
    /// The host's network.
    Host,
}

/// Resource limits of one started program (and, for `processes`, all it
/// starts). Unset fields take `[sandbox.limits]`, then the defaults.
#[derive(Debug, Default, Clone, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ChildLimits {
    /// Open files per process (`RLIMIT_NOFILE`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub open_files: Option<u64>,
    /// Processes and threads alive at once in the program's whole tree (a
    /// cgroup's `pids.max`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub processes: Option<u64>,
    /// CPU time per process (`RLIMIT_CPU`), e.g. `"30m"`.
    #[serde(
        default,
        with = "humantime_serde_opt",
        skip_serializing_if = "Option::is_none"
    )]
    #[schemars(with = "Option<DurationText>")]
    pub cpu: Option<Duration>,
    /// Address space per process (`RLIMIT_AS`), e.g. `"8GiB"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<ByteSizeText>")]
    pub address_space: Option<bytesize::ByteSize>,
}

/// `[rollback]`: how `capstan rollback` redeploys an earlier run.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RollbackEntry {
    /// Stages that do not run in a rollback: their outputs (e.g. the image
    /// id) are the ones recorded by the run rolled back to.
    #[schemars(with = "Vec<String>")]
    pub reuse: Vec<Spanned<String>>,
}

/// `on_failure` of a stage.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum OnFailure {
    /// The run fails (the default).
    #[default]
    Fail,
    /// The run fails, then a rollback run redeploys the last good run.
    Rollback,
}

/// `run_if` of a stage: when it runs, given how the stages before it
/// ended (GitHub's `if: success()`, `failure()`, `always()`).
#[derive(
    Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema, strum::Display,
)]
#[serde(rename_all = "kebab-case")]
#[strum(serialize_all = "kebab-case")]
pub enum RunIf {
    /// Only when every stage it needs succeeded (the default).
    #[default]
    Success,
    /// Only when a stage before it (one it needs, directly or not) failed
    /// or waits for approval; once all of them have ended.
    Failure,
    /// Once all the stages before it have ended, however they ended.
    Always,
}

/// `[pipeline]`: the pipeline's name, environments and how many stages
/// run at once.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Header {
    /// The pipeline's name, shown in runs and history.
    pub name: String,
    /// What the pipeline does, in a sentence.
    #[serde(default)]
    pub description: Option<String>,
    /// Allowed `--env` values; the first is the default.
    #[serde(default)]
    #[schemars(with = "Option<Vec<String>>", length(min = 1))]
    pub environments: Option<Spanned<Vec<String>>>,
    /// How many independent stages may run at once (default 4).
    #[serde(default)]
    pub concurrency: Option<usize>,
    /// Environments where only humans approve: automatic approvals and
    /// overrides asked for by a plugin are refused (humans are asked).
    #[serde(default)]
    #[schemars(with = "Vec<String>")]
    pub protected: Vec<Spanned<String>>,
}

/// `[plugins.<name>]`: a plugin component stages can use.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PluginEntry {
    /// Path of the `.wasm` component, relative to the pipeline file.
    #[schemars(with = "String")]
    pub path: Spanned<String>,
    /// Optional pin of the component's sha256 (hex).
    #[serde(default)]
    #[schemars(with = "Option<String>", regex(pattern = r"^[0-9a-fA-F]{64}$"))]
    pub sha256: Option<Spanned<String>>,
}

/// Per-stage limits; `[defaults]` sets them for every stage.
#[derive(Debug, Default, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// Wall-clock limit of the whole stage, e.g. `"10m"` (default 30m).
    #[serde(default, with = "humantime_serde_opt")]
    #[schemars(with = "Option<DurationText>")]
    pub timeout: Option<Duration>,
    /// Linear memory limit of the plugin, e.g. `"256MiB"` (the default).
    #[serde(default)]
    #[schemars(with = "Option<ByteSizeText>")]
    pub memory: Option<bytesize::ByteSize>,
    /// Everything the stage may print (plugin and children), e.g. `"16MiB"`
    /// (the default).
    #[serde(default)]
    #[schemars(with = "Option<ByteSizeText>")]
    pub max_output: Option<bytesize::ByteSize>,
}

/// `[stages.<name>]`: one stage — its plugin, what it needs, its config
/// and what it is granted.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StageEntry {
    /// The plugin that runs this stage: a name from `[plugins]`.
    #[schemars(with = "String")]
    pub plugin: Spanned<String>,
    /// Stages that must succeed before this one starts.
    #[serde(default)]
    #[schemars(with = "Vec<String>")]
    pub needs: Vec<Spanned<String>>,
    #[serde(default)]
    #[schemars(with = "Option<WithTable>")]
    pub with: Option<Spanned<toml::Table>>,
    #[serde(default)]
    pub grants: Grants,
    /// Wall-clock limit of the stage, e.g. `"10m"`.
    #[serde(default, with = "humantime_serde_opt")]
    #[schemars(with = "Option<DurationText>")]
    pub timeout: Option<Duration>,
    /// Linear memory limit of the plugin, e.g. `"256MiB"`.
    #[serde(default)]
    #[schemars(with = "Option<ByteSizeText>")]
    pub memory: Option<bytesize::ByteSize>,
    /// Everything the stage may print, e.g. `"16MiB"`.
    #[serde(default)]
    #[schemars(with = "Option<ByteSizeText>")]
    pub max_output: Option<bytesize::ByteSize>,
    /// Run this stage only in these environments (default: all).
    #[serde(default)]
    #[schemars(with = "Option<Vec<String>>")]
    pub environments: Option<Spanned<Vec<String>>>,
    /// What a failure of this stage triggers: `fail` or `rollback`.
    #[serde(default)]
    #[schemars(with = "Option<OnFailure>")]
    pub on_failure: Option<Spanned<OnFailure>>,
    /// When the stage runs: `success` (the default), `failure` or `always`.
    #[serde(default)]
    #[schemars(with = "Option<RunIf>")]
    pub run_if: Option<Spanned<RunIf>>,
    /// Run only when the digest in `with.<digest>` was approved at `stage`.
    #[serde(default)]
    #[schemars(with = "Option<RequiresApproval>")]
    pub requires_approval: Option<Spanned<RequiresApproval>>,
    /// For an approval stage: the image the approved plan deploys (may
    /// reference upstream outputs); signed into every approval statement.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub image_digest: Option<Spanned<String>>,
    /// What changes make this stage run under `capstan run --changed-since`.
    #[serde(default)]
    pub triggers: Option<Triggers>,
}

/// `triggers` of a stage.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Triggers {
    /// Globs relative to the pipeline file (`packer/**`, `*.tf`).
    #[serde(default)]
    #[schemars(with = "Vec<String>")]
    pub paths: Vec<Spanned<String>>,
}

/// `[stages.<name>.grants]`: what the pipeline lets this stage do.
#[derive(Debug, Default, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Grants {
    /// Programs the plugin may start: `[[stages.<name>.grants.exec]]`.
    #[serde(default)]
    pub exec: Vec<ExecGrant>,
    /// Directories readable by the plugin (relative to the pipeline file).
    #[serde(default)]
    pub read: Vec<String>,
    /// Directories readable and writable by the plugin.
    #[serde(default)]
    pub write: Vec<String>,
    /// Host environment variables the plugin may read (`NAME` or `PREFIX_*`).
    #[serde(default)]
    pub env: Vec<String>,
    // The grammar: `super::patterns`.
    /// `host:port` patterns the plugin may probe: IP literals (octets may
    /// be `*`; `*` alone is any IP), `[ipv6]`, or one exact host name; the
    /// port a number or `*`.
    #[serde(default)]
    pub connect: Vec<String>,
    /// Whether the plugin may ask humans for approval.
    #[serde(default)]
    pub approval: bool,
    /// Secrets declared in `[secrets]` that this stage's programs receive,
    /// by name, and how each reaches them.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub secrets: BTreeMap<String, SecretGrant>,
}

/// `[stages.<name>.grants.secrets] NAME = { env = "VAR" }` (or `{ file =
/// "VAR" }`): how one secret reaches the stage's programs. Exactly one of
/// `env` and `file`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SecretGrant {
    /// The variable that holds the value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<String>,
    /// The variable that holds the path of a file (mode 0600, in a
    /// directory of the stage's own, removed when the stage ends) that
    /// holds the value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    /// Only these of the stage's granted programs receive it (default: all).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub programs: Option<Vec<String>>,
}

/// How a granted secret reaches a program.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Delivery {
    /// In the variable itself.
    Env,
    /// In a file whose path the variable holds.
    File,
}

impl SecretGrant {
    /// How the secret is delivered and the variable's name (validated:
    /// exactly one of `env` and `file` is set).
    pub fn delivery(&self) -> (Delivery, &str) {
        match (&self.env, &self.file) {
            (Some(var), _) => (Delivery::Env, var),
            (None, Some(var)) => (Delivery::File, var),
            (None, None) => (Delivery::Env, ""),
        }
    }

    /// Whether `program` receives it.
    pub fn reaches(&self, program: &str) -> bool {
        self.programs
            .as_ref()
            .is_none_or(|programs| programs.iter().any(|p| p == program))
    }
}

/// `[[stages.<name>.grants.exec]]`: one program the plugin may start.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ExecGrant {
    /// Program name (looked up on `PATH` when the pipeline loads) or
    /// absolute path.
    pub program: String,
    /// One pattern per argument position: `a|b` alternatives, `*` inside a
    /// pattern matches any text, `**` alone and last matches all remaining
    /// arguments. Omitted: the program may only be run without arguments.
    // The grammar, checked at load: `super::patterns`.
    #[serde(default)]
    pub args: Vec<String>,
    /// Environment variables the child may receive (`NAME` or `PREFIX_*`):
    /// passed through from the host, or set by the plugin.
    #[serde(default)]
    pub env: Vec<String>,
    /// Pin of the resolved program's sha256 (hex).
    #[serde(default)]
    #[schemars(regex(pattern = r"^[0-9a-fA-F]{64}$"))]
    pub sha256: Option<String>,
    /// Upper bound for one run of this program, e.g. `"5m"`.
    #[serde(default, with = "humantime_serde_opt")]
    #[schemars(with = "Option<DurationText>")]
    pub timeout: Option<Duration>,
    /// The network the program sees (default: `[sandbox] network`, else
    /// `host`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<Network>,
    /// Its resource limits (unset ones: `[sandbox.limits]`, then defaults).
    #[serde(default, skip_serializing_if = "is_default")]
    pub limits: ChildLimits,
}

fn is_default(limits: &ChildLimits) -> bool {
    limits == &ChildLimits::default()
}

/// `Option<Duration>` as a humantime string (`"90s"`, `"10m"`).
pub mod humantime_serde_opt {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    /// The longest timeout a pipeline may set.
    pub const MAX: Duration = Duration::from_secs(365 * 24 * 3600);

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        let Some(text) = Option::<String>::deserialize(d)? else {
            return Ok(None);
        };
        let duration = humantime::parse_duration(&text).map_err(|e| {
            serde::de::Error::custom(format!(
                "invalid duration `{text}` ({e}); write e.g. \"90s\" or \"10m\""
            ))
        })?;
        // Deadlines are computed as now + duration: bounded, they cannot
        // overflow the clock.
        if duration > MAX {
            return Err(serde::de::Error::custom(format!(
                "duration `{text}` is longer than 365 days, the longest allowed; write e.g. \"2h\""
            )));
        }
        Ok(Some(duration))
    }

    pub fn serialize<S: Serializer>(v: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(d) => s.serialize_str(&humantime::format_duration(*d).to_string()),
            None => s.serialize_none(),
        }
    }
}
