//! `capstan audit` and `capstan plugin describe`: what a stage may do, from
//! the pipeline file and the plugin alone.

use sha2::{Digest, Sha256};

use crate::harness::Sandbox;

/// The hello example, with its plugin path pointed at the built plugin.
fn hello_example(sb: &Sandbox) -> std::path::PathBuf {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../examples/hello/pipeline.toml"
    ))
    .unwrap();
    let text = text.replace(
        "../../target/wasm32-wasip2/release/capstan_hello.wasm",
        capstan_test_artifacts::HELLO,
    );
    sb.write("hello/pipeline.toml", &text)
}

fn sha256(path: &str) -> String {
    hex::encode(Sha256::digest(std::fs::read(path).unwrap()))
}

#[test]
fn audit_of_the_hello_example_shows_requests_grants_and_digests() {
    let sb = Sandbox::new();
    let pipeline = hello_example(&sb);
    let ran = sb.capstan(&["audit", pipeline.to_str().unwrap()]);
    assert_eq!(ran.code, 0, "{ran:?}");
    let digest = sha256(capstan_test_artifacts::HELLO);
    assert!(
        ran.stdout.contains("stage `greet` — plugin `hello`"),
        "{ran:?}"
    );
    assert!(
        ran.stdout.contains("stage `answer` — plugin `hello`"),
        "{ran:?}"
    );
    assert!(ran.stdout.contains(&digest), "{ran:?}");
    assert!(ran.stdout.contains("capstan:plugin@0.1.1"), "{ran:?}");
    assert!(ran.stdout.contains("exec `echo`"), "{ran:?}");

    let ran = sb.capstan(&["audit", pipeline.to_str().unwrap(), "--json"]);
    assert_eq!(ran.code, 0, "{ran:?}");
    let doc: serde_json::Value = serde_json::from_str(&ran.stdout).expect("audit --json is JSON");
    let stages = doc["stages"].as_array().unwrap();
    assert_eq!(stages.len(), 2);
    for stage in stages {
        assert_eq!(stage["plugin"]["sha256"], digest);
        assert_eq!(stage["plugin"]["contract"], "capstan:plugin@0.1.1");
        assert_eq!(
            stage["requested"][0]["capability"],
            serde_json::json!({"kind": "exec", "name": "echo"})
        );
        assert_eq!(stage["requested"][0]["granted"], true);
        assert!(!stage["requested"][0]["reason"].as_str().unwrap().is_empty());
        assert_eq!(stage["granted"]["exec"][0]["program"], "echo");
        assert_eq!(
            stage["granted"]["exec"][0]["args"],
            serde_json::json!(["*"])
        );
        assert!(
            stage["granted"]["exec"][0]["path"]
                .as_str()
                .unwrap()
                .starts_with('/')
        );
        assert_eq!(stage["missing"], serde_json::json!([]));
    }
}

#[test]
fn audit_shows_what_is_requested_but_not_granted() {
    let sb = Sandbox::new();
    let pipeline = sb.pipeline("[pipeline]\nname = \"p\"\n[plugins.hello]\npath = \"{hello}\"\n[stages.greet]\nplugin = \"hello\"\n[stages.greet.grants]\nenv = [\"HOME\"]\n");
    let ran = sb.capstan(&["audit", pipeline.to_str().unwrap(), "--json"]);
    assert_eq!(ran.code, 4, "{ran:?}");
    let doc: serde_json::Value = serde_json::from_str(&ran.stdout).unwrap();
    let stage = &doc["stages"][0];
    assert_eq!(stage["requested"][0]["granted"], false);
    assert_eq!(stage["missing"][0]["request"]["capability"]["name"], "echo");
    assert!(
        stage["missing"][0]["toml"]
            .as_str()
            .unwrap()
            .contains("[[stages.greet.grants.exec]]\nprogram = \"echo\"")
    );
    assert_eq!(stage["unrequested"], serde_json::json!(["env `HOME`"]));
}

