//! What the results become: the JSON report, the summary table for the
//! log, the stage summary and the failure message.

use serde::Serialize;
use serde_json::{Value, json};

use crate::checks::{CheckResult, Status, ms};
use crate::config::Category;

/// Counts over a set of results.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    /// All checks.
    pub total: usize,
    /// Passed.
    pub passed: usize,
    /// Failed or could not be made (`failures` + `errors` in JUnit terms).
    pub failed: usize,
    /// Of `failed`: those that could not be made.
    pub errors: usize,
    /// Of `failed`: the required ones (these fail the stage).
    pub required_failed: usize,
}

impl Counts {
    /// Count `results`.
    pub fn of<'a>(results: impl IntoIterator<Item = &'a CheckResult>) -> Counts {
        let mut c = Counts::default();
        for r in results {
            c.total += 1;
            match r.status {
                Status::Passed => c.passed += 1,
                Status::Failed | Status::Error => {
                    c.failed += 1;
                    c.errors += usize::from(r.status == Status::Error);
                    c.required_failed += usize::from(r.required);
                }
            }
        }
        c
    }
}

/// Facts about the run for the JSON report.
pub struct Meta<'a> {
    /// Pipeline name.
    pub pipeline: &'a str,
    /// Stage name.
    pub stage: &'a str,
    /// Run id.
    pub run_id: &'a str,
    /// Target environment.
    pub environment: &'a str,
    /// When the checks started (RFC 3339, UTC).
    pub started_at: &'a str,
    /// Wall time in milliseconds.
    pub duration_ms: u128,
    /// Where the JUnit report is.
    pub junit_file: &'a str,
}

/// The JSON report: written to `report.json` and set as the stage report.
pub fn json(meta: &Meta<'_>, results: &[CheckResult]) -> Value {
    let counts = Counts::of(results);
    let categories: serde_json::Map<String, Value> = Category::ALL
        .iter()
        .filter_map(|&c| {
            let counts = Counts::of(results.iter().filter(|r| r.category == c));
            (counts.total > 0).then(|| (c.to_string(), json!(counts)))
        })
        .collect();
    let checks: Vec<Value> = results
        .iter()
        .map(|r| {
            let mut check = json!({
                "name": r.name,
                "category": r.category,
                "kind": r.kind,
                "required": r.required,
                "target": r.target,
                "status": r.status,
                "message": r.message,
                "duration_ms": r.duration.as_millis(),
            });
            if let Some(output) = &r.output {
                check["output"] = json!(output);
            }
            check
        })
        .collect();
    json!({
        "pipeline": meta.pipeline,
        "stage": meta.stage,
        "run_id": meta.run_id,
        "environment": meta.environment,
        "started_at": meta.started_at,
        "duration_ms": meta.duration_ms,
        "passed": counts.passed,
        "failed": counts.failed,
        "errors": counts.errors,
        "required_failed": counts.required_failed,
        "total": counts.total,
        "failed_checks": failed_names(results),
        "categories": categories,
        "checks": checks,
        "junit_file": meta.junit_file,
    })
}

/// Names of the checks that did not pass, in file order.
pub fn failed_names(results: &[CheckResult]) -> Vec<&str> {
    results
        .iter()
        .filter(|r| !r.passed())
        .map(|r| r.name.as_str())
        .collect()
}

/// Width of the DETAIL column before it is cut.
const DETAIL_WIDTH: usize = 90;

