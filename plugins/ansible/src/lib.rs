//! `ansible`: configures hosts with the real Ansible CLI.
//!
//! In order, each step optional but at least one required:
//!
//! 1. `wait_for_connection`: an ad-hoc
//!    `ansible all -i INV -m wait_for_connection -a timeout=N`;
//! 2. `playbook`: `ansible-playbook -i INV [-e JSON] [--limit] [--tags]
//!    [--skip-tags] [--check] [--diff] PLAYBOOK`, run in the playbook's
//!    directory;
//! 3. `facts`: an ad-hoc `ansible all -i INV -m setup -a filter=...`, whose
//!    facts become the `facts` output.
//!
//! The inventory is a file (e.g. `${stages.apply.outputs.ansible_inventory_file}`)
//! or inline YAML, written to `<work dir>/inventory.yml`.
//!
//! **Per-host results come from Ansible itself, not from its screen
//! output.** ansible-core ships no JSON callback (2.14 has `default`,
//! `junit`, `minimal`, `oneline`, `tree`; `json` lives in the
//! `ansible.posix` collection, which ansible-core does not include), so the
//! plugin writes a small aggregate callback, `capstan_results.py`, into its
//! work dir and enables it next to the normal stdout callback (which still
//! fills the stage log). At the end of each run the callback writes Ansible's
//! own per-host counters (ok, changed, failed, unreachable, skipped,
//! rescued, ignored: the numbers of the PLAY RECAP), the failed task and
//! message of each host, and facts from `setup`, as JSON. That survives any
//! change of the stdout callback, colours, column widths or interleaved
//! warnings; parsing the PLAY RECAP text ([`recap`]) is kept only as a
//! fallback for when the callback could not run.
//!
//! The stage fails when a host failed or was unreachable, naming the hosts
//! with their failing task and message; or when no host matched.
//!
//! Children run with `HOME` = the work dir and these variables, which the
//! exec grants must allow (`env = ["ANSIBLE_*"]`): `ANSIBLE_HOME`,
//! `ANSIBLE_LOCAL_TEMP`, `ANSIBLE_REMOTE_TEMP`, `ANSIBLE_NOCOLOR`, `ANSIBLE_FORCE_COLOR`,
//! `ANSIBLE_HOST_KEY_CHECKING`, `ANSIBLE_RETRY_FILES_ENABLED`,
//! `ANSIBLE_CALLBACK_PLUGINS`, `ANSIBLE_CALLBACKS_ENABLED`,
//! `ANSIBLE_LOAD_CALLBACK_PLUGINS`, `ANSIBLE_CAPSTAN_RESULTS`,
//! `ANSIBLE_CAPSTAN_FACTS`.
//!
//! ```toml
//! [stages.configure]
//! plugin = "ansible"
//! needs = ["apply"]
//! with = { playbook = "${pipeline.dir}/ansible/playbooks/post-deploy.yml",
//!          inventory = "${stages.apply.outputs.ansible_inventory_file}",
//!          wait_for_connection = { timeout = 30 },
//!          facts = { filter = ["ansible_distribution*"] } }
//!
//! [[stages.configure.grants.exec]]
//! program = "ansible-playbook"
//! args = ["**"]
//! env = ["ANSIBLE_*"]
//!
//! [[stages.configure.grants.exec]]
//! program = "ansible"
//! args = ["all", "**"]
//! env = ["ANSIBLE_*"]
//!
//! [stages.configure.grants]
//! read = ["ansible"]     # the playbook's directory
//! ```
//!
//! Build: `cargo build --release --target wasm32-wasip2 -p capstan-ansible`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use capstan_plugin::{Context, Error, Exec, Info, Outcome, Output, Stage};
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{Map, Value, json};

pub mod inventory;
pub mod recap;
pub mod results;

use results::Results;

/// The callback plugin written into the work dir.
const CALLBACK: &str = include_str!("capstan_results.py");
/// Its name, as `ANSIBLE_CALLBACKS_ENABLED` lists it.
const CALLBACK_NAME: &str = "capstan_results";

