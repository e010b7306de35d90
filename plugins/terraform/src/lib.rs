//! `terraform`: the Capstan stage plugin that plans, applies exactly the
//! approved plan, reads outputs and plans rollbacks, by driving the real
//! `terraform` CLI through the host's `process` interface.
//!
//! Actions (`with.action`):
//!
//! - `plan`: `terraform init`, `plan -out=<work dir>/tfplan`, `show -json`
//!   and `show -no-color` (the plan as Terraform renders it for people,
//!   sensitive values masked). Outputs `plan_file`, `plan_digest` (sha256
//!   hex of the plan file), `summary` (counts per action and of output
//!   changes), `summary_text` (the same in one line), `changes` (one line
//!   per changing resource: `+ aws_instance.web[0]`, `-/+ …`, `~ …`),
//!   `output_changes`, `has_changes`, `format_version`,
//!   `terraform_version`, `plan_text` (Terraform's rendering, cut at a line
//!   after 128 KiB with a note saying so) and `plan_text_file`
//!   (`<work dir>/plan.txt`, the whole rendering). Fails when the plan
//!   breaks the policy (`max_destroy`, `forbid_replace`,
//!   `require_changes`), naming the resources.
//! - `destroy-plan`: the same with `plan -destroy`, for rollback.
//! - `apply`: hashes `plan_file` itself and refuses unless its sha256 is
//!   `approved_digest`; applies a copy of exactly those bytes (kept in its
//!   own work dir, so the file cannot change between the check and the
//!   apply) with `terraform apply -input=false -lock-timeout=<lock_timeout>
//!   <plan>` (default `120s`: it waits for whoever holds the state lock);
//!   then `output -json`. Outputs every Terraform output under its own name
//!   (sensitive ones as `"<sensitive>"`), `outputs` (all of them),
//!   `applied_digest`, `applied_by_earlier_attempt`, and
//!   `ansible_inventory_file` when the configuration has the
//!   `inventory_output` (default `ansible_inventory`; its value is written
//!   to `<work dir>/inventory.yml`).
//!
//!   An apply runs at most once, even when a resumed run repeats the stage
//!   (same work dir, same `with`) after the host died (`src/attempt.rs`). Before
//!   `terraform apply` starts, the stage writes and fsyncs
//!   `<work dir>/apply-attempt.json` (the plan's digest, the `state` file's
//!   lineage and serial, the start time; how the apply ended is added
//!   when it returns). A later attempt of the same plan first waits (up to
//!   `lock_timeout`) for the state lock an orphaned `terraform apply` of
//!   the earlier attempt may still hold, then reads the state again: when
//!   its serial advanced past the marker's in the same lineage, or a state
//!   appeared where there was none, the earlier attempt applied the plan,
//!   and the stage only reads the outputs, with `applied_by_earlier_attempt
//!   = true` (false otherwise). When the earlier apply is known to have
//!   failed after changing the state, the stage fails asking for a new
//!   plan. Otherwise it applies; should Terraform then find the plan stale
//!   (`Error: Saved plan is stale`) because the earlier attempt's apply
//!   finished meanwhile, that also counts as applied by the earlier
//!   attempt. A plan that changes nothing leaves the serial as it is and is
//!   simply applied again, which changes nothing.
//! - `output`: `init`, `output -json`; the same outputs as `apply` without
//!   `applied_digest`.
//!
//! Terraform runs in `dir` with a clean environment plus
//! `TF_IN_AUTOMATION=1`, `TF_INPUT=0` and `TF_DATA_DIR=<work dir>/.terraform`
//! (so the configuration directory stays read-only), `init
//! -lockfile=readonly` by default, and `-backend-config=path=<state>` for a
//! `backend "local" {}` block. Plan JSON format 0.x (Terraform 1.0) and 1.x
//! (Terraform ≥ 1.1, OpenTofu) are both read. Errors carry Terraform's own
//! `Error:` blocks.
//!
//! A plan and an apply stage:
//!
//! ```toml
//! [plugins.terraform]
//! path = "../../target/wasm32-wasip2/release/capstan_terraform.wasm"
//!
//! [stages.plan]
//! plugin = "terraform"
//! with = { action = "plan", dir = "${pipeline.dir}/infrastructure", state = "${pipeline.dir}/.state/terraform.tfstate", vars = { environment = "${run.environment}" }, max_destroy = 0 }
//!
//! [[stages.plan.grants.exec]]
//! program = "terraform"
//! args = ["init|plan|show|apply|output|version", "**"]
//! env = ["TF_IN_AUTOMATION", "TF_INPUT", "TF_DATA_DIR", "TF_VAR_*", "TF_LOG"]
//!
//! [stages.plan.grants]
//! read = ["infrastructure"]
//! write = [".state"]
//!
//! [stages.apply]
//! plugin = "terraform"
//! needs = ["plan"]
//! with = { action = "apply", dir = "${pipeline.dir}/infrastructure", state = "${pipeline.dir}/.state/terraform.tfstate", plan_file = "${stages.plan.outputs.plan_file}", approved_digest = "${stages.plan.outputs.plan_digest}" }
//! # … the same grants as `plan`.
//! ```
//!
//! Build: `cargo build --release --target wasm32-wasip2 -p capstan-terraform`.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use attempt::{Applied, Decision, Finished, Marker, State};
use capstan_plugin::utc::Utc;
use capstan_plugin::{Context, Error, Exec, Info, Outcome, Output, Stage};
use serde_json::{Value, json};

