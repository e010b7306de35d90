//! Answering a paused run's approval request from outside the run
//! (`capstan approve`, `capstan reject`): which runs can be answered, the
//! decision an answer records, and a rejection ending the run.

use std::sync::Arc;

use serde_json::json;

use crate::caps::approval::signature::{Key, sign_with};
use crate::caps::approval::{
    Asked, Identity, Recorded, Trust, approver_problem, identify, recorded, short,
};
use crate::caps::audit::{self, AppendError};
use crate::store::{
    ApprovalPolicy, ApprovalRow, AuditKind, Decision, PendingApproval, RunRow, RunState, RunStore,
    StageState, StoreError, latest_attempts,
};
use crate::text::inline;

/// Why an answer is refused.
#[derive(Debug, thiserror::Error)]
pub enum AnswerError {
    #[error("run {id} is {state}, not waiting for approval; nothing to answer")]
    NotWaiting { id: String, state: RunState },
    #[error("run {id} has no open approval request")]
    NoRequest { id: String },
    #[error(
        "you reviewed {reviewed}, but run {id} waits for approval of {} ({}), not of what you reviewed \
         (it may have been re-planned). Review it (`capstan show {id}`) and approve that digest.",
        inline(digest),
        inline(subject)
    )]
    OtherDigest {
        reviewed: String,
        id: String,
        digest: String,
        subject: String,
    },
    #[error("an emergency override needs a reason: --emergency \"<why>\"")]
    NoOverrideReason,
    #[error(
        "run {id} is already decided for {}; `capstan resume {id}` continues it",
        inline(short(digest))
    )]
    Decided { id: String, digest: String },
    /// The rules say this person may not approve (see [`approver_problem`]).
    #[error("{} (run {id}, environment `{environment}`)", inline(problem))]
    NotAllowed {
        problem: String,
        id: String,
        environment: String,
    },
    /// The run's recorded approvers' keys cannot be read.
    #[error("{0}")]
    Approvers(String),
    /// The answer could not be signed, or its signature does not count.
    #[error("{} (run {id}, environment `{environment}`)", inline(problem))]
    Unsigned {
        problem: String,
        id: String,
        environment: String,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A paused run and the request it waits on.
#[derive(Debug, Clone)]
pub struct Waiting {
    pub run: RunRow,
    pub request: PendingApproval,
    /// What answers are checked against (the run's approvers' keys).
    pub trust: Trust,
}

/// The run `id` names, if it waits for an answer.
pub fn waiting(store: &dyn RunStore, id: &str) -> Result<Waiting, AnswerError> {
    let run = store.run(id)?;
    if run.status != RunState::AwaitingApproval {
        return Err(AnswerError::NotWaiting {
            id: run.id,
            state: run.status,
        });
    }
    let request = store
        .pending_approval(&run.id)?
        .ok_or_else(|| AnswerError::NoRequest { id: run.id.clone() })?;
    let trust = Trust::of_run(&run).map_err(AnswerError::Approvers)?;
    Ok(Waiting {
        run,
        request,
        trust,
    })
}

/// How an answer is signed, when the run lists approvers' keys.
#[derive(Debug, Clone, Default)]
pub struct Signing<'a> {
    /// The key (default: ssh-agent's listed key).
    pub key: Option<&'a Key>,
    /// The name the approver gave (`--as`): it must be the key's principal.
    pub claimed: Option<&'a str>,
}

/// Who answers, and how.
#[derive(Debug, Clone)]
pub struct Approval<'a> {
    pub by: &'a str,
    pub comment: Option<&'a str>,
    /// The digest the approver reviewed (its first 12+ characters).
    pub reviewed: Option<&'a str>,
    /// An emergency override's reason: approve alone, without review.
    pub emergency: Option<&'a str>,
    pub at: &'a str,
    /// How to sign it (used when the run lists approvers' keys).
    pub signing: Signing<'a>,
}

impl Waiting {
    /// What the decisions recorded so far (`decisions`: the run's) add up
    /// to for the request.
    pub fn tally(&self, decisions: &[ApprovalRow]) -> Recorded {
        let asked = Asked {
            stage: &self.request.stage,
            digest: &self.request.digest,
            image: self.request.image_digest.as_deref(),
            approvers: &self.request.approvers,
            required: self.request.required,
        };
        recorded(decisions, asked, &self.trust)
    }

    /// `row` signed as `signing` says, when the run lists approvers' keys:
    /// recorded under the key's principal, and refused unless it would
    /// count (a listed key, not the author's). Unchanged otherwise.
    pub fn signed(
        &self,
        mut row: ApprovalRow,
        signing: &Signing,
    ) -> Result<ApprovalRow, AnswerError> {
        let Some(signers) = &self.trust.signers else {
            return Ok(row);
        };
        let refused = |problem: String| AnswerError::Unsigned {
            problem,
            id: self.run.id.clone(),
            environment: self.run.environment.clone(),
        };
        let image = self.request.image_digest.as_deref();
        let statement = self.trust.statement(&row, image).map_err(refused)?;
        let key = signing.key.cloned().unwrap_or(Key::Agent);
        let signature = sign_with(&statement, &key, signers).map_err(|e| refused(e.to_string()))?;
        let principal = signers
            .verify(&statement, &signature)
            .map_err(|e| refused(e.to_string()))?;
        if let Some(claimed) = signing.claimed.filter(|c| *c != principal) {
            return Err(refused(format!(
                "the key is {principal}'s (allowed_signers), not {claimed}'s: drop --as, or sign with {claimed}'s key"
            )));
        }
        row.by = principal;
        row.signature = Some(signature);
        match identify(&self.trust, &row, image) {
            Identity::Verified(_) => Ok(row),
            Identity::Refused(why) => Err(refused(why)),
            Identity::Unverified => unreachable!("the run lists keys"),
        }
    }

