//! Capabilities: what a plugin asks for, what the pipeline grants, and the
//! host side of every interface a plugin imports.
//!
//! Deny by default. A capability is usable only when the plugin requests it
//! (in `describe`) **and** the stage's `grants` allow it; [`check`] finds
//! requests without grants before any stage runs, and [`StagePolicy`] is the
//! intersection the stage runs with.

pub mod approval;
pub mod audit;
pub mod env;
pub mod exec;
pub mod fs;
pub mod limits;
pub mod log;
pub mod network;
pub mod secret;
pub mod state;

use std::fmt;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::pipeline::Stage;

/// One capability, as data.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(tag = "kind", content = "name", rename_all = "kebab-case")]
pub enum Capability {
    Exec(String),
    /// Every program the stage's `exec` grants name (requested as `exec
    /// *`, by plugins whose programs come from the pipeline file); each
    /// call is still checked against its program's own grant.
    ExecGranted,
    Read,
    Write,
    Env(String),
    /// Every variable the stage's `env` grants name (requested as `env
    /// *`, by plugins that read the names from their `with`, such as the
    /// notify stage's `url_env`).
    EnvGranted,
    /// A secret declared in `[secrets]`, for the programs the plugin starts
    /// (the plugin itself never gets the value).
    Secret(String),
    /// Every secret the stage grants, possibly none (requested as `secret
    /// *`, by plugins whose programs come from the pipeline file).
    SecretGranted,
    Connect,
    Approval,
}

impl fmt::Display for Capability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Capability::Exec(p) => write!(f, "exec `{}`", crate::text::inline(p)),
            Capability::ExecGranted => f.write_str("exec `*` (the programs the stage grants)"),
            Capability::Read => f.write_str("read"),
            Capability::Write => f.write_str("write"),
            Capability::Env(n) => write!(f, "env `{}`", crate::text::inline(n)),
            Capability::EnvGranted => f.write_str("env `*` (the variables the stage grants)"),
            Capability::Secret(n) => write!(f, "secret `{}`", crate::text::inline(n)),
            Capability::SecretGranted => f.write_str("secret `*` (the secrets the stage grants)"),
            Capability::Connect => f.write_str("connect"),
            Capability::Approval => f.write_str("approval"),
        }
    }
}

/// A capability a plugin requests, with its reason.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Request {
    pub capability: Capability,
    pub reason: String,
}

/// A request the pipeline does not grant, with the TOML that would grant it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Missing {
    pub request: Request,
    pub toml: String,
}

/// Whether `stage`'s grants cover `capability`.
pub fn granted(stage: &Stage, capability: &Capability) -> bool {
    let g = &stage.grants;
    match capability {
        Capability::Exec(program) => g.exec.iter().any(|e| &e.program == program),
        Capability::ExecGranted => !g.exec.is_empty(),
        Capability::Read => !g.read.is_empty(),
        Capability::Write => !g.write.is_empty(),
        Capability::Env(name) => env::covers(&g.env, name),
        // Whatever the stage grants, none included (a notifier whose URL is a
        // secret reads no variable): the plugin sees exactly the granted ones.
        Capability::EnvGranted => true,
        Capability::Secret(name) => g.secrets.contains_key(name),
        // Whatever the stage grants, none included: the plugin passes on
        // what the pipeline gives (its programs come from the pipeline too).
        Capability::SecretGranted => true,
        Capability::Connect => !g.connect.is_empty(),
        Capability::Approval => g.approval,
    }
}

/// Requests of `stage`'s plugin that its grants do not cover; `secrets`
/// are the pipeline's declared ones (the lines to add declare a secret
/// only when it is not).
pub fn check(
    stage: &Stage,
    requests: &[Request],
    secrets: &indexmap::IndexMap<String, crate::pipeline::Secret>,
) -> Vec<Missing> {
    requests
        .iter()
        .filter(|r| !granted(stage, &r.capability))
        .map(|r| Missing {
            request: r.clone(),
            toml: match &r.capability {
                Capability::Secret(name) => secret::grant_toml(stage, name, secrets),
                other => grant_toml(&stage.name, other),
            },
        })
        .collect()
}

