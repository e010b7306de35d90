//! Plugins that try to escape. Every attack runs as its own stage of one
//! pipeline: each must fail alone, with a message naming the capability or
//! limit, be recorded in audit.jsonl, and leave the rest of the run going.

use std::io::Read;
use std::net::TcpListener;

use crate::harness::{Run, Sandbox, adversary_stage as stage};

/// Lay out the sandbox: a read grant, a write grant with symlinks planted
/// pointing outside, and an ungranted directory with a secret.
fn sandbox() -> Sandbox {
    let sb = Sandbox::new();
    sb.write("ro/file.txt", "read-only content\n");
    sb.write("outside/secret.txt", "TOP SECRET\n");
    let root = sb.path();
    std::os::unix::fs::symlink(root.join("outside/secret.txt"), root.join("rw/link-out")).unwrap();
    std::os::unix::fs::symlink(root.join("outside"), root.join("rw/dir-link")).unwrap();
    sb
}

/// (stage, `with`, extra stage keys)
fn attacks(port: u16) -> Vec<(&'static str, String, &'static str)> {
    vec![
        (
            "exec_ungranted",
            r#"{ action = "exec-ungranted" }"#.into(),
            "",
        ),
        (
            "forbidden_args",
            r#"{ action = "forbidden-args" }"#.into(),
            "",
        ),
        ("sh_smuggle", r#"{ action = "sh-smuggle" }"#.into(), ""),
        (
            "cwd_outside",
            r#"{ action = "cwd-outside", cwd = "{sandbox}/outside" }"#.into(),
            "",
        ),
        (
            "cwd_symlink",
            r#"{ action = "cwd-outside", cwd = "{sandbox}/rw/dir-link" }"#.into(),
            "",
        ),
        (
            "read_dotdot",
            r#"{ action = "read-outside", path = "{sandbox}/ro/../outside/secret.txt" }"#.into(),
            "",
        ),
        (
            "read_symlink",
            r#"{ action = "read-outside", path = "{sandbox}/rw/link-out" }"#.into(),
            "",
        ),
        (
            "read_ungranted",
            r#"{ action = "read-outside", path = "/etc/passwd" }"#.into(),
            "",
        ),
        (
            "write_readonly",
            r#"{ action = "write-readonly", path = "{sandbox}/ro/pwned.txt" }"#.into(),
            "",
        ),
        (
            "env_ungranted",
            r#"{ action = "env-ungranted", name = "SECRET_TOKEN" }"#.into(),
            "",
        ),
        ("env_smuggle", r#"{ action = "env-smuggle" }"#.into(), ""),
        (
            "infinite_loop",
            r#"{ action = "loop" }"#.into(),
            "timeout = \"2s\"",
        ),
        (
            "memory_bomb",
            r#"{ action = "alloc" }"#.into(),
            "memory = \"32MiB\"",
        ),
        (
            "output_flood",
            r#"{ action = "flood" }"#.into(),
            "max_output = \"256KiB\"",
        ),
        (
            "exec_flood",
            r#"{ action = "exec-flood" }"#.into(),
            "max_output = \"256KiB\"",
        ),
        (
            "exec_hang",
            r#"{ action = "exec-hang" }"#.into(),
            "timeout = \"2s\"",
        ),
        ("panic", r#"{ action = "panic" }"#.into(), ""),
        (
            "probe_ungranted",
            r#"{ action = "probe", host = "127.0.0.2", port = 22 }"#.into(),
            "",
        ),
        // A DNS name that starts like a granted IP literal is a name.
        (
            "probe_name_like_ip",
            r#"{ action = "probe", host = "127.0.0.1.attacker.example", port = 22 }"#.into(),
            "",
        ),
        // Benign stages that must still work beside the attacks.
        (
            "probe_granted",
            format!(r#"{{ action = "probe", host = "127.0.0.1", port = {port} }}"#),
            "",
        ),
        (
            "well_behaved",
            r#"{ action = "exec", program = "echo", args = ["hello"] }"#.into(),
            "",
        ),
        (
            "granted_env",
            r#"{ action = "env", name = "GRANTED_VAR" }"#.into(),
            "",
        ),
        (
            "granted_read",
            r#"{ action = "read-file", path = "{sandbox}/ro/file.txt" }"#.into(),
            "",
        ),
    ]
}

fn run_attacks() -> (Sandbox, Run) {
    let sb = sandbox();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let mut toml = String::from(
        "[pipeline]\nname = \"attacks\"\nconcurrency = 4\n[defaults]\ntimeout = \"60s\"\n[plugins.adversary]\npath = \"{adversary}\"\n",
    );
    for (name, with, limits) in attacks(port) {
        toml.push_str(&stage(name, &with, limits));
    }
    let pipeline = sb.pipeline(&toml);
    let ran = sb.capstan(&["run", pipeline.to_str().unwrap(), "-q"]);
    assert_eq!(
        ran.code, 1,
        "attacks fail their stages, so the run fails: {ran:?}"
    );
    drop(listener);
    let run = sb.last_run();
    (sb, run)
}

/// One run of every attack (one run, so that checking for surviving
/// processes cannot race with another test's attacks).
#[test]
fn attacks_fail_alone_and_benign_stages_beside_them_succeed() {
    let (sb, run) = run_attacks();
    every_attack_fails_names_the_capability_or_limit_and_is_audited(&sb, &run);
    benign_stages_succeed(&run);
    no_hung_child_survives(&run);
}

fn every_attack_fails_names_the_capability_or_limit_and_is_audited(sb: &Sandbox, run: &Run) {
    // (stage, words its failure must contain, capability of an audit denial if the host saw one)
    let expected: &[(&str, &[&str], Option<&str>)] = &[
        (
            "exec_ungranted",
            &["not permitted", "program `cat` is not granted"],
            Some("exec"),
        ),
        (
            "forbidden_args",
            &["argument 1 `--evil-flag` does not match the granted pattern `hello|world`"],
            Some("exec"),
        ),
        (
            "sh_smuggle",
            &[
                "all 4 refused",
                "program `sh` is not granted",
                "program `/bin/sh` is not granted",
                "program `../../../bin/sh` is not granted",
            ],
            Some("exec"),
        ),
        (
            "cwd_outside",
            &[
                "working directory",
                "outside the stage's granted directories",
            ],
            Some("exec"),
        ),
        (
            "cwd_symlink",
            &[
                "working directory",
                "outside the stage's granted directories",
            ],
            Some("exec"),
        ),
        ("read_dotdot", &["not permitted", "read "], None),
        ("read_symlink", &["not permitted", "read "], None),
        (
            "read_ungranted",
            &["not permitted", "read /etc/passwd"],
            None,
        ),
        ("write_readonly", &["not permitted", "write "], None),
        ("env_ungranted", &["env var SECRET_TOKEN not visible"], None),
        (
            "env_smuggle",
            &["may not be given environment variable `LD_PRELOAD`"],
            Some("exec"),
        ),
        (
            "infinite_loop",
            &["timed out after 2s", "limit `timeout`"],
            None,
        ),
        ("memory_bomb", &["memory limit", "limit `memory`"], None),
        (
            "output_flood",
            &["output limit", "limit `max_output`"],
            None,
        ),
        ("exec_flood", &["output limit", "limit `max_output`"], None),
        (
            "exec_hang",
            &["timed out after 2s", "limit `timeout`"],
            None,
        ),
        (
            "panic",
            &["plugin crashed", "adversary panicked on purpose"],
            None,
        ),
        (
            "probe_ungranted",
            &["connect to `127.0.0.2:22` is not granted"],
            Some("connect"),
        ),
        (
            "probe_name_like_ip",
            &["connect to `127.0.0.1.attacker.example:22` is not granted"],
            Some("connect"),
        ),
    ];
    for (stage, words, denial) in expected {
        run.assert_failed_naming(stage, words);
        let reason = run.reason(stage);
        assert!(!reason.contains("ESCAPED"), "{stage} escaped: {reason}");
        if let Some(cap) = denial {
            let denials = run.denials(stage);
            assert!(
                denials.iter().any(|e| e["capability"] == *cap),
                "{stage}: no `{cap}` denial in audit: {denials:#?}"
            );
        }
    }
    // The hung child was stopped by the stage deadline, its group killed.
    assert!(
        run.log("exec_hang").contains("`sleep` timed out after"),
        "{}",
        run.log("exec_hang")
    );
    // Nothing leaked or got written.
    assert!(!sb.path().join("ro/pwned.txt").exists());
    let everything = std::fs::read_dir(run.dir.join("logs"))
        .unwrap()
        .map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap())
        .collect::<String>();
    assert!(
        !everything.contains("TOP SECRET") && !everything.contains("hunter2"),
        "a secret reached a log"
    );
    let audit = std::fs::read_to_string(run.dir.join("audit.jsonl")).unwrap();
    assert!(
        !audit.contains("hunter2"),
        "the ungranted env var's value reached the audit log"
    );
    // sh -c smuggling was refused four times, each recorded.
    assert_eq!(
        run.denials("sh_smuggle")
            .iter()
            .filter(|e| e["capability"] == "exec")
            .count(),
        4
    );
    // Limits are recorded as such.
    for stage in ["memory_bomb", "output_flood", "exec_flood", "infinite_loop"] {
        assert!(
            run.audit_of(stage)
                .iter()
                .any(|e| e["capability"] == "limit"),
            "{stage}: no limit event"
        );
    }
}

fn benign_stages_succeed(run: &Run) {
    assert_eq!(
        run.status("well_behaved"),
        "succeeded",
        "{:#}",
        run.stage("well_behaved")
    );
    assert_eq!(run.output("well_behaved", "stdout"), "hello\n");
    assert_eq!(run.output("granted_env", "value"), "granted-value");
    assert_eq!(run.output("granted_read", "content"), "read-only content\n");
    assert_eq!(
        run.output("probe_granted", "reachable"),
        true,
        "{:#}",
        run.stage("probe_granted")
    );
    // Every stage has a final status: the run reported all of them.
    assert_eq!(
        run.record["stages"].as_array().unwrap().len(),
        attacks(0).len()
    );
}

/// The hung child was killed with its whole process group.
fn no_hung_child_survives(run: &Run) {
    assert_eq!(run.status("exec_hang"), "failed");
    // No `sleep 1000` survives the run.
    let mut survivors = String::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let mut cmdline = String::new();
        if let Ok(mut f) = std::fs::File::open(entry.path().join("cmdline")) {
            let _ = f.read_to_string(&mut cmdline);
        }
        let argv: Vec<&str> = cmdline.split('\0').collect();
        if argv.len() >= 2 && argv[0].rsplit('/').next() == Some("sleep") && argv[1] == "1000" {
            survivors.push_str(&format!("{} ", entry.file_name().to_string_lossy()));
        }
    }
    assert!(
        survivors.is_empty(),
        "sleep 1000 still running: pids {survivors}"
    );
}

/// A plugin that could write Capstan's state dir could forge an approval in
/// the run store or rewrite an audit log: no read or write grant may
/// overlap it, and nothing runs when one does.
#[test]
fn grants_over_capstans_own_state_are_refused() {
    let sb = Sandbox::new();
    std::fs::create_dir_all(sb.path().join(".capstan/runs")).unwrap();
    for (grant, inside) in [
        (r#"write = ["."]"#, "write"),
        (r#"read = [".capstan/runs"]"#, "read"),
    ] {
        let tamper = stage("tamper", r#"{ action = "context" }"#, "");
        let tamper = if inside == "write" {
            tamper.replace(r#"write = ["rw"]"#, grant)
        } else {
            tamper.replace(r#"read = ["ro"]"#, grant)
        };
        let pipeline = sb.pipeline(&format!(
            "[pipeline]\nname = \"p\"\n[plugins.adversary]\npath = \"{{adversary}}\"\n{tamper}"
        ));
        let ran = sb.capstan(&["run", pipeline.to_str().unwrap(), "-q"]);
        assert_eq!(ran.code, 4, "{ran:?}");
        assert!(
            ran.stderr.contains(&format!("the {inside} grant"))
                && ran.stderr.contains("reaches Capstan's state dir"),
            "{ran:?}"
        );
        assert_eq!(
            std::fs::read_dir(sb.path().join(".capstan/runs"))
                .unwrap()
                .count(),
            0,
            "nothing ran"
        );
    }
}
