//! The message, and its three payloads: Slack (`text` and Block Kit
//! `blocks`), Microsoft Teams (an Adaptive Card in a `message`'s
//! `attachments`) and generic JSON.
//!
//! Everything quoted from the run (stage names, summaries, reasons) is
//! plugin or tool text: in Slack's mrkdwn `&`, `<` and `>` are escaped, so
//! that a reason cannot mention `@channel` or hide a link; long texts are
//! cut to stay within the services' limits.

use serde_json::{Value, json};

use crate::config::{Ended, RunStatus};

/// The longest text quoted from one stage (a reason with the tool's last
/// lines), in characters.
const MAX_QUOTE: usize = 600;

/// At most this many stages are listed one per line, each cut to
/// [`MAX_LINE`] characters of text (a Slack section takes 3000).
const MAX_LISTED: usize = 20;
const MAX_LINE: usize = 80;

/// At most this many failed or waiting stages get a section of their own
/// (Slack takes 50 blocks).
const MAX_TROUBLE: usize = 5;

/// The most characters of a Slack section's mrkdwn text.
const SLACK_SECTION: usize = 3000;

/// What the message says.
#[derive(Debug, Clone)]
pub struct Report {
    pub pipeline: String,
    pub environment: String,
    pub run_id: String,
    pub status: RunStatus,
    /// The stages before the notifier, in pipeline order.
    pub stages: Vec<(String, Ended)>,
    pub title: Option<String>,
    pub link: Option<String>,
}

impl Report {
    /// An emoji for the status.
    fn mark(&self) -> &'static str {
        match self.status {
            RunStatus::Succeeded => "✅",
            RunStatus::Failed => "❌",
            RunStatus::AwaitingApproval => "⏸️",
            RunStatus::Cancelled => "⏹️",
        }
    }

    /// The first line: the given title, or e.g. "❌ golden-image failed in
    /// production".
    pub fn title(&self) -> String {
        if let Some(title) = &self.title {
            return title.clone();
        }
        let what = match self.status {
            RunStatus::Succeeded => "succeeded",
            RunStatus::Failed => "failed",
            RunStatus::AwaitingApproval => "waits for approval",
            RunStatus::Cancelled => "was cancelled",
        };
        format!(
            "{} {} {what} in {}",
            self.mark(),
            self.pipeline,
            self.environment
        )
    }

    /// The stages that did not get through: failed, waiting for approval or
    /// cancelled (not those skipped because of them).
    pub fn trouble(&self) -> Vec<&(String, Ended)> {
        self.stages
            .iter()
            .filter(|(_, e)| {
                matches!(
                    e.status.as_str(),
                    "failed" | "awaiting-approval" | "cancelled"
                )
            })
            .collect()
    }

    /// One line on the trouble, e.g. "failed at `apply`".
    fn where_(&self) -> Option<String> {
        let trouble = self.trouble();
        let (name, ended) = trouble.first()?;
        let at = match ended.status.as_str() {
            "failed" => "failed at",
            "awaiting-approval" => "waits for approval at",
            _ => "cancelled at",
        };
        let more = match trouble.len() {
            1 => String::new(),
            n => format!(" (and {} more)", n - 1),
        };
        Some(format!("{at} `{name}`{more}"))
    }

    /// The commands an operator runs next.
    pub fn commands(&self) -> Vec<String> {
        let run = &self.run_id;
        let mut out = vec![format!("capstan show {run}")];
        match self.status {
            RunStatus::AwaitingApproval => {
                out.push(format!("capstan approve {run}"));
                out.push(format!("capstan resume {run}"));
            }
            RunStatus::Failed => {
                if let Some((stage, _)) = self.trouble().first() {
                    out.push(format!("capstan logs {run} {stage}"));
                }
                out.push(format!("capstan resume {run}"));
            }
            RunStatus::Succeeded | RunStatus::Cancelled => {}
        }
        out
    }

    /// The plain-text line for notifications and previews.
    pub fn summary(&self) -> String {
        match self.where_() {
            Some(w) => format!(
                "{} {} in {} {w} (run {})",
                self.mark(),
                self.pipeline,
                self.environment,
                self.run_id
            ),
            None => format!("{} (run {})", self.title(), self.run_id),
        }
    }
}

