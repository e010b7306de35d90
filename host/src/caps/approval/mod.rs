//! The `approval` capability: asking humans, bound to a digest. Automatic
//! approvals and emergency overrides are decided by the plugin's policy but
//! recorded here; manual ones come from the run store (`capstan approve`,
//! for this digest), a terminal prompt, or are answered `pending` (the run
//! then stops, waiting for approval, and `capstan resume` asks again).

mod prompt;
mod rules;

use std::sync::{Arc, Mutex};

use serde_json::json;
use wasmtime::component::{HasSelf, Linker};

use super::audit::StageAudit;
use crate::runtime::StageState;
use crate::runtime::bindings::capstan::plugin::approval as wit;
use crate::store::{ApprovalRow, PendingApproval, RunStore};
pub use prompt::interactive;
pub use rules::{Recorded, approver_problem, recorded};

/// Who started the run, and where, for approval rules and messages.
#[derive(Debug, Clone)]
pub struct RunInfo {
    pub run_id: String,
    pub author: String,
    pub environment: String,
}

/// Per-stage state of the `approval` interface.
pub struct ApprovalHost {
    pub granted: bool,
    pub audit: StageAudit,
    pub run: RunInfo,
    /// Whether a human can be prompted (stdin and stderr are terminals).
    pub interactive: bool,
    /// Set when a request was answered `pending`: the stage then ends as
    /// waiting for approval, whatever the plugin returns.
    pub pending: Arc<Mutex<Option<String>>>,
    /// Where decisions are recorded and `capstan approve` leaves them
    /// (`None` while a plugin describes itself: it can ask nothing then).
    pub store: Option<Arc<dyn RunStore>>,
}

pub fn now() -> String {
    jiff::Timestamp::now().to_string()
}

impl ApprovalHost {
    /// Keep a decision in the run store (the audit log has it too).
    fn store_decision(
        &self,
        request: &wit::Request,
        decision: &str,
        policy: &str,
        answer: &wit::Answer,
        override_reason: Option<String>,
    ) {
        let row = ApprovalRow {
            stage: self.audit.stage.clone(),
            digest: request.digest.clone(),
            decision: decision.into(),
            by: answer.by.clone(),
            at: answer.at.clone(),
            comment: answer.comment.clone(),
            policy: policy.into(),
            override_reason,
        };
        let Some(store) = &self.store else { return };
        if let Err(e) = store.record_approval(&self.run.run_id, &row) {
            eprintln!("capstan: {e} (the decision is in the run's audit.jsonl)");
        }
    }

    fn record(&self, request: &wit::Request, decision: &str, extra: serde_json::Value) {
        let mut detail = json!({
            "subject": request.subject,
            "digest": request.digest,
            "decision": decision,
            "author": self.run.author,
        });
        if let (Some(d), Some(e)) = (detail.as_object_mut(), extra.as_object()) {
            d.extend(e.clone());
        }
        self.audit.allowed("approval", detail);
    }

    async fn manual(&mut self, request: wit::Request) -> Result<wit::Decision, wit::Error> {
        let decisions = match &self.store {
            Some(store) => store
                .approvals(&self.run.run_id)
                .map_err(|e| wit::Error::Unavailable(e.to_string()))?,
            None => return Err(wit::Error::Unavailable("no run store".into())),
        };
        let (approved_by, stale) = match recorded(
            &decisions,
            &self.audit.stage,
            &request.digest,
            &self.run.author,
            &request.approvers,
            request.required,
        ) {
            Recorded::Approved(answers) => {
                let by: Vec<&str> = answers.iter().map(|a| a.by.as_str()).collect();
                self.record(
                    &request,
                    "approved",
                    json!({ "policy": "manual", "by": by, "source": "run store" }),
                );
                return Ok(wit::Decision::Approved(answers));
            }
            Recorded::Rejected(answer) => {
                self.record(&request, "rejected", json!({ "policy": "manual", "by": answer.by, "comment": answer.comment, "source": "run store" }));
                return Ok(wit::Decision::Rejected(answer));
            }
            Recorded::Open { approved_by, stale } => (approved_by, stale),
        };
        if !self.interactive {
            return Ok(self.wait_for_approvers(&request, &approved_by, &stale));
        }
        let _one_at_a_time = prompt::PROMPT.lock().await;
        let run = self.run.clone();
        let stage = self.audit.stage.clone();
        let asked = request.clone();
        let decision = tokio::task::spawn_blocking(move || prompt::prompt(&asked, &run, &stage))
            .await
            .map_err(|e| wit::Error::Unavailable(format!("the prompt failed: {e}")))?
            .map_err(|e| wit::Error::Unavailable(format!("cannot read the answer: {e}")))?;
        match &decision {
            wit::Decision::Approved(answers) => {
                let by: Vec<&str> = answers.iter().map(|a| a.by.as_str()).collect();
                self.record(&request, "approved", json!({ "policy": "manual", "by": by, "answers": answers.iter().map(|a| json!({"by": a.by, "at": a.at, "comment": a.comment})).collect::<Vec<_>>() }));
                for a in answers {
                    self.store_decision(&request, "approved", "terminal", a, None);
                }
            }
            wit::Decision::Rejected(a) => {
                self.record(
                    &request,
                    "rejected",
                    json!({ "policy": "manual", "by": a.by, "comment": a.comment }),
                );
                self.store_decision(&request, "rejected", "terminal", a, None);
            }
            // Nobody answered at the prompt: pending, as without a terminal,
            // so that `capstan approve` can answer it later.
            wit::Decision::Pending(_) => {
                return Ok(self.wait_for_approvers(&request, &approved_by, &stale));
            }
        }
        Ok(decision)
    }
}