/// Grants of `stage` that its plugin does not request; they are ignored.
/// Directory grants of a stage that starts programs are not among them:
/// its programs use them (the sandbox gives them every directory grant).
pub fn unrequested(stage: &Stage, requests: &[Request]) -> Vec<String> {
    let starts_programs = stage
        .grants
        .exec
        .iter()
        .any(|e| asks_exec(requests, &e.program));
    let asked = |c: &Capability| requests.iter().any(|r| &r.capability == c);
    let dir_used = |c: &Capability| starts_programs || asked(c);
    let g = &stage.grants;
    let mut out = Vec::new();
    out.extend(
        g.exec
            .iter()
            .filter(|e| !asks_exec(requests, &e.program))
            .map(|e| format!("exec `{}`", e.program)),
    );
    if !g.read.is_empty() && !dir_used(&Capability::Read) {
        out.push("read".into());
    }
    if !g.write.is_empty() && !dir_used(&Capability::Write) {
        out.push("write".into());
    }
    let env_asked: Vec<&str> = requests
        .iter()
        .filter_map(|r| match &r.capability {
            Capability::Env(n) => Some(n.as_str()),
            _ => None,
        })
        .collect();
    let every_env = asked(&Capability::EnvGranted);
    out.extend(
        g.env
            .iter()
            .filter(|p| !every_env && !env_asked.iter().any(|n| env::matches(p, n)))
            .map(|p| format!("env `{p}`")),
    );
    if !g.connect.is_empty() && !asked(&Capability::Connect) {
        out.push("connect".into());
    }
    if g.approval && !asked(&Capability::Approval) {
        out.push("approval".into());
    }
    out.extend(
        g.secrets
            .keys()
            .filter(|name| !asks_secret(requests, name))
            .map(|name| format!("secret `{name}`")),
    );
    out
}

/// Whether `requests` ask for the granted secret `name`: by its name, or
/// as one of the secrets the stage grants (`secret *`).
fn asks_secret(requests: &[Request], name: &str) -> bool {
    requests.iter().any(|r| match &r.capability {
        Capability::Secret(n) => n == name,
        Capability::SecretGranted => true,
        _ => false,
    })
}

/// Whether `requests` ask to start the granted `program`: by its name, or
/// as one of the programs the stage grants (`exec *`).
fn asks_exec(requests: &[Request], program: &str) -> bool {
    requests.iter().any(|r| match &r.capability {
        Capability::Exec(p) => p == program,
        Capability::ExecGranted => true,
        _ => false,
    })
}

/// The pipeline-file lines that grant `capability` to `stage`.
pub fn grant_toml(stage: &str, capability: &Capability) -> String {
    // Names come from the plugin: written as TOML strings (quoted, escaped),
    // so no name can break out of its line.
    let quoted = |name: &str| toml::Value::from(name).to_string();
    match capability {
        Capability::Exec(program) => format!(
            "[[stages.{stage}.grants.exec]]\nprogram = {}\nargs = [\"**\"]  # narrow to the arguments it needs, e.g. [\"init|plan\", \"**\"]",
            quoted(program)
        ),
        Capability::ExecGranted => format!(
            "[[stages.{stage}.grants.exec]]  # one table per program the stage runs\nprogram = \"<program>\"\nargs = [\"**\"]  # narrow to the arguments it needs"
        ),
        Capability::Read => format!("[stages.{stage}.grants]\nread = [\"<directory>\"]"),
        Capability::Write => format!("[stages.{stage}.grants]\nwrite = [\"<directory>\"]"),
        Capability::Env(name) => format!("[stages.{stage}.grants]\nenv = [{}]", quoted(name)),
        Capability::EnvGranted => format!(
            "[stages.{stage}.grants]\nenv = [\"<NAME>\"]  # each variable the stage's `with` names"
        ),
        Capability::Secret(name) => format!(
            "[stages.{stage}.grants.secrets]\n{} = {{ env = \"<VARIABLE>\" }}  # or {{ file = \"<VARIABLE>\" }}: the path of a 0600 file",
            secret::toml_key(name)
        ),
        // Always granted; listed for completeness.
        Capability::SecretGranted => format!("[stages.{stage}.grants.secrets]"),
        Capability::Connect => format!("[stages.{stage}.grants]\nconnect = [\"<host>:<port>\"]"),
        Capability::Approval => format!("[stages.{stage}.grants]\napproval = true"),
    }
}

