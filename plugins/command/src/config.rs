//! The stage's `with` table, and the steps it describes once the
//! stage-wide `env` and `cwd` are applied to each.
//!
//! The JSON Schema (checked by the host before any stage runs) catches
//! unknown keys, wrong types, an empty `run` and a table with neither
//! `run` nor `steps`; [`Config::steps`] checks what a schema cannot say
//! clearly (unique step names, variable names).

use std::borrow::Cow;
use std::collections::BTreeMap;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::de::Error as _;
use serde::{Deserialize, Deserializer};
use serde_json::Value;

/// The variable naming the file a step writes its outputs to.
pub const OUTPUT_VAR: &str = "CAPSTAN_OUTPUT";

/// The stage's `with` table: one step (`run`) or several (`steps`).
#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(extend(
    "if" = { "required": ["steps"] },
    "then" = { "properties": { "run": false } },
    "else" = { "required": ["run"] }
))]
pub struct Config {
    /// One step: the program and its arguments, e.g. `["make", "test"]`
    /// (argv: no shell, no globbing, no `$VAR` expansion). The program must
    /// be granted to the stage by this very name
    /// (`[[stages.<stage>.grants.exec]]`). Give either `run` or `steps`.
    #[serde(default)]
    #[schemars(length(min = 1))]
    pub run: Option<Vec<Arg>>,
    /// Several steps, run in order; a step that fails ends the stage and
    /// the steps after it do not run.
    #[serde(default)]
    #[schemars(length(min = 1))]
    pub steps: Option<Vec<StepSpec>>,
    /// Environment variables of every step (a step's own `env` adds to
    /// and overrides them). Each name must be allowed by the `env` of the
    /// program's exec grant.
    #[serde(default)]
    pub env: BTreeMap<String, Arg>,
    /// Working directory of every step without its own `cwd`: absolute,
    /// inside the stage work dir or a directory the stage's `read` grants
    /// name (e.g. `"${pipeline.dir}/infrastructure"`), or relative to the
    /// stage work dir. Default: the stage work dir.
    #[serde(default)]
    pub cwd: Option<String>,
}

/// One `[[stages.<stage>.with.steps]]` table.
#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StepSpec {
    /// Name of the step, unique in the stage: the stage log and every
    /// error about the step name it.
    #[schemars(length(min = 1))]
    pub name: String,
    /// The program and its arguments (argv: no shell). The program must be
    /// granted to the stage by this very name.
    #[schemars(length(min = 1))]
    pub run: Vec<Arg>,
    /// Environment variables of this step, over the stage-wide `env`.
    #[serde(default)]
    pub env: BTreeMap<String, Arg>,
    /// Working directory of this step (default: the stage-wide `cwd`, else
    /// the stage work dir).
    #[serde(default)]
    pub cwd: Option<String>,
    /// When the step exits with a non-zero status: log it and go on with
    /// the next step, and the stage still succeeds. A refused or timed-out
    /// step always fails the stage. Default: false.
    #[serde(default)]
    pub continue_on_error: bool,
}

/// A value passed as text: a string, or a number or boolean (a `${…}`
/// reference that is a whole value keeps the JSON type of what it names,
/// e.g. an upstream stage's numeric output).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Arg(pub String);

impl<'de> Deserialize<'de> for Arg {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match Value::deserialize(d)? {
            Value::String(s) => Ok(Arg(s)),
            Value::Number(n) => Ok(Arg(n.to_string())),
            Value::Bool(b) => Ok(Arg(b.to_string())),
            other => Err(D::Error::custom(format!(
                "expected a string, number or boolean, found {other}"
            ))),
        }
    }
}

impl JsonSchema for Arg {
    fn inline_schema() -> bool {
        true
    }

    fn schema_name() -> Cow<'static, str> {
        "Arg".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "Passed as text: a string, number or boolean.",
            "type": ["string", "number", "boolean"]
        })
    }
}

/// One step as it runs: stage-wide `env` and `cwd` applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    /// The step's name (`run` for the one step of the `run` form).
    pub name: String,
    pub program: String,
    pub args: Vec<String>,
    /// Sorted by name.
    pub env: Vec<(String, String)>,
    pub cwd: Option<String>,
    pub continue_on_error: bool,
}

