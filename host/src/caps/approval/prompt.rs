//! Asking on the terminal, when the host has one.

use std::io::{BufRead, IsTerminal, Write};

use super::rules::approver_problem;
use super::{RunInfo, now, review, short, wit};
use crate::text::inline;

/// One prompt at a time, whatever the number of stages asking.
pub static PROMPT: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Whether this process can prompt a human.
pub fn interactive() -> bool {
    std::io::stdin().is_terminal() && std::io::stderr().is_terminal()
}

/// Ask on the terminal until `required` distinct approvers said yes, one
/// said no, or nobody answered.
pub fn prompt(
    request: &wit::Request,
    run: &RunInfo,
    stage: &str,
) -> std::io::Result<wit::Decision> {
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
    let mut answers: Vec<wit::Answer> = Vec::new();
    while answers.len() < request.required.max(1) as usize {
        let name = ask(&mut err, "approver name (empty: leave it pending): ")?;
        if name.is_empty() {
            return Ok(wit::Decision::Pending(format!(
                "nobody approved stage `{stage}` at the prompt"
            )));
        }
        let already: Vec<String> = answers.iter().map(|a| a.by.clone()).collect();
        if let Some(problem) = approver_problem(&name, &run.author, &request.approvers, &already) {
            writeln!(err, "{}.", inline(&problem))?;
            continue;
        }
        let yes = ask(
            &mut err,
            &format!(
                "{}: approve {}? [yes/no]: ",
                inline(&name),
                inline(short(&request.digest))
            ),
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
