//! Reading `terraform output -json`: stage outputs with sensitive values
//! masked, and the inventory file.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::{Map, Value};

use crate::plan::{SENSITIVE, brief_list, short};

/// Output keys the stage sets itself; a Terraform output of the same name
/// is only in `outputs`.
pub const RESERVED: [&str; 4] = [
    "outputs",
    "ansible_inventory_file",
    "applied_digest",
    "applied_by_earlier_attempt",
];

/// One entry of `terraform output -json`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct TfOutput {
    #[serde(default)]
    pub sensitive: bool,
    #[serde(default)]
    pub value: Value,
}

/// The outputs by name (Terraform prints them sorted).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Outputs(pub BTreeMap<String, TfOutput>);

/// Parse `terraform output -json`.
pub fn parse(json: &str) -> Result<Outputs, String> {
    // With no outputs (or no state yet) Terraform prints `{}`; older ones
    // may print nothing.
    if json.trim().is_empty() {
        return Ok(Outputs::default());
    }
    serde_json::from_str(json)
        .map(Outputs)
        .map_err(|e| format!("`terraform output -json` printed JSON I cannot read: {e}"))
}

impl Outputs {
    /// Each output's value, `<sensitive>` for sensitive ones.
    pub fn masked(&self) -> Map<String, Value> {
        self.0
            .iter()
            .map(|(name, o)| {
                let v = if o.sensitive {
                    Value::String(SENSITIVE.into())
                } else {
                    o.value.clone()
                };
                (name.clone(), v)
            })
            .collect()
    }

    /// The values of sensitive outputs, in clear: for the host to redact
    /// (see [`crate::plan::flagged`]), never to report.
    pub fn sensitive_values(&self) -> Vec<String> {
        let mut out = Vec::new();
        for o in self.0.values().filter(|o| o.sensitive) {
            crate::plan::flagged(&o.value, &Value::Bool(true), &mut out);
        }
        out
    }

    /// The inventory text from output `name`: a string as it is, an object
    /// or list as JSON (which YAML parsers read). `None` when the output is
    /// absent or null and was not `required`.
    pub fn inventory(&self, name: &str, required: bool) -> Result<Option<String>, String> {
        let value = self.0.get(name).map(|o| &o.value);
        match value {
            None | Some(Value::Null) if !required => Ok(None),
            None => {
                let names: Vec<&str> = self.0.keys().map(String::as_str).collect();
                Err(format!(
                    "inventory_output: the configuration has no output `{name}` (its outputs: {})",
                    if names.is_empty() {
                        "none".to_string()
                    } else {
                        names.join(", ")
                    }
                ))
            }
            Some(Value::Null) => Err(format!("inventory_output: output `{name}` is null")),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(v @ (Value::Object(_) | Value::Array(_))) => {
                // A `Value` always serialises.
                Ok(Some(
                    serde_json::to_string_pretty(v).unwrap_or_default() + "\n",
                ))
            }
            Some(other) => Err(format!(
                "inventory_output: output `{name}` is {other}, not an inventory (a YAML string or \
                 an object)"
            )),
        }
    }

