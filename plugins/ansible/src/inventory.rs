//! The `inventory` setting: a file (e.g. the one an upstream Terraform stage
//! wrote), inline YAML text, or an inventory object; the latter two are
//! written to `<work dir>/inventory.yml`.

use std::path::{Path, PathBuf};

use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{Map, Value};

/// How the config gives the inventory.
#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum Source {
    /// An absolute path of an inventory file or directory, or inline YAML
    /// inventory text (recognised by a newline or a colon).
    Text(String),
    /// An inventory as an object (`{all = {hosts = {...}}}`), e.g. an
    /// upstream output that is not text.
    Object(Map<String, Value>),
}

/// Where the inventory is, once resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolved {
    /// An existing file or directory, used as it is.
    Existing(PathBuf),
    /// Text to write to the work dir first.
    Inline(String),
}

/// Decide what `source` is. `exists` says whether a path exists (for the
/// plugin: whether it can see it through its grants).
pub fn resolve(source: &Source, exists: impl Fn(&Path) -> bool) -> Result<Resolved, String> {
    let text = match source {
        Source::Object(map) => {
            // JSON is YAML: Ansible's yaml inventory plugin reads it.
            return Ok(Resolved::Inline(
                serde_json::to_string_pretty(&Value::Object(map.clone()))
                    .map_err(|e| e.to_string())?
                    + "\n",
            ));
        }
        Source::Text(text) => text,
    };
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Err("is empty".into());
    }
    let one_line = !trimmed.contains('\n');
    if one_line && trimmed.starts_with('/') {
        let path = PathBuf::from(trimmed);
        return if exists(&path) {
            Ok(Resolved::Existing(path))
        } else {
            Err(format!(
                "`{trimmed}` does not exist, or the stage cannot see it (an upstream stage's \
                 work dir is readable when the stage `needs` it; other directories need a \
                 `read` grant)"
            ))
        };
    }
    if !one_line || trimmed.contains(':') {
        let mut text = text.clone();
        if !text.ends_with('\n') {
            text.push('\n');
        }
        return Ok(Resolved::Inline(text));
    }
    Err(format!(
        "`{trimmed}` is neither an absolute path of an inventory file nor inline YAML"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(s: &str) -> Source {
        Source::Text(s.into())
    }

    #[test]
    fn paths_inline_text_and_objects() {
        let exists = |p: &Path| p == Path::new("/runs/r1/apply/inventory.yml");
        assert_eq!(
            resolve(&text("/runs/r1/apply/inventory.yml"), exists),
            Ok(Resolved::Existing("/runs/r1/apply/inventory.yml".into()))
        );
        assert_eq!(
            resolve(&text(" /runs/r1/apply/inventory.yml\n"), exists),
            Ok(Resolved::Existing("/runs/r1/apply/inventory.yml".into()))
        );
        let e = resolve(&text("/runs/r1/other.yml"), exists).unwrap_err();
        assert!(e.contains("does not exist"), "{e}");
        let yaml = "all:\n  hosts:\n    web-1:\n      ansible_connection: local\n";
        assert_eq!(
            resolve(&text(yaml), exists),
            Ok(Resolved::Inline(yaml.into()))
        );
        assert_eq!(
            resolve(&text("{all: {hosts: {a: {}}}}"), exists),
            Ok(Resolved::Inline("{all: {hosts: {a: {}}}}\n".into()))
        );
        let e = resolve(&text("inventory.yml"), exists).unwrap_err();
        assert!(e.contains("neither"), "{e}");
        assert_eq!(resolve(&text("  "), exists).unwrap_err(), "is empty");
        let object: Source = serde_json::from_str(
            r#"{"all": {"hosts": {"web-1": {"ansible_connection": "local"}}}}"#,
        )
        .unwrap();
        let Resolved::Inline(json) = resolve(&object, exists).unwrap() else {
            panic!()
        };
        assert!(json.contains("\"web-1\""), "{json}");
    }
}
