//! `capstan audit --run`: what a run's stages did — every capability use
//! and every denial, as recorded in the run store (the same events as the
//! run's `audit.jsonl`).

use comfy_table::{Table, presets::UTF8_BORDERS_ONLY};
use serde_json::Value;

use super::Args;
use crate::commands::drive::one_line;
use crate::exit::{self, Failure};
use crate::store::AuditRow;
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
        .filter(|e| !args.denied || !e.allowed || e.capability == "limit")
        .collect();
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&events).expect("events serialize")
        );
        return Ok(exit::OK);
    }
    println!(
        "run {} of `{}` in `{}` by {} ({}): {} event(s){}",
        run.id,
        inline(&run.pipeline),
        inline(&run.environment),
        inline(&run.author),
        run.status.as_str(),
        events.len(),
        if args.denied { ", denials only" } else { "" }
    );
    let mut table = Table::new();
    table.load_preset(UTF8_BORDERS_ONLY).set_header([
        "time",
        "stage",
        "capability",
        "",
        "what",
        "why",
    ]);
    for e in &events {
        table.add_row([
            inline(e.time.get(11..23).unwrap_or(&e.time)).into_owned(),
            inline(&e.stage).into_owned(),
            inline(&e.capability).into_owned(),
            if e.allowed { "ok" } else { "DENIED" }.to_string(),
            one_line(&what(e), 80),
            one_line(e.reason.as_deref().unwrap_or(""), 60),
        ]);
    }
    println!("{table}");
    Ok(exit::OK)
}

/// One line for an event's detail: the command line of an exec, the
/// decision of an approval, the event of a stage, else the JSON. Raw: the
/// caller shows it through `one_line`, which escapes what a plugin put in.
fn what(e: &AuditRow) -> String {
    let d = &e.detail;
    let text = |v: &Value| v.as_str().map(str::to_string);
    match e.capability.as_str() {
        "exec" if d["args"].is_array() => {
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
        "approval" => {
            // `by` is one name, or the list of approvers of a decision.
            let by = match &d["by"] {
                Value::Array(names) => names
                    .iter()
                    .filter_map(Value::as_str)
                    .collect::<Vec<_>>()
                    .join(", "),
                other => text(other).unwrap_or_default(),
            };
            format!(
                "{}{}{}",
                text(&d["decision"]).unwrap_or_default(),
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
        "stage" => text(&d["event"]).unwrap_or_else(|| d.to_string()),
        _ => d.to_string(),
    }
}
