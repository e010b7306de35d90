//! `packer`: builds a machine image with the real Packer CLI.
//!
//! The stage runs `packer validate`, then
//! `packer build -machine-readable` of a template with `-var` variables and
//! an image name (given, or `golden-<UTC timestamp>`), and turns the
//! machine-readable output and the manifest post-processor's file into
//! outputs: `template_id`, `build_time`, `builder`, `artifact_files`,
//! `software`, `manifest_file`, `skipped`, `inputs_digest` (and a few more,
//! see [`BuildOutputs`]). When a build fails, Packer's own error lines
//! (`ui,error`) are the stage's error.
//!
//! The template must accept two variables the plugin always passes:
//! `image_name` (the image's name) and `manifest_path`, where its manifest
//! post-processor writes (`<work dir>/packer-manifest.json`); both names are
//! configurable. A provisioner may print a line
//! `capstan-software: bash=5.2.15 python3=3.11.2` (or a JSON object after
//! the marker) to report measured software versions; they become the
//! `software` output (otherwise the manifest's `custom_data` is).
//!
//! With `skip_unchanged`, the plugin hashes the template, the variables and
//! every file under the given paths; when the digest equals the one of the
//! last good build (kept in `state_file`), it skips Packer and re-emits that
//! build's outputs with `skipped = true`.
//!
//! ```toml
//! [stages.image]
//! plugin = "packer"
//! with = { template = "${pipeline.dir}/packer/golden-image.json",
//!          vars = { registry_dir = "${pipeline.dir}/registry" },
//!          skip_unchanged = { paths = ["${pipeline.dir}/packer"],
//!                             state_file = "${pipeline.dir}/.state/packer.json",
//!                             must_exist = ["${pipeline.dir}/registry/{image_name}/manifest.json"] } }
//!
//! [[stages.image.grants.exec]]
//! program = "packer"
//! args = ["validate|build", "**"]
//! env = ["CHECKPOINT_DISABLE", "PACKER_CACHE_DIR", "TMPDIR"]
//!
//! [stages.image.grants]
//! read = ["packer", "registry"]   # the template and skip_unchanged paths; must_exist paths
//! write = [".state"]              # the state file's directory (requested even without skip_unchanged)
//! ```
//!
//! Packer runs in the template's directory with `HOME` = the work dir,
//! `CHECKPOINT_DISABLE=1` (no update check), and `PACKER_CACHE_DIR` and
//! `TMPDIR` (where shell-local writes its scripts) inside the work dir.
//! Packer's own writes (e.g. a provisioner baking into a registry
//! directory) are the child's, not the plugin's: they need no grant.
//!
//! Build: `cargo build --release --target wasm32-wasip2 -p capstan-packer`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use capstan_plugin::{Context, Error, Exec, Info, Outcome, Stage};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

pub mod inputs;
pub mod machine_readable;
pub mod manifest;
pub mod state;

use machine_readable::Parsed;
use manifest::Manifest;

/// The stage's `with` table.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Absolute path of the Packer template (JSON, or HCL2 on newer
    /// Packer). Its directory is Packer's working directory, so it must be
    /// inside a `read` grant.
    pub template: PathBuf,
    /// Template variables, each passed as `-var name=value`.
    #[serde(default)]
    pub vars: BTreeMap<String, Scalar>,
    /// Variable files (absolute paths), each passed as `-var-file=path`.
    #[serde(default)]
    pub var_files: Vec<PathBuf>,
    /// The image's name. Default: `<image_prefix>-<UTC time>`, e.g.
    /// `golden-20261126T101500Z`; pass `${run.id}` to tie it to the run.
    #[serde(default)]
    pub image_name: Option<String>,
    /// Prefix of the default image name.
    #[serde(default = "default_prefix")]
    pub image_prefix: String,
    /// Template variable that receives the image name (empty: not passed).
    #[serde(default = "default_image_var")]
    pub image_name_var: String,
    /// Template variable that receives the manifest path
    /// `<work dir>/packer-manifest.json`, for the manifest post-processor's
    /// `output` (empty: not passed, and outputs come from the
    /// machine-readable artifacts only).
    #[serde(default = "default_manifest_var")]
    pub manifest_var: String,
    /// What `template_id` is: the image name, or the first build's
    /// artifact id (e.g. an AMI id; the null builder's is `Null`).
    #[serde(default)]
    pub template_id: TemplateId,
    /// Marker of the line on which a provisioner reports software versions
    /// (`<marker> name=version ...` or `<marker> {"name": "version"}`).
    #[serde(default = "default_marker")]
    pub software_marker: String,
    /// Build only these builds (`-only=a,b`).
    #[serde(default)]
    pub only: Vec<String>,
    /// Pass `-force`: replace existing artifacts.
    #[serde(default)]
    pub force: bool,
    /// Skip the build when nothing it depends on changed since the last
    /// good build.
    #[serde(default)]
    pub skip_unchanged: Option<SkipUnchanged>,
}

