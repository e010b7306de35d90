//! The `approval` capability: asking humans, bound to a digest. Automatic
//! approvals and emergency overrides are decided by the plugin's policy but
//! recorded here; manual ones are prompted for on a terminal, or answered
//! `pending` without one (the run then stops, waiting for approval).

use std::io::{BufRead, IsTerminal, Write};
use std::sync::{Arc, Mutex};

use serde_json::json;
use wasmtime::component::{HasSelf, Linker};

use super::audit::StageAudit;
use crate::runtime::StageState;
use crate::runtime::bindings::capstan::plugin::approval as wit;

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
        if !self.interactive {
            let how = format!(
                "stage `{}` of run {} waits for approval of {} ({}). Approve it by running the pipeline \
                 from a terminal, where Capstan prompts for approvers; the run's author ({}) may not approve.",
                self.audit.stage, self.run.run_id, request.digest, request.subject, self.run.author
            );
            self.record(&request, "pending", json!({}));
            *self.pending.lock().expect("pending lock") = Some(how.clone());
            return Ok(wit::Decision::Pending(how));
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
            }
            wit::Decision::Rejected(a) => self.record(
                &request,
                "rejected",
                json!({ "policy": "manual", "by": a.by, "comment": a.comment }),
            ),
            wit::Decision::Pending(how) => {
                self.record(&request, "pending", json!({ "policy": "manual" }));
                *self.pending.lock().expect("pending lock") = Some(how.clone());
            }
        }
        Ok(decision)
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
        if name == run.author {
            writeln!(
                err,
                "{name} started this run and may not approve it; another person must."
            )?;
            continue;
        }
        if !request.approvers.is_empty() && !request.approvers.contains(&name) {
            writeln!(err, "{name} is not an approver ({who}).")?;
            continue;
        }
        if answers.iter().any(|a| a.by == name) {
            writeln!(
                err,
                "{name} has already approved; {} more needed from someone else.",
                request.required as usize - answers.len()
            )?;
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

fn short(digest: &str) -> &str {
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
                Ok(wit::Decision::Approved(vec![answer]))
            }
        })
    }
}

pub fn add_to_linker(linker: &mut Linker<StageState>) -> wasmtime::Result<()> {
    wit::add_to_linker::<StageState, HasSelf<ApprovalHost>>(linker, |s| &mut s.approval)
}
