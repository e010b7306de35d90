//! The JSON Schema of the pipeline file, for editors (taplo / Even Better
//! TOML) and CI linters: derived from the file model in [`super::file`], so
//! it says what the loader accepts, and optionally with each stage's `with`
//! checked against the schema its plugin publishes.
//!
//! It is JSON Schema draft 7: the newest draft taplo's validator (and so
//! Even Better TOML) understands. Plugin schemas (draft 2020-12 from the
//! SDK) are lowered to it when they are embedded.
//!
//! The schema checks the file's shape: keys, types, names, durations and
//! sizes. What needs the whole file or the machine (`needs` naming stages,
//! `${…}` references, paths, grants against requests) is left to
//! `capstan validate`.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};

use schemars::generate::{SchemaGenerator, SchemaSettings};
use schemars::transform::{
    RemoveRefSiblings, ReplacePrefixItems, ReplaceUnevaluatedProperties, Transform,
    transform_subschemas,
};
use schemars::{JsonSchema, Schema, json_schema};
use serde_json::{Map, Value, json};

use super::file::{PipelineFile, StageEntry};

/// What [`super::name_problem`] accepts: letters, digits, `_` and `-`, 1 to
/// 64 of them, not starting with `-`.
pub const STAGE_NAME_PATTERN: &str = "^[A-Za-z0-9_][A-Za-z0-9_-]{0,63}$";

/// A duration as `humantime` parses it: numbers with units, e.g. `"90s"`,
/// `"10m"`, `"1h 30m"`.
pub const DURATION_PATTERN: &str = r"^\s*([0-9]+(\.[0-9]+)?\s*(nanos|nsec|ns|usec|us|µs|millis|msec|ms|seconds|second|secs|sec|s|minutes|minute|mins|min|m|hours|hour|hrs|hr|h|days|day|d|weeks|week|wks|wk|w|months|month|M|years|year|yrs|yr|y)\s*)+$";

/// A size as `bytesize` parses it from text: a number with an optional
/// unit, e.g. `"256MiB"`, `"1.5 GB"`, `"4096"`.
pub const BYTE_SIZE_PATTERN: &str = r"^[0-9]+(\.[0-9]*)? *([kKmMgGtTpPeE][iI]?)?[bB]?$";

/// A string holding a `${…}` reference: where a plugin's schema wants any
/// value, the pipeline may write a reference resolved when the stage starts
/// (the host checks the resolved value then).
const REFERENCE: &str = "reference";

/// `timeout = "10m"`: a duration in text.
pub struct DurationText;

impl JsonSchema for DurationText {
    fn schema_name() -> Cow<'static, str> {
        "Duration".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "A duration: numbers with units, e.g. \"90s\", \"10m\", \"1h 30m\" (at most 365 days).",
            "type": "string",
            "pattern": DURATION_PATTERN,
        })
    }
}

/// `memory = "256MiB"`: a size in bytes, as text with a unit or a number.
pub struct ByteSizeText;

impl JsonSchema for ByteSizeText {
    fn schema_name() -> Cow<'static, str> {
        "ByteSize".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "A size: a number of bytes, or text with a unit, e.g. \"256MiB\", \"1.5 GB\".",
            "type": ["string", "integer"],
            "minimum": 0,
            "pattern": BYTE_SIZE_PATTERN,
        })
    }
}

/// A stage's `with` table, whatever its plugin takes.
pub struct WithTable;

impl JsonSchema for WithTable {
    fn schema_name() -> Cow<'static, str> {
        "With".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "The stage's config, passed to its plugin and checked against the JSON Schema the plugin publishes (`capstan plugin describe PLUGIN --json`). Values may hold `${…}` references: `${stages.<stage>.outputs.<key>}`, `${env.NAME}`, `${run.id}`, `${run.environment}`, `${pipeline.dir}`, `${stage.work_dir}` (`$${` is a literal `${`).",
            "type": "object",
        })
    }
}

/// `[stages]`: stage entries under names a stage may have.
pub fn stages(generator: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "object",
        "propertyNames": { "pattern": STAGE_NAME_PATTERN },
        "additionalProperties": generator.subschema_for::<StageEntry>(),
    })
}

/// TOML has no null: optional keys are absent, never null, so the `null`
/// that schemars adds for `Option` would only show up as a wrong hint in
/// editors.
#[derive(Clone)]
struct NoNull;