mod attempt;
mod cli;
mod config;
mod digest;
mod outputs;
mod plan;
mod plan_text;
#[cfg(test)]
mod samples;

use config::{Action, Config};

/// The plugin.
struct Terraform;

impl Stage for Terraform {
    type Config = Config;

    fn info() -> Info {
        Info::new("terraform", env!("CARGO_PKG_VERSION"))
            .description(
                "Plans Terraform changes against a policy, applies exactly the approved saved \
                 plan, reads outputs (and an Ansible inventory), and plans rollbacks.",
            )
            .exec(
                "terraform",
                "to run `terraform init`, `plan -out`, `show -json` and `show -no-color` (the \
                 plan for reviewers), `apply <saved plan>` and `output -json` in the \
                 configuration directory",
            )
            .read(
                "to run Terraform in the configuration directory `dir` (a command's working \
                 directory must be granted)",
            )
            .write(
                "for the directory of the state file `state`, which Terraform creates, locks \
                 and writes",
            )
    }

    fn run(ctx: Context<Config>) -> Result<Outcome, Error> {
        let started = Instant::now();
        let config = &ctx.config;
        config.validate()?;
        check_dirs(&ctx)?;
        let mut tf = Runner::new(&config.dir, &ctx.work_dir);
        let result = match config.action {
            Action::Plan | Action::DestroyPlan => plan(&ctx, &mut tf),
            Action::Apply => apply(&ctx, &mut tf),
            Action::Output => output(&ctx, &mut tf),
        };
        let total = started.elapsed();
        capstan_plugin::info!(
            "terraform {}: {} ms in terraform ({} commands), {} ms in total",
            config.action.name(),
            tf.spent.as_millis(),
            tf.calls.len(),
            total.as_millis()
        );
        Ok(result?.report(json!({
            "action": config.action.name(),
            "details": tf.details,
            "timings": {
                "terraform_ms": tf.spent.as_millis() as u64,
                "total_ms": total.as_millis() as u64,
                "commands": tf.calls,
            },
        })))
    }
}

capstan_plugin::export_stage!(Terraform);

/// Runs `terraform` subcommands in the configuration directory, timing
/// them and turning failures into stage errors with Terraform's own lines.
struct Runner {
    dir: PathBuf,
    data_dir: PathBuf,
    spent: Duration,
    calls: Vec<Value>,
    /// The action's structured report (plan summary, applied digest…).
    details: Value,
}

impl Runner {
    fn new(dir: &Path, work_dir: &Path) -> Self {
        Runner {
            dir: dir.to_path_buf(),
            data_dir: work_dir.join(".terraform"),
            spent: Duration::ZERO,
            calls: Vec::new(),
            details: Value::Null,
        }
    }

    /// Run a subcommand; an unsuccessful exit is an error with Terraform's
    /// own lines.
    fn run(&mut self, args: Vec<String>) -> Result<Output, Error> {
        let subcommand = args.first().cloned().unwrap_or_default();
        let out = self.exec(args)?;
        if !out.success() {
            return Err(Error::failed(failure(&subcommand, &out)));
        }
        Ok(out)
    }

