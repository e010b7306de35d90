//! `command`: a stage for steps that need no plugin of their own, like a
//! GitHub Actions `run:` step: `make test`, `terraform fmt -check`, a
//! script of the repository.
//!
//! One step is `run`, the program and its arguments; several are
//! `[[stages.<stage>.with.steps]]` tables, run in order, each with a
//! `name`, `run`, and optionally its own `env`, `cwd` and
//! `continue_on_error`. A `with`-level `env` and `cwd` apply to every step.
//!
//! ```toml
//! [stages.test]
//! plugin = "command"
//! with = { run = ["make", "test"], cwd = "${pipeline.dir}/src" }
//!
//! [[stages.test.grants.exec]]
//! program = "make"
//! args = ["test"]
//! env = ["CAPSTAN_OUTPUT"]
//! [stages.test.grants]
//! read = ["src"]
//! ```
//!
//! **Grants.** `run` is an argv list: no shell, no globbing, no `$VAR`
//! expansion. Every step goes through the host's `process` interface, so
//! its program must be granted to the stage by the very name it has in
//! `run` (`[[stages.<stage>.grants.exec]]`, one table per program), its
//! arguments must fit that grant's `args` patterns, and each variable the
//! step sets (its `env`, and `CAPSTAN_OUTPUT`) must be allowed by the
//! grant's `env`. A program the stage does not grant is refused, and the
//! stage fails naming the step and the program. The plugin requests
//! `exec *` (the programs the stage grants; it cannot know them before it
//! reads `with`) and `read` (a step's `cwd` must be inside the stage work
//! dir or a `read` grant), so the stage needs at least one exec grant and
//! one `read` grant. It also requests `secret *`: the secrets the stage
//! grants (none, unless `[stages.<stage>.grants.secrets]` names some) reach
//! the steps' programs as those grants say; the plugin never sees them.
//!
//! **A shell only when the pipeline grants one.** The plugin never starts
//! a shell by itself. A step may run `["sh", "-c", "…"]` only when the
//! stage grants `sh` (e.g. `args = ["-c", "*"]`); whatever the script then
//! runs is not checked against the grants, so grant a shell only to
//! stages whose `with` you trust as a script.
//!
//! **Outputs.** Before each step the plugin creates an empty file in the
//! stage work dir and passes its path as `$CAPSTAN_OUTPUT` (the
//! `$GITHUB_OUTPUT` convention). After the step, every `KEY=VALUE` line in
//! it, and every `KEY<<DELIMITER` … `DELIMITER` block (a multiline value),
//! becomes the stage output `KEY`, a string, which later stages read as
//! `${stages.<stage>.outputs.KEY}`. Keys are output names (letters,
//! digits, `_`, `-`); a later value of a key replaces an earlier one. A
//! malformed line fails the stage, naming the step and the line.
//!
//! **Failures.** A step that exits non-zero (or is killed) fails the stage
//! with its name, its exit status and the last lines of its output; the
//! steps after it do not run. With `continue_on_error = true`, a non-zero
//! exit is logged and the next step runs (the stage succeeds). A refused
//! or timed-out step always fails the stage. Per-program time limits are
//! the exec grant's `timeout`; the stage's `timeout` bounds them all.
//!
//! Build: `cargo build --release --target wasm32-wasip2 -p capstan-command`
//! → `target/wasm32-wasip2/release/capstan_command.wasm`.

mod config;
mod outputs;

use std::io::Read;
use std::path::Path;

use capstan_plugin::{Context, Error, Exec, ExecError, ExecErrorKind, Info, Outcome, Stage};
use serde_json::json;

use config::{Config, OUTPUT_VAR, Step};

/// Where the steps' output files go, inside the stage work dir.
const OUTPUT_DIR: &str = ".capstan-output";

struct Command;

impl Stage for Command {
    type Config = Config;

    fn info() -> Info {
        Info::new("command", env!("CARGO_PKG_VERSION"))
            .description(
                "Runs the pipeline's own commands: argv steps (no shell), each program checked \
                 against the stage's exec grants; steps set outputs by writing KEY=VALUE lines \
                 to $CAPSTAN_OUTPUT",
            )
            .exec_granted(
                "to run each step's program: only the programs the stage's exec grants name, \
                 each with the arguments and environment variables its own grant allows",
            )
            .read(
                "so that a step may run in (`cwd`) a directory the stage's `read` grants name; \
                 the plugin itself reads only the output files in its work dir",
            )
            .secret_granted(
                "so that the steps' programs get the secrets the stage grants them, as its \
                 grants say (the host hands them over; the plugin never sees them)",
            )
    }

