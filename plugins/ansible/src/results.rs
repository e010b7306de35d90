//! What one Ansible run did, per host: the JSON document the plugin's
//! `capstan_results` callback writes (see `capstan_results.py`), or, as a
//! fallback, the PLAY RECAP of the default stdout callback ([`crate::recap`]).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Ansible's per-host counters (the numbers of the PLAY RECAP).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Counts {
    /// Tasks that ran without change (includes `changed`).
    pub ok: u64,
    /// Tasks that changed something.
    pub changed: u64,
    /// Tasks that failed (not rescued, not ignored).
    pub failed: u64,
    /// Tasks that could not reach the host.
    pub unreachable: u64,
    /// Tasks skipped by a condition.
    pub skipped: u64,
    /// Failures handled by a `rescue` block.
    pub rescued: u64,
    /// Failures with `ignore_errors`.
    pub ignored: u64,
}

/// One failed (or unreachable) task on one host.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Failure {
    /// The host.
    pub host: String,
    /// The task's name.
    pub task: String,
    /// The module's message (`msg`, else stderr/stdout).
    pub msg: String,
    /// True when the host could not be reached, false when the task failed.
    pub unreachable: bool,
}

/// Everything recorded about a run.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Results {
    /// Document format version.
    pub version: u32,
    /// Counters per host, every host the run touched.
    pub hosts: BTreeMap<String, Counts>,
    /// Failed and unreachable tasks, in order (rescued failures included,
    /// ignored ones not).
    pub failures: Vec<Failure>,
    /// Facts returned by `setup` per host (only when asked for).
    pub facts: BTreeMap<String, BTreeMap<String, Value>>,
}

impl Results {
    /// Parse the callback's document.
    pub fn parse(text: &str) -> Result<Results, serde_json::Error> {
        serde_json::from_str(text)
    }

    /// Hosts with a failed task.
    pub fn failed_hosts(&self) -> Vec<String> {
        self.hosts
            .iter()
            .filter(|(_, c)| c.failed > 0)
            .map(|(h, _)| h.clone())
            .collect()
    }

    /// Hosts that could not be reached.
    pub fn unreachable_hosts(&self) -> Vec<String> {
        self.hosts
            .iter()
            .filter(|(_, c)| c.unreachable > 0)
            .map(|(h, _)| h.clone())
            .collect()
    }

    /// Hosts that neither failed nor were unreachable.
    pub fn ok_hosts(&self) -> Vec<String> {
        self.hosts
            .iter()
            .filter(|(_, c)| c.failed == 0 && c.unreachable == 0)
            .map(|(h, _)| h.clone())
            .collect()
    }

    /// Counters summed over every host.
    pub fn totals(&self) -> Counts {
        self.hosts.values().fold(Counts::default(), |t, c| Counts {
            ok: t.ok + c.ok,
            changed: t.changed + c.changed,
            failed: t.failed + c.failed,
            unreachable: t.unreachable + c.unreachable,
            skipped: t.skipped + c.skipped,
            rescued: t.rescued + c.rescued,
            ignored: t.ignored + c.ignored,
        })
    }

    /// True when a host failed or was unreachable.
    pub fn has_problems(&self) -> bool {
        self.hosts
            .values()
            .any(|c| c.failed > 0 || c.unreachable > 0)
    }

    /// One line per failed or unreachable host, with the task and message
    /// that made it so (the last failure of a failed host: earlier ones may
    /// have been rescued).
    pub fn problem_lines(&self) -> Vec<String> {
        let last = |host: &str, unreachable: bool| {
            self.failures
                .iter()
                .rev()
                .find(|f| f.host == host && f.unreachable == unreachable)
        };
        let mut lines = Vec::new();
        for host in self.failed_hosts() {
            lines.push(match last(&host, false) {
                Some(f) => format!("{host}: failed at task `{}`: {}", f.task, one_line(&f.msg)),
                None => format!("{host}: failed"),
            });
        }
        for host in self.unreachable_hosts() {
            lines.push(match last(&host, true) {
                Some(f) => format!(
                    "{host}: unreachable at task `{}`: {}",
                    f.task,
                    one_line(&f.msg)
                ),
                None => format!("{host}: unreachable"),
            });
        }
        lines
    }
}

