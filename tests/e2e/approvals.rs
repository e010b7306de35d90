//! Approving a paused production run from another process, resuming it,
//! re-planning, rejecting: with the golden-image example and real tools.

use serde_json::Value;

use crate::golden_image::{example, run};
use crate::harness::{Run, Sandbox};

/// The latest attempt of `stage` in `capstan show --json`.
fn stage<'a>(show: &'a Value, name: &str) -> &'a Value {
    show["stages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == name)
        .unwrap_or_else(|| panic!("no stage {name}: {show:#}"))
}

/// `terraform apply` executions recorded in the run's audit log.
pub fn applies(run: &Run) -> usize {
    run.audit
        .iter()
        .filter(|e| e["capability"] == "exec" && e["detail"]["args"][0] == "apply")
        .count()
}

#[test]
fn a_paused_production_run_is_approved_from_another_process_and_resumed() {
    let sb = Sandbox::new();
    let pipeline = example(&sb, |t| t);
    let (code, stderr, _) = run(&sb, &pipeline, &["--env", "production", "--as", "alice"]);
    assert_eq!(code, 5, "{stderr}");
    let id = sb.newest_run_id();
    assert!(
        stderr.contains(&format!("capstan approve {id}")),
        "{stderr}"
    );
    let paused = sb.show(&id);
    assert_eq!(paused["run"]["status"], "awaiting-approval");
    let digest = stage(&paused, "plan")["outputs"]["plan_digest"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(paused["pending_approval"]["digest"], digest.as_str());
    let events = sb.json(&["audit", "--run", &id, "--stage", "approve", "--json"]);
    let ends: Vec<&Value> = events
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["capability"] == "stage" && e["detail"]["event"] != "start")
        .map(|e| &e["detail"]["event"])
        .collect();
    assert_eq!(ends, [&Value::from("awaiting-approval")], "{events:#}");

    // The environment stays locked while the run waits: its plan must be the one applied.
    let second = sb.capstan(&[
        "run",
        pipeline.to_str().unwrap(),
        "--env",
        "production",
        "-q",
    ]);
    assert_eq!(second.code, 6, "{second:?}");
    assert!(
        second.stderr.contains(&id) && second.stderr.contains("waits for approval"),
        "{second:?}"
    );

    // Nobody approves their own run in production; an approver must exist.
    let own = sb.capstan(&["approve", &id, "--as", "alice"]);
    assert_eq!(own.code, 7, "{own:?}");
    assert!(own.stderr.contains("alice started this run"), "{own:?}");
    let early = sb.capstan(&["resume", &id, "-q"]);
    assert_eq!(
        early.code, 5,
        "resuming without an approval pauses again: {early:?}"
    );

    let ok = sb.capstan(&[
        "approve",
        &id,
        "--as",
        "bob",
        "--digest",
        &digest[..16],
        "--comment",
        "plan reviewed",
    ]);
    assert_eq!(ok.code, 0, "{ok:?}");
    let resumed = sb.capstan(&["resume", &id, "-q"]);
    assert_eq!(resumed.code, 0, "{resumed:?}");

    let done = sb.show(&id);
    assert_eq!(done["run"]["status"], "succeeded");
    assert_eq!(
        stage(&done, "apply")["outputs"]["applied_digest"],
        digest.as_str(),
        "exactly the approved plan"
    );
    assert_eq!(
        stage(&done, "build")["attempt"],
        1,
        "finished stages do not run again"
    );
    assert_eq!(stage(&done, "plan")["attempt"], 1);
    let bob = done["approvals"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["decision"] == "approved" && a["by"] == "bob")
        .expect("bob's approval recorded");
    assert_eq!(
        (bob["digest"].as_str(), bob["comment"].as_str()),
        (Some(digest.as_str()), Some("plan reviewed"))
    );
    let record = Run::read(std::path::Path::new(
        done["run"]["run_dir"].as_str().unwrap(),
    ));
    assert_eq!(applies(&record), 1);
    // Paused, approved from another process, resumed: the audit chain that
    // three processes wrote holds, and the plan applied is the one approved.
    let verified = sb.capstan(&["verify", &id]);
    assert_eq!(verified.code, 0, "{verified:?}");
    assert!(
        verified.stdout.contains(&format!(
            "stage `apply` applied {} approved by bob",
            &digest[..12]
        )),
        "{verified:?}"
    );
    assert!(
        sb.path()
            .join("gi/work/targets/production/web-1/var/lib/capstan/deployed.json")
            .exists()
    );

    // History: the stage logs, and the run listed under its environment only.
    let log = sb.capstan(&["logs", &id, "apply"]);
    assert_eq!(log.code, 0, "{log:?}");
    assert!(log.stdout.contains("$ terraform apply"), "{log:?}");
    let all = sb.capstan(&["logs", &id]);
    assert!(
        all.stdout.contains("── plan ──") && all.stdout.contains("── smoke ──"),
        "{all:?}"
    );
    assert_eq!(sb.capstan(&["logs", &id, "nosuch"]).code, 2);
    assert_eq!(
        sb.json(&["runs", "--env", "production", "--json"])
            .as_array()
            .unwrap()
            .len(),
        1
    );
    assert_eq!(
        sb.json(&["runs", "--env", "dev", "--json"]),
        serde_json::json!([])
    );
}