/// `skip_unchanged`: what the build depends on, and where to remember the
/// last good build.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SkipUnchanged {
    /// Files and directories (absolute, readable) whose content, with the
    /// template and the variables, decides whether to rebuild.
    pub paths: Vec<PathBuf>,
    /// JSON file (absolute, in a `write` grant) keeping the last good
    /// build's inputs digest and outputs.
    pub state_file: PathBuf,
    /// Paths that must still exist for a build to be skipped, with
    /// `{image_name}` standing for the last build's image name, e.g.
    /// `"${pipeline.dir}/registry/{image_name}/manifest.json"` (readable
    /// through a `read` grant). The artifact's absolute files are always
    /// checked.
    #[serde(default)]
    pub must_exist: Vec<String>,
    /// Build even when nothing changed, e.g. `"${stage.forced}"` (true under
    /// `capstan run --force <this stage>`: a scheduled rebuild).
    #[serde(default)]
    pub force: bool,
}

/// A variable's value: strings, numbers and booleans are passed as text.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum Scalar {
    /// A string.
    String(String),
    /// An integer.
    Int(i64),
    /// A number.
    Float(f64),
    /// A boolean.
    Bool(bool),
}

impl std::fmt::Display for Scalar {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Scalar::String(s) => f.write_str(s),
            Scalar::Int(i) => write!(f, "{i}"),
            Scalar::Float(x) => write!(f, "{x}"),
            Scalar::Bool(b) => write!(f, "{b}"),
        }
    }
}

/// Where `template_id` comes from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum TemplateId {
    /// The image name.
    #[default]
    ImageName,
    /// The first build's artifact id.
    ArtifactId,
}

fn default_prefix() -> String {
    "golden".into()
}
fn default_image_var() -> String {
    "image_name".into()
}
fn default_manifest_var() -> String {
    "manifest_path".into()
}
fn default_marker() -> String {
    "capstan-software:".into()
}

/// The stage's outputs (also what the state file keeps).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BuildOutputs {
    /// The image name or artifact id (config `template_id`).
    pub template_id: String,
    /// The image name passed to the template.
    pub image_name: String,
    /// The first build's artifact id.
    pub artifact_id: String,
    /// When the (last) build finished, Unix seconds (the manifest's
    /// `build_time`).
    pub build_time: i64,
    /// Builder type(s), e.g. `null` (comma-separated when several differ).
    pub builder: String,
    /// Every build of the run, as the manifest records it.
    pub builds: Vec<manifest::Build>,
    /// Files of every artifact.
    pub artifact_files: Vec<String>,
    /// Software versions reported by the build (or the `custom_data`).
    pub software: BTreeMap<String, String>,
    /// The manifest post-processor's `custom_data` (builds merged).
    pub custom_data: BTreeMap<String, Value>,
    /// The manifest file (in the work dir of the run that built it).
    pub manifest_file: String,
    /// The inputs digest, with `skip_unchanged`.
    pub inputs_digest: Option<String>,
    /// True when the build was skipped and these are the last good build's
    /// outputs.
    pub skipped: bool,
    /// The Capstan run that built the image.
    pub built_by_run: String,
    /// Wall time of `packer build`, in milliseconds.
    pub duration_ms: u64,
}

struct Packer;

impl Stage for Packer {
    type Config = Config;