/// The stage's `with` table.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The inventory: an absolute path of an inventory file or directory
    /// (e.g. `${stages.apply.outputs.ansible_inventory_file}`), or inline
    /// YAML inventory text (written to `<work dir>/inventory.yml`).
    pub inventory: inventory::Source,
    /// Absolute path of the playbook to run (its directory is the working
    /// directory, so it must be inside a `read` grant).
    #[serde(default)]
    pub playbook: Option<PathBuf>,
    /// Before anything else, wait until every host answers: `true` (60 s)
    /// or `{ timeout = seconds }`.
    #[serde(default)]
    pub wait_for_connection: Option<WaitFor>,
    /// Extra variables, passed as one `-e <JSON>`.
    #[serde(default)]
    pub extra_vars: Map<String, Value>,
    /// Limit every step to these hosts or groups (`--limit`).
    #[serde(default)]
    pub limit: Option<String>,
    /// Run only tasks with these tags (`--tags`).
    #[serde(default)]
    pub tags: Option<OneOrMany>,
    /// Skip tasks with these tags (`--skip-tags`).
    #[serde(default)]
    pub skip_tags: Option<OneOrMany>,
    /// Check mode: report what would change, change nothing (`--check`).
    #[serde(default)]
    pub check: bool,
    /// Show file differences (`--diff`).
    #[serde(default)]
    pub diff: bool,
    /// After the playbook, gather facts with `setup` and output them per
    /// host.
    #[serde(default)]
    pub facts: Option<Facts>,
    /// Temporary directory on the managed hosts (`ANSIBLE_REMOTE_TEMP`).
    /// Default: `<work dir>/ansible/remote_tmp`, right for hosts on the
    /// local connection (Ansible would otherwise use the real user's
    /// `~/.ansible/tmp`, outside the stage); for SSH hosts set e.g.
    /// `"~/.ansible/tmp"` (a host's `ansible_remote_tmp` wins over both).
    #[serde(default)]
    pub remote_tmp: Option<String>,
}

/// `wait_for_connection`: a switch, or options.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum WaitFor {
    /// `true`: wait up to 60 seconds; `false`: do not wait.
    Enabled(bool),
    /// Wait with these options.
    Options(WaitOptions),
}

/// Options of `wait_for_connection`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WaitOptions {
    /// Seconds to wait for every host.
    #[serde(default = "default_wait")]
    pub timeout: u64,
}

fn default_wait() -> u64 {
    60
}

impl WaitFor {
    /// The timeout in seconds, or `None` when not waiting.
    fn timeout(&self) -> Option<u64> {
        match self {
            WaitFor::Enabled(true) => Some(default_wait()),
            WaitFor::Enabled(false) => None,
            WaitFor::Options(o) => Some(o.timeout),
        }
    }
}

/// `facts`: which facts to output.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Facts {
    /// `setup`'s `filter`: fact names or shell-style patterns, e.g.
    /// `["ansible_distribution*", "ansible_python_version"]`.
    pub filter: Vec<String>,
    /// `setup`'s `gather_subset`, e.g. `["!all", "!min", "distribution"]`
    /// (default: the module's).
    #[serde(default)]
    pub gather_subset: Vec<String>,
}

/// A string, or a list of strings.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum OneOrMany {
    /// One (may itself be comma-separated).
    One(String),
    /// Several.
    Many(Vec<String>),
}

/// The items of an optional [`OneOrMany`], comma-joined; `None` when there
/// are none.
fn joined(items: &Option<OneOrMany>) -> Option<String> {
    let items: Vec<&str> = match items {
        None => vec![],
        Some(OneOrMany::One(s)) => vec![s.as_str()],
        Some(OneOrMany::Many(v)) => v.iter().map(String::as_str).collect(),
    };
    let items: Vec<&str> = items
        .into_iter()
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect();
    (!items.is_empty()).then(|| items.join(","))
}

struct Ansible;

impl Stage for Ansible {
    type Config = Config;

    fn info() -> Info {
        Info::new("ansible", env!("CARGO_PKG_VERSION"))
            .description(
                "Runs an Ansible playbook against an inventory (optionally waiting for the hosts \
                 first and gathering facts after); outputs the per-host recap and facts.",
            )
            .exec(
                "ansible-playbook",
                "to run the playbook against the inventory",
            )
            .exec(
                "ansible",
                "for the ad-hoc `wait_for_connection` and `setup` (facts) runs",
            )
            .read("to read the playbook's directory (Ansible's working directory) and the inventory file")
    }

