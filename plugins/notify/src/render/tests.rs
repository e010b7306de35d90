//! The three payloads of one failed run and one waiting run, in full.

use serde_json::json;

use super::*;

/// golden-image in production: build and plan succeeded, apply failed
/// with a reason that tries Slack mentions and links, smoke was skipped.
fn failed() -> Report {
    let ended = |status: &str, summary: Option<&str>, reason: Option<&str>| Ended {
        status: status.into(),
        summary: summary.map(String::from),
        reason: reason.map(String::from),
    };
    Report {
        pipeline: "golden-image".into(),
        environment: "production".into(),
        run_id: "20261126-101500-7f3a".into(),
        status: RunStatus::Failed,
        stages: vec![
            (
                "build".into(),
                ended("succeeded", Some("built ami-1"), None),
            ),
            ("plan".into(), ended("succeeded", Some("1 to add"), None)),
            (
                "apply".into(),
                ended(
                    "failed",
                    None,
                    Some("terraform apply exited 1:\n<!channel> see <http://evil|here> & retry"),
                ),
            ),
            (
                "smoke".into(),
                ended("skipped", None, Some("needs `apply`, which failed")),
            ),
        ],
        title: None,
        link: Some("https://ci.example/jobs/42".into()),
    }
}

#[test]
fn slack_blocks_say_what_failed_with_run_text_made_inert() {
    assert_eq!(
        slack(&failed()),
        json!({
            "text": "❌ golden-image in production failed at `apply` (run 20261126-101500-7f3a)",
            "blocks": [
                {"type": "header", "text": {"type": "plain_text", "text": "❌ golden-image failed in production", "emoji": true}},
                {"type": "section", "fields": [
                    {"type": "mrkdwn", "text": "*Pipeline*\ngolden-image"},
                    {"type": "mrkdwn", "text": "*Environment*\nproduction"},
                    {"type": "mrkdwn", "text": "*Run*\n`20261126-101500-7f3a`"},
                    {"type": "mrkdwn", "text": "*Status*\nfailed"},
                ]},
                {"type": "section", "text": {"type": "mrkdwn", "text":
                    "*Failed:* `apply`\nterraform apply exited 1: &lt;!channel&gt; see &lt;http://evil|here&gt; &amp; retry"}},
                {"type": "section", "text": {"type": "mrkdwn", "text": "*Stages*\n\
                    ✓ `build` succeeded — built ami-1\n\
                    ✓ `plan` succeeded — 1 to add\n\
                    ✗ `apply` failed — terraform apply exited 1: &lt;!channel&gt; see &lt;http://evil|here&gt; &amp; retry\n\
                    – `smoke` skipped — needs `apply`, which failed"}},
                {"type": "context", "elements": [{"type": "mrkdwn", "text":
                    "`capstan show 20261126-101500-7f3a` · `capstan logs 20261126-101500-7f3a apply` · \
                     `capstan resume 20261126-101500-7f3a` · <https://ci.example/jobs/42|Open the run>"}]},
            ],
        })
    );
}

#[test]
fn teams_gets_an_adaptive_card_in_a_message() {
    assert_eq!(
        teams(&failed()),
        json!({
            "type": "message",
            "summary": "❌ golden-image in production failed at `apply` (run 20261126-101500-7f3a)",
            "attachments": [{
                "contentType": "application/vnd.microsoft.card.adaptive",
                "contentUrl": null,
                "content": {
                    "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
                    "type": "AdaptiveCard",
                    "version": "1.4",
                    "msteams": {"width": "Full"},
                    "body": [
                        {"type": "TextBlock", "text": "❌ golden-image failed in production", "size": "Large", "weight": "Bolder", "color": "Attention", "wrap": true},
                        {"type": "FactSet", "facts": [
                            {"title": "Pipeline", "value": "golden-image"},
                            {"title": "Environment", "value": "production"},
                            {"title": "Run", "value": "20261126-101500-7f3a"},
                            {"title": "Status", "value": "failed"},
                        ]},
                        {"type": "TextBlock", "text": "Failed: apply", "weight": "Bolder", "wrap": true},
                        {"type": "TextBlock", "text": "terraform apply exited 1: <!channel> see <http://evil|here> & retry", "wrap": true},
                        {"type": "TextBlock", "text": "Stages", "weight": "Bolder", "separator": true},
                        {"type": "FactSet", "facts": [
                            {"title": "build", "value": "✓ succeeded"},
                            {"title": "plan", "value": "✓ succeeded"},
                            {"title": "apply", "value": "✗ failed"},
                            {"title": "smoke", "value": "– skipped"},
                        ]},
                        {"type": "TextBlock", "text": "capstan show 20261126-101500-7f3a\n\ncapstan logs 20261126-101500-7f3a apply\n\ncapstan resume 20261126-101500-7f3a",
                         "fontType": "Monospace", "isSubtle": true, "wrap": true},
                    ],
                    "actions": [{"type": "Action.OpenUrl", "title": "Open the run", "url": "https://ci.example/jobs/42"}],
                },
            }],
        })
    );
}

