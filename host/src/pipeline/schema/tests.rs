//! The schema and the file model agree: what loads fits the schema, and
//! the mistakes the model refuses, the schema refuses too (the fuzzed
//! agreement is in `super::super::fuzz`).

use super::*;
use crate::pipeline::file::PipelineFile;

const EXAMPLES: &[(&str, &str)] = &[
    (
        "examples/hello/pipeline.toml",
        include_str!("../../../../examples/hello/pipeline.toml"),
    ),
    (
        "examples/golden-image/pipeline.toml",
        include_str!("../../../../examples/golden-image/pipeline.toml"),
    ),
    (
        "examples/golden-image/pipeline.toml + examples/custom-stage/pipeline-snippet.toml",
        concat!(
            include_str!("../../../../examples/golden-image/pipeline.toml"),
            include_str!("../../../../examples/custom-stage/pipeline-snippet.toml")
        ),
    ),
];

/// The schema's problems with `toml` (converted to JSON as the host does).
fn problems(schema: &Value, toml: &str) -> Vec<String> {
    let value: toml::Value = toml::from_str(toml).expect("valid TOML");
    let validator = jsonschema::validator_for(schema).expect("a valid schema");
    validator
        .iter_errors(&crate::pipeline::toml_json(&value))
        .map(|e| format!("{}: {e}", e.instance_path()))
        .collect()
}

/// Whether the file model (serde, before the validator) takes `toml`.
fn model_takes(toml: &str) -> Result<(), String> {
    toml::from_str::<PipelineFile>(toml)
        .map(drop)
        .map_err(|e| e.message().to_string())
}

#[test]
fn the_schema_is_draft_7_with_every_reference_resolved() {
    let schema = pipeline_schema();
    assert_eq!(schema["$schema"], "http://json-schema.org/draft-07/schema#");
    assert_eq!(schema["title"], "Capstan pipeline file");
    assert_eq!(schema["additionalProperties"], false);
    assert_eq!(schema["required"], json!(["pipeline"]));
    assert_refs_resolve(&schema);
    let text = schema.to_string();
    assert!(!text.contains("$defs"), "draft 7 has no $defs");
    assert!(!text.contains("\"null\""), "TOML has no null: {text}");
}

/// Every `$ref` points at something in the document, and has no siblings
/// (draft 7 ignores them).
fn assert_refs_resolve(schema: &Value) {
    fn walk(root: &Value, value: &Value) {
        match value {
            Value::Object(object) => {
                if let Some(Value::String(r)) = object.get("$ref") {
                    let pointer = r.strip_prefix('#').expect("a local reference");
                    assert!(root.pointer(pointer).is_some(), "{r} does not resolve");
                    assert_eq!(object.len(), 1, "$ref with siblings: {value}");
                }
                object.values().for_each(|v| walk(root, v));
            }
            Value::Array(items) => items.iter().for_each(|v| walk(root, v)),
            _ => {}
        }
    }
    walk(schema, schema);
}

#[test]
fn every_example_pipeline_fits_the_schema() {
    let schema = pipeline_schema();
    for (name, text) in EXAMPLES {
        model_takes(text).unwrap_or_else(|e| panic!("{name}: the model refuses it: {e}"));
        let found = problems(&schema, text);
        assert!(found.is_empty(), "{name}: {found:#?}");
    }
}

/// A pipeline with one stage, and `extra` where it says.
fn pipeline(header: &str, stage: &str, rest: &str) -> String {
    format!(
        "[pipeline]\nname = \"p\"\n{header}\n[plugins.tool]\npath = \"tool.wasm\"\n\
         [stages.a]\nplugin = \"tool\"\n{stage}\n{rest}\n"
    )
}