    fn run(ctx: Context<Config>) -> Result<Outcome, Error> {
        run(&ctx)
    }
}

capstan_plugin::export_stage!(Ansible);

/// What the run will do, from the config.
#[derive(Debug)]
struct Plan {
    /// Resolved inventory.
    inventory: inventory::Resolved,
    wait: Option<u64>,
    playbook: Option<PathBuf>,
    /// Arguments of `ansible-playbook`, without `-i INV` and the playbook.
    playbook_args: Vec<String>,
    /// Arguments of the `setup` ad-hoc run after `-m setup`.
    facts_args: Option<String>,
    /// Working directory of every command.
    cwd: PathBuf,
}

fn plan(c: &Config, work_dir: &Path, exists: impl Fn(&Path) -> bool) -> Result<Plan, Error> {
    let inventory = inventory::resolve(&c.inventory, exists)
        .map_err(|e| Error::config(format!("field `inventory`: {e}")))?;
    if let Some(p) = &c.playbook
        && !p.is_absolute()
    {
        return Err(Error::config(format!(
            "field `playbook`: `{}` is not an absolute path (use \"${{pipeline.dir}}/...\")",
            p.display()
        )));
    }
    let wait = c.wait_for_connection.as_ref().and_then(WaitFor::timeout);
    if wait == Some(0) {
        return Err(Error::config(
            "field `wait_for_connection.timeout`: must be at least 1 second",
        ));
    }
    let facts_args = match &c.facts {
        None => None,
        Some(f) => {
            let filter: Vec<&str> = f
                .filter
                .iter()
                .map(|s| s.trim())
                .filter(|s| !s.is_empty())
                .collect();
            if filter.is_empty() {
                return Err(Error::config(
                    "field `facts.filter`: name at least one fact or pattern, e.g. \"ansible_distribution*\"",
                ));
            }
            if let Some(bad) = filter
                .iter()
                .copied()
                .chain(f.gather_subset.iter().map(String::as_str))
                .find(|s| s.contains([',', ' ', '=', '\'', '"']))
            {
                return Err(Error::config(format!(
                    "field `facts`: `{bad}` may not contain commas, spaces, quotes or `=`"
                )));
            }
            let mut args = format!("filter={}", filter.join(","));
            if !f.gather_subset.is_empty() {
                args.push_str(&format!(" gather_subset={}", f.gather_subset.join(",")));
            }
            Some(args)
        }
    };
    if c.playbook.is_none() && wait.is_none() && facts_args.is_none() {
        return Err(Error::config(
            "nothing to do: set `playbook`, `wait_for_connection` or `facts`",
        ));
    }
    let mut args = Vec::new();
    if !c.extra_vars.is_empty() {
        args.push("-e".to_string());
        args.push(Value::Object(c.extra_vars.clone()).to_string());
    }
    if let Some(limit) = c.limit.as_deref().map(str::trim).filter(|l| !l.is_empty()) {
        args.push("--limit".into());
        args.push(limit.to_string());
    }
    if let Some(tags) = joined(&c.tags) {
        args.push("--tags".into());
        args.push(tags);
    }
    if let Some(tags) = joined(&c.skip_tags) {
        args.push("--skip-tags".into());
        args.push(tags);
    }
    if c.check {
        args.push("--check".into());
    }
    if c.diff {
        args.push("--diff".into());
    }
    let cwd = c
        .playbook
        .as_deref()
        .and_then(Path::parent)
        .map_or_else(|| work_dir.to_path_buf(), Path::to_path_buf);
    Ok(Plan {
        inventory,
        wait,
        playbook: c.playbook.clone(),
        playbook_args: args,
        facts_args,
        cwd,
    })
}

/// One command the stage ran, for the report.
struct Step {
    name: &'static str,
    exit: String,
    duration: Duration,
}