impl Config {
    /// The steps to run, in order, or what is wrong with the table (naming
    /// the field).
    pub fn steps(&self) -> Result<Vec<Step>, String> {
        check_env("env", &self.env)?;
        match (&self.run, &self.steps) {
            (Some(_), Some(_)) => Err(
                "give either `run` (one step) or `steps` (several), not both; \
                 move the `run` command into a step"
                    .into(),
            ),
            (None, None) => Err(
                "nothing to run: give `run` (one step, e.g. run = [\"make\", \"test\"]) \
                 or `[[stages.<stage>.with.steps]]` tables"
                    .into(),
            ),
            (Some(run), None) => Ok(vec![self.step("run", "run", run, None)?]),
            (None, Some(specs)) => {
                if specs.is_empty() {
                    return Err("field `steps`: empty; give at least one step".into());
                }
                let mut steps: Vec<Step> = Vec::with_capacity(specs.len());
                for (i, spec) in specs.iter().enumerate() {
                    let field = format!("steps[{i}]");
                    if spec.name.trim().is_empty() {
                        return Err(format!(
                            "field `{field}.name`: empty; name the step (the log and errors use it)"
                        ));
                    }
                    if let Some(first) = steps.iter().position(|s| s.name == spec.name) {
                        return Err(format!(
                            "field `{field}.name`: `{}` is also the name of steps[{first}]; give each step its own name",
                            spec.name
                        ));
                    }
                    check_env(&format!("{field}.env"), &spec.env)?;
                    steps.push(self.step(
                        &spec.name,
                        &format!("{field}.run"),
                        &spec.run,
                        Some(spec),
                    )?);
                }
                Ok(steps)
            }
        }
    }

    /// The step called `name` running `argv` (the field `field`), with the
    /// stage-wide `env` and `cwd` under `spec`'s own.
    fn step(
        &self,
        name: &str,
        field: &str,
        argv: &[Arg],
        spec: Option<&StepSpec>,
    ) -> Result<Step, String> {
        let Some((program, args)) = argv.split_first() else {
            return Err(format!(
                "field `{field}`: empty; give the program and its arguments, e.g. [\"make\", \"test\"]"
            ));
        };
        if program.0.trim().is_empty() {
            return Err(format!(
                "field `{field}[0]`: empty; it names the program to run"
            ));
        }
        let mut env = self.env.clone();
        if let Some(spec) = spec {
            env.extend(spec.env.clone());
        }
        Ok(Step {
            name: name.to_string(),
            program: program.0.clone(),
            args: args.iter().map(|a| a.0.clone()).collect(),
            env: env.into_iter().map(|(k, v)| (k, v.0)).collect(),
            cwd: spec
                .and_then(|s| s.cwd.clone())
                .or_else(|| self.cwd.clone()),
            continue_on_error: spec.is_some_and(|s| s.continue_on_error),
        })
    }
}

