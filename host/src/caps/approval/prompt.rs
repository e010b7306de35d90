//! Asking on the terminal, when the host has one.

use std::io::{BufRead, IsTerminal, Write};

use super::rules::approver_problem;
use super::{RunInfo, now, short, wit};

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
                "nobody approved stage `{stage}` at the prompt"
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
