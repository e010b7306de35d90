//! Asking on the terminal, when the host has one.

use std::io::{BufRead, IsTerminal, Write};

use super::rules::approver_problem;
use super::signature::{Key, sign_with};
use super::trust::Identity;
use super::{RunInfo, now, review, short, wit};
use crate::store::{ApprovalPolicy, ApprovalRow, Decision};
use crate::text::inline;

/// One prompt at a time, whatever the number of stages asking.
pub static PROMPT: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Whether this process can prompt a human.
pub fn interactive() -> bool {
    std::io::stdin().is_terminal() && std::io::stderr().is_terminal()
}

/// Ask on the terminal until `required` distinct approvers said yes, one
/// said no, or nobody answered. When the run lists approvers' keys, each
/// answer is signed with the approver's key (a file, or ssh-agent) and
/// recorded under the key's principal; the signatures come back beside the
/// answers (one per answer; `None` when unsigned).
pub fn prompt(
    request: &wit::Request,
    run: &RunInfo,
    stage: &str,
) -> std::io::Result<(wit::Decision, Vec<Option<String>>)> {
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
    // Everything below that the plugin supplied is data: escaped, so that it
    // cannot drive the terminal (hide text, clear the screen), and the
    // details are framed, so that no line of theirs passes for the prompt's.
    writeln!(
        err,
        "{}\ndigest: {}",
        inline(&request.subject),
        inline(&request.digest)
    )?;
    let details = review::framed(&request.details);
    if !details.is_empty() {
        writeln!(err)?;
        // Rows printed after the details, up to the question: the checklist
        // stays in view below a plan that fits.
        let after = request.checklist.len() + 4;
        err.flush()?;
        if review::too_long(std::io::stderr(), &details, after)
            && review::page(std::io::stderr(), &details)
        {
            writeln!(
                err,
                "(the details were paged; `capstan show {} --plan` prints them again)",
                run.run_id
            )?;
        } else {
            for line in &details {
                writeln!(err, "{line}")?;
            }
        }
        writeln!(err)?;
    }
    for item in &request.checklist {
        writeln!(err, "  [ ] {}", inline(item))?;
    }
    let who = if request.approvers.is_empty() {
        "anyone".to_string()
    } else {
        inline(&request.approvers.join(", ")).into_owned()
    };
    writeln!(
        err,
        "approvers: {who}; {} required; the run's author ({}) may not approve",
        request.required.max(1),
        run.author
    )?;
    let signed = run.signers.is_some();
    if !signed {
        writeln!(
            err,
            "(no approvers' keys are listed: names typed here are recorded as \"identity not verified\")"
        )?;
    }
    let pending = || {
        Ok((
            wit::Decision::Pending(format!("nobody approved stage `{stage}` at the prompt")),
            Vec::new(),
        ))
    };
    let mut answers: Vec<wit::Answer> = Vec::new();
    let mut signatures: Vec<Option<String>> = Vec::new();
    while answers.len() < request.required.max(1) as usize {
        let already: Vec<String> = answers.iter().map(|a| a.by.clone()).collect();
        let (name, key) = if signed {
            let key = ask(
                &mut err,
                "approver's SSH key: a private key file, or `agent` (empty: leave it pending): ",
            )?;
            if key.is_empty() {
                return pending();
            }
            let key = match key.as_str() {
                "agent" => Key::Agent,
                path => Key::File(path.into()),
            };
            (None, Some(key))
        } else {
            let name = ask(&mut err, "approver name (empty: leave it pending): ")?;
            if name.is_empty() {
                return pending();
            }
            if let Some(problem) =
                approver_problem(&name, &run.author, &request.approvers, &already)
            {
                writeln!(err, "{}.", inline(&problem))?;
                continue;
            }
            (Some(name), None)
        };
        let yes = ask(
            &mut err,
            &format!(
                "{}: approve {}? [yes/no]: ",
                inline(name.as_deref().unwrap_or("you")),
                inline(short(&request.digest))
            ),
        )?;
        let comment = ask(&mut err, "comment (optional): ")?;
        let decision = match yes.to_ascii_lowercase().as_str() {
            "yes" | "y" => Decision::Approved,
            _ => Decision::Rejected,
        };
        let mut answer = wit::Answer {
            by: name.unwrap_or_default(),
            at: now(),
            comment: (!comment.is_empty()).then_some(comment),
        };
        let mut signature = None;
        if let Some(key) = key {
            match signed_answer(request, run, stage, &answer, decision, &key, &already) {
                Ok((principal, sig)) => {
                    answer.by = principal;
                    signature = Some(sig);
                }
                Err(problem) => {
                    writeln!(err, "{}", inline(&problem))?;
                    continue;
                }
            }
        }
        if decision == Decision::Rejected {
            return Ok((wit::Decision::Rejected(answer), vec![signature]));
        }
        answers.push(answer);
        signatures.push(signature);
    }
    Ok((wit::Decision::Approved(answers), signatures))
}