    fn run(ctx: Context<Config>) -> Result<Outcome, Error> {
        let steps = ctx.config.steps().map_err(Error::config)?;
        let dir = ctx.work_dir.join(OUTPUT_DIR);
        std::fs::create_dir_all(&dir)
            .map_err(|e| Error::failed(format!("cannot create {}: {e}", dir.display())))?;
        let mut outputs: Vec<(String, String)> = Vec::new();
        let mut continued: Vec<String> = Vec::new();
        let mut report = Vec::new();
        for (i, step) in steps.iter().enumerate() {
            capstan_plugin::info!("step {}/{}: {}", i + 1, steps.len(), step.name);
            let file = dir.join(format!("step-{}", i + 1));
            std::fs::write(&file, b"").map_err(|e| {
                Error::failed(format!(
                    "step `{}`: cannot create its output file {}: {e}",
                    step.name,
                    file.display()
                ))
            })?;
            let (status, duration) = match exec(step, &file).run_ok() {
                Ok(out) => (out.status, out.duration),
                Err(e) => match e.output() {
                    Some(out) if step.continue_on_error => {
                        capstan_plugin::warn!(
                            "step `{}` failed with {}; continuing (continue_on_error)",
                            step.name,
                            out.status
                        );
                        continued.push(format!("`{}` ({})", step.name, out.status));
                        (out.status, out.duration)
                    }
                    _ => {
                        not_run(&steps[i + 1..]);
                        return Err(step_error(step, &e));
                    }
                },
            };
            let written = read_outputs(&file).map_err(|problem| {
                Error::failed(format!(
                    "step `{}`: the output file ${OUTPUT_VAR} ({}): {problem}",
                    step.name,
                    file.display()
                ))
            })?;
            report.push(json!({
                "name": step.name,
                "program": step.program,
                "status": status.to_string(),
                "duration_ms": u64::try_from(duration.as_millis()).unwrap_or(u64::MAX),
                "outputs": written.iter().map(|(k, _)| k).collect::<Vec<_>>(),
            }));
            outputs.extend(written);
        }
        let mut outcome =
            Outcome::new(summary(&steps, &outputs, &continued)).report(json!({ "steps": report }));
        for (key, value) in outputs {
            outcome = outcome.output(key, value);
        }
        Ok(outcome)
    }
}

capstan_plugin::export_stage!(Command);

/// The host command for `step`, its outputs going to `output_file`.
fn exec(step: &Step, output_file: &Path) -> Exec {
    let mut exec = Exec::new(&step.program).args(&step.args).capture();
    for (name, value) in &step.env {
        exec = exec.env(name, value);
    }
    exec = exec.env(OUTPUT_VAR, output_file);
    if let Some(cwd) = &step.cwd {
        exec = exec.cwd(cwd);
    }
    exec
}

/// The stage error for a step that did not succeed.
fn step_error(step: &Step, e: &ExecError) -> Error {
    match e.kind() {
        ExecErrorKind::NotPermitted(message) => {
            let hint = if step.program.contains(char::is_whitespace) {
                let words: Vec<&str> = step.program.split_whitespace().collect();
                format!(
                    "; `run` is a list of arguments, not a command line: write {words:?}, \
                     each argument its own string"
                )
            } else {
                String::new()
            };
            Error::not_permitted(format!(
                "step `{}` runs `{}`: {message}{hint}",
                step.name, step.program
            ))
        }
        _ => Error::failed(format!("step `{}`: {e}", step.name)),
    }
}

/// Say in the stage log which steps a failure leaves unrun.
fn not_run(rest: &[Step]) {
    if !rest.is_empty() {
        let names: Vec<String> = rest.iter().map(|s| format!("`{}`", s.name)).collect();
        capstan_plugin::warn!("not run after the failure: {}", names.join(", "));
    }
}

