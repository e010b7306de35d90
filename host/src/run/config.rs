//! A stage's `with` table checked against the JSON Schema its plugin
//! publishes: before any stage runs (values that are still `${…}`
//! references are checked once resolved), and again, fully, when the stage
//! starts.

use serde_json::Value;

/// Problems of `with` against `schema`, one line each (`with.field: why`).
/// With `unresolved`, errors at values that still hold a `${…}` reference
/// are left for later.
pub fn problems(schema: &Value, with: &Value, unresolved: bool) -> Vec<String> {
    let validator = match jsonschema::validator_for(schema) {
        Ok(v) => v,
        Err(e) => return vec![format!("the plugin's config schema is invalid: {e}")],
    };
    validator
        .iter_errors(with)
        .filter(|e| !(unresolved && holds_reference(with, e.instance_path().as_str())))
        .map(|e| {
            let path = e
                .instance_path()
                .as_str()
                .trim_start_matches('/')
                .replace('/', ".");
            let at = if path.is_empty() {
                "with".to_string()
            } else {
                format!("with.{path}")
            };
            format!("{at}: {e}")
        })
        .collect()
}

/// Whether the value at `pointer` (or any inside it) is a string with `${`.
fn holds_reference(root: &Value, pointer: &str) -> bool {
    match root.pointer(pointer) {
        Some(Value::String(s)) => s.contains("${"),
        Some(other) => crate::pipeline::interpolate::strings(other)
            .iter()
            .any(|s| s.contains("${")),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn names_the_field_and_waits_for_references() {
        let schema = json!({
            "type": "object",
            "properties": {"count": {"type": "integer"}, "name": {"type": "string"}},
            "required": ["name"],
            "additionalProperties": false
        });
        assert!(problems(&schema, &json!({"name": "x", "count": 2}), false).is_empty());
        let p = problems(&schema, &json!({"name": "x", "count": "two"}), false);
        assert_eq!(p.len(), 1);
        assert!(p[0].starts_with("with.count: "), "{p:?}");
        let p = problems(&schema, &json!({"count": 1, "nmae": "x"}), false);
        assert_eq!(p.len(), 2, "{p:?}");
        assert!(
            p.iter()
                .any(|m| m.contains("\"name\" is a required property")),
            "{p:?}"
        );
        // A reference is checked only once resolved.
        assert!(
            problems(
                &schema,
                &json!({"name": "x", "count": "${stages.a.outputs.n}"}),
                true
            )
            .is_empty()
        );
        assert_eq!(
            problems(
                &schema,
                &json!({"name": "x", "count": "${stages.a.outputs.n}"}),
                false
            )
            .len(),
            1
        );
    }
}