fn run(ctx: &Context<Config>) -> Result<Outcome, Error> {
    let started = Instant::now();
    let c = &ctx.config;
    let plan = plan(c, &ctx.work_dir, Path::exists)?;
    if let Some(p) = &plan.playbook
        && !p.is_file()
    {
        return Err(Error::config(format!(
            "field `playbook`: `{}` is not a readable file (does it exist, and is its directory in the stage's `read` grant?)",
            p.display()
        )));
    }
    let work = &ctx.work_dir;
    let inventory = match &plan.inventory {
        inventory::Resolved::Existing(path) => path.clone(),
        inventory::Resolved::Inline(text) => {
            let path = work.join("inventory.yml");
            write(&path, text)?;
            capstan_plugin::info!("wrote the inline inventory to {}", path.display());
            path
        }
    };
    let callbacks = work.join("callback_plugins");
    let results_dir = work.join("results");
    let ansible_home = work.join("ansible");
    let local_tmp = ansible_home.join("tmp");
    for dir in [&callbacks, &results_dir, &local_tmp] {
        std::fs::create_dir_all(dir)
            .map_err(|e| Error::failed(format!("cannot create `{}`: {e}", dir.display())))?;
    }
    write(&callbacks.join(format!("{CALLBACK_NAME}.py")), CALLBACK)?;

    let remote_tmp = match c.remote_tmp.as_deref().map(str::trim) {
        Some(t) if !t.is_empty() => t.to_string(),
        _ => ansible_home
            .join("remote_tmp")
            .to_string_lossy()
            .into_owned(),
    };
    let env = Env {
        callbacks,
        home: ansible_home.clone(),
        local_tmp,
        remote_tmp,
    };
    let limit_args: Vec<String> = match c.limit.as_deref().map(str::trim) {
        Some(l) if !l.is_empty() => vec!["--limit".into(), l.to_string()],
        _ => vec![],
    };
    let mut steps: Vec<Step> = Vec::new();

    // 1. wait_for_connection
    if let Some(timeout) = plan.wait {
        let results_file = results_dir.join("wait_for_connection.json");
        let exec = env
            .apply(Exec::new("ansible"), &results_file, true, false)
            .cwd(&plan.cwd)
            .args(["all", "-i"])
            .arg(&inventory)
            .args(&limit_args)
            .args(["-m", "wait_for_connection", "-a"])
            .arg(format!("timeout={timeout}"))
            // The module's own timeout, plus Ansible's start-up.
            .timeout(Duration::from_secs(timeout + 60));
        capstan_plugin::info!("waiting up to {timeout}s for every host to answer");
        let (out, results) = run_step(&exec, &results_file)?;
        steps.push(step("wait_for_connection", &out));
        if let Some(r) = &results
            && r.has_problems()
        {
            // The module reports a host it cannot reach as failed.
            return Err(Error::failed(format!(
                "hosts did not answer within {timeout}s (wait_for_connection):\n{}",
                r.problem_lines().join("\n")
            )));
        }
        check_exit("ansible (wait_for_connection)", &out, results.as_ref())?;
    }

    // 2. the playbook
    let mut recap: Option<Results> = None;
    if let Some(playbook) = &plan.playbook {
        let results_file = results_dir.join("playbook.json");
        let exec = env
            .apply(Exec::new("ansible-playbook"), &results_file, false, false)
            .cwd(&plan.cwd)
            .arg("-i")
            .arg(&inventory)
            .args(&plan.playbook_args)
            .arg(playbook);
        let (out, results) = run_step(&exec, &results_file)?;
        steps.push(step("ansible-playbook", &out));
        let results = match results {
            Some(r) => r,
            None => match recap::parse(&out.stdout_str()) {
                Some(hosts) if out.success() || !hosts.is_empty() => {
                    capstan_plugin::warn!(
                        "the capstan_results callback wrote nothing (does an ansible.cfg disable \
                         callback plugins?): using the PLAY RECAP text instead"
                    );
                    Results {
                        hosts,
                        ..Results::default()
                    }
                }
                _ => return Err(exit_error("ansible-playbook", &out)),
            },
        };
        if results.has_problems() {
            return Err(Error::failed(format!(
                "ansible-playbook failed on {} of {} hosts:\n{}",
                results.failed_hosts().len() + results.unreachable_hosts().len(),
                results.hosts.len(),
                results.problem_lines().join("\n")
            )));
        }
        check_exit("ansible-playbook", &out, Some(&results))?;
        if results.hosts.is_empty() {
            return Err(Error::failed(format!(
                "ansible-playbook matched no hosts (inventory `{}`{}): nothing was configured",
                inventory.display(),
                c.limit
                    .as_deref()
                    .map(|l| format!(", limit `{l}`"))
                    .unwrap_or_default()
            )));
        }
        recap = Some(results);
    }

    // 3. facts
    let mut facts: Option<BTreeMap<String, BTreeMap<String, Value>>> = None;
    if let Some(args) = &plan.facts_args {
        let results_file = results_dir.join("facts.json");
        let exec = env
            .apply(Exec::new("ansible"), &results_file, true, true)
            .cwd(&plan.cwd)
            .args(["all", "-i"])
            .arg(&inventory)
            .args(&limit_args)
            .args(["-m", "setup", "-a", args]);
        let (out, results) = run_step(&exec, &results_file)?;
        steps.push(step("facts", &out));
        let Some(results) = results else {
            return Err(exit_error("ansible (setup)", &out));
        };
        if results.has_problems() {
            return Err(Error::failed(format!(
                "gathering facts failed:\n{}",
                results.problem_lines().join("\n")
            )));
        }
        check_exit("ansible (setup)", &out, Some(&results))?;
        facts = Some(results.facts);
    }

    let total = started.elapsed();
    let tool: Duration = steps.iter().map(|s| s.duration).sum();
    let mut outcome = match &recap {
        Some(r) => {
            let t = r.totals();
            let summary = format!(
                "{} {} host{}: {} ok, {} changed, 0 failed{}",
                if c.check { "checked" } else { "configured" },
                r.hosts.len(),
                plural(r.hosts.len()),
                r.ok_hosts().len(),
                t.changed,
                facts
                    .as_ref()
                    .map(|f| format!("; facts from {} host{}", f.len(), plural(f.len())))
                    .unwrap_or_default()
            );
            Outcome::new(summary)
                .output("recap", &r.hosts)
                .output("hosts", r.hosts.keys().collect::<Vec<_>>())
                .output("ok", t.ok)
                .output("changed", t.changed)
                .output("failed_hosts", r.failed_hosts())
                .output("unreachable_hosts", r.unreachable_hosts())
        }
        None => {
            let hosts: Vec<&String> = facts.iter().flat_map(|f| f.keys()).collect();
            let summary = match &facts {
                Some(f) => format!("gathered facts from {} host{}", f.len(), plural(f.len())),
                None => "every host answered".to_string(),
            };
            Outcome::new(summary).output("hosts", hosts)
        }
    };
    if let Some(f) = &facts {
        outcome = outcome.output("facts", f);
    }
    outcome = outcome
        .output("inventory_file", inventory.to_string_lossy())
        .output("check", c.check);
    let report = json!({
        "steps": steps.iter().map(|s| json!({
            "step": s.name, "exit": s.exit, "duration_ms": s.duration.as_millis() as u64,
        })).collect::<Vec<_>>(),
        "tool_ms": tool.as_millis() as u64,
        "total_ms": total.as_millis() as u64,
        "failures": recap.as_ref().map(|r| &r.failures),
    });
    Ok(outcome.report(report))
}

