//! `approval`: the manual approval gate, with a policy per environment.
//!
//! - `auto` (e.g. dev, staging): approves at once; the host records that the
//!   policy approved, and for which digest.
//! - `manual` (e.g. production): the host asks humans — on a terminal it
//!   prompts, without one the stage ends as *waiting for approval* and the
//!   run stops (exit code 5). Approvers may be listed, several may be
//!   required, and the run's author may never approve.
//! - an emergency `override` (who and why, both required): approved without
//!   review, recorded loudly by the host.
//!
//! The decision is bound to `digest` (the plan file's sha256); the apply
//! stage then refuses a plan whose digest differs.
//!
//! Reviewers read `details` (e.g. the plan's counts) followed by `plan`
//! (e.g. Terraform's own rendering of the plan): the host shows both, with
//! the checklist, at the prompt and in `capstan show`.
//!
//! ```toml
//! [stages.approve]
//! plugin = "approval"
//! needs = ["plan"]
//! with.digest = "${stages.plan.outputs.plan_digest}"
//! with.details = "${stages.plan.outputs.summary_text}"
//! with.plan = "${stages.plan.outputs.plan_text}"
//! with.checklist = ["the image is the one built by this run", "no unexpected deletes"]
//! with.policy = { dev = "auto", staging = "auto", production = { mode = "manual", approvers = ["alice", "bob"], required = 1 } }
//! [stages.approve.grants]
//! approval = true
//! ```

use std::collections::BTreeMap;

use capstan_plugin::approval::{self, Decision, Request};
use capstan_plugin::{Context, Error, Info, Outcome, Stage, serde_json::Value};
use schemars::JsonSchema;
use serde::Deserialize;

/// The stage's `with` table.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct Config {
    /// What the decision binds to, e.g. `${stages.plan.outputs.plan_digest}`.
    digest: String,
    /// One line saying what is approved (default: "apply the plan to <environment>").
    #[serde(default)]
    subject: Option<String>,
    /// The change for the reviewer: text, or any JSON (e.g. a plan summary).
    #[serde(default)]
    details: Option<Value>,
    /// The plan as reviewers read it, shown after `details`, e.g.
    /// `${stages.plan.outputs.plan_text}` (Terraform's own rendering).
    #[serde(default)]
    plan: Option<String>,
    /// Points the reviewer must check.
    #[serde(default)]
    checklist: Vec<String>,
    /// Policy per environment; environments not listed are `manual`.
    #[serde(default)]
    policy: BTreeMap<String, Policy>,
    /// Emergency override: approve without review. Recorded loudly.
    #[serde(default, rename = "override")]
    emergency: Option<Override>,
}

/// How one environment is approved.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(untagged)]
enum Policy {
    /// `"auto"` or `"manual"`.
    Mode(Mode),
    /// `{ mode = "manual", approvers = [...], required = N }`.
    Detailed {
        mode: Mode,
        /// Who may approve (empty: anyone but the run's author).
        #[serde(default)]
        approvers: Vec<String>,
        /// How many distinct approvals are needed (default 1).
        #[serde(default = "one")]
        required: u32,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
enum Mode {
    Auto,
    Manual,
}

/// Who invokes an emergency override, and why.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct Override {
    by: String,
    reason: String,
}

fn one() -> u32 {
    1
}

/// Text of `details` for the reviewer.
fn details_text(details: &Option<Value>) -> String {
    match details {
        None => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => capstan_plugin::serde_json::to_string_pretty(other).unwrap_or_default(),
    }
}

/// What the reviewer reads: `details`, then a blank line and `plan`. The
/// request has one text for both (the host frames, escapes, pages and cuts
/// it as a whole), so that the approval interface stays as it is.
fn review_text(config: &Config) -> String {
    let details = details_text(&config.details);
    let parts = [
        details.trim_end(),
        config.plan.as_deref().unwrap_or("").trim_end(),
    ];
    let shown: Vec<&str> = parts.into_iter().filter(|p| !p.trim().is_empty()).collect();
    shown.join("\n\n")
}

/// The request for `environment` under `config`'s policy.
fn request(config: &Config, environment: &str) -> Result<(Request, &'static str), Error> {
    if config.digest.trim().is_empty() {
        return Err(Error::config(
            "field `digest`: empty; bind the approval to the plan, e.g. \"${stages.plan.outputs.plan_digest}\"",
        ));
    }
    let subject = config
        .subject
        .clone()
        .unwrap_or_else(|| format!("apply the plan to {environment}"));
    let mut request = Request::new(subject, config.digest.clone()).details(review_text(config));
    for item in &config.checklist {
        request = request.check(item.clone());
    }
    if let Some(o) = &config.emergency {
        if o.by.trim().is_empty() || o.reason.trim().is_empty() {
            return Err(Error::config(
                "field `override`: an emergency override needs both `by` and `reason`",
            ));
        }
        return Ok((
            request.emergency_override(o.by.clone(), o.reason.clone()),
            "emergency-override",
        ));
    }
    Ok(match config.policy.get(environment) {
        Some(Policy::Mode(Mode::Auto))
        | Some(Policy::Detailed {
            mode: Mode::Auto, ..
        }) => (
            request.automatic(format!("policy for environment `{environment}` is auto")),
            "automatic",
        ),
        Some(Policy::Detailed {
            mode: Mode::Manual,
            approvers,
            required,
        }) => {
            let mut r = request.required(*required);
            for a in approvers {
                r = r.approver(a.clone());
            }
            (r, "manual")
        }
        Some(Policy::Mode(Mode::Manual)) | None => (request, "manual"),
    })
}

struct Approval;

impl Stage for Approval {
    type Config = Config;

