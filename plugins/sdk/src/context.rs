//! [`Context`]: everything a stage gets to run.

use std::path::PathBuf;

use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use crate::Error;
use crate::bindings::capstan::plugin::types::StageContext;

/// What one run of a stage gets from the host.
///
/// All fields are public so that a plugin's own tests can build one.
#[derive(Debug, Clone)]
pub struct Context<C> {
    /// The stage's `with` table, every `${...}` reference resolved.
    pub config: C,
    /// Unique id of this run, e.g. `20261126-101500-7f3a`.
    pub run_id: String,
    /// Name of the pipeline.
    pub pipeline: String,
    /// Name of this stage in the pipeline file.
    pub stage: String,
    /// The environment the run targets, e.g. `dev` or `production`.
    pub environment: String,
    /// This stage's own work directory: readable, writable, empty at the
    /// start, kept in the run directory afterwards.
    pub work_dir: PathBuf,
    /// The stages this one `needs`, with their outputs.
    pub upstream: Vec<Upstream>,
}

/// The outputs and work directory of a stage this stage `needs`.
#[derive(Debug, Clone, PartialEq)]
pub struct Upstream {
    /// Stage name.
    pub stage: String,
    /// That stage's outputs.
    pub outputs: Map<String, Value>,
    /// That stage's work directory (readable by this stage).
    pub work_dir: PathBuf,
}

/// The config of a stage that takes none: `with` must be empty or absent.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NoConfig {}

impl<C> Context<C> {
    /// The upstream stage called `stage`, if this stage `needs` it.
    pub fn upstream(&self, stage: &str) -> Option<&Upstream> {
        self.upstream.iter().find(|u| u.stage == stage)
    }

    /// Output `key` of upstream stage `stage`, deserialised as `T`.
    ///
    /// Fails with [`Error::InvalidConfig`] when the stage is not upstream,
    /// has no such output, or the output is not a `T`: all three are
    /// mistakes in how the pipeline wires its stages.
    pub fn input<T: DeserializeOwned>(&self, stage: &str, key: &str) -> Result<T, Error> {
        let Some(upstream) = self.upstream(stage) else {
            let known: Vec<&str> = self.upstream.iter().map(|u| u.stage.as_str()).collect();
            return Err(Error::config(format!(
                "stage `{}` needs no stage `{stage}` (it needs: {})",
                self.stage,
                list_or_none(&known)
            )));
        };
        upstream.output(key)
    }
}

impl Upstream {
    /// Output `key` of this stage, deserialised as `T`.
    pub fn output<T: DeserializeOwned>(&self, key: &str) -> Result<T, Error> {
        let Some(value) = self.outputs.get(key) else {
            let known: Vec<&str> = self.outputs.keys().map(String::as_str).collect();
            return Err(Error::config(format!(
                "stage `{}` has no output `{key}` (its outputs: {})",
                self.stage,
                list_or_none(&known)
            )));
        };
        T::deserialize(value)
            .map_err(|e| Error::config(format!("output `{key}` of stage `{}`: {e}", self.stage)))
    }
}

fn list_or_none(items: &[&str]) -> String {
    if items.is_empty() {
        "none".to_string()
    } else {
        items.join(", ")
    }
}

/// Parse a stage's `with` JSON, naming the offending field on error.
pub(crate) fn parse_config<C: DeserializeOwned>(json: &str) -> Result<C, Error> {
    let json = if json.trim().is_empty() { "{}" } else { json };
    let de = &mut serde_json::Deserializer::from_str(json);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        // The host wrote this JSON: a line and column in it mean nothing to
        // whoever wrote the pipeline file.
        let inner = e.inner();
        let message = inner.to_string();
        let location = format!(" at line {} column {}", inner.line(), inner.column());
        let message = message.strip_suffix(&location).unwrap_or(&message);
        if path == "." {
            Error::config(message)
        } else {
            Error::config(format!("field `{path}`: {message}"))
        }
    })
}