/// The environment every Ansible child gets.
struct Env {
    callbacks: PathBuf,
    home: PathBuf,
    local_tmp: PathBuf,
    remote_tmp: String,
}

impl Env {
    fn apply(&self, exec: Exec, results: &Path, adhoc: bool, facts: bool) -> Exec {
        let mut exec = exec
            .env("ANSIBLE_HOME", &self.home)
            .env("ANSIBLE_LOCAL_TEMP", &self.local_tmp)
            .env("ANSIBLE_REMOTE_TEMP", &self.remote_tmp)
            .env("ANSIBLE_NOCOLOR", "1")
            .env("ANSIBLE_FORCE_COLOR", "0")
            .env("ANSIBLE_HOST_KEY_CHECKING", "False")
            .env("ANSIBLE_RETRY_FILES_ENABLED", "False")
            .env("ANSIBLE_CALLBACK_PLUGINS", &self.callbacks)
            .env("ANSIBLE_CALLBACKS_ENABLED", CALLBACK_NAME)
            .env("ANSIBLE_CAPSTAN_RESULTS", results)
            .capture();
        if adhoc {
            // Ad-hoc runs load enabled callbacks only when asked to.
            exec = exec.env("ANSIBLE_LOAD_CALLBACK_PLUGINS", "1");
        }
        if facts {
            exec = exec.env("ANSIBLE_CAPSTAN_FACTS", "1");
        }
        exec
    }
}

