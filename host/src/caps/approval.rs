//! The `approval` capability: asking humans, bound to a digest. Automatic
//! approvals and emergency overrides are decided by the plugin's policy but
//! recorded here; manual ones come from the run store (`capstan approve`,
//! for this digest), a terminal prompt, or are answered `pending` (the run
//! then stops, waiting for approval, and `capstan resume` asks again).

use std::io::{BufRead, IsTerminal, Write};
use std::sync::{Arc, Mutex};

use serde_json::json;
use wasmtime::component::{HasSelf, Linker};

use super::audit::StageAudit;
use crate::runtime::StageState;
use crate::runtime::bindings::capstan::plugin::approval as wit;
use crate::store::{ApprovalRow, PendingApproval, RunStore};

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

/// Why `name` may not approve a request, if they may not: the run's author
/// never approves their own run, only listed approvers approve (when there
/// is a list), and each approver counts once.
pub fn approver_problem(
    name: &str,
    author: &str,
    approvers: &[String],
    already: &[String],
) -> Option<String> {
    if name.trim().is_empty() {
        return Some("an approver needs a name".into());
    }
    if name == author {
        return Some(format!(
            "{name} started this run and may not approve it; another person must"
        ));
    }
    if !approvers.is_empty() && !approvers.iter().any(|a| a == name) {
        return Some(format!(
            "{name} is not an approver of this request ({})",
            approvers.join(", ")
        ));
    }
    if already.iter().any(|a| a == name) {
        return Some(format!(
            "{name} has already approved; another person must give the next approval"
        ));
    }
    None
}

/// What the run store says about a request: decided, or how far along.
#[derive(Debug)]
pub enum Recorded {
    Approved(Vec<wit::Answer>),
    Rejected(wit::Answer),
    Open {
        approved_by: Vec<String>,
        /// Approvals given for another digest (an earlier plan).
        stale: Vec<(String, String)>,
    },
}

/// Decide `request` from the decisions recorded for `stage`: only those for
/// the request's digest count.
pub fn recorded(
    decisions: &[ApprovalRow],
    stage: &str,
    request_digest: &str,
    author: &str,
    approvers: &[String],
    required: u32,
) -> Recorded {
    let answer = |d: &ApprovalRow| wit::Answer {
        by: d.by.clone(),
        at: d.at.clone(),
        comment: d.comment.clone(),
    };
    let mine = decisions.iter().filter(|d| d.stage == stage);
    let mut approved: Vec<&ApprovalRow> = Vec::new();
    let mut stale = Vec::new();
    for d in mine {
        if d.digest != request_digest {
            if d.decision == "approved" && d.policy != "automatic" {
                stale.push((d.by.clone(), d.digest.clone()));
            }
            continue;
        }
        match (d.decision.as_str(), d.policy.as_str()) {
            ("rejected", _) => return Recorded::Rejected(answer(d)),
            ("approved", "emergency-override") => return Recorded::Approved(vec![answer(d)]),
            ("approved", "manual" | "terminal") => {
                let already: Vec<String> = approved.iter().map(|a| a.by.clone()).collect();
                if approver_problem(&d.by, author, approvers, &already).is_none() {
                    approved.push(d);
                }
            }
            _ => {}
        }
    }
    if approved.len() >= required.max(1) as usize {
        return Recorded::Approved(approved.into_iter().map(answer).collect());
    }
    Recorded::Open {
        approved_by: approved.iter().map(|a| a.by.clone()).collect(),
        stale,
    }
}

/// One prompt at a time, whatever the number of stages asking.
static PROMPT: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Whether this process can prompt a human.
pub fn interactive() -> bool {
    std::io::stdin().is_terminal() && std::io::stderr().is_terminal()
}