    /// The approval to record for `a`, if the rules allow it: it is for the
    /// digest reviewed; an override has a reason; otherwise the request is
    /// still open and `a.by` may approve it.
    pub fn approval(
        &self,
        a: &Approval,
        decisions: &[ApprovalRow],
    ) -> Result<ApprovalRow, AnswerError> {
        let (run, request) = (&self.run, &self.request);
        if let Some(reviewed) = a.reviewed
            && (reviewed.len() < 12 || !request.digest.starts_with(reviewed))
        {
            return Err(AnswerError::OtherDigest {
                reviewed: reviewed.to_string(),
                id: run.id.clone(),
                digest: request.digest.clone(),
                subject: request.subject.clone(),
            });
        }
        let row = self.row(Decision::Approved, a.by, a.comment, a.at);
        match a.emergency {
            Some(reason) if reason.trim().is_empty() => Err(AnswerError::NoOverrideReason),
            Some(reason) => self.signed(
                ApprovalRow {
                    policy: ApprovalPolicy::EmergencyOverride,
                    override_reason: Some(reason.to_string()),
                    ..row
                },
                &a.signing,
            ),
            None => {
                let row = self.signed(row, &a.signing)?;
                let Recorded::Open { approved_by, .. } = self.tally(decisions) else {
                    return Err(AnswerError::Decided {
                        id: run.id.clone(),
                        digest: request.digest.clone(),
                    });
                };
                match approver_problem(&row.by, &run.author, &request.approvers, &approved_by) {
                    Some(problem) => Err(AnswerError::NotAllowed {
                        problem,
                        id: run.id.clone(),
                        environment: run.environment.clone(),
                    }),
                    None => Ok(row),
                }
            }
        }
    }

    /// A manual decision on the request.
    fn row(&self, decision: Decision, by: &str, comment: Option<&str>, at: &str) -> ApprovalRow {
        ApprovalRow {
            stage: self.request.stage.clone(),
            digest: self.request.digest.clone(),
            decision,
            by: by.to_string(),
            at: at.to_string(),
            comment: comment.map(str::to_string),
            policy: ApprovalPolicy::Manual,
            override_reason: None,
            signature: None,
        }
    }

    /// Keep a decision in the run store and append it to the run's
    /// audit.jsonl (`via`: the command). Returns a warning when the audit
    /// log could not be appended to (the store has the decision).
    pub fn record(
        &self,
        store: &Arc<dyn RunStore>,
        row: &ApprovalRow,
        via: &str,
    ) -> Result<Option<AppendError>, StoreError> {
        store.record_approval(&self.run.id, row)?;
        let detail = json!({"decision": row.decision, "by": row.by, "digest": row.digest, "comment": row.comment,
                            "policy": row.policy, "override_reason": row.override_reason, "via": via,
                            "identity": if row.signature.is_some() { "signed" } else { "not verified" },
                            "signature": row.signature});
        Ok(audit::append(
            store.clone(),
            &self.run,
            &row.stage,
            AuditKind::Approval,
            detail,
        )
        .err())
    }

    /// Reject the request: the decision is recorded, the paused stage ends
    /// as failed, the run as rejected, and the environment is free again.
    /// Returns a warning as [`Waiting::record`] does.
    pub fn reject(
        &self,
        store: &Arc<dyn RunStore>,
        by: &str,
        comment: Option<&str>,
        at: &str,
        signing: &Signing,
    ) -> Result<Option<AppendError>, AnswerError> {
        let run = &self.run;
        let row = self.signed(self.row(Decision::Rejected, by, comment, at), signing)?;
        let by = row.by.as_str();
        let warning = self.record(store, &row, "capstan reject")?;
        let stages = latest_attempts(store.stages(&run.id)?);
        if let Some(stage) = stages.into_iter().find(|s| s.name == self.request.stage) {
            let attempt = stage.attempt;
            let reason = format!(
                "rejected by {by}{}",
                comment.map(|c| format!(": {c}")).unwrap_or_default()
            );
            let ended = crate::store::StageRow {
                status: StageState::Failed,
                message: reason,
                ended: Some(at.to_string()),
                ..stage
            };
            store.end_stage(&run.id, Some(attempt), &ended)?;
        }
        store.finish_run(&run.id, RunState::Rejected, at, None)?;
        store.unlock(&run.environment, &run.id)?;
        Ok(warning)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::run::testing::{Runs, attempt};
    use crate::store::{Lock, Owner, RunKind};

    const DIGEST: &str = "0123456789abcdef";

    /// A production run by alice, paused at `approve` for DIGEST, holding
    /// the lock.
    fn paused(runs: &Runs) -> Waiting {
        let store = &runs.store;
        runs.run_at("r", "prod", RunKind::Deploy, 0, RunState::Running);
        store.try_lock("prod", "r", &Owner::current()).unwrap();
        let a = store.start_stage("r", "approve", "x", "t").unwrap();
        let paused = attempt("approve", a, StageState::AwaitingApproval);
        store.end_stage("r", Some(a), &paused).unwrap();
        let request = PendingApproval {
            stage: "approve".into(),
            digest: DIGEST.into(),
            subject: "plan: 1 to add".into(),
            details: String::new(),
            checklist: vec![],
            approvers: vec![],
            required: 1,
            asked: "t".into(),
            image_digest: None,
        };
        store.ask_approval("r", &request).unwrap();
        let state = RunState::AwaitingApproval;
        store.finish_run("r", state, "t", None).unwrap();
        waiting(store.as_ref(), "r").unwrap()
    }

    fn by(name: &str) -> Approval<'_> {
        Approval {
            by: name,
            comment: None,
            reviewed: None,
            emergency: None,
            at: "t",
            signing: Signing::default(),
        }
    }