/// What one stage may actually do: its plugin's requests intersected with
/// its grants, resolved to open handles (directories and program files are
/// opened here, once, and used as these objects from then on).
#[derive(Debug, Clone, Default)]
pub struct StagePolicy {
    pub exec: Vec<exec::ExecPolicy>,
    /// Read-only directories the plugin requested and was granted.
    pub read_dirs: Vec<fs::GrantDir>,
    /// Read-write directories the plugin requested and was granted.
    pub write_dirs: Vec<fs::GrantDir>,
    /// Every read and write grant, requested or not, as opened: the overlap
    /// rules check these very handles.
    pub granted: Vec<(GrantKind, fs::GrantDir)>,
    /// Host env var patterns the plugin may read.
    pub env: Vec<String>,
    pub connect: Vec<String>,
    pub approval: bool,
    /// Secrets the plugin requested and the stage grants, with how each
    /// reaches the programs, by name.
    pub secrets: std::collections::BTreeMap<String, crate::pipeline::SecretGrant>,
}

/// Every read and write grant of `stage`, opened: the handles that the
/// overlap rules check and the stage then uses.
pub fn open_grants(stage: &Stage) -> Result<Vec<(GrantKind, fs::GrantDir)>, PolicyError> {
    let mut granted = Vec::new();
    for (kind, dirs) in [
        (GrantKind::Read, &stage.read_dirs),
        (GrantKind::Write, &stage.write_dirs),
    ] {
        for path in dirs {
            let dir = fs::GrantDir::open(path).map_err(|source| PolicyError::Dir {
                kind,
                path: path.clone(),
                source,
            })?;
            granted.push((kind, dir));
        }
    }
    Ok(granted)
}

/// Which kind of directory grant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GrantKind {
    Read,
    Write,
}

impl fmt::Display for GrantKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            GrantKind::Read => "read",
            GrantKind::Write => "write",
        })
    }
}

/// A stage whose grants cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error(transparent)]
    Program(#[from] exec::ResolveError),
    #[error("the {kind} grant {path}: {source}")]
    Dir {
        kind: GrantKind,
        path: PathBuf,
        source: std::io::Error,
    },
}

/// The upstream work dirs a stage may read, as its `start` event records
/// them.
pub struct Upstream<'a> {
    /// How many (those of every stage upstream that has one).
    pub count: usize,
    /// The stages it names in `needs`.
    pub needs: &'a [String],
}

impl StagePolicy {
    /// What the stage may do, for its `start` audit event: programs with
    /// their resolved paths and digests, directories (with the stage's own
    /// work dir), the upstream work dirs it may read (how many, and its
    /// direct `needs`: the rest follows from the pipeline's DAG, so the
    /// record stays the same size however many stages came before), env
    /// names, connect patterns. `hidden` are host variables the plugin does
    /// not get (secrets' sources).
    pub fn summary(
        &self,
        work_dir: &Path,
        upstream: Upstream,
        hidden: &[String],
    ) -> serde_json::Value {
        let paths = |dirs: &[fs::GrantDir]| dirs.iter().map(|d| d.path.clone()).collect::<Vec<_>>();
        let host = std::env::vars().filter(|(k, _)| !hidden.contains(k));
        let env: Vec<String> = env::select(&self.env, host)
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        serde_json::json!({
            "exec": self.exec.iter().map(|p| serde_json::json!({"program": p.program, "path": p.path, "sha256": p.digest})).collect::<Vec<_>>(),
            "read": paths(&self.read_dirs),
            "upstream_work_dirs": { "count": upstream.count, "needs": upstream.needs },
            "write": paths(&self.write_dirs).into_iter().chain([work_dir.to_path_buf()]).collect::<Vec<_>>(),
            "env": env,
            "connect": self.connect,
            "approval": self.approval,
            "secrets": secret::grants_summary(&self.secrets),
        })
    }

