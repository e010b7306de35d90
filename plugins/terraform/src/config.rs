//! The stage's `with` table, its checks, and the Terraform command lines it
//! turns into.
//!
//! Serde catches unknown keys and wrong types (naming the field); the rules
//! serde cannot express — which keys each `action` needs or ignores, which
//! paths must be absolute — live in [`Config::validate`], so a pipeline
//! file that asks for something the stage would silently not do is an
//! error before Terraform starts.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use capstan_plugin::Error;
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::Value;

/// Name of the Terraform output whose value becomes `inventory.yml` when
/// `inventory_output` is not set.
pub const DEFAULT_INVENTORY_OUTPUT: &str = "ansible_inventory";

/// `lock_timeout` when the pipeline does not set it.
pub const DEFAULT_LOCK_TIMEOUT: &str = "120s";

/// What `lock_timeout` looks like (a subset of Go's durations, which
/// Terraform parses).
const LOCK_TIMEOUT_PATTERN: &str = "^[0-9]+(s|m|h)$";

/// The stage's `with` table.
///
/// Every path is absolute (the pipeline passes e.g.
/// `"${pipeline.dir}/infrastructure"`): the plugin and Terraform see the
/// same file system, and a relative path would mean nothing to either.
#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(extend("allOf" = [
    {
        "if": { "properties": { "action": { "const": "apply" } } },
        "then": { "required": ["plan_file", "approved_digest"] }
    }
]))]
pub struct Config {
    /// What to do: `plan` (init, plan into the work dir, summarise, check
    /// the policy), `apply` (apply a saved plan whose sha256 was approved,
    /// then read the outputs), `output` (read the outputs, change nothing)
    /// or `destroy-plan` (a plan that destroys everything, for rollback;
    /// apply it with a later `apply` stage).
    pub action: Action,
    /// Absolute path of the Terraform configuration directory (the working
    /// directory of every Terraform command). Grant it to the stage as
    /// `read`. The stage never writes into it: Terraform's data directory
    /// (`TF_DATA_DIR`) lives in the stage's work dir.
    pub dir: PathBuf,
    /// Absolute path of the state file for the configuration's
    /// `backend "local" {}` block, passed to `terraform init` as
    /// `-backend-config=path=<state>`. Grant its directory to the stage as
    /// `write` (Terraform writes the state and its lock file there). Leave
    /// it out when the configuration configures its own backend.
    #[serde(default)]
    pub state: Option<PathBuf>,
    /// Input variables, each passed as `-var name=value` (plan and
    /// destroy-plan). Strings are passed as they are; numbers, booleans,
    /// lists and objects as JSON, which Terraform parses as the
    /// corresponding HCL value.
    #[serde(default)]
    pub vars: BTreeMap<String, Value>,
    /// Variable files, each passed as `-var-file=<path>` (plan and
    /// destroy-plan); relative paths are relative to `dir`.
    #[serde(default)]
    pub var_files: Vec<String>,
    /// Policy (plan and destroy-plan): fail when the plan destroys more
    /// resources than this. Replacing a resource destroys it, so
    /// replacements count too.
    #[serde(default)]
    pub max_destroy: Option<u64>,
    /// Policy (plan and destroy-plan): fail when the plan replaces any
    /// resource (destroy and re-create, in either order).
    #[serde(default)]
    pub forbid_replace: bool,
    /// Policy (plan and destroy-plan): fail when the plan changes nothing:
    /// no resource and no output.
    #[serde(default)]
    pub require_changes: bool,
    /// Apply: the saved plan to apply, usually
    /// `"${stages.plan.outputs.plan_file}"` (the stage must `need` the plan
    /// stage to read its work dir).
    #[serde(default)]
    pub plan_file: Option<PathBuf>,
    /// Apply: the sha256 (hex, optionally prefixed `sha256:`) that was
    /// approved for `plan_file`, usually
    /// `"${stages.plan.outputs.plan_digest}"` or the approval stage's
    /// digest. The stage hashes the plan file itself and refuses to apply
    /// when the digests differ.
    #[serde(default)]
    pub approved_digest: Option<String>,
    /// Apply: how long `terraform apply` waits for the state lock
    /// (`-lock-timeout`): a number with a unit, `"90s"`, `"10m"`, `"1h"`.
    /// Default `"120s"`; `"0s"` fails at once when the state is locked.
    /// When a resumed run repeats an apply stage whose host died during
    /// `terraform apply`, that Terraform may still be running and hold the
    /// lock: the stage waits this long for it before telling whether it
    /// applied the plan.
    #[serde(default)]
    #[schemars(extend("pattern" = LOCK_TIMEOUT_PATTERN))]
    pub lock_timeout: Option<String>,
    /// Apply and output: the Terraform output whose value (a YAML string,
    /// or an object) is written to `<work dir>/inventory.yml`, whose path
    /// becomes the output `ansible_inventory_file`. Default
    /// `ansible_inventory`, skipped when the configuration has no such
    /// output; when set explicitly, the output must exist.
    #[serde(default)]
    pub inventory_output: Option<String>,
    /// What `terraform init` may do with the dependency lock file
    /// `.terraform.lock.hcl` in `dir`: `readonly` (default; `init
    /// -lockfile=readonly`: it is never written, and init fails if the
    /// providers do not match it — commit it with the configuration) or
    /// `update` (init may create or update it: grant `dir` as `write`).
    #[serde(default)]
    pub lockfile: Lockfile,
}

