//! The approval rules, shared by the terminal prompt, the `approval` host
//! and `capstan approve`: who may approve, what the recorded decisions add
//! up to for one request, and which policies a protected environment refuses.

use serde_json::json;

use super::trust::{Identity, Trust};
use super::{RunInfo, wit};
use crate::store::{ApprovalPolicy, ApprovalRow, Decision};

/// In an environment the pipeline marks `protected`, only humans approve:
/// a plugin asking for an automatic approval or an emergency override is
/// answered as if it had asked for a manual one (the run store consulted,
/// humans asked). `Some(note)` says so, for the audit record; `None` when
/// the policy stands. The operator's own override (`capstan approve
/// --emergency`) is a manual decision in the run store, so it still counts.
pub fn refused_in_protected(policy: &wit::Policy, run: &RunInfo) -> Option<serde_json::Value> {
    if !run.protected {
        return None;
    }
    let because = format!(
        "environment `{}` is protected ([pipeline] protected): only humans approve there, \
         so the host asked them instead",
        run.environment
    );
    match policy {
        wit::Policy::Manual => None,
        wit::Policy::Automatic(why) => Some(json!({
            "requested_policy": ApprovalPolicy::Automatic,
            "requested_why": why,
            "refused": format!("the plugin asked for an automatic approval; {because}"),
        })),
        wit::Policy::EmergencyOverride(o) => Some(json!({
            "requested_policy": ApprovalPolicy::EmergencyOverride,
            "claimed_by": o.by,
            "override_reason": o.reason,
            "refused": format!(
                "the plugin asked for an emergency override; {because} \
                 (an operator may still override with `capstan approve {} --emergency <reason>`)",
                run.run_id
            ),
        })),
    }
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
        /// Decisions that do not count (unsigned, a bad or unlisted
        /// signature): who they name, and why.
        refused: Vec<(String, String)>,
    },
}

/// One approval request, as the rules see it.
#[derive(Debug, Clone, Copy)]
pub struct Asked<'a> {
    pub stage: &'a str,
    pub digest: &'a str,
    /// The image digest the request was asked with (signed statements
    /// include it).
    pub image: Option<&'a str>,
    pub approvers: &'a [String],
    pub required: u32,
}

/// Decide a request from the decisions recorded for its stage: only those
/// for the request's digest count, and, when the run lists approvers' keys,
/// only those `trust` verifies.
pub fn recorded(decisions: &[ApprovalRow], asked: Asked, trust: &Trust) -> Recorded {
    let Asked {
        stage,
        digest: request_digest,
        image,
        approvers,
        required,
    } = asked;
    let author = trust.author.as_str();
    let answer = |d: &ApprovalRow| wit::Answer {
        by: d.by.clone(),
        at: d.at.clone(),
        comment: d.comment.clone(),
    };
    let mine = decisions.iter().filter(|d| d.stage == stage);
    let mut approved: Vec<&ApprovalRow> = Vec::new();
    let mut stale = Vec::new();
    let mut refused = Vec::new();
    for d in mine {
        if d.digest != request_digest {
            if d.decision == Decision::Approved && d.policy != ApprovalPolicy::Automatic {
                stale.push((d.by.clone(), d.digest.clone()));
            }
            continue;
        }
        if d.policy != ApprovalPolicy::Automatic
            && let Identity::Refused(why) = identify(trust, d, image)
        {
            refused.push((d.by.clone(), why));
            continue;
        }
        match (d.decision, d.policy) {
            (Decision::Rejected, _) => return Recorded::Rejected(answer(d)),
            (Decision::Approved, ApprovalPolicy::EmergencyOverride) => {
                return Recorded::Approved(vec![answer(d)]);
            }
            (Decision::Approved, ApprovalPolicy::Manual | ApprovalPolicy::Terminal) => {
                let already: Vec<String> = approved.iter().map(|a| a.by.clone()).collect();
                if approver_problem(&d.by, author, approvers, &already).is_none() {
                    approved.push(d);
                }
            }
            (Decision::Approved, ApprovalPolicy::Automatic) => {}
        }
    }
    if approved.len() >= required.max(1) as usize {
        return Recorded::Approved(approved.into_iter().map(answer).collect());
    }
    Recorded::Open {
        approved_by: approved.iter().map(|a| a.by.clone()).collect(),
        stale,
        refused,
    }
}

/// Who `d` is from. An emergency override is the operator's alone, so the
/// run's author may sign one: it is checked as if someone else ran it.
pub fn identify(trust: &Trust, d: &ApprovalRow, image: Option<&str>) -> Identity {
    if d.policy == ApprovalPolicy::EmergencyOverride && d.by == trust.author {
        let as_other = Trust {
            author: String::new(),
            ..trust.clone()
        };
        return as_other.identify(d, image);
    }
    trust.identify(d, image)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(by: &str, digest: &str, decision: &str, policy: &str) -> ApprovalRow {
        ApprovalRow {
            stage: "approve".into(),
            digest: digest.into(),
            decision: Decision::parse(decision).unwrap(),
            by: by.into(),
            at: "t".into(),
            comment: None,
            policy: ApprovalPolicy::parse(policy).unwrap(),
            override_reason: None,
            signature: None,
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
            Recorded::Open {
                approved_by, stale, ..
            } => format!(
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
            let asked = Asked {
                stage: "approve",
                digest: "D2",
                image: None,
                approvers,
                required,
            };
            let trust = Trust {
                author: "alice".into(),
                ..Default::default()
            };
            let got = by(recorded(&decisions, asked, &trust));
            assert_eq!(got, want, "{decisions:?}");
        }
    }

    #[test]
    fn a_protected_environment_refuses_automatic_and_plugin_overrides() {
        let run = |protected| RunInfo {
            run_id: "R1".into(),
            author: "alice".into(),
            environment: "production".into(),
            protected,
            ..Default::default()
        };
        let auto = wit::Policy::Automatic("policy is auto".into());
        let over = wit::Policy::EmergencyOverride(wit::Emergency {
            by: "mallory".into(),
            reason: "trust me".into(),
        });
        for policy in [&wit::Policy::Manual, &auto, &over] {
            assert_eq!(refused_in_protected(policy, &run(false)), None);
        }
        assert_eq!(refused_in_protected(&wit::Policy::Manual, &run(true)), None);
        let note = refused_in_protected(&auto, &run(true)).unwrap();
        assert_eq!(note["requested_policy"], "automatic");
        assert!(
            note["refused"]
                .as_str()
                .unwrap()
                .contains("environment `production` is protected"),
            "{note}"
        );
        let note = refused_in_protected(&over, &run(true)).unwrap();
        assert_eq!(
            (&note["requested_policy"], &note["claimed_by"]),
            (&json!("emergency-override"), &json!("mallory"))
        );
        assert!(
            note["refused"]
                .as_str()
                .unwrap()
                .contains("capstan approve R1 --emergency"),
            "{note}"
        );
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