    #[test]
    fn only_a_paused_run_with_a_request_is_answered() {
        let runs = Runs::new();
        let store = runs.store.as_ref();
        runs.run("done", RunState::Succeeded);
        assert_eq!(
            waiting(store, "done").unwrap_err().to_string(),
            "run done is succeeded, not waiting for approval; nothing to answer"
        );
        runs.run("bare", RunState::AwaitingApproval);
        assert_eq!(
            waiting(store, "bare").unwrap_err().to_string(),
            "run bare has no open approval request"
        );
        assert!(matches!(
            waiting(store, "nope"),
            Err(AnswerError::Store(e)) if e.is_unknown_run()
        ));
    }

    #[test]
    fn an_approval_is_for_the_digest_reviewed_by_someone_who_may_give_it() {
        let runs = Runs::new();
        let w = paused(&runs);
        let refused = |a: &Approval, decisions: &[ApprovalRow]| {
            w.approval(a, decisions).unwrap_err().to_string()
        };
        let row = w.approval(&by("bob"), &[]).unwrap();
        assert_eq!(
            (row.decision, row.policy, row.digest.as_str()),
            (Decision::Approved, ApprovalPolicy::Manual, DIGEST)
        );
        let reviewing = |digest| Approval {
            reviewed: Some(digest),
            ..by("bob")
        };
        w.approval(&reviewing("0123456789ab"), &[]).unwrap();
        for reviewed in ["0123", "fedcba9876543210"] {
            let refusal = refused(&reviewing(reviewed), &[]);
            assert!(
                refusal.starts_with(&format!(
                    "you reviewed {reviewed}, but run r waits for approval of {DIGEST} (plan: 1 to add)"
                )),
                "{refusal}"
            );
        }
        assert_eq!(
            refused(&by("alice"), &[]),
            "alice started this run and may not approve it; another person must (run r, environment `prod`)"
        );
        assert_eq!(
            refused(&by("carol"), std::slice::from_ref(&row)),
            "run r is already decided for 0123456789ab; `capstan resume r` continues it"
        );
        let overriding = |reason| Approval {
            emergency: Some(reason),
            ..by("alice")
        };
        assert_eq!(
            refused(&overriding(" "), &[]),
            "an emergency override needs a reason: --emergency \"<why>\""
        );
        // An override is the operator's, alone, whatever was decided.
        let over = w.approval(&overriding("outage"), &[row]).unwrap();
        assert_eq!(
            (over.policy, over.override_reason.as_deref()),
            (ApprovalPolicy::EmergencyOverride, Some("outage"))
        );
    }

    #[test]
    fn a_rejection_ends_the_stage_and_the_run_and_frees_the_environment() {
        let runs = Runs::new();
        let store = &runs.store;
        let w = paused(&runs);
        let warning = w
            .reject(
                store,
                "bob",
                Some("destroys the db"),
                "t2",
                &Signing::default(),
            )
            .unwrap();
        assert!(warning.is_none(), "{warning:?}");
        let stage = latest_attempts(store.stages("r").unwrap()).remove(0);
        assert_eq!(
            (stage.status, stage.message.as_str(), stage.attempt),
            (StageState::Failed, "rejected by bob: destroys the db", 1)
        );
        assert_eq!(store.run("r").unwrap().status, RunState::Rejected);
        let decision = &store.approvals("r").unwrap()[0];
        assert_eq!(
            (decision.decision, decision.by.as_str()),
            (Decision::Rejected, "bob")
        );
        let events = store.audit_events("r").unwrap();
        assert_eq!(
            (&events[0].capability, &events[0].detail["via"]),
            (&AuditKind::Approval, &json!("capstan reject"))
        );
        assert!(matches!(
            store.try_lock("prod", "next", &Owner::current()).unwrap(),
            Lock::Acquired {
                released_stale: None
            }
        ));
    }
}