    fn info() -> Info {
        Info::new("packer", env!("CARGO_PKG_VERSION"))
            .description(
                "Validates and builds a Packer template; outputs the image name, builder, \
                 artifact files and software versions; can skip unchanged builds.",
            )
            .exec(
                "packer",
                "to run `packer validate` and `packer build -machine-readable` on the template",
            )
            .read("to read the template, and the files `skip_unchanged` hashes")
            .write(
                "to keep the last good build's digest and outputs in `skip_unchanged.state_file`",
            )
    }

    fn run(ctx: Context<Config>) -> Result<Outcome, Error> {
        run(&ctx)
    }
}

capstan_plugin::export_stage!(Packer);

/// Everything the run needs, checked and derived from the config.
#[derive(Debug)]
struct Plan {
    image_name: String,
    manifest_file: PathBuf,
    /// User variables, sorted (they go into the digest).
    user_vars: Vec<(String, String)>,
    /// All `-var` pairs, user variables first.
    vars: Vec<(String, String)>,
    cwd: PathBuf,
}

fn plan(ctx: &Context<Config>, now: SystemTime) -> Result<Plan, Error> {
    let c = &ctx.config;
    if !c.template.is_absolute() {
        return Err(Error::config(format!(
            "field `template`: `{}` is not an absolute path (use \"${{pipeline.dir}}/...\")",
            c.template.display()
        )));
    }
    for (i, f) in c.var_files.iter().enumerate() {
        if !f.is_absolute() {
            return Err(Error::config(format!(
                "field `var_files[{i}]`: `{}` is not an absolute path",
                f.display()
            )));
        }
    }
    let image_name = match &c.image_name {
        Some(name) if name.trim().is_empty() => {
            return Err(Error::config("field `image_name`: must not be empty"));
        }
        Some(name) => name.clone(),
        None => format!("{}-{}", c.image_prefix, utc_stamp(now)),
    };
    for (field, var) in [
        ("image_name_var", &c.image_name_var),
        ("manifest_var", &c.manifest_var),
    ] {
        if !var.is_empty() && c.vars.contains_key(var) {
            return Err(Error::config(format!(
                "field `vars.{var}`: the plugin sets `{var}` itself (see `{field}`)"
            )));
        }
    }
    let user_vars: Vec<(String, String)> = c
        .vars
        .iter()
        .map(|(k, v)| (k.clone(), v.to_string()))
        .collect();
    let manifest_file = ctx.work_dir.join("packer-manifest.json");
    let mut vars = user_vars.clone();
    if !c.image_name_var.is_empty() {
        vars.push((c.image_name_var.clone(), image_name.clone()));
    }
    if !c.manifest_var.is_empty() {
        vars.push((
            c.manifest_var.clone(),
            manifest_file.to_string_lossy().into_owned(),
        ));
    }
    let cwd = c
        .template
        .parent()
        .map_or_else(|| PathBuf::from("/"), Path::to_path_buf);
    if let Some(skip) = &c.skip_unchanged {
        if !skip.state_file.is_absolute() {
            return Err(Error::config(format!(
                "field `skip_unchanged.state_file`: `{}` is not an absolute path",
                skip.state_file.display()
            )));
        }
        for (i, p) in skip.paths.iter().enumerate() {
            if !p.is_absolute() {
                return Err(Error::config(format!(
                    "field `skip_unchanged.paths[{i}]`: `{}` is not an absolute path",
                    p.display()
                )));
            }
        }
    }
    Ok(Plan {
        image_name,
        manifest_file,
        user_vars,
        vars,
        cwd,
    })
}

