//! The JUnit XML report: `<testsuites>`, one `<testsuite>` per category
//! that has checks, one `<testcase>` per check with a `<failure>` (the
//! system checked is not as expected) or an `<error>` (the check could not
//! be made), and its captured output in `<system-out>`.
//!
//! A small writer rather than an XML crate: the document is flat, and what
//! matters is escaping — including characters XML 1.0 cannot carry at all
//! (terminal colour codes in a command's output), which escaping crates
//! pass through and which make the file unparseable.

use std::fmt::Write as _;

use crate::checks::{CheckResult, Status};
use crate::config::Category;

/// What the whole report is about.
pub struct Suite<'a> {
    /// `testsuites/@name`: pipeline and stage.
    pub name: &'a str,
    /// `testcase/@classname` prefix: the stage name.
    pub stage: &'a str,
    /// When the checks started (`YYYY-MM-DDTHH:MM:SS`, UTC).
    pub timestamp: &'a str,
    /// Wall time of the whole stage, in seconds.
    pub time: f64,
}

/// Write the report.
pub fn write(suite: &Suite<'_>, results: &[CheckResult]) -> String {
    let count = |rs: &[&CheckResult], s: Status| rs.iter().filter(|r| r.status == s).count();
    let all: Vec<&CheckResult> = results.iter().collect();
    let mut xml = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let _ = writeln!(
        xml,
        "<testsuites name=\"{}\" tests=\"{}\" failures=\"{}\" errors=\"{}\" skipped=\"0\" time=\"{:.3}\" timestamp=\"{}\">",
        attr(suite.name),
        all.len(),
        count(&all, Status::Failed),
        count(&all, Status::Error),
        suite.time,
        attr(suite.timestamp),
    );
    for category in Category::ALL {
        let cases: Vec<&CheckResult> = results.iter().filter(|r| r.category == category).collect();
        if cases.is_empty() {
            continue;
        }
        let time: f64 = cases.iter().map(|r| r.duration.as_secs_f64()).sum();
        let _ = writeln!(
            xml,
            "  <testsuite name=\"{category}\" tests=\"{}\" failures=\"{}\" errors=\"{}\" skipped=\"0\" time=\"{time:.3}\" timestamp=\"{}\">",
            cases.len(),
            count(&cases, Status::Failed),
            count(&cases, Status::Error),
            attr(suite.timestamp),
        );
        for r in cases {
            testcase(&mut xml, suite.stage, r);
        }
        xml.push_str("  </testsuite>\n");
    }
    xml.push_str("</testsuites>\n");
    xml
}

fn testcase(xml: &mut String, stage: &str, r: &CheckResult) {
    let _ = write!(
        xml,
        "    <testcase name=\"{}\" classname=\"{}.{}\" time=\"{:.3}\"",
        attr(&r.name),
        attr(stage),
        r.category,
        r.duration.as_secs_f64(),
    );
    let element = match r.status {
        Status::Passed => None,
        Status::Failed => Some("failure"),
        Status::Error => Some("error"),
    };
    if element.is_none() && r.output.is_none() {
        xml.push_str("/>\n");
        return;
    }
    xml.push_str(">\n");
    if let Some(element) = element {
        let optional = if r.required { "" } else { "optional check: " };
        let _ = writeln!(
            xml,
            "      <{element} message=\"{}{}\" type=\"{}\">{}\n{} check of {}; required: {}</{element}>",
            optional,
            attr(&r.message),
            r.kind,
            text(&r.message),
            r.kind,
            text(&r.target),
            if r.required { "yes" } else { "no" },
        );
    }
    if let Some(output) = &r.output {
        let _ = writeln!(xml, "      <system-out>{}</system-out>", text(output));
    }
    xml.push_str("    </testcase>\n");
}

/// Escape for element content.
pub fn text(s: &str) -> String {
    escape(s, false)
}

/// Escape for a double-quoted attribute value (line breaks and tabs as
/// character references, so that they survive attribute normalisation).
pub fn attr(s: &str) -> String {
    escape(s, true)
}

