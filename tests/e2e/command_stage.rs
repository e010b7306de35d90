//! The command stage (`plugins/command`): argv steps with their own env and
//! cwd, outputs written to `$CAPSTAN_OUTPUT` and read by a later stage,
//! and every step checked against the stage's exec grants.

use crate::harness::Sandbox;

const PIPELINE: &str = r#"
[pipeline]
name = "commands"
environments = ["dev"]
[defaults]
timeout = "60s"
[plugins.command]
path = "{command}"

# Steps with a stage-wide env, a cwd, a shell that is granted, outputs.
[stages.emit]
plugin = "command"
[stages.emit.with]
env = { GREETING = "hello" }
[[stages.emit.with.steps]]
name = "say"
run = ["echo", "no shell here: $GREETING *"]
[[stages.emit.with.steps]]
name = "write outputs"
cwd = "{sandbox}/ro"
run = ["sh", "-c", '''
echo "version=1.2.3" >> "$CAPSTAN_OUTPUT"
printf 'notes<<EOF\nline one\nline two\nEOF\n' >> "$CAPSTAN_OUTPUT"
echo "where=$(pwd -P)" >> "$CAPSTAN_OUTPUT"
echo "greeting=$GREETING" >> "$CAPSTAN_OUTPUT"
''']
[[stages.emit.with.steps]]
name = "flaky"
continue_on_error = true
run = ["sh", "-c", 'echo partial=yes >> "$CAPSTAN_OUTPUT"; exit 1']
[[stages.emit.grants.exec]]
program = "echo"
args = ["**"]
env = ["CAPSTAN_OUTPUT", "GREETING"]
[[stages.emit.grants.exec]]
program = "sh"
args = ["-c", "*"]
env = ["CAPSTAN_OUTPUT", "GREETING"]
[stages.emit.grants]
read = ["ro"]

# A later stage reads them through `${stages.emit.outputs.<key>}`.
[stages.use]
plugin = "command"
needs = ["emit"]
with.env = { VERSION = "${stages.emit.outputs.version}" }
with.run = ["sh", "-c", 'echo "seen=$VERSION and ${stages.emit.outputs.greeting}" >> "$CAPSTAN_OUTPUT"']
[[stages.use.grants.exec]]
program = "sh"
args = ["-c", "*"]
env = ["CAPSTAN_OUTPUT", "VERSION"]
[stages.use.grants]
read = ["ro"]

# A program the stage does not grant is refused; the steps after it do not run.
[stages.refused]
plugin = "command"
[[stages.refused.with.steps]]
name = "first"
run = ["echo", "the first step ran"]
[[stages.refused.with.steps]]
name = "plant a file"
run = ["touch", "{sandbox}/rw/planted"]
[[stages.refused.with.steps]]
name = "after"
run = ["echo", "the step after ran"]
[[stages.refused.grants.exec]]
program = "echo"
args = ["**"]
env = ["CAPSTAN_OUTPUT"]
[stages.refused.grants]
read = ["ro"]

# A failing step fails the stage with its exit code and last lines.
[stages.broken]
plugin = "command"
[[stages.broken.with.steps]]
name = "fail"
run = ["sh", "-c", 'echo some context; echo "boom: it broke" >&2; exit 3']
[[stages.broken.with.steps]]
name = "never"
run = ["sh", "-c", 'echo the step after the failure ran']
[[stages.broken.grants.exec]]
program = "sh"
args = ["-c", "*"]
env = ["CAPSTAN_OUTPUT"]
[stages.broken.grants]
read = ["ro"]

# A line in the output file that is no output.
[stages.malformed]
plugin = "command"
with = { run = ["sh", "-c", 'echo ok=1 >> "$CAPSTAN_OUTPUT"; echo "not an output" >> "$CAPSTAN_OUTPUT"'] }
[[stages.malformed.grants.exec]]
program = "sh"
args = ["-c", "*"]
env = ["CAPSTAN_OUTPUT"]
[stages.malformed.grants]
read = ["ro"]

# The grant must let the program receive CAPSTAN_OUTPUT.
[stages.no-output-var]
plugin = "command"
with = { run = ["echo", "hi"] }
[[stages.no-output-var.grants.exec]]
program = "echo"
args = ["*"]
[stages.no-output-var.grants]
read = ["ro"]
"#;

