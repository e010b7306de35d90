//! `${…}` references inside a stage's `with` table.
//!
//! Forms: `${stages.<stage>.outputs.<key>}`, `${stages.<stage>.status}`,
//! `${env.<NAME>}`, `${run.id}`, `${run.environment}`, `${run.status}`,
//! `${run.stages}`, `${pipeline.dir}`, `${stage.work_dir}`, `${stage.forced}`
//! (`true` when `capstan run --force <this stage>`). `$${` is a
//! literal `${`. A string that is exactly one reference takes the referenced
//! JSON value as it is (a number stays a number, `${run.stages}` an
//! object); a reference inside longer text is replaced by its text.
//!
//! The statuses are how the stages before this one ended, for stages that
//! report on them (`run_if = "failure"` or `"always"`, such as a notifier):
//! a stage's status is a word of `run.json` (`succeeded`, `failed`,
//! `skipped`, `awaiting-approval`, `cancelled`); `${run.status}` is
//! `failed` when one of the stages this one needs, directly or not, failed,
//! else `awaiting-approval` when one waits for approval, else `succeeded`;
//! `${run.stages}` is an object with one entry per such stage, in pipeline
//! order: `{"status": …, "summary": …}` for one that succeeded, `{"status":
//! …, "reason": …}` otherwise.

use std::collections::HashMap;
use std::ops::Range;

use serde_json::Value;

/// What a `${…}` names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reference {
    StageOutput { stage: String, key: String },
    StageStatus(String),
    Env(String),
    RunId,
    RunEnvironment,
    RunStatus,
    RunStages,
    PipelineDir,
    StageWorkDir,
    StageForced,
}

/// Every reference in `text`, with its byte range, or a message for the
/// first malformed one.
pub fn references(text: &str) -> Result<Vec<(Range<usize>, Reference)>, String> {
    let mut found = Vec::new();
    let mut i = 0;
    while let Some(pos) = text[i..].find("${") {
        let start = i + pos;
        if start > 0 && text.as_bytes()[start - 1] == b'$' {
            i = start + 2;
            continue;
        }
        let Some(len) = text[start..].find('}') else {
            return Err(format!("unclosed `${{` in `{text}`"));
        };
        let end = start + len + 1;
        found.push((start..end, parse(&text[start + 2..end - 1])?));
        i = end;
    }
    Ok(found)
}

fn parse(inner: &str) -> Result<Reference, String> {
    let parts: Vec<&str> = inner.trim().split('.').collect();
    Ok(match parts.as_slice() {
        ["stages", stage, "outputs", key] => Reference::StageOutput {
            stage: stage.to_string(),
            key: key.to_string(),
        },
        ["stages", stage, "status"] => Reference::StageStatus(stage.to_string()),
        ["env", name] => Reference::Env(name.to_string()),
        ["run", "id"] => Reference::RunId,
        ["run", "environment"] => Reference::RunEnvironment,
        ["run", "status"] => Reference::RunStatus,
        ["run", "stages"] => Reference::RunStages,
        ["pipeline", "dir"] => Reference::PipelineDir,
        ["stage", "work_dir"] => Reference::StageWorkDir,
        ["stage", "forced"] => Reference::StageForced,
        _ => {
            return Err(format!(
                "unknown reference `${{{inner}}}`; use ${{stages.<stage>.outputs.<key>}}, \
                 ${{stages.<stage>.status}}, ${{env.NAME}}, ${{run.id}}, ${{run.environment}}, \
                 ${{run.status}}, ${{run.stages}}, ${{pipeline.dir}}, ${{stage.work_dir}} or ${{stage.forced}}"
            ));
        }
    })
}

/// Every string inside a JSON value.
pub fn strings(value: &Value) -> Vec<&str> {
    let mut out = Vec::new();
    walk(value, &mut out);
    out
}

fn walk<'a>(value: &'a Value, out: &mut Vec<&'a str>) {
    match value {
        Value::String(s) => out.push(s),
        Value::Array(items) => items.iter().for_each(|v| walk(v, out)),
        Value::Object(map) => map.values().for_each(|v| walk(v, out)),
        _ => {}
    }
}

/// The values references resolve to in one stage of one run.
pub struct Scope<'a> {
    pub outputs: &'a HashMap<String, serde_json::Map<String, Value>>,
    pub env: &'a dyn Fn(&str) -> Option<String>,
    pub run_id: &'a str,
    pub environment: &'a str,
    pub pipeline_dir: &'a str,
    pub work_dir: &'a str,
    /// The stage runs because `--force` named it.
    pub forced: bool,
    /// How the stages this one needs, directly or not, ended (see the
    /// module's doc), in pipeline order: made when a reference asks for it
    /// (a stage deep in a long chain has hundreds before it).
    pub ended: &'a dyn Fn() -> &'a serde_json::Map<String, Value>,
    /// `${run.status}`.
    pub run_status: &'a str,
}

