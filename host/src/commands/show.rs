//! `capstan show`: one run in full — stages (every attempt), outputs,
//! approvals, digests.

use std::io::Write as _;

use comfy_table::{Table, presets::UTF8_BORDERS_ONLY};
use serde_json::json;

use super::drive::one_line;
use super::runs::{kind, took};
use crate::caps::approval::review;
use crate::exit::{self, Failure};
use crate::store::{PendingApproval, latest_attempts};
use crate::text::inline;

/// Show one run: its stages and their attempts, outputs, approvals (with
/// what the reviewers saw: subject, digest, checklist, the plan) and the
/// digests of what ran (pipeline file, plugins, approved plans).
#[derive(Debug, clap::Args)]
#[command(after_help = "\
Examples:
  capstan show 20261126-101500-7f3a
  capstan show 20261126-1015        # a unique prefix is enough
  capstan show 20261126-101500-7f3a --plan   # the whole plan of each approval
  capstan show 20261126-101500-7f3a --json")]
pub struct Args {
    /// The run id (or a unique prefix of it).
    pub run: String,
    /// Print everything as JSON on stdout.
    #[arg(long)]
    pub json: bool,
    /// Print each approval request's details (e.g. the plan) whole, paged
    /// when longer than the terminal, instead of their first 40 lines.
    #[arg(long, visible_alias = "full")]
    pub plan: bool,
}

