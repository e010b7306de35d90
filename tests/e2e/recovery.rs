//! A host killed with SIGKILL in any stage, then resumed: every run
//! completes and Terraform never applies twice. Environment locks: runs on
//! one environment never overlap; a dead run's lock is released.

use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::approvals::applies;
use crate::golden_image::example;
use crate::harness::{Run, Sandbox, adversary_stage};

/// Change what the image bakes, so that the next run builds a new image and
/// its plan has changes to apply.
pub fn new_image(sb: &Sandbox, n: usize) {
    let template = sb.path().join("gi/packer/golden-image.json");
    let text = std::fs::read_to_string(&template).unwrap();
    let from = text.find("\"base_version\": \"").unwrap() + "\"base_version\": \"".len();
    let to = from + text[from..].find('"').unwrap();
    std::fs::write(
        &template,
        format!("{}debian-12.{n}{}", &text[..from], &text[to..]),
    )
    .unwrap();
}

pub fn serial(sb: &Sandbox, env: &str) -> u64 {
    let state = sb
        .path()
        .join(format!("gi/work/state/terraform-{env}.tfstate"));
    std::fs::read_to_string(state)
        .ok()
        .and_then(|t| serde_json::from_str::<Value>(&t).ok())
        .and_then(|v| v["serial"].as_u64())
        .unwrap_or(0)
}

fn latest<'a>(show: &'a Value, stage: &str) -> &'a Value {
    show["stages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == stage)
        .unwrap()
}

/// The run was killed: the store says interrupted; resume it and check it
/// completed with `stage` run twice and Terraform applied once.
fn resume_and_check(sb: &Sandbox, env: &str, stage: &str, serial_before: u64) -> (Value, String) {
    let id = sb.newest_run_id();
    let killed = sb.show(&id);
    assert_eq!(
        killed["run"]["status"], "interrupted",
        "{stage}: {killed:#}"
    );
    assert_eq!(latest(&killed, stage)["status"], "interrupted", "{stage}");
    let resumed = sb.capstan(&["resume", &id, "-q"]);
    assert_eq!(resumed.code, 0, "{stage}: {resumed:?}");
    let done = sb.show(&id);
    assert_eq!(done["run"]["status"], "succeeded");
    assert_eq!(latest(&done, stage)["attempt"], 2, "{stage} ran again");
    // The killed host's audit chain goes on in the resumed one's.
    let verified = sb.capstan(&["verify", &id]);
    assert_eq!(verified.code, 0, "{stage}: {verified:?}");
    let run = Run::read(Path::new(done["run"]["run_dir"].as_str().unwrap()));
    assert_eq!(
        applies(&run),
        1,
        "{stage}: terraform apply ran once in run {id}"
    );
    assert_eq!(
        serial(sb, env),
        serial_before + 1,
        "{stage}: one apply changed the state once"
    );
    (done, resumed.stderr)
}