impl ApprovalHost {
    /// Record the request as pending in the run store and say how to answer it.
    fn wait_for_approvers(
        &self,
        request: &wit::Request,
        approved_by: &[String],
        stale: &[(String, String)],
    ) -> wit::Decision {
        let run = &self.run.run_id;
        let required = request.required.max(1);
        let mut how = format!(
            "stage `{}` of run {run} waits for approval of {} ({}); {} of {required} approvals so far{}. \
             Approve from any terminal or CI job with `capstan approve {run} --as <name>`, then \
             `capstan resume {run}`; the run's author ({}) may not approve.",
            self.audit.stage,
            short(&request.digest),
            request.subject,
            approved_by.len(),
            if approved_by.is_empty() {
                String::new()
            } else {
                format!(" (by {})", approved_by.join(", "))
            },
            self.run.author
        );
        for (by, digest) in stale {
            how.push_str(&format!(
                " The approval by {by} was for {}, an earlier plan: it does not count for this one.",
                short(digest)
            ));
        }
        let pending = PendingApproval {
            stage: self.audit.stage.clone(),
            digest: request.digest.clone(),
            subject: request.subject.clone(),
            details: request.details.clone(),
            checklist: request.checklist.clone(),
            approvers: request.approvers.clone(),
            required,
            asked: now(),
        };
        if let Some(Err(e)) = self.store.as_ref().map(|s| s.ask_approval(run, &pending)) {
            how.push_str(&format!(" (warning: {e})"));
        }
        self.record(request, "pending", json!({ "approved_by": approved_by }));
        *self.pending.lock().expect("pending lock") = Some(how.clone());
        wit::Decision::Pending(how)
    }
}

pub fn short(digest: &str) -> &str {
    digest.get(..12).unwrap_or(digest)
}

impl wit::Host for ApprovalHost {
    async fn ask(
        &mut self,
        request: wit::Request,
    ) -> wasmtime::Result<Result<wit::Decision, wit::Error>> {
        if !self.granted {
            let reason =
                "approval is not granted; add `approval = true` to the stage's grants".to_string();
            self.audit.denied(
                "approval",
                json!({ "subject": request.subject, "digest": request.digest }),
                &reason,
            );
            return Ok(Err(wit::Error::NotPermitted(reason)));
        }
        Ok(match &request.policy {
            wit::Policy::Manual => self.manual(request).await,
            wit::Policy::Automatic(why) => {
                let answer = wit::Answer {
                    by: "capstan (automatic policy)".into(),
                    at: now(),
                    comment: Some(why.clone()),
                };
                self.record(
                    &request,
                    "approved",
                    json!({ "policy": "automatic", "why": why }),
                );
                self.store_decision(&request, "approved", "automatic", &answer, None);
                Ok(wit::Decision::Approved(vec![answer]))
            }
            wit::Policy::EmergencyOverride(o)
                if o.by.trim().is_empty() || o.reason.trim().is_empty() =>
            {
                let reason = "an emergency override needs both who invokes it and why".to_string();
                self.audit.denied("approval", json!({ "subject": request.subject, "digest": request.digest, "policy": "emergency-override" }), &reason);
                Err(wit::Error::NotPermitted(reason))
            }
            wit::Policy::EmergencyOverride(o) => {
                eprintln!(
                    "\n!!! EMERGENCY OVERRIDE: stage `{}` of run {} approved without review by {}: {}\n",
                    self.audit.stage, self.run.run_id, o.by, o.reason
                );
                self.record(&request, "approved", json!({ "policy": "emergency-override", "override": true, "by": o.by, "reason": o.reason }));
                let answer = wit::Answer {
                    by: o.by.clone(),
                    at: now(),
                    comment: Some(format!("EMERGENCY OVERRIDE: {}", o.reason)),
                };
                self.store_decision(
                    &request,
                    "approved",
                    "emergency-override",
                    &answer,
                    Some(o.reason.clone()),
                );
                Ok(wit::Decision::Approved(vec![answer]))
            }
        })
    }
}

pub fn add_to_linker(linker: &mut Linker<StageState>) -> wasmtime::Result<()> {
    wit::add_to_linker::<StageState, HasSelf<ApprovalHost>>(linker, |s| &mut s.approval)
}