/// Run one command; its results document if the callback wrote one.
fn run_step(exec: &Exec, results_file: &Path) -> Result<(Output, Option<Results>), Error> {
    // A stale file must not pass for this run's results.
    let _ = std::fs::remove_file(results_file);
    let out = exec.run()?;
    let results = match std::fs::read_to_string(results_file) {
        Ok(text) => Some(Results::parse(&text).map_err(|e| {
            Error::failed(format!(
                "the capstan_results callback wrote an unreadable `{}`: {e}",
                results_file.display()
            ))
        })?),
        Err(_) => None,
    };
    Ok((out, results))
}

fn step(name: &'static str, out: &Output) -> Step {
    Step {
        name,
        exit: out.status.to_string(),
        duration: out.duration,
    }
}

/// A non-zero exit with no host to blame is Ansible's own error (syntax,
/// missing file, bad option): its error lines are the stage's error.
fn check_exit(what: &str, out: &Output, results: Option<&Results>) -> Result<(), Error> {
    if out.success() || results.is_some_and(Results::has_problems) {
        Ok(())
    } else {
        Err(exit_error(what, out))
    }
}

fn exit_error(what: &str, out: &Output) -> Error {
    let lines = error_lines(&out.stderr_str(), &out.stdout_str());
    if lines.is_empty() {
        Error::failed(format!(
            "{what} failed with {} (its output is in the stage log)",
            out.status
        ))
    } else {
        Error::failed(format!("{what} failed with {}:\n{lines}", out.status))
    }
}

/// Ansible's error lines: from the first `ERROR!` line of stderr on (its
/// messages span several lines), else the last lines of stderr, else of
/// stdout.
fn error_lines(stderr: &str, stdout: &str) -> String {
    const MAX: usize = 20;
    let pick = |text: &str| -> Vec<String> {
        let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
        let from = lines
            .iter()
            .position(|l| l.starts_with("ERROR!") || l.starts_with("ERROR:"))
            .unwrap_or(lines.len().saturating_sub(MAX));
        lines[from..]
            .iter()
            .take(MAX)
            .map(|l| l.trim_end().to_string())
            .collect()
    };
    let mut lines = pick(stderr);
    if lines.is_empty() {
        lines = pick(stdout);
    }
    lines.join("\n")
}