#[test]
fn unknown_keys_are_refused_by_the_model_and_the_schema_alike() {
    for (place, toml) in [
        ("top level", pipeline("", "", "colour = \"red\"")),
        ("[pipeline]", pipeline("colour = \"red\"", "", "")),
        (
            "[defaults]",
            pipeline("", "", "[defaults]\ntimout = \"1m\""),
        ),
        (
            "[plugins.x]",
            pipeline("", "", "[plugins.x]\npath = \"x.wasm\"\nsha = \"00\""),
        ),
        ("[stages.a]", pipeline("", "need = [\"b\"]", "")),
        ("grants", pipeline("", "grants.exe = []", "")),
        (
            "exec grant",
            pipeline(
                "",
                "",
                "[[stages.a.grants.exec]]\nprogram = \"echo\"\narg = [\"*\"]",
            ),
        ),
        (
            "exec limits",
            pipeline(
                "",
                "",
                "[[stages.a.grants.exec]]\nprogram = \"echo\"\nlimits = { files = 3 }",
            ),
        ),
        ("[sandbox]", pipeline("", "", "[sandbox]\nrequired = false")),
        (
            "[sandbox.limits]",
            pipeline("", "", "[sandbox.limits]\ncpus = \"1m\""),
        ),
        (
            "[rollback]",
            pipeline("", "", "[rollback]\nreuse = []\nreuses = [\"a\"]"),
        ),
    ] {
        let model = model_takes(&toml).expect_err(place);
        assert!(model.starts_with("unknown field"), "{place}: {model}");
        let schema = problems(&pipeline_schema(), &toml);
        assert_eq!(schema.len(), 1, "{place}: {schema:?}");
        assert!(
            schema[0].contains("Additional properties are not allowed"),
            "{place}: {schema:?}"
        );
    }
}

#[test]
fn wrong_values_are_refused_by_the_model_and_the_schema_alike() {
    for (what, toml) in [
        (
            "no [pipeline]",
            "[stages.a]\nplugin = \"tool\"\n".to_string(),
        ),
        ("no plugin", pipeline("", "", "[stages.b]\nneeds = []")),
        ("a number name", pipeline("", "", "").replace("\"p\"", "3")),
        ("a duration", pipeline("", "timeout = \"ten minutes\"", "")),
        ("a duration number", pipeline("", "timeout = 600", "")),
        ("a size", pipeline("", "memory = \"lots\"", "")),
        ("a negative size", pipeline("", "memory = -1", "")),
        ("a float size", pipeline("", "memory = 1.5", "")),
        ("on_failure", pipeline("", "on_failure = \"retry\"", "")),
        ("network", pipeline("", "", "[sandbox]\nnetwork = \"wifi\"")),
        ("concurrency", pipeline("concurrency = -2", "", "")),
        ("needs", pipeline("", "needs = \"b\"", "")),
        ("with", pipeline("", "with = \"x\"", "")),
        ("approval", pipeline("", "grants.approval = \"yes\"", "")),
        ("rollback", pipeline("", "", "[rollback]\nreuse = \"a\"")),
    ] {
        assert!(model_takes(&toml).is_err(), "{what}: the model takes it");
        let schema = problems(&pipeline_schema(), &toml);
        assert!(!schema.is_empty(), "{what}: the schema takes it");
    }
}

/// Rules of the validator the schema states too: what it refuses, the
/// loader refuses.
#[test]
fn checks_of_the_loader_the_schema_states_too() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("tool.wasm"), b"\0asm").unwrap();
    let file = dir.path().join("pipeline.toml");
    for (what, toml) in [
        (
            "a stage name",
            pipeline("", "", "[stages.-x]\nplugin = \"tool\""),
        ),
        ("no environment", pipeline("environments = []", "", "")),
        (
            "a zero limit",
            pipeline(
                "",
                "",
                "[[stages.a.grants.exec]]\nprogram = \"echo\"\nlimits = { processes = 0 }",
            ),
        ),
        (
            "a plugin pin",
            pipeline(
                "",
                "",
                "[plugins.x]\npath = \"tool.wasm\"\nsha256 = \"abc\"",
            ),
        ),
    ] {
        assert!(
            crate::pipeline::Pipeline::parse(&file, &toml).is_err(),
            "{what}: the loader takes it"
        );
        let schema = problems(&pipeline_schema(), &toml);
        assert!(!schema.is_empty(), "{what}: the schema takes it");
    }
}