/// What the stage does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Action {
    /// `init`, `plan -out`, `show -json`, `show -no-color`: outputs the plan
    /// file, its digest, a summary and the plan as Terraform renders it, and
    /// enforces the policy.
    Plan,
    /// `init`, `apply` of the approved saved plan, `output -json`.
    Apply,
    /// `init`, `output -json`: the current outputs, changing nothing.
    Output,
    /// Like `plan`, with `-destroy`.
    DestroyPlan,
}

impl Action {
    /// As written in the pipeline file.
    pub fn name(self) -> &'static str {
        match self {
            Action::Plan => "plan",
            Action::Apply => "apply",
            Action::Output => "output",
            Action::DestroyPlan => "destroy-plan",
        }
    }

    /// `plan` and `destroy-plan`.
    pub fn plans(self) -> bool {
        matches!(self, Action::Plan | Action::DestroyPlan)
    }
}

/// How `terraform init` treats `.terraform.lock.hcl`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Lockfile {
    /// Never write it; fail when the providers do not match it.
    #[default]
    Readonly,
    /// Let `init` create or update it (the stage needs `write` on `dir`).
    Update,
}

impl Config {
    /// The checks serde cannot express; each error names the field.
    pub fn validate(&self) -> Result<(), Error> {
        let action = self.action;
        let only = |field: &str, set: bool, allowed: &str| -> Result<(), Error> {
            if set {
                Err(Error::config(format!(
                    "field `{field}`: only used with {allowed}, not with action = \"{}\"",
                    action.name()
                )))
            } else {
                Ok(())
            }
        };
        let planning = "action = \"plan\" or \"destroy-plan\"";
        if !action.plans() {
            only("vars", !self.vars.is_empty(), planning)?;
            only("var_files", !self.var_files.is_empty(), planning)?;
            only("max_destroy", self.max_destroy.is_some(), planning)?;
            only("forbid_replace", self.forbid_replace, planning)?;
            only("require_changes", self.require_changes, planning)?;
        }
        if action != Action::Apply {
            let apply = "action = \"apply\"";
            only("plan_file", self.plan_file.is_some(), apply)?;
            only("approved_digest", self.approved_digest.is_some(), apply)?;
            only("lock_timeout", self.lock_timeout.is_some(), apply)?;
        }
        if action.plans() {
            only(
                "inventory_output",
                self.inventory_output.is_some(),
                "action = \"apply\" or \"output\"",
            )?;
        }

        absolute("dir", &self.dir)?;
        if let Some(state) = &self.state {
            absolute("state", state)?;
            if state.file_name().is_none() {
                return Err(Error::config(format!(
                    "field `state`: `{}` names no file",
                    state.display()
                )));
            }
        }
        for name in self.vars.keys() {
            if !is_variable_name(name) {
                return Err(Error::config(format!(
                    "field `vars.{name}`: not a Terraform variable name \
                     (letters, digits, `_` and `-`, not starting with a digit)"
                )));
            }
        }
        for (i, file) in self.var_files.iter().enumerate() {
            if file.is_empty() {
                return Err(Error::config(format!("field `var_files[{i}]`: empty path")));
            }
        }
        if action == Action::Apply {
            let Some(plan_file) = &self.plan_file else {
                return Err(missing("plan_file"));
            };
            absolute("plan_file", plan_file)?;
            let Some(digest) = &self.approved_digest else {
                return Err(missing("approved_digest"));
            };
            crate::digest::parse(digest)
                .map_err(|e| Error::config(format!("field `approved_digest`: {e}")))?;
            self.lock_timeout()?;
        }
        if let Some(name) = &self.inventory_output
            && !is_variable_name(name)
        {
            return Err(Error::config(format!(
                "field `inventory_output`: `{name}` is not a Terraform output name"
            )));
        }
        Ok(())
    }

