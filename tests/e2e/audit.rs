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
    assert!(ran.stdout.contains("capstan:plugin@0.1.0"), "{ran:?}");
    assert!(ran.stdout.contains("exec `echo`"), "{ran:?}");

    let ran = sb.capstan(&["audit", pipeline.to_str().unwrap(), "--json"]);
    assert_eq!(ran.code, 0, "{ran:?}");
    let doc: serde_json::Value = serde_json::from_str(&ran.stdout).expect("audit --json is JSON");
    let stages = doc["stages"].as_array().unwrap();
    assert_eq!(stages.len(), 2);
    for stage in stages {
        assert_eq!(stage["plugin"]["sha256"], digest);
        assert_eq!(stage["plugin"]["contract"], "capstan:plugin@0.1.0");
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