#[test]
fn an_approval_is_for_one_plan_and_a_rejection_ends_the_run() {
    let sb = Sandbox::new();
    let pipeline = example(&sb, |t| t);
    let (code, stderr, _) = run(&sb, &pipeline, &["--env", "production", "--as", "alice"]);
    assert_eq!(code, 5, "{stderr}");
    let id = sb.newest_run_id();
    let first = sb.show(&id)["pending_approval"]["digest"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(sb.capstan(&["approve", &id, "--as", "bob"]).code, 0);

    // The infrastructure changes and the run is re-planned: bob's approval
    // was for the old plan and no longer counts.
    let vars = sb.path().join("gi/infrastructure/variables.tf");
    let text = std::fs::read_to_string(&vars).unwrap();
    std::fs::write(
        &vars,
        text.replacen("default     = 2", "default     = 3", 1),
    )
    .unwrap();
    let replanned = sb.capstan(&["resume", &id, "--from", "plan", "-q"]);
    assert_eq!(replanned.code, 5, "{replanned:?}");
    assert!(replanned.stderr.contains("earlier plan"), "{replanned:?}");
    let second = sb.show(&id)["pending_approval"]["digest"]
        .as_str()
        .unwrap()
        .to_string();
    assert_ne!(first, second, "the new plan has a new digest");
    let stale = sb.capstan(&["approve", &id, "--as", "carol", "--digest", &first]);
    assert_eq!(
        stale.code, 7,
        "an approval of the old digest is refused: {stale:?}"
    );
    assert!(stale.stderr.contains(&second), "{stale:?}");

    // Rejected: the run ends, the environment is free, it cannot be resumed.
    let rejected = sb.capstan(&[
        "reject",
        &id,
        "--as",
        "carol",
        "--comment",
        "three hosts is too many",
    ]);
    assert_eq!(rejected.code, 0, "{rejected:?}");
    let shown = sb.show(&id);
    assert_eq!(shown["run"]["status"], "rejected");
    assert!(
        stage(&shown, "approve")["message"]
            .as_str()
            .unwrap()
            .contains("rejected by carol")
    );
    assert_eq!(sb.capstan(&["resume", &id]).code, 7);
    assert!(
        !sb.path().join("gi/work/targets/production").exists(),
        "nothing was applied"
    );
    let next = sb.capstan(&[
        "run",
        pipeline.to_str().unwrap(),
        "--env",
        "production",
        "-q",
        "--as",
        "alice",
    ]);
    assert_eq!(next.code, 5, "the lock was released: {next:?}");
}

/// Two of three listed approvers, each counted once; others are refused.
#[test]
fn two_of_three_listed_approvers_are_needed() {
    let sb = Sandbox::new();
    let pipeline = example(&sb, |t| {
        t.replace(
            r#"production = { mode = "manual", required = 1 }"#,
            r#"production = { mode = "manual", approvers = ["bob", "carol", "dave"], required = 2 }"#,
        )
    });
    let (code, stderr, _) = run(&sb, &pipeline, &["--env", "production", "--as", "alice"]);
    assert_eq!(code, 5, "{stderr}");
    let id = sb.newest_run_id();
    let pending = sb.show(&id)["pending_approval"].clone();
    assert_eq!(
        (
            pending["required"].as_u64(),
            pending["approvers"].as_array().map(Vec::len)
        ),
        (Some(2), Some(3))
    );

    let bob = sb.capstan(&["approve", &id, "--as", "bob"]);
    assert_eq!(bob.code, 0, "{bob:?}");
    assert!(
        bob.stderr.contains("1 of 2 approvals") && bob.stderr.contains("1 more needed"),
        "{bob:?}"
    );
    let twice = sb.capstan(&["approve", &id, "--as", "bob"]);
    assert_eq!(twice.code, 7, "{twice:?}");
    assert!(twice.stderr.contains("already approved"), "{twice:?}");
    let outsider = sb.capstan(&["approve", &id, "--as", "eve"]);
    assert_eq!(outsider.code, 7, "{outsider:?}");
    assert!(outsider.stderr.contains("not an approver"), "{outsider:?}");
    let half = sb.capstan(&["resume", &id, "-q"]);
    assert_eq!(half.code, 5, "one approval of two is not enough: {half:?}");
    assert!(
        half.stderr.contains("1 of 2 approvals so far (by bob)"),
        "{half:?}"
    );

    assert_eq!(sb.capstan(&["approve", &id, "--as", "carol"]).code, 0);
    let done = sb.capstan(&["resume", &id, "-q"]);
    assert_eq!(done.code, 0, "{done:?}");
    let record = Run::read(std::path::Path::new(
        sb.show(&id)["run"]["run_dir"].as_str().unwrap(),
    ));
    assert_eq!(
        record.output("approve", "approvers"),
        serde_json::json!(["bob", "carol"])
    );
    assert_eq!(applies(&record), 1);
}

/// An emergency override approves alone, needs a reason, and is recorded
/// with it.
#[test]
fn an_emergency_override_needs_a_reason_and_is_recorded() {
    let sb = Sandbox::new();
    let pipeline = example(&sb, |t| t);
    assert_eq!(
        run(&sb, &pipeline, &["--env", "production", "--as", "alice"]).0,
        5
    );
    let id = sb.newest_run_id();
    let blank = sb.capstan(&["approve", &id, "--as", "oncall", "--emergency", " "]);
    assert_eq!(blank.code, 7, "{blank:?}");
    assert!(blank.stderr.contains("needs a reason"), "{blank:?}");
    let ok = sb.capstan(&[
        "approve",
        &id,
        "--as",
        "oncall",
        "--emergency",
        "INC-42: site down",
    ]);
    assert_eq!(ok.code, 0, "{ok:?}");
    assert!(ok.stderr.contains("EMERGENCY OVERRIDE"), "{ok:?}");
    assert_eq!(sb.capstan(&["resume", &id, "-q"]).code, 0);
    let approvals = sb.show(&id)["approvals"].clone();
    let manual: Vec<&Value> = approvals
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["policy"] != "automatic")
        .collect();
    assert_eq!(manual.len(), 1, "{approvals:#}");
    assert_eq!(
        (
            manual[0]["by"].as_str(),
            manual[0]["policy"].as_str(),
            manual[0]["override_reason"].as_str()
        ),
        (
            Some("oncall"),
            Some("emergency-override"),
            Some("INC-42: site down")
        )
    );
}

