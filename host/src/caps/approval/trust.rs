//! Whose decision a recorded approval is. Without approvers' keys a
//! decision is a name someone typed ("identity not verified"). With keys
//! (`[approvers]`, copied into the run when it started) a decision counts
//! only when it carries a signature, by a listed key, over the statement
//! rebuilt from the run and the row (see `signature::Statement`), by
//! someone other than the run's author: a row edited after signing, one for
//! another run, plan or image, or an unlisted key's, is refused with the
//! reason.

use super::signature::{AllowedSigners, Statement};
use crate::store::{ApprovalRow, RunRow};

/// What a decision is checked against: one run's approvers and facts.
#[derive(Debug, Clone, Default)]
pub struct Trust {
    /// `None`: the run listed no keys; decisions are unverified names.
    pub signers: Option<AllowedSigners>,
    pub run_id: String,
    pub pipeline_digest: String,
    pub environment: String,
    pub author: String,
    /// Fingerprints of listed keys the author held when the run started.
    pub author_keys: Vec<String>,
}

/// Who a recorded decision is from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Identity {
    /// Signed by a listed key of this principal.
    Verified(String),
    /// A name, not checked (no keys listed).
    Unverified,
    /// It does not count, and why.
    Refused(String),
}

impl Identity {
    /// How `capstan show` and `audit --run` say it.
    pub fn label(&self) -> String {
        match self {
            Identity::Verified(p) => format!("signed with a listed key of {p}"),
            Identity::Unverified => "identity not verified".into(),
            Identity::Refused(why) => format!("DOES NOT COUNT: {why}"),
        }
    }
}

impl Trust {
    /// The trust of `run`: its approvers' keys as it recorded them.
    pub fn of_run(run: &RunRow) -> Result<Trust, String> {
        let signers = match &run.approvers {
            Some(text) => Some(AllowedSigners::parse(text).map_err(|e| {
                format!(
                    "run {}: its recorded approvers' keys are unreadable ({e})",
                    run.id
                )
            })?),
            None => None,
        };
        Ok(Trust {
            signers,
            run_id: run.id.clone(),
            pipeline_digest: run.pipeline_digest.clone(),
            environment: run.environment.clone(),
            author: run.author.clone(),
            author_keys: run.author_keys.clone(),
        })
    }

    /// Whether decisions must be signed.
    pub fn signed(&self) -> bool {
        self.signers.is_some()
    }

    /// The statement `row` stands for, in this run, about an image.
    pub fn statement(&self, row: &ApprovalRow, image: Option<&str>) -> Result<Statement, String> {
        let time = row
            .at
            .parse::<jiff::Timestamp>()
            .map_err(|e| format!("its time `{}` is not an RFC 3339 timestamp ({e})", row.at))?;
        Ok(Statement {
            run_id: self.run_id.clone(),
            pipeline_digest: self.pipeline_digest.clone(),
            environment: self.environment.clone(),
            stage: row.stage.clone(),
            plan_digest: row.digest.clone(),
            image_digest: image.map(str::to_string),
            decision: row.decision,
            time,
        })
    }