/// A stage's status as a mark.
fn stage_mark(status: &str) -> &'static str {
    match status {
        "succeeded" => "✓",
        "failed" => "✗",
        "awaiting-approval" => "⏸",
        "cancelled" => "■",
        _ => "–",
    }
}

/// `text` cut to [`MAX_QUOTE`] characters, on one line.
fn quote(text: &str) -> String {
    let one_line = text.split_whitespace().collect::<Vec<_>>().join(" ");
    match one_line.char_indices().nth(MAX_QUOTE) {
        Some((at, _)) => format!("{}…", &one_line[..at]),
        None => one_line,
    }
}

/// Text made inert in Slack's mrkdwn: no mention, link or HTML entity.
fn slack_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// Slack's incoming webhook payload: `text` (the notification's line) and
/// `blocks`: a header, the facts, the trouble with its reason, the stages,
/// and the commands (and the link) as context.
pub fn slack(report: &Report) -> Value {
    let e = |t: &str| slack_escape(t);
    let facts = [
        ("Pipeline", e(&report.pipeline)),
        ("Environment", e(&report.environment)),
        ("Run", format!("`{}`", e(&report.run_id))),
        ("Status", report.status.word().to_string()),
    ];
    let mut blocks = vec![
        json!({
            "type": "header",
            "text": {"type": "plain_text", "text": truncate(&report.title(), 150), "emoji": true},
        }),
        json!({
            "type": "section",
            "fields": facts
                .iter()
                .map(|(k, v)| json!({"type": "mrkdwn", "text": format!("*{k}*\n{v}")}))
                .collect::<Vec<_>>(),
        }),
    ];
    // Escaping can make a text longer: the cut comes last.
    let section = |text: String| json!({"type": "section", "text": {"type": "mrkdwn", "text": truncate(&text, SLACK_SECTION)}});
    for (name, ended) in report.trouble().into_iter().take(MAX_TROUBLE) {
        let what = trouble_word(&ended.status);
        let text = format!("*{what}:* `{}`\n{}", e(name), e(&quote(ended.text())));
        blocks.push(section(text));
    }
    if !report.stages.is_empty() {
        blocks.push(section(format!(
            "*Stages*\n{}",
            stage_lines(report, |t| e(t))
        )));
    }
    let mut context: Vec<String> = report
        .commands()
        .iter()
        .map(|c| format!("`{}`", e(c)))
        .collect();
    if let Some(link) = &report.link {
        context.push(format!("<{}|Open the run>", e(link)));
    }
    blocks.push(json!({
        "type": "context",
        "elements": [{"type": "mrkdwn", "text": context.join(" · ")}],
    }));
    json!({ "text": e(&report.summary()), "blocks": blocks })
}

/// How a stage that did not get through is introduced.
fn trouble_word(status: &str) -> &'static str {
    match status {
        "failed" => "Failed",
        "awaiting-approval" => "Waiting for approval",
        _ => "Cancelled",
    }
}

/// One line per stage (`✓ build — summary`), at most [`MAX_LISTED`].
fn stage_lines(report: &Report, escape: impl Fn(&str) -> String) -> String {
    let mut lines: Vec<String> = report
        .stages
        .iter()
        .take(MAX_LISTED)
        .map(|(name, ended)| {
            let text = truncate(&quote(ended.text()), MAX_LINE);
            format!(
                "{} `{}` {} — {}",
                stage_mark(&ended.status),
                escape(name),
                escape(&ended.status),
                escape(&text)
            )
        })
        .collect();
    if report.stages.len() > MAX_LISTED {
        lines.push(format!("… and {} more", report.stages.len() - MAX_LISTED));
    }
    lines.join("\n")
}

