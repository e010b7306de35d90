//! Run ids people can type (`latest`, `latest@<environment>`, a unique
//! prefix or suffix), output to a reader that went away, tables on a
//! terminal, and usage errors of `rollback` and `stats`.

use std::process::Stdio;

use crate::harness::{Ran, Sandbox};

const HELLO: &str = r#"
[pipeline]
name = "hello"
environments = ["dev", "production"]

[plugins.hello]
path = "{hello}"

[stages.greet]
plugin = "hello"
with = { message = "hi from ${run.environment}, with a summary long enough to wrap on a narrow terminal" }
[[stages.greet.grants.exec]]
program = "echo"
args = ["*"]
"#;

/// A sandbox with one run in `dev`, then one in `production`; their ids.
fn two_runs() -> (Sandbox, String, String) {
    let sb = Sandbox::new();
    let pipeline = sb.pipeline(HELLO);
    let mut ids = Vec::new();
    for env in ["dev", "production"] {
        let ran = sb.capstan(&["run", pipeline.to_str().unwrap(), "--env", env, "-q"]);
        assert_eq!(ran.code, 0, "{ran:?}");
        ids.push(sb.newest_run_id());
    }
    let production = ids.pop().unwrap();
    let dev = ids.pop().unwrap();
    assert_ne!(dev, production);
    (sb, dev, production)
}

fn shown_id(sb: &Sandbox, given: &str) -> String {
    sb.show(given)["run"]["id"].as_str().unwrap().to_string()
}

#[test]
fn latest_names_the_run_that_started_last_and_ids_may_be_shortened() {
    let (sb, dev, production) = two_runs();
    assert_eq!(shown_id(&sb, "latest"), production);
    assert_eq!(shown_id(&sb, "latest@production"), production);
    assert_eq!(shown_id(&sb, "latest@dev"), dev);
    // Ids are `<date>-<time>-<random>`: the time and random part is a
    // suffix, the date and time a prefix.
    let suffix = dev.split_once('-').unwrap().1;
    assert_eq!(shown_id(&sb, suffix), dev);
    assert_eq!(shown_id(&sb, &dev[..dev.len() - 1]), dev);

    let text = sb.capstan(&["show", "latest"]);
    assert_eq!(text.code, 0, "{text:?}");
    assert!(
        text.stdout.starts_with(&format!(
            "run {production} — deploy of `hello` in `production`"
        )),
        "{text:?}"
    );
    // Every command that takes a run takes these names.
    let logs = sb.capstan(&["logs", "latest@dev", "greet"]);
    assert_eq!(logs.code, 0, "{logs:?}");
    assert!(logs.stdout.contains("hi from dev"), "{logs:?}");
    let audit = sb.capstan(&["audit", "--run", "latest", "--json"]);
    assert_eq!(audit.code, 0, "{audit:?}");
    assert!(audit.stdout.contains("\"exec\""), "{audit:?}");
    let resume = sb.capstan(&["resume", "latest@dev"]);
    assert_eq!(resume.code, 7, "a succeeded run is not resumed: {resume:?}");
    assert!(
        resume
            .stderr
            .contains(&format!("run {dev} already succeeded")),
        "{resume:?}"
    );
}

#[test]
fn an_ambiguous_or_unknown_run_is_a_usage_error_that_says_why() {
    let (sb, dev, production) = two_runs();
    // Both ids start with the year.
    let ambiguous = sb.capstan(&["show", &dev[..2]]);
    assert_eq!(ambiguous.code, 2, "{ambiguous:?}");
    assert!(ambiguous.stderr.contains("names 2 runs"), "{ambiguous:?}");
    for id in [&dev, &production] {
        assert!(
            ambiguous.stderr.contains(&format!("\n  {id}")),
            "{ambiguous:?}"
        );
    }
    let unknown = sb.capstan(&["approve", "no-such-run"]);
    assert_eq!(unknown.code, 2, "{unknown:?}");
    assert!(
        unknown.stderr.contains("no run `no-such-run`"),
        "{unknown:?}"
    );
    let environment = sb.capstan(&["cancel", "latest@staging"]);
    assert_eq!(environment.code, 2, "{environment:?}");
    assert!(
        environment
            .stderr
            .contains("no run of environment `staging` in the run store; runs are recorded for: dev, production"),
        "{environment:?}"
    );
}

