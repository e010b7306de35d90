//! Terraform's own rendering of the saved plan, for reviewers: the text of
//! `terraform show -no-color <plan>`, as Atlantis posts it on a pull
//! request. Terraform masks sensitive values in it itself (`(sensitive
//! value)`), unlike in `show -json`, where they are in clear.
//!
//! The whole text goes to `<work dir>/plan.txt`; the `plan_text` output
//! (which flows into the approval request, the run store and
//! `outputs.json`) holds at most [`MAX_BYTES`] of it, cut at a line, and
//! says so when cut.

/// The most `plan_text` holds, in bytes (about 1,500 lines of plan): more
/// than a reviewer reads, less than what would make every run record heavy.
pub const MAX_BYTES: usize = 128 * 1024;

/// The text as Terraform printed it, without the blank lines around it;
/// `truncated` when the host kept only the first part of what Terraform
/// printed (the text then says so at its end).
pub fn tidy(printed: &str, truncated: bool) -> String {
    let mut text = printed.trim_matches('\n').trim_end().to_string();
    if truncated {
        text.push_str(
            "\n… Terraform printed more than the host returns to a plugin: the rest of the \
             plan is not shown (`terraform show <plan file>` prints it all)",
        );
    }
    text
}

/// `text` cut to at most `max` bytes at the end of a line (inside a line
/// only when its first line is longer), followed by a line that says how
/// much was left out and where the whole plan is (`full`). `None` when it
/// fits.
pub fn cut(text: &str, max: usize, full: &str) -> Option<String> {
    if text.len() <= max {
        return None;
    }
    let boundary = |mut at: usize| {
        while !text.is_char_boundary(at) {
            at -= 1;
        }
        at
    };
    // A line that ends right at `max` bytes is kept whole.
    let end = text[..boundary(max + 1)]
        .rfind('\n')
        .unwrap_or_else(|| boundary(max));
    let (kept, rest) = text.split_at(end);
    let rest = rest.strip_prefix('\n').unwrap_or(rest);
    let lines = rest.lines().count();
    Some(format!(
        "{kept}\n… plan cut here: {lines} more line{} ({} bytes) not shown; the whole plan is \
         in {full}",
        if lines == 1 { "" } else { "s" },
        rest.len()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> String {
        let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    /// Real `terraform show -no-color` of the plans whose `show -json` the
    /// other fixtures hold: the JSON has the secrets in clear, Terraform's
    /// text masks them, and so does what the stage outputs.
    #[test]
    fn terraform_masks_sensitive_values_in_its_text() {
        for (name, secret, lines) in [
            (
                "real-1.11.4-aws-create",
                "s3cr3t-hunter",
                &[
                    "Terraform will perform the following actions:",
                    "  # aws_ssm_parameter.db_password will be created",
                    "  + resource \"aws_sqs_queue\" \"jobs\" {",
                    "      + value          = (sensitive value)",
                    "Plan: 2 to add, 0 to change, 0 to destroy.",
                    "  + queue_name = \"jobs\"",
                ][..],
            ),
            (
                "real-1.11.4-outputs-create",
                "s3cr3t-demo",
                &[
                    "Changes to Outputs:",
                    "  + secret            = (sensitive value)",
                ][..],
            ),
            (
                "real-1.11.4-outputs-update",
                "s3cr3t-demo",
                &[
                    "  ~ name              = \"demo\" -> \"demo2\"",
                    "  ~ secret            = (sensitive value)",
                ][..],
            ),
        ] {
            assert!(fixture(&format!("{name}.json")).contains(secret), "{name}");
            let text = tidy(&fixture(&format!("{name}.txt")), false);
            for line in lines {
                assert!(text.lines().any(|l| l == *line), "{name}: {line:?}\n{text}");
            }
            assert!(!text.contains("s3cr3t"), "{name}: {text}");
            let cut = cut(&text, 200, "/w/plan.txt").unwrap();
            assert!(!cut.contains("s3cr3t"), "{cut}");
        }
    }

    #[test]
    fn tidy_drops_the_blank_lines_around_and_says_when_the_host_cut() {
        let printed = fixture("real-1.11.4-outputs-create.txt");
        assert!(printed.starts_with("\nChanges to Outputs:"), "{printed:?}");
        let text = tidy(&printed, false);
        assert!(text.starts_with("Changes to Outputs:\n"), "{text}");
        assert!(text.ends_with("without changing any real infrastructure."));
        assert!(tidy("\nPlan: 1 to add\n\n", true).starts_with(
            "Plan: 1 to add\n… Terraform printed more than the host returns to a plugin"
        ));
    }

    #[test]
    fn a_long_plan_is_cut_at_a_line_with_a_note() {
        let text = fixture("real-1.11.4-aws-create.txt");
        let text = tidy(&text, false);
        assert_eq!(cut(&text, text.len(), "/w/plan.txt"), None);
        let max = 400;
        let cut = cut(&text, max, "/w/plan.txt").unwrap();
        let (kept, note) = cut.rsplit_once('\n').unwrap();
        assert!(kept.len() <= max && text.starts_with(kept), "{cut}");
        assert!(text[kept.len()..].starts_with('\n'), "cut at a line's end");
        let rest = &text[kept.len() + 1..];
        assert_eq!(
            note,
            format!(
                "… plan cut here: {} more lines ({} bytes) not shown; the whole plan is in \
                 /w/plan.txt",
                rest.lines().count(),
                rest.len()
            )
        );
        // One line longer than the bound: cut inside it, on a character.
        let cut = super::cut("ééééé\nx", 4, "f").unwrap();
        assert_eq!(
            cut,
            "éé\n… plan cut here: 2 more lines (8 bytes) not shown; the whole plan is in f"
        );
        let cut = super::cut("ab\ncd\n", 3, "f").unwrap();
        assert_eq!(
            cut,
            "ab\n… plan cut here: 1 more line (3 bytes) not shown; the whole plan is in f"
        );
    }
}