impl Scope<'_> {
    fn lookup(&self, reference: &Reference) -> Result<Value, String> {
        Ok(match reference {
            Reference::StageOutput { stage, key } => self
                .outputs
                .get(stage)
                .and_then(|o| o.get(key))
                .cloned()
                .ok_or_else(|| format!("stage `{stage}` has no output `{key}`"))?,
            Reference::StageStatus(stage) => (self.ended)()
                .get(stage)
                .and_then(|e| e.get("status"))
                .cloned()
                .ok_or_else(|| format!("stage `{stage}` has not ended"))?,
            Reference::Env(name) => Value::String(
                (self.env)(name)
                    .ok_or_else(|| format!("environment variable `{name}` is not set"))?,
            ),
            Reference::RunId => self.run_id.into(),
            Reference::RunEnvironment => self.environment.into(),
            Reference::RunStatus => self.run_status.into(),
            Reference::RunStages => Value::Object((self.ended)().clone()),
            Reference::PipelineDir => self.pipeline_dir.into(),
            Reference::StageWorkDir => self.work_dir.into(),
            Reference::StageForced => self.forced.into(),
        })
    }

    /// `value` with every reference replaced.
    pub fn resolve(&self, value: &Value) -> Result<Value, String> {
        Ok(match value {
            Value::String(s) => self.resolve_str(s)?,
            Value::Array(items) => Value::Array(
                items
                    .iter()
                    .map(|v| self.resolve(v))
                    .collect::<Result<_, _>>()?,
            ),
            Value::Object(map) => Value::Object(
                map.iter()
                    .map(|(k, v)| Ok((k.clone(), self.resolve(v)?)))
                    .collect::<Result<_, String>>()?,
            ),
            other => other.clone(),
        })
    }

    fn resolve_str(&self, text: &str) -> Result<Value, String> {
        let refs = references(text)?;
        if let [(range, reference)] = refs.as_slice()
            && range.start == 0
            && range.end == text.len()
        {
            return self.lookup(reference);
        }
        let mut out = String::with_capacity(text.len());
        let mut last = 0;
        for (range, reference) in &refs {
            out.push_str(&text[last..range.start]);
            match self.lookup(reference)? {
                Value::String(s) => out.push_str(&s),
                other => out.push_str(&other.to_string()),
            }
            last = range.end;
        }
        out.push_str(&text[last..]);
        Ok(Value::String(out.replace("$${", "${")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn scope_with(outputs: &HashMap<String, serde_json::Map<String, Value>>, f: impl Fn(&Scope)) {
        let env = |name: &str| (name == "HOME").then(|| "/home/op".to_string());
        let ended = json!({
            "b": {"status": "succeeded", "summary": "built"},
            "smoke": {"status": "failed", "reason": "HTTP 503"},
        });
        let ended = || ended.as_object().unwrap();
        let scope = Scope {
            ended: &ended,
            run_status: "failed",
            outputs,
            env: &env,
            run_id: "r1",
            environment: "dev",
            pipeline_dir: "/p",
            work_dir: "/w",
            forced: false,
        };
        f(&scope)
    }

    #[test]
    fn parses_every_form_and_rejects_others() {
        let refs = references("a ${stages.b.outputs.c} ${env.X} ${run.id} $${literal}").unwrap();
        assert_eq!(refs.len(), 3);
        assert_eq!(
            refs[0].1,
            Reference::StageOutput {
                stage: "b".into(),
                key: "c".into()
            }
        );
        assert!(
            references("${stages.b.output.c}")
                .unwrap_err()
                .contains("unknown reference")
        );
        assert!(references("${run.id").unwrap_err().contains("unclosed"));
    }

    #[test]
    fn whole_reference_keeps_type_embedded_becomes_text() {
        let mut outputs = HashMap::new();
        outputs.insert(
            "b".to_string(),
            json!({"n": 3, "s": "x"}).as_object().unwrap().clone(),
        );
        scope_with(&outputs, |scope| {
            let value = json!({"n": "${stages.b.outputs.n}", "t": "n=${stages.b.outputs.n} ${env.HOME} $${x}", "l": ["${run.id}"]});
            assert_eq!(
                scope.resolve(&value).unwrap(),
                json!({"n": 3, "t": "n=3 /home/op ${x}", "l": ["r1"]})
            );
            assert!(
                scope
                    .resolve(&json!("${env.NOPE}"))
                    .unwrap_err()
                    .contains("`NOPE` is not set")
            );
            assert!(
                scope
                    .resolve(&json!("${stages.b.outputs.z}"))
                    .unwrap_err()
                    .contains("no output `z`")
            );
        });
    }

    #[test]
    fn statuses_of_the_stages_before() {
        assert_eq!(
            references("${stages.smoke.status} ${run.status} ${run.stages}")
                .unwrap()
                .into_iter()
                .map(|(_, r)| r)
                .collect::<Vec<_>>(),
            [
                Reference::StageStatus("smoke".into()),
                Reference::RunStatus,
                Reference::RunStages
            ]
        );
        assert!(
            references("${stages.smoke.state}")
                .unwrap_err()
                .contains("${stages.<stage>.status}")
        );
        scope_with(&HashMap::new(), |scope| {
            let value = json!({
                "status": "${run.status}",
                "stages": "${run.stages}",
                "line": "smoke ${stages.smoke.status}, run ${run.status}",
            });
            assert_eq!(
                scope.resolve(&value).unwrap(),
                json!({
                    "status": "failed",
                    "stages": {
                        "b": {"status": "succeeded", "summary": "built"},
                        "smoke": {"status": "failed", "reason": "HTTP 503"},
                    },
                    "line": "smoke failed, run failed",
                })
            );
            assert!(
                scope
                    .resolve(&json!("${stages.later.status}"))
                    .unwrap_err()
                    .contains("`later` has not ended")
            );
        });
    }
}