#[test]
fn show_latest_before_any_run_says_nothing_is_recorded_and_creates_nothing() {
    let sb = Sandbox::new();
    let ran = sb.capstan(&["show", "latest"]);
    assert_eq!(ran.code, 2, "{ran:?}");
    assert!(
        ran.stderr.starts_with(&format!(
            "error: no run store at {}/.capstan/capstan.db",
            sb.path().display()
        )),
        "{ran:?}"
    );
    assert!(!sb.path().join(".capstan").exists());
}

/// `capstan <args>` with stdout a pipe nobody reads any more: its read end
/// is closed before capstan starts, so its first write fails (EPIPE).
fn to_a_closed_pipe(sb: &Sandbox, args: &[&str]) -> Ran {
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let mut cmd = sb.command(args);
    cmd.stdin(Stdio::null())
        .stdout(writer)
        .stderr(Stdio::piped());
    cmd.output().expect("run capstan").into()
}

#[test]
fn every_command_ends_quietly_when_its_reader_went_away() {
    let (sb, _, _) = two_runs();
    let pipeline = sb.path().join("pipeline.toml");
    let pipeline = pipeline.to_str().unwrap();
    for args in [
        &["show", "latest"][..],
        &["show", "latest", "--json"],
        &["runs"],
        &["runs", "--json"],
        &["stats"],
        &["stats", "--json"],
        &["stats", "--prometheus"],
        &["audit", "--run", "latest"],
        &["audit", "--run", "latest", "--json"],
        &["audit", pipeline],
        &["logs", "latest"],
        &["validate", pipeline],
        &["plugin", "describe", capstan_test_artifacts::HELLO],
        &["run", pipeline, "--dry-run"],
    ] {
        let ran = to_a_closed_pipe(&sb, args);
        assert_eq!((ran.code, ran.stderr.as_str()), (0, ""), "capstan {args:?}");
    }
    // A run whose `--json` finds no reader keeps its own exit code (its
    // report goes to stderr, as ever).
    let ran = to_a_closed_pipe(&sb, &["run", pipeline, "--json", "-q"]);
    assert_eq!(ran.code, 0, "{ran:?}");
    assert!(ran.stderr.contains("succeeded in"), "{ran:?}");
    assert!(!ran.stderr.contains("panicked"), "{ran:?}");
    assert!(!ran.stderr.contains("error"), "{ran:?}");

    // As typed: `set -o pipefail` makes the pipeline's status capstan's.
    let line = format!(
        "set -o pipefail; {} show latest | head -1",
        env!("CARGO_BIN_EXE_capstan")
    );
    let ran: Ran = sb.tool("bash").args(["-c", &line]).output().unwrap().into();
    assert_eq!(ran.code, 0, "{ran:?}");
    assert!(ran.stdout.starts_with("run "), "{ran:?}");
    assert_eq!(ran.stdout.lines().count(), 1, "{ran:?}");
    assert!(!ran.stderr.contains("panicked"), "{ran:?}");
}

/// `capstan run … 2>&1 | head -1`: stderr (progress, log lines, the
/// end-of-run table) goes to a pipe whose reader is gone. The run goes on
/// to its end, is recorded, and exits with its own code; so does a command
/// that fails with nothing left to say it to.
#[test]
fn a_run_whose_stderr_reader_went_away_still_finishes_and_is_recorded() {
    let sb = Sandbox::new();
    let pipeline = sb.pipeline(HELLO);
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let mut cmd = sb.command(&["run", pipeline.to_str().unwrap(), "--json"]);
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(writer);
    let ran: Ran = cmd.output().expect("run capstan").into();
    assert_eq!(ran.code, 0, "{ran:?}");
    let record: serde_json::Value = serde_json::from_str(&ran.stdout).expect("the run's JSON");
    assert_eq!(record["status"], "succeeded", "{ran:?}");
    let shown = sb.show(record["run_id"].as_str().unwrap());
    assert_eq!(shown["run"]["status"], "succeeded", "{shown:#}");
    assert_eq!(shown["stages"][0]["status"], "succeeded", "{shown:#}");

    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let mut cmd = sb.command(&["show", "no-such-run"]);
    cmd.stdin(Stdio::null()).stderr(writer);
    let ran: Ran = cmd.output().expect("run capstan").into();
    assert_eq!(
        ran.code, 2,
        "the usage error's code, not a panic's: {ran:?}"
    );
}