#[test]
fn steps_run_as_granted_and_hand_their_outputs_to_later_stages() {
    let sb = Sandbox::new();
    let pipeline = sb.pipeline(PIPELINE);
    let ran = sb.capstan(&["run", pipeline.to_str().unwrap(), "-q"]);
    assert_eq!(ran.code, 1, "{ran:?}");
    let run = sb.last_run();

    // Argv steps, no shell: `$GREETING` and `*` reach echo as they are.
    assert_eq!(run.status("emit"), "succeeded", "{:#}", run.stage("emit"));
    let log = run.log("emit");
    assert!(log.contains("no shell here: $GREETING *"), "{log}");
    assert!(!log.contains("no shell here: hello"), "{log}");
    assert_eq!(run.output("emit", "version"), "1.2.3");
    assert_eq!(run.output("emit", "notes"), "line one\nline two");
    assert_eq!(
        run.output("emit", "where"),
        sb.path().join("ro").to_str().unwrap()
    );
    assert_eq!(run.output("emit", "greeting"), "hello");
    // continue_on_error: the failed step's outputs are kept, the stage succeeds.
    assert_eq!(run.output("emit", "partial"), "yes");
    let summary = run.stage("emit")["summary"].as_str().unwrap().to_string();
    assert!(
        summary.starts_with(
            "ran 3 steps: say, write outputs, flaky; failed, continued past: `flaky` (exit code 1)"
        ),
        "{summary}"
    );
    assert_eq!(run.output("use", "seen"), "1.2.3 and hello");

    // An ungranted program: refused by the host, named with its step;
    // it did not run, nor did the step after it.
    run.assert_failed_naming(
        "refused",
        &[
            "step `plant a file` runs `touch`",
            "program `touch` is not granted to this stage (granted: echo)",
        ],
    );
    assert!(!sb.path().join("rw/planted").exists());
    let log = run.log("refused");
    assert!(log.contains("the first step ran"), "{log}");
    assert!(!log.contains("the step after ran"), "{log}");
    let denials = run.denials("refused");
    assert_eq!(denials.len(), 1, "{denials:#?}");
    assert_eq!(denials[0]["capability"], "exec");
    assert_eq!(denials[0]["detail"]["program"], "touch");

    run.assert_failed_naming(
        "broken",
        &["step `fail`", "failed with exit code 3", "boom: it broke"],
    );
    assert!(
        !run.log("broken").contains("the step after the failure ran"),
        "{}",
        run.log("broken")
    );

    run.assert_failed_naming(
        "malformed",
        &[
            "step `run`: the output file $CAPSTAN_OUTPUT (",
            "line 2: `not an output` is neither `KEY=VALUE` nor `KEY<<DELIMITER`",
        ],
    );

    run.assert_failed_naming(
        "no-output-var",
        &[
            "step `run` runs `echo`",
            "may not be given environment variable `CAPSTAN_OUTPUT`",
        ],
    );
}

#[test]
fn a_command_stage_with_no_program_granted_is_refused_before_anything_runs() {
    let sb = Sandbox::new();
    let pipeline = sb.pipeline(
        r#"
[pipeline]
name = "ungranted"
environments = ["dev"]
[plugins.command]
path = "{command}"
[stages.lint]
plugin = "command"
with = { run = ["make", "lint"] }
[stages.lint.grants]
read = ["ro"]
"#,
    );
    let path = pipeline.to_str().unwrap();
    let ran = sb.capstan(&["validate", path]);
    assert_eq!(ran.code, 4, "{ran:?}");
    assert!(
        ran.stderr
            .contains("requests exec `*` (the programs the stage grants)"),
        "{ran:?}"
    );
    // The lines to paste, one under the other.
    let help: Vec<&str> = ran.stderr.lines().map(str::trim).collect();
    let at = help
        .iter()
        .position(|l| *l == "[[stages.lint.grants.exec]]  # one table per program the stage runs")
        .unwrap_or_else(|| panic!("{ran:?}"));
    assert_eq!(help[at + 1], "program = \"<program>\"", "{ran:?}");
    let audit = sb.capstan(&["audit", path]);
    assert!(
        audit
            .stdout
            .lines()
            .any(|l| l.contains("exec `*` (the programs the stage grants)") && l.contains("NO")),
        "{audit:?}"
    );
}