impl Transform for NoNull {
    fn transform(&mut self, schema: &mut Schema) {
        transform_subschemas(self, schema);
        let Some(object) = schema.as_object_mut() else {
            return;
        };
        match object.get_mut("default") {
            Some(Value::Null) => {
                object.remove("default");
            }
            Some(Value::Object(fields)) => fields.retain(|_, v| !v.is_null()),
            _ => {}
        }
        if let Some(Value::Array(types)) = object.get_mut("type") {
            types.retain(|t| t != "null");
            if let [only] = types.as_slice() {
                let only = only.clone();
                object.insert("type".into(), only);
            }
        }
        for key in ["anyOf", "oneOf"] {
            if let Some(Value::Array(branches)) = object.get_mut(key) {
                branches.retain(|b| b != &json!({ "type": "null" }));
                if let [only] = branches.as_slice() {
                    let only = only.clone();
                    object.remove(key);
                    // Keep the branch's own keywords beside the others (a
                    // description, say): all of them must hold.
                    object
                        .entry("allOf")
                        .or_insert_with(|| Value::Array(Vec::new()))
                        .as_array_mut()
                        .expect("allOf is an array")
                        .push(only);
                }
            }
        }
    }
}

/// The schema of any pipeline file: `with` tables are only known to be
/// tables.
pub fn pipeline_schema() -> Value {
    SchemaSettings::draft07()
        .with_transform(NoNull)
        .into_generator()
        .into_root_schema_for::<PipelineFile>()
        .to_value()
}

/// Why a plugin's schema cannot be embedded.
#[derive(Debug, thiserror::Error)]
#[error("plugin `{plugin}`: its config schema is not a JSON Schema object")]
pub struct NotASchema {
    pub plugin: String,
}

/// The schema of this pipeline file: [`pipeline_schema`], with the `with`
/// of each stage in `stages` (stage name → plugin name) checked against its
/// plugin's schema from `plugins` (plugin name → published schema; plugins
/// that publish none keep the generic `with`).
pub fn pipeline_schema_with(
    stages: &[(String, String)],
    plugins: &BTreeMap<String, Value>,
) -> Result<Value, NotASchema> {
    let mut root = pipeline_schema();
    let mut taken: BTreeSet<String> = definitions(&root).keys().cloned().collect();
    let mut with_of: BTreeMap<&str, String> = BTreeMap::new();
    for (plugin, schema) in plugins {
        let key = unique(&mut taken, &format!("{}.with", safe(plugin)));
        let (with, defs) = lower(plugin, schema, &key, &mut taken)?;
        let definitions = definitions_mut(&mut root);
        definitions.insert(key.clone(), with);
        definitions.extend(defs);
        with_of.insert(plugin, key);
    }
    if !with_of.is_empty() {
        definitions_mut(&mut root).insert(
            REFERENCE.into(),
            json!({
                "description": "A `${…}` reference, resolved when the stage starts (its value is checked then).",
                "type": "string",
                "pattern": r"\$\{",
            }),
        );
    }
    // One entry per stage of the file, so that editors complete and check
    // its `with` keys; stages added later get the generic `with` until the
    // schema is generated again.
    let mut per_stage = Map::new();
    for (stage, plugin) in stages {
        let Some(key) = with_of.get(plugin.as_str()) else {
            continue;
        };
        per_stage.insert(
            stage.clone(),
            json!({
                "allOf": [
                    { "$ref": "#/definitions/StageEntry" },
                    { "properties": { "with": {
                        "description": format!("The config of plugin `{plugin}`."),
                        "allOf": [{ "$ref": format!("#/definitions/{key}") }],
                    } } },
                ]
            }),
        );
    }
    if !per_stage.is_empty() {
        root["properties"]["stages"]
            .as_object_mut()
            .expect("the stages schema is an object")
            .insert("properties".into(), Value::Object(per_stage));
    }
    Ok(root)
}

fn definitions(root: &Value) -> &Map<String, Value> {
    root["definitions"]
        .as_object()
        .expect("the generated schema has definitions")
}

fn definitions_mut(root: &mut Value) -> &mut Map<String, Value> {
    root["definitions"]
        .as_object_mut()
        .expect("the generated schema has definitions")
}

