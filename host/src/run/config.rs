//! A stage's `with` table checked against the JSON Schema its plugin
//! publishes: before any stage runs (keys always; values that still hold a
//! `${…}` reference only where the reference cannot change the outcome),
//! and again, fully, when the stage starts and its references are resolved.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use jsonschema::error::ValidationErrorKind as Kind;
use serde_json::Value;

use crate::pipeline::diag::closest;
use crate::pipeline::{Part, Pipeline, Stage};
use crate::runtime::plugin::LoadedPlugin;

/// One problem of a `with` table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigProblem {
    /// Keys and indexes from the `with` table down to the problem.
    pub path: Vec<String>,
    /// Whether the key at `path` is the problem (unknown, or lacking a
    /// required key inside it) rather than its value.
    pub part: Part,
    pub message: String,
    pub help: Option<String>,
}

/// The compiled validator of `schema`, compiled once per process: the
/// stages of a pipeline share a few plugins' schemas, each checked when the
/// pipeline is prepared and again when the stage starts, and compiling one
/// (with its check against the meta-schema) costs far more than using it.
fn validator(schema: &Value) -> Result<Arc<jsonschema::Validator>, String> {
    static COMPILED: OnceLock<Mutex<HashMap<String, Arc<jsonschema::Validator>>>> = OnceLock::new();
    let compiled = COMPILED.get_or_init(Default::default);
    let key = schema.to_string();
    if let Some(validator) = compiled.lock().expect("validator cache").get(&key) {
        return Ok(validator.clone());
    }
    let validator = Arc::new(
        jsonschema::validator_for(schema)
            .map_err(|e| format!("the plugin's config schema is invalid: {e}"))?,
    );
    compiled
        .lock()
        .expect("validator cache")
        .insert(key, validator.clone());
    Ok(validator)
}

/// Problems of `with` against `schema`, in the order the schema finds them
/// (`Err`: the schema itself is invalid). With `unresolved`, a problem that
/// a `${…}` reference could still make go away is left for later.
pub fn problems(
    schema: &Value,
    with: &Value,
    unresolved: bool,
) -> Result<Vec<ConfigProblem>, String> {
    let validator = validator(schema)?;
    let mut unknown: Vec<ConfigProblem> = Vec::new();
    let mut others = Vec::new();
    // Properties an unknown key was taken for ("did you mean"), per object:
    // their `required` error is the same mistake, reported once.
    let mut meant: Vec<(Vec<String>, String)> = Vec::new();
    for e in validator.iter_errors(with) {
        let at: Vec<String> = e
            .instance_path()
            .iter()
            .map(|s| match s {
                jsonschema::paths::LocationSegment::Property(p) => p.to_string(),
                jsonschema::paths::LocationSegment::Index(i) => i.to_string(),
            })
            .collect();
        match e.kind() {
            Kind::AdditionalProperties { unexpected }
            | Kind::UnevaluatedProperties { unexpected } => {
                let known = known_properties(schema, e.schema_path().as_str());
                for key in unexpected {
                    let mut path = at.clone();
                    path.push(key.clone());
                    let suggestion = closest(key, known.iter().map(String::as_str));
                    if let Some(s) = suggestion {
                        meant.push((at.clone(), s.to_string()));
                    }
                    unknown.push(ConfigProblem {
                        message: format!("unknown key `{key}` in `{}`", dotted(&at)),
                        help: Some(match suggestion {
                            Some(s) => format!("did you mean `{s}`?"),
                            None if known.is_empty() => "the plugin takes no key here".into(),
                            None => format!("the plugin's keys here are: {}", known.join(", ")),
                        }),
                        path,
                        part: Part::Key,
                    });
                }
            }
            Kind::Required { property } => {
                let property = property.as_str().unwrap_or_default().to_string();
                others.push((
                    Some((at.clone(), property.clone())),
                    ConfigProblem {
                        message: format!("`{}` lacks the required key `{property}`", dotted(&at)),
                        help: Some(format!("add `{property} = …` to `{}`", dotted(&at))),
                        path: at,
                        part: Part::Key,
                    },
                ));
            }
            kind => {
                if unresolved && waits_for_reference(kind, e.instance()) {
                    continue;
                }
                others.push((
                    None,
                    ConfigProblem {
                        message: format!("`{}`: {e}", dotted(&at)),
                        help: None,
                        path: at,
                        part: Part::Value,
                    },
                ));
            }
        }
    }
    let others = others
        .into_iter()
        .filter(|(required, _)| required.as_ref().is_none_or(|r| !meant.contains(r)))
        .map(|(_, p)| p);
    Ok(unknown.into_iter().chain(others).collect())
}