/// A message on one line, at most 300 characters.
fn one_line(msg: &str) -> String {
    let joined = msg
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" / ");
    if joined.chars().count() > 300 {
        joined.chars().take(299).chain(['…']).collect()
    } else if joined.is_empty() {
        "(no message)".into()
    } else {
        joined
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Samples this crate made (see testdata/README.md).
    const OWN: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/testdata/");
    /// Samples of the golden-image example (examples/golden-image/regen-testdata.sh):
    /// the same `hosts`/`failures` shape, written by the example's capstan_recap callback.
    const EXAMPLE: &str = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../examples/golden-image/ansible/testdata/"
    );

    fn read(path: String) -> String {
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    fn own(name: &str) -> Results {
        Results::parse(&read(format!("{OWN}{name}"))).unwrap()
    }

    fn example(name: &str) -> Results {
        Results::parse(&read(format!("{EXAMPLE}{name}"))).unwrap()
    }

    #[test]
    fn example_first_and_second_run() {
        for (name, changed) in [
            ("recap-first-run.json", true),
            ("recap-second-run.json", false),
        ] {
            let r = example(name);
            assert_eq!(
                r.hosts.keys().collect::<Vec<_>>(),
                ["web-1", "web-2"],
                "{name}"
            );
            assert!(!r.has_problems(), "{name}");
            assert!(r.failures.is_empty(), "{name}");
            assert_eq!(r.ok_hosts().len(), 2);
            let t = r.totals();
            assert!(t.ok > 0);
            assert_eq!(t.changed > 0, changed, "{name}: {t:?}");
        }
    }

    #[test]
    fn example_image_never_baked_fails_both_hosts() {
        let r = example("recap-failed.json");
        assert_eq!(r.failed_hosts(), ["web-1", "web-2"]);
        assert!(r.unreachable_hosts().is_empty() && r.ok_hosts().is_empty());
        let lines = r.problem_lines();
        assert_eq!(lines.len(), 2);
        assert!(
            lines[0]
                .starts_with("web-1: failed at task `Fail when the image was never baked`: image "),
            "{lines:?}"
        );
        assert!(lines[0].contains("has no rootfs at"), "{lines:?}");
    }

    #[test]
    fn example_unreachable_host() {
        let r = example("recap-unreachable.json");
        assert_eq!(r.unreachable_hosts(), ["web-2"]);
        assert!(r.failed_hosts().is_empty());
        assert_eq!(r.ok_hosts(), ["web-1"]);
        assert_eq!(
            r.problem_lines(),
            [
                "web-2: unreachable at task `Look for the image's rootfs`: Failed to connect to the host via ssh: ssh: connect to host 127.0.0.1 port 1: Connection refused"
            ]
        );
    }

    #[test]
    fn own_playbook_with_a_failed_host_a_rescue_and_an_ignored_error() {
        let r = own("results-playbook-failed.json");
        assert_eq!(
            r.hosts["web-1"],
            Counts {
                ok: 3,
                changed: 2,
                failed: 0,
                unreachable: 0,
                skipped: 2,
                rescued: 1,
                ignored: 1
            }
        );
        assert_eq!(r.failed_hosts(), ["web-2"]);
        assert_eq!(r.ok_hosts(), ["web-1"]);
        // web-1's rescued failure is recorded, but web-1 did not fail.
        assert!(r.failures.iter().any(|f| f.host == "web-1"));
        assert_eq!(
            r.problem_lines(),
            ["web-2: failed at task `maybe fail`: non-zero return code"]
        );
        let t = r.totals();
        assert_eq!((t.ok, t.changed, t.failed), (4, 3, 1));
    }

    #[test]
    fn own_setup_facts() {
        let r = own("results-setup-facts.json");
        assert!(!r.has_problems());
        assert_eq!(r.facts["web-1"]["ansible_distribution"], "Debian");
        assert!(
            r.facts["web-2"]["ansible_python_version"]
                .as_str()
                .unwrap()
                .starts_with("3.")
        );
        // Only the filtered facts.
        assert!(
            r.facts["web-1"]
                .keys()
                .all(|k| k.starts_with("ansible_distribution") || k == "ansible_python_version")
        );
    }

    #[test]
    fn own_wait_for_connection_reports_a_silent_host_as_failed() {
        let r = own("results-wait-unreachable.json");
        assert_eq!(r.failed_hosts(), ["ghost"]);
        assert_eq!(r.ok_hosts(), ["web-1"]);
        let lines = r.problem_lines();
        assert!(
            lines[0].starts_with(
                "ghost: failed at task `wait_for_connection`: timed out waiting for ping module test"
            ),
            "{lines:?}"
        );
    }

    #[test]
    fn missing_fields_and_messages() {
        let r =
            Results::parse(r#"{"hosts": {"a": {"failed": 1}, "b": {"unreachable": 2}}}"#).unwrap();
        assert_eq!(r.problem_lines(), ["a: failed", "b: unreachable"]);
        assert_eq!(one_line(""), "(no message)");
        assert_eq!(one_line("a\n\n b \n"), "a / b");
        assert_eq!(one_line(&"x".repeat(400)).chars().count(), 300);
        assert!(Results::parse("42").is_err());
    }
}
