//! `capstan audit --run`: what a run's stages did — every capability use
//! and every denial, as recorded in the run store (the same events as the
//! run's `audit.jsonl`), with the sandbox each program ran in.

use std::io::Write;

use comfy_table::ColumnConstraint;
use serde_json::Value;

use super::Args;
use crate::commands::drive::one_line;
use crate::exit::{self, Failure};
use crate::store::{AuditKind, AuditRow};
use crate::term::{self, Layout, Stream, Tone};
use crate::text::inline;

pub fn exec(args: &Args, cli: &crate::commands::Cli) -> Result<u8, Failure> {
    let id = args
        .run
        .as_deref()
        .expect("clap requires --run without a target");
    let store = cli.store()?;
    let run = store.run(id).map_err(crate::commands::store_failure)?;
    let events: Vec<AuditRow> = store
        .audit_events(&run.id)
        .map_err(crate::commands::store_failure)?
        .into_iter()
        .filter(|e| args.stage.as_ref().is_none_or(|s| &e.stage == s))
        .filter(|e| !args.denied || !e.allowed || e.capability == AuditKind::Limit)
        .collect();
    if args.json {
        return term::print(format_args!(
            "{}\n",
            serde_json::to_string_pretty(&events).expect("events serialize")
        ))
        .map(|()| exit::OK);
    }
    let layout = Layout::of(Stream::Stdout);
    let mut table = layout.table(["time", "stage", "capability", "", "what", "why"]);
    for e in &events {
        table.add_row([
            layout.cell(inline(e.time.get(11..23).unwrap_or(&e.time)), Tone::Plain),
            layout.cell(inline(&e.stage), Tone::Plain),
            layout.cell(inline(e.capability.as_str()), Tone::Plain),
            if e.allowed {
                layout.cell("ok", Tone::Plain)
            } else {
                layout.cell("DENIED", Tone::Bad)
            },
            layout.cell(what_and_sandbox(e), Tone::Plain),
            layout.cell(one_line(e.reason.as_deref().unwrap_or(""), 60), Tone::Plain),
        ]);
    }
    // On a narrow terminal what and why wrap, the short columns do not.
    for column in [0, 2, 3] {
        if let Some(c) = table.column_mut(column) {
            c.set_constraint(ColumnConstraint::ContentWidth);
        }
    }
    let mut out = term::stdout();
    writeln!(
        out,
        "run {} of `{}` in `{}` by {} ({}): {} event(s){}\n{table}",
        run.id,
        inline(&run.pipeline),
        inline(&run.environment),
        inline(&run.author),
        run.status.as_str(),
        events.len(),
        if args.denied { ", denials only" } else { "" }
    )
    .and_then(|()| out.flush())
    .map_err(term::output_failure)?;
    Ok(exit::OK)
}

/// The event's detail in one line; for an exec that was started, a second
/// line with the sandbox it ran in (file rules, network, limits), and for
/// a stage's start the file rules of all its programs.
fn what_and_sandbox(e: &AuditRow) -> String {
    let what = one_line(&what(e), 80);
    let sandbox = &e.detail["sandbox"];
    let second = match e.capability {
        AuditKind::Exec => super::sandbox::ran_with(sandbox),
        AuditKind::Stage => super::sandbox::stage_rules(sandbox),
        _ => None,
    };
    match second {
        Some(line) => format!("{what}\n  {}", one_line(&line, 120)),
        None => what,
    }
}

/// One line for an event's detail: the command line of an exec, the
/// decision of an approval, the event of a stage, else the JSON. Raw: the
/// caller shows it through `one_line`, which escapes what a plugin put in.
fn what(e: &AuditRow) -> String {
    let d = &e.detail;
    let text = |v: &Value| v.as_str().map(str::to_string);
    match e.capability {
        AuditKind::Exec if d["args"].is_array() => {
            let args: Vec<String> = d["args"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|a| a.as_str().map_or_else(|| a.to_string(), str::to_string))
                .collect();
            format!(
                "{} {}",
                text(&d["program"]).unwrap_or_default(),
                args.join(" ")
            )
        }
        AuditKind::Approval => {
            // `by` is one name, or the list of approvers of a decision.
            let by = match &d["by"] {
                Value::Array(names) => names
                    .iter()
                    .filter_map(Value::as_str)
                    .collect::<Vec<_>>()
                    .join(", "),
                other => text(other).unwrap_or_default(),
            };
            if let Some(approved) = text(&d["approved"]) {
                return format!("approval check: {approved}");
            }
            let identity = match text(&d["identity"]).as_deref() {
                Some("signed") => " (signed with a listed key)",
                Some("not verified") => " (identity not verified)",
                _ => "",
            };
            format!(
                "{}{}{identity}{}",
                text(&d["decision"])
                    .or_else(|| text(&d["event"]))
                    .unwrap_or_default(),
                if by.is_empty() {
                    String::new()
                } else {
                    format!(" by {by}")
                },
                text(&d["digest"])
                    .map(|g| format!(" for {}", g.get(..12).unwrap_or(&g)))
                    .unwrap_or_default()
            )
        }
        AuditKind::Stage => text(&d["event"]).unwrap_or_else(|| d.to_string()),
        AuditKind::Secret => secret(d),
        _ => d.to_string(),
    }
}

/// A `secret` event in one line: which secrets a stage received and how
/// (names, never values), one it could not resolve, or files it left one
/// in.
fn secret(d: &Value) -> String {
    let text = |v: &Value| v.as_str().unwrap_or_default().to_string();
    match d["event"].as_str() {
        Some("delivered") => {
            let each: Vec<String> = d["secrets"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|s| {
                    let only = match s["programs"].as_array() {
                        Some(programs) => format!(
                            ", only {}",
                            programs.iter().map(text).collect::<Vec<_>>().join(", ")
                        ),
                        None => String::new(),
                    };
                    format!(
                        "{} ({} {}{only})",
                        text(&s["name"]),
                        text(&s["delivery"]),
                        text(&s["variable"])
                    )
                })
                .collect();
            format!("received {}", each.join(", "))
        }
        Some("unresolved") => format!(
            "could not resolve {} ({})",
            text(&d["secret"]),
            text(&d["source"])
        ),
        Some("left-in-files") => {
            let files: Vec<String> = d["files"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|f| text(&f["file"]))
                .collect();
            format!("left in {}", files.join(", "))
        }
        _ => d.to_string(),
    }
}