#[test]
fn plugin_describe_runs_only_describe() {
    let sb = Sandbox::new();
    let ran = sb.capstan(&[
        "plugin",
        "describe",
        capstan_test_artifacts::HELLO,
        "--json",
    ]);
    assert_eq!(ran.code, 0, "{ran:?}");
    let doc: serde_json::Value = serde_json::from_str(&ran.stdout).unwrap();
    assert_eq!(doc["name"], "hello");
    assert_eq!(doc["sha256"], sha256(capstan_test_artifacts::HELLO));
    assert!(
        doc["config_schema"]["properties"]["message"].is_object(),
        "{doc:#}"
    );
    // The same through `audit <plugin.wasm>`.
    let ran = sb.capstan(&["audit", capstan_test_artifacts::HELLO]);
    assert_eq!(ran.code, 0, "{ran:?}");
    assert!(ran.stdout.contains("exec `echo`"), "{ran:?}");
}

#[test]
fn every_command_help_has_an_example_and_exit_codes_are_documented() {
    let sb = Sandbox::new();
    for cmd in [
        &["run", "--help"][..],
        &["validate", "--help"],
        &["audit", "--help"],
        &["plugin", "describe", "--help"],
        &["verify", "--help"],
    ] {
        let ran = sb.capstan(cmd);
        assert_eq!(ran.code, 0, "{ran:?}");
        assert!(
            ran.stdout.contains("Example"),
            "{cmd:?} --help has no example: {ran:?}"
        );
    }
    let ran = sb.capstan(&["--help"]);
    for code in [
        "0   success",
        "3   the pipeline file is invalid",
        "4   a plugin cannot be loaded",
        "5   the run is waiting",
        "9   verification failed",
    ] {
        assert!(ran.stdout.contains(code), "--help lacks `{code}`: {ran:?}");
    }
}

/// `capstan audit --run`: what a run's stages did, denials first-class.
#[test]
fn a_runs_audit_events_come_from_the_run_store() {
    let sb = crate::harness::Sandbox::new();
    let stage = crate::harness::adversary_stage(
        "probe",
        r#"{ action = "exec", program = "echo", args = ["forbidden"] }"#,
        "",
    );
    let pipeline = sb.pipeline(&format!(
        "[pipeline]\nname = \"a\"\n[plugins.adversary]\npath = \"{{adversary}}\"\n{stage}"
    ));
    let ran = sb.capstan(&["run", pipeline.to_str().unwrap(), "-q"]);
    let id = sb.newest_run_id();
    let events = sb.json(&["audit", "--run", &id, "--json"]);
    let file: Vec<serde_json::Value> = sb.last_run().audit;
    assert_eq!(
        events.as_array().unwrap().len(),
        file.len(),
        "the store has every audit.jsonl event: {ran:?}"
    );
    let denied = sb.json(&["audit", "--run", &id, "--denied", "--json"]);
    let denied = denied.as_array().unwrap();
    assert!(
        !denied.is_empty()
            && denied
                .iter()
                .all(|e| e["allowed"] == false || e["capability"] == "limit")
    );
    assert!(
        denied
            .iter()
            .any(|e| e["capability"] == "exec" && e["detail"]["args"][0] == "forbidden"),
        "{denied:?}"
    );
    let text = sb.capstan(&["audit", "--run", &id, "--denied"]);
    assert_eq!(text.code, 0, "{text:?}");
    assert!(
        text.stdout.contains("DENIED") && text.stdout.contains("echo forbidden"),
        "{text:?}"
    );
}

/// Exec grants of every kind the audit marks, or not, for the sandbox tests:
/// an upstream stage, read and write grants, each network setting, and a
/// `[sandbox.limits]` default that one grant overrides.
const SANDBOXED: &str = r#"
[pipeline]
name = "sandboxed"
[sandbox.limits]
processes = 256
[plugins.command]
path = "{command}"
[stages.prepare]
plugin = "command"
with = { run = ["stat", "--version"] }
[stages.prepare.grants]
read = ["ro"]
[[stages.prepare.grants.exec]]
program = "stat"
args = ["--version"]
env = ["CAPSTAN_OUTPUT"]
[stages.tools]
plugin = "command"
needs = ["prepare"]
with = { run = ["stat", "-L", "--", "{sandbox}/ro"] }
[stages.tools.grants]
read = ["ro"]
write = ["rw"]
[[stages.tools.grants.exec]]
program = "sh"
args = ["-c", "**"]
network = "none"
[[stages.tools.grants.exec]]
program = "ansible"
args = ["all", "-m", "shell", "-a", "*"]
network = "loopback"
[[stages.tools.grants.exec]]
program = "terraform"
args = ["plan"]
[[stages.tools.grants.exec]]
program = "stat"
args = ["-L", "--", "{sandbox}/ro"]
env = ["CAPSTAN_OUTPUT"]
network = "none"
limits = { processes = 8 }
"#;