    /// The output to write as the inventory, and whether the pipeline
    /// asked for it by name (then it must exist).
    pub fn inventory_output(&self) -> (&str, bool) {
        match &self.inventory_output {
            Some(name) => (name, true),
            None => (DEFAULT_INVENTORY_OUTPUT, false),
        }
    }

    /// `lock_timeout` as given (or the default), for `-lock-timeout=`, and
    /// as a duration.
    pub fn lock_timeout(&self) -> Result<(&str, Duration), Error> {
        let text = self.lock_timeout.as_deref().unwrap_or(DEFAULT_LOCK_TIMEOUT);
        let bad = || {
            Error::config(format!(
                "field `lock_timeout`: `{text}` is not a duration: use a number with a unit, \
                 \"90s\", \"10m\" or \"1h\""
            ))
        };
        let digits = text.trim_end_matches(|c: char| c.is_ascii_alphabetic());
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        let n: u64 = digits.parse().map_err(|_| bad())?;
        let secs = match &text[digits.len()..] {
            "s" => Some(n),
            "m" => n.checked_mul(60),
            "h" => n.checked_mul(3600),
            _ => None,
        }
        .ok_or_else(bad)?;
        Ok((text, Duration::from_secs(secs)))
    }

    /// `terraform init …`
    pub fn init_args(&self) -> Vec<String> {
        let mut args = vec!["init".into(), "-input=false".into(), "-no-color".into()];
        if self.lockfile == Lockfile::Readonly {
            args.push("-lockfile=readonly".into());
        }
        if let Some(state) = &self.state {
            args.push(format!("-backend-config=path={}", state.display()));
        }
        args
    }

    /// `terraform plan … -out=<plan_file>`, with `-destroy` for
    /// `destroy-plan`.
    pub fn plan_args(&self, plan_file: &Path) -> Vec<String> {
        let mut args = vec!["plan".into(), "-input=false".into(), "-no-color".into()];
        if self.action == Action::DestroyPlan {
            args.push("-destroy".into());
        }
        args.push(format!("-out={}", plan_file.display()));
        for file in &self.var_files {
            args.push(format!("-var-file={file}"));
        }
        for (name, value) in &self.vars {
            args.push("-var".into());
            args.push(format!("{name}={}", var_value(value)));
        }
        args
    }
}

/// `terraform show -json <plan_file>`
pub fn show_args(plan_file: &Path) -> Vec<String> {
    vec![
        "show".into(),
        "-json".into(),
        plan_file.display().to_string(),
    ]
}

/// `terraform show -no-color <plan_file>`: Terraform's own rendering of the
/// saved plan, sensitive values masked.
pub fn show_text_args(plan_file: &Path) -> Vec<String> {
    vec![
        "show".into(),
        "-no-color".into(),
        plan_file.display().to_string(),
    ]
}

/// `terraform apply -input=false -no-color -lock-timeout=<lock_timeout>
/// <plan_file>`: a saved plan is applied without a prompt (Terraform
/// refuses variables with it), after waiting up to `lock_timeout` for
/// whoever holds the state lock.
pub fn apply_args(plan_file: &Path, lock_timeout: &str) -> Vec<String> {
    vec![
        "apply".into(),
        "-input=false".into(),
        "-no-color".into(),
        format!("-lock-timeout={lock_timeout}"),
        plan_file.display().to_string(),
    ]
}

/// `terraform output -json -no-color`
pub fn output_args() -> Vec<String> {
    vec!["output".into(), "-json".into(), "-no-color".into()]
}