/// `text` cut to `max` characters.
fn truncate(text: &str, max: usize) -> String {
    match text.char_indices().nth(max.saturating_sub(1)) {
        Some((at, _)) if text.chars().count() > max => format!("{}…", &text[..at]),
        _ => text.to_string(),
    }
}

/// Microsoft Teams: a `message` whose one attachment is an Adaptive Card
/// (version 1.4): the title coloured by status, a fact set (pipeline,
/// environment, run, status), the trouble with its reason, the stages as a
/// fact set, the commands, and an "Open the run" action when there is a
/// link. Teams workflows ("When a Teams webhook request is received") and
/// incoming webhooks both take this form.
pub fn teams(report: &Report) -> Value {
    let color = match report.status {
        RunStatus::Succeeded => "Good",
        RunStatus::Failed => "Attention",
        RunStatus::AwaitingApproval | RunStatus::Cancelled => "Warning",
    };
    let fact = |title: &str, value: &str| json!({"title": title, "value": value});
    let mut body = vec![
        json!({"type": "TextBlock", "text": report.title(), "size": "Large", "weight": "Bolder", "color": color, "wrap": true}),
        json!({"type": "FactSet", "facts": [
            fact("Pipeline", &report.pipeline),
            fact("Environment", &report.environment),
            fact("Run", &report.run_id),
            fact("Status", report.status.word()),
        ]}),
    ];
    for (name, ended) in report.trouble().into_iter().take(MAX_TROUBLE) {
        let what = trouble_word(&ended.status);
        body.push(json!({"type": "TextBlock", "text": format!("{what}: {name}"), "weight": "Bolder", "wrap": true}));
        body.push(json!({"type": "TextBlock", "text": quote(ended.text()), "wrap": true}));
    }
    if !report.stages.is_empty() {
        let facts: Vec<Value> = report
            .stages
            .iter()
            .take(MAX_LISTED)
            .map(|(name, ended)| {
                fact(
                    name,
                    &format!("{} {}", stage_mark(&ended.status), ended.status),
                )
            })
            .collect();
        body.push(
            json!({"type": "TextBlock", "text": "Stages", "weight": "Bolder", "separator": true}),
        );
        body.push(json!({"type": "FactSet", "facts": facts}));
    }
    body.push(json!({
        "type": "TextBlock",
        "text": report.commands().join("\n\n"),
        "fontType": "Monospace",
        "isSubtle": true,
        "wrap": true,
    }));
    let mut card = json!({
        "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
        "type": "AdaptiveCard",
        "version": "1.4",
        "msteams": {"width": "Full"},
        "body": body,
    });
    if let Some(link) = &report.link {
        card["actions"] = json!([{"type": "Action.OpenUrl", "title": "Open the run", "url": link}]);
    }
    json!({
        "type": "message",
        "summary": report.summary(),
        "attachments": [{
            "contentType": "application/vnd.microsoft.card.adaptive",
            "contentUrl": null,
            "content": card,
        }],
    })
}

/// The generic payload, version 1: `{"kind": "capstan.run", "version": 1,
/// "pipeline", "environment", "run_id", "status", "title", "summary",
/// "link" (or null), "stages": [{"name", "status", "summary" | "reason"}],
/// "commands": [...]}`. Texts are whole, not cut.
pub fn generic(report: &Report) -> Value {
    let stages: Vec<Value> = report
        .stages
        .iter()
        .map(|(name, ended)| {
            let mut entry = json!({"name": name, "status": ended.status});
            if let Some(s) = &ended.summary {
                entry["summary"] = s.as_str().into();
            }
            if let Some(r) = &ended.reason {
                entry["reason"] = r.as_str().into();
            }
            entry
        })
        .collect();
    json!({
        "kind": "capstan.run",
        "version": 1,
        "pipeline": report.pipeline,
        "environment": report.environment,
        "run_id": report.run_id,
        "status": report.status.word(),
        "title": report.title(),
        "summary": report.summary(),
        "link": report.link,
        "stages": stages,
        "commands": report.commands(),
    })
}

#[cfg(test)]
mod tests;
