//! Operators' daily use: state that follows the pipeline file wherever
//! `capstan` starts, and a stop that stops (Ctrl-C, `capstan cancel`):
//! every program ends, the run is recorded as cancelled with who and why,
//! and the environment is free only after.

use std::path::Path;
use std::time::Duration;

use nix::sys::signal::Signal;
use serde_json::Value;

use crate::golden_image::example;
use crate::harness::{Ran, Sandbox, adversary_stage, alive, eventually, started_programs};

/// The newest run directory under `state`, once one has started `program`.
fn started(state: &Path, program: &str) -> (std::path::PathBuf, i64) {
    eventually(
        Duration::from_secs(120),
        &format!("`{program}` starts"),
        || {
            let runs = std::fs::read_dir(state.join("runs")).ok()?;
            runs.flatten().find_map(|run| {
                let pid = started_programs(&run.path())
                    .into_iter()
                    .find(|(p, _)| p == program)?
                    .1;
                Some((run.path(), pid))
            })
        },
    )
}

fn run_event<'a>(audit: &'a [Value], event: &str) -> Option<&'a Value> {
    audit
        .iter()
        .find(|e| e["capability"] == "run" && e["detail"]["event"] == event)
}

#[test]
fn state_follows_the_pipeline_and_cancel_stops_a_live_run() {
    let sb = Sandbox::new();
    let repo = sb.path().join("repo");
    let deploy = repo.join("deploy");
    std::fs::create_dir_all(repo.join(".git")).unwrap();
    std::fs::create_dir_all(deploy.join("sub")).unwrap();
    let pipeline = sb.write(
        "repo/deploy/pipeline.toml",
        &sb.fill(&format!(
            "[pipeline]\nname = \"stoppable\"\nenvironments = [\"production\"]\n\
             [plugins.adversary]\npath = \"{{adversary}}\"\n{}\n{}\n{}",
            adversary_stage("hang", r#"{ action = "exec-hang" }"#, ""),
            // A second stage holding a program at the same time: a stop
            // reaches every stage's programs, not one.
            adversary_stage("hang2", r#"{ action = "exec-hang" }"#, ""),
            adversary_stage("quick", r#"{ action = "env", name = "GRANTED_VAR" }"#, ""),
        )),
    );
    let pipeline = pipeline.to_str().unwrap();
    // The grants in the adversary's stages are relative to the pipeline.
    for dir in ["ro", "rw"] {
        std::fs::create_dir_all(deploy.join(dir)).unwrap();
    }

    // Started from inside the pipeline's directory: state at the repository root.
    let mut first = sb.command_in(&deploy.join("sub"), &["run", pipeline, "-q"]);
    first.env("CAPSTAN_STILL_RUNNING", "1s");
    let first = crate::harness::Guarded::spawn(first);
    let state = repo.join(".capstan");
    let (run_dir, sleep) = started(&state, "sleep");
    let id = run_dir.file_name().unwrap().to_str().unwrap().to_string();
    let sleeps = eventually(Duration::from_secs(60), "both stages start sleep", || {
        let pids: Vec<i64> = started_programs(&run_dir)
            .into_iter()
            .filter(|(p, _)| p == "sleep")
            .map(|(_, pid)| pid)
            .collect();
        (pids.len() == 2).then_some(pids)
    });
    assert!(sleeps.contains(&sleep));
    // Not on a terminal, with -q: a silent stage is said to be still running.
    eventually(Duration::from_secs(60), "a still-running line", || {
        first
            .stderr_so_far()
            .contains("… hang still running (")
            .then_some(())
    });

    // Started from elsewhere, the same pipeline finds the same store and lock.
    let second: Ran = sb
        .command_in(&sb.path(), &["run", pipeline, "-q", "--only", "quick"])
        .output()
        .unwrap()
        .into();
    assert_eq!(second.code, 6, "{second:?}");
    assert!(second.stderr.contains(&id), "{second:?}");
    assert!(
        !sb.path().join(".capstan").exists(),
        "no state where it was started"
    );

    // A read command given a state dir with no store refuses (a server's
    // store is not in the state dir: it reads that); creates nothing.
    let nowhere = sb.path().join("nowhere");
    let refused: Ran = sb
        .command_in(
            &sb.path(),
            &["runs", "--state-dir", nowhere.to_str().unwrap()],
        )
        .output()
        .unwrap()
        .into();
    if sb.on_postgres() {
        assert_eq!(refused.code, 0, "{refused:?}");
        assert!(refused.stdout.contains(&id), "{refused:?}");
    } else {
        assert_eq!(refused.code, 2, "{refused:?}");
        assert!(refused.stderr.contains("no run store"), "{refused:?}");
    }
    assert!(!nowhere.exists());

    // Cancelled from a subdirectory of the repository (the store is found upwards).
    let cancel: Ran = sb
        .command_in(
            &deploy.join("sub"),
            &["cancel", &id, "--as", "carol", "--reason", "wrong image"],
        )
        .output()
        .unwrap()
        .into();
    assert_eq!(cancel.code, 0, "{cancel:?}");
    let (ran, _) = first.wait(Duration::from_secs(300));
    assert_eq!(ran.code, 8, "{ran:?}");
    for sleep in sleeps {
        assert!(
            !alive(sleep),
            "sleep (pid {sleep}) outlived the cancelled run"
        );
    }
    // Timestamped progress lines.
    let stamped = regex::Regex::new(r"(?m)^\d\d:\d\d:\d\d ▶ hang started$").unwrap();
    assert!(stamped.is_match(&ran.stderr), "{ran:?}");
    assert!(ran.stderr.contains("■ hang"), "{ran:?}");

    let show: Value = serde_json::from_str(
        &String::from_utf8(
            sb.command_in(&deploy, &["show", &id, "--json"])
                .output()
                .unwrap()
                .stdout,
        )
        .unwrap(),
    )
    .unwrap();
    assert_eq!(show["run"]["status"], "cancelled", "{show:#}");
    let hang = show["stages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "hang")
        .unwrap();
    assert_eq!(hang["status"], "cancelled", "{show:#}");
    let hang2 = show["stages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "hang2")
        .unwrap();
    assert_eq!(hang2["status"], "cancelled", "{show:#}");
    let message = hang["message"].as_str().unwrap();
    assert!(
        message.contains("carol") && message.contains("wrong image"),
        "{message}"
    );
    let audit: Vec<Value> = std::fs::read_to_string(run_dir.join("audit.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let cancelled = run_event(&audit, "cancelled").expect("a cancelled event");
    assert_eq!(cancelled["detail"]["by"], "carol");
    assert_eq!(cancelled["detail"]["programs_left"], 0, "{cancelled:#}");

    // The environment is free again.
    let third: Ran = sb
        .command_in(&sb.path(), &["run", pipeline, "-q", "--only", "quick"])
        .output()
        .unwrap()
        .into();
    assert_eq!(third.code, 0, "{third:?}");
}

#[test]
fn ctrl_c_during_configure_ends_ansible_and_frees_the_environment_after() {
    let sb = Sandbox::new();
    let pipeline = example(&sb, |t| t);
    // A play that outlasts the test's patience, after the example's own.
    let playbook = pipeline
        .parent()
        .unwrap()
        .join("ansible/playbooks/post-deploy.yml");
    let mut play = std::fs::read_to_string(&playbook).unwrap();
    // A duration of its own, to tell this test's task from any other `sleep`.
    let hold = format!("sleep 313.{}", std::process::id());
    play.push_str(&format!(
        "\n- name: Hold (test)\n  hosts: all\n  gather_facts: false\n  tasks:\n    \
         - ansible.builtin.command: {hold}\n"
    ));
    std::fs::write(&playbook, play).unwrap();
    let path = pipeline.to_str().unwrap();
    let mut run = sb.spawn(&["run", path, "--env", "dev", "--stop-grace", "5s"]);
    let state = sb.path().join(".capstan");
    let (run_dir, playbook_pid) = started(&state, "ansible-playbook");
    // Ctrl-C once `sleep 313` runs on a host (a grandchild of ansible-playbook).
    eventually(Duration::from_secs(120), "the held play starts", || {
        crate::harness::sleepers(&hold).first().copied()
    });
    assert!(run.running());
    run.signal(Signal::SIGINT);
    // (The limit counts from the start of the run.)
    let (ran, _) = run.wait(Duration::from_secs(400));
    assert_eq!(ran.code, 8, "{ran:?}");
    assert!(ran.stderr.contains("stopping run"), "{ran:?}");
    assert!(!alive(playbook_pid), "ansible-playbook outlived the run");
    assert_eq!(
        crate::harness::sleepers(&hold),
        Vec::<i64>::new(),
        "a host's task outlived the run"
    );

    let record = sb.show(run_dir.file_name().unwrap().to_str().unwrap());
    assert_eq!(record["run"]["status"], "cancelled");
    let configure = record["stages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "configure")
        .unwrap();
    assert_eq!(configure["status"], "cancelled", "{record:#}");
    assert!(configure["message"].as_str().unwrap().contains("Ctrl-C"));
    let smoke = record["stages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "smoke")
        .unwrap();
    assert_eq!(
        smoke["status"], "cancelled",
        "nothing starts after a stop: {record:#}"
    );

    // Freed only after: the event that ends the run saw no program left.
    let audit = crate::harness::Run::read(&run_dir).audit;
    let cancelled = run_event(&audit, "cancelled").expect("a cancelled event");
    assert_eq!(cancelled["detail"]["programs_left"], 0, "{cancelled:#}");
    let next = sb.capstan(&["run", path, "--env", "dev", "--only", "build", "-q"]);
    assert_eq!(next.code, 0, "{next:?}");
}

#[test]
fn a_program_that_ignores_sigterm_is_killed_at_the_second_ctrl_c() {
    let sb = Sandbox::new();
    // `sleep` on PATH is a script that ignores SIGTERM (and so does the
    // real sleep it becomes): only SIGKILL ends it.
    let stubborn = sb.write(
        "bin/sleep",
        "#!/bin/sh\ntrap '' TERM\nexec /bin/sleep \"$@\"\n",
    );
    std::fs::set_permissions(
        &stubborn,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let pipeline = sb.pipeline(&format!(
        "[pipeline]\nname = \"stubborn\"\n[plugins.adversary]\npath = \"{{adversary}}\"\n{}",
        adversary_stage("hang", r#"{ action = "exec-hang" }"#, ""),
    ));
    let mut cmd = sb.command(&[
        "run",
        pipeline.to_str().unwrap(),
        "-q",
        "--stop-grace",
        "1h",
    ]);
    let path = format!(
        "{}:{}",
        sb.path().join("bin").display(),
        std::env::var("PATH").unwrap()
    );
    cmd.env("PATH", path);
    let mut run = crate::harness::Guarded::spawn(cmd);
    let (run_dir, sleep) = started(&sb.path().join(".capstan"), "sleep");
    run.signal(Signal::SIGINT);
    eventually(Duration::from_secs(30), "the stop notice", || {
        run.stderr_so_far()
            .contains("press Ctrl-C again")
            .then_some(())
    });
    // SIGTERM went unheeded; the grace period is an hour.
    assert!(alive(sleep) && run.running(), "{}", run.stderr_so_far());
    run.signal(Signal::SIGINT);
    let (ran, _) = run.wait(Duration::from_secs(300));
    assert_eq!(ran.code, 8, "{ran:?}");
    assert!(ran.stderr.contains("killing every program"), "{ran:?}");
    assert!(!alive(sleep), "pid {sleep} survived SIGKILL");
    let audit = crate::harness::Run::read(&run_dir).audit;
    let cancelled = run_event(&audit, "cancelled").expect("a cancelled event");
    assert!(
        cancelled["detail"]["programs_killed"].as_u64() >= Some(1),
        "{cancelled:#}"
    );
    assert_eq!(cancelled["detail"]["programs_left"], 0, "{cancelled:#}");
}
