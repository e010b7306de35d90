//! Two hosts, one run store: hosts are told apart by host id (here set with
//! `CAPSTAN_HOST_ID`, as two machines' ids differ), each with its own state
//! dir. A live host's lease keeps its lock; a host cut off mid-stage keeps
//! it until its lease ends and, since its program may still run there,
//! until an operator forces it free — recorded — and the host, when it comes
//! back, stops the run and records nothing more.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use nix::sys::signal::Signal;

use crate::harness::{Guarded, Ran, Sandbox, adversary_stage, alive, eventually, started_programs};

/// The lease every host here takes: short, so that the test need not wait.
pub const LEASE: &str = "2s";

/// `capstan <args>` on host `name`: its own state dir and host id, and the
/// store all hosts share (the harness's PostgreSQL database when it gives
/// one, else one SQLite file).
pub fn on_host(sb: &Sandbox, name: &str, args: &[&str]) -> Command {
    let mut cmd = sb.command(args);
    cmd.env("CAPSTAN_STATE_DIR", state_dir(sb, name))
        .env("CAPSTAN_HOST_ID", format!("host-{name}"))
        .env("CAPSTAN_LEASE", LEASE);
    if !cmd
        .get_envs()
        .any(|(k, v)| k == "CAPSTAN_STORE" && v.is_some())
    {
        cmd.env("CAPSTAN_STORE", sb.path().join("shared.db"));
    }
    cmd
}

pub fn state_dir(sb: &Sandbox, name: &str) -> PathBuf {
    sb.path().join(format!("state-{name}"))
}

/// Host a's run once its stage has started `sleep`: the run's id and the
/// sleep's pid.
fn sleeping_on_a(sb: &Sandbox) -> (String, i64) {
    eventually(Duration::from_secs(120), "host a starts sleep", || {
        let runs = std::fs::read_dir(state_dir(sb, "a").join("runs")).ok()?;
        runs.flatten().find_map(|run| {
            let (_, pid) = started_programs(&run.path())
                .into_iter()
                .find(|(p, _)| p == "sleep")?;
            Some((run.file_name().to_str()?.to_string(), pid))
        })
    })
}

fn ran(mut cmd: Command) -> Ran {
    cmd.output().expect("run capstan").into()
}