    /// Run a subcommand and return how it ended, whatever it was.
    fn exec(&mut self, args: Vec<String>) -> Result<Output, Error> {
        let subcommand = args.first().cloned().unwrap_or_default();
        let mut exec = Exec::new("terraform");
        // JSON from `show` and `output` holds sensitive values in clear:
        // keep it out of the stage log (Terraform's own text output masks
        // them). `show` as text repeats what `plan` has just logged.
        if args.iter().any(|a| a == "-json") || subcommand == "show" {
            exec = exec.unlogged();
        }
        let out = exec
            .args(&args)
            .cwd(&self.dir)
            .env("TF_IN_AUTOMATION", "1")
            .env("TF_INPUT", "0")
            .env("TF_DATA_DIR", &self.data_dir)
            .capture()
            .run()
            .map_err(|e| Error::from(e).context(format!("terraform {subcommand}")))?;
        self.spent += out.duration;
        self.calls.push(json!({
            "command": subcommand,
            "ms": out.duration.as_millis() as u64,
            "status": out.status.to_string(),
        }));
        Ok(out)
    }
}

/// The stage error's text for a Terraform command that exited
/// unsuccessfully.
fn failure(subcommand: &str, out: &Output) -> String {
    cli::failure_message(
        subcommand,
        &out.status.to_string(),
        &out.stderr_str(),
        &out.stdout_str(),
    )
}

/// Fail early, naming the grant to add, when the stage cannot reach the
/// configuration directory or the state file's directory.
fn check_dirs(ctx: &Context<Config>) -> Result<(), Error> {
    let config = &ctx.config;
    let stage = &ctx.stage;
    match std::fs::metadata(&config.dir) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => {
            return Err(Error::config(format!(
                "field `dir`: {} is not a directory",
                config.dir.display()
            )));
        }
        Err(e) => {
            return Err(Error::not_permitted(format!(
                "field `dir`: cannot read {}: {e}. Grant it to the stage: \
                 [stages.{stage}.grants] read = [\"{}\"]",
                config.dir.display(),
                config.dir.display()
            )));
        }
    }
    if config.action != Action::Output
        && let Some(parent) = config.state.as_deref().and_then(Path::parent)
    {
        std::fs::create_dir_all(parent).map_err(|e| {
            Error::not_permitted(format!(
                "field `state`: cannot reach {}: {e}. Grant the state directory to the stage: \
                 [stages.{stage}.grants] write = [\"{}\"]",
                parent.display(),
                parent.display()
            ))
        })?;
    }
    Ok(())
}

