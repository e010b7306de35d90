//! The `secret` capability: values the host gets for a stage's programs
//! (from its environment, a file, or a command it runs; never from a
//! plugin), hands them over as the pipeline says, and keeps out of
//! everything the run shows and keeps.
//!
//! - [`resolve`]: at stage start, only the secrets the stage is granted and
//!   its plugin requested, into memory (never written by the host).
//! - [`deliver`]: a variable of each permitted program's environment, or a
//!   0600 file in a 0700 directory of the stage attempt's own, removed when
//!   the stage ends, however it ends.
//! - [`redact`]: the run's redactor: each value and its encodings replaced
//!   by `***` in the terminal, stage logs, the audit log, the run store,
//!   `outputs.json`, `run.json` and reports.
//! - [`scan`]: when a stage that received secrets ends, the files it could
//!   leave in the run directory are searched; a value found fails the
//!   stage (and is masked in the file).

pub mod deliver;
pub mod redact;
pub mod resolve;
pub mod scan;

use std::collections::BTreeMap;

use indexmap::IndexMap;
use serde_json::{Value, json};

pub use deliver::Delivered;
pub use redact::{Origin, Redactor};
pub use resolve::{ResolveError, Resolved};

use crate::pipeline::{Secret, SecretGrant, Stage};

/// The host variables that are secrets' sources: the host never passes
/// them to a plugin or a program by an `env` pattern.
pub fn source_vars(secrets: &IndexMap<String, Secret>) -> std::sync::Arc<[String]> {
    secrets
        .values()
        .filter_map(|s| match &s.source {
            crate::pipeline::SecretSource::Env { var } => Some(var.clone()),
            _ => None,
        })
        .collect()
}

/// `name` as a TOML key: bare when it can be, else quoted (a name comes
/// from a plugin and must not break out of its line).
pub fn toml_key(name: &str) -> String {
    if !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        name.to_string()
    } else {
        // A JSON string is a TOML basic string, on one line.
        serde_json::to_string(name).expect("a string serializes")
    }
}

/// The pipeline-file lines that grant secret `name` to `stage`, declaring
/// it first when `secrets` does not have it.
pub fn grant_toml(stage: &Stage, name: &str, secrets: &IndexMap<String, Secret>) -> String {
    let key = toml_key(name);
    let declare = if secrets.contains_key(name) {
        String::new()
    } else {
        format!(
            "[secrets.{key}]\nenv = \"<HOST_VARIABLE>\"  # or file = \"<path>\", or command = [\"<program>\", \"<arg>\"]\n"
        )
    };
    format!(
        "{declare}[stages.{}.grants.secrets]\n{key} = {{ env = \"<VARIABLE>\" }}  # or {{ file = \"<VARIABLE>\" }}: the path of a 0600 file",
        stage.name
    )
}

/// Granted secrets as the audit log and `capstan audit` show them: names
/// and delivery, never values.
pub fn grants_summary(grants: &BTreeMap<String, SecretGrant>) -> Value {
    Value::Array(
        grants
            .iter()
            .map(|(name, grant)| {
                let (how, var) = grant.delivery();
                json!({ "name": name, "delivery": how, "variable": var, "programs": grant.programs })
            })
            .collect(),
    )
}

/// One line per granted secret: `token → env TF_VAR_token (terraform)`.
pub fn describe_grant(name: &str, grant: &SecretGrant) -> String {
    let (how, var) = grant.delivery();
    let how = match how {
        crate::pipeline::Delivery::Env => format!("env {var}"),
        crate::pipeline::Delivery::File => format!("file, path in {var}"),
    };
    match &grant.programs {
        Some(programs) => format!("{name} → {how} (only {})", programs.join(", ")),
        None => format!("{name} → {how} (every program of the stage)"),
    }
}

/// What an operator should know of a source: a file that users other
/// than its owner may read (it should be 0600, as SSH keys must be).
pub fn source_warning(source: &crate::pipeline::SecretSource) -> Option<String> {
    use std::os::unix::fs::PermissionsExt;
    let crate::pipeline::SecretSource::File { path } = source else {
        return None;
    };
    let mode = std::fs::metadata(path).ok()?.permissions().mode() & 0o777;
    (mode & 0o077 != 0).then(|| {
        format!(
            "{} is readable by users other than its owner (mode {mode:04o}); make it private: chmod 600 {}",
            path.display(),
            path.display()
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_from_plugins_stay_on_their_line() {
        assert_eq!(toml_key("token"), "token");
        assert_eq!(toml_key("a b"), "\"a b\"");
        assert_eq!(toml_key("x]\n[evil"), "\"x]\\n[evil\"");
        assert_eq!(toml_key(""), "\"\"");
    }
}