/// Names in the `env` table at `field` are variable names, and not the one
/// the stage sets itself.
fn check_env(field: &str, env: &BTreeMap<String, Arg>) -> Result<(), String> {
    for name in env.keys() {
        if name == OUTPUT_VAR {
            return Err(format!(
                "field `{field}.{name}`: the stage sets `{OUTPUT_VAR}` itself, for every step \
                 (the file the step writes its outputs to); use another name"
            ));
        }
        if name.is_empty() || name.contains(['=', '\0']) {
            return Err(format!(
                "field `{field}`: `{}` is not an environment variable name (no `=`, not empty)",
                name.escape_debug()
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn config(with: Value) -> Config {
        serde_json::from_value(with).unwrap()
    }

    fn steps(with: Value) -> Result<Vec<Step>, String> {
        config(with).steps()
    }

    #[test]
    fn one_step_is_run() {
        let got = steps(json!({"run": ["make", "test", 3, true], "env": {"CI": 1}, "cwd": "/src"}))
            .unwrap();
        assert_eq!(
            got,
            [Step {
                name: "run".into(),
                program: "make".into(),
                args: vec!["test".into(), "3".into(), "true".into()],
                env: vec![("CI".into(), "1".into())],
                cwd: Some("/src".into()),
                continue_on_error: false,
            }]
        );
    }

    #[test]
    fn steps_take_the_stage_wide_env_and_cwd_under_their_own() {
        let got = steps(json!({
            "env": {"A": "stage", "B": "stage"},
            "cwd": "/repo",
            "steps": [
                {"name": "fmt", "run": ["terraform", "fmt", "-check"]},
                {"name": "test", "run": ["make"], "env": {"B": "step", "C": "step"}, "cwd": "/repo/sub", "continue_on_error": true},
            ]
        }))
        .unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!(
            (got[0].name.as_str(), got[0].program.as_str(), &got[0].args),
            (
                "fmt",
                "terraform",
                &vec!["fmt".to_string(), "-check".into()]
            )
        );
        assert_eq!(
            got[0].env,
            [("A".into(), "stage".into()), ("B".into(), "stage".into())]
        );
        assert_eq!(got[0].cwd.as_deref(), Some("/repo"));
        assert!(!got[0].continue_on_error);
        assert_eq!(
            got[1].env,
            [
                ("A".into(), "stage".into()),
                ("B".into(), "step".into()),
                ("C".into(), "step".into())
            ]
        );
        assert_eq!(got[1].cwd.as_deref(), Some("/repo/sub"));
        assert!(got[1].continue_on_error);
        assert!(got[1].args.is_empty());
    }

    #[test]
    fn mistakes_name_the_field() {
        let cases = [
            (json!({}), "nothing to run: give `run`"),
            (
                json!({"run": ["a"], "steps": [{"name": "x", "run": ["b"]}]}),
                "give either `run` (one step) or `steps` (several), not both",
            ),
            (json!({"run": []}), "field `run`: empty; give the program"),
            (
                json!({"run": [" "]}),
                "field `run[0]`: empty; it names the program",
            ),
            (json!({"steps": []}), "field `steps`: empty"),
            (
                json!({"steps": [{"name": "a", "run": ["x"]}, {"name": "b", "run": []}]}),
                "field `steps[1].run`: empty",
            ),
            (
                json!({"steps": [{"name": "a", "run": ["x"]}, {"name": "a", "run": ["y"]}]}),
                "field `steps[1].name`: `a` is also the name of steps[0]",
            ),
            (
                json!({"steps": [{"name": "", "run": ["x"]}]}),
                "field `steps[0].name`: empty",
            ),
            (
                json!({"run": ["x"], "env": {"CAPSTAN_OUTPUT": "/tmp/x"}}),
                "field `env.CAPSTAN_OUTPUT`: the stage sets `CAPSTAN_OUTPUT` itself",
            ),
            (
                json!({"steps": [{"name": "a", "run": ["x"], "env": {"A=B": "1"}}]}),
                "field `steps[0].env`: `A=B` is not an environment variable name",
            ),
        ];
        for (with, expected) in cases {
            let e = steps(with.clone()).unwrap_err();
            assert!(e.starts_with(expected), "{with}: {e}");
        }
    }

    #[test]
    fn values_are_strings_numbers_or_booleans() {
        let e = serde_json::from_value::<Config>(json!({"run": ["echo", ["nested"]]}))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("expected a string, number or boolean, found [\"nested\"]"),
            "{e}"
        );
        let e = serde_json::from_value::<Config>(json!({"run": ["echo"], "shell": "x"}))
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown field `shell`"), "{e}");
    }

    #[test]
    fn the_schema_requires_run_or_steps_and_types_every_value() {
        let schema = serde_json::to_value(schemars::schema_for!(Config)).unwrap();
        assert_eq!(schema["additionalProperties"], false);
        assert_eq!(schema["if"], json!({"required": ["steps"]}));
        assert_eq!(schema["then"], json!({"properties": {"run": false}}));
        assert_eq!(schema["else"], json!({"required": ["run"]}));
        assert_eq!(schema["properties"]["run"]["minItems"], 1);
        assert_eq!(
            schema["properties"]["run"]["items"]["type"],
            json!(["string", "number", "boolean"])
        );
        let step = &schema["$defs"]["StepSpec"];
        assert_eq!(step["additionalProperties"], false);
        assert_eq!(step["required"], json!(["name", "run"]));
        assert_eq!(step["properties"]["run"]["minItems"], 1);
        assert_eq!(
            step["properties"]["env"]["additionalProperties"]["type"],
            json!(["string", "number", "boolean"])
        );
    }
}