/// `plan` and `destroy-plan`.
fn plan(ctx: &Context<Config>, tf: &mut Runner) -> Result<Outcome, Error> {
    let config = &ctx.config;
    let plan_file = ctx.work_dir.join("tfplan");
    tf.run(config.init_args())?;
    tf.run(config.plan_args(&plan_file))?;
    let show = tf.run(config::show_args(&plan_file))?;
    if show.truncated {
        return Err(Error::failed(
            "`terraform show -json` printed more than the host returns to a plugin: the plan \
             is too large to summarise",
        ));
    }
    let plan = plan::parse(&show.stdout_str()).map_err(Error::failed)?;
    // Before anything this stage prints or returns can hold them.
    for value in &plan.sensitive {
        capstan_plugin::log::sensitive(value);
    }
    let bytes = std::fs::read(&plan_file)
        .map_err(|e| Error::failed(format!("{}: {e}", plan_file.display())))?;
    let digest = digest::sha256_hex(&bytes);

    let label = match config.action {
        Action::DestroyPlan => "destroy plan",
        _ => "plan",
    };
    let summary = format!(
        "{}. Terraform {} (plan format {}), plan sha256 {}.",
        plan.summary_text(label),
        plan.terraform_version,
        plan.format_version,
        short_digest(&digest)
    );
    let plan_text_file = ctx.work_dir.join("plan.txt");
    let plan_text = render(tf, &plan_file, &plan_text_file)?;
    let report = plan.report();
    let summary_file = ctx.work_dir.join("plan-summary.json");
    let pretty = serde_json::to_string_pretty(&report).map_err(Error::from)?;
    std::fs::write(&summary_file, pretty + "\n")
        .map_err(|e| Error::failed(format!("{}: {e}", summary_file.display())))?;
    tf.details = json!({ "plan": report, "plan_digest": digest });

    let violations = plan.violations(&plan::Policy {
        max_destroy: config.max_destroy,
        forbid_replace: config.forbid_replace,
        require_changes: config.require_changes,
    });
    if !violations.is_empty() {
        return Err(Error::failed(format!(
            "{}\n{summary}\nChanges:\n{}\nThe plan as Terraform renders it: {}",
            violations.join("\n"),
            lines_or_none(&plan.change_lines()),
            plan_text_file.display()
        )));
    }
    for line in plan.change_lines() {
        capstan_plugin::info!("{line}");
    }

    Ok(Outcome::new(summary)
        .output("plan_file", &plan_file)
        .output("plan_digest", &digest)
        .output("summary", &plan.counts)
        .output("summary_text", plan.summary_text(label))
        .output("changes", plan.change_lines())
        .output("output_changes", plan.output_changes())
        .output("has_changes", plan.has_changes())
        .output("format_version", &plan.format_version)
        .output("terraform_version", &plan.terraform_version)
        .output("plan_text", plan_text)
        .output("plan_text_file", &plan_text_file)
        .artifact(plan_file)
        .artifact(summary_file)
        .artifact(plan_text_file))
}

/// Terraform's own rendering of the saved plan (`show -no-color`), written
/// whole to `file`; returned cut to [`plan_text::MAX_BYTES`], saying so.
fn render(tf: &mut Runner, plan_file: &Path, file: &Path) -> Result<String, Error> {
    let shown = tf.run(config::show_text_args(plan_file))?;
    let text = plan_text::tidy(&shown.stdout_str(), shown.truncated);
    std::fs::write(file, format!("{text}\n"))
        .map_err(|e| Error::failed(format!("{}: {e}", file.display())))?;
    let display = file.display().to_string();
    Ok(plan_text::cut(&text, plan_text::MAX_BYTES, &display).unwrap_or(text))
}

/// The first 12 hex digits, for summaries (outputs carry the whole digest).
fn short_digest(digest: &str) -> String {
    format!("{}…", &digest[..12.min(digest.len())])
}

