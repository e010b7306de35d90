//! Whole runs: outputs flowing downstream, concurrency, failures and skips,
//! the run directory, the compiled cache.

use crate::harness::{Sandbox, adversary_stage};

const HELLO: &str = r#"
[pipeline]
name = "hello"
environments = ["dev", "production"]

[plugins.hello]
path = "{hello}"

[stages.greet]
plugin = "hello"
with = { message = "hi from ${run.environment}" }
[[stages.greet.grants.exec]]
program = "echo"
args = ["*"]

[stages.answer]
plugin = "hello"
needs = ["greet"]
with = { message = "greet said: ${stages.greet.outputs.message}" }
[[stages.answer.grants.exec]]
program = "echo"
args = ["*"]
"#;

#[test]
fn outputs_flow_downstream_and_everything_is_recorded() {
    let sb = Sandbox::new();
    let pipeline = sb.pipeline(HELLO);
    let ran = sb.capstan(&["run", pipeline.to_str().unwrap(), "--env", "production"]);
    assert_eq!(ran.code, 0, "{ran:?}");
    let run = sb.last_run();
    assert_eq!(run.record["status"], "succeeded");
    assert_eq!(run.record["environment"], "production");
    assert_eq!(run.output("greet", "message"), "hi from production");
    assert_eq!(
        run.output("answer", "message"),
        "greet said: hi from production"
    );
    // The plugin wrote into its own work dir, which stays in the run dir.
    let written = std::fs::read_to_string(run.dir.join("stages/answer/message.txt")).unwrap();
    assert_eq!(written.trim(), "greet said: hi from production");
    // outputs.json has both stages; the logs show the real exec.
    let outputs: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.dir.join("outputs.json")).unwrap())
            .unwrap();
    assert_eq!(
        outputs["answer"]["message"],
        "greet said: hi from production"
    );
    assert!(
        run.log("greet").contains("$ echo 'hi from production'"),
        "{}",
        run.log("greet")
    );
    // Every exec is audited with argv, cwd and exit status.
    let execs: Vec<_> = run
        .audit_of("greet")
        .into_iter()
        .filter(|e| e["capability"] == "exec")
        .collect();
    assert_eq!(execs.len(), 1, "{:#?}", run.audit);
    assert_eq!(
        execs[0]["detail"]["args"],
        serde_json::json!(["hi from production"])
    );
    assert_eq!(
        execs[0]["detail"]["cwd"],
        run.dir.join("stages/greet").to_str().unwrap()
    );
    assert!(
        execs[0]["detail"]["path"]
            .as_str()
            .unwrap()
            .starts_with('/')
    );
    let exit = run
        .audit_of("greet")
        .into_iter()
        .find(|e| e["capability"] == "exec-exit")
        .expect("exit recorded");
    assert_eq!(exit["detail"]["status"]["code"], 0);
}

#[test]
fn independent_stages_run_at_the_same_time() {
    let sb = Sandbox::new();
    let stage = |name: &str| {
        adversary_stage(
            name,
            r#"{ action = "exec", program = "sleep", args = ["1"] }"#,
            "",
        )
    };
    let pipeline = sb.pipeline(&format!(
        "[pipeline]\nname = \"parallel\"\n[plugins.adversary]\npath = \"{{adversary}}\"\n{}{}",
        stage("left"),
        stage("right")
    ));
    let ran = sb.capstan(&["run", pipeline.to_str().unwrap()]);
    assert_eq!(ran.code, 0, "{ran:?}");
    let run = sb.last_run();
    let ms = |stage: &str, key: &str| run.output(stage, key).as_u64().unwrap();
    // Each slept a full second; the two intervals overlap.
    assert!(ms("left", "ended_ms") - ms("left", "started_ms") >= 1000);
    assert!(
        ms("left", "started_ms") < ms("right", "ended_ms")
            && ms("right", "started_ms") < ms("left", "ended_ms"),
        "{:#}",
        run.record
    );
}