/// A pipeline of one approval stage, with the real approval plugin: `with`
/// is the stage's config (TOML inline table body).
fn approval_only(sb: &Sandbox, with: &str) -> std::path::PathBuf {
    sb.pipeline(&format!(
        "[pipeline]\nname = \"gate\"\nenvironments = [\"dev\", \"production\"]\nprotected = [\"production\"]\n\
         [plugins.approval]\npath = {:?}\n\
         [stages.approve]\nplugin = \"approval\"\nwith = {{ digest = \"d1g3st0000000000\", {with} }}\n\
         [stages.approve.grants]\napproval = true\n",
        capstan_test_artifacts::APPROVAL
    ))
}

/// The audit record of the approval decision of the newest run.
fn decision(sb: &Sandbox) -> Value {
    let dir = sb.show(&sb.newest_run_id())["run"]["run_dir"]
        .as_str()
        .unwrap()
        .to_string();
    Run::read(std::path::Path::new(&dir))
        .audit_of("approve")
        .into_iter()
        .find(|e| e["capability"] == "approval")
        .expect("approval recorded")
        .clone()
}

/// In a protected environment the host asks humans, whatever the plugin's
/// `with` says (auto, or an override naming someone); elsewhere a plugin
/// override is recorded as the operator's, never under the name it gives;
/// the operator's own `capstan approve --emergency` still works.
#[test]
fn a_protected_environment_asks_humans_whatever_the_plugin_asks() {
    let sb = Sandbox::new();
    let run = |pipeline: &std::path::Path, env: &str| {
        sb.capstan(&[
            "run",
            pipeline.to_str().unwrap(),
            "-q",
            "--env",
            env,
            "--as",
            "alice",
        ])
    };

    let auto = approval_only(&sb, r#"policy = { dev = "auto", production = "auto" }"#);
    assert_eq!(run(&auto, "dev").code, 0, "dev is not protected");
    assert_eq!(decision(&sb)["detail"]["policy"], "automatic");
    let paused = run(&auto, "production");
    assert_eq!(paused.code, 5, "{paused:?}");
    let d = decision(&sb);
    assert_eq!(
        (&d["detail"]["decision"], &d["detail"]["requested_policy"]),
        (&Value::from("pending"), &Value::from("automatic")),
        "{d:#}"
    );
    assert!(
        d["detail"]["refused"]
            .as_str()
            .unwrap()
            .contains("environment `production` is protected"),
        "{d:#}"
    );
    let id = sb.newest_run_id();
    assert_eq!(sb.capstan(&["reject", &id, "--as", "bob"]).code, 0);

    let claimed = approval_only(
        &sb,
        r#"override = { by = "security-lead", reason = "INC-7" }"#,
    );
    let paused = run(&claimed, "production");
    assert_eq!(paused.code, 5, "{paused:?}");
    let d = decision(&sb);
    assert_eq!(
        (
            &d["detail"]["decision"],
            &d["detail"]["requested_policy"],
            &d["detail"]["claimed_by"]
        ),
        (
            &Value::from("pending"),
            &Value::from("emergency-override"),
            &Value::from("security-lead")
        ),
        "{d:#}"
    );
    // The operator's own override is honoured in a protected environment.
    let id = sb.newest_run_id();
    let ok = sb.capstan(&["approve", &id, "--as", "oncall", "--emergency", "INC-7"]);
    assert_eq!(ok.code, 0, "{ok:?}");
    assert_eq!(sb.capstan(&["resume", &id, "-q"]).code, 0);

    // Not protected: the plugin's override approves, as the operator's.
    assert_eq!(run(&claimed, "dev").code, 0);
    let d = decision(&sb);
    assert_eq!(
        (
            &d["detail"]["policy"],
            &d["detail"]["by"],
            &d["detail"]["claimed_by"]
        ),
        (
            &Value::from("emergency-override"),
            &Value::from("alice"),
            &Value::from("security-lead")
        ),
        "{d:#}"
    );
    let approvals = sb.show(&sb.newest_run_id())["approvals"].clone();
    assert_eq!(approvals[0]["by"], "alice", "{approvals:#}");
}

/// On a terminal, an override the plugin asks for is the operator's to
/// confirm: confirmed, it is recorded under the operator; declined, humans
/// are asked as usual (here nobody answers, so the run waits).
#[test]
fn the_operator_confirms_a_plugin_override_on_a_terminal() {
    let sb = Sandbox::new();
    let claimed = approval_only(
        &sb,
        r#"override = { by = "security-lead", reason = "INC-9" }"#,
    );
    let line = format!(
        "{} run {} --env dev --as alice -q",
        env!("CARGO_BIN_EXE_capstan"),
        claimed.display()
    );
    let out = sb.on_a_terminal(&line, b"yes\n");
    let screen = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{screen}");
    assert!(screen.contains("emergency override asked"), "{screen}");
    let d = decision(&sb);
    assert_eq!(
        (
            &d["detail"]["by"],
            &d["detail"]["claimed_by"],
            &d["detail"]["confirmed_at_terminal"]
        ),
        (
            &Value::from("alice"),
            &Value::from("security-lead"),
            &Value::from(true)
        ),
        "{d:#}"
    );

    let out = sb.on_a_terminal(&line, b"no\n\n");
    let screen = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(5), "{screen}");
    let d = decision(&sb);
    assert_eq!(d["detail"]["decision"], "pending", "{d:#}");
    assert!(
        d["detail"]["refused"]
            .as_str()
            .is_some_and(|r| r.contains("declined")),
        "{d:#}"
    );
}