impl<C: DeserializeOwned> Context<C> {
    pub(crate) fn from_wit(cx: StageContext) -> Result<Self, Error> {
        let config = parse_config(&cx.config)?;
        let upstream = cx
            .upstream
            .into_iter()
            .map(|u| {
                let outputs = serde_json::from_str(&u.outputs).map_err(|e| {
                    Error::failed(format!(
                        "the host sent outputs of stage `{}` that are not a JSON object: {e}",
                        u.stage
                    ))
                })?;
                Ok(Upstream {
                    stage: u.stage,
                    outputs,
                    work_dir: u.work_dir.into(),
                })
            })
            .collect::<Result<_, Error>>()?;
        Ok(Context {
            config,
            run_id: cx.run_id,
            pipeline: cx.pipeline,
            stage: cx.stage,
            environment: cx.environment,
            work_dir: cx.work_dir.into(),
            upstream,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bindings::capstan::plugin::types::Upstream as WitUpstream;
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Config {
        image: Image,
        #[serde(default)]
        tags: Vec<String>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Image {
        name: String,
        size: u32,
    }

    fn message(r: Result<Config, Error>) -> String {
        match r.unwrap_err() {
            Error::InvalidConfig(m) => m,
            other => panic!("not a config error: {other:?}"),
        }
    }

    #[test]
    fn config_errors_name_the_field() {
        let m = message(parse_config(r#"{"image": {"name": "x", "size": "big"}}"#));
        assert!(
            m.starts_with("field `image.size`: invalid type: string \"big\""),
            "{m}"
        );
        let m = message(parse_config(r#"{"image": {"name": "x"}}"#));
        assert!(m.starts_with("field `image`: missing field `size`"), "{m}");
        let m = message(parse_config(r#"{}"#));
        assert!(m.starts_with("missing field `image`"), "{m}");
        let m = message(parse_config(
            r#"{"image": {"name": "x", "size": 1}, "tags": [1]}"#,
        ));
        assert!(m.starts_with("field `tags[0]`"), "{m}");
        let m = message(parse_config(
            r#"{"image": {"name": "x", "size": 1}, "oops": 1}"#,
        ));
        assert!(m.starts_with("field `oops`: unknown field `oops`"), "{m}");
        assert!(!m.contains("line 1"), "{m}");
    }

    #[test]
    fn empty_config_is_an_empty_object() {
        assert_eq!(parse_config::<NoConfig>("").unwrap(), NoConfig {});
        assert_eq!(parse_config::<NoConfig>("{}").unwrap(), NoConfig {});
        assert!(parse_config::<NoConfig>(r#"{"x": 1}"#).is_err());
    }

    fn context() -> Context<NoConfig> {
        Context::from_wit(StageContext {
            run_id: "r1".into(),
            pipeline: "p".into(),
            stage: "deploy".into(),
            environment: "dev".into(),
            config: "{}".into(),
            upstream: vec![WitUpstream {
                stage: "build".into(),
                outputs: r#"{"template_id": "tpl-1", "count": 3}"#.into(),
                work_dir: "/runs/r1/build".into(),
            }],
            work_dir: "/runs/r1/deploy".into(),
        })
        .unwrap()
    }

    #[test]
    fn inputs_from_upstream() {
        let ctx = context();
        assert_eq!(ctx.work_dir, PathBuf::from("/runs/r1/deploy"));
        let build = ctx.upstream("build").unwrap();
        assert_eq!(build.work_dir, PathBuf::from("/runs/r1/build"));
        assert_eq!(
            ctx.input::<String>("build", "template_id").unwrap(),
            "tpl-1"
        );
        assert_eq!(ctx.input::<u32>("build", "count").unwrap(), 3);
        let e = ctx.input::<String>("plan", "x").unwrap_err().to_string();
        assert!(e.contains("needs no stage `plan` (it needs: build)"), "{e}");
        let e = ctx
            .input::<String>("build", "nope")
            .unwrap_err()
            .to_string();
        assert!(e.contains("(its outputs: template_id, count)"), "{e}");
        let e = ctx
            .input::<u32>("build", "template_id")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("output `template_id` of stage `build`: invalid type"),
            "{e}"
        );
    }
}