/// A `vars` value as Terraform reads it after `-var name=`: strings as they
/// are, anything else as JSON (valid HCL for numbers, booleans, lists and
/// objects).
pub fn var_value(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Terraform's identifier rule for variable and output names.
fn is_variable_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

fn absolute(field: &str, path: &Path) -> Result<(), Error> {
    if path.as_os_str().is_empty() {
        return Err(Error::config(format!("field `{field}`: empty path")));
    }
    if !path.is_absolute() {
        return Err(Error::config(format!(
            "field `{field}`: `{}` is not an absolute path (use e.g. \"${{pipeline.dir}}/{}\")",
            path.display(),
            path.display()
        )));
    }
    Ok(())
}

fn missing(field: &str) -> Error {
    Error::config(format!("field `{field}`: required with action = \"apply\""))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(value: Value) -> Result<Config, String> {
        let config: Config = serde_json::from_value(value).map_err(|e| e.to_string())?;
        config.validate().map_err(|e| e.to_string())?;
        Ok(config)
    }

    fn plan() -> Value {
        json!({"action": "plan", "dir": "/srv/infra", "state": "/srv/state/terraform.tfstate"})
    }

    const DIGEST: &str = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";

    #[test]
    fn plan_command_lines() {
        let mut v = plan();
        v["vars"] = json!({
            "environment": "dev",
            "host_count": 2,
            "pinned": null,
            "flag": true,
            "targets": ["a", "b"],
            "tags": {"team": "infra"}
        });
        v["var_files"] = json!(["dev.tfvars", "/etc/common.tfvars"]);
        let config = parse(v).unwrap();
        assert_eq!(
            config.init_args(),
            [
                "init",
                "-input=false",
                "-no-color",
                "-lockfile=readonly",
                "-backend-config=path=/srv/state/terraform.tfstate"
            ]
        );
        assert_eq!(
            config.plan_args(Path::new("/w/tfplan")),
            [
                "plan",
                "-input=false",
                "-no-color",
                "-out=/w/tfplan",
                "-var-file=dev.tfvars",
                "-var-file=/etc/common.tfvars",
                "-var",
                "environment=dev",
                "-var",
                "flag=true",
                "-var",
                "host_count=2",
                "-var",
                "pinned=null",
                "-var",
                "tags={\"team\":\"infra\"}",
                "-var",
                "targets=[\"a\",\"b\"]",
            ]
        );
        assert_eq!(
            show_args(Path::new("/w/tfplan")),
            ["show", "-json", "/w/tfplan"]
        );
        assert_eq!(
            show_text_args(Path::new("/w/tfplan")),
            ["show", "-no-color", "/w/tfplan"]
        );
        assert_eq!(
            apply_args(Path::new("/w/tfplan"), "120s"),
            [
                "apply",
                "-input=false",
                "-no-color",
                "-lock-timeout=120s",
                "/w/tfplan"
            ]
        );
        assert_eq!(output_args(), ["output", "-json", "-no-color"]);
    }

    #[test]
    fn destroy_plan_and_lockfile_update() {
        let mut v = plan();
        v["action"] = json!("destroy-plan");
        v["lockfile"] = json!("update");
        v.as_object_mut().unwrap().remove("state");
        let config = parse(v).unwrap();
        assert_eq!(config.init_args(), ["init", "-input=false", "-no-color"]);
        assert_eq!(
            config.plan_args(Path::new("/w/tfplan")),
            [
                "plan",
                "-input=false",
                "-no-color",
                "-destroy",
                "-out=/w/tfplan"
            ]
        );
    }

    #[test]
    fn apply_needs_a_plan_file_and_a_digest() {
        let apply = |extra: Value| {
            let mut v = json!({"action": "apply", "dir": "/srv/infra"});
            for (k, x) in extra.as_object().unwrap() {
                v[k] = x.clone();
            }
            parse(v)
        };
        assert_eq!(
            apply(json!({"approved_digest": DIGEST})).unwrap_err(),
            "invalid config: field `plan_file`: required with action = \"apply\""
        );
        assert_eq!(
            apply(json!({"plan_file": "/w/tfplan"})).unwrap_err(),
            "invalid config: field `approved_digest`: required with action = \"apply\""
        );
        let e = apply(json!({"plan_file": "/w/tfplan", "approved_digest": "abc"})).unwrap_err();
        assert!(
            e.starts_with("invalid config: field `approved_digest`: `abc` is not a sha256 digest"),
            "{e}"
        );
        let e = apply(json!({"plan_file": "tfplan", "approved_digest": DIGEST})).unwrap_err();
        assert!(
            e.starts_with("invalid config: field `plan_file`: `tfplan` is not an absolute path"),
            "{e}"
        );
        let ok = apply(json!({
            "plan_file": "/w/tfplan",
            "approved_digest": format!("sha256:{}", DIGEST.to_uppercase()),
            "inventory_output": "hosts_yaml"
        }))
        .unwrap();
        assert_eq!(ok.inventory_output(), ("hosts_yaml", true));
        assert_eq!(
            ok.lock_timeout().unwrap(),
            ("120s", Duration::from_secs(120))
        );
    }

    #[test]
    fn lock_timeouts() {
        let apply = |timeout: &str| {
            parse(json!({
                "action": "apply", "dir": "/d", "plan_file": "/w/tfplan",
                "approved_digest": DIGEST, "lock_timeout": timeout
            }))
            .map(|c| {
                let (text, d) = c.lock_timeout().unwrap();
                (text.to_string(), d)
            })
        };
        for (text, secs) in [("0s", 0), ("90s", 90), ("10m", 600), ("1h", 3600)] {
            assert_eq!(
                apply(text).unwrap(),
                (text.to_string(), Duration::from_secs(secs))
            );
        }
        for bad in [
            "",
            "s",
            "90",
            "1.5m",
            "-1s",
            "+1s",
            "1d",
            "10 m",
            "99999999999999999999s",
        ] {
            let e = apply(bad).unwrap_err();
            assert_eq!(
                e,
                format!(
                    "invalid config: field `lock_timeout`: `{bad}` is not a duration: use a \
                     number with a unit, \"90s\", \"10m\" or \"1h\""
                )
            );
        }
        let e = parse(json!({"action": "plan", "dir": "/d", "lock_timeout": "1m"})).unwrap_err();
        assert_eq!(
            e,
            "invalid config: field `lock_timeout`: only used with action = \"apply\", not with \
             action = \"plan\""
        );
    }

    #[test]
    fn fields_of_other_actions_are_errors() {
        let cases = [
            (
                json!({"action": "apply", "dir": "/d", "plan_file": "/p", "approved_digest": DIGEST, "vars": {"a": 1}}),
                "invalid config: field `vars`: only used with action = \"plan\" or \"destroy-plan\", not with action = \"apply\"",
            ),
            (
                json!({"action": "output", "dir": "/d", "max_destroy": 0}),
                "invalid config: field `max_destroy`: only used with action = \"plan\" or \"destroy-plan\", not with action = \"output\"",
            ),
            (
                json!({"action": "plan", "dir": "/d", "approved_digest": DIGEST}),
                "invalid config: field `approved_digest`: only used with action = \"apply\", not with action = \"plan\"",
            ),
            (
                json!({"action": "plan", "dir": "/d", "inventory_output": "inv"}),
                "invalid config: field `inventory_output`: only used with action = \"apply\" or \"output\", not with action = \"plan\"",
            ),
            (
                json!({"action": "plan", "dir": "infrastructure"}),
                "invalid config: field `dir`: `infrastructure` is not an absolute path (use e.g. \"${pipeline.dir}/infrastructure\")",
            ),
            (
                json!({"action": "plan", "dir": "/d", "vars": {"a=b": "c"}}),
                "invalid config: field `vars.a=b`: not a Terraform variable name (letters, digits, `_` and `-`, not starting with a digit)",
            ),
            (
                json!({"action": "plan", "dir": "/d", "state": "/"}),
                "invalid config: field `state`: `/` names no file",
            ),
        ];
        for (value, message) in cases {
            assert_eq!(parse(value).unwrap_err(), message);
        }
        // serde's own errors for unknown keys and unknown actions.
        let e = parse(json!({"action": "plan", "dir": "/d", "max_destroys": 1})).unwrap_err();
        assert!(e.starts_with("unknown field `max_destroys`"), "{e}");
        let e = parse(json!({"action": "deploy", "dir": "/d"})).unwrap_err();
        assert!(e.starts_with("unknown variant `deploy`"), "{e}");
    }

    #[test]
    fn output_defaults() {
        let config = parse(json!({"action": "output", "dir": "/d"})).unwrap();
        assert_eq!(config.inventory_output(), ("ansible_inventory", false));
        assert_eq!(config.lockfile, Lockfile::Readonly);
    }

    #[test]
    fn schema_documents_every_field() {
        let schema = serde_json::to_value(schemars::schema_for!(Config)).unwrap();
        assert_eq!(schema["additionalProperties"], false);
        assert_eq!(schema["required"], json!(["action", "dir"]));
        let properties = schema["properties"].as_object().unwrap();
        let fields = [
            "action",
            "dir",
            "state",
            "vars",
            "var_files",
            "max_destroy",
            "forbid_replace",
            "require_changes",
            "plan_file",
            "approved_digest",
            "lock_timeout",
            "inventory_output",
            "lockfile",
        ];
        assert_eq!(properties.keys().collect::<Vec<_>>(), fields);
        for field in fields {
            let p = &properties[field];
            // Enums put their description next to a `$ref`.
            assert!(
                p.get("description").and_then(Value::as_str).is_some(),
                "`{field}` has no description: {p}"
            );
        }
        assert_eq!(properties["lock_timeout"]["pattern"], LOCK_TIMEOUT_PATTERN);
        assert_eq!(
            schema["allOf"][0]["then"]["required"],
            json!(["plan_file", "approved_digest"])
        );
    }
}
