//! The pipeline file as written (TOML), with source spans kept for error
//! messages. `super::Pipeline` is the validated form the rest of the host uses.

use std::time::Duration;

use indexmap::IndexMap;
use serde::{Deserialize, Serialize};
use toml::Spanned;

/// The whole pipeline file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineFile {
    pub pipeline: Header,
    #[serde(default)]
    pub defaults: Limits,
    #[serde(default)]
    pub plugins: IndexMap<Spanned<String>, PluginEntry>,
    #[serde(default)]
    pub stages: IndexMap<Spanned<String>, StageEntry>,
    #[serde(default)]
    pub rollback: Option<Spanned<RollbackEntry>>,
    #[serde(default)]
    pub sandbox: SandboxEntry,
    #[serde(default)]
    pub approvers: Option<Spanned<ApproversEntry>>,
}

/// `[approvers]`: the SSH keys whose signatures count as approvals (see
/// `caps::approval::signature`), in `allowed_signers` format.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApproversEntry {
    /// An `allowed_signers` file (relative to the pipeline file), as
    /// `ssh-keygen -Y verify -f` reads it.
    #[serde(default)]
    pub allowed_signers: Option<Spanned<String>>,
    /// `allowed_signers` lines written in the pipeline file itself, e.g.
    /// `"bob ssh-ed25519 AAAA..."`.
    #[serde(default)]
    pub keys: Vec<Spanned<String>>,
}

/// `requires_approval` of a stage: it runs only on a digest approved at
/// another stage.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequiresApproval {
    /// The approval stage whose decisions count (upstream of this one).
    pub stage: Spanned<String>,
    /// The key of this stage's `with` that holds the digest it acts on,
    /// e.g. `approved_digest`.
    pub digest: Spanned<String>,
}

/// `[sandbox]`: how the programs that stages start are confined (see
/// `caps::exec::sandbox`).
#[derive(Debug, Default, Deserialize)]
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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, strum::Display)]
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
#[derive(Debug, Default, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ChildLimits {
    /// Open files per process (`RLIMIT_NOFILE`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub open_files: Option<u64>,
    /// Processes and threads alive at once in the program's whole tree (a
    /// cgroup's `pids.max`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub processes: Option<u64>,
    /// CPU time per process (`RLIMIT_CPU`), e.g. `"30m"`.
    #[serde(
        default,
        with = "humantime_serde_opt",
        skip_serializing_if = "Option::is_none"
    )]
    pub cpu: Option<Duration>,
    /// Address space per process (`RLIMIT_AS`), e.g. `"8GiB"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address_space: Option<bytesize::ByteSize>,
}

/// `[rollback]`: how `capstan rollback` redeploys an earlier run.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RollbackEntry {
    /// Stages that do not run in a rollback: their outputs (e.g. the image
    /// id) are the ones recorded by the run rolled back to.
    pub reuse: Vec<Spanned<String>>,
}

/// `on_failure` of a stage.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum OnFailure {
    /// The run fails (the default).
    #[default]
    Fail,
    /// The run fails, then a rollback run redeploys the last good run.
    Rollback,
}

/// `[pipeline]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Header {
    pub name: String,
    #[serde(default)]
    pub description: Option<String>,
    /// Allowed `--env` values; the first is the default.
    #[serde(default)]
    pub environments: Option<Spanned<Vec<String>>>,
    /// How many independent stages may run at once.
    #[serde(default)]
    pub concurrency: Option<usize>,
    /// Environments where only humans approve: automatic approvals and
    /// overrides asked for by a plugin are refused (humans are asked).
    #[serde(default)]
    pub protected: Vec<Spanned<String>>,
}

/// `[plugins.<name>]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PluginEntry {
    /// Path of the `.wasm` component, relative to the pipeline file.
    pub path: Spanned<String>,
    /// Optional pin of the component's sha256 (hex).
    #[serde(default)]
    pub sha256: Option<Spanned<String>>,
}

/// Per-stage limits; `[defaults]` sets them for every stage.
#[derive(Debug, Default, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// Wall-clock limit of the whole stage, e.g. `"10m"`.
    #[serde(default, with = "humantime_serde_opt")]
    pub timeout: Option<Duration>,
    /// Linear memory limit of the plugin, e.g. `"256MiB"`.
    #[serde(default)]
    pub memory: Option<bytesize::ByteSize>,
    /// Everything the stage may print (plugin and children), e.g. `"16MiB"`.
    #[serde(default)]
    pub max_output: Option<bytesize::ByteSize>,
}

/// `[stages.<name>]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StageEntry {
    pub plugin: Spanned<String>,
    #[serde(default)]
    pub needs: Vec<Spanned<String>>,
    #[serde(default)]
    pub with: Option<Spanned<toml::Table>>,
    #[serde(default)]
    pub grants: Grants,
    /// Wall-clock limit of the stage, e.g. `"10m"`.
    #[serde(default, with = "humantime_serde_opt")]
    pub timeout: Option<Duration>,
    /// Linear memory limit of the plugin, e.g. `"256MiB"`.
    #[serde(default)]
    pub memory: Option<bytesize::ByteSize>,
    /// Everything the stage may print, e.g. `"16MiB"`.
    #[serde(default)]
    pub max_output: Option<bytesize::ByteSize>,
    /// Run this stage only in these environments (default: all).
    #[serde(default)]
    pub environments: Option<Spanned<Vec<String>>>,
    /// What a failure of this stage triggers: `fail` or `rollback`.
    #[serde(default)]
    pub on_failure: Option<Spanned<OnFailure>>,
    /// Run only when the digest in `with.<digest>` was approved at `stage`.
    #[serde(default)]
    pub requires_approval: Option<Spanned<RequiresApproval>>,
    /// For an approval stage: the image the approved plan deploys (may
    /// reference upstream outputs); signed into every approval statement.
    #[serde(default)]
    pub image_digest: Option<Spanned<String>>,
}

/// `[stages.<name>.grants]`: what the pipeline lets this stage do.
#[derive(Debug, Default, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Grants {
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
    /// `host:port` patterns the plugin may probe: IP literals (octets may
    /// be `*`; `*` alone is any IP), `[ipv6]`, or one exact host name; the
    /// port a number or `*` (grammar in `super::patterns`).
    #[serde(default)]
    pub connect: Vec<String>,
    /// Whether the plugin may ask humans for approval.
    #[serde(default)]
    pub approval: bool,
}

/// `[[stages.<name>.grants.exec]]`: one program the plugin may start.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ExecGrant {
    /// Program name (looked up on `PATH` when the pipeline loads) or
    /// absolute path.
    pub program: String,
    /// One pattern per argument position: `a|b` alternatives, `*` inside a
    /// pattern matches any text, `**` alone and last matches all remaining
    /// arguments (grammar in `super::patterns`; checked at load).
    /// Omitted: the program may only be run without arguments.
    #[serde(default)]
    pub args: Vec<String>,
    /// Environment variables the child may receive (`NAME` or `PREFIX_*`):
    /// passed through from the host, or set by the plugin.
    #[serde(default)]
    pub env: Vec<String>,
    /// Pin of the resolved program's sha256 (hex).
    #[serde(default)]
    pub sha256: Option<String>,
    /// Upper bound for one run of this program, e.g. `"5m"`.
    #[serde(default, with = "humantime_serde_opt")]
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