/// A definition name from any text: what JSON pointers and URL fragments
/// carry without escaping.
fn safe(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// `wanted`, or `wanted-2`, `-3`… if it is taken; marked taken.
fn unique(taken: &mut BTreeSet<String>, wanted: &str) -> String {
    let mut name = wanted.to_string();
    let mut n = 1;
    while taken.contains(&name) {
        n += 1;
        name = format!("{wanted}-{n}");
    }
    taken.insert(name.clone());
    name
}

/// A plugin's schema as draft-7 definitions of the pipeline schema: the
/// schema itself (to go under `key`) and its own definitions, renamed
/// into the pipeline schema's `definitions` with every local `$ref`
/// rewritten to match, and `${…}` references allowed wherever a value goes.
fn lower(
    plugin: &str,
    schema: &Value,
    key: &str,
    taken: &mut BTreeSet<String>,
) -> Result<(Value, Map<String, Value>), NotASchema> {
    let not_a_schema = || NotASchema {
        plugin: plugin.to_string(),
    };
    let mut schema = Schema::try_from(schema.clone()).map_err(|_| not_a_schema())?;
    // Draft 2020-12 keywords draft 7 does not know, in draft-7 words.
    ReplaceUnevaluatedProperties::default().transform(&mut schema);
    RemoveRefSiblings::default().transform(&mut schema);
    ReplacePrefixItems::default().transform(&mut schema);
    let mut top = match schema.to_value() {
        Value::Object(top) => top,
        // `true` takes anything, `false` nothing.
        Value::Bool(true) => Map::new(),
        _ => json!({ "not": {} })
            .as_object()
            .cloned()
            .unwrap_or_default(),
    };
    top.remove("$schema");
    // An `$id` would make the plugin's references relative to it.
    top.remove("$id");
    let mut renamed: BTreeMap<String, String> = BTreeMap::new();
    let mut defs = Map::new();
    for section in ["$defs", "definitions"] {
        let Some(Value::Object(found)) = top.remove(section) else {
            continue;
        };
        for (name, def) in found {
            let new = unique(taken, &format!("{}.{}", safe(plugin), safe(&name)));
            renamed.insert(format!("/{section}/{}", escape_pointer(&name)), new.clone());
            defs.insert(new, def);
        }
    }
    let mut with = Value::Object(top);
    rewrite_refs(&mut with, &renamed, key);
    allow_references(&mut with);
    for def in defs.values_mut() {
        rewrite_refs(def, &renamed, key);
        allow_references(def);
    }
    Ok((with, defs))
}

/// `~` and `/` as a JSON pointer token writes them.
fn escape_pointer(token: &str) -> String {
    token.replace('~', "~0").replace('/', "~1")
}

/// `%XX` in a URI fragment, decoded (refs to names with odd characters).
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2]))
        {
            out.push((h * 16 + l) as u8);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Every local `$ref` of a plugin schema, pointed at where its target now
/// is: a renamed definition, or a place inside the plugin's schema (under
/// `key`). References to other documents are left as they are.
fn rewrite_refs(value: &mut Value, renamed: &BTreeMap<String, String>, key: &str) {
    match value {
        Value::Object(object) => {
            if let Some(Value::String(reference)) = object.get_mut("$ref")
                && let Some(fragment) = reference.strip_prefix('#')
            {
                let pointer = percent_decode(fragment);
                let moved = renamed.iter().find_map(|(old, new)| {
                    let rest = pointer.strip_prefix(old.as_str())?;
                    (rest.is_empty() || rest.starts_with('/'))
                        .then(|| format!("#/definitions/{new}{rest}"))
                });
                *reference = moved.unwrap_or_else(|| format!("#/definitions/{key}{pointer}"));
            }
            for (name, child) in object.iter_mut() {
                // Constants and examples are data, not schemas.
                if !matches!(name.as_str(), "const" | "enum" | "default" | "examples") {
                    rewrite_refs(child, renamed, key);
                }
            }
        }
        Value::Array(items) => {
            for item in items {
                rewrite_refs(item, renamed, key);
            }
        }
        _ => {}
    }
}

/// Let every value position of a schema (properties, items, additional
/// properties) also take a `${…}` reference, as the host does before the
/// stage starts: a reference can stand for any value.
fn allow_references(value: &mut Value) {
    let Value::Object(object) = value else {
        return;
    };
    for (name, child) in object.iter_mut() {
        match name.as_str() {
            "properties" | "patternProperties" => {
                if let Value::Object(properties) = child {
                    for property in properties.values_mut() {
                        allow_references(property);
                        or_reference(property);
                    }
                }
            }
            "items" | "additionalItems" | "additionalProperties" => match child {
                Value::Array(items) => {
                    for item in items {
                        allow_references(item);
                        or_reference(item);
                    }
                }
                Value::Object(_) => {
                    allow_references(child);
                    or_reference(child);
                }
                _ => {}
            },
            "allOf" | "anyOf" | "oneOf" => {
                if let Value::Array(branches) = child {
                    branches.iter_mut().for_each(allow_references);
                }
            }
            "not" | "if" | "then" | "else" | "contains" | "propertyNames" => {
                allow_references(child)
            }
            "definitions" | "$defs" => {
                if let Value::Object(defs) = child {
                    defs.values_mut().for_each(allow_references);
                }
            }
            _ => {}
        }
    }
}

/// `schema`, or a `${…}` reference in its place.
fn or_reference(schema: &mut Value) {
    let original = std::mem::take(schema);
    // Descriptions stay outside, where editors show them.
    let mut outer = Map::new();
    let mut inner = original;
    if let Value::Object(object) = &mut inner {
        for keyword in ["title", "description", "default", "examples"] {
            if let Some(v) = object.remove(keyword) {
                outer.insert(keyword.into(), v);
            }
        }
    }
    outer.insert(
        "anyOf".into(),
        json!([inner, { "$ref": format!("#/definitions/{REFERENCE}") }]),
    );
    *schema = Value::Object(outer);
}

#[cfg(test)]
mod tests;