fn lines_or_none(lines: &[String]) -> String {
    if lines.is_empty() {
        "  (no resource changes)".to_string()
    } else {
        lines
            .iter()
            .map(|l| format!("  {l}"))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// `apply`: only the approved bytes, at most once (see [`attempt`]), then
/// the outputs.
fn apply(ctx: &Context<Config>, tf: &mut Runner) -> Result<Outcome, Error> {
    let config = &ctx.config;
    // `validate` checked both are set.
    let (Some(plan_file), Some(approved)) = (&config.plan_file, &config.approved_digest) else {
        return Err(Error::config(
            "apply needs `plan_file` and `approved_digest`",
        ));
    };
    let bytes = std::fs::read(plan_file).map_err(|e| {
        Error::failed(format!(
            "field `plan_file`: cannot read {}: {e} (the apply stage must `needs` the stage \
             that wrote it)",
            plan_file.display()
        ))
    })?;
    let digest = digest::verify(&plan_file.display().to_string(), &bytes, approved)
        .map_err(Error::failed)?;
    capstan_plugin::info!(
        "plan file {} has the approved sha256 {digest}",
        plan_file.display()
    );
    // Apply our own copy of the bytes just checked: the upstream file could
    // still change between the check and Terraform reading it.
    let approved_plan = ctx.work_dir.join("tfplan");
    std::fs::write(&approved_plan, &bytes)
        .map_err(|e| Error::failed(format!("{}: {e}", approved_plan.display())))?;

    let (lock_timeout, lock_wait) = config.lock_timeout()?;
    let state_file = config.state.as_deref();
    let marker_file = ctx.work_dir.join(attempt::MARKER_FILE);
    // An earlier attempt of this stage in this run, when the host died
    // during it (a resumed run repeats the stage in the same work dir).
    let earlier = attempt::read_marker(&marker_file).map_err(Error::failed)?;
    let done = Applying {
        ctx,
        plan_file,
        approved_plan: &approved_plan,
        marker_file: &marker_file,
        digest: &digest,
        earlier: earlier.as_ref(),
    };

    tf.run(config.init_args())?;

    // If the host died during the earlier attempt's `terraform apply`, that
    // Terraform outlived it and may still be applying (and writing the
    // state: the serial advances several times during one apply). Whoever
    // holds the state lock, wait until it is released before reading the
    // state and the outputs.
    if let (Some(m), Some(state)) = (&earlier, state_file)
        && m.plan_digest == digest
    {
        wait_for_lock(state, m, lock_timeout, lock_wait)?;
    }
    let before = read_state(state_file);
    let why = match attempt::decide(earlier.as_ref(), &digest, state_file, &before) {
        Decision::AppliedEarlier(applied) => return done.by_earlier_attempt(tf, &applied),
        Decision::FailedAfterChanges(applied) => {
            return Err(Error::failed(failed_after_changes(&applied)));
        }
        Decision::Apply(why) => why,
    };
    if let Some(line) = why.explain(earlier.as_ref()) {
        capstan_plugin::info!("{line}");
    }

    // Record the attempt durably before Terraform can change anything.
    let mut marker = Marker::new(&digest, state_file, &before, Utc::now().rfc3339());
    attempt::write_marker(&marker_file, &marker).map_err(|e| {
        Error::failed(format!(
            "cannot record the apply attempt in {} (so not applying): {e}",
            marker_file.display()
        ))
    })?;
    let result = tf.exec(config::apply_args(&approved_plan, lock_timeout));
    marker.finished = Some(Finished {
        at: Utc::now().rfc3339(),
        status: match &result {
            Ok(out) => out.status.to_string(),
            Err(e) => e.to_string(),
        },
        success: result.as_ref().is_ok_and(Output::success),
    });
    if let Err(e) = attempt::write_marker(&marker_file, &marker) {
        capstan_plugin::warn!(
            "cannot record how `terraform apply` ended in {}: {e}",
            marker_file.display()
        );
    }
    let applied = result?;

    if !applied.success() {
        let message = failure("apply", &applied);
        let stale = attempt::is_stale_plan(&applied.stderr_str())
            || attempt::is_stale_plan(&applied.stdout_str());
        // Stale because the earlier attempt's Terraform finished applying
        // this plan meanwhile (we waited for its lock)?
        if stale && let Some(m) = &earlier {
            let now = read_state(state_file);
            match attempt::decide(Some(m), &digest, state_file, &now) {
                Decision::AppliedEarlier(applied) => {
                    // This attempt changed nothing: keep the marker of the
                    // one that applied the plan, for a later attempt.
                    if let Err(e) = attempt::write_marker(&marker_file, m) {
                        capstan_plugin::warn!("cannot restore {}: {e}", marker_file.display());
                    }
                    return done.by_earlier_attempt(tf, &applied);
                }
                Decision::FailedAfterChanges(applied) => {
                    return Err(Error::failed(format!(
                        "{message}\n{}",
                        failed_after_changes(&applied)
                    )));
                }
                Decision::Apply(_) => {}
            }
        }
        return Err(Error::failed(message));
    }

    let result = cli::apply_result(&applied.stdout_str());
    tf.details = json!({
        "plan_file": plan_file,
        "applied_plan": approved_plan,
        "approved_digest": approved,
        "applied_digest": digest,
        "resources": result,
        "applied_by_earlier_attempt": false,
        "attempt": marker,
        "earlier_attempt": earlier,
    });
    let head = format!(
        "applied plan sha256 {} (the approved digest): {}; outputs",
        short_digest(&digest),
        result.as_deref().unwrap_or("applied")
    );
    done.outcome(read_outputs(ctx, tf, head)?, false)
}

/// What the end of `apply` needs, on either path.
struct Applying<'a> {
    ctx: &'a Context<Config>,
    plan_file: &'a Path,
    approved_plan: &'a Path,
    marker_file: &'a Path,
    digest: &'a str,
    earlier: Option<&'a Marker>,
}

impl Applying<'_> {
    /// The earlier attempt applied the plan: say so, and read the outputs.
    fn by_earlier_attempt(&self, tf: &mut Runner, applied: &Applied) -> Result<Outcome, Error> {
        capstan_plugin::info!(
            "plan sha256 {} was applied by an earlier attempt of this stage (started {}): the \
             state went from {}; not applying it again",
            self.digest,
            applied.started,
            applied.serials()
        );
        if applied.finished.is_none() {
            capstan_plugin::warn!(
                "the host stopped during that attempt's `terraform apply`, which finished on \
                 its own: its exit status is unknown. It released the state lock and the state \
                 advanced, so the plan counts as applied; if that apply failed partway, the \
                 next plan shows what is missing"
            );
        }
        tf.details = json!({
            "plan_file": self.plan_file,
            "applied_plan": self.approved_plan,
            "approved_digest": self.ctx.config.approved_digest,
            "applied_digest": self.digest,
            "applied_by_earlier_attempt": true,
            "serial_before": applied.serial_before,
            "serial_now": applied.serial_now,
            "earlier_attempt": self.earlier,
        });
        let head = format!(
            "plan sha256 {} (the approved digest) was applied by an earlier attempt of this \
             stage (started {}; the state went from {}), not applied again; outputs",
            short_digest(self.digest),
            applied.started,
            applied.serials()
        );
        let outputs = read_outputs(self.ctx, tf, head)?;
        self.outcome(outputs, true)
    }

    /// The outputs every apply adds.
    fn outcome(&self, outputs: Outcome, by_earlier_attempt: bool) -> Result<Outcome, Error> {
        Ok(outputs
            .output("applied_digest", self.digest)
            .output("applied_by_earlier_attempt", by_earlier_attempt)
            .artifact(self.approved_plan)
            .artifact(self.marker_file))
    }
}

