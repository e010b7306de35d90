//! What this plugin reads from Terraform's human output: its error
//! diagnostics (for the stage error) and the apply result line.

/// Keep at most this many lines of Terraform's diagnostics…
const MAX_LINES: usize = 40;
/// … and at most this many bytes.
const MAX_BYTES: usize = 4000;

/// Terraform's own error diagnostics in `text`: everything from the first
/// `Error:` line (plain with `-no-color`, or inside the `│` box Terraform
/// draws without it), box drawing removed, bounded. `None` when there is no
/// `Error:` line.
pub fn error_lines(text: &str) -> Option<String> {
    let lines: Vec<&str> = text
        .lines()
        .map(|l| {
            let t = l.trim_end();
            t.strip_prefix("│ ")
                .or_else(|| t.strip_prefix('│'))
                .unwrap_or(t)
        })
        .filter(|l| !matches!(l.trim(), "╷" | "╵"))
        .collect();
    let start = lines
        .iter()
        .position(|l| l.trim_start().starts_with("Error:"))?;
    let mut kept: Vec<&str> = Vec::new();
    for line in &lines[start..] {
        // Collapse runs of blank lines.
        if line.trim().is_empty() && kept.last().is_none_or(|l| l.trim().is_empty()) {
            continue;
        }
        kept.push(line);
    }
    while kept.last().is_some_and(|l| l.trim().is_empty()) {
        kept.pop();
    }
    let cut_lines = kept.len() > MAX_LINES;
    kept.truncate(MAX_LINES);
    let mut out = kept.join("\n");
    if out.len() > MAX_BYTES {
        let mut end = MAX_BYTES;
        while !out.is_char_boundary(end) {
            end -= 1;
        }
        out.truncate(end);
        out.push('…');
    } else if cut_lines {
        out.push_str("\n…");
    }
    Some(out)
}

/// The stage error for a Terraform command that exited unsuccessfully:
/// the command, its exit status, and Terraform's own error lines (from
/// stderr, else stdout), or the last lines of its output.
pub fn failure_message(subcommand: &str, status: &str, stderr: &str, stdout: &str) -> String {
    let detail = error_lines(stderr)
        .or_else(|| error_lines(stdout))
        .unwrap_or_else(|| {
            let text = if stderr.trim().is_empty() {
                stdout
            } else {
                stderr
            };
            let tail: Vec<&str> = text
                .lines()
                .filter(|l| !l.trim().is_empty())
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .take(20)
                .collect();
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        });
    if detail.is_empty() {
        format!("terraform {subcommand} failed with {status} (its output is in the stage log)")
    } else {
        format!("terraform {subcommand} failed with {status}:\n{detail}")
    }
}

/// From `terraform apply` output, e.g. `0 added, 0 changed, 0 destroyed`
/// (with `1 imported, ` first when Terraform ≥ 1.5 imports).
pub fn apply_result(stdout: &str) -> Option<String> {
    stdout.lines().find_map(|l| {
        let rest = l.trim().strip_prefix("Apply complete! Resources: ")?;
        Some(rest.trim_end_matches('.').to_string())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Real stderr of Terraform 1.0.3 `plan -no-color` with an undeclared
    /// and a missing variable.
    const REAL_1_0_3: &str = "\nError: Value for undeclared variable\n\nA variable named \"nme\" \
        was assigned on the command line, but the root module\ndoes not declare a variable of \
        that name. To use this value, add a \"variable\"\nblock to the configuration.\n\nError: \
        No value for required variable\n\n  on main.tf line 4:\n   4: variable \"name\" { type = \
        string }\n\nThe root module input variable \"name\" is not set, and has no default \
        value.\nUse a -var or -var-file command line argument to provide a value for this\n\
        variable.\n";

    #[test]
    fn keeps_terraform_error_blocks() {
        let e = error_lines(REAL_1_0_3).unwrap();
        assert!(e.starts_with("Error: Value for undeclared variable\n\nA variable named"));
        assert!(e.contains("\n\nError: No value for required variable\n\n  on main.tf line 4:"));
        assert!(e.ends_with("provide a value for this\nvariable."), "{e}");
        assert_eq!(
            failure_message("plan", "exit code 1", REAL_1_0_3, "some plan output")
                .lines()
                .next(),
            Some("terraform plan failed with exit code 1:")
        );
    }

    #[test]
    fn strips_the_box_of_colourless_diagnostics() {
        let boxed = "Refreshing...\n╷\n│ Error: Saved plan is stale\n│ \n│ The given plan file can \
                     no longer be applied.\n╵\n";
        assert_eq!(
            error_lines(boxed).unwrap(),
            "Error: Saved plan is stale\n\nThe given plan file can no longer be applied."
        );
    }

    #[test]
    fn falls_back_to_the_output_tail_and_bounds_it() {
        assert_eq!(error_lines("all good\n"), None);
        let stderr: String = (1..=30).map(|i| format!("line {i}\n")).collect();
        let m = failure_message("init", "exit code 1", &stderr, "");
        assert!(
            m.starts_with("terraform init failed with exit code 1:\nline 11\n"),
            "{m}"
        );
        assert!(m.ends_with("line 30"));
        assert_eq!(
            failure_message("show", "signal 9", " \n", ""),
            "terraform show failed with signal 9 (its output is in the stage log)"
        );
        let errors = format!("Error: x\n{}", "é".repeat(5000));
        let long = error_lines(&errors).unwrap();
        assert!(long.len() <= MAX_BYTES + '…'.len_utf8() && long.ends_with('…'));
        let many: String = (0..100).map(|i| format!("Error: {i}\n")).collect();
        let long = error_lines(&many).unwrap();
        assert_eq!(long.lines().count(), MAX_LINES + 1);
        // Errors on stdout count too.
        assert!(
            failure_message("plan", "exit code 1", "", "Error: on stdout\n")
                .ends_with("Error: on stdout")
        );
    }

    #[test]
    fn apply_result_line() {
        let out = "\nApply complete! Resources: 0 added, 0 changed, 0 destroyed.\n\nOutputs:\n\nname = \"demo\"\n";
        assert_eq!(
            apply_result(out).as_deref(),
            Some("0 added, 0 changed, 0 destroyed")
        );
        assert_eq!(
            apply_result("Apply complete! Resources: 1 imported, 2 added, 0 changed, 1 destroyed.")
                .as_deref(),
            Some("1 imported, 2 added, 0 changed, 1 destroyed")
        );
        assert_eq!(apply_result("Error: boom"), None);
    }
}