#[test]
fn generic_carries_every_stage_whole() {
    assert_eq!(
        generic(&failed()),
        json!({
            "kind": "capstan.run",
            "version": 1,
            "pipeline": "golden-image",
            "environment": "production",
            "run_id": "20261126-101500-7f3a",
            "status": "failed",
            "title": "❌ golden-image failed in production",
            "summary": "❌ golden-image in production failed at `apply` (run 20261126-101500-7f3a)",
            "link": "https://ci.example/jobs/42",
            "stages": [
                {"name": "build", "status": "succeeded", "summary": "built ami-1"},
                {"name": "plan", "status": "succeeded", "summary": "1 to add"},
                {"name": "apply", "status": "failed", "reason": "terraform apply exited 1:\n<!channel> see <http://evil|here> & retry"},
                {"name": "smoke", "status": "skipped", "reason": "needs `apply`, which failed"},
            ],
            "commands": [
                "capstan show 20261126-101500-7f3a",
                "capstan logs 20261126-101500-7f3a apply",
                "capstan resume 20261126-101500-7f3a",
            ],
        })
    );
}

#[test]
fn a_waiting_run_says_how_to_approve_and_a_good_one_says_little() {
    let mut waiting = failed();
    waiting.status = RunStatus::AwaitingApproval;
    waiting.stages.truncate(2);
    waiting.stages.push((
        "approve".into(),
        Ended {
            status: "awaiting-approval".into(),
            summary: None,
            reason: Some("stage `approve` waits for approval of 1 to add".into()),
        },
    ));
    waiting.link = None;
    let payload = slack(&waiting);
    assert_eq!(
        payload["text"],
        "⏸️ golden-image in production waits for approval at `approve` (run 20261126-101500-7f3a)"
    );
    assert_eq!(
        payload["blocks"][2]["text"]["text"],
        "*Waiting for approval:* `approve`\nstage `approve` waits for approval of 1 to add"
    );
    assert_eq!(
        payload["blocks"][4]["elements"][0]["text"],
        "`capstan show 20261126-101500-7f3a` · `capstan approve 20261126-101500-7f3a` · \
         `capstan resume 20261126-101500-7f3a`"
    );
    let card = teams(&waiting);
    assert_eq!(
        card["attachments"][0]["content"]["body"][0]["color"],
        "Warning"
    );
    assert!(card["attachments"][0]["content"].get("actions").is_none());

    let mut good = failed();
    good.status = RunStatus::Succeeded;
    good.stages.truncate(2);
    good.title = Some("Deployed <b>".into());
    let payload = slack(&good);
    assert_eq!(
        payload["text"],
        "Deployed &lt;b&gt; (run 20261126-101500-7f3a)"
    );
    assert_eq!(payload["blocks"][0]["text"]["text"], "Deployed <b>");
    // No trouble section: header, facts, stages, context.
    assert_eq!(payload["blocks"].as_array().unwrap().len(), 4);
    assert_eq!(
        generic(&good)["commands"],
        json!(["capstan show 20261126-101500-7f3a"])
    );
}

#[test]
fn long_texts_are_cut_to_the_services_limits() {
    let mut long = failed();
    long.stages[2].1.reason = Some("x".repeat(5000));
    long.title = Some("t".repeat(400));
    long.stages = (0..40)
        .map(|i| (format!("s{i}"), long.stages[2].1.clone()))
        .collect();
    let payload = slack(&long);
    let header = payload["blocks"][0]["text"]["text"].as_str().unwrap();
    assert_eq!(header.chars().count(), 150);
    for block in payload["blocks"].as_array().unwrap() {
        if let Some(text) = block["text"]["text"].as_str() {
            assert!(
                text.chars().count() <= 3000,
                "{} characters",
                text.chars().count()
            );
        }
    }
    assert!(payload["blocks"].as_array().unwrap().len() <= 50);
    let listed = slack(&long)["blocks"]
        .as_array()
        .unwrap()
        .iter()
        .find_map(|b| {
            b["text"]["text"]
                .as_str()
                .filter(|t| t.starts_with("*Stages*"))
                .map(String::from)
        })
        .unwrap();
    assert!(listed.ends_with("… and 20 more"), "{listed}");
    // Five failed stages get a section each, not forty.
    let sections = payload["blocks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|b| {
            b["text"]["text"]
                .as_str()
                .is_some_and(|t| t.starts_with("*Failed:*"))
        })
        .count();
    assert_eq!(sections, 5);
    // The generic payload keeps everything.
    assert_eq!(generic(&long)["stages"].as_array().unwrap().len(), 40);
}
