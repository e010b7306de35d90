//! The `approval` capability: asking humans, bound to a digest. Automatic
//! approvals and emergency overrides are asked for by the plugin's policy,
//! but the host decides what counts: in an environment the pipeline marks
//! `protected` both are refused and humans are asked instead, and an
//! override is recorded as the operator's (the run's author, who confirms it
//! on a terminal), never under a name the plugin supplies. Manual decisions
//! come from the run store (`capstan approve`, for this digest, including
//! the operator's `--emergency`), a terminal prompt, or are answered
//! `pending` (the run then stops, waiting for approval, and `capstan resume`
//! asks again).

mod prompt;
pub mod review;
mod rules;
pub mod signature;
pub mod trust;

use std::sync::{Arc, Mutex};

use serde_json::json;
use wasmtime::component::{HasSelf, Linker};

use super::audit::StageAudit;
use crate::bindings::capstan::plugin::approval as wit;
use crate::caps::state::StageState;
use crate::run::events::{self, Event};
use crate::store::{ApprovalPolicy, ApprovalRow, AuditKind, Decision, PendingApproval, RunStore};
pub use prompt::interactive;
pub use rules::{Asked, Recorded, approver_problem, identify, recorded};
pub use trust::{Identity, Trust};

/// Who started the run, and where, for approval rules and messages.
#[derive(Debug, Clone, Default)]
pub struct RunInfo {
    pub run_id: String,
    /// The operator: `--as`, else the environment (see `commands::identity`).
    pub author: String,
    pub environment: String,
    /// The environment is in `[pipeline] protected`: only humans approve.
    pub protected: bool,
    /// The pipeline file's digest as the run recorded it.
    pub pipeline_digest: String,
    /// The approvers' keys the run recorded (`None`: names only).
    pub signers: Option<signature::AllowedSigners>,
    /// The stage's `image_digest`, resolved: signed with its approvals.
    pub image_digest: Option<String>,
    /// See [`Trust::author_keys`].
    pub author_keys: Vec<String>,
}

impl RunInfo {
    /// What decisions on this run's requests are checked against.
    pub fn trust(&self) -> Trust {
        Trust {
            signers: self.signers.clone(),
            run_id: self.run_id.clone(),
            pipeline_digest: self.pipeline_digest.clone(),
            environment: self.environment.clone(),
            author: self.author.clone(),
            author_keys: self.author_keys.clone(),
        }
    }
}

/// Per-stage state of the `approval` interface.
pub struct ApprovalHost {
    /// The run's secrets, masked in every request before it is shown,
    /// recorded or compared.
    pub redactor: crate::caps::secret::Redactor,
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

/// What an `approval` audit record says of a request: its decision, or
/// that it waits for one.
#[derive(Debug, Clone, Copy, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
enum Outcome {
    Approved,
    Rejected,
    Pending,
}

impl ApprovalHost {
    /// Keep a decision in the run store (the audit log has it too).
    fn store_decision(
        &self,
        request: &wit::Request,
        decision: Decision,
        policy: ApprovalPolicy,
        answer: &wit::Answer,
        override_reason: Option<String>,
        signature: Option<String>,
    ) {
        let row = ApprovalRow {
            stage: self.audit.stage.clone(),
            digest: request.digest.clone(),
            decision,
            by: answer.by.clone(),
            at: answer.at.clone(),
            comment: answer.comment.clone(),
            policy,
            override_reason,
            signature,
        };
        let Some(store) = &self.store else { return };
        if let Err(e) = store.record_approval(&self.run.run_id, &row) {
            eprintln!("capstan: {e} (the decision is in the run's audit.jsonl)");
        }
    }

    fn record(&self, request: &wit::Request, decision: Outcome, extra: serde_json::Value) {
        let mut detail = json!({
            "subject": request.subject,
            "digest": request.digest,
            "decision": decision,
            "author": self.run.author,
            "identity": if self.run.signers.is_some() { "signed" } else { "not verified" },
        });
        if let Some(image) = &self.run.image_digest {
            detail["image_digest"] = json!(image);
        }
        if let (Some(d), Some(e)) = (detail.as_object_mut(), extra.as_object()) {
            d.extend(e.clone());
            // Only humans' decisions are signed or not; a policy's is neither.
            if d.get("policy") != Some(&json!(ApprovalPolicy::Manual)) {
                d.remove("identity");
            }
        }
        if !matches!(decision, Outcome::Pending) {
            let by: Vec<&str> = match &detail["by"] {
                serde_json::Value::Array(names) => {
                    names.iter().filter_map(|n| n.as_str()).collect()
                }
                other => other.as_str().into_iter().collect(),
            };
            events::emit(Event::ApprovalDecided {
                stage: &self.audit.stage,
                digest: &request.digest,
                decision: if matches!(decision, Outcome::Approved) {
                    "approved"
                } else {
                    "rejected"
                },
                by,
            });
        }
        self.audit.allowed(AuditKind::Approval, detail);
    }