#[test]
fn stage_names_follow_the_loader_rule() {
    let pattern = jsonschema::validator_for(&json!({ "pattern": STAGE_NAME_PATTERN })).unwrap();
    let long = "a".repeat(64);
    let too_long = "a".repeat(65);
    for name in [
        "a",
        "build",
        "smoke-test",
        "_x",
        "9",
        "a_b-c",
        &long,
        "",
        &too_long,
        "-x",
        "a.b",
        "a b",
        "é",
        "a/b",
        "x\n",
    ] {
        assert_eq!(
            pattern.is_valid(&json!(name)),
            crate::pipeline::name_problem(name).is_none(),
            "{name:?}"
        );
    }
}

#[test]
fn durations_and_sizes_follow_their_parsers() {
    let duration = jsonschema::validator_for(&json!({ "pattern": DURATION_PATTERN })).unwrap();
    for text in [
        "90s",
        "10m",
        "1h 30m",
        "1h30m",
        "2days",
        "1.5h",
        "500ms",
        " 5m ",
        "3 hours",
        "1M",
        "2y",
        "1w",
        "",
        "ten",
        "5",
        "m",
        "5 parsecs",
        "-1s",
        "1h,30m",
    ] {
        assert_eq!(
            duration.is_valid(&json!(text)),
            humantime::parse_duration(text).is_ok(),
            "{text:?}"
        );
    }
    let size = jsonschema::validator_for(&json!({ "pattern": BYTE_SIZE_PATTERN })).unwrap();
    for text in [
        "256MiB", "1.5 GB", "4096", "1k", "2KiB", "16mb", "3 TiB", "1b", "", "lots", "MiB", "-1",
        "1 2", "1 XB", " 1MiB",
    ] {
        assert_eq!(
            size.is_valid(&json!(text)),
            text.parse::<bytesize::ByteSize>().is_ok(),
            "{text:?}"
        );
    }
}

/// A plugin's `with`, as the SDK publishes it: draft 2020-12, with `$defs`,
/// doc comments beside `$ref`s, an enum, a nested table.
mod plugin {
    use schemars::JsonSchema;

    #[derive(JsonSchema)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    pub struct Config {
        /// Who to greet.
        pub name: String,
        /// On which days.
        #[serde(default)]
        pub days: Vec<Day>,
        /// Limits.
        #[serde(default)]
        pub limits: Option<Limits>,
    }

    #[derive(JsonSchema)]
    #[serde(rename_all = "lowercase")]
    #[allow(dead_code)]
    pub enum Day {
        Mon,
        Tue,
    }

    #[derive(JsonSchema)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    pub struct Limits {
        pub count: u32,
    }
}

fn with_plugin() -> Value {
    let plugin = schemars::schema_for!(plugin::Config).to_value();
    assert!(plugin.to_string().contains("$defs"), "{plugin}");
    let stages = [
        ("greet".to_string(), "greeter".to_string()),
        ("other".to_string(), "opaque".to_string()),
    ];
    let plugins = BTreeMap::from([("greeter".to_string(), plugin)]);
    pipeline_schema_with(&stages, &plugins).unwrap()
}

fn with_pipeline(greet: &str) -> String {
    format!(
        "[pipeline]\nname = \"p\"\n[plugins.greeter]\npath = \"g.wasm\"\n\
         [plugins.opaque]\npath = \"o.wasm\"\n\
         [stages.greet]\nplugin = \"greeter\"\n[stages.greet.with]\n{greet}\n\
         [stages.other]\nplugin = \"opaque\"\nneeds = [\"greet\"]\n\
         with = {{ anything = [1, \"${{stages.greet.outputs.x}}\"] }}\n"
    )
}