    /// Who `row` is from (`image`: the image digest of its request).
    pub fn identify(&self, row: &ApprovalRow, image: Option<&str>) -> Identity {
        let Some(signers) = &self.signers else {
            return Identity::Unverified;
        };
        let Some(signature) = &row.signature else {
            return Identity::Refused(format!(
                "the decision recorded for {} is not signed, and this run's pipeline lists approvers' \
                 keys ([approvers]): sign it (`capstan approve {} --key <file>`, or through ssh-agent)",
                crate::text::inline(&row.by),
                self.run_id
            ));
        };
        let statement = match self.statement(row, image) {
            Ok(s) => s,
            Err(e) => return Identity::Refused(format!("the signed decision is unreadable: {e}")),
        };
        match signers.verify_signer(&statement, signature) {
            Err(e) => Identity::Refused(e.to_string()),
            Ok(signer) if signer.principals.contains(&self.author) => Identity::Refused(format!(
                "it is signed with a key of {} (allowed_signers line {}), who started this run: \
                     the author never approves their own run",
                self.author, signer.line
            )),
            Ok(signer)
                if self
                    .author_keys
                    .contains(&signer.key.fingerprint(ssh_key::HashAlg::Sha256).to_string()) =>
            {
                Identity::Refused(format!(
                    "it is signed with a key ({}, listed for {}) that {} held in ssh-agent when starting \
                     this run: the author never approves their own run",
                    signer.key.fingerprint(ssh_key::HashAlg::Sha256),
                    signer.principal(),
                    self.author
                ))
            }
            Ok(signer) if signer.principal() != row.by => Identity::Refused(format!(
                "it is signed by {} but recorded as {}'s",
                signer.principal(),
                crate::text::inline(&row.by)
            )),
            Ok(signer) => Identity::Verified(signer.principal().to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::signature::{sign, tests::keygen};
    use super::*;
    use crate::store::{ApprovalPolicy, Decision};

    #[test]
    fn only_a_listed_key_other_than_the_authors_over_this_very_decision_counts() {
        let dir = tempfile::tempdir().unwrap();
        let mut listed = String::new();
        let mut keys = std::collections::HashMap::new();
        for name in ["alice", "bob", "carol", "dave"] {
            let (key, public) = keygen(dir.path(), name, "");
            if name != "dave" {
                listed.push_str(&format!("{name} {public}\n"));
            }
            keys.insert(name, key);
        }
        let trust = Trust {
            signers: Some(AllowedSigners::parse(&listed).unwrap()),
            run_id: "r1".into(),
            pipeline_digest: "p1".into(),
            environment: "production".into(),
            author: "alice".into(),
            author_keys: Vec::new(),
        };
        let image = Some("img1");
        let row = |by: &str| ApprovalRow {
            stage: "approve".into(),
            digest: "plan1".into(),
            decision: Decision::Approved,
            by: by.into(),
            at: "2026-11-29T07:00:00Z".into(),
            comment: None,
            policy: ApprovalPolicy::Manual,
            override_reason: None,
            signature: None,
        };
        let signed = |by: &str, signer: &str| {
            let mut r = row(by);
            let statement = trust.statement(&r, image).unwrap();
            r.signature = Some(sign(&statement, &keys[signer]).unwrap());
            r
        };
        let refusal = |r: &ApprovalRow, image: Option<&str>| match trust.identify(r, image) {
            Identity::Refused(why) => why,
            other => panic!("{other:?} for {r:?}"),
        };
        assert_eq!(
            trust.identify(&signed("bob", "bob"), image),
            Identity::Verified("bob".into())
        );
        assert!(refusal(&row("bob"), image).contains("is not signed"));
        assert!(refusal(&signed("alice", "alice"), image).contains("who started this run"));
        assert!(refusal(&signed("dave", "dave"), image).contains("not in allowed_signers"));
        assert!(
            refusal(&signed("carol", "bob"), image)
                .contains("signed by bob but recorded as carol's")
        );
        // Edited after signing: another plan, another time, another decision.
        let edits: [fn(&mut ApprovalRow); 3] = [
            |r| r.digest = "plan2".into(),
            |r| r.at = "2026-11-29T07:00:01Z".into(),
            |r| r.decision = Decision::Rejected,
        ];
        for edit in edits {
            let mut r = signed("bob", "bob");
            edit(&mut r);
            assert!(
                refusal(&r, image).contains("does not match the statement"),
                "{r:?}"
            );
        }
        // The same signature read for another image, or in another run.
        assert!(refusal(&signed("bob", "bob"), Some("img2")).contains("does not match"));
        let other_run = Trust {
            run_id: "r2".into(),
            ..trust.clone()
        };
        assert!(matches!(
            other_run.identify(&signed("bob", "bob"), image),
            Identity::Refused(_)
        ));
        // A listed key the author held in ssh-agent at the run's start is
        // theirs, whatever name it is listed under.
        let bobs_key = trust.signers.as_ref().unwrap().signers()[1]
            .key
            .fingerprint(ssh_key::HashAlg::Sha256)
            .to_string();
        let held = Trust {
            author_keys: vec![bobs_key],
            ..trust.clone()
        };
        match held.identify(&signed("bob", "bob"), image) {
            Identity::Refused(why) => assert!(why.contains("held in ssh-agent"), "{why}"),
            other => panic!("{other:?}"),
        }
        let names_only = Trust {
            signers: None,
            ..trust.clone()
        };
        assert_eq!(
            names_only.identify(&row("bob"), image),
            Identity::Unverified
        );
    }
}