/// The stage error when an earlier attempt's apply of the plan failed after
/// changing the state.
fn failed_after_changes(applied: &Applied) -> String {
    let status = applied
        .finished
        .as_ref()
        .map_or("unknown status", |f| f.status.as_str());
    format!(
        "An earlier attempt of this stage (started {}) applied this plan and `terraform apply` \
         failed ({status}) after changing the state ({}). The plan is stale and is not applied \
         again: plan again (the new plan shows what is missing) and get it approved",
        applied.started,
        applied.serials()
    )
}

/// The state before or after an apply; `Unknown` (with a warning) when it
/// cannot be read.
fn read_state(state_file: Option<&Path>) -> State {
    let Some(path) = state_file else {
        return State::Unknown;
    };
    State::read(path).unwrap_or_else(|e| {
        capstan_plugin::warn!("cannot tell the state's serial: {e}");
        State::Unknown
    })
}

/// Wait (up to `lock_timeout`) for the state lock, which the earlier
/// attempt's orphaned `terraform apply` may still hold.
fn wait_for_lock(
    state: &Path,
    earlier: &Marker,
    lock_timeout: &str,
    wait: Duration,
) -> Result<(), Error> {
    let Some(info) = attempt::lock_info(state) else {
        return Ok(());
    };
    let orphan = earlier.finished.is_none();
    let holder = if orphan {
        format!(
            "an earlier attempt of this stage started applying this plan at {} and the host \
             stopped during it",
            earlier.started
        )
    } else {
        "another Terraform is using it".to_string()
    };
    capstan_plugin::info!(
        "the state {} is locked ({}); {holder}: waiting up to {lock_timeout} for the lock \
         before reading the state",
        state.display(),
        attempt::describe_lock(&info),
    );
    let Some(info) = attempt::wait_unlocked(state, wait, Duration::from_secs(1)) else {
        capstan_plugin::info!("the state lock was released");
        return Ok(());
    };
    let info_file = attempt::lock_info_path(state).unwrap_or_default();
    let mut message = format!(
        "the state {} is still locked after {lock_timeout} ({}).",
        state.display(),
        attempt::describe_lock(&info)
    );
    if orphan {
        message.push_str(&format!(
            " An earlier attempt of this stage started `terraform apply` of this plan at {} \
             and the host stopped during it: that Terraform may still be running; run the \
             stage again once it has finished (or raise `lock_timeout`). If no Terraform is \
             running any more, it was killed during the apply without unlocking the state, \
             and the plan may be partly applied: check the state, remove {}, and plan again",
            earlier.started,
            info_file.display()
        ));
    } else {
        message.push_str(&format!(
            " Run the stage again once that Terraform has finished (or raise `lock_timeout`); \
             if no Terraform is running, remove {}",
            info_file.display()
        ));
    }
    Err(Error::failed(message))
}

