//! The approval rules, shared by the terminal prompt, the `approval` host
//! and `capstan approve`: who may approve, and what the recorded decisions
//! add up to for one request.

use super::wit;
use crate::store::ApprovalRow;

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