/// The stage's `with` once its references are resolved, against its
/// plugin's schema: every problem, each with the place in the pipeline file
/// of the value it came from.
pub fn check_resolved(
    pipeline: &Pipeline,
    stage: &Stage,
    plugin: &LoadedPlugin,
    config: &Value,
) -> Result<(), String> {
    let Some(schema) = &plugin.info.config_schema else {
        return Ok(());
    };
    let problems = problems(schema, config, false)?;
    if problems.is_empty() {
        return Ok(());
    }
    let placed: Vec<String> = problems
        .iter()
        .map(|p| {
            let mut path = vec!["stages", stage.name.as_str(), "with"];
            path.extend(p.path.iter().map(String::as_str));
            let d = pipeline.source.error(&path, p.part, "");
            match d.location {
                Some((line, col)) => format!("{} ({}:{line}:{col})", p.message, d.file.display()),
                None => p.message.clone(),
            }
        })
        .collect();
    Err(format!(
        "`with`, its references resolved, does not fit the plugin's config schema: {}",
        placed.join("; ")
    ))
}

/// `with.a.0.b` for a path below `with`.
fn dotted(path: &[String]) -> String {
    std::iter::once("with")
        .chain(path.iter().map(String::as_str))
        .collect::<Vec<_>>()
        .join(".")
}

/// The property names the schema object holding the keyword at
/// `keyword_path` lists (for "did you mean"); none when it is not found
/// there (behind a `$ref`).
fn known_properties(schema: &Value, keyword_path: &str) -> Vec<String> {
    let parent = keyword_path.rsplit_once('/').map_or("", |(p, _)| p);
    schema
        .pointer(parent)
        .and_then(|s| s.get("properties"))
        .and_then(Value::as_object)
        .map(|p| p.keys().cloned().collect())
        .unwrap_or_default()
}

/// Whether an error of `kind` at `instance` could go away once the `${…}`
/// references in it are resolved: a whole reference can become any value,
/// a reference inside text keeps it a string; the keys and the number of
/// items of a table or array are known already.
fn waits_for_reference(kind: &Kind, instance: &Value) -> bool {
    let holds = |s: &str| s.contains("${");
    match instance {
        Value::String(s) if holds(s) => {
            let whole = s.starts_with("${") && s.ends_with('}') && s.matches("${").count() == 1;
            !matches!(kind, Kind::Type { .. }) || whole
        }
        Value::Array(_) | Value::Object(_) => {
            let structural = matches!(
                kind,
                Kind::Type { .. }
                    | Kind::MinItems { .. }
                    | Kind::MaxItems { .. }
                    | Kind::AdditionalItems { .. }
                    | Kind::MinProperties { .. }
                    | Kind::MaxProperties { .. }
                    | Kind::PropertyNames { .. }
            );
            !structural
                && crate::pipeline::interpolate::strings(instance)
                    .iter()
                    .any(|s| holds(s))
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn schema() -> Value {
        json!({
            "type": "object",
            "properties": {
                "count": {"type": "integer"},
                "name": {"type": "string"},
                "tags": {"type": "array", "items": {"type": "string"}, "maxItems": 2}
            },
            "required": ["name"],
            "additionalProperties": false
        })
    }

    fn messages(with: Value, unresolved: bool) -> Vec<String> {
        problems(&schema(), &with, unresolved)
            .unwrap()
            .into_iter()
            .map(|p| format!("{} {:?} {}", p.path.join("."), p.part, p.message))
            .collect()
    }

    #[test]
    fn names_the_field_and_waits_for_references() {
        assert!(messages(json!({"name": "x", "count": 2}), false).is_empty());
        let p = messages(json!({"name": "x", "count": "two"}), false);
        assert_eq!(
            p,
            ["count Value `with.count`: \"two\" is not of type \"integer\""]
        );
        // A reference is checked only once resolved.
        let with = json!({"name": "x", "count": "${stages.a.outputs.n}"});
        assert!(messages(with.clone(), true).is_empty());
        assert_eq!(messages(with, false).len(), 1);
    }

    #[test]
    fn a_misspelt_key_is_found_next_to_a_reference_and_reported_once() {
        let p = problems(
            &schema(),
            &json!({"nmae": "${run.id}", "count": "${stages.a.outputs.n}"}),
            true,
        )
        .unwrap();
        assert_eq!(p.len(), 1, "{p:?}");
        assert_eq!(p[0].path, ["nmae"]);
        assert_eq!(p[0].part, Part::Key);
        assert_eq!(p[0].message, "unknown key `nmae` in `with`");
        assert_eq!(p[0].help.as_deref(), Some("did you mean `name`?"));
        // Unknown and unlike any key: both the stray key and the missing one.
        let p = messages(json!({"zzz": 1}), true);
        assert_eq!(
            p,
            [
                "zzz Key unknown key `zzz` in `with`",
                " Key `with` lacks the required key `name`"
            ]
        );
    }

    #[test]
    fn text_around_a_reference_stays_text_and_lengths_are_known() {
        // "n=${…}" resolves to a string: never an integer.
        let p = messages(json!({"name": "x", "count": "n=${run.id}"}), true);
        assert_eq!(p.len(), 1, "{p:?}");
        // Three items are too many whatever they resolve to.
        let p = messages(json!({"name": "x", "tags": ["${run.id}", "a", "b"]}), true);
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(p[0].starts_with("tags Value"), "{p:?}");
    }

    #[test]
    fn an_invalid_schema_is_the_plugins_problem() {
        let e = problems(&json!({"type": 12}), &json!({}), true).unwrap_err();
        assert!(
            e.starts_with("the plugin's config schema is invalid"),
            "{e}"
        );
    }
}