pub fn exec(args: &Args, cli: &super::Cli) -> Result<u8, Failure> {
    let store = cli.store()?;
    let run = store.run(&args.run).map_err(super::store_failure)?;
    let stages = store.stages(&run.id).map_err(super::store_failure)?;
    let approvals = store.approvals(&run.id).map_err(super::store_failure)?;
    let pending = store
        .pending_approval(&run.id)
        .map_err(super::store_failure)?;
    let requests = store
        .approval_requests(&run.id)
        .map_err(super::store_failure)?;
    if args.json {
        let doc = json!({
            "run": run,
            "stages": latest_attempts(stages.clone()),
            "attempts": stages,
            "approvals": approvals,
            "approval_requests": requests,
            "pending_approval": pending,
        });
        println!("{}", serde_json::to_string_pretty(&doc).expect("JSON"));
        return Ok(exit::OK);
    }
    // Below, what a plugin supplied (summaries, reasons, outputs, approval
    // subjects, digests, names) is shown escaped; `--json` keeps it raw.
    println!(
        "run {} — {} of `{}` in `{}`, by {}",
        run.id,
        kind(&run),
        inline(&run.pipeline),
        inline(&run.environment),
        inline(&run.author)
    );
    println!(
        "status {}; started {}{}",
        run.status.as_str(),
        run.started,
        run.ended
            .as_deref()
            .map(|e| format!(", ended {e} ({})", took(&run.started, Some(e))))
            .unwrap_or_default()
    );
    if let Some(undoes) = &run.undoes {
        println!("undoes run {undoes}");
    }
    println!(
        "pipeline {} (sha256 {})",
        inline(&run.pipeline_file),
        run.pipeline_digest
    );
    println!("run dir {}", inline(&run.run_dir));

    let mut table = Table::new();
    table.load_preset(UTF8_BORDERS_ONLY).set_header([
        "stage",
        "try",
        "status",
        "started",
        "took",
        "summary / reason",
    ]);
    for s in &stages {
        table.add_row([
            inline(&s.name).into_owned(),
            s.attempt.to_string(),
            inline(&s.status).into_owned(),
            s.started
                .as_deref()
                .and_then(|t| t.get(11..19))
                .unwrap_or("")
                .to_string(),
            s.duration_ms
                .map(|ms| format!("{:.1}s", ms as f64 / 1000.0))
                .unwrap_or_default(),
            one_line(&s.message, 90),
        ]);
    }
    println!("{table}");

    println!("outputs:");
    for s in latest_attempts(stages) {
        let Some(outputs) = s.outputs.as_object().filter(|o| !o.is_empty()) else {
            continue;
        };
        println!("  {}:", inline(&s.name));
        for (k, v) in outputs {
            let text = match v {
                serde_json::Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            println!("    {} = {}", inline(k), one_line(&text, 100));
        }
    }
    if !approvals.is_empty() {
        println!("approvals:");
        for a in &approvals {
            println!(
                "  {} {} by {} at {} for {} ({}){}{}",
                inline(&a.stage),
                inline(&a.decision),
                inline(&a.by),
                inline(&a.at),
                inline(&a.digest),
                inline(&a.policy),
                a.comment
                    .as_deref()
                    .map(|c| format!(": {}", inline(c)))
                    .unwrap_or_default(),
                a.override_reason
                    .as_deref()
                    .map(|r| format!(" — OVERRIDE: {}", inline(r)))
                    .unwrap_or_default(),
            );
        }
    }
    for request in reviewed(requests, pending.as_ref()) {
        print_request(&request, &run.id, args.plan);
    }
    if let Some(p) = pending {
        println!(
            "waiting for approval: stage `{}`, {} — digest {}, {} approval(s) required{}",
            inline(&p.stage),
            inline(&p.subject),
            inline(&p.digest),
            p.required,
            if p.approvers.is_empty() {
                String::new()
            } else {
                format!(" from {}", inline(&p.approvers.join(", ")))
            }
        );
        println!(
            "  approve: capstan approve {} --as <name>   then: capstan resume {}",
            run.id, run.id
        );
    }
    println!("plugins:");
    for p in run.plugins.as_array().into_iter().flatten() {
        println!(
            "  {} {} sha256 {}",
            inline(p["name"].as_str().unwrap_or("?")),
            inline(p["path"].as_str().unwrap_or("?")),
            inline(p["sha256"].as_str().unwrap_or("?"))
        );
    }
    Ok(exit::OK)
}

/// The latest request of each stage that asked for approval, in the order
/// they were asked; the pending one when the store kept no request for it
/// (a run paused by a Capstan that did not keep them).
fn reviewed(
    requests: Vec<PendingApproval>,
    pending: Option<&PendingApproval>,
) -> Vec<PendingApproval> {
    let mut latest: indexmap::IndexMap<String, PendingApproval> = indexmap::IndexMap::new();
    for r in requests.into_iter().chain(pending.cloned()) {
        if latest.get(&r.stage).is_none_or(|old| r.asked >= old.asked) {
            // Where the stage's latest request was asked, not its first.
            latest.shift_remove(&r.stage);
            latest.insert(r.stage.clone(), r);
        }
    }
    latest.into_values().collect()
}

/// What the reviewers of `request` saw: subject, digest, checklist and the
/// details (e.g. the plan), cut to their first lines unless `whole`, and
/// then paged when longer than the terminal.
fn print_request(request: &PendingApproval, run: &str, whole: bool) {
    println!(
        "approval request of stage `{}` (asked {}): {}",
        inline(&request.stage),
        inline(&request.asked),
        inline(&request.subject)
    );
    println!("  digest {}", inline(&request.digest));
    if !request.checklist.is_empty() {
        println!("  checklist:");
        for item in &request.checklist {
            println!("    [ ] {}", inline(item));
        }
    }
    let details = review::framed(&request.details);
    if details.is_empty() {
        return;
    }
    println!("  details:");
    if !whole {
        let cut = review::cut(details, review::SHOWN_LINES, |more| {
            let lines = if more == 1 { "line" } else { "lines" };
            format!("  … {more} more {lines}: `capstan show {run} --plan` prints them all")
        });
        cut.iter().for_each(|line| println!("{line}"));
        return;
    }
    let _ = std::io::stdout().flush();
    if !(review::too_long(std::io::stdout(), &details, 0)
        && review::page(std::io::stdout(), &details))
    {
        details.iter().for_each(|line| println!("{line}"));
    }
}