/// The plain-text summary table for the stage log.
pub fn table(results: &[CheckResult], elapsed: std::time::Duration) -> String {
    let header = [
        "RESULT", "CHECK", "CATEGORY", "KIND", "REQUIRED", "TIME", "DETAIL",
    ];
    let rows: Vec<[String; 7]> = results
        .iter()
        .map(|r| {
            [
                match r.status {
                    Status::Passed => "pass",
                    Status::Failed => "FAIL",
                    Status::Error => "ERROR",
                }
                .to_string(),
                r.name.clone(),
                r.category.to_string(),
                r.kind.to_string(),
                if r.required { "yes" } else { "no" }.to_string(),
                ms(r.duration),
                cut(first_line(&r.message), DETAIL_WIDTH),
            ]
        })
        .collect();
    let width = |col: usize| {
        rows.iter()
            .map(|r| r[col].chars().count())
            .chain([header[col].len()])
            .max()
            .unwrap_or(0)
    };
    let widths: Vec<usize> = (0..header.len()).map(width).collect();
    let line = |cells: &[&str]| {
        let mut l = String::new();
        for (i, cell) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                l.push_str(cell);
            } else {
                l.push_str(cell);
                let pad = widths[i] - cell.chars().count() + 2;
                l.extend(std::iter::repeat_n(' ', pad));
            }
        }
        l.trim_end().to_string()
    };
    let mut out = String::new();
    out.push_str(&line(&header));
    out.push('\n');
    for row in &rows {
        let cells: Vec<&str> = row.iter().map(String::as_str).collect();
        out.push_str(&line(&cells));
        out.push('\n');
    }
    let c = Counts::of(results);
    let mut tail = format!("{} passed, {} failed", c.passed, c.failed);
    if c.failed > 0 {
        tail.push_str(&format!(" ({} required)", c.required_failed));
    }
    tail.push_str(&format!(" of {} checks in {}", c.total, ms(elapsed)));
    out.push_str(&tail);
    out.push('\n');
    out
}

/// The stage's error when required checks failed (`None` when none did):
/// `2 required checks failed: a (why); b (why)`.
pub fn failure(results: &[CheckResult]) -> Option<String> {
    let failed: Vec<&CheckResult> = results
        .iter()
        .filter(|r| r.required && !r.passed())
        .collect();
    if failed.is_empty() {
        return None;
    }
    let checks = if failed.len() == 1 { "check" } else { "checks" };
    Some(format!(
        "{} required {checks} failed: {}",
        failed.len(),
        list(&failed)
    ))
}

/// The stage summary when no required check failed.
pub fn success(results: &[CheckResult]) -> String {
    let c = Counts::of(results);
    let by_category: Vec<String> = Category::ALL
        .iter()
        .filter_map(|&cat| {
            let c = Counts::of(results.iter().filter(|r| r.category == cat));
            (c.total > 0).then(|| format!("{cat} {}/{}", c.passed, c.total))
        })
        .collect();
    let mut s = if c.failed == 0 {
        let checks = if c.total == 1 { "check" } else { "checks" };
        format!(
            "all {} {checks} passed ({})",
            c.total,
            by_category.join(", ")
        )
    } else {
        format!(
            "{} of {} checks passed ({})",
            c.passed,
            c.total,
            by_category.join(", ")
        )
    };
    let optional: Vec<&CheckResult> = results.iter().filter(|r| !r.passed()).collect();
    if !optional.is_empty() {
        let checks = if optional.len() == 1 {
            "check"
        } else {
            "checks"
        };
        s.push_str(&format!(
            "; {} optional {checks} failed: {}",
            optional.len(),
            list(&optional)
        ));
    }
    s
}

/// How much of each reason the failure message keeps (the names are kept
/// whole; the reports have the full reasons).
const REASON_WIDTH: usize = 120;

fn list(results: &[&CheckResult]) -> String {
    results
        .iter()
        .map(|r| format!("{} ({})", r.name, cut(first_line(&r.message), REASON_WIDTH)))
        .collect::<Vec<_>>()
        .join("; ")
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or("").trim_end()
}