#[test]
fn a_failed_stage_skips_its_dependents_and_the_run_fails() {
    let sb = Sandbox::new();
    let pipeline = sb.pipeline(&format!(
        "[pipeline]\nname = \"fails\"\n[plugins.adversary]\npath = \"{{adversary}}\"\n{}{}{}",
        adversary_stage("boom", r#"{ action = "panic" }"#, ""),
        adversary_stage("after", r#"{ action = "context" }"#, "needs = [\"boom\"]"),
        adversary_stage("independent", r#"{ action = "context" }"#, ""),
    ));
    let ran = sb.capstan(&["run", pipeline.to_str().unwrap()]);
    assert_eq!(ran.code, 1, "{ran:?}");
    let run = sb.last_run();
    assert_eq!(run.record["status"], "failed");
    assert_eq!(run.status("boom"), "failed");
    assert!(
        run.reason("boom").contains("adversary panicked on purpose"),
        "{}",
        run.reason("boom")
    );
    assert_eq!(run.status("after"), "skipped");
    assert_eq!(run.reason("after"), "needs `boom`, which failed");
    assert_eq!(run.status("independent"), "succeeded");
    assert!(ran.stderr.contains("✗ boom"), "{ran:?}");
}

#[test]
fn the_stage_context_carries_run_environment_and_upstream() {
    let sb = Sandbox::new();
    let pipeline = sb.pipeline(&format!(
        "[pipeline]\nname = \"ctx\"\nenvironments = [\"staging\"]\n[plugins.adversary]\npath = \"{{adversary}}\"\n{}{}",
        adversary_stage("first", r#"{ action = "context", n = 3 }"#, ""),
        adversary_stage(
            "second",
            r#"{ action = "context", from_first = "${stages.first.outputs.stage}", id = "${run.id}", home = "${env.GRANTED_VAR}" }"#,
            "needs = [\"first\"]"
        ),
    ));
    let ran = sb.capstan(&["run", pipeline.to_str().unwrap(), "--json", "-q"]);
    assert_eq!(ran.code, 0, "{ran:?}");
    let record: serde_json::Value =
        serde_json::from_str(&ran.stdout).expect("--json prints the run record");
    let run = sb.last_run();
    assert_eq!(record["run_id"], run.record["run_id"]);
    let config = run.output("second", "config");
    assert_eq!(config["from_first"], "first");
    assert_eq!(config["id"], run.record["run_id"]);
    assert_eq!(config["home"], "granted-value");
    assert_eq!(run.output("second", "environment"), "staging");
    assert_eq!(
        run.output("second", "upstream")["first"]["outputs"]["stage"],
        "first"
    );
    assert_eq!(run.output("first", "config")["n"], 3);
}

#[test]
fn only_runs_a_stage_and_what_it_needs_and_dry_run_runs_nothing() {
    let sb = Sandbox::new();
    let pipeline = sb.pipeline(HELLO);
    let path = pipeline.to_str().unwrap();
    let ran = sb.capstan(&["run", path, "--dry-run"]);
    assert_eq!(ran.code, 0, "{ran:?}");
    assert!(
        ran.stdout.contains("run  greet") && ran.stdout.contains("run  answer"),
        "{ran:?}"
    );
    assert!(
        !sb.path().join(".capstan/runs").exists(),
        "a dry run creates no run"
    );

    let ran = sb.capstan(&["run", path, "--only", "greet"]);
    assert_eq!(ran.code, 0, "{ran:?}");
    let run = sb.last_run();
    assert_eq!(run.status("greet"), "succeeded");
    assert_eq!(run.status("answer"), "skipped");

    let ran = sb.capstan(&["run", path, "--only", "nope"]);
    assert_eq!(ran.code, 2, "{ran:?}");
    assert!(
        ran.stderr.contains("--only `nope` is not a stage"),
        "{ran:?}"
    );
    let ran = sb.capstan(&["run", path, "--env", "qa"]);
    assert_eq!(ran.code, 2, "{ran:?}");
    assert!(
        ran.stderr
            .contains("environment `qa` is not one of dev, production"),
        "{ran:?}"
    );
}

#[test]
fn the_compiled_cache_is_used_on_the_second_run() {
    let sb = Sandbox::new();
    let pipeline = sb.pipeline(HELLO);
    let path = pipeline.to_str().unwrap();
    assert_eq!(sb.capstan(&["run", path, "-q"]).code, 0);
    let cache = sb.user_cache().join("components");
    let entries: Vec<_> = std::fs::read_dir(&cache)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "cwasm"))
        .collect();
    assert_eq!(
        entries.len(),
        1,
        "one compiled entry for the one plugin: {entries:?}"
    );
    // Its description is kept beside it, and a forged one is not believed.
    let info = entries[0].with_extension("info");
    let kept = std::fs::read(&info).expect("the plugin's description is kept");
    let forged = String::from_utf8_lossy(&kept).replace("\"hello\"", "\"forged\"");
    assert_ne!(forged.as_bytes(), kept.as_slice());
    std::fs::write(&info, forged).unwrap();
    let before = std::fs::metadata(&entries[0]).unwrap().modified().unwrap();
    assert_eq!(sb.capstan(&["run", path, "-q"]).code, 0);
    assert_eq!(
        std::fs::metadata(&entries[0]).unwrap().modified().unwrap(),
        before,
        "the second run reused the compiled entry"
    );
    assert_eq!(sb.last_run().record["plugins"][0]["cache"], "hit");
    assert_eq!(
        std::fs::read(&info).unwrap(),
        kept,
        "the forged description was not believed: the plugin described itself again"
    );
    // A corrupt cache entry is recompiled, not trusted.
    std::fs::write(&entries[0], b"garbage").unwrap();
    assert_eq!(sb.capstan(&["run", path, "-q"]).code, 0);
    assert_ne!(std::fs::read(&entries[0]).unwrap(), b"garbage");
}

/// The run store lives where `--store` or `CAPSTAN_STORE` says, and what a
/// run records there matches its run directory.
#[test]
fn the_run_store_can_live_elsewhere_and_matches_the_run_dir() {
    let sb = Sandbox::new();
    let pipeline = sb.pipeline(HELLO);
    let store = sb.path().join("elsewhere/runs.db");
    let ran = sb
        .command(&["run", pipeline.to_str().unwrap(), "-q"])
        .env("CAPSTAN_STORE", &store)
        .output()
        .unwrap();
    assert!(ran.status.success(), "{ran:?}");
    assert!(store.exists() && !sb.path().join(".capstan/capstan.db").exists());
    let run = sb.last_run();
    let id = run.record["run_id"].as_str().unwrap();
    let shown = sb.json(&["show", id, "--json", "--store", store.to_str().unwrap()]);
    assert_eq!(shown["run"]["status"], "succeeded");
    assert_eq!(shown["run"]["verified"], true, "its sink stage succeeded");
    for stage in ["greet", "answer"] {
        let row = shown["stages"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"] == stage)
            .unwrap();
        assert_eq!(row["outputs"], run.stage(stage)["outputs"], "{stage}");
        assert_eq!(row["attempt"], 1);
    }
    let not_there = sb.capstan(&["show", id]);
    assert_eq!(
        not_there.code, 2,
        "the default store has no such run: {not_there:?}"
    );
    assert!(not_there.stderr.contains("no run"), "{not_there:?}");
}

/// A PostgreSQL server as the run store (`--store` or `CAPSTAN_STORE` a
/// URL): runs are recorded there, not in a file; the password may come from
/// `PGPASSWORD`; no output ever shows it; a read command needs no state dir.
#[test]
fn the_run_store_can_be_a_postgresql_server_and_its_password_is_never_shown() {
    let sb = Sandbox::new();
    let pipeline = sb.pipeline(HELLO);
    let cluster = capstan_test_artifacts::postgres::shared();
    let password = cluster.password();
    let url = cluster.database();
    let without_password = url.replace(&format!(":{password}@"), "@");
    assert_ne!(url, without_password);
    let ran = sb
        .command(&["run", pipeline.to_str().unwrap()])
        .env("CAPSTAN_STORE", &without_password)
        .env("PGPASSWORD", password)
        .output()
        .unwrap();
    let ran = crate::harness::Ran::from(ran);
    assert_eq!(ran.code, 0, "{ran:?}");
    assert!(!format!("{ran:?}").contains(password), "{ran:?}");
    assert!(!sb.path().join(".capstan/capstan.db").exists());
    let id = sb.last_run().record["run_id"].as_str().unwrap().to_string();

    // Read from a directory with no state at all: the store is the server.
    let elsewhere = tempfile::tempdir().unwrap();
    let shown = sb
        .command_in(
            elsewhere.path(),
            &["show", "latest", "--json", "--store", &url],
        )
        .output()
        .unwrap();
    let shown = crate::harness::Ran::from(shown);
    assert_eq!(shown.code, 0, "{shown:?}");
    let record: serde_json::Value = serde_json::from_str(&shown.stdout).unwrap();
    assert_eq!(
        (
            record["run"]["id"].as_str(),
            record["run"]["status"].as_str()
        ),
        (Some(id.as_str()), Some("succeeded"))
    );

    let wrong = url.replace(password, "not-the-password");
    let refused = sb.capstan(&["runs", "--store", &wrong]);
    assert_eq!(refused.code, 10, "{refused:?}");
    assert!(
        refused.stderr.starts_with(&format!(
            "error: cannot connect to the run store {}",
            url.replace(password, "***")
        )) && refused.stderr.contains("password authentication failed"),
        "{refused:?}"
    );
    assert!(
        !refused.stderr.contains("not-the-password") && !refused.stderr.contains(password),
        "{refused:?}"
    );
    // `--help` shows where $CAPSTAN_STORE comes from, never its value.
    let help = sb
        .command(&["runs", "--help"])
        .env("CAPSTAN_STORE", &url)
        .output()
        .unwrap();
    let help = crate::harness::Ran::from(help);
    assert!(
        help.stdout.contains("CAPSTAN_STORE") && !help.stdout.contains(password),
        "{help:?}"
    );
}