/// Nobody approves, rejects or starts a run as an unknown someone: without
/// `--as`, an actor variable or an account name (a uid with no passwd
/// entry), the command is refused before it reads or records anything;
/// recorded manual approvals are shown as claims.
#[test]
fn an_unknown_identity_is_refused_and_names_are_shown_unverified() {
    use std::os::unix::process::CommandExt;
    let sb = Sandbox::new();
    for args in [
        &["approve", "latest"][..],
        &["reject", "latest"],
        &["approve", "latest", "--as", "  "],
    ] {
        let mut cmd = sb.command(args);
        for var in [
            "USER",
            "LOGNAME",
            "CAPSTAN_ACTOR",
            "GITHUB_ACTOR",
            "GITLAB_USER_LOGIN",
        ] {
            cmd.env_remove(var);
        }
        // A uid no account has: not even the system can name it (and it
        // may not enter the sandbox's directory: it needs nothing there).
        cmd.current_dir("/");
        let ran: crate::harness::Ran = cmd.uid(54_321).output().unwrap().into();
        assert_eq!(ran.code, 2, "{args:?}: {ran:?}");
        assert!(ran.stderr.contains("cannot tell who you are"), "{ran:?}");
        assert!(!ran.stderr.contains("unknown"), "{ran:?}");
        assert!(
            !sb.path().join(".capstan").exists(),
            "{args:?} created state"
        );
    }

    // A manual approval is a name someone gave: `show` says so.
    let pipeline = approval_only(&sb, r#"policy = { dev = "manual" }"#);
    let first = sb.capstan(&["run", pipeline.to_str().unwrap(), "-q", "--as", "carol"]);
    assert_eq!(first.code, 5, "{first:?}");
    let approved = sb.capstan(&["approve", "latest", "--as", "dave"]);
    assert_eq!(approved.code, 0, "{approved:?}");
    let show = sb.capstan(&["show", "latest"]);
    assert!(
        show.stdout.contains("by dave (identity not verified)"),
        "{show:?}"
    );
}