/// `output`: Terraform's outputs, changing nothing.
fn output(ctx: &Context<Config>, tf: &mut Runner) -> Result<Outcome, Error> {
    tf.run(ctx.config.init_args())?;
    read_outputs(ctx, tf, "Terraform outputs".to_string())
}

/// `output -json` as stage outputs (and the inventory file); the summary
/// starts with `head`.
fn read_outputs(ctx: &Context<Config>, tf: &mut Runner, head: String) -> Result<Outcome, Error> {
    let config = &ctx.config;
    let out = tf.run(config::output_args())?;
    if out.truncated {
        return Err(Error::failed(
            "`terraform output -json` printed more than the host returns to a plugin",
        ));
    }
    let outputs = outputs::parse(&out.stdout_str()).map_err(Error::failed)?;
    // Before anything this stage prints or returns can hold them (its
    // outputs mask them already; a program may still print them).
    for value in outputs.sensitive_values() {
        capstan_plugin::log::sensitive(&value);
    }
    let masked = outputs.masked();

    let mut summary = format!("{head}: {}", outputs.summary_text());
    let mut keys: Vec<(String, Value)> = Vec::new();
    for (name, value) in &masked {
        if outputs::RESERVED.contains(&name.as_str()) {
            capstan_plugin::warn!(
                "Terraform output `{name}` has the name of an output this stage sets itself; \
                 it is only in `outputs.{name}`"
            );
            continue;
        }
        keys.push((name.clone(), value.clone()));
    }
    keys.push(("outputs".into(), Value::Object(masked)));

    let mut artifacts = Vec::new();
    let (name, required) = config.inventory_output();
    if let Some(text) = outputs.inventory(name, required).map_err(Error::failed)? {
        let file = ctx.work_dir.join("inventory.yml");
        std::fs::write(&file, text)
            .map_err(|e| Error::failed(format!("{}: {e}", file.display())))?;
        summary.push_str(&format!(
            "; inventory (output `{name}`) written to {}",
            file.display()
        ));
        keys.push(("ansible_inventory_file".into(), json!(file)));
        artifacts.push(file);
    }
    summary.push('.');

    let mut outcome = Outcome::new(summary);
    for (key, value) in keys {
        outcome = outcome.output(key, value);
    }
    for file in artifacts {
        outcome = outcome.artifact(file);
    }
    Ok(outcome)
}

#[cfg(test)]
mod tests {
    use super::*;
    use capstan_plugin::Capability;

    /// What the pipeline must grant: exactly these, each with a reason.
    #[test]
    fn requests_exec_read_and_write() {
        let info = Terraform::info();
        assert_eq!(info.name(), "terraform");
        let caps: Vec<&Capability> = info.requests().iter().map(|(c, _)| c).collect();
        assert_eq!(
            caps,
            [
                &Capability::Exec("terraform".into()),
                &Capability::Read,
                &Capability::Write
            ]
        );
        assert!(info.requests().iter().all(|(_, reason)| !reason.is_empty()));
        let described = capstan_plugin::__private::describe::<Terraform>();
        let schema: Value = serde_json::from_str(&described.config_schema.unwrap()).unwrap();
        assert_eq!(
            schema["properties"]["action"]["description"]
                .as_str()
                .map(|d| d.starts_with("What to do")),
            Some(true)
        );
    }

    #[test]
    fn short_digests_and_change_lists() {
        assert_eq!(
            short_digest("938499a7f60d132499a5de8c3b655f422a64b972a7a2f1a4d621c22cca1a67d8"),
            "938499a7f60d…"
        );
        assert_eq!(lines_or_none(&[]), "  (no resource changes)");
        assert_eq!(
            lines_or_none(&["+ a.b".into(), "- c.d".into()]),
            "  + a.b\n  - c.d"
        );
    }
}