fn run(ctx: &Context<Config>) -> Result<Outcome, Error> {
    let started = Instant::now();
    let c = &ctx.config;
    let plan = plan(ctx, SystemTime::now())?;
    if !c.template.is_file() {
        return Err(Error::config(format!(
            "field `template`: `{}` is not a readable file (does it exist, and is its directory in the stage's `read` grant?)",
            c.template.display()
        )));
    }

    // skip_unchanged: compare the inputs with the last good build's.
    let mut digest = None;
    if let Some(skip) = &c.skip_unchanged {
        let inputs = inputs::digest(&c.template, &plan.user_vars, &skip.paths).map_err(|e| {
            Error::failed(format!(
                "skip_unchanged: {e} (is it in the stage's `read` grant?)"
            ))
        })?;
        capstan_plugin::info!(
            "inputs digest {} ({} files under {} paths)",
            inputs.digest,
            inputs.files,
            skip.paths.len()
        );
        let last = state::load(&skip.state_file).map_err(|e| {
            Error::failed(format!(
                "cannot read state file `{}`: {e} (is its directory in the stage's `write` grant?)",
                skip.state_file.display()
            ))
        })?;
        if skip.force {
            capstan_plugin::info!("skip_unchanged.force: building whatever changed");
        }
        if let Some(last) = last.filter(|_| !skip.force) {
            if last.inputs_digest == inputs.digest {
                let missing = missing_artifacts(skip, &last.outputs, |p| p.exists());
                if missing.is_empty() {
                    return Ok(skipped(last, started));
                }
                capstan_plugin::warn!(
                    "inputs unchanged, but what the last build made is gone ({}): rebuilding",
                    missing.join(", ")
                );
            } else {
                capstan_plugin::info!(
                    "inputs changed since the last good build {} (digest {}): building",
                    last.outputs.image_name,
                    short(&last.inputs_digest)
                );
            }
        }
        digest = Some(inputs.digest);
    }

    // Packer keeps caches, plugins and temporary scripts: in the work dir.
    let tmp = ctx.work_dir.join("tmp");
    let cache = ctx.work_dir.join("packer_cache");
    for dir in [&tmp, &cache] {
        std::fs::create_dir_all(dir)
            .map_err(|e| Error::failed(format!("cannot create `{}`: {e}", dir.display())))?;
    }
    let packer = |command: &str| {
        Exec::new("packer")
            .arg(command)
            .cwd(&plan.cwd)
            .env("CHECKPOINT_DISABLE", "1")
            .env("PACKER_CACHE_DIR", &cache)
            .env("TMPDIR", &tmp)
            .capture()
    };
    let var_args: Vec<String> = plan
        .vars
        .iter()
        .flat_map(|(k, v)| ["-var".to_string(), format!("{k}={v}")])
        .chain(
            c.var_files
                .iter()
                .map(|f| format!("-var-file={}", f.display())),
        )
        .collect();

    // 1. validate
    let validate = packer("validate")
        .arg("-machine-readable")
        .args(&var_args)
        .arg(&c.template)
        .run()?;
    if !validate.success() {
        return Err(tool_error(
            "packer validate",
            &validate.status.to_string(),
            &validate.stdout_str(),
            &validate.stderr_str(),
        ));
    }
    capstan_plugin::info!("template {} is valid", c.template.display());

    // 2. build
    let mut build = packer("build").arg("-machine-readable");
    if !c.only.is_empty() {
        build = build.arg(format!("-only={}", c.only.join(",")));
    }
    if c.force {
        build = build.arg("-force");
    }
    let out = build.args(&var_args).arg(&c.template).run()?;
    if out.truncated {
        capstan_plugin::warn!("packer's output was cut at the host's capture limit");
    }
    let parsed = machine_readable::parse(&out.stdout_str());
    if !out.success() {
        return Err(tool_error(
            "packer build",
            &out.status.to_string(),
            &out.stdout_str(),
            &out.stderr_str(),
        ));
    }

    let manifest = if c.manifest_var.is_empty() {
        None
    } else {
        read_manifest(&plan.manifest_file)?
    };
    let outputs = outputs(
        c,
        &plan,
        &parsed,
        manifest.as_ref(),
        digest.clone(),
        &ctx.run_id,
        out.duration,
    );

    if let (Some(skip), Some(digest)) = (&c.skip_unchanged, digest) {
        let state = state::State {
            version: state::VERSION,
            inputs_digest: digest,
            run_id: ctx.run_id.clone(),
            outputs: outputs.clone(),
        };
        state::save(&skip.state_file, &state).map_err(|e| {
            Error::failed(format!(
                "built {}, but cannot write state file `{}`: {e} (is its directory in the stage's `write` grant?)",
                outputs.image_name,
                skip.state_file.display()
            ))
        })?;
    }

    let total = started.elapsed();
    let summary = format!(
        "built {} with {} in {}{}",
        outputs.template_id,
        if outputs.builder.is_empty() {
            "packer"
        } else {
            &outputs.builder
        },
        seconds(out.duration),
        software_note(&outputs.software)
    );
    let report = serde_json::json!({
        "validate_ms": validate.duration.as_millis() as u64,
        "build_ms": out.duration.as_millis() as u64,
        "total_ms": total.as_millis() as u64,
        "artifacts": parsed.artifacts(),
    });
    let mut outcome = emit(Outcome::new(summary), &outputs).report(report);
    if manifest.is_some() {
        outcome = outcome.artifact(&plan.manifest_file);
    }
    Ok(outcome)
}