fn write(path: &Path, text: &str) -> Result<(), Error> {
    std::fs::write(path, text)
        .map_err(|e| Error::failed(format!("cannot write `{}`: {e}", path.display())))
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(json: &str) -> Config {
        serde_json::from_str(json).unwrap()
    }

    fn plan_of(json: &str) -> Result<Plan, Error> {
        plan(&config(json), Path::new("/w"), |p| {
            p == Path::new("/inv.yml")
        })
    }

    #[test]
    fn playbook_arguments() {
        let p = plan_of(
            r#"{"inventory": "/inv.yml", "playbook": "/p/site.yml",
                "extra_vars": {"a": 1, "b": "x y"}, "limit": "web", "tags": ["t1", "t2"],
                "skip_tags": "slow", "check": true, "diff": true}"#,
        )
        .unwrap();
        assert_eq!(
            p.playbook_args,
            [
                "-e",
                r#"{"a":1,"b":"x y"}"#,
                "--limit",
                "web",
                "--tags",
                "t1,t2",
                "--skip-tags",
                "slow",
                "--check",
                "--diff"
            ]
        );
        assert_eq!(p.cwd, PathBuf::from("/p"));
        assert_eq!(
            p.inventory,
            inventory::Resolved::Existing("/inv.yml".into())
        );
        assert_eq!(p.wait, None);
        let p = plan_of(r#"{"inventory": "/inv.yml", "playbook": "/p/site.yml"}"#).unwrap();
        assert!(p.playbook_args.is_empty());
    }

    #[test]
    fn wait_and_facts() {
        let p = plan_of(
            r#"{"inventory": "all:\n  hosts: {a: {}}", "wait_for_connection": true,
                "facts": {"filter": ["ansible_distribution*", "ansible_python_version"]}}"#,
        )
        .unwrap();
        assert_eq!(p.wait, Some(60));
        assert_eq!(
            p.facts_args.as_deref(),
            Some("filter=ansible_distribution*,ansible_python_version")
        );
        assert_eq!(p.cwd, PathBuf::from("/w"));
        assert!(matches!(p.inventory, inventory::Resolved::Inline(_)));
        let p = plan_of(
            r#"{"inventory": "/inv.yml", "wait_for_connection": {"timeout": 5},
                "facts": {"filter": ["a"], "gather_subset": ["!all", "!min", "distribution"]}}"#,
        )
        .unwrap();
        assert_eq!(p.wait, Some(5));
        assert_eq!(
            p.facts_args.as_deref(),
            Some("filter=a gather_subset=!all,!min,distribution")
        );
    }

    #[test]
    fn bad_configs_name_the_field() {
        let err = |json: &str| match plan_of(json) {
            Err(Error::InvalidConfig(m)) => m,
            other => panic!("{other:?}"),
        };
        assert!(
            err(r#"{"inventory": "/missing.yml", "playbook": "/p.yml"}"#)
                .starts_with("field `inventory`: `/missing.yml` does not exist")
        );
        assert!(
            err(r#"{"inventory": "/inv.yml", "playbook": "p.yml"}"#)
                .starts_with("field `playbook`")
        );
        assert!(err(r#"{"inventory": "/inv.yml"}"#).starts_with("nothing to do"));
        assert!(
            err(r#"{"inventory": "/inv.yml", "wait_for_connection": false}"#)
                .starts_with("nothing to do")
        );
        assert!(
            err(r#"{"inventory": "/inv.yml", "wait_for_connection": {"timeout": 0}}"#)
                .starts_with("field `wait_for_connection.timeout`")
        );
        assert!(
            err(r#"{"inventory": "/inv.yml", "facts": {"filter": []}}"#)
                .starts_with("field `facts.filter`")
        );
        assert!(
            err(r#"{"inventory": "/inv.yml", "facts": {"filter": ["a,b"]}}"#)
                .starts_with("field `facts`")
        );
        let e = serde_json::from_str::<Config>(r#"{"inventory": "/i", "playbok": "/p"}"#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown field `playbok`"), "{e}");
    }

    #[test]
    fn schema() {
        let schema = serde_json::to_value(schemars::schema_for!(Config)).unwrap();
        assert_eq!(schema["additionalProperties"], false);
        assert_eq!(schema["required"], json!(["inventory"]));
        assert!(
            schema["properties"]["check"]["description"]
                .as_str()
                .unwrap()
                .starts_with("Check mode")
        );
    }

    #[test]
    fn ansible_error_lines() {
        let stderr = "[WARNING]: something\nERROR! the playbook: nope.yml could not be found\n";
        assert_eq!(
            error_lines(stderr, ""),
            "ERROR! the playbook: nope.yml could not be found"
        );
        let stderr = "ERROR! We were unable to read either as JSON nor YAML:\n\nThe error appears to be in '/p/x.yml': line 2\n";
        assert_eq!(
            error_lines(stderr, "PLAY [x]"),
            "ERROR! We were unable to read either as JSON nor YAML:\nThe error appears to be in '/p/x.yml': line 2"
        );
        assert_eq!(error_lines("", "a\nb\n"), "a\nb");
        // Real: what ansible-core says when asked for a `json` stdout callback it lacks.
        let real = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../examples/golden-image/ansible/testdata/stdout-callback-json-error.txt"
        ))
        .unwrap();
        assert_eq!(
            error_lines(&real, ""),
            "ERROR! Invalid callback for stdout specified: json"
        );
        assert_eq!(error_lines("", ""), "");
    }

    #[test]
    fn the_callback_is_the_one_the_results_parser_reads() {
        assert!(CALLBACK.contains("CALLBACK_NAME = 'capstan_results'"));
        assert!(CALLBACK.contains("ANSIBLE_CAPSTAN_RESULTS"));
        assert!(CALLBACK.contains("ANSIBLE_CAPSTAN_FACTS"));
        for key in [
            "'ok'",
            "'changed'",
            "'failed'",
            "'unreachable'",
            "'skipped'",
            "'rescued'",
            "'ignored'",
        ] {
            assert!(CALLBACK.contains(key), "{key}");
        }
    }
}
