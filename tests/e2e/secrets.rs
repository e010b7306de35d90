//! Secrets: declared in `[secrets]` (a host variable, a file, a command),
//! resolved by the host when a stage granted them starts, handed to its
//! programs as the grant says, and masked in everything the run shows and
//! keeps, whatever the plugin does with a value it gets back from a
//! program (the `leaky` fixture tries every way).

use std::path::{Path, PathBuf};

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};

use crate::harness::Sandbox;

/// A value no run could print by chance, with characters that every
/// encoding changes: `/`, `+`, a space, a quote, a non-ASCII letter.
fn canary(tag: &str) -> String {
    format!("cAnArY-{tag}-{:016x}/+é \"q", fastrand::u64(..))
}

/// The forms a leak of `value` could take: as it is, base64 (standard and
/// URL-safe, padded or not), percent-encoded (`%20` and `+`), JSON-escaped
/// (as serde writes it, and ASCII-only).
fn forms(value: &str) -> Vec<String> {
    let bytes = value.as_bytes();
    let percent = percent_encoding::utf8_percent_encode(value, percent_encoding::NON_ALPHANUMERIC)
        .to_string()
        .replace("%2D", "-");
    let json = serde_json::to_string(value).unwrap();
    let json = json[1..json.len() - 1].to_string();
    let ascii: String = json
        .chars()
        .map(|c| {
            if c.is_ascii() {
                c.to_string()
            } else {
                format!("\\u{:04x}", c as u32)
            }
        })
        .collect();
    vec![
        value.to_string(),
        STANDARD.encode(bytes),
        STANDARD_NO_PAD.encode(bytes),
        URL_SAFE.encode(bytes),
        URL_SAFE_NO_PAD.encode(bytes),
        percent.clone(),
        percent.replace("%20", "+"),
        json,
        ascii,
    ]
}

/// Every file under `dir` (symlinks not followed) with its bytes.
fn files(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        let kind = entry.file_type().unwrap();
        if kind.is_dir() {
            out.extend(files(&path));
        } else if kind.is_file() {
            out.push((path.clone(), std::fs::read(&path).unwrap()));
        }
    }
    out
}

/// Where any form of any of `values` occurs in `texts` (name, bytes).
fn occurrences(values: &[String], texts: &[(String, Vec<u8>)]) -> Vec<String> {
    let mut found = Vec::new();
    for value in values {
        for form in forms(value) {
            for (name, bytes) in texts {
                let hits = bytes
                    .windows(form.len())
                    .filter(|w| *w == form.as_bytes())
                    .count();
                if hits > 0 {
                    found.push(format!("{hits}× {form:?} in {name}"));
                }
            }
        }
    }
    found
}

/// A stage of the leaky plugin with everything it requests granted:
/// `sh` (any script, with arguments), `cat`, `rw/`, and `secrets` (TOML
/// lines of its `grants.secrets`, which must grant `canary`).
fn leaky_stage(name: &str, with: &str, extra: &str, secrets: &str) -> String {
    format!(
        r#"
[stages.{name}]
plugin = "leaky"
with = {with}
{extra}
[[stages.{name}.grants.exec]]
program = "sh"
args = ["-c", "*", "**"]
[[stages.{name}.grants.exec]]
program = "cat"
args = ["*"]
[stages.{name}.grants]
write = ["rw"]
[stages.{name}.grants.secrets]
{secrets}
"#
    )
}

const HEAD: &str = r#"
[pipeline]
name = "secrets"
environments = ["dev"]
[defaults]
timeout = "60s"
[plugins.leaky]
path = "{leaky}"
[plugins.command]
path = "{command}"

[secrets.canary]
env = "CAPSTAN_TEST_CANARY"
[secrets.from_file]
file = "from-file.txt"
[secrets.from_command]
command = ["cat", "from-command.txt"]
timeout = "10s"
"#;

