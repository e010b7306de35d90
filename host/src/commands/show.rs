//! `capstan show`: one run in full — stages (every attempt), outputs,
//! approvals, digests.

use std::io::{self, Write};

use comfy_table::ColumnConstraint;
use serde_json::{Value, json};

use super::drive::one_line;
use super::runs::{kind, stage_tone, took};
use crate::caps::approval::{Identity, Trust, identify, review};
use crate::exit::{self, Failure};
use crate::store::{
    ApprovalPolicy, ApprovalRow, LockRelease, PendingApproval, Release, RunRow, StageRow,
    latest_attempts,
};
use crate::term::{self, Layout, Stream, Tone};
use crate::text::inline;

/// Show one run: its stages and their attempts, outputs, approvals (with
/// what the reviewers saw: subject, digest, checklist, the plan) and the
/// digests of what ran (pipeline file, plugins, approved plans).
#[derive(Debug, clap::Args)]
#[command(after_help = "\
Examples:
  capstan show latest
  capstan show latest@production
  capstan show 20261126-101500-7f3a
  capstan show 7f3a                 # a unique prefix or suffix is enough
  capstan show latest --plan        # the whole plan of each approval
  capstan show 20261126-101500-7f3a --json")]
pub struct Args {
    /// The run: its id, a unique prefix or suffix of it, `latest` (the run
    /// that started last) or `latest@<environment>`.
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
    let releases = store.lock_releases(&run.id).map_err(super::store_failure)?;
    let trust = Trust::of_run(&run).unwrap_or_default();
    // Who each decision is from, as `resume` and `verify` judge it.
    let identities: Vec<Identity> = approvals
        .iter()
        .map(|a| {
            let image = requests
                .iter()
                .find(|r| r.stage == a.stage && r.digest == a.digest)
                .and_then(|r| r.image_digest.as_deref());
            match a.policy {
                ApprovalPolicy::Automatic => Identity::Unverified,
                _ => identify(&trust, a, image),
            }
        })
        .collect();
    let mut out = term::stdout();
    if args.json {
        let approvals: Vec<Value> = approvals
            .iter()
            .zip(&identities)
            .map(|(a, identity)| {
                let mut row = json!(a);
                row["identity"] = json!(identity.label());
                row
            })
            .collect();
        let doc = json!({
            "run": run,
            "stages": latest_attempts(stages.clone()),
            "attempts": stages,
            "approvals": approvals,
            "approval_requests": requests,
            "pending_approval": pending,
            "lock_releases": releases,
        });
        writeln!(out, "{}", serde_json::to_string_pretty(&doc).expect("JSON"))
            .map_err(term::output_failure)?;
        return Ok(exit::OK);
    }
    let shown = Shown {
        run: &run,
        stages,
        approvals: &approvals,
        identities: &identities,
        requests: reviewed(requests, pending.as_ref()),
        pending: pending.as_ref(),
        releases: &releases,
        whole_plan: args.plan,
    };
    shown
        .print(&mut out, Layout::of(Stream::Stdout))
        .and_then(|()| out.flush())
        .map_err(term::output_failure)?;
    Ok(exit::OK)
}

/// What `show` prints of a run.
struct Shown<'a> {
    run: &'a RunRow,
    stages: Vec<StageRow>,
    approvals: &'a [ApprovalRow],
    /// Who each approval is from (same order).
    identities: &'a [Identity],
    /// The latest request of each stage that asked for approval.
    requests: Vec<PendingApproval>,
    pending: Option<&'a PendingApproval>,
    /// Its environment lock, released without it.
    releases: &'a [LockRelease],
    /// Print each request's details whole (`--plan`).
    whole_plan: bool,
}