#[test]
fn a_lost_host_keeps_its_lock_until_forced_free_and_then_records_nothing_more() {
    let sb = Sandbox::new();
    let pipeline = sb.pipeline(&format!(
        "[pipeline]\nname = \"shared\"\nenvironments = [\"production\"]\n\
         [plugins.adversary]\npath = \"{{adversary}}\"\n{}\n{}",
        adversary_stage("hang", r#"{ action = "exec-hang" }"#, ""),
        adversary_stage("quick", r#"{ action = "env", name = "GRANTED_VAR" }"#, ""),
    ));
    let pipeline = pipeline.to_str().unwrap();
    let a = Guarded::spawn(on_host(
        &sb,
        "a",
        &[
            "run",
            pipeline,
            "--env",
            "production",
            "--only",
            "hang",
            "-q",
        ],
    ));
    let (id, sleep) = sleeping_on_a(&sb);
    let quick_on_b = || {
        ran(on_host(
            &sb,
            "b",
            &[
                "run",
                pipeline,
                "--env",
                "production",
                "--only",
                "quick",
                "-q",
            ],
        ))
    };

    // Longer than the lease: host a renews it, so its lock holds.
    std::thread::sleep(Duration::from_secs(3));
    let second = quick_on_b();
    assert_eq!(second.code, 6, "{second:?}");
    assert!(second.stderr.contains(&id), "{second:?}");
    assert!(
        second.stderr.contains("is running") && second.stderr.contains("host id host-a"),
        "{second:?}"
    );
    let refused = ran(on_host(
        &sb,
        "b",
        &["unlock", "--env", "production", "--force", "--reason", "x"],
    ));
    assert_eq!(refused.code, 7, "a live holder is not forced: {refused:?}");
    assert!(refused.stderr.contains("capstan cancel"), "{refused:?}");

    // Host a is cut off (frozen: its lease is not renewed, its program runs on).
    a.signal(Signal::SIGSTOP);
    let held = eventually(Duration::from_secs(60), "host a's lease ends", || {
        let r = quick_on_b();
        r.stderr.contains("stopped renewing its lease").then_some(r)
    });
    assert_eq!(held.code, 6, "{held:?}");
    for words in [
        "programs it started there may still run",
        &format!("pid {sleep}"),
        "capstan unlock --env production --force --reason",
        &format!("capstan resume {id}"),
    ] {
        assert!(held.stderr.contains(words), "{words}: {held:?}");
    }
    assert!(alive(sleep), "nothing here touched host a's program");

    let forced = ran(on_host(
        &sb,
        "b",
        &[
            "unlock",
            "--env",
            "production",
            "--force",
            "--as",
            "carol",
            "--reason",
            "host a lost",
        ],
    ));
    assert_eq!(forced.code, 0, "{forced:?}");
    assert!(
        forced.stdout.contains(&format!(
            "released the lock on `production` held by run {id}"
        )),
        "{forced:?}"
    );
    let shown = ran(on_host(&sb, "b", &["show", &id]));
    assert!(
        shown.stdout.contains("BY FORCE by carol") && shown.stdout.contains("host a lost"),
        "{shown:?}"
    );
    let json: serde_json::Value =
        serde_json::from_str(&ran(on_host(&sb, "b", &["show", &id, "--json"])).stdout).unwrap();
    assert_eq!(json["run"]["status"], "interrupted");
    assert_eq!(json["lock_releases"][0]["why"], "forced");
    assert_eq!(json["lock_releases"][0]["by"], "carol");
    assert_eq!(json["lock_releases"][0]["holder"]["host_id"], "host-a");

    // Host b runs on production now.
    let next = quick_on_b();
    assert_eq!(next.code, 0, "{next:?}");

    // Host a comes back: it finds its run taken, stops it (its program
    // ends) and records nothing more.
    a.signal(Signal::SIGCONT);
    let (back, _) = a.wait(Duration::from_secs(120));
    assert_ne!(back.code, 0, "{back:?}");
    assert!(
        back.stderr.contains("this host no longer holds run"),
        "{back:?}"
    );
    eventually(Duration::from_secs(30), "host a's program ends", || {
        (!alive(sleep)).then_some(())
    });
    let json: serde_json::Value =
        serde_json::from_str(&ran(on_host(&sb, "b", &["show", &id, "--json"])).stdout).unwrap();
    assert_eq!(
        json["run"]["status"], "interrupted",
        "host a's writes were fenced"
    );
    let unlocked = ran(on_host(&sb, "b", &["unlock", "--env", "production"]));
    assert!(unlocked.stdout.contains("is not locked"), "{unlocked:?}");
}

#[test]
fn a_run_on_another_host_is_cancelled_through_the_store() {
    let sb = Sandbox::new();
    let pipeline = sb.pipeline(&format!(
        "[pipeline]\nname = \"shared\"\nenvironments = [\"production\"]\n\
         [plugins.adversary]\npath = \"{{adversary}}\"\n{}",
        adversary_stage("hang", r#"{ action = "exec-hang" }"#, ""),
    ));
    let a = Guarded::spawn(on_host(
        &sb,
        "a",
        &[
            "run",
            pipeline.to_str().unwrap(),
            "--env",
            "production",
            "-q",
        ],
    ));
    let (id, sleep) = sleeping_on_a(&sb);
    let cancel = ran(on_host(
        &sb,
        "b",
        &["cancel", &id, "--as", "carol", "--reason", "wrong image"],
    ));
    assert_eq!(cancel.code, 0, "{cancel:?}");
    assert!(
        cancel.stderr.contains("when it next renews its lease"),
        "{cancel:?}"
    );
    let (stopped, _) = a.wait(Duration::from_secs(60));
    assert_eq!(stopped.code, 8, "cancelled: {stopped:?}");
    assert!(!alive(sleep));
    let json: serde_json::Value =
        serde_json::from_str(&ran(on_host(&sb, "b", &["show", &id, "--json"])).stdout).unwrap();
    assert_eq!(json["run"]["status"], "cancelled");
    let hang = json["stages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "hang")
        .unwrap();
    assert!(
        hang["message"].as_str().unwrap().contains("carol")
            && hang["message"].as_str().unwrap().contains("wrong image"),
        "{hang:#}"
    );
}