fn escape(s: &str, attribute: bool) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' if attribute => out.push_str("&quot;"),
            '\'' if attribute => out.push_str("&apos;"),
            '\n' if attribute => out.push_str("&#10;"),
            '\r' => out.push_str("&#13;"),
            '\t' if attribute => out.push_str("&#9;"),
            '\n' | '\t' => out.push(c),
            // Not allowed in XML 1.0 at all, not even as a reference.
            c if (c as u32) < 0x20 || c == '\u{FFFE}' || c == '\u{FFFF}' => out.push('\u{FFFD}'),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Kind;
    use std::time::Duration;

    fn result(name: &str, category: Category, status: Status, message: &str) -> CheckResult {
        CheckResult {
            name: name.into(),
            category,
            kind: Kind::Command,
            required: true,
            target: "ansible all -a \"test -f /x\"".into(),
            status,
            message: message.into(),
            duration: Duration::from_millis(1250),
            output: None,
        }
    }

    #[test]
    fn escapes_special_and_invalid_characters() {
        assert_eq!(text("a<b>&c \"q\" 'a'"), "a&lt;b&gt;&amp;c \"q\" 'a'");
        assert_eq!(attr("a\"b'\n\t<"), "a&quot;b&apos;&#10;&#9;&lt;");
        assert_eq!(text("\u{1b}[31mred\u{0}"), "\u{FFFD}[31mred\u{FFFD}");
        assert_eq!(text("line\r\nnext"), "line&#13;\nnext");
    }

    #[test]
    fn parses_back_with_counts_and_escaped_text() {
        let mut weird = result(
            "web <answers> & \"more\"",
            Category::Connectivity,
            Status::Failed,
            "connection refused\u{1b}[0m <&>",
        );
        weird.output = Some("out \u{7} ]]> <tag/>\nline 2".into());
        let mut optional = result(
            "optional one",
            Category::Service,
            Status::Error,
            "not permitted",
        );
        optional.required = false;
        let results = vec![
            weird,
            result(
                "ssh",
                Category::Connectivity,
                Status::Passed,
                "connected in 2 ms",
            ),
            optional,
            result(
                "marker",
                Category::Functionality,
                Status::Passed,
                "exit code 0",
            ),
        ];
        let xml = write(
            &Suite {
                name: "golden-image/smoke",
                stage: "smoke",
                timestamp: "2026-01-02T03:04:05",
                time: 5.0,
            },
            &results,
        );
        let doc = roxmltree::Document::parse(&xml).unwrap_or_else(|e| panic!("{e}\n{xml}"));
        let root = doc.root_element();
        assert_eq!(root.tag_name().name(), "testsuites");
        assert_eq!(root.attribute("tests"), Some("4"));
        assert_eq!(root.attribute("failures"), Some("1"));
        assert_eq!(root.attribute("errors"), Some("1"));
        let suites: Vec<_> = root.children().filter(|n| n.is_element()).collect();
        let names: Vec<_> = suites
            .iter()
            .map(|s| s.attribute("name").unwrap())
            .collect();
        assert_eq!(names, ["connectivity", "service", "functionality"]);
        assert_eq!(suites[0].attribute("tests"), Some("2"));
        assert_eq!(suites[0].attribute("time"), Some("2.500"));
        let case = suites[0].children().find(|n| n.is_element()).unwrap();
        assert_eq!(case.attribute("name"), Some("web <answers> & \"more\""));
        assert_eq!(case.attribute("classname"), Some("smoke.connectivity"));
        assert_eq!(case.attribute("time"), Some("1.250"));
        let failure = case.children().find(|n| n.has_tag_name("failure")).unwrap();
        assert_eq!(
            failure.attribute("message"),
            Some("connection refused\u{FFFD}[0m <&>")
        );
        assert_eq!(failure.attribute("type"), Some("command"));
        let out = case
            .children()
            .find(|n| n.has_tag_name("system-out"))
            .unwrap();
        assert_eq!(out.text(), Some("out \u{FFFD} ]]> <tag/>\nline 2"));
        let error = suites[1]
            .descendants()
            .find(|n| n.has_tag_name("error"))
            .unwrap();
        assert_eq!(
            error.attribute("message"),
            Some("optional check: not permitted")
        );
        let passed = suites[2].children().find(|n| n.is_element()).unwrap();
        assert_eq!(passed.children().filter(|n| n.is_element()).count(), 0);
    }
}