/// The Done-when of secrets: canaries from a host variable, a file and a
/// command, delivered to a stage whose plugin reads them back through its
/// `sh` and prints them (log records, stdout, stderr, cut across writes),
/// has a child print them, puts them in outputs (keys too), the summary,
/// the report, artifact names, an exec argument, the stage error and
/// files. Afterwards not one byte under the state dir (run files, logs,
/// audit log, the SQLite store) nor of what the terminal showed holds a
/// value or one of its encodings; the stage that left files failed,
/// naming one.
#[test]
fn a_canary_leaked_every_way_appears_nowhere() {
    let sb = Sandbox::new();
    let from_env = canary("env");
    let from_file = canary("file");
    let from_command = canary("command");
    sb.write("from-file.txt", &format!("{from_file}\n"));
    sb.write("from-command.txt", &format!("{from_command}\n"));
    let all = "canary = { env = \"CANARY\" }\nfrom_file = { env = \"FROM_FILE\" }\nfrom_command = { file = \"FROM_COMMAND\" }";
    let sources =
        r#"[{ var = "CANARY" }, { var = "FROM_FILE" }, { var = "FROM_COMMAND", file = true }]"#;
    let every_way = r#"["log", "stdout", "stderr", "child", "outputs", "summary", "report", "artifact", "argument"]"#;
    let mut toml = HEAD.to_string();
    toml += &leaky_stage(
        "shown",
        &format!("{{ action = \"leak\", secrets = {sources}, ways = {every_way} }}"),
        "",
        all,
    );
    toml += &leaky_stage(
        "failing",
        &format!("{{ action = \"leak\", secrets = {sources}, ways = [\"log\", \"error\"] }}"),
        "",
        all,
    );
    toml += &leaky_stage(
        "leaves-files",
        &format!("{{ action = \"leak\", secrets = {sources}, ways = [\"file\"] }}"),
        "",
        all,
    );
    // A later stage reads an output that held a value.
    toml += &leaky_stage(
        "after",
        "{ action = \"echo\", value = \"${stages.shown.outputs.value_0}\" }",
        "needs = [\"shown\"]",
        "canary = { env = \"CANARY\" }",
    );
    let pipeline = sb.pipeline(&toml);
    let ran = sb
        .command(&["run", pipeline.to_str().unwrap(), "--json"])
        .env("CAPSTAN_TEST_CANARY", &from_env)
        .output()
        .unwrap();
    let run_out = crate::harness::Ran::from(ran.clone());
    assert_eq!(run_out.code, 1, "{run_out:?}");
    let run = sb.last_run();
    let values = [from_env.clone(), from_file.clone(), from_command.clone()];

    // The plugin got every value back from its `sh`, and every way it put
    // one in what the host keeps shows `***`.
    assert_eq!(run.status("shown"), "succeeded", "{:#}", run.stage("shown"));
    assert_eq!(run.output("shown", "count"), 3);
    for i in 0..3 {
        for key in ["value", "b64", "url", "json"] {
            assert_eq!(
                run.output("shown", &format!("{key}_{i}")),
                "***",
                "{key}_{i}"
            );
        }
        assert_eq!(
            run.output("shown", &format!("nested_{i}")),
            serde_json::json!({"list": ["***"], "***": 1})
        );
        let refused = run.output("shown", &format!("argument_{i}"));
        assert!(
            refused.as_str().unwrap().contains("holds secret `")
                && refused.as_str().unwrap().contains("visible to every user"),
            "{refused}"
        );
    }
    assert_eq!(run.output("shown", "***"), "a key holding the value");
    let summary = run.stage("shown")["summary"].as_str().unwrap().to_string();
    assert_eq!(summary, "leaked: *** (***) *** (***) *** (***)");
    let log = run.log("shown");
    assert!(log.contains("[info] value 0: ***\n"), "{log}");
    assert!(log.contains("cut: ***"), "{log}");
    assert!(log.contains("child says ***"), "{log}");
    // The stage error, and a later stage's `with`.
    run.assert_failed_naming(
        "failing",
        &["failed holding *** / ***, *** / ***, *** / ***"],
    );
    assert_eq!(run.output("after", "value"), "***");
    // A value left in files fails the stage, naming one; the files keep
    // `***` instead.
    run.assert_failed_naming(
        "leaves-files",
        &[
            "stage `leaves-files` left secret `canary` in stages/leaves-files/leak-0.txt (and 5 more files)",
            "remove it, or write it outside the run directory",
        ],
    );
    assert_eq!(
        std::fs::read_to_string(run.dir.join("stages/leaves-files/sub/b64-2.txt")).unwrap(),
        "***"
    );
    // Which stage received which secret: names, never values.
    let delivered: Vec<_> = run
        .audit
        .iter()
        .filter(|e| e["capability"] == "secret" && e["detail"]["event"] == "delivered")
        .map(|e| {
            (
                e["stage"].as_str().unwrap().to_string(),
                e["detail"]["secrets"].clone(),
            )
        })
        .collect();
    assert_eq!(delivered.len(), 4, "{delivered:?}");
    let (_, secrets) = delivered
        .iter()
        .find(|(stage, _)| stage == "shown")
        .unwrap();
    let names: Vec<&str> = secrets
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["canary", "from_command", "from_file"]);
    assert!(
        run.audit.iter().any(|e| e["capability"] == "secret"
            && e["stage"] == "leaves-files"
            && e["detail"]["event"] == "left-in-files"),
        "{:#?}",
        run.audit_of("leaves-files")
    );
    // The attempts' private directories are gone.
    assert!(!run.dir.join("secrets").exists());
    let audit_run = sb.capstan(&["audit", "--run", "latest", "--stage", "after"]);
    assert_eq!(audit_run.code, 0, "{audit_run:?}");
    assert!(
        audit_run.stdout.contains("received canary (env CANARY)"),
        "{audit_run:?}"
    );

    // What each stage may receive, from where, how: from the file alone.
    let audit = sb.capstan(&["audit", pipeline.to_str().unwrap()]);
    assert_eq!(audit.code, 0, "{audit:?}");
    for line in [
        "secret   canary → env CANARY (every program of the stage) — from host variable CAPSTAN_TEST_CANARY",
        "secret   from_command → file, path in FROM_COMMAND (every program of the stage) — from command [\"cat\",\"from-command.txt\"] (timeout 10s)",
        "⚠ ",
    ] {
        assert!(audit.stdout.contains(line), "{line}\n{audit:?}");
    }
    // The secret's file is readable by others: said at load.
    assert!(
        run_out
            .stderr
            .contains("is readable by users other than its owner (mode 0644)"),
        "{run_out:?}"
    );

    // Nothing anywhere holds a value: every byte under the state dir (run
    // files, logs, audit log, the store's database, WAL included) and what
    // `run`, `logs`, `show` and `audit --run` printed.
    let mut texts: Vec<(String, Vec<u8>)> = files(&sb.path().join(".capstan"))
        .into_iter()
        .map(|(p, b)| (p.display().to_string(), b))
        .collect();
    assert!(
        texts.iter().any(|(p, _)| p.ends_with("capstan.db")),
        "the store is searched"
    );
    texts.push(("run stdout".into(), ran.stdout.clone()));
    texts.push(("run stderr".into(), ran.stderr.clone()));
    for args in [
        vec!["logs", "latest"],
        vec!["show", "latest", "--json"],
        vec!["audit", "--run", "latest", "--json"],
        vec!["audit", "--run", "latest"],
    ] {
        let shown = sb.command(&args).output().unwrap();
        texts.push((
            format!("capstan {}", args.join(" ")),
            [shown.stdout, shown.stderr].concat(),
        ));
    }
    assert!(
        run_out.stderr.contains("child says ***"),
        "the live echo shows the logs: {run_out:?}"
    );
    let found = occurrences(&values, &texts);
    assert!(found.is_empty(), "leaked:\n{}", found.join("\n"));
}

