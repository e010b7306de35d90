//! Capstan in GitHub Actions (`GITHUB_ACTIONS=true`): stage logs in groups
//! with plugin text kept from becoming workflow commands, annotations at
//! the pipeline file's lines, the job summary and step outputs; the example
//! workflow passes actionlint; and the `--events` stream.

use std::path::Path;
use std::process::Command;

use serde_json::Value;

use crate::harness::{Ran, Sandbox};

/// A command stage that prints forged workflow commands, a smoke stage
/// whose one check fails, and the stage after it (skipped).
const PIPELINE: &str = r#"
[pipeline]
name = "gha"
[plugins.command]
path = "{command}"
[plugins.smoke]
path = "{smoke}"

[stages.say]
plugin = "command"
with.steps = [{ name = "forge", run = ["printf", "::error file=x,line=1::forged\n::add-mask::hunter2\n::endgroup::\nhello\n"] }]
[[stages.say.grants.exec]]
program = "printf"
args = ["**"]
env = ["CAPSTAN_OUTPUT"]
[stages.say.grants]
read = ["ro"]

[stages.smoke]
plugin = "smoke"
needs = ["say"]
[[stages.smoke.with.checks]]
name = "the marker exists"
category = "functionality"
kind = "file"
path = "{sandbox}/ro/missing"
[[stages.smoke.grants.exec]]
program = "stat"
args = ["**"]
[[stages.smoke.grants.exec]]
program = "ansible"
args = ["**"]
[stages.smoke.grants]
read = ["ro"]
connect = ["127.0.0.1:9"]
"#;

/// One approval stage that pauses a production run; `{with}`: more of its
/// `with` (inline table entries, each starting with a comma).
const GATE: &str = r#"
[pipeline]
name = "gate"
environments = ["production"]
[plugins.approval]
path = "{approval}"
[stages.approve]
plugin = "approval"
with = { digest = "d1g3st0000000000", subject = "ship it", policy = { production = "manual" }{with} }
[stages.approve.grants]
approval = true
"#;

/// `capstan <args>` as a GitHub Actions step would run it; the summary and
/// output files it appended to.
fn in_github(sb: &Sandbox, args: &[&str]) -> (Ran, String, String) {
    let (summary, output) = (sb.path().join("summary.md"), sb.path().join("output.txt"));
    let ran: Ran = sb
        .command(args)
        .env("GITHUB_ACTIONS", "true")
        .env("GITHUB_STEP_SUMMARY", &summary)
        .env("GITHUB_OUTPUT", &output)
        .output()
        .unwrap()
        .into();
    let read = |p: &Path| std::fs::read_to_string(p).unwrap_or_default();
    (ran, read(&summary), read(&output))
}

/// The 1-based line of the first line of `text` that starts with `prefix`.
fn line_of(text: &str, prefix: &str) -> usize {
    text.lines().position(|l| l.starts_with(prefix)).unwrap() + 1
}

#[test]
fn in_github_actions_logs_are_grouped_annotated_and_summarised() {
    let sb = Sandbox::new();
    let pipeline = sb.pipeline(PIPELINE);
    let file = pipeline.display().to_string();
    let text = std::fs::read_to_string(&pipeline).unwrap();
    let (ran, summary, output) = in_github(&sb, &["run", &file]);
    assert_eq!(ran.code, 1, "{ran:?}");
    let id = sb.newest_run_id();
    let err = &ran.stderr;

    // Each stage's log in a group, inside a stretch where commands are off.
    let start = err
        .find("::group::✓ say (succeeded, ")
        .unwrap_or_else(|| panic!("{err}"));
    let group = &err[start..];
    let token = group
        .lines()
        .nth(1)
        .and_then(|l| l.strip_prefix("::stop-commands::"))
        .unwrap_or_else(|| panic!("no stop-commands in {group}"));
    assert!(token.len() >= 32, "{token}");
    let (inside, after) = group.split_once(&format!("\n::{token}::\n")).unwrap();
    assert!(
        inside.contains("::add-mask::hunter2") && inside.contains("hello"),
        "{inside}"
    );
    // The plugin's `::endgroup::` is inert text; the group ends after the stretch.
    assert!(after.starts_with("::endgroup::\n"), "{after}");
    // Every command that is not inside such a stretch is Capstan's own.
    let mut off = None;
    for line in err.lines() {
        if let Some(t) = line.strip_prefix("::stop-commands::") {
            off = Some(t.to_string());
        } else if off.as_deref().is_some_and(|t| line == format!("::{t}::")) {
            off = None;
        } else if off.is_none() && line.starts_with("::") {
            assert!(
                [
                    "::group::",
                    "::endgroup::",
                    "::error file=",
                    "::warning file="
                ]
                .iter()
                .any(|p| line.starts_with(p))
                    && !line.contains("forged"),
                "a command from plugin text escaped: {line}"
            );
        }
    }

    // Annotations at the smoke stage's line: the failed check, the failure.
    // At the stage's name in `[stages.smoke]`.
    let smoke_at = format!("line={},col=9", line_of(&text, "[stages.smoke]"));
    let check = err
        .lines()
        .find(|l| l.starts_with("::error ") && l.contains("title=stage smoke::smoke check"))
        .unwrap_or_else(|| panic!("no check annotation: {err}"));
    assert!(
        check.contains(&format!("file={file},{smoke_at}")) && check.contains("the marker exists"),
        "{check}"
    );
    let failed = err
        .lines()
        .find(|l| l.contains("title=stage smoke failed::"))
        .unwrap_or_else(|| panic!("no failure annotation: {err}"));
    assert!(
        failed.contains(&smoke_at) && failed.contains("1 required check failed"),
        "{failed}"
    );

    // The job summary and the step outputs.
    assert!(
        summary.contains("### ❌ capstan: `gha` failed in `default`"),
        "{summary}"
    );
    assert!(summary.contains(&format!("run `{id}`")), "{summary}");
    assert!(summary.contains("| say | ✅ succeeded |"), "{summary}");
    assert!(summary.contains("| smoke | ❌ **failed** |"), "{summary}");
    assert_eq!(output, format!("run-id={id}\nstatus=failed\n"));

    // A pipeline error is annotated at its file, line and column.
    let broken = sb.write("broken.toml", "[pipeline]\nname = \"b\"\nnmae = 1\n");
    let (ran, _, _) = in_github(&sb, &["validate", broken.to_str().unwrap()]);
    assert_eq!(ran.code, 3, "{ran:?}");
    let annotation = ran
        .stderr
        .lines()
        .find(|l| l.starts_with("::error "))
        .unwrap_or_else(|| panic!("{ran:?}"));
    assert!(
        annotation.starts_with(&format!(
            "::error file={},line=3,col=1,title=capstan%3A invalid pipeline::unknown field `nmae`",
            broken.display()
        )),
        "{annotation}"
    );
}