/// Run with `CAPSTAN_FAULT=<point>:<stage>`: the host SIGKILLs itself there.
fn killed_at(sb: &Sandbox, pipeline: &Path, env: &str, point: &str, stage: &str) {
    let out = sb
        .command(&["run", pipeline.to_str().unwrap(), "-q", "--env", env])
        .env("CAPSTAN_FAULT", format!("{point}:{stage}"))
        .output()
        .unwrap();
    assert_eq!(
        out.status.signal(),
        Some(9),
        "{point}:{stage}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn killed_before_build_plan_or_approval_or_during_ansible_then_resumed() {
    let sb = Sandbox::new();
    let pipeline = example(&sb, |t| t);
    for (n, stage) in ["build", "plan", "approve"].into_iter().enumerate() {
        new_image(&sb, n);
        let before = serial(&sb, "dev");
        killed_at(&sb, &pipeline, "dev", "stage-start", stage);
        resume_and_check(&sb, "dev", stage, before);
    }
    // From outside, at a moment the test does not choose exactly: while
    // ansible-playbook configures the hosts.
    new_image(&sb, 9);
    let before = serial(&sb, "dev");
    let runs = sb.path().join(".capstan/runs");
    let earlier: Vec<_> = std::fs::read_dir(&runs)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    let mut host = sb
        .command(&["run", pipeline.to_str().unwrap(), "-q", "--env", "dev"])
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    let store = sb.store();
    loop {
        let this_run = std::fs::read_dir(&runs)
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .find(|p| !earlier.contains(p));
        // Once ansible-playbook runs (a few seconds): the host dies mid-configure.
        // Its start is looked for in the store, which a resume reads (the host
        // writes it there just after the run's audit.jsonl).
        let id = this_run.and_then(|d| Some(d.file_name()?.to_str()?.to_string()));
        let events = id.and_then(|id| store.audit_events(&id).ok());
        if events.is_some_and(|events| {
            events.iter().any(|e| {
                e.started_program()
                    .is_some_and(|(program, _)| program == "ansible-playbook")
            })
        }) {
            break;
        }
        assert!(Instant::now() < deadline, "ansible-playbook never started");
        assert!(
            host.try_wait().unwrap().is_none(),
            "the run ended before configure"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    host.kill().unwrap(); // SIGKILL
    assert_eq!(host.wait().unwrap().signal(), Some(9));
    // Ansible outlived the host: the resumed stage waits for it
    // rather than configure the hosts twice at once.
    let (_, resumed) = resume_and_check(&sb, "dev", "configure", before);
    assert!(
        resumed.contains("waiting for `ansible-playbook`")
            && resumed.contains("interrupted attempt of stage `configure`"),
        "{resumed}"
    );
}

#[test]
fn killed_before_during_or_after_apply_or_before_smoke_then_resumed() {
    let sb = Sandbox::new();
    let pipeline = example(&sb, |t| t);
    for (n, (point, stage)) in [
        ("stage-start", "apply"),
        ("stage-end", "apply"),
        ("stage-start", "smoke"),
    ]
    .into_iter()
    .enumerate()
    {
        new_image(&sb, n);
        let before = serial(&sb, "staging");
        killed_at(&sb, &pipeline, "staging", point, stage);
        let (done, _) = resume_and_check(&sb, "staging", stage, before);
        // After the apply finished but before it was recorded, the second
        // attempt finds the state already moved on and does not apply again.
        let again = latest(&done, "apply")["outputs"]["applied_by_earlier_attempt"].clone();
        assert_eq!(
            again,
            Value::Bool(point == "stage-end" && stage == "apply"),
            "{point}:{stage}"
        );
    }
    // Killed just after `terraform apply` started: Terraform outlives the
    // host (its output goes to files, not to a pipe that would break) and
    // finishes; the next attempt waits for its state lock, finds the state
    // moved on, and does not apply again.
    new_image(&sb, 7);
    let before = serial(&sb, "staging");
    killed_at(&sb, &pipeline, "staging", "exec-start", "apply/apply");
    let (done, _) = resume_and_check(&sb, "staging", "apply", before);
    assert_eq!(
        latest(&done, "apply")["outputs"]["applied_by_earlier_attempt"],
        Value::Bool(true)
    );
}

/// A pipeline whose one stage holds its run for `secs` seconds.
fn holding(sb: &Sandbox, secs: u32) -> std::path::PathBuf {
    let stage = adversary_stage(
        "hold",
        &format!(r#"{{ action = "exec", program = "sleep", args = ["{secs}"] }}"#),
        "",
    );
    sb.pipeline(&format!(
        "[pipeline]\nname = \"hold\"\nenvironments = [\"prod\"]\n[plugins.adversary]\npath = \"{{adversary}}\"\n{stage}"
    ))
}

fn wait_until_running(sb: &Sandbox) -> String {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        // Until the first run creates the store, `runs` says there is none.
        let ran = sb.capstan(&["runs", "--json"]);
        let runs: Value = if ran.code == 0 {
            serde_json::from_str(&ran.stdout).unwrap()
        } else {
            assert!(ran.stderr.contains("no run store"), "{ran:?}");
            Value::Array(Vec::new())
        };
        if let Some(run) = runs
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["status"] == "running")
        {
            return run["id"].as_str().unwrap().to_string();
        }
        assert!(Instant::now() < deadline, "no run started");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn time(v: &Value) -> jiff::Timestamp {
    v.as_str().unwrap().parse().unwrap()
}

#[test]
fn runs_on_one_environment_are_serialized_and_a_dead_runs_lock_is_released() {
    let sb = Sandbox::new();
    let pipeline = holding(&sb, 3);
    let p = pipeline.to_str().unwrap();
    let mut first = sb.command(&["run", p, "-q"]).spawn().unwrap();
    let a = wait_until_running(&sb);

    let follow = {
        let mut cmd = sb.command(&["logs", &a, "--follow"]);
        cmd.stdout(std::process::Stdio::piped());
        cmd.spawn().unwrap()
    };
    let refused = sb.capstan(&["run", p, "-q"]);
    assert_eq!(refused.code, 6, "{refused:?}");
    assert!(
        refused.stderr.contains(&format!("locked by run {a}")),
        "{refused:?}"
    );
    let waited = sb.capstan(&["run", p, "-q", "--wait", "60s"]);
    assert_eq!(waited.code, 0, "{waited:?}");
    assert!(first.wait().unwrap().success());
    let followed = follow.wait_with_output().unwrap();
    assert!(followed.status.success());
    let text = String::from_utf8_lossy(&followed.stdout);
    assert!(
        text.contains("[hold] ") && text.contains("sleep"),
        "logs --follow printed the stage log: {text}"
    );

    let runs = sb.json(&["runs", "--json"]);
    let (second, firstr) = (&runs[0], &runs[1]);
    assert_eq!(firstr["id"], a.as_str());
    assert!(
        time(&second["started"]) >= time(&firstr["ended"]),
        "the waiting run started after the first ended: {runs:#}"
    );

    // A run whose host is killed keeps its environment while the programs
    // it started still run (they outlive the host); then the next run may go.
    let mut dead = sb.command(&["run", p, "-q"]).spawn().unwrap();
    let d = wait_until_running(&sb);
    let deadline = Instant::now() + Duration::from_secs(60);
    while !sb
        .json(&["audit", "--run", &d, "--json"])
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["capability"] == "exec-started")
    {
        assert!(Instant::now() < deadline, "sleep never started");
        std::thread::sleep(Duration::from_millis(50));
    }
    dead.kill().unwrap();
    dead.wait().unwrap();
    let held = sb.capstan(&["run", p, "-q"]);
    assert_eq!(held.code, 6, "{held:?}");
    assert!(
        held.stderr.contains(&format!(
            "run {d} was interrupted (its host process is gone)"
        )) && held.stderr.contains("programs it started still run (pid "),
        "{held:?}"
    );
    let next = sb.capstan(&["run", p, "-q", "--wait", "60s"]);
    assert_eq!(next.code, 0, "{next:?}");
    assert!(
        next.stderr.contains(&format!(
            "took over the lock on `prod` from run {d}: its host process"
        )),
        "{next:?}"
    );
    assert_eq!(sb.show(&d)["run"]["status"], "interrupted");

    // Not to be resumed: cancelled, for the record, and final.
    let cancelled = sb.capstan(&["cancel", &d, "--as", "alice", "--reason", "superseded"]);
    assert_eq!(cancelled.code, 0, "{cancelled:?}");
    assert_eq!(sb.show(&d)["run"]["status"], "cancelled");
    assert_eq!(sb.capstan(&["resume", &d]).code, 7);
    assert_eq!(sb.capstan(&["cancel", &d]).code, 7);
    let events = sb.json(&["audit", "--run", &d, "--json"]);
    let last = events.as_array().unwrap().last().unwrap().clone();
    assert_eq!(
        (
            last["capability"].as_str(),
            last["detail"]["event"].as_str(),
            last["detail"]["by"].as_str()
        ),
        (Some("run"), Some("cancelled"), Some("alice"))
    );
    assert_eq!(sb.json(&["stats", "--json"])["runs"]["cancelled"], 1);
}