/// A plugin that requests a secret the stage does not grant stops the
/// pipeline before anything runs, with the lines to add: the grant, and
/// the declaration when the secret is not declared yet.
#[test]
fn a_secret_not_granted_is_refused_at_load_with_the_lines_to_add() {
    let sb = Sandbox::new();
    let stage = r#"
[stages.s]
plugin = "leaky"
with = { action = "echo", value = 1 }
[[stages.s.grants.exec]]
program = "sh"
args = ["-c", "*"]
[[stages.s.grants.exec]]
program = "cat"
[stages.s.grants]
write = ["rw"]
"#;
    let head = "[pipeline]\nname = \"p\"\n[plugins.leaky]\npath = \"{leaky}\"\n";
    let pipeline = sb.pipeline(&format!("{head}{stage}"));
    let ran = sb.capstan(&["validate", pipeline.to_str().unwrap()]);
    assert_eq!(ran.code, 4, "{ran:?}");
    assert!(
        ran.stderr.contains(
            "stage `s` (plugin `leaky`) requests secret `canary` — \"the value it tries to leak\" — but the pipeline does not grant it"
        ),
        "{ran:?}"
    );
    let lines: Vec<&str> = ran.stderr.lines().map(str::trim).collect();
    let at = lines
        .iter()
        .position(|l| *l == "[secrets.canary]")
        .unwrap_or_else(|| panic!("{ran:?}"));
    assert!(
        lines[at + 1].starts_with("env = \"<HOST_VARIABLE>\""),
        "{ran:?}"
    );
    assert_eq!(lines[at + 2], "[stages.s.grants.secrets]", "{ran:?}");
    assert!(
        lines[at + 3].starts_with("canary = { env = \"<VARIABLE>\" }"),
        "{ran:?}"
    );
    // Declared, not granted: only the grant to add.
    let pipeline = sb.pipeline(&format!(
        "{head}[secrets.canary]\nenv = \"X_TOKEN\"\n{stage}"
    ));
    let ran = sb.capstan(&["validate", pipeline.to_str().unwrap()]);
    assert_eq!(ran.code, 4, "{ran:?}");
    assert!(!ran.stderr.contains("[secrets.canary]\n"), "{ran:?}");
    assert!(
        ran.stderr.contains("canary = { env = \"<VARIABLE>\" }"),
        "{ran:?}"
    );
    // A grant of a secret nobody declared is an error of the file, placed.
    let pipeline = sb.pipeline(&format!(
        "{head}{stage}[stages.s.grants.secrets]\ncanary = {{ env = \"TOKEN\" }}\n"
    ));
    let ran = sb.capstan(&["validate", pipeline.to_str().unwrap()]);
    assert_eq!(ran.code, 3, "{ran:?}");
    assert!(
        ran.stderr.contains(
            "stage `s` is granted secret `canary`, which is not declared under [secrets]"
        ) && ran.stderr.contains("pipeline.toml:17:1"),
        "{ran:?}"
    );
}

