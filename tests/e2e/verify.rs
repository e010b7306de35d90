//! `capstan verify`: an untouched run passes; one changed byte, a removed
//! line, a cut-off end or an edited digest is named.

use serde_json::Value;

use crate::harness::Sandbox;

const PIPELINE: &str = r#"
[pipeline]
name = "verify"
[plugins.command]
path = "{command}"
[stages.say]
plugin = "command"
with.steps = [{ name = "one", run = ["echo", "one"] }, { name = "two", run = ["echo", "two"] }]
[stages.say.grants]
read = ["ro"]
[[stages.say.grants.exec]]
program = "echo"
args = ["*"]
env = ["CAPSTAN_OUTPUT"]
"#;

/// `capstan verify <id> --json`: its exit code and the failed checks.
fn verify(sb: &Sandbox, id: &str) -> (i32, Vec<Value>) {
    let ran = sb.capstan(&["verify", id, "--json"]);
    let report: Value =
        serde_json::from_str(&ran.stdout).unwrap_or_else(|e| panic!("{e}: {ran:?}"));
    assert_eq!(report["verified"], ran.code == 0, "{ran:?}");
    let failed = report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["outcome"] == "failed")
        .cloned()
        .collect();
    (ran.code, failed)
}

#[test]
fn verify_passes_on_an_untouched_run_and_names_the_first_broken_link() {
    let sb = Sandbox::new();
    let pipeline = sb.pipeline(PIPELINE);
    let ran = sb.capstan(&["run", pipeline.to_str().unwrap(), "-q"]);
    assert_eq!(ran.code, 0, "{ran:?}");
    let id = sb.newest_run_id();
    let dir = sb.last_run().dir;
    let audit = dir.join("audit.jsonl");
    let pristine = std::fs::read(&audit).unwrap();
    let lines: Vec<&[u8]> = pristine.split_inclusive(|&b| b == b'\n').collect();
    assert!(lines.len() >= 5, "{}", String::from_utf8_lossy(&pristine));

    let ok = sb.capstan(&["verify", &id]);
    assert_eq!(ok.code, 0, "{ok:?}");
    for check in [
        "audit chain",
        "audit head",
        "pipeline digest",
        "plugin digests",
    ] {
        assert!(
            ok.stdout
                .lines()
                .any(|l| l.starts_with("ok") && l.contains(check)),
            "{check}: {ok:?}"
        );
    }
    assert!(ok.stdout.contains("signatures"), "{ok:?}");
    assert_eq!(verify(&sb, "latest"), (0, vec![]));

    // One byte of a middle line: a digit of its time, so it still parses;
    // the line after it no longer chains.
    let middle = lines.len() / 2;
    let start: usize = lines[..middle - 1].iter().map(|l| l.len()).sum();
    let at = start + find(lines[middle - 1], br#""time":"2"#) + 8;
    let mut changed = pristine.clone();
    changed[at] ^= 1;
    std::fs::write(&audit, &changed).unwrap();
    let (code, failed) = verify(&sb, &id);
    assert_eq!(code, 9, "{failed:#?}");
    assert_eq!(failed[0]["check"], "audit chain", "{failed:#?}");
    assert_eq!(failed[0]["line"], middle + 1, "{failed:#?}");
    assert_eq!(failed[0]["file"], audit.to_str().unwrap());
    let text = sb.capstan(&["verify", &id]);
    assert!(
        text.stdout.contains(&format!(
            "audit.jsonl:{}: line {} does not follow line {middle}",
            middle + 1,
            middle + 1
        )),
        "{text:?}"
    );

    // A removed line: the one after it does not follow the one before.
    let removed = [&lines[..middle - 1], &lines[middle..]].concat().concat();
    std::fs::write(&audit, removed).unwrap();
    let (code, failed) = verify(&sb, &id);
    assert_eq!((code, failed[0]["line"].clone()), (9, middle.into()));

    // The last line cut off: the chain holds, the store's head is gone.
    std::fs::write(&audit, lines[..lines.len() - 1].concat()).unwrap();
    let (code, failed) = verify(&sb, &id);
    assert_eq!(code, 9);
    assert_eq!(failed[0]["check"], "audit head", "{failed:#?}");

    // run.json's pipeline digest edited.
    std::fs::write(&audit, &pristine).unwrap();
    let record = dir.join("run.json");
    let mut run: Value = serde_json::from_slice(&std::fs::read(&record).unwrap()).unwrap();
    run["pipeline_digest"] = "0".repeat(64).into();
    std::fs::write(&record, serde_json::to_vec_pretty(&run).unwrap()).unwrap();
    let (code, failed) = verify(&sb, &id);
    assert_eq!(code, 9);
    assert_eq!(failed.len(), 1, "{failed:#?}");
    assert_eq!(failed[0]["check"], "pipeline digest");
    assert_eq!(failed[0]["file"], record.to_str().unwrap());
}

fn find(haystack: &[u8], needle: &[u8]) -> usize {
    haystack
        .windows(needle.len())
        .position(|w| w == needle)
        .unwrap_or_else(|| panic!("no {}", String::from_utf8_lossy(needle)))
}
