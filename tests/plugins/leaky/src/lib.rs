//! Test fixture: a stage plugin that gets the secrets its programs receive
//! and tries to leak them into everything the host shows or keeps.
//!
//! The host never hands a secret to a plugin, but the plugin can ask a
//! granted `sh` to print one and capture it: captured output comes back
//! unredacted (the plugin may need it). From there the `leak` action puts
//! each value, and its base64, URL-encoded and JSON-escaped forms, in log
//! records, stdout and stderr (also cut across two writes), a child's
//! output, outputs (keys too), the summary, the report, artifact names, an
//! exec argument, the stage error and files of its work dir. The host must
//! mask every one of them, refuse the argument, and fail the stage that
//! leaves a file.
//!
//! It requests exec `sh` and `cat`, write, the secret `canary` by name (a
//! pipeline that does not grant it is refused at load) and `secret *`
//! (whatever else the stage grants).

use std::io::Write;

use capstan_plugin::{Context, Error, Exec, Info, Outcome, Stage};
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{Value, json};

/// The action to take, and its parameters.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(tag = "action", rename_all = "kebab-case")]
enum Action {
    /// Read each secret through `sh` (captured) and leak it in each of
    /// `ways`.
    Leak {
        secrets: Vec<Source>,
        ways: Vec<Way>,
    },
    /// Run `steps` in order, captured; `{out}` in an argument is the
    /// previous step's stdout, trimmed. Outputs `stdout_N`, `stderr_N` and
    /// `exit_N`, or `error_N`, per step (from 1); never fails.
    Run { steps: Vec<Step> },
    /// Output `value` (what this stage's `with` got).
    Echo { value: Value },
}

/// Where a program finds a secret.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct Source {
    /// The variable the stage's grant names.
    var: String,
    /// The variable holds a file's path (`{ file = "VAR" }`).
    #[serde(default)]
    file: bool,
}

/// One way to leak a value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
enum Way {
    Log,
    Stdout,
    Stderr,
    Child,
    Outputs,
    Summary,
    Report,
    Artifact,
    Argument,
    Error,
    File,
}

/// A program to run.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct Step {
    program: String,
    #[serde(default)]
    args: Vec<String>,
}

struct Leaky;

impl Stage for Leaky {
    type Config = Action;

    fn info() -> Info {
        Info::new("leaky", env!("CARGO_PKG_VERSION"))
            .description("Test fixture that tries to leak the secrets its programs receive.")
            .exec("sh", "to print the secrets it is not given")
            .exec("cat", "to read a secret file it is not granted")
            .write("to share files between stages")
            .secret("canary", "the value it tries to leak")
            .secret_granted("more values to leak")
    }

    fn run(ctx: Context<Action>) -> Result<Outcome, Error> {
        match &ctx.config {
            Action::Leak { secrets, ways } => leak(&ctx, secrets, ways),
            Action::Run { steps } => Ok(run_steps(steps)),
            Action::Echo { value } => {
                capstan_plugin::info!("with got: {value}");
                Ok(Outcome::new(format!("got {value}")).output("value", value))
            }
        }
    }
}

/// The shell line that prints the value a program finds through `source`.
fn value_of(source: &Source) -> String {
    if source.file {
        format!("V=\"$(cat \"${}\")\"", source.var)
    } else {
        format!("V=\"${}\"", source.var)
    }
}