#[test]
fn a_paused_run_summary_says_how_to_approve() {
    let sb = Sandbox::new();
    let pipeline =
        sb.pipeline(&GATE.replace("{with}", r#", details = "plan: 1 to add\n```\nnot code""#));
    let (ran, summary, output) = in_github(
        &sb,
        &[
            "run",
            pipeline.to_str().unwrap(),
            "--env",
            "production",
            "--as",
            "alice",
        ],
    );
    assert_eq!(ran.code, 5, "{ran:?}");
    let id = sb.newest_run_id();
    assert!(
        summary.contains("#### Waiting for approval: stage `approve`"),
        "{summary}"
    );
    assert!(
        summary.contains(&format!("`capstan approve {id}`")),
        "{summary}"
    );
    assert!(
        summary.contains(&format!("`capstan resume {id}`")),
        "{summary}"
    );
    // The details stay inside their code block, whatever backticks they hold.
    assert!(
        summary.contains("````text\nplan: 1 to add\n```\nnot code\n````"),
        "{summary}"
    );
    assert_eq!(output, format!("run-id={id}\nstatus=awaiting-approval\n"));
}

#[test]
fn the_example_workflow_passes_actionlint_and_a_broken_one_does_not() {
    let lint = |file: &Path| {
        let out = Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../.ci/actionlint"))
            .arg(file)
            .output()
            .expect(".ci/actionlint runs (node; .ci/setup installs actionlint)");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    let example = Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../examples/github/golden-image.yml"
    ));
    let (code, said) = lint(example);
    assert_eq!(code, Some(0), "{said}");
    let sb = Sandbox::new();
    let text = std::fs::read_to_string(example).unwrap();
    let broken = sb.write(
        "broken.yml",
        &text.replace("needs: staging", "needs: stagin"),
    );
    let (code, said) = lint(&broken);
    assert_eq!(code, Some(1), "{said}");
    assert!(said.contains("stagin"), "{said}");
}

#[test]
fn events_follow_a_run_as_versioned_json_lines() {
    let sb = Sandbox::new();
    let pipeline = sb.pipeline(PIPELINE);
    let events = sb.path().join("events.jsonl");
    let ran = sb.capstan(&[
        "run",
        pipeline.to_str().unwrap(),
        "-q",
        "--events",
        events.to_str().unwrap(),
    ]);
    assert_eq!(ran.code, 1, "{ran:?}");
    let id = sb.newest_run_id();
    let lines: Vec<Value> = std::fs::read_to_string(&events)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(
        lines
            .iter()
            .all(|e| e["v"] == 1 && e["run"] == id.as_str() && e["time"].is_string())
    );
    let kinds: Vec<&str> = lines
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .filter(|k| *k != "log")
        .collect();
    assert_eq!(
        kinds,
        [
            "run-started",
            "stage-started",
            "stage-finished",
            "stage-started",
            "stage-finished",
            "run-finished"
        ],
        "{lines:#?}"
    );
    let log: Vec<&str> = lines
        .iter()
        .filter(|e| e["event"] == "log" && e["stage"] == "say")
        .map(|e| e["line"].as_str().unwrap())
        .collect();
    assert!(log.contains(&"hello"), "{log:?}");
    let smoke = lines
        .iter()
        .find(|e| e["event"] == "stage-finished" && e["stage"] == "smoke")
        .unwrap();
    assert_eq!(smoke["status"], "failed");
    let end = lines.last().unwrap();
    assert_eq!(
        (&end["status"], &end["exit_code"]),
        (&Value::from("failed"), &Value::from(1))
    );

    // `-` is standard output; a paused run's request is an event too.
    let gate = sb.write("gate.toml", &sb.fill(&GATE.replace("{with}", "")));
    let ran = sb.capstan(&[
        "run",
        gate.to_str().unwrap(),
        "-q",
        "--env",
        "production",
        "--as",
        "alice",
        "--events",
        "-",
    ]);
    assert_eq!(ran.code, 5, "{ran:?}");
    let asked: Value = ran
        .stdout
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .find(|e| e["event"] == "approval-requested")
        .unwrap_or_else(|| panic!("{ran:?}"));
    assert_eq!(
        (&asked["stage"], &asked["digest"]),
        (&Value::from("approve"), &Value::from("d1g3st0000000000"))
    );
    assert!(
        asked["how"].as_str().unwrap().contains("capstan approve"),
        "{asked}"
    );
}