#[test]
fn a_stage_s_with_is_checked_against_its_plugin_s_schema() {
    let schema = with_plugin();
    assert_refs_resolve(&schema);
    assert!(!schema.to_string().contains("$defs"));
    for good in [
        "name = \"ada\"",
        "name = \"ada\"\ndays = [\"mon\", \"tue\"]\nlimits = { count = 3 }",
        // A reference can stand for any value: resolved when the stage starts.
        "name = \"${stages.x.outputs.name}\"\nlimits = \"${stages.x.outputs.limits}\"",
        "name = \"${run.id}\"\ndays = [\"${stages.x.outputs.day}\"]\nlimits = { count = \"${env.N}\" }",
    ] {
        let found = problems(&schema, &with_pipeline(good));
        assert!(found.is_empty(), "{good}: {found:#?}");
    }
    for (bad, expected) in [
        ("nam = \"ada\"", "/stages/greet/with"),
        ("name = 3", "/stages/greet/with/name"),
        ("name = \"a\"\ndays = [\"sun\"]", "/stages/greet/with/days"),
        (
            "name = \"a\"\nlimits = { count = -1 }",
            "/stages/greet/with/limits",
        ),
        (
            "name = \"a\"\nlimits = { count = 1, extra = 2 }",
            "/stages/greet/with/limits",
        ),
    ] {
        let found = problems(&schema, &with_pipeline(bad));
        assert!(!found.is_empty(), "{bad}: the schema takes it");
        assert!(
            found.iter().all(|p| p.starts_with(expected)),
            "{bad}: {found:#?}"
        );
    }
    // Stages of plugins without a schema, and stages added later, take any
    // table.
    let text = with_pipeline("name = \"ada\"")
        + "[stages.later]\nplugin = \"greeter\"\nwith = { whatever = 1 }\n";
    assert!(problems(&schema, &text).is_empty());
}

#[test]
fn plugin_definitions_keep_apart_from_the_pipeline_s_and_each_other() {
    let one = json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "type": "object",
        "properties": {
            "limits": { "$ref": "#/$defs/Limits" },
            "items": { "type": "array", "prefixItems": [{ "type": "string" }, { "type": "integer" }] },
            "self": { "$ref": "#" }
        },
        "$defs": { "Limits": { "type": "object", "properties": { "n": { "type": "integer" } }, "additionalProperties": false } }
    });
    let two = json!({
        "type": "object",
        "properties": { "limits": { "$ref": "#/definitions/Limits" } },
        "definitions": { "Limits": { "type": "string" } }
    });
    let plugins = BTreeMap::from([("a/b".to_string(), one), ("Limits".to_string(), two)]);
    let stages = [
        ("s1".to_string(), "a/b".to_string()),
        ("s2".to_string(), "Limits".to_string()),
    ];
    let schema = pipeline_schema_with(&stages, &plugins).unwrap();
    assert_refs_resolve(&schema);
    let defs = definitions(&schema);
    for name in [
        "a_b.with",
        "a_b.Limits",
        "Limits.with",
        "Limits.Limits",
        "ChildLimits",
    ] {
        assert!(defs.contains_key(name), "{name}: {:?}", defs.keys());
    }
    let toml = "[pipeline]\nname = \"p\"\n[plugins.\"a/b\"]\npath = \"a.wasm\"\n\
                [plugins.Limits]\npath = \"l.wasm\"\n\
                [stages.s1]\nplugin = \"a/b\"\nwith = { limits = { n = 1 }, items = [\"x\", 2], self = { limits = { n = 2 } } }\n\
                [stages.s2]\nplugin = \"Limits\"\nwith = { limits = \"text\" }\n";
    assert_eq!(problems(&schema, toml), Vec::<String>::new());
    let wrong = toml.replace("n = 2", "n = \"two\"");
    assert_eq!(problems(&schema, &wrong).len(), 1, "{wrong}");
    let wrong = toml.replace("\"x\", 2", "2, \"x\"");
    assert!(!problems(&schema, &wrong).is_empty(), "prefixItems kept");
}

#[test]
fn a_plugin_schema_that_is_not_one_is_named() {
    let plugins = BTreeMap::from([("odd".to_string(), json!("a string"))]);
    let e = pipeline_schema_with(&[], &plugins).unwrap_err();
    assert_eq!(
        e.to_string(),
        "plugin `odd`: its config schema is not a JSON Schema object"
    );
}