impl Shown<'_> {
    // What a plugin supplied (summaries, reasons, outputs, approval
    // subjects, digests, names) is shown escaped; `--json` keeps it raw.
    fn print(self, out: &mut impl Write, layout: Layout) -> io::Result<()> {
        let run = self.run;
        writeln!(
            out,
            "run {} — {} of `{}` in `{}`, by {}",
            run.id,
            kind(run),
            inline(&run.pipeline),
            inline(&run.environment),
            inline(&run.author)
        )?;
        writeln!(
            out,
            "status {}; started {}{}",
            run.status.as_str(),
            run.started,
            run.ended
                .as_deref()
                .map(|e| format!(", ended {e} ({})", took(&run.started, Some(e))))
                .unwrap_or_default()
        )?;
        if let Some(undoes) = &run.undoes {
            writeln!(out, "undoes run {undoes}")?;
        }
        writeln!(
            out,
            "pipeline {} (sha256 {})",
            inline(&run.pipeline_file),
            run.pipeline_digest
        )?;
        writeln!(out, "run dir {}", inline(&run.run_dir))?;

        let mut table = layout.table([
            "stage",
            "try",
            "status",
            "started",
            "took",
            "summary / reason",
        ]);
        for s in &self.stages {
            table.add_row([
                layout.cell(inline(&s.name), Tone::Plain),
                layout.cell(s.attempt.to_string(), Tone::Plain),
                layout.cell(s.status.as_str(), stage_tone(s.status)),
                layout.cell(
                    s.started
                        .as_deref()
                        .and_then(|t| t.get(11..19))
                        .unwrap_or(""),
                    Tone::Plain,
                ),
                layout.cell(
                    s.duration_ms
                        .map(|ms| format!("{:.1}s", ms as f64 / 1000.0))
                        .unwrap_or_default(),
                    Tone::Plain,
                ),
                layout.cell(one_line(&s.message, 90), Tone::Plain),
            ]);
        }
        // On a narrow terminal the summary wraps, the short columns do not.
        for column in [1, 2, 3, 4] {
            if let Some(c) = table.column_mut(column) {
                c.set_constraint(ColumnConstraint::ContentWidth);
            }
        }
        writeln!(out, "{table}")?;

        writeln!(out, "outputs:")?;
        for s in latest_attempts(self.stages) {
            let Some(outputs) = s.outputs.as_object().filter(|o| !o.is_empty()) else {
                continue;
            };
            writeln!(out, "  {}:", inline(&s.name))?;
            for (k, v) in outputs {
                let text = match v {
                    serde_json::Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                writeln!(out, "    {} = {}", inline(k), one_line(&text, 100))?;
            }
        }
        if !self.approvals.is_empty() {
            writeln!(out, "approvals:")?;
            for (a, identity) in self.approvals.iter().zip(self.identities) {
                // Without approvers' keys, approvers name themselves (`--as`,
                // the environment): nothing proves the name.
                let by = match a.policy {
                    ApprovalPolicy::Automatic => inline(&a.by).into_owned(),
                    _ => format!("{} ({})", inline(&a.by), inline(&identity.label())),
                };
                writeln!(
                    out,
                    "  {} {} by {} at {} for {} ({}){}{}",
                    inline(&a.stage),
                    a.decision,
                    by,
                    inline(&a.at),
                    inline(&a.digest),
                    a.policy,
                    a.comment
                        .as_deref()
                        .map(|c| format!(": {}", inline(c)))
                        .unwrap_or_default(),
                    a.override_reason
                        .as_deref()
                        .map(|r| format!(" — OVERRIDE: {}", inline(r)))
                        .unwrap_or_default(),
                )?;
            }
        }
        for request in &self.requests {
            print_request(out, request, &run.id, self.whole_plan)?;
        }
        for r in self.releases {
            writeln!(
                out,
                "lock on `{}` released: {}",
                inline(&r.environment),
                released(r)
            )?;
        }
        if let Some(p) = self.pending {
            writeln!(
                out,
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
            )?;
            writeln!(
                out,
                "  approve: capstan approve {} {}   then: capstan resume {}",
                run.id,
                if run.approvers.is_some() {
                    "--key <your private key file>"
                } else {
                    "--as <name>"
                },
                run.id
            )?;
        }
        writeln!(out, "plugins:")?;
        for p in run.plugins.as_array().into_iter().flatten() {
            writeln!(
                out,
                "  {} {} sha256 {}",
                inline(p["name"].as_str().unwrap_or("?")),
                inline(p["path"].as_str().unwrap_or("?")),
                inline(p["sha256"].as_str().unwrap_or("?"))
            )?;
        }
        Ok(())
    }
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
fn print_request(
    out: &mut impl Write,
    request: &PendingApproval,
    run: &str,
    whole: bool,
) -> io::Result<()> {
    writeln!(
        out,
        "approval request of stage `{}` (asked {}): {}",
        inline(&request.stage),
        inline(&request.asked),
        inline(&request.subject)
    )?;
    writeln!(out, "  digest {}", inline(&request.digest))?;
    if !request.checklist.is_empty() {
        writeln!(out, "  checklist:")?;
        for item in &request.checklist {
            writeln!(out, "    [ ] {}", inline(item))?;
        }
    }
    let details = review::framed(&request.details);
    if details.is_empty() {
        return Ok(());
    }
    writeln!(out, "  details:")?;
    if !whole {
        let cut = review::cut(details, review::SHOWN_LINES, |more| {
            let lines = if more == 1 { "line" } else { "lines" };
            format!("  … {more} more {lines}: `capstan show {run} --plan` prints them all")
        });
        for line in cut {
            writeln!(out, "{line}")?;
        }
        return Ok(());
    }
    out.flush()?;
    if !(review::too_long(std::io::stdout(), &details, 0)
        && review::page(std::io::stdout(), &details))
    {
        for line in details {
            writeln!(out, "{line}")?;
        }
    }
    Ok(())
}

/// How a lock was released without its run, in words.
fn released(r: &LockRelease) -> String {
    match r.why {
        Release::Forced => format!(
            "BY FORCE by {} at {}: {}",
            inline(&r.by),
            r.at,
            inline(r.reason.as_deref().unwrap_or(""))
        ),
        Release::LeaseExpired => format!(
            "its host ({}) stopped renewing its lease (ended {}); taken over by {} at {}",
            r.holder,
            r.lease_ended.as_deref().unwrap_or("?"),
            inline(&r.by),
            r.at
        ),
        Release::HostDied => format!(
            "its host process ({}) was gone; taken over by {} at {}",
            r.holder,
            inline(&r.by),
            r.at
        ),
        Release::Ended => format!("it had ended; taken over by {} at {}", inline(&r.by), r.at),
    }
}