/// The audit's sandbox lines, with what differs between machines replaced.
fn sandbox_lines(sb: &Sandbox, text: &str) -> String {
    let system = system_count(text);
    text.lines()
        .filter(|l| {
            let l = l.trim_start();
            ["stage `", "sandbox ", "read+", "exec ", "network ", "⚠ "]
                .iter()
                .any(|p| l.starts_with(p))
        })
        .map(|l| {
            // The program's resolved path and hash are this machine's.
            match l.find(" = /") {
                Some(at) if l.trim_start().starts_with("exec ") => {
                    let args = l.find(" args ").unwrap_or(l.len());
                    format!("{} = <path>{}", &l[..at], &l[args..])
                }
                _ => l.to_string(),
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
        .replace(&sb.path().to_string_lossy().to_string(), "<sandbox>")
        .replace(&system, "system locations (<n>")
        .replace(
            &format!("landlock ABI {}", landlock_abi(text)),
            "landlock ABI <n>",
        )
}

/// The Landlock ABI the audit says it enforces with (the kernel's).
fn landlock_abi(text: &str) -> String {
    let start = text.find("landlock ABI ").expect("Landlock enforces") + "landlock ABI ".len();
    text[start..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect()
}

/// `system locations (N` as printed (N: what exists here).
fn system_count(text: &str) -> String {
    let start = text
        .find("system locations (")
        .expect("the system set is shown");
    let rest = &text[start..];
    rest[..rest.find(" paths").expect("a count of paths")].to_string()
}

#[test]
fn audit_shows_the_sandbox_of_each_stage_and_marks_arbitrary_code() {
    let sb = Sandbox::new();
    let pipeline = sb.pipeline(SANDBOXED);
    let path = pipeline.to_str().unwrap();

    let doc = sb.json(&["audit", path, "--json"]);
    let stages = doc["stages"].as_array().unwrap();
    let tools = stages.iter().find(|s| s["stage"] == "tools").unwrap();
    let files = &tools["sandbox"];
    assert_eq!(files["confined"], true, "{files:#}");
    assert!(
        files["enforcement"]
            .as_str()
            .unwrap()
            .starts_with("landlock ABI "),
        "{files:#}"
    );
    let system = files["read_exec"]["system"].as_array().unwrap();
    assert!(system.contains(&serde_json::json!("/usr")), "{files:#}");
    let root = sb.path();
    assert_eq!(
        files["read_exec"]["grants"],
        serde_json::json!([root.join("ro")])
    );
    assert_eq!(
        files["read_exec"]["upstream_work_dirs"],
        serde_json::json!(["prepare"])
    );
    assert_eq!(
        files["read_write_exec"]["grants"],
        serde_json::json!([root.join("rw")])
    );
    assert_eq!(files["read_write_exec"]["work_dir"], true);
    assert_eq!(
        files["read_write_exec"]["private"],
        serde_json::json!(["TMPDIR", "/dev/shm"])
    );

    let exec = tools["granted"]["exec"].as_array().unwrap();
    let grant = |program: &str| exec.iter().find(|e| e["program"] == program).unwrap();
    let marks = |program: &str| -> Vec<String> {
        serde_json::from_value(grant(program)["arbitrary_code"].clone()).unwrap()
    };
    let (sh, ansible, terraform, stat) = (
        grant("sh"),
        grant("ansible"),
        grant("terraform"),
        grant("stat"),
    );
    assert_eq!(
        (&sh["network"], &sh["network_is_default"]),
        (&serde_json::json!("none"), &serde_json::json!(false))
    );
    assert_eq!(ansible["network"], "loopback");
    assert_eq!(
        (&terraform["network"], &terraform["network_is_default"]),
        (&serde_json::json!("host"), &serde_json::json!(true))
    );
    assert_eq!(marks("sh"), ["sh -c with open arguments (`**`)"]);
    assert!(
        marks("ansible")[0].contains("module shell runs any command on its targets"),
        "{:?}",
        marks("ansible")
    );
    assert!(
        marks("ansible")
            .iter()
            .any(|m| m.contains("ansible.cfg") && m.contains("which the plugin can write")),
        "{:?}",
        marks("ansible")
    );
    assert!(
        marks("terraform")[0].contains("`external` data sources"),
        "{:?}",
        marks("terraform")
    );
    assert!(marks("stat").is_empty(), "{:?}", marks("stat"));
    // `[sandbox.limits]` for all, the stat grant's own `processes`.
    assert_eq!(stat["limits"]["processes"], 8);
    assert_eq!(stat["limits_from_grant"], serde_json::json!(["processes"]));
    for e in [sh, ansible, terraform] {
        assert_eq!(e["limits"]["processes"], 256, "{e:#}");
        assert_eq!(e["limits"]["open_files"], 4096, "{e:#}");
        assert_eq!(e["limits_from_grant"], serde_json::json!([]), "{e:#}");
    }
    let prepare = stages.iter().find(|s| s["stage"] == "prepare").unwrap();
    assert_eq!(
        prepare["sandbox"]["read_exec"]["upstream_work_dirs"],
        serde_json::json!([])
    );

    let ran = sb.capstan(&["audit", path]);
    assert_eq!(ran.code, 0, "{ran:?}");
    for line in [
        "⚠ runs arbitrary code (inside the sandbox): sh -c with open arguments (`**`)",
        "network none · limits open files 4096, processes 8 (grant), cpu 1h, address space 16.0 GiB",
        "network host (default) · limits open files 4096, processes 256,",
        "read+exec   system locations (",
        "; work dirs of upstream stages: prepare",
        "read+write  its work dir; ",
    ] {
        assert!(ran.stdout.contains(line), "no `{line}` in {ran:?}");
    }
    insta::assert_snapshot!(sandbox_lines(&sb, &ran.stdout));
}

/// Without Landlock and with `[sandbox] require = false`, the audit says the
/// programs run unconfined (`CAPSTAN_FIXTURE_LANDLOCK_ABI=0` stands in for
/// such a kernel).
#[test]
fn audit_says_when_programs_are_not_confined() {
    let sb = Sandbox::new();
    let pipeline = sb.pipeline(&SANDBOXED.replace(
        "[sandbox.limits]",
        "[sandbox]\nrequire = false\n[sandbox.limits]",
    ));
    let path = pipeline.to_str().unwrap();
    let ran: crate::harness::Ran = sb
        .command(&["audit", path])
        .env("CAPSTAN_FIXTURE_LANDLOCK_ABI", "0")
        .output()
        .unwrap()
        .into();
    assert_eq!(ran.code, 0, "{ran:?}");
    assert!(
        ran.stdout.contains("— NOT confined: this kernel has no Landlock and [sandbox] require = false, so the programs run without these file rules"),
        "{ran:?}"
    );
    let doc: serde_json::Value = serde_json::from_slice(
        &sb.command(&["audit", path, "--json"])
            .env("CAPSTAN_FIXTURE_LANDLOCK_ABI", "0")
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    assert_eq!(doc["stages"][1]["sandbox"]["confined"], false);
}

/// `capstan audit --run`: each exec with the sandbox it ran in.
#[test]
fn a_runs_audit_shows_the_sandbox_each_program_ran_in() {
    let sb = Sandbox::new();
    let pipeline = sb.pipeline(SANDBOXED);
    let ran = sb.capstan(&["run", pipeline.to_str().unwrap(), "-q"]);
    assert_eq!(ran.code, 0, "{ran:?}");
    let id = sb.newest_run_id();
    let events = sb.json(&["audit", "--run", &id, "--stage", "tools", "--json"]);
    let exec = events
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["capability"] == "exec" && e["allowed"] == true)
        .expect("the stat exec");
    assert_eq!(exec["detail"]["sandbox"]["network"], "none");
    assert_eq!(exec["detail"]["sandbox"]["limits"]["processes"], 8);
    let text = sb.capstan(&["audit", "--run", &id, "--stage", "tools"]);
    assert_eq!(text.code, 0, "{text:?}");
    let lines: Vec<&str> = text.stdout.lines().collect();
    assert!(
        lines
            .iter()
            .any(|l| l.contains("programs' files: landlock ABI ") && l.contains("read+write 3 ")),
        "the work dir, the write grant and the private tmp dir: {text:?}"
    );
    let at = lines
        .iter()
        .position(|l| l.contains("stat -L -- ") && l.contains("/ro "))
        .unwrap_or_else(|| panic!("{text:?}"));
    assert!(
        lines[at + 1].contains("in landlock ABI ")
            && lines[at + 1].contains(", network none, 4096 files, 8 processes, cpu 1h, 16.0 GiB"),
        "{text:?}"
    );
}
