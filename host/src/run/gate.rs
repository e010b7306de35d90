//! `requires_approval`: a stage that acts on an approved digest (applying a
//! plan) starts only when the decisions recorded for it add up, checked by
//! the host whatever the plugins say: the digest in the stage's resolved
//! `with` was asked for at the approval stage and approved as that request
//! required (distinct approvers, not the author, and, when the run lists
//! approvers' keys, each decision signed by a listed key over this run,
//! pipeline, digest and image). An automatic approval or a plugin's
//! override counts alone only outside protected environments.

use serde_json::Value;

use crate::caps::approval::{Asked, RunInfo, Trust, recorded, short};
use crate::pipeline::Gate;
use crate::store::{ApprovalPolicy, Decision, RunStore};
use crate::text::inline;

/// Why the stage may run (for the audit log), or why not.
pub fn check(
    gate: &Gate,
    config: &str,
    run: &RunInfo,
    store: &dyn RunStore,
) -> Result<String, String> {
    let config: Value = serde_json::from_str(config).unwrap_or_default();
    let Some(digest) = config[&gate.digest_key].as_str() else {
        return Err(format!(
            "`with.{}` is not a digest; requires_approval needs the digest this stage acts on there",
            gate.digest_key
        ));
    };
    let store_error = |e: crate::store::StoreError| format!("cannot read the run's approvals: {e}");
    let decisions = store.approvals(&run.run_id).map_err(store_error)?;
    let requests = store.approval_requests(&run.run_id).map_err(store_error)?;
    let Some(request) = requests
        .iter()
        .rev()
        .find(|r| r.stage == gate.stage && r.digest == digest)
    else {
        return Err(format!(
            "refusing to start: stage `{}` never asked to approve {} (`with.{}`), so nothing approved it; \
             this stage acts only on the digest its approval stage approved",
            gate.stage,
            inline(short(digest)),
            gate.digest_key
        ));
    };
    let by_policy = decisions.iter().find(|d| {
        d.stage == gate.stage
            && d.digest == digest
            && d.decision == Decision::Approved
            && (d.policy == ApprovalPolicy::Automatic
                || (d.policy == ApprovalPolicy::EmergencyOverride && d.signature.is_none()))
    });
    if let Some(d) = by_policy.filter(|_| !run.protected) {
        return Ok(format!(
            "{} approved by {} ({} policy; environment `{}` is not protected)",
            short(digest),
            inline(&d.by),
            d.policy.as_str(),
            run.environment
        ));
    }
    let trust: Trust = run.trust();
    let asked = Asked {
        stage: &gate.stage,
        digest,
        image: request.image_digest.as_deref(),
        approvers: &request.approvers,
        required: request.required,
    };
    let identity = if trust.signed() {
        "signed by listed keys"
    } else {
        "identity not verified"
    };
    match recorded(&decisions, asked, &trust) {
        crate::caps::approval::Recorded::Approved(answers) => Ok(format!(
            "{} approved by {} ({identity})",
            short(digest),
            answers
                .iter()
                .map(|a| inline(&a.by).into_owned())
                .collect::<Vec<_>>()
                .join(", ")
        )),
        crate::caps::approval::Recorded::Rejected(a) => Err(format!(
            "refusing to start: {} was rejected at stage `{}` by {}",
            short(digest),
            gate.stage,
            inline(&a.by)
        )),
        crate::caps::approval::Recorded::Open {
            approved_by,
            refused,
            ..
        } => {
            let mut why = format!(
                "refusing to start: {} has {} of the {} approvals stage `{}` requires{}",
                short(digest),
                approved_by.len(),
                request.required.max(1),
                gate.stage,
                if trust.signed() {
                    " (valid signatures of distinct listed approvers, none the run's author)"
                } else {
                    ""
                }
            );
            for (by, reason) in refused {
                why.push_str(&format!(
                    "; the decision by {} does not count: {}",
                    inline(&by),
                    inline(&reason)
                ));
            }
            Err(why)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::caps::approval::signature::tests::keygen;
    use crate::caps::approval::signature::{AllowedSigners, Statement, sign};
    use crate::run::testing::Runs;
    use crate::store::{ApprovalRow, PendingApproval, RunState};

    const PLAN: &str = "plan1";

    fn gate() -> Gate {
        Gate {
            stage: "approve".into(),
            digest_key: "approved_digest".into(),
        }
    }

    fn config(digest: &str) -> String {
        serde_json::json!({ "approved_digest": digest }).to_string()
    }

    fn info(protected: bool, signers: Option<AllowedSigners>) -> RunInfo {
        RunInfo {
            run_id: "r".into(),
            author: "alice".into(),
            environment: "prod".into(),
            protected,
            pipeline_digest: "d".into(),
            signers,
            image_digest: None,
            author_keys: Vec::new(),
        }
    }

    fn ask(runs: &Runs, required: u32) {
        let request = PendingApproval {
            stage: "approve".into(),
            digest: PLAN.into(),
            subject: "apply".into(),
            details: String::new(),
            checklist: vec![],
            approvers: vec![],
            required,
            asked: "t".into(),
            image_digest: None,
        };
        runs.store.record_request("r", &request).unwrap();
    }

    fn decide(runs: &Runs, by: &str, policy: ApprovalPolicy, signature: Option<String>, at: &str) {
        let row = ApprovalRow {
            stage: "approve".into(),
            digest: PLAN.into(),
            decision: Decision::Approved,
            by: by.into(),
            at: at.into(),
            comment: None,
            policy,
            override_reason: None,
            signature,
        };
        runs.store.record_approval("r", &row).unwrap();
    }

    /// A store with run `r` of environment `prod`, running.
    fn running() -> Runs {
        let runs = Runs::new();
        let deploy = crate::store::RunKind::Deploy;
        runs.run_at("r", "prod", deploy, 0, RunState::Running);
        runs
    }

    #[test]
    fn a_stage_starts_only_on_a_digest_approved_as_its_request_required() {
        let runs = running();
        let store = runs.store.as_ref();
        let start = |digest: &str, run: &RunInfo| check(&gate(), &config(digest), run, store);
        let open = info(false, None);
        assert!(
            start(PLAN, &open)
                .unwrap_err()
                .contains("never asked to approve plan1")
        );
        ask(&runs, 2);
        // Another digest than the one asked about is never approved.
        assert!(start("plan2", &open).unwrap_err().contains("never asked"));
        let bad = check(&gate(), r#"{"approved_digest": 7}"#, &open, store).unwrap_err();
        assert!(
            bad.contains("`with.approved_digest` is not a digest"),
            "{bad}"
        );
        decide(
            &runs,
            "bob",
            ApprovalPolicy::Manual,
            None,
            "2026-11-29T07:00:00Z",
        );
        let half = start(PLAN, &open).unwrap_err();
        assert!(
            half.contains("has 1 of the 2 approvals stage `approve` requires"),
            "{half}"
        );
        decide(
            &runs,
            "alice",
            ApprovalPolicy::Manual,
            None,
            "2026-11-29T07:00:01Z",
        );
        assert!(
            start(PLAN, &open).is_err(),
            "the author's approval never counts"
        );
        decide(
            &runs,
            "carol",
            ApprovalPolicy::Terminal,
            None,
            "2026-11-29T07:00:02Z",
        );
        let ok = start(PLAN, &open).unwrap();
        assert!(
            ok.contains("approved by bob, carol (identity not verified)"),
            "{ok}"
        );
    }

    #[test]
    fn a_policy_approves_alone_only_outside_protected_environments() {
        let runs = running();
        let store = runs.store.as_ref();
        ask(&runs, 1);
        decide(
            &runs,
            "capstan (automatic policy)",
            ApprovalPolicy::Automatic,
            None,
            "t",
        );
        let ok = check(&gate(), &config(PLAN), &info(false, None), store).unwrap();
        assert!(
            ok.contains("automatic policy; environment `prod` is not protected"),
            "{ok}"
        );
        let protected = check(&gate(), &config(PLAN), &info(true, None), store).unwrap_err();
        assert!(
            protected.contains("has 0 of the 1 approvals"),
            "{protected}"
        );
    }

    #[test]
    fn with_keys_only_valid_signatures_of_listed_approvers_count() {
        let dir = tempfile::tempdir().unwrap();
        let (bob, bob_public) = keygen(dir.path(), "bob", "");
        let (carol, _) = keygen(dir.path(), "carol", "");
        let signers = AllowedSigners::parse(&format!("bob {bob_public}\n")).unwrap();
        let runs = running();
        let store = runs.store.as_ref();
        ask(&runs, 1);
        let run = info(true, Some(signers));
        let at = "2026-11-29T07:00:00Z";
        let statement = |plan: &str| Statement {
            run_id: "r".into(),
            pipeline_digest: "d".into(),
            environment: "prod".into(),
            stage: "approve".into(),
            plan_digest: plan.into(),
            image_digest: None,
            decision: Decision::Approved,
            time: at.parse().unwrap(),
        };
        // Unsigned, an unlisted key, a signature over another plan: none count.
        decide(&runs, "bob", ApprovalPolicy::Manual, None, at);
        decide(
            &runs,
            "carol",
            ApprovalPolicy::Manual,
            Some(sign(&statement(PLAN), &carol).unwrap()),
            at,
        );
        decide(
            &runs,
            "bob",
            ApprovalPolicy::Manual,
            Some(sign(&statement("plan0"), &bob).unwrap()),
            at,
        );
        let refused = check(&gate(), &config(PLAN), &run, store).unwrap_err();
        for reason in [
            "is not signed",
            "not in allowed_signers",
            "does not match the statement",
        ] {
            assert!(refused.contains(reason), "{reason}: {refused}");
        }
        decide(
            &runs,
            "bob",
            ApprovalPolicy::Manual,
            Some(sign(&statement(PLAN), &bob).unwrap()),
            at,
        );
        let ok = check(&gate(), &config(PLAN), &run, store).unwrap();
        assert!(
            ok.contains("approved by bob (signed by listed keys)"),
            "{ok}"
        );
    }
}