fn cut(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_string()
    } else {
        s.chars().take(max - 1).chain(['…']).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Kind;
    use std::time::Duration;

    fn r(
        name: &str,
        category: Category,
        kind: Kind,
        required: bool,
        status: Status,
        message: &str,
    ) -> CheckResult {
        CheckResult {
            name: name.into(),
            category,
            kind,
            required,
            target: "t".into(),
            status,
            message: message.into(),
            duration: Duration::from_millis(3),
            output: None,
        }
    }

    fn results() -> Vec<CheckResult> {
        use Category::*;
        vec![
            r(
                "web answers",
                Connectivity,
                Kind::Tcp,
                true,
                Status::Failed,
                "connection refused",
            ),
            r(
                "ssh config hardened",
                Security,
                Kind::File,
                true,
                Status::Failed,
                "file mode is 0644, expected 0600",
            ),
            r(
                "motd",
                Security,
                Kind::File,
                false,
                Status::Error,
                "cannot read the file mode: stat: boom",
            ),
            r(
                "tools installed",
                Functionality,
                Kind::Command,
                true,
                Status::Passed,
                "exit code 0 in 812 ms",
            ),
        ]
    }

    #[test]
    fn failure_names_each_failed_required_check() {
        assert_eq!(
            failure(&results()).unwrap(),
            "2 required checks failed: web answers (connection refused); ssh config hardened (file mode is 0644, expected 0600)"
        );
        let one = &results()[..1];
        assert_eq!(
            failure(one).unwrap(),
            "1 required check failed: web answers (connection refused)"
        );
        assert_eq!(
            failure(&results()[2..]),
            None,
            "an optional failure does not fail"
        );
        let long = r(
            "chatty",
            Category::Service,
            Kind::Command,
            true,
            Status::Failed,
            &"x".repeat(500),
        );
        let m = failure(&[long]).unwrap();
        assert!(m.starts_with("1 required check failed: chatty (xxx"), "{m}");
        assert!(m.ends_with("x…)") && m.len() < 200, "{m}");
    }

    #[test]
    fn success_mentions_optional_failures() {
        assert_eq!(
            success(&results()[2..]),
            "1 of 2 checks passed (security 0/1, functionality 1/1); 1 optional check failed: motd (cannot read the file mode: stat: boom)"
        );
        assert_eq!(
            success(&results()[3..]),
            "all 1 check passed (functionality 1/1)"
        );
    }

    #[test]
    fn table_is_aligned_plain_text() {
        let t = table(&results(), Duration::from_millis(1500));
        let expected = "\
RESULT  CHECK                CATEGORY       KIND     REQUIRED  TIME  DETAIL
FAIL    web answers          connectivity   tcp      yes       3 ms  connection refused
FAIL    ssh config hardened  security       file     yes       3 ms  file mode is 0644, expected 0600
ERROR   motd                 security       file     no        3 ms  cannot read the file mode: stat: boom
pass    tools installed      functionality  command  yes       3 ms  exit code 0 in 812 ms
1 passed, 3 failed (2 required) of 4 checks in 1.5 s
";
        assert_eq!(t, expected);
        let long = r(
            "x",
            Category::Service,
            Kind::Http,
            true,
            Status::Failed,
            &"y".repeat(200),
        );
        let t = table(&[long], Duration::ZERO);
        assert!(t.lines().nth(1).unwrap().ends_with("y…"), "{t}");
    }

    #[test]
    fn json_report_counts_by_category() {
        let meta = Meta {
            pipeline: "golden-image",
            stage: "smoke",
            run_id: "r1",
            environment: "dev",
            started_at: "2026-01-02T03:04:05Z",
            duration_ms: 12,
            junit_file: "/w/junit.xml",
        };
        let mut results = results();
        results[3].output = Some("localhost | CHANGED".into());
        let v = json(&meta, &results);
        assert_eq!(v["total"], 4);
        assert_eq!(v["passed"], 1);
        assert_eq!(v["failed"], 3);
        assert_eq!(v["errors"], 1);
        assert_eq!(v["required_failed"], 2);
        assert_eq!(
            v["failed_checks"],
            json!(["web answers", "ssh config hardened", "motd"])
        );
        assert_eq!(
            v["categories"]["security"],
            json!({"total": 2, "passed": 0, "failed": 2, "errors": 1, "required_failed": 1})
        );
        assert!(v["categories"].get("service").is_none());
        assert_eq!(v["checks"][0]["status"], "failed");
        assert_eq!(v["checks"][0]["kind"], "tcp");
        assert_eq!(v["checks"][2]["status"], "error");
        assert_eq!(v["checks"][3]["output"], "localhost | CHANGED");
        assert!(v["checks"][0].get("output").is_none());
    }
}
