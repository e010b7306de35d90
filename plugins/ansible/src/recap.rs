//! Fallback: the PLAY RECAP of Ansible's `default` stdout callback.
//!
//! Used only when the `capstan_results` callback wrote nothing (e.g. an
//! `ansible.cfg` that disables callback plugins). Each recap line is
//! `<host> : ok=N changed=N unreachable=N failed=N skipped=N rescued=N
//! ignored=N` (host padded to a column; older Ansible has fewer keys).
//! Only lines after the last `PLAY RECAP` header count, up to the first
//! line that is not a recap line.

use std::collections::BTreeMap;

use crate::results::Counts;

/// Per-host counters from the last PLAY RECAP in `stdout`; `None` when
/// there is none.
pub fn parse(stdout: &str) -> Option<BTreeMap<String, Counts>> {
    let lines: Vec<&str> = stdout.lines().collect();
    let start = lines
        .iter()
        .rposition(|l| l.trim_start().starts_with("PLAY RECAP"))?;
    let mut hosts = BTreeMap::new();
    for line in &lines[start + 1..] {
        if line.trim().is_empty() {
            if hosts.is_empty() {
                continue;
            }
            break;
        }
        match parse_line(line) {
            Some((host, counts)) => {
                hosts.insert(host, counts);
            }
            None => break,
        }
    }
    Some(hosts)
}

/// One `host : key=value ...` line.
fn parse_line(line: &str) -> Option<(String, Counts)> {
    // Host names never contain " : " (IPv6 addresses have no spaces).
    let (host, rest) = line.rsplit_once(" : ")?;
    let host = host.trim();
    if host.is_empty() || host.contains(char::is_whitespace) {
        return None;
    }
    let mut c = Counts::default();
    let mut seen = 0;
    for pair in rest.split_whitespace() {
        let (key, value) = pair.split_once('=')?;
        let value: u64 = value.parse().ok()?;
        let slot = match key {
            "ok" => &mut c.ok,
            "changed" => &mut c.changed,
            "unreachable" => &mut c.unreachable,
            "failed" => &mut c.failed,
            "skipped" => &mut c.skipped,
            "rescued" => &mut c.rescued,
            "ignored" => &mut c.ignored,
            _ => continue,
        };
        *slot = value;
        seen += 1;
    }
    (seen > 0).then(|| (host.to_string(), c))
}

#[cfg(test)]
mod tests {
    use super::*;

    const TESTDATA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/testdata/");
    const EXAMPLE: &str = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../examples/golden-image/ansible/testdata/"
    );

    /// The recap text of each real run of the example's playbook says what
    /// the callback's JSON of the same run says.
    #[test]
    fn example_runs_agree_with_their_json() {
        for run in ["first-run", "second-run", "failed", "unreachable"] {
            let text = std::fs::read_to_string(format!("{EXAMPLE}post-deploy-{run}.txt")).unwrap();
            let json = std::fs::read_to_string(format!("{EXAMPLE}recap-{run}.json")).unwrap();
            let expected = crate::results::Results::parse(&json).unwrap().hosts;
            assert_eq!(parse(&text), Some(expected), "{run}");
        }
    }

    #[test]
    fn own_default_callback_output() {
        let text =
            std::fs::read_to_string(format!("{TESTDATA}playbook-failed.stdout.txt")).unwrap();
        let hosts = parse(&text).unwrap();
        assert_eq!(hosts.len(), 2);
        assert_eq!(
            hosts["web-1"],
            Counts {
                ok: 3,
                changed: 2,
                unreachable: 0,
                failed: 0,
                skipped: 2,
                rescued: 1,
                ignored: 1
            }
        );
        assert_eq!(hosts["web-2"].failed, 1);
    }

    #[test]
    fn edge_cases() {
        assert_eq!(parse("PLAY [x] ***\nok: [a]\n"), None);
        let text = "PLAY RECAP *****\n\
                    ::1                        : ok=1    changed=0    unreachable=0    failed=0\n\
                    web-2 : ok=0 changed=0 unreachable=1 failed=0 skipped=0 rescued=0 ignored=0   \n\
                    \n\
                    later : ok=9\n";
        let hosts = parse(text).unwrap();
        assert_eq!(hosts.len(), 2);
        assert_eq!(hosts["::1"].ok, 1);
        assert_eq!(hosts["web-2"].unreachable, 1);
        // The last recap wins (e.g. several playbooks in one output).
        let two = format!("{text}PLAY RECAP ***\nb : ok=2 changed=1\n");
        let hosts = parse(&two).unwrap();
        assert_eq!(hosts.keys().collect::<Vec<_>>(), ["b"]);
        // A line that is not a recap line ends it.
        let hosts = parse("PLAY RECAP *\na : ok=1\nsome warning: x=y\nb : ok=1\n").unwrap();
        assert_eq!(hosts.keys().collect::<Vec<_>>(), ["a"]);
        assert_eq!(parse_line("a b : ok=1"), None);
        assert_eq!(parse_line("a : ok=x"), None);
        assert_eq!(parse_line("a : nothing=1"), None);
    }
}
