//! Two hosts, one run store, one production environment, with the real
//! golden-image pipeline: a run paused at the gate on host a is approved
//! from host b; host a is killed in the middle of the apply it resumed, and
//! host b, once a's lease has run out, resumes the run: Terraform applies
//! once. (The hosts share this machine, so the run directory host a made is
//! where host b finds it, as on a shared volume.)

use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::time::Duration;

use crate::approvals::applies;
use crate::golden_image::example;
use crate::harness::{Ran, Run, Sandbox, eventually};
use crate::lost_host::{on_host, state_dir};
use crate::recovery::serial;

fn ran(mut cmd: std::process::Command) -> Ran {
    cmd.output().expect("run capstan").into()
}

#[test]
fn paused_on_one_host_approved_and_resumed_on_another_and_applied_once_after_a_kill() {
    let sb = Sandbox::new();
    let pipeline = example(&sb, |t| t);
    let p = pipeline.to_str().unwrap();

    let started = ran(on_host(
        &sb,
        "a",
        &["run", p, "--env", "production", "--as", "alice", "-q"],
    ));
    assert_eq!(started.code, 5, "paused at the gate: {started:?}");
    let id = std::fs::read_dir(state_dir(&sb, "a").join("runs"))
        .unwrap()
        .flatten()
        .next()
        .expect("host a's run dir")
        .file_name()
        .into_string()
        .unwrap();

    // Host b sees the run and its lock in the shared store.
    let listed = ran(on_host(&sb, "b", &["runs", "--env", "production"]));
    assert!(listed.stdout.contains(&id), "{listed:?}");
    let second = ran(on_host(&sb, "b", &["run", p, "--env", "production", "-q"]));
    assert_eq!(second.code, 6, "{second:?}");
    assert!(
        second.stderr.contains(&id) && second.stderr.contains("waits for approval"),
        "{second:?}"
    );
    let approved = ran(on_host(&sb, "b", &["approve", &id, "--as", "bob"]));
    assert_eq!(approved.code, 0, "{approved:?}");

    // Host a resumes, and dies once `terraform apply` has applied, before it
    // recorded that.
    let before = serial(&sb, "production");
    let killed = on_host(&sb, "a", &["resume", &id, "-q"])
        .env("CAPSTAN_FAULT", "stage-end:apply")
        .output()
        .unwrap();
    assert_eq!(
        killed.status.signal(),
        Some(9),
        "{}",
        String::from_utf8_lossy(&killed.stderr)
    );
    assert_eq!(serial(&sb, "production"), before + 1, "applied once");

    // Host b may resume it once host a's lease has run out.
    let resumed = eventually(Duration::from_secs(60), "host a's lease ends", || {
        let r = ran(on_host(&sb, "b", &["resume", &id, "-q"]));
        if r.code == 7 && r.stderr.contains("is running") {
            return None;
        }
        Some(r)
    });
    assert_eq!(resumed.code, 0, "{resumed:?}");
    assert!(
        resumed.stderr.contains("stopped renewing its lease")
            || resumed.stderr.contains("was interrupted"),
        "{resumed:?}"
    );
    let done: serde_json::Value =
        serde_json::from_str(&ran(on_host(&sb, "b", &["show", &id, "--json"])).stdout).unwrap();
    assert_eq!(done["run"]["status"], "succeeded", "{done:#}");
    assert_eq!(done["run"]["owner"]["host_id"], "host-b");
    let run = Run::read(Path::new(done["run"]["run_dir"].as_str().unwrap()));
    assert_eq!(
        applies(&run),
        1,
        "terraform apply ran once across both hosts"
    );
    assert_eq!(
        serial(&sb, "production"),
        before + 1,
        "the state changed once"
    );
    let verified = ran(on_host(&sb, "b", &["verify", &id]));
    assert_eq!(verified.code, 0, "{verified:?}");
    let free = ran(on_host(&sb, "a", &["unlock", "--env", "production"]));
    assert!(free.stdout.contains("is not locked"), "{free:?}");
}
