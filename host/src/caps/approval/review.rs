//! How an approval request's details (e.g. the plan) reach a reviewer, at
//! the prompt and in `capstan show`: escaped and framed line by line, paged
//! on a terminal they do not fit, cut with a note elsewhere.
//!
//! The pager is the operator's (`$PAGER`, else `less` with `LESS=FRX` unless
//! `LESS` is set), never the plugin's: the plugin supplies only text, which
//! is escaped before any pager sees it, so it cannot drive the terminal
//! through the pager either.

use std::io::Write as _;
use std::os::fd::AsFd;
use std::process::{Command, Stdio};

use crate::text::block;

/// Lines of details `capstan show` prints without `--plan`.
pub const SHOWN_LINES: usize = 40;

/// What frames each line of the details, so that none of them passes for
/// a line of the host's.
pub const FRAME: &str = "  │ ";

/// The details, escaped, one framed line each.
pub fn framed(details: &str) -> Vec<String> {
    block(details.trim_end())
        .lines()
        .map(|line| match line {
            "" => FRAME.trim_end().to_string(),
            line => format!("{FRAME}{line}"),
        })
        .collect()
}

/// The first `keep` of `lines`; when there are more, `note(how many more)`
/// ends them.
pub fn cut(mut lines: Vec<String>, keep: usize, note: impl FnOnce(usize) -> String) -> Vec<String> {
    if lines.len() > keep {
        let more = lines.len() - keep;
        lines.truncate(keep);
        lines.push(note(more));
    }
    lines
}

/// Rows `lines` take on a terminal `columns` wide (long lines wrap).
fn rows(lines: &[String], columns: usize) -> usize {
    let columns = columns.max(1);
    lines
        .iter()
        .map(|l| l.chars().count().div_ceil(columns).max(1))
        .sum()
}

/// Whether `lines`, with `reserve` more rows around them, are longer than
/// the terminal `screen` (stdout or stderr) is; `false` when it is no
/// terminal, or does not say its size (a pseudo-terminal nobody sized).
pub fn too_long(screen: impl AsFd, lines: &[String], reserve: usize) -> bool {
    match terminal_size::terminal_size_of(screen) {
        Some((terminal_size::Width(w), terminal_size::Height(h))) if w > 0 && h > 0 => {
            rows(lines, w.into()) + reserve > usize::from(h)
        }
        _ => false,
    }
}

/// The operator's pager command: `$PAGER` (a shell command, as for git and
/// man; empty: none), else `less` when it is installed.
fn pager_command() -> Option<String> {
    match std::env::var("PAGER") {
        Ok(p) if p.trim().is_empty() => None,
        Ok(p) => Some(p),
        Err(_) => which::which("less").ok().map(|_| "less".to_string()),
    }
}

/// Show `lines` (already escaped) through the operator's pager on `screen`;
/// `false` when there is no pager or it cannot run (print them instead).
///
/// The pager reads a temporary file, not a pipe: quitting it early must
/// not end the host with SIGPIPE in the middle of a prompt.
pub fn page(screen: impl AsFd, lines: &[String]) -> bool {
    pager_command().is_some_and(|command| page_with(&command, screen, lines))
}

/// [`page`] with the shell command `command`.
fn page_with(command: &str, screen: impl AsFd, lines: &[String]) -> bool {
    let shown = (|| -> std::io::Result<bool> {
        let mut file = tempfile::tempfile()?;
        for line in lines {
            writeln!(file, "{line}")?;
        }
        file.flush()?;
        std::io::Seek::rewind(&mut file)?;
        let out = screen.as_fd().try_clone_to_owned()?;
        let mut pager = Command::new("sh");
        pager
            .arg("-c")
            .arg(command)
            .stdin(file)
            .stdout(Stdio::from(out));
        if std::env::var_os("LESS").is_none() {
            // Quit at once when it fits one screen, keep it on the screen
            // afterwards, pass colours through.
            pager.env("LESS", "FRX");
        }
        let status = pager.status()?;
        // 126, 127: the shell could not run the command.
        Ok(!matches!(status.code(), Some(126 | 127)))
    })();
    shown.unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn details_are_escaped_and_framed() {
        let lines = framed("plan: 1 to add\n\n\x1b[2J  # a.b will be created\n\n");
        assert_eq!(
            lines,
            [
                "  │ plan: 1 to add",
                "  │",
                "  │ \\x1b[2J  # a.b will be created"
            ]
        );
        assert!(framed("").is_empty());
    }

    #[test]
    fn long_details_are_cut_with_a_note() {
        let lines: Vec<String> = (1..=5).map(|i| format!("line {i}")).collect();
        assert_eq!(cut(lines.clone(), 5, |_| unreachable!()), lines);
        assert_eq!(
            cut(lines, 2, |more| format!("… {more} more lines")),
            ["line 1", "line 2", "… 3 more lines"]
        );
    }

    /// The pager gets the escaped lines on its stdin and writes to the
    /// screen it is given; a pager that cannot run leaves the printing to
    /// the caller.
    #[test]
    fn the_pager_shows_the_lines_on_the_screen() {
        let lines = framed("Plan: 1 to add\n\x1b[2J");
        let mut screen = tempfile::tempfile().unwrap();
        assert!(page_with("sed 's/^/paged:/'", &screen, &lines));
        let mut shown = String::new();
        std::io::Seek::rewind(&mut screen).unwrap();
        std::io::Read::read_to_string(&mut screen, &mut shown).unwrap();
        assert_eq!(shown, "paged:  │ Plan: 1 to add\npaged:  │ \\x1b[2J\n");
        assert!(!page_with("no-such-pager-here", &screen, &lines));
        // A file is no terminal: nothing is too long for it.
        assert!(!too_long(&screen, &lines, 1000));
    }

    #[test]
    fn long_lines_take_several_rows() {
        let lines = vec!["x".repeat(10), String::new(), "é".repeat(25)];
        assert_eq!(rows(&lines, 10), 1 + 1 + 3);
        assert_eq!(rows(&lines, 80), 3);
    }
}