fn now() -> String {
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
        let _one_at_a_time = PROMPT.lock().await;
        let run = self.run.clone();
        let stage = self.audit.stage.clone();
        let asked = request.clone();
        let decision = tokio::task::spawn_blocking(move || prompt(&asked, &run, &stage))
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
            wit::Decision::Pending(how) => {
                self.record(&request, "pending", json!({ "policy": "manual" }));
                *self.pending.lock().expect("pending lock") = Some(how.clone());
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

/// Ask on the terminal until `required` distinct approvers said yes, one
/// said no, or nobody answered.
fn prompt(request: &wit::Request, run: &RunInfo, stage: &str) -> std::io::Result<wit::Decision> {
    let mut err = std::io::stderr().lock();
    let stdin = std::io::stdin();
    let mut lines = stdin.lock().lines();
    let mut ask = |err: &mut std::io::StderrLock, question: &str| -> std::io::Result<String> {
        write!(err, "{question}")?;
        err.flush()?;
        Ok(lines
            .next()
            .transpose()?
            .unwrap_or_default()
            .trim()
            .to_string())
    };
    writeln!(
        err,
        "\n━━ approval needed: stage `{stage}` of run {} (environment {}) ━━",
        run.run_id, run.environment
    )?;
    writeln!(err, "{}\ndigest: {}", request.subject, request.digest)?;
    if !request.details.is_empty() {
        writeln!(err, "\n{}\n", request.details.trim_end())?;
    }
    for item in &request.checklist {
        writeln!(err, "  [ ] {item}")?;
    }
    let who = if request.approvers.is_empty() {
        "anyone".to_string()
    } else {
        request.approvers.join(", ")
    };
    writeln!(
        err,
        "approvers: {who}; {} required; the run's author ({}) may not approve",
        request.required.max(1),
        run.author
    )?;
    let mut answers: Vec<wit::Answer> = Vec::new();
    while answers.len() < request.required.max(1) as usize {
        let name = ask(&mut err, "approver name (empty: leave it pending): ")?;
        if name.is_empty() {
            return Ok(wit::Decision::Pending(format!(
                "nobody approved at the prompt; run it again from a terminal to approve stage `{stage}`"
            )));
        }
        let already: Vec<String> = answers.iter().map(|a| a.by.clone()).collect();
        if let Some(problem) = approver_problem(&name, &run.author, &request.approvers, &already) {
            writeln!(err, "{problem}.")?;
            continue;
        }
        let yes = ask(
            &mut err,
            &format!("{name}: approve {}? [yes/no]: ", short(&request.digest)),
        )?;
        let comment = ask(&mut err, "comment (optional): ")?;
        let answer = wit::Answer {
            by: name,
            at: now(),
            comment: (!comment.is_empty()).then_some(comment),
        };
        match yes.to_ascii_lowercase().as_str() {
            "yes" | "y" => answers.push(answer),
            _ => return Ok(wit::Decision::Rejected(answer)),
        }
    }
    Ok(wit::Decision::Approved(answers))
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

#[cfg(test)]
mod tests {
    use super::*;

    fn row(by: &str, digest: &str, decision: &str, policy: &str) -> ApprovalRow {
        ApprovalRow {
            stage: "approve".into(),
            digest: digest.into(),
            decision: decision.into(),
            by: by.into(),
            at: "t".into(),
            comment: None,
            policy: policy.into(),
            override_reason: None,
        }
    }

    fn by(r: Recorded) -> String {
        match r {
            Recorded::Approved(a) => format!(
                "approved:{}",
                a.iter()
                    .map(|a| a.by.as_str())
                    .collect::<Vec<_>>()
                    .join(",")
            ),
            Recorded::Rejected(a) => format!("rejected:{}", a.by),
            Recorded::Open { approved_by, stale } => format!(
                "open:{}|stale:{}",
                approved_by.join(","),
                stale
                    .iter()
                    .map(|(b, d)| format!("{b}@{d}"))
                    .collect::<Vec<_>>()
                    .join(",")
            ),
        }
    }

    #[test]
    fn only_decisions_for_the_requested_digest_count() {
        let none: Vec<String> = vec![];
        let two = vec!["bob".to_string(), "carol".to_string(), "dave".to_string()];
        #[rustfmt::skip]
        let cases: Vec<(Vec<ApprovalRow>, &[String], u32, &str)> = vec![
            (vec![], &none, 1, "open:|stale:"),
            (vec![row("bob", "D2", "approved", "manual")], &none, 1, "approved:bob"),
            // approved for an earlier plan: does not count, and is reported
            (vec![row("bob", "D1", "approved", "manual")], &none, 1, "open:|stale:bob@D1"),
            // the author's own approval never counts
            (vec![row("alice", "D2", "approved", "manual")], &none, 1, "open:|stale:"),
            // N of M: two different listed approvers
            (vec![row("bob", "D2", "approved", "manual")], &two, 2, "open:bob|stale:"),
            (vec![row("bob", "D2", "approved", "manual"), row("bob", "D2", "approved", "manual")], &two, 2, "open:bob|stale:"),
            (vec![row("bob", "D2", "approved", "manual"), row("eve", "D2", "approved", "manual")], &two, 2, "open:bob|stale:"),
            (vec![row("bob", "D2", "approved", "manual"), row("carol", "D2", "approved", "terminal")], &two, 2, "approved:bob,carol"),
            // a rejection ends it; an emergency override alone approves it
            (vec![row("bob", "D2", "approved", "manual"), row("carol", "D2", "rejected", "manual")], &two, 2, "rejected:carol"),
            (vec![row("alice", "D2", "approved", "emergency-override")], &two, 2, "approved:alice"),
            // an automatic approval (dev) is not a manual one
            (vec![row("capstan", "D2", "approved", "automatic")], &none, 1, "open:|stale:"),
        ];
        for (decisions, approvers, required, want) in cases {
            let got = by(recorded(
                &decisions, "approve", "D2", "alice", approvers, required,
            ));
            assert_eq!(got, want, "{decisions:?}");
        }
    }

    #[test]
    fn approver_rules() {
        let list = vec!["bob".to_string()];
        assert!(approver_problem("bob", "alice", &list, &[]).is_none());
        assert!(
            approver_problem("alice", "alice", &[], &[])
                .unwrap()
                .contains("started this run")
        );
        assert!(
            approver_problem("eve", "alice", &list, &[])
                .unwrap()
                .contains("not an approver")
        );
        assert!(
            approver_problem("bob", "alice", &list, &["bob".into()])
                .unwrap()
                .contains("already approved")
        );
        assert!(approver_problem(" ", "alice", &[], &[]).is_some());
    }
}