/// Sign an answer given at the prompt and check it as `capstan resume`
/// will: the principal of the listed key it was signed with, and the
/// signature; or why it does not count.
fn signed_answer(
    request: &wit::Request,
    run: &RunInfo,
    stage: &str,
    answer: &wit::Answer,
    decision: Decision,
    key: &Key,
    already: &[String],
) -> Result<(String, String), String> {
    let trust = run.trust();
    let signers = trust.signers.as_ref().ok_or("no approvers' keys")?;
    let mut row = ApprovalRow {
        stage: stage.to_string(),
        digest: request.digest.clone(),
        decision,
        by: String::new(),
        at: answer.at.clone(),
        comment: answer.comment.clone(),
        policy: ApprovalPolicy::Terminal,
        override_reason: None,
        signature: None,
    };
    let statement = trust.statement(&row, run.image_digest.as_deref())?;
    let signature = sign_with(&statement, key, signers).map_err(|e| e.to_string())?;
    let principal = signers
        .verify(&statement, &signature)
        .map_err(|e| e.to_string())?;
    row.by = principal.clone();
    row.signature = Some(signature.clone());
    match trust.identify(&row, run.image_digest.as_deref()) {
        Identity::Verified(p) => {
            if let Some(problem) = approver_problem(&p, &run.author, &request.approvers, already) {
                return Err(format!("{problem}."));
            }
            Ok((p, signature))
        }
        Identity::Refused(why) => Err(why),
        Identity::Unverified => Err("no approvers' keys".into()),
    }
}

/// Ask the operator to confirm an emergency override the plugin asked for.
/// `yes` makes it the operator's own (recorded under the run's author);
/// anything else, or no answer, declines it, and humans are asked as usual.
/// What the plugin supplied is shown escaped: it is data, not terminal text.
pub fn confirm_override(
    input: &mut impl BufRead,
    out: &mut impl Write,
    request: &wit::Request,
    claimed: &wit::Emergency,
    run: &RunInfo,
    stage: &str,
) -> std::io::Result<bool> {
    writeln!(
        out,
        "\n━━ emergency override asked: stage `{stage}` of run {} (environment {}) ━━",
        run.run_id, run.environment
    )?;
    writeln!(
        out,
        "{}\ndigest: {}",
        inline(&request.subject),
        inline(&request.digest)
    )?;
    writeln!(
        out,
        "the stage's config asks to approve this WITHOUT REVIEW, naming \"{}\", because: {}",
        inline(&claimed.by),
        inline(&claimed.reason)
    )?;
    writeln!(
        out,
        "if you confirm, the override is recorded as yours ({}); if not, approvers are asked as usual",
        run.author
    )?;
    write!(
        out,
        "{}: approve {} without review? [yes/no]: ",
        run.author,
        short(&request.digest)
    )?;
    out.flush()?;
    let mut line = String::new();
    input.read_line(&mut line)?;
    let yes = matches!(line.trim().to_ascii_lowercase().as_str(), "yes" | "y");
    if !yes {
        writeln!(out, "override declined.")?;
    }
    Ok(yes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_operator_confirms_an_override_or_declines_it() {
        let request = wit::Request {
            subject: "apply the plan".into(),
            digest: "0123456789abcdef".into(),
            details: String::new(),
            checklist: vec![],
            approvers: vec![],
            required: 1,
            policy: wit::Policy::Manual,
        };
        let claimed = wit::Emergency {
            by: "mallory\x1b[2J".into(),
            reason: "outage".into(),
        };
        let run = RunInfo {
            run_id: "R1".into(),
            author: "alice".into(),
            environment: "staging".into(),
            protected: false,
            ..Default::default()
        };
        for (typed, want) in [
            ("yes\n", true),
            ("Y\n", true),
            ("no\n", false),
            ("\n", false),
            ("", false),
        ] {
            let mut screen = Vec::new();
            let got = confirm_override(
                &mut typed.as_bytes(),
                &mut screen,
                &request,
                &claimed,
                &run,
                "approve",
            )
            .unwrap();
            assert_eq!(got, want, "{typed:?}");
            let screen = String::from_utf8(screen).unwrap();
            assert!(
                screen.contains("recorded as yours (alice)")
                    && screen.contains("alice: approve 0123456789ab without review?"),
                "{screen}"
            );
            assert!(
                !screen.contains('\x1b') && screen.contains("mallory\\x1b[2J"),
                "plugin text is escaped: {screen}"
            );
        }
    }
}