/// What the last good build made that no longer exists: its absolute
/// artifact files, and the `must_exist` paths.
fn missing_artifacts(
    skip: &SkipUnchanged,
    last: &BuildOutputs,
    exists: impl Fn(&Path) -> bool,
) -> Vec<String> {
    last.artifact_files
        .iter()
        .filter(|f| Path::new(f).is_absolute())
        .cloned()
        .chain(
            skip.must_exist
                .iter()
                .map(|p| p.replace("{image_name}", &last.image_name)),
        )
        .filter(|p| !exists(Path::new(p)))
        .collect()
}

/// The outcome of a skipped build: the last good build's outputs.
fn skipped(last: state::State, started: Instant) -> Outcome {
    let mut outputs = last.outputs;
    outputs.skipped = true;
    outputs.inputs_digest = Some(last.inputs_digest.clone());
    let summary = format!(
        "skipped: inputs unchanged since {} (run {}, digest {}); reusing its outputs",
        outputs.template_id,
        last.run_id,
        short(&last.inputs_digest)
    );
    let report = serde_json::json!({
        "skipped": true,
        "total_ms": started.elapsed().as_millis() as u64,
    });
    emit(Outcome::new(summary), &outputs).report(report)
}

/// Every field of `outputs` as a stage output.
fn emit(mut outcome: Outcome, outputs: &BuildOutputs) -> Outcome {
    match serde_json::to_value(outputs) {
        Ok(Value::Object(map)) => {
            for (k, v) in map {
                outcome = outcome.output(k, v);
            }
            outcome
        }
        _ => outcome,
    }
}