#[test]
fn tables_fit_a_terminal_and_are_coloured_only_where_asked() {
    let (sb, _, _) = two_runs();
    let capstan = env!("CARGO_BIN_EXE_capstan");
    let screen = |line: &str| {
        let out = sb.on_a_terminal(
            &format!("stty rows 24 cols 60; env -u NO_COLOR TERM=xterm {line}"),
            b"",
        );
        assert!(out.status.success(), "{out:?}");
        String::from_utf8_lossy(&out.stdout).replace('\r', "")
    };
    for command in ["runs", "show latest", "stats"] {
        let shown = screen(&format!("{capstan} {command}"));
        assert!(shown.contains('\x1b'), "coloured on a terminal: {shown}");
        let plain = screen(&format!("{capstan} --color never {command}"));
        assert!(!plain.contains('\x1b'), "{plain}");
        let table: Vec<&str> = plain
            .lines()
            .filter(|l| l.starts_with(['┌', '│', '╞', '├', '└']))
            .collect();
        assert!(!table.is_empty(), "{plain}");
        for line in table {
            assert!(
                line.chars().count() <= 60,
                "`{command}`: {line:?} is wider than the terminal:\n{plain}"
            );
        }
    }
    let no_color = sb.on_a_terminal(&format!("NO_COLOR=1 {capstan} runs"), b"");
    assert!(!String::from_utf8_lossy(&no_color.stdout).contains('\x1b'));

    // Piped: one line per run, as wide as it needs, not coloured unless
    // asked.
    let mut piped = sb.command(&["runs"]);
    piped.env_remove("NO_COLOR").env("COLUMNS", "60");
    let piped: Ran = piped.output().unwrap().into();
    assert_eq!(piped.code, 0, "{piped:?}");
    assert!(!piped.stdout.contains('\x1b'), "{piped:?}");
    assert_eq!(piped.stdout.lines().count(), 6, "{piped:?}");
    assert!(
        piped.stdout.lines().any(|l| l.chars().count() > 60),
        "{piped:?}"
    );
    let always = sb.capstan(&["--color", "always", "runs"]);
    assert!(always.stdout.contains('\x1b'), "{always:?}");
}

#[test]
fn rollback_to_an_environment_the_pipeline_does_not_have_is_a_usage_error() {
    let (sb, dev, _) = two_runs();
    let pipeline = sb.path().join("pipeline.toml");
    let expected = format!(
        "error: environment `prod` is not one of dev, production (from [pipeline] environments in {})",
        pipeline.display()
    );
    for args in [
        &["rollback", "--env", "prod"][..],
        &["rollback", "--env", "prod", "--to", &dev],
        &[
            "rollback",
            "--env",
            "prod",
            "--pipeline",
            pipeline.to_str().unwrap(),
        ],
    ] {
        let ran = sb.capstan(args);
        assert_eq!(ran.code, 2, "{args:?}: {ran:?}");
        assert_eq!(ran.stderr.trim(), expected, "{args:?}");
    }
    // A known environment with nothing to roll back to is refused (7), as before.
    let ran = sb.capstan(&["rollback", "--env", "production"]);
    assert_eq!(ran.code, 7, "{ran:?}");
    assert!(
        ran.stderr.contains("no good run of `production`"),
        "{ran:?}"
    );
}

#[test]
fn stats_with_since_not_before_until_is_a_usage_error() {
    let sb = Sandbox::new();
    let ran = sb.capstan(&["stats", "--since", "2026-12-01", "--until", "2026-11-01"]);
    assert_eq!(ran.code, 2, "{ran:?}");
    assert!(
        ran.stderr.starts_with(
            "error: --since 2026-12-01T00:00:00Z is not before --until 2026-11-01T00:00:00Z"
        ),
        "{ran:?}"
    );
    let future = sb.capstan(&["stats", "--since", "2999-01-01"]);
    assert_eq!(future.code, 2, "{future:?}");
    assert!(future.stderr.contains("the default --until"), "{future:?}");
    assert!(
        !sb.path().join(".capstan").exists(),
        "a usage error creates no run store"
    );
    // With the range right, the store is opened: there is none to read.
    let ok = sb.capstan(&["stats", "--since", "2026-11-01", "--until", "2026-12-01"]);
    assert_eq!(ok.code, 2, "{ok:?}");
    assert!(ok.stderr.contains("no run store"), "{ok:?}");
}
