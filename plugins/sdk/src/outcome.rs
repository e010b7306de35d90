//! [`Outcome`]: what a successful stage hands back.

use std::path::PathBuf;

use serde::Serialize;
use serde_json::Value;

use crate::Error;
use crate::bindings::capstan::plugin::types::StageOutcome;

/// A successful stage's summary, outputs, artifacts and report.
///
/// Downstream stages reference outputs as `${stages.<name>.outputs.<key>}`.
/// Values are serialised when added; a value that cannot be serialised
/// (e.g. a map with non-string keys) makes the stage fail with a message
/// naming the output, rather than panicking.
///
/// ```
/// use capstan_plugin::Outcome;
///
/// let outcome = Outcome::new("built image tpl-42")
///     .output("template_id", "tpl-42")
///     .output("size_mb", 812)
///     .artifact("/runs/r1/build/manifest.json");
/// assert_eq!(outcome.get("size_mb"), Some(&serde_json::json!(812)));
/// ```
#[derive(Debug, Clone, PartialEq)]
#[must_use]
pub struct Outcome {
    summary: String,
    outputs: Vec<(String, Value)>,
    artifacts: Vec<PathBuf>,
    report: Option<Value>,
    /// Serialisation failures, reported when the stage returns.
    errors: Vec<String>,
}

impl Outcome {
    /// An outcome with a one-paragraph `summary` for humans.
    pub fn new(summary: impl Into<String>) -> Self {
        Outcome {
            summary: summary.into(),
            outputs: Vec::new(),
            artifacts: Vec::new(),
            report: None,
            errors: Vec::new(),
        }
    }

    /// Set output `key` to `value` as JSON (replacing an earlier value).
    pub fn output(mut self, key: impl Into<String>, value: impl Serialize) -> Self {
        let key = key.into();
        match serde_json::to_value(value) {
            Ok(value) => match self.outputs.iter_mut().find(|(k, _)| *k == key) {
                Some(slot) => slot.1 = value,
                None => self.outputs.push((key, value)),
            },
            Err(e) => self
                .errors
                .push(format!("output `{key}` cannot be serialised: {e}")),
        }
        self
    }

    /// Record a file the stage produced (absolute, inside its grants;
    /// usually under [`Context::work_dir`](crate::Context::work_dir)).
    pub fn artifact(mut self, path: impl Into<PathBuf>) -> Self {
        self.artifacts.push(path.into());
        self
    }

    /// Attach a structured report, stored with the run.
    pub fn report(mut self, report: impl Serialize) -> Self {
        match serde_json::to_value(report) {
            Ok(value) => self.report = Some(value),
            Err(e) => self
                .errors
                .push(format!("the report cannot be serialised: {e}")),
        }
        self
    }

    /// The summary.
    pub fn summary(&self) -> &str {
        &self.summary
    }

    /// The value of output `key`.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.outputs.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    /// The artifacts, in the order they were added.
    pub fn artifacts(&self) -> &[PathBuf] {
        &self.artifacts
    }

    /// The report, if any.
    pub fn report_value(&self) -> Option<&Value> {
        self.report.as_ref()
    }

    pub(crate) fn into_wit(self) -> Result<StageOutcome, Error> {
        if !self.errors.is_empty() {
            return Err(Error::failed(self.errors.join("; ")));
        }
        Ok(StageOutcome {
            outputs: self
                .outputs
                .into_iter()
                .map(|(k, v)| (k, v.to_string()))
                .collect(),
            summary: self.summary,
            artifacts: self
                .artifacts
                .iter()
                .map(|p| p.to_string_lossy().into_owned())
                .collect(),
            report: self.report.map(|r| r.to_string()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn outputs_are_json() {
        let wit = Outcome::new("done")
            .output("message", "hi")
            .output("length", 2)
            .output("length", 3)
            .output("tags", ["a", "b"])
            .artifact("/w/message.txt")
            .report(serde_json::json!({"ok": true}))
            .into_wit()
            .unwrap();
        assert_eq!(wit.summary, "done");
        assert_eq!(
            wit.outputs,
            [
                ("message".to_string(), "\"hi\"".to_string()),
                ("length".to_string(), "3".to_string()),
                ("tags".to_string(), "[\"a\",\"b\"]".to_string()),
            ]
        );
        assert_eq!(wit.artifacts, ["/w/message.txt"]);
        assert_eq!(wit.report.as_deref(), Some("{\"ok\":true}"));
    }

    #[test]
    fn unserialisable_output_fails_the_stage_without_panicking() {
        let bad: BTreeMap<Vec<u8>, u8> = [(vec![1], 1)].into();
        let outcome = Outcome::new("x").output("bad", &bad);
        assert_eq!(outcome.get("bad"), None);
        let err = outcome.into_wit().unwrap_err();
        assert!(
            err.to_string()
                .starts_with("output `bad` cannot be serialised"),
            "{err}"
        );
    }
}