fn read_manifest(path: &Path) -> Result<Option<Manifest>, Error> {
    match std::fs::read_to_string(path) {
        Ok(text) => Manifest::parse(&text).map(Some).map_err(|e| {
            Error::failed(format!(
                "the manifest post-processor wrote `{}`, but it is not a Packer manifest: {e}",
                path.display()
            ))
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            capstan_plugin::warn!(
                "no manifest at {}: does the template have a manifest post-processor with \
                 \"output\": \"{{{{user `manifest_path`}}}}\"? Outputs come from the \
                 machine-readable artifacts only",
                path.display()
            );
            Ok(None)
        }
        Err(e) => Err(Error::failed(format!(
            "cannot read `{}`: {e}",
            path.display()
        ))),
    }
}

/// Outputs from the manifest's last run (or, without one, from the
/// machine-readable artifacts).
fn outputs(
    c: &Config,
    plan: &Plan,
    parsed: &Parsed,
    manifest: Option<&Manifest>,
    inputs_digest: Option<String>,
    run_id: &str,
    duration: Duration,
) -> BuildOutputs {
    let artifacts = parsed.artifacts();
    let builds: Vec<manifest::Build> = match manifest {
        Some(m) => m.last_run().into_iter().cloned().collect(),
        None => Vec::new(),
    };
    let artifact_id = builds
        .first()
        .map(|b| b.artifact_id.clone())
        .or_else(|| artifacts.first().map(|a| a.id.clone()))
        .unwrap_or_default();
    let mut builders: Vec<String> = if builds.is_empty() {
        artifacts
            .iter()
            .map(|a| builder_type(&a.builder_id))
            .collect()
    } else {
        builds.iter().map(|b| b.builder_type.clone()).collect()
    };
    builders.sort();
    builders.dedup();
    let mut files: Vec<String> = if builds.is_empty() {
        artifacts.iter().flat_map(|a| a.files.clone()).collect()
    } else {
        builds
            .iter()
            .flat_map(|b| b.files.iter().map(|f| f.name.clone()))
            .collect()
    };
    files.sort();
    files.dedup();
    let mut custom_data = BTreeMap::new();
    for b in &builds {
        custom_data.extend(b.custom_data.clone());
    }
    let mut software = parsed.software(&c.software_marker);
    if software.is_empty() {
        software = custom_data
            .iter()
            .map(|(k, v)| {
                let v = match v {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                (k.clone(), v)
            })
            .collect();
    }
    let build_time = builds
        .iter()
        .map(|b| b.build_time)
        .max()
        .or_else(|| parsed.records.iter().map(|r| r.timestamp as i64).max())
        .unwrap_or_default();
    let template_id = match c.template_id {
        TemplateId::ImageName => plan.image_name.clone(),
        TemplateId::ArtifactId => artifact_id.clone(),
    };
    BuildOutputs {
        template_id,
        image_name: plan.image_name.clone(),
        artifact_id,
        build_time,
        builder: builders.join(","),
        builds,
        artifact_files: files,
        software,
        custom_data,
        manifest_file: if manifest.is_some() {
            plan.manifest_file.to_string_lossy().into_owned()
        } else {
            String::new()
        },
        inputs_digest,
        skipped: false,
        built_by_run: run_id.to_string(),
        duration_ms: duration.as_millis() as u64,
    }
}

/// `fnoeding.null` → `null`, `mitchellh.amazonebs` → `amazonebs`.
fn builder_type(builder_id: &str) -> String {
    builder_id
        .rsplit('.')
        .next()
        .unwrap_or(builder_id)
        .to_string()
}

/// The stage error for a failed Packer command: Packer's own error lines.
fn tool_error(what: &str, status: &str, stdout: &str, stderr: &str) -> Error {
    const MAX_LINES: usize = 30;
    let mut lines = machine_readable::parse(stdout).errors();
    lines.extend(
        stderr
            .lines()
            .map(str::trim_end)
            .filter(|l| !l.trim().is_empty())
            .map(str::to_string),
    );
    if lines.len() > MAX_LINES {
        let cut = lines.len() - MAX_LINES;
        lines.drain(..cut);
        lines.insert(0, format!("… ({cut} earlier lines in the stage log)"));
    }
    if lines.is_empty() {
        Error::failed(format!(
            "{what} failed with {status} (its output is in the stage log)"
        ))
    } else {
        Error::failed(format!(
            "{what} failed with {status}:\n{}",
            lines.join("\n")
        ))
    }
}

fn software_note(software: &BTreeMap<String, String>) -> String {
    if software.is_empty() {
        return String::new();
    }
    format!(
        " ({})",
        software
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect::<Vec<_>>()
            .join(", ")
    )
}

fn short(digest: &str) -> &str {
    digest.get(..12).unwrap_or(digest)
}

fn seconds(d: Duration) -> String {
    format!("{:.1}s", d.as_secs_f64())
}

/// `20261126T101500Z` for `now` (UTC).
pub fn utc_stamp(now: SystemTime) -> String {
    capstan_plugin::utc::Utc::from_system_time(now).compact()
}

#[cfg(test)]
mod tests {
    use super::*;

    const TESTDATA: &str = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../examples/golden-image/packer/testdata/"
    );

    fn config(json: &str) -> Config {
        serde_json::from_str(json).unwrap()
    }

    fn context(config: Config) -> Context<Config> {
        Context {
            config,
            run_id: "r1".into(),
            pipeline: "p".into(),
            stage: "image".into(),
            environment: "dev".into(),
            work_dir: "/runs/r1/stages/image".into(),
            upstream: vec![],
        }
    }

    #[test]
    fn utc_stamps() {
        let at = |s: u64| utc_stamp(SystemTime::UNIX_EPOCH + Duration::from_secs(s));
        assert_eq!(at(0), "19700101T000000Z");
        assert_eq!(at(1_795_653_984), "20261126T004624Z");
        assert_eq!(at(951_782_400), "20000229T000000Z");
        assert_eq!(at(4_102_444_799), "20991231T235959Z");
    }

    #[test]
    fn plan_passes_image_and_manifest_vars() {
        let ctx = context(config(
            r#"{"template": "/p/packer/t.json", "vars": {"b": "x y", "a": 2, "c": true}}"#,
        ));
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_653_984);
        let p = plan(&ctx, now).unwrap();
        assert_eq!(p.image_name, "golden-20261126T004624Z");
        assert_eq!(p.cwd, PathBuf::from("/p/packer"));
        let vars: Vec<String> = p.vars.iter().map(|(k, v)| format!("{k}={v}")).collect();
        assert_eq!(
            vars,
            [
                "a=2",
                "b=x y",
                "c=true",
                "image_name=golden-20261126T004624Z",
                "manifest_path=/runs/r1/stages/image/packer-manifest.json"
            ]
        );
        assert_eq!(p.user_vars.len(), 3);
    }

    #[test]
    fn plan_names_bad_fields() {
        let err = |json: &str| match plan(&context(config(json)), SystemTime::now()) {
            Err(Error::InvalidConfig(m)) => m,
            other => panic!("{other:?}"),
        };
        assert!(err(r#"{"template": "t.json"}"#).starts_with("field `template`"));
        assert!(
            err(r#"{"template": "/t.json", "vars": {"image_name": "x"}}"#)
                .starts_with("field `vars.image_name`")
        );
        assert!(
            err(r#"{"template": "/t.json", "image_name": " "}"#).starts_with("field `image_name`")
        );
        assert!(
            err(r#"{"template": "/t.json", "skip_unchanged": {"paths": ["rel"], "state_file": "/s"}}"#)
                .starts_with("field `skip_unchanged.paths[0]`")
        );
        // A variable the plugin would set is fine once the plugin does not.
        let ok = plan(
            &context(config(
                r#"{"template": "/t.json", "vars": {"image_name": "x"}, "image_name_var": "", "image_name": "given"}"#,
            )),
            SystemTime::now(),
        )
        .unwrap();
        assert_eq!(ok.image_name, "given");
        assert!(ok.vars.iter().any(|(k, v)| k == "image_name" && v == "x"));
    }

    #[test]
    fn config_schema_rejects_unknown_fields() {
        let e = serde_json::from_str::<Config>(r#"{"template": "/t", "tempalte": "/x"}"#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown field `tempalte`"), "{e}");
        let schema = serde_json::to_value(schemars::schema_for!(Config)).unwrap();
        assert_eq!(schema["additionalProperties"], false);
        assert_eq!(schema["required"], serde_json::json!(["template"]));
        assert!(
            schema["properties"]["skip_unchanged"]
                .to_string()
                .contains("SkipUnchanged")
        );
    }

    #[test]
    fn outputs_from_the_real_build_and_manifest() {
        let manifest = Manifest::parse(
            &std::fs::read_to_string(format!("{TESTDATA}packer-manifest.json")).unwrap(),
        )
        .unwrap();
        let built = manifest.last_run()[0].clone();
        let name = built.custom_data["image_name"]
            .as_str()
            .unwrap()
            .to_string();
        let c = config(&format!(
            r#"{{"template": "/p/t.json", "image_name": "{name}"}}"#
        ));
        let ctx = context(c);
        let p = plan(&ctx, SystemTime::now()).unwrap();
        let mr = std::fs::read_to_string(format!("{TESTDATA}build-machine-readable.txt")).unwrap();
        let parsed = machine_readable::parse(&mr);
        let o = outputs(
            &ctx.config,
            &p,
            &parsed,
            Some(&manifest),
            Some("d".into()),
            "r1",
            Duration::from_millis(2100),
        );
        assert_eq!(o.template_id, name);
        assert_eq!(o.image_name, name);
        assert_eq!(o.artifact_id, "Null");
        assert_eq!(o.builder, "null");
        assert_eq!(o.build_time, built.build_time);
        assert_eq!(o.builds.len(), 1);
        assert_eq!(o.builds[0], built);
        assert!(o.artifact_files.is_empty());
        let keys: Vec<&str> = o.software.keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            ["bash", "coreutils", "healthcheck", "python3", "sed", "tar"]
        );
        assert!(o.software["python3"].starts_with("3."));
        assert_eq!(o.software["healthcheck"], "1.0.0");
        assert_eq!(o.custom_data, built.custom_data);
        assert_eq!(
            o.manifest_file,
            "/runs/r1/stages/image/packer-manifest.json"
        );
        assert_eq!(o.inputs_digest.as_deref(), Some("d"));
        assert!(!o.skipped);
        assert_eq!(o.duration_ms, 2100);
        let note = software_note(&o.software);
        assert!(note.starts_with(" (bash 5."), "{note}");

        // Without a manifest: the machine-readable artifacts.
        let o = outputs(&ctx.config, &p, &parsed, None, None, "r1", Duration::ZERO);
        assert_eq!(o.builder, "null");
        assert_eq!(o.artifact_id, "Null");
        assert_eq!(
            o.build_time,
            parsed
                .records
                .iter()
                .map(|r| r.timestamp as i64)
                .max()
                .unwrap()
        );
        assert_eq!(o.manifest_file, "");
        assert!(o.custom_data.is_empty());

        // template_id = artifact_id; software from custom_data without a marker line.
        let c = config(
            r#"{"template": "/p/t.json", "image_name": "n", "template_id": "artifact_id", "software_marker": ""}"#,
        );
        let ctx = context(c);
        let p = plan(&ctx, SystemTime::now()).unwrap();
        let o = outputs(
            &ctx.config,
            &p,
            &parsed,
            Some(&manifest),
            None,
            "r1",
            Duration::ZERO,
        );
        assert_eq!(o.template_id, "Null");
        assert_eq!(o.software["base"], "debian-12");
    }

    #[test]
    fn tool_errors_carry_packers_lines() {
        let mr = std::fs::read_to_string(format!(
            "{TESTDATA}build-machine-readable-error-provisioner.txt"
        ))
        .unwrap();
        let e = tool_error("packer build", "exit code 1", &mr, "").to_string();
        assert!(e.starts_with("packer build failed with exit code 1:\n==> golden-image: bake: error: image_name '../escape' must be letters, digits,"), "{e}");
        let e = tool_error("packer validate", "exit code 1", "", "").to_string();
        assert_eq!(
            e,
            "packer validate failed with exit code 1 (its output is in the stage log)"
        );
        let many: String = (0..50).map(|i| format!("1,,ui,error,line {i}\n")).collect();
        let e = tool_error("packer build", "exit code 1", &many, "").to_string();
        assert!(
            e.contains("(20 earlier lines in the stage log)\nline 20\n"),
            "{e}"
        );
        assert!(e.ends_with("line 49"), "{e}");
    }

    #[test]
    fn skipping_needs_what_the_last_build_made() {
        let skip: SkipUnchanged = serde_json::from_str(
            r#"{"paths": ["/p"], "state_file": "/s/state.json",
                "must_exist": ["/registry/{image_name}/manifest.json"]}"#,
        )
        .unwrap();
        let mut last = crate::state::tests_support::outputs();
        last.image_name = "golden-1".into();
        last.artifact_files = vec!["/out/disk.raw".into(), "relative.raw".into()];
        let all = |_: &Path| true;
        assert!(missing_artifacts(&skip, &last, all).is_empty());
        let gone = |p: &Path| p != Path::new("/registry/golden-1/manifest.json");
        assert_eq!(
            missing_artifacts(&skip, &last, gone),
            ["/registry/golden-1/manifest.json"]
        );
        let none = |_: &Path| false;
        assert_eq!(
            missing_artifacts(&skip, &last, none),
            ["/out/disk.raw", "/registry/golden-1/manifest.json"]
        );
    }

    #[test]
    fn builder_types() {
        assert_eq!(builder_type("fnoeding.null"), "null");
        assert_eq!(builder_type("mitchellh.amazonebs"), "amazonebs");
        assert_eq!(builder_type("x"), "x");
    }
}