fn leak(ctx: &Context<Action>, sources: &[Source], ways: &[Way]) -> Result<Outcome, Error> {
    let mut values = Vec::new();
    for source in sources {
        let script = format!("{}; printf %s \"$V\"", value_of(source));
        let out = Exec::new("sh").args(["-c", &script]).capture().run_ok()?;
        values.push(out.stdout_str().into_owned());
    }
    let has = |way: Way| ways.contains(&way);
    let mut summary = String::from("leaked:");
    let mut outputs: Vec<(String, Value)> = Vec::new();
    let mut artifacts = Vec::new();
    let mut report = Vec::new();
    for (i, (source, value)) in sources.iter().zip(&values).enumerate() {
        let mid = (0..=value.len() / 2)
            .rev()
            .find(|i| value.is_char_boundary(*i))
            .unwrap_or(0);
        let (a, b) = value.split_at(mid);
        let forms = [
            value.clone(),
            base64(value.as_bytes()),
            url(value),
            json_escaped(value),
        ];
        if has(Way::Log) {
            for form in &forms {
                capstan_plugin::info!("value {i}: {form}");
            }
            capstan_plugin::log::progress(1, Some(2), &format!("working on {value}"));
        }
        if has(Way::Stdout) {
            let mut out = std::io::stdout();
            let _ = write!(out, "cut: {a}");
            let _ = out.flush();
            let _ = writeln!(out, "{b} and {}", forms[1]);
            let _ = out.flush();
        }
        if has(Way::Stderr) {
            eprint!("{a}");
            eprint!("{b}\n{}\n", forms[2]);
        }
        if has(Way::Child) {
            // Uncaptured: the child's output goes to the stage log only; its
            // value is cut across two writes, a moment apart.
            let script = format!(
                "{}; echo \"child says $V\"; printf %s \"$V\" | head -c 5; sleep 0.3; \
                 printf '%s\\n' \"$V\" | tail -c +6; printf %s \"$V\" | base64 -w0; echo; \
                 printf %s \"$V\" >&2",
                value_of(source)
            );
            Exec::new("sh").args(["-c", &script]).run_ok()?;
        }
        if has(Way::Outputs) {
            outputs.extend([
                (format!("value_{i}"), json!(value)),
                (format!("b64_{i}"), json!(forms[1])),
                (format!("url_{i}"), json!(forms[2])),
                (format!("json_{i}"), json!(forms[3])),
                (value.clone(), json!("a key holding the value")),
                (
                    format!("nested_{i}"),
                    json!({ "list": [value], value.clone(): 1 }),
                ),
            ]);
        }
        if has(Way::Summary) {
            summary.push_str(&format!(" {value} ({})", forms[1]));
        }
        if has(Way::Report) {
            report.push(json!({ "value": value, "forms": forms }));
        }
        if has(Way::Artifact) {
            artifacts.push(ctx.work_dir.join(format!("artifact-{value}")));
        }
        if has(Way::Argument) {
            // Command lines are visible to every user: the host refuses.
            let refused = match Exec::new("sh").args(["-c", "true", value]).run() {
                Ok(_) => "ran".to_string(),
                Err(e) => e.to_string(),
            };
            outputs.push((format!("argument_{i}"), json!(refused)));
        }
        if has(Way::File) {
            let dir = ctx.work_dir.join("sub");
            std::fs::create_dir_all(&dir).map_err(Error::from)?;
            std::fs::write(ctx.work_dir.join(format!("leak-{i}.txt")), value)
                .map_err(Error::from)?;
            std::fs::write(dir.join(format!("b64-{i}.txt")), &forms[1]).map_err(Error::from)?;
        }
    }
    if has(Way::Error) {
        let all: Vec<String> = values
            .iter()
            .map(|v| format!("{v} / {}", base64(v.as_bytes())))
            .collect();
        return Err(Error::failed(format!("failed holding {}", all.join(", "))));
    }
    let mut outcome = Outcome::new(summary).output("count", values.len());
    for (key, value) in outputs {
        outcome = outcome.output(key, value);
    }
    for artifact in artifacts {
        outcome = outcome.artifact(artifact);
    }
    if !report.is_empty() {
        outcome = outcome.report(json!({ "leaked": report }));
    }
    Ok(outcome)
}

fn run_steps(steps: &[Step]) -> Outcome {
    let mut outcome = Outcome::new(format!("ran {} steps", steps.len()));
    let mut previous = String::new();
    for (i, step) in steps.iter().enumerate() {
        let n = i + 1;
        let args: Vec<String> = step
            .args
            .iter()
            .map(|a| a.replace("{out}", previous.trim()))
            .collect();
        match Exec::new(step.program.as_str()).args(&args).capture().run() {
            Ok(out) => {
                previous = out.stdout_str().into_owned();
                outcome = outcome
                    .output(format!("stdout_{n}"), out.stdout_str())
                    .output(format!("stderr_{n}"), out.stderr_str())
                    .output(format!("exit_{n}"), out.status.code());
            }
            Err(e) => {
                previous.clear();
                outcome = outcome.output(format!("error_{n}"), e.to_string());
            }
        }
    }
    outcome
}

/// Standard base64, padded.
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for (i, shift) in [18, 12, 6, 0].into_iter().enumerate() {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> shift) as usize & 63] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Percent-encoded as a URL query value (`+` for spaces, as forms do).
fn url(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            b' ' => "+".into(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The value as it stands inside a JSON string.
fn json_escaped(value: &str) -> String {
    let quoted = serde_json::to_string(value).unwrap_or_default();
    quoted[1..quoted.len() - 1].to_string()
}

capstan_plugin::export_stage!(Leaky);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodings() {
        assert_eq!(base64(b"hunter2-secret"), "aHVudGVyMi1zZWNyZXQ=");
        assert_eq!(base64(b"ab"), "YWI=");
        assert_eq!(url("a b/c+é"), "a+b%2Fc%2B%C3%A9");
        assert_eq!(json_escaped("a\"b\\c"), "a\\\"b\\\\c");
    }

    #[test]
    fn describe_requests_a_named_secret_and_the_granted_ones() {
        let info = capstan_plugin::__private::describe::<Leaky>();
        assert_eq!(info.requests.len(), 5);
    }
}