    /// E.g. `6 outputs (image_id = golden-…, hosts, secret (sensitive))`.
    pub fn summary_text(&self) -> String {
        if self.0.is_empty() {
            return "no outputs".to_string();
        }
        let briefs = self
            .0
            .iter()
            .map(|(name, o)| {
                if o.sensitive {
                    (format!("{name} (sensitive)"), false)
                } else {
                    match short(&o.value) {
                        Some(v) => (format!("{name} = {v}"), true),
                        None => (name.clone(), false),
                    }
                }
            })
            .collect();
        let n = self.0.len();
        let noun = if n == 1 { "output" } else { "outputs" };
        format!("{n} {noun} ({})", brief_list(briefs))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn real(version: &str) -> Outputs {
        let path = format!(
            "{}/tests/fixtures/real-{version}-output.json",
            env!("CARGO_MANIFEST_DIR")
        );
        parse(&std::fs::read_to_string(path).unwrap()).unwrap()
    }

    #[test]
    fn real_outputs_both_versions_mask_sensitive_values() {
        for version in ["1.0.3", "1.11.4"] {
            let outputs = real(version);
            let masked = outputs.masked();
            assert_eq!(
                masked.keys().collect::<Vec<_>>(),
                ["ansible_inventory", "hosts", "name", "secret", "tags"]
            );
            assert_eq!(masked["secret"], SENSITIVE);
            assert_eq!(masked["name"], "demo");
            assert_eq!(masked["hosts"], json!(["host-0", "host-1"]));
            assert_eq!(masked["tags"], json!({"a": "b", "c": "d"}));
            assert!(!Value::Object(masked).to_string().contains("s3cr3t"));
            let sensitive = outputs.sensitive_values();
            assert_eq!(sensitive.len(), 1, "{version}");
            assert!(sensitive[0].starts_with("s3cr3t"), "{version}");
            let text = outputs.summary_text();
            assert_eq!(
                text,
                "5 outputs (name = demo, ansible_inventory, hosts, secret (sensitive), tags)"
            );
            let inventory = outputs
                .inventory("ansible_inventory", false)
                .unwrap()
                .unwrap();
            assert!(
                inventory.starts_with("\"all\":\n  \"hosts\":\n    \"host-0\":"),
                "{inventory}"
            );
        }
    }

    /// Real `terraform output -json` samples of the golden-image example.
    #[test]
    fn golden_image_output_samples() {
        for (name, text) in crate::samples::golden_image("output") {
            let outputs = parse(&text).unwrap_or_else(|e| panic!("{name}: {e}"));
            let inventory = outputs
                .inventory("ansible_inventory", true)
                .unwrap_or_else(|e| panic!("{name}: {e}"))
                .unwrap();
            assert!(inventory.contains("ansible_connection"), "{name}");
            let masked = outputs.masked();
            assert_eq!(masked.len(), outputs.0.len());
            let text = outputs.summary_text();
            eprintln!("{name}: {text}");
            assert!(text.contains("image_id = "), "{name}: {text}");
        }
    }

    #[test]
    fn inventory_rules() {
        let outputs = parse(
            &json!({
                "inv_obj": {"sensitive": false, "type": "object", "value": {"all": {"hosts": {"h": {}}}}},
                "inv_null": {"sensitive": false, "value": null},
                "count": {"sensitive": false, "type": "number", "value": 3}
            })
            .to_string(),
        )
        .unwrap();
        assert_eq!(outputs.inventory("ansible_inventory", false), Ok(None));
        assert_eq!(
            outputs.inventory("ansible_inventory", true),
            Err(
                "inventory_output: the configuration has no output `ansible_inventory` (its \
                 outputs: count, inv_null, inv_obj)"
                    .into()
            )
        );
        assert_eq!(outputs.inventory("inv_null", false), Ok(None));
        assert_eq!(
            outputs.inventory("inv_null", true),
            Err("inventory_output: output `inv_null` is null".into())
        );
        let obj = outputs.inventory("inv_obj", true).unwrap().unwrap();
        assert_eq!(
            serde_json::from_str::<Value>(&obj).unwrap(),
            json!({"all": {"hosts": {"h": {}}}})
        );
        assert_eq!(
            outputs.inventory("count", true),
            Err("inventory_output: output `count` is 3, not an inventory (a YAML string or an object)".into())
        );
        assert_eq!(
            parse("").unwrap().inventory("x", true),
            Err("inventory_output: the configuration has no output `x` (its outputs: none)".into())
        );
    }

    #[test]
    fn empty_and_bad_output() {
        assert_eq!(parse("{}\n").unwrap(), Outputs::default());
        assert_eq!(parse("").unwrap().summary_text(), "no outputs");
        let e = parse("[1]").unwrap_err();
        assert!(
            e.starts_with("`terraform output -json` printed JSON I cannot read"),
            "{e}"
        );
        let many = parse(
            &Value::Object(
                (0..10)
                    .map(|i| (format!("o{i}"), json!({"sensitive": false, "value": i})))
                    .collect(),
            )
            .to_string(),
        )
        .unwrap();
        assert_eq!(
            many.summary_text(),
            "10 outputs (o0 = 0, o1 = 1, o2 = 2, o3 = 3, o4 = 4, o5 = 5, o6 = 6, o7 = 7, and 2 more)"
        );
    }
}
