//! `notify`: tells a chat channel or a webhook how a run went — Slack,
//! Microsoft Teams, or a generic JSON object — through the host's
//! `network.http-post`, to the stage's `connect` grant only.
//!
//! The stage says how the run stands from what the host resolves into its
//! `with`: `status = "${run.status}"` and `stages = "${run.stages}"` (the
//! stages it needs, directly or not). With `run_if`, it reports a failure
//! or a run waiting for approval:
//!
//! ```toml
//! [stages.notify]
//! plugin = "notify"
//! needs = ["smoke"]
//! run_if = "always"          # or "failure": only when something failed or waits for approval
//! with = { format = "slack", url_env = "SLACK_WEBHOOK_URL", status = "${run.status}", stages = "${run.stages}" }
//! [stages.notify.grants]
//! env = ["SLACK_WEBHOOK_URL"]
//! connect = ["hooks.slack.com:443"]
//! ```
//!
//! **The URL** comes from the host environment variable `url_env` names,
//! which the stage must be granted (`env`); the plugin requests `env *`
//! (the variables the stage grants) because the name is the pipeline's.
//! Webhook URLs carry their token, so the plugin never prints the URL, and
//! the host's audit log keeps only its `scheme://host:port`. Better,
//! `url_secret` names a secret (declared in `[secrets]`, granted to the
//! stage): the plugin posts to `secret:<name>` and the host to the URL the
//! secret holds, so the plugin never holds it (exactly one of the two).
//!
//! **Formats.** `slack`: an incoming webhook's `text` (the notification
//! line) and Block Kit `blocks` (a header, the pipeline, environment, run
//! and status as fields, each failed or waiting stage with its reason, one
//! line per stage, and the `capstan` commands to run next as context).
//! `teams`: a `message` with one Adaptive Card 1.4 attachment (title in
//! the status's colour, the same facts, the trouble, the stages, the
//! commands, an "Open the run" action for `link`), the form Teams
//! workflows and incoming webhooks take. `generic`: `{"kind":
//! "capstan.run", "version": 1, "pipeline", "environment", "run_id",
//! "status", "title", "summary", "link", "stages": [{"name", "status",
//! "summary" | "reason"}], "commands"}`. Quoted run text is escaped for
//! Slack's mrkdwn (no mentions or links from a failure reason).
//!
//! **Delivery.** A 2xx answer is delivered; any other answer, or none
//! (refused, timed out), fails the stage with the status and the start of
//! the answer's body. Outputs: `delivered` (true), `http_status`.
//!
//! Build: `cargo build --release --target wasm32-wasip2 -p capstan-notify`
//! → `target/wasm32-wasip2/release/capstan_notify.wasm`.

mod config;
mod render;

use std::time::Duration;

use capstan_plugin::{Context, Error, Info, Outcome, Stage};

use config::{Config, Format};
use render::Report;

struct Notify;

impl Stage for Notify {
    type Config = Config;

    fn info() -> Info {
        Info::new("notify", env!("CARGO_PKG_VERSION"))
            .description(
                "Posts how the run went (status, failed or waiting stage with its reason, every \
                 stage, the commands to run next) to Slack, Microsoft Teams or a generic JSON \
                 webhook",
            )
            .env_granted(
                "to read the webhook URL from the variable `url_env` names; it sees only the \
                 variables the stage's `env` grants",
            )
            .secret_granted(
                "so that the host posts to the webhook URL the secret `url_secret` names, which \
                 the plugin never sees",
            )
            .connect("to POST the message to the webhook URL's host and port")
    }

    fn run(ctx: Context<Config>) -> Result<Outcome, Error> {
        let config = &ctx.config;
        let url = match (&config.url_env, &config.url_secret) {
            (Some(var), None) => std::env::var(var).map_err(|_| {
                Error::config(format!(
                    "the webhook URL's variable `{0}` (`url_env`) is not set, or not granted: set \
                     it, and grant it to stage `{1}` ([stages.{1}.grants] env = [\"{0}\"])",
                    var, ctx.stage
                ))
            })?,
            // The host resolves it: the plugin only names the secret.
            (None, Some(secret)) => format!("secret:{secret}"),
            _ => {
                return Err(Error::config(
                    "give exactly one of `url_env` (a granted variable) and `url_secret` (a granted secret)",
                ));
            }
        };
        let report = Report {
            pipeline: ctx.pipeline.clone(),
            environment: ctx.environment.clone(),
            run_id: ctx.run_id.clone(),
            status: config.status,
            stages: config::ended(&config.stages).map_err(Error::config)?,
            title: config.title.clone(),
            link: config.link.clone(),
        };
        let payload = match config.format {
            Format::Slack => render::slack(&report),
            Format::Teams => render::teams(&report),
            Format::Generic => render::generic(&report),
        };
        let body = serde_json::to_vec(&payload)
            .map_err(|e| Error::failed(format!("cannot write the payload: {e}")))?;
        let to = config.format.name();
        capstan_plugin::info!(
            "posting the {} run to {to} ({} bytes)",
            config.status.word(),
            body.len()
        );
        let timeout = Duration::from_secs(config.timeout_secs.into());
        let answer = capstan_plugin::network::http_post(&url, "application/json", &body, timeout)
            .map_err(|e| e.context(format!("cannot post to {to}")))?
            .map_err(|why| Error::failed(format!("{to} was not reached: {why}")))?;
        if !(200..300).contains(&answer.status) {
            let said = answer.body_str();
            let said: String = said.trim().chars().take(300).collect();
            return Err(Error::failed(format!(
                "{to} answered HTTP {}: {said}",
                answer.status
            )));
        }
        Ok(Outcome::new(format!(
            "told {to} the run {} (HTTP {})",
            match config.status {
                config::RunStatus::Succeeded => "succeeded",
                config::RunStatus::Failed => "failed",
                config::RunStatus::AwaitingApproval => "waits for approval",
                config::RunStatus::Cancelled => "was cancelled",
            },
            answer.status
        ))
        .output("delivered", true)
        .output("http_status", answer.status))
    }
}

capstan_plugin::export_stage!(Notify);