    /// The policy for `stage` given its plugin's `requests` and its
    /// directory grants as [`open_grants`] opened them. Exec grants are
    /// resolved (and their pins checked) here, so a missing tool is reported
    /// before any stage runs.
    pub fn new(
        stage: &Stage,
        requests: &[Request],
        granted: Vec<(GrantKind, fs::GrantDir)>,
        sandbox: &crate::pipeline::Sandbox,
    ) -> Result<StagePolicy, PolicyError> {
        let asked = |c: &Capability| requests.iter().any(|r| &r.capability == c);
        // Every grant is resolved, requested or not: a granted program that
        // is missing is a broken pipeline either way.
        let mut exec = Vec::new();
        for grant in &stage.grants.exec {
            let policy = exec::ExecPolicy::resolve(grant, sandbox)?;
            if asks_exec(requests, &grant.program) {
                exec.push(policy);
            }
        }
        let requested = |want: GrantKind, cap: Capability| -> Vec<fs::GrantDir> {
            if !asked(&cap) {
                return Vec::new();
            }
            granted
                .iter()
                .filter(|(k, _)| *k == want)
                .map(|(_, d)| d.clone())
                .collect()
        };
        let read_dirs = requested(GrantKind::Read, Capability::Read);
        let write_dirs = requested(GrantKind::Write, Capability::Write);
        let env = if asked(&Capability::EnvGranted) {
            stage.grants.env.clone()
        } else {
            requests
                .iter()
                .filter_map(|r| match &r.capability {
                    Capability::Env(n) if env::covers(&stage.grants.env, n) => Some(n.clone()),
                    _ => None,
                })
                .collect()
        };
        Ok(StagePolicy {
            exec,
            read_dirs,
            write_dirs,
            granted,
            env,
            connect: if asked(&Capability::Connect) {
                stage.grants.connect.clone()
            } else {
                Vec::new()
            },
            approval: asked(&Capability::Approval) && stage.grants.approval,
            secrets: stage
                .grants
                .secrets
                .iter()
                .filter(|(name, _)| asks_secret(requests, name))
                .map(|(name, grant)| (name.clone(), grant.clone()))
                .collect(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stage(grants: &str) -> Stage {
        Stage {
            name: "lint".into(),
            plugin: "command".into(),
            needs: Vec::new(),
            upstream: Default::default(),
            with: serde_json::Value::Null,
            grants: toml::from_str(grants).unwrap(),
            read_dirs: Vec::new(),
            write_dirs: Vec::new(),
            timeout: std::time::Duration::from_secs(1),
            memory: 1 << 20,
            max_output: 1 << 20,
            environments: None,
            on_failure: Default::default(),
            requires_approval: None,
            image_digest: None,
            trigger_paths: Vec::new(),
            run_if: Default::default(),
        }
    }

    fn request(capability: Capability) -> Request {
        Request {
            capability,
            reason: "r".into(),
        }
    }

    #[test]
    fn exec_star_asks_for_the_programs_the_stage_grants_and_nothing_else() {
        let two = stage(
            "[[exec]]\nprogram = \"sh\"\nargs = [\"-c\", \"*\"]\n[[exec]]\nprogram = \"true\"",
        );
        let star = [request(Capability::ExecGranted)];
        assert!(granted(&two, &Capability::ExecGranted));
        assert!(check(&two, &star, &Default::default()).is_empty());
        assert!(unrequested(&two, &star).is_empty());
        // Only `sh` named: the `true` grant is not the plugin's.
        let named = [request(Capability::Exec("sh".into()))];
        assert_eq!(unrequested(&two, &named), ["exec `true`"]);
        // No program granted: the request is missing, with the lines to add.
        let none = stage("read = [\"src\"]");
        let missing = check(&none, &star, &Default::default());
        assert_eq!(missing.len(), 1);
        assert!(
            missing[0]
                .toml
                .starts_with("[[stages.lint.grants.exec]]  # one table per program"),
            "{}",
            missing[0].toml
        );
        // Each program keeps its own grant: `*` admits what is granted, as granted.
        let policy = StagePolicy::new(&two, &star, Vec::new(), &Default::default()).unwrap();
        let programs: Vec<&str> = policy.exec.iter().map(|p| p.program.as_str()).collect();
        assert_eq!(programs, ["sh", "true"]);
        assert_eq!(policy.exec[0].args, ["-c", "*"]);
        let policy = StagePolicy::new(&two, &named, Vec::new(), &Default::default()).unwrap();
        assert_eq!(policy.exec.len(), 1);
        assert_eq!(
            Capability::ExecGranted.to_string(),
            "exec `*` (the programs the stage grants)"
        );
    }

    #[test]
    fn env_star_asks_for_the_variables_the_stage_grants_and_nothing_else() {
        let two = stage("env = [\"SLACK_WEBHOOK_URL\", \"TEAMS_*\"]");
        let star = [request(Capability::EnvGranted)];
        assert!(granted(&two, &Capability::EnvGranted));
        assert!(check(&two, &star, &Default::default()).is_empty());
        assert!(unrequested(&two, &star).is_empty());
        let policy = StagePolicy::new(&two, &star, Vec::new(), &Default::default()).unwrap();
        assert_eq!(policy.env, ["SLACK_WEBHOOK_URL", "TEAMS_*"]);
        // Named: only that one is the plugin's.
        let named = [request(Capability::Env("SLACK_WEBHOOK_URL".into()))];
        assert_eq!(unrequested(&two, &named), ["env `TEAMS_*`"]);
        // Nothing granted: granted, and the plugin sees nothing.
        let none = stage("read = [\"src\"]");
        assert!(check(&none, &star, &Default::default()).is_empty());
        let policy = StagePolicy::new(&none, &star, Vec::new(), &Default::default()).unwrap();
        assert!(policy.env.is_empty());
    }

    #[test]
    fn secrets_are_the_requested_and_granted_ones() {
        let stage = stage(
            "[[exec]]\nprogram = \"sh\"\n[secrets]\ntoken = { env = \"TOKEN\" }\nkey = { file = \"KEY\", programs = [\"sh\"] }",
        );
        let declared: indexmap::IndexMap<String, crate::pipeline::Secret> = [(
            "token".to_string(),
            crate::pipeline::Secret {
                name: "token".into(),
                source: crate::pipeline::SecretSource::Env { var: "T".into() },
            },
        )]
        .into();
        let table = [
            (Capability::Secret("token".into()), true),
            (Capability::Secret("other".into()), false),
            (Capability::SecretGranted, true),
        ];
        for (capability, expected) in table {
            assert_eq!(granted(&stage, &capability), expected, "{capability}");
        }
        // Named: only that one is the plugin's; the other grant is ignored.
        let sh = request(Capability::Exec("sh".into()));
        let named = [sh.clone(), request(Capability::Secret("token".into()))];
        assert!(check(&stage, &named, &declared).is_empty());
        assert_eq!(unrequested(&stage, &named), ["secret `key`"]);
        let policy = StagePolicy::new(&stage, &named, Vec::new(), &Default::default()).unwrap();
        assert_eq!(policy.secrets.keys().collect::<Vec<_>>(), ["token"]);
        // `*`: every one the stage grants; none granted is fine too.
        let star = [sh, request(Capability::SecretGranted)];
        assert!(unrequested(&stage, &star).is_empty());
        let policy = StagePolicy::new(&stage, &star, Vec::new(), &Default::default()).unwrap();
        assert_eq!(policy.secrets.keys().collect::<Vec<_>>(), ["key", "token"]);
        let none = [request(Capability::SecretGranted)];
        assert!(check(&super::tests::stage("read = [\"src\"]"), &none, &declared).is_empty());
        // Missing: the lines to add, the declaration only when it is missing.
        let missing = check(
            &stage,
            &[
                request(Capability::Secret("other".into())),
                request(Capability::Secret("x]\n[evil".into())),
            ],
            &declared,
        );
        assert_eq!(
            missing[0].toml,
            "[secrets.other]\nenv = \"<HOST_VARIABLE>\"  # or file = \"<path>\", or command = [\"<program>\", \"<arg>\"]\n[stages.lint.grants.secrets]\nother = { env = \"<VARIABLE>\" }  # or { file = \"<VARIABLE>\" }: the path of a 0600 file"
        );
        assert!(
            missing[1].toml.starts_with("[secrets.\"x]\\n[evil\"]\n"),
            "{}",
            missing[1].toml
        );
        let declared_token = check(
            &super::tests::stage("[[exec]]\nprogram = \"sh\""),
            &named,
            &declared,
        );
        assert!(
            declared_token[0]
                .toml
                .starts_with("[stages.lint.grants.secrets]\ntoken = ")
        );
    }
}