/// A secret delivered as a file: mode 0600 in a 0700 directory of the
/// stage attempt's own, readable by the program the grant names and by no
/// other (not another program of the stage, not a program of a stage
/// running at the same time), and gone when the stage ends.
#[test]
fn a_secret_file_is_private_to_its_programs_and_gone_after_the_stage() {
    let sb = Sandbox::new();
    let value = canary("file-delivery");
    let rw = sb.path().join("rw");
    let rw = rw.display();
    // `holder` shows where its secret file is and waits until `other` has
    // tried to read it (files in `rw/` say when).
    let holder_script = format!(
        r#"stat -c '%a' "$TOKEN_FILE" "$(dirname "$TOKEN_FILE")"; cat "$TOKEN_FILE" > /dev/null && echo readable; printf %s "$TOKEN_FILE" > {rw}/path; i=0; while [ ! -e {rw}/done ] && [ $i -lt 600 ]; do sleep 0.05; i=$((i+1)); done"#
    );
    let other_script = format!(
        r#"i=0; while [ ! -e {rw}/path ] && [ $i -lt 600 ]; do sleep 0.05; i=$((i+1)); done; cat "$(cat {rw}/path)" > {rw}/stolen 2> {rw}/why; echo "exit=$?" >> {rw}/why; touch {rw}/done"#
    );
    let steps = format!(
        r#"[{{ program = "sh", args = ["-c", 'printf %s "$TOKEN_FILE"'] }}, {{ program = "cat", args = ["{{out}}"] }}, {{ program = "sh", args = ["-c", '''{holder_script}'''] }}]"#
    );
    let mut toml = HEAD.to_string();
    toml += &leaky_stage(
        "holder",
        &format!("{{ action = \"run\", steps = {steps} }}"),
        "",
        "canary = { file = \"TOKEN_FILE\", programs = [\"sh\"] }",
    );
    toml += &format!(
        r#"
[stages.other]
plugin = "command"
with = {{ run = ["sh", "-c", '{other_script}'] }}
[[stages.other.grants.exec]]
program = "sh"
args = ["-c", "*"]
env = ["CAPSTAN_OUTPUT"]
[stages.other.grants]
read = ["ro"]
write = ["rw"]
"#
    );
    let pipeline = sb.pipeline(&toml);
    let ran = sb
        .command(&["run", pipeline.to_str().unwrap(), "-q"])
        .env("CAPSTAN_TEST_CANARY", &value)
        .output()
        .unwrap();
    let ran = crate::harness::Ran::from(ran);
    assert_eq!(ran.code, 0, "{ran:?}");
    let run = sb.last_run();
    let path = run.output("holder", "stdout_1");
    let path = Path::new(path.as_str().unwrap());
    assert!(path.starts_with(run.dir.join("secrets")), "{path:?}");
    assert!(
        path.parent()
            .unwrap()
            .file_name()
            .unwrap()
            .to_str()
            .unwrap()
            .starts_with("holder-")
    );
    // `cat` is granted to the stage, but the secret is only for `sh`.
    let cat = run.output("holder", "stderr_2");
    assert!(
        cat.as_str().unwrap().contains("Permission denied"),
        "{:#}",
        run.stage("holder")
    );
    assert_eq!(run.output("holder", "exit_2"), 1);
    assert_eq!(run.output("holder", "stdout_3"), "600\n700\nreadable\n");
    // A program of a stage running at the same time could not read it.
    let why = std::fs::read_to_string(sb.path().join("rw/why")).unwrap();
    assert!(why.contains("exit=1"), "{why}");
    assert!(
        why.contains("Permission denied") || why.contains("No such file"),
        "{why}"
    );
    assert_eq!(
        std::fs::read_to_string(sb.path().join("rw/stolen")).unwrap(),
        ""
    );
    // Gone with the stage.
    assert!(!path.exists() && !path.parent().unwrap().exists());
    assert!(!run.dir.join("secrets").exists());
}