/// The outputs a step wrote to `path` (none if it removed the file).
fn read_outputs(path: &Path) -> Result<Vec<(String, String)>, String> {
    let file = match std::fs::File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(format!("cannot be read: {e}")),
    };
    let mut bytes = Vec::new();
    file.take(outputs::MAX_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("cannot be read: {e}"))?;
    if bytes.len() as u64 > outputs::MAX_BYTES {
        return Err(format!(
            "holds more than {} KiB; outputs are for small values (ids, versions, paths): \
             write bulky data to a file in the work dir and output its path",
            outputs::MAX_BYTES / 1024
        ));
    }
    let text = String::from_utf8(bytes).map_err(|e| {
        format!(
            "is not UTF-8 text (invalid byte at offset {})",
            e.utf8_error().valid_up_to()
        )
    })?;
    outputs::parse(&text).map_err(|m| m.to_string())
}

/// One line for the run summary.
fn summary(steps: &[Step], outputs: &[(String, String)], continued: &[String]) -> String {
    let mut text = match steps {
        [one] => format!("ran `{}`", command_line(one)),
        _ => {
            let names: Vec<&str> = steps.iter().map(|s| s.name.as_str()).collect();
            format!("ran {} steps: {}", steps.len(), names.join(", "))
        }
    };
    if !continued.is_empty() {
        text.push_str(&format!(
            "; failed, continued past: {}",
            continued.join(", ")
        ));
    }
    let mut keys: Vec<&str> = Vec::new();
    for (key, _) in outputs {
        if !keys.contains(&key.as_str()) {
            keys.push(key);
        }
    }
    if !keys.is_empty() {
        text.push_str(&format!("; outputs: {}", keys.join(", ")));
    }
    text
}

/// `program arg…`, shortened, for the summary.
fn command_line(step: &Step) -> String {
    let line = std::iter::once(step.program.as_str())
        .chain(step.args.iter().map(String::as_str))
        .collect::<Vec<_>>()
        .join(" ");
    if line.chars().count() > 80 {
        line.chars().take(79).chain(['…']).collect()
    } else {
        line
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(name: &str, argv: &[&str]) -> Step {
        Step {
            name: name.into(),
            program: argv[0].into(),
            args: argv[1..].iter().map(|s| s.to_string()).collect(),
            env: vec![("CI".into(), "1".into())],
            cwd: Some("/repo".into()),
            continue_on_error: false,
        }
    }

    #[test]
    fn describes_itself_with_exec_star_read_and_secret_star() {
        use capstan_plugin::Capability;
        let info = Command::info();
        assert_eq!(info.name(), "command");
        let asked: Vec<&Capability> = info.requests().iter().map(|(c, _)| c).collect();
        assert_eq!(
            asked,
            [
                &Capability::Exec("*".into()),
                &Capability::Read,
                &Capability::Secret("*".into())
            ]
        );
    }

    #[test]
    fn summaries() {
        let one = [step("run", &["make", "test"])];
        assert_eq!(summary(&one, &[], &[]), "ran `make test`");
        let two = [step("fmt", &["terraform", "fmt"]), step("test", &["make"])];
        let outputs = [
            ("a".to_string(), "1".to_string()),
            ("b".into(), "2".into()),
            ("a".into(), "3".into()),
        ];
        assert_eq!(
            summary(&two, &outputs, &["`test` (exit code 2)".into()]),
            "ran 2 steps: fmt, test; failed, continued past: `test` (exit code 2); outputs: a, b"
        );
        let long = [step("run", &["echo", &"x".repeat(100)])];
        assert!(summary(&long, &[], &[]).ends_with("x…`"));
    }

    #[test]
    fn the_command_carries_env_cwd_and_the_output_file() {
        let exec = exec(
            &step("t", &["make", "test"]),
            Path::new("/w/.capstan-output/step-1"),
        );
        assert_eq!(exec.program(), "make");
        // Exec has no getters for the rest: its Debug form is the WIT command.
        let shown = format!("{exec:?}");
        for part in [
            "args: [\"test\"]",
            "cwd: Some(\"/repo\")",
            "(\"CI\", \"1\"), (\"CAPSTAN_OUTPUT\", \"/w/.capstan-output/step-1\")",
            "capture: true",
        ] {
            assert!(shown.contains(part), "{part} not in {shown}");
        }
    }
}