    /// Ask humans. `note` (an object) goes into every audit record of the
    /// request, e.g. why the host refused the policy the plugin asked for.
    async fn manual(
        &mut self,
        request: wit::Request,
        note: serde_json::Value,
    ) -> Result<wit::Decision, wit::Error> {
        let with = |extra: serde_json::Value| merged(extra, &note);
        let decisions = match &self.store {
            Some(store) => store
                .approvals(&self.run.run_id)
                .map_err(|e| wit::Error::Unavailable(e.to_string()))?,
            None => return Err(wit::Error::Unavailable("no run store".into())),
        };
        let asked = Asked {
            stage: &self.audit.stage,
            digest: &request.digest,
            image: self.run.image_digest.as_deref(),
            approvers: &request.approvers,
            required: request.required,
        };
        let (approved_by, stale, refused) = match recorded(&decisions, asked, &self.run.trust()) {
            Recorded::Approved(answers) => {
                let by: Vec<&str> = answers.iter().map(|a| a.by.as_str()).collect();
                self.record(
                    &request,
                    Outcome::Approved,
                    with(json!({ "policy": ApprovalPolicy::Manual, "by": by, "source": "run store" })),
                );
                return Ok(wit::Decision::Approved(answers));
            }
            Recorded::Rejected(answer) => {
                self.record(&request, Outcome::Rejected, with(json!({ "policy": ApprovalPolicy::Manual, "by": answer.by, "comment": answer.comment, "source": "run store" })));
                return Ok(wit::Decision::Rejected(answer));
            }
            Recorded::Open {
                approved_by,
                stale,
                refused,
            } => (approved_by, stale, refused),
        };
        if !self.interactive {
            return Ok(self.wait_for_approvers(&request, &approved_by, &stale, &refused, &note));
        }
        let _one_at_a_time = prompt::PROMPT.lock().await;
        let run = self.run.clone();
        let stage = self.audit.stage.clone();
        let asked = request.clone();
        let (decision, signatures) = tokio::task::spawn_blocking(move || {
            crate::run::progress::suspend(|| prompt::prompt(&asked, &run, &stage))
        })
        .await
        .map_err(|e| wit::Error::Unavailable(format!("the prompt failed: {e}")))?
        .map_err(|e| wit::Error::Unavailable(format!("cannot read the answer: {e}")))?;
        match &decision {
            wit::Decision::Approved(answers) => {
                let by: Vec<&str> = answers.iter().map(|a| a.by.as_str()).collect();
                self.record(&request, Outcome::Approved, with(json!({ "policy": ApprovalPolicy::Manual, "by": by, "answers": answers.iter().map(|a| json!({"by": a.by, "at": a.at, "comment": a.comment})).collect::<Vec<_>>() })));
                for (a, signature) in answers.iter().zip(signatures) {
                    self.store_decision(
                        &request,
                        Decision::Approved,
                        ApprovalPolicy::Terminal,
                        a,
                        None,
                        signature,
                    );
                }
            }
            wit::Decision::Rejected(a) => {
                self.record(
                    &request,
                    Outcome::Rejected,
                    with(json!({ "policy": ApprovalPolicy::Manual, "by": a.by, "comment": a.comment })),
                );
                self.store_decision(
                    &request,
                    Decision::Rejected,
                    ApprovalPolicy::Terminal,
                    a,
                    None,
                    signatures.into_iter().next().flatten(),
                );
            }
            // Nobody answered at the prompt: pending, as without a terminal,
            // so that `capstan approve` can answer it later.
            wit::Decision::Pending(_) => {
                return Ok(self.wait_for_approvers(
                    &request,
                    &approved_by,
                    &stale,
                    &refused,
                    &note,
                ));
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
        refused: &[(String, String)],
        note: &serde_json::Value,
    ) -> wit::Decision {
        let run = &self.run.run_id;
        let required = request.required.max(1);
        let mut how = format!(
            "stage `{}` of run {run} waits for approval of {} ({}); {} of {required} approvals so far{}. \
             Review it with `capstan show {run}`; approve from any terminal or CI job with \
             `capstan approve {run} {}`, then \
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
            if self.run.signers.is_some() {
                "--key <your private key file> (or through ssh-agent)"
            } else {
                "--as <name>"
            },
            self.run.author
        );
        if let Some(refused) = note["refused"].as_str() {
            how.push_str(&format!(" The plugin's policy was not used: {refused}."));
        }
        for (by, digest) in stale {
            how.push_str(&format!(
                " The approval by {by} was for {}, an earlier plan: it does not count for this one.",
                short(digest)
            ));
        }
        for (by, why) in refused {
            how.push_str(&format!(
                " The decision recorded for {} does not count: {}.",
                crate::text::inline(by),
                crate::text::inline(why)
            ));
        }
        let pending = self.asked(request);
        if let Some(Err(e)) = self.store.as_ref().map(|s| s.ask_approval(run, &pending)) {
            how.push_str(&format!(" (warning: {e})"));
        }
        self.record(
            request,
            Outcome::Pending,
            merged(json!({ "approved_by": approved_by }), note),
        );
        events::emit(Event::ApprovalRequested {
            stage: &self.audit.stage,
            digest: &request.digest,
            subject: &request.subject,
            required,
            how: &how,
        });
        *self.pending.lock().expect("pending lock") = Some(how.clone());
        wit::Decision::Pending(how)
    }
}

impl ApprovalHost {
    /// The request as the run store keeps it.
    fn asked(&self, request: &wit::Request) -> PendingApproval {
        PendingApproval {
            image_digest: self.run.image_digest.clone(),
            stage: self.audit.stage.clone(),
            digest: request.digest.clone(),
            subject: request.subject.clone(),
            details: request.details.clone(),
            checklist: request.checklist.clone(),
            approvers: request.approvers.clone(),
            required: request.required.max(1),
            asked: now(),
        }
    }

    /// Keep the request as asked, whatever the answer, for `capstan show`.
    fn keep_request(&self, request: &wit::Request) {
        let Some(store) = &self.store else { return };
        if let Err(e) = store.record_request(&self.run.run_id, &self.asked(request)) {
            eprintln!("capstan: {e} (`capstan show` will not have the request's details)");
        }
    }
}

/// `extra`'s fields, then `note`'s (both JSON objects).
fn merged(mut extra: serde_json::Value, note: &serde_json::Value) -> serde_json::Value {
    if let (Some(e), Some(n)) = (extra.as_object_mut(), note.as_object()) {
        e.extend(n.clone());
    }
    extra
}

pub fn short(digest: &str) -> &str {
    digest.get(..12).unwrap_or(digest)
}

impl wit::Host for ApprovalHost {
    async fn ask(
        &mut self,
        mut request: wit::Request,
    ) -> wasmtime::Result<Result<wit::Decision, wit::Error>> {
        redact_request(&self.redactor, &mut request);
        // The request is recorded (audit log, run store): its text counts.
        let size = request.subject.len()
            + request.digest.len()
            + request.details.len()
            + request.checklist.iter().map(String::len).sum::<usize>()
            + request.approvers.iter().map(String::len).sum::<usize>();
        self.audit.charge(size)?;
        if !self.granted {
            let reason =
                "approval is not granted; add `approval = true` to the stage's grants".to_string();
            self.audit.denied(
                AuditKind::Approval,
                json!({ "subject": request.subject, "digest": request.digest }),
                &reason,
            );
            return Ok(Err(wit::Error::NotPermitted(reason)));
        }
        self.keep_request(&request);
        if let Some(note) = rules::refused_in_protected(&request.policy, &self.run) {
            return Ok(self.manual(request, note).await);
        }
        Ok(match request.policy.clone() {
            wit::Policy::Manual => self.manual(request, json!({})).await,
            wit::Policy::Automatic(why) => {
                let answer = wit::Answer {
                    by: "capstan (automatic policy)".into(),
                    at: now(),
                    comment: Some(why.clone()),
                };
                self.record(
                    &request,
                    Outcome::Approved,
                    json!({ "policy": ApprovalPolicy::Automatic, "why": why }),
                );
                self.store_decision(
                    &request,
                    Decision::Approved,
                    ApprovalPolicy::Automatic,
                    &answer,
                    None,
                    None,
                );
                Ok(wit::Decision::Approved(vec![answer]))
            }
            wit::Policy::EmergencyOverride(o) if o.reason.trim().is_empty() => {
                let reason = "an emergency override needs a reason".to_string();
                self.audit.denied(AuditKind::Approval, json!({ "subject": request.subject, "digest": request.digest, "policy": ApprovalPolicy::EmergencyOverride, "claimed_by": o.by }), &reason);
                Err(wit::Error::NotPermitted(reason))
            }
            wit::Policy::EmergencyOverride(o) => self.emergency_override(request, o).await,
        })
    }
}

impl ApprovalHost {
    /// An override the plugin asked for, outside protected environments.
    /// It is the operator's: recorded under the run's author, never under
    /// the name the plugin gives (kept as `claimed_by`); on a terminal the
    /// operator confirms it first, and declining asks humans as usual.
    async fn emergency_override(
        &mut self,
        request: wit::Request,
        o: wit::Emergency,
    ) -> Result<wit::Decision, wit::Error> {
        let operator = self.run.author.clone();
        if self.interactive {
            let one_at_a_time = prompt::PROMPT.lock().await;
            let (run, stage, asked, claimed) = (
                self.run.clone(),
                self.audit.stage.clone(),
                request.clone(),
                o.clone(),
            );
            let confirmed = tokio::task::spawn_blocking(move || {
                let stdin = std::io::stdin();
                crate::run::progress::suspend(|| {
                    prompt::confirm_override(
                        &mut stdin.lock(),
                        &mut std::io::stderr().lock(),
                        &asked,
                        &claimed,
                        &run,
                        &stage,
                    )
                })
            })
            .await
            .map_err(|e| wit::Error::Unavailable(format!("the prompt failed: {e}")))?
            .map_err(|e| wit::Error::Unavailable(format!("cannot read the answer: {e}")))?;
            if !confirmed {
                let note = json!({
                    "requested_policy": ApprovalPolicy::EmergencyOverride,
                    "claimed_by": o.by,
                    "override_reason": o.reason,
                    "refused": format!("{operator} declined the emergency override at the terminal; humans are asked"),
                });
                drop(one_at_a_time);
                return self.manual(request, note).await;
            }
        }
        eprintln!(
            "\n!!! EMERGENCY OVERRIDE: stage `{}` of run {} approved without review by {operator} \
             (the operator running capstan; the plugin names \"{}\"): {}\n",
            self.audit.stage,
            self.run.run_id,
            crate::text::inline(&o.by),
            crate::text::inline(&o.reason)
        );
        self.record(
            &request,
            Outcome::Approved,
            json!({ "policy": ApprovalPolicy::EmergencyOverride, "override": true, "by": operator, "claimed_by": o.by,
                    "reason": o.reason, "confirmed_at_terminal": self.interactive }),
        );
        let answer = wit::Answer {
            by: operator,
            at: now(),
            comment: Some(format!("EMERGENCY OVERRIDE: {}", o.reason)),
        };
        self.store_decision(
            &request,
            Decision::Approved,
            ApprovalPolicy::EmergencyOverride,
            &answer,
            Some(o.reason.clone()),
            None,
        );
        Ok(wit::Decision::Approved(vec![answer]))
    }
}

/// Every text of `request` with the run's secrets masked: it is shown to
/// reviewers, at the prompt and by `capstan show`, and recorded.
fn redact_request(redactor: &crate::caps::secret::Redactor, request: &mut wit::Request) {
    let texts = [
        &mut request.subject,
        &mut request.digest,
        &mut request.details,
    ]
    .into_iter()
    .chain(request.checklist.iter_mut())
    .chain(request.approvers.iter_mut());
    for text in texts {
        redactor.redact_string(text);
    }
    match &mut request.policy {
        wit::Policy::Manual => {}
        wit::Policy::Automatic(why) => redactor.redact_string(why),
        wit::Policy::EmergencyOverride(o) => {
            redactor.redact_string(&mut o.by);
            redactor.redact_string(&mut o.reason);
        }
    }
}

pub fn add_to_linker(linker: &mut Linker<StageState>) -> wasmtime::Result<()> {
    wit::add_to_linker::<StageState, HasSelf<ApprovalHost>>(linker, |s| &mut s.approval)
}