    fn info() -> Info {
        Info::new("approval", env!("CARGO_PKG_VERSION"))
            .description("Approval gate: automatic, manual (humans, N of M, never the run's author) or emergency override, bound to a digest.")
            .approval("to ask humans to approve the change (or record an automatic approval or an override)")
    }

    fn run(ctx: Context<Config>) -> Result<Outcome, Error> {
        let (request, policy) = request(&ctx.config, &ctx.environment)?;
        capstan_plugin::info!(
            "{} — digest {} — policy {policy} in {}",
            request.subject,
            request.digest,
            ctx.environment
        );
        for item in &request.checklist {
            capstan_plugin::info!("checklist: {item}");
        }
        if policy == "emergency-override" {
            capstan_plugin::warn!("EMERGENCY OVERRIDE requested: approving without review");
        }
        match approval::ask(&request)? {
            Decision::Approved(answers) => {
                let by: Vec<&str> = answers.iter().map(|a| a.by.as_str()).collect();
                let records: Vec<Value> = answers
                    .iter()
                    .map(|a| capstan_plugin::serde_json::json!({ "by": a.by, "at": a.at, "comment": a.comment }))
                    .collect();
                Ok(Outcome::new(format!(
                    "approved ({policy}) by {} for {}",
                    by.join(", "),
                    short(&request.digest)
                ))
                .output("approved", true)
                .output("digest", &request.digest)
                .output("policy", policy)
                .output("approvers", &by)
                .output("answers", records))
            }
            Decision::Rejected(answer) => Err(Error::failed(format!(
                "rejected by {}{}",
                answer.by,
                answer.comment.map(|c| format!(": {c}")).unwrap_or_default()
            ))),
            // The host marks the stage as waiting for approval.
            Decision::Pending(how) => Err(Error::failed(how)),
        }
    }
}

fn short(digest: &str) -> &str {
    digest.get(..12).unwrap_or(digest)
}

capstan_plugin::export_stage!(Approval);

#[cfg(test)]
mod tests {
    use super::*;
    use capstan_plugin::approval::Policy as Wit;
    use capstan_plugin::serde_json::{self, json};

    fn config(v: Value) -> Config {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn policy_per_environment() {
        let c = config(json!({
            "digest": "abc",
            "policy": { "dev": "auto", "production": { "mode": "manual", "approvers": ["alice", "bob"], "required": 2 } }
        }));
        let (r, p) = request(&c, "dev").unwrap();
        assert_eq!(p, "automatic");
        assert!(matches!(r.policy, Wit::Automatic(_)));
        let (r, p) = request(&c, "production").unwrap();
        assert_eq!(
            (p, r.required, r.approvers.clone()),
            ("manual", 2, vec!["alice".to_string(), "bob".to_string()])
        );
        // Unlisted environments are manual: never approved silently.
        let (r, p) = request(&c, "staging").unwrap();
        assert_eq!((p, r.required), ("manual", 1));
        assert!(matches!(r.policy, Wit::Manual));
    }

    #[test]
    fn override_needs_who_and_why() {
        let c = config(
            json!({ "digest": "abc", "override": { "by": "carol", "reason": "outage INC-42" } }),
        );
        let (r, p) = request(&c, "production").unwrap();
        assert_eq!(p, "emergency-override");
        assert!(
            matches!(r.policy, Wit::EmergencyOverride(ref e) if e.by == "carol" && e.reason == "outage INC-42")
        );
        let c = config(json!({ "digest": "abc", "override": { "by": "carol", "reason": " " } }));
        assert!(
            request(&c, "production")
                .unwrap_err()
                .to_string()
                .contains("needs both `by` and `reason`")
        );
        assert!(request(&config(json!({ "digest": "" })), "dev").is_err());
    }

    #[test]
    fn details_are_text_for_the_reviewer() {
        assert_eq!(details_text(&Some(json!("2 to add"))), "2 to add");
        assert!(details_text(&Some(json!({ "create": 2 }))).contains("\"create\": 2"));
    }

    #[test]
    fn the_plan_follows_the_details() {
        let plan = "Terraform will perform the following actions:\n\n  # a.b will be created\n";
        let c = config(json!({
            "digest": "abc",
            "details": "plan: 1 to create\n",
            "plan": plan,
            "checklist": ["no deletes"],
        }));
        let (r, _) = request(&c, "production").unwrap();
        assert_eq!(
            r.details,
            "plan: 1 to create\n\nTerraform will perform the following actions:\n\n  # a.b \
             will be created"
        );
        assert_eq!(r.checklist, ["no deletes"]);
        let only_plan = config(json!({ "digest": "abc", "plan": plan }));
        assert_eq!(review_text(&only_plan), plan.trim_end());
        let neither = config(json!({ "digest": "abc", "details": " ", "plan": "" }));
        assert_eq!(review_text(&neither), "");
    }
}
