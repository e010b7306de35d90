//! The stage's `with` table, and the run it reports on.

use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{Map, Value};

/// The stage's `with` table.
#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The payload: `slack` (an incoming webhook's `text` and Block Kit
    /// `blocks`), `teams` (an Adaptive Card in a `message` with
    /// `attachments`, as Teams workflows' and incoming webhooks take it) or
    /// `generic` (a JSON object documented in the plugin's README section).
    pub format: Format,
    /// The host environment variable holding the webhook URL, e.g.
    /// `SLACK_WEBHOOK_URL`. Grant the variable (`env = ["SLACK_WEBHOOK_URL"]`)
    /// and the URL's host and port (`connect = ["hooks.slack.com:443"]`).
    /// The URL is never logged: it carries the webhook's token. Exactly one
    /// of `url_env` and `url_secret`.
    #[serde(default)]
    pub url_env: Option<String>,
    /// The secret (declared in `[secrets]`, granted to the stage) holding
    /// the webhook URL: the host posts to it, the plugin never sees it.
    #[serde(default)]
    pub url_secret: Option<String>,
    /// How the run stands: write `"${run.status}"` (`succeeded`, `failed`,
    /// `awaiting-approval` or `cancelled`, over the stages this one needs,
    /// directly or not).
    pub status: RunStatus,
    /// How each stage before this one ended: write `"${run.stages}"` (an
    /// object of `{status, summary}` or `{status, reason}` by stage name, in
    /// pipeline order).
    pub stages: Map<String, Value>,
    /// The message's first line (default: the status, pipeline and
    /// environment, e.g. "❌ golden-image failed in production").
    #[serde(default)]
    pub title: Option<String>,
    /// A link to the run, e.g. the CI job's URL (`"${env.CI_JOB_URL}"`).
    #[serde(default)]
    pub link: Option<String>,
    /// Seconds to wait for the webhook to answer (1 to 60, default 10).
    #[serde(default = "ten")]
    #[schemars(range(min = 1, max = 60))]
    pub timeout_secs: u32,
}

fn ten() -> u32 {
    10
}

/// A payload format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Format {
    Slack,
    Teams,
    Generic,
}

impl Format {
    /// Its name for humans.
    pub fn name(self) -> &'static str {
        match self {
            Format::Slack => "Slack",
            Format::Teams => "Microsoft Teams",
            Format::Generic => "the webhook",
        }
    }
}

/// How the run stands, as the host's `${run.status}` says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum RunStatus {
    Succeeded,
    Failed,
    AwaitingApproval,
    Cancelled,
}

impl RunStatus {
    /// The word the host uses (and the generic payload carries).
    pub fn word(self) -> &'static str {
        match self {
            RunStatus::Succeeded => "succeeded",
            RunStatus::Failed => "failed",
            RunStatus::AwaitingApproval => "awaiting-approval",
            RunStatus::Cancelled => "cancelled",
        }
    }
}

/// How one stage before this one ended.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Ended {
    /// `succeeded`, `failed`, `skipped`, `awaiting-approval` or `cancelled`.
    pub status: String,
    /// What it did, if it succeeded.
    #[serde(default)]
    pub summary: Option<String>,
    /// Why it did not succeed.
    #[serde(default)]
    pub reason: Option<String>,
}

impl Ended {
    /// Its summary or reason.
    pub fn text(&self) -> &str {
        self.summary
            .as_deref()
            .or(self.reason.as_deref())
            .unwrap_or_default()
    }
}

/// The stages of `stages` in order, each read as [`Ended`]; the error names
/// the stage whose entry is not what `${run.stages}` gives.
pub fn ended(stages: &Map<String, Value>) -> Result<Vec<(String, Ended)>, String> {
    stages
        .iter()
        .map(|(name, value)| {
            Ended::deserialize(value).map(|e| (name.clone(), e)).map_err(|e| {
                format!(
                    "`stages.{name}` is not how a stage ended ({e}); write stages = \"${{run.stages}}\""
                )
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn reads_what_the_host_resolves() {
        let config: Config = serde_json::from_value(json!({
            "format": "teams",
            "url_env": "TEAMS_WEBHOOK_URL",
            "status": "awaiting-approval",
            "stages": {
                "plan": {"status": "succeeded", "summary": "1 to add"},
                "approve": {"status": "awaiting-approval", "reason": "waits"},
            },
        }))
        .unwrap();
        assert_eq!(config.format, Format::Teams);
        assert_eq!(config.status, RunStatus::AwaitingApproval);
        assert_eq!(config.timeout_secs, 10);
        let stages = ended(&config.stages).unwrap();
        assert_eq!(stages[0].0, "plan");
        assert_eq!(stages[0].1.text(), "1 to add");
        assert_eq!(stages[1].1.text(), "waits");
        let bad = json!({"plan": "succeeded"});
        let message = ended(bad.as_object().unwrap()).unwrap_err();
        assert!(message.contains("`stages.plan`"), "{message}");
        assert!(message.contains("${run.stages}"), "{message}");
    }

    #[test]
    fn the_schema_names_what_to_write() {
        let schema = serde_json::to_value(schemars::schema_for!(Config)).unwrap();
        assert_eq!(schema["additionalProperties"], false);
        let required = schema["required"].as_array().unwrap();
        for key in ["format", "status", "stages"] {
            assert!(required.contains(&json!(key)), "{key} not required");
        }
        let status = schema["properties"]["status"]["description"]
            .as_str()
            .unwrap();
        assert!(status.contains("${run.status}"), "{status}");
    }
}