/// Terraform's sensitive values are masked for the rest of the run: the
/// plan stage marks every value `terraform show -json` flags sensitive
/// before anything prints it, and a later stage whose program prints one
/// (here the configuration holding it as a default) shows `***`.
#[test]
fn terraform_sensitive_values_are_masked_for_the_rest_of_the_run() {
    let sb = Sandbox::new();
    let value = format!("tf-sensitive-{:016x}", fastrand::u64(..));
    sb.write(
        "infra/main.tf",
        &format!(
            r#"terraform {{
  backend "local" {{}}
}}
variable "db_password" {{
  type      = string
  sensitive = true
  default   = "{value}"
}}
output "db_password" {{
  value     = var.db_password
  sensitive = true
}}
output "region" {{
  value = "eu-1"
}}
"#
        ),
    );
    std::fs::create_dir(sb.path().join("state")).unwrap();
    let pipeline = sb.pipeline(
        r#"
[pipeline]
name = "tf-sensitive"
environments = ["dev"]
[defaults]
timeout = "120s"
[plugins.terraform]
path = "{terraform}"
[plugins.command]
path = "{command}"

[stages.plan]
plugin = "terraform"
with = { action = "plan", dir = "${pipeline.dir}/infra", state = "${pipeline.dir}/state/terraform.tfstate" }
[[stages.plan.grants.exec]]
program = "terraform"
args = ["init|plan|show|apply|output|version", "**"]
env = ["TF_IN_AUTOMATION", "TF_INPUT", "TF_DATA_DIR", "TF_VAR_*", "TF_LOG"]
[stages.plan.grants]
read = ["infra"]
write = ["state"]

[stages.print]
plugin = "command"
needs = ["plan"]
with = { run = ["cat", "${pipeline.dir}/infra/main.tf"] }
[[stages.print.grants.exec]]
program = "cat"
args = ["*"]
env = ["CAPSTAN_OUTPUT"]
[stages.print.grants]
read = ["infra"]
"#,
    );
    let ran = sb
        .command(&["run", pipeline.to_str().unwrap()])
        .output()
        .unwrap();
    let shown = crate::harness::Ran::from(ran.clone());
    assert_eq!(shown.code, 0, "{shown:?}");
    let run = sb.last_run();
    assert_eq!(
        run.output("plan", "output_changes")["db_password"]["after"],
        "<sensitive>"
    );
    let log = run.log("print");
    assert!(log.contains("default   = \"***\""), "{log}");
    // Everything the host wrote (Terraform's plan file, in the plan stage's
    // work dir, holds the configuration and its values, compressed: it is
    // Terraform's to keep).
    let mut texts: Vec<(String, Vec<u8>)> = files(&sb.path().join(".capstan"))
        .into_iter()
        .map(|(p, b)| (p.display().to_string(), b))
        .filter(|(p, _)| !p.ends_with("/stages/plan/tfplan"))
        .collect();
    texts.push(("run stdout".into(), ran.stdout));
    texts.push(("run stderr".into(), ran.stderr));
    let found = occurrences(&[value], &texts);
    assert!(found.is_empty(), "leaked:\n{}", found.join("\n"));
}
