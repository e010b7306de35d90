//! Approvals signed with SSH keys, from `capstan approve --key` to the
//! host's check before `apply`: listed keys count, an unlisted key, the
//! author's key, a signature over another plan and a decision edited after
//! signing do not, with the reason; ssh-keygen accepts Capstan's signatures
//! and Capstan ssh-keygen's; `capstan verify` checks every signature.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

use crate::approvals::applies;
use crate::golden_image::{example, run};
use crate::harness::{Run, Sandbox};

/// `ssh-keygen -t ed25519` without passphrase: the private key's path and
/// the public key line.
fn keygen(dir: &Path, name: &str) -> (PathBuf, String) {
    let path = dir.join(name);
    let out = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", name, "-f"])
        .arg(&path)
        .output()
        .expect("ssh-keygen runs (.ci/setup installs openssh-client)");
    assert!(out.status.success(), "{out:?}");
    let public = std::fs::read_to_string(path.with_extension("pub")).unwrap();
    (path, public.trim().to_string())
}

/// The statement an approval signs, as the README documents it.
fn statement(run: &Value, request: &Value, decision: &str, at: &str, plan: &str) -> String {
    format!(
        "capstan-approval-v1\nrun_id={}\npipeline_digest={}\nenvironment={}\nstage={}\nplan_digest={plan}\n\
         image_digest={}\ndecision={decision}\ntime={at}\n",
        run["id"].as_str().unwrap(),
        run["pipeline_digest"].as_str().unwrap(),
        run["environment"].as_str().unwrap(),
        request["stage"].as_str().unwrap(),
        request["image_digest"].as_str().unwrap_or(""),
    )
}

/// `ssh-keygen -Y <op>` in the approval namespace; `(success, stdout+stderr)`.
fn ssh_keygen(dir: &Path, args: &[&str], stdin: &[u8]) -> (bool, String) {
    use std::io::Write;
    let mut child = Command::new("ssh-keygen")
        .args(args)
        .current_dir(dir)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    let out = child.wait_with_output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// An armored signature ssh-keygen makes over `message` with `key`.
fn keygen_sign(dir: &Path, key: &Path, message: &str) -> String {
    let file = dir.join("statement.txt");
    std::fs::write(&file, message).unwrap();
    let _ = std::fs::remove_file(dir.join("statement.txt.sig"));
    let out = Command::new("ssh-keygen")
        .args(["-q", "-Y", "sign", "-n", "capstan-approval", "-f"])
        .arg(key)
        .arg(&file)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    std::fs::read_to_string(dir.join("statement.txt.sig")).unwrap()
}

/// One approval stage of a protected production environment, with the
/// approvers' keys `keys` (principal, public key line) listed.
fn gate(sb: &Sandbox, keys: &[(&str, &str)]) -> PathBuf {
    let listed: Vec<String> = keys
        .iter()
        .map(|(p, k)| format!("{:?}", format!("{p} {k}")))
        .collect();
    sb.pipeline(&format!(
        "[pipeline]\nname = \"gate\"\nenvironments = [\"production\"]\nprotected = [\"production\"]\n\
         [plugins.approval]\npath = {:?}\n\
         [stages.approve]\nplugin = \"approval\"\n\
         with = {{ digest = \"d1g3st0000000000\", subject = \"ship it\", policy = {{ production = \"manual\" }} }}\n\
         [stages.approve.grants]\napproval = true\n\
         [approvers]\nkeys = [{}]\n",
        capstan_test_artifacts::APPROVAL,
        listed.join(", ")
    ))
}

#[test]
fn signed_approvals_count_only_from_listed_keys_other_than_the_authors() {
    let sb = Sandbox::new();
    let keys = sb.path().join("keys");
    std::fs::create_dir_all(&keys).unwrap();
    let mut allowed = String::new();
    let mut key = std::collections::HashMap::new();
    for name in ["alice", "bob", "carol", "dave"] {
        let (path, public) = keygen(&keys, name);
        if name != "dave" {
            allowed.push_str(&format!("{name} {public}\n"));
        }
        key.insert(name, path.to_str().unwrap().to_string());
    }
    let pipeline = example(&sb, |t| {
        t.replace(
            r#"production = { mode = "manual", required = 1 }"#,
            r#"production = { mode = "manual", required = 2 }"#,
        ) + "\n[approvers]\nallowed_signers = \"approvers/allowed_signers\"\n"
    });
    let dir = pipeline.parent().unwrap();
    std::fs::create_dir_all(dir.join("approvers")).unwrap();
    std::fs::write(dir.join("approvers/allowed_signers"), &allowed).unwrap();

    let (code, stderr, _) = run(&sb, &pipeline, &["--env", "production", "--as", "alice"]);
    assert_eq!(code, 5, "{stderr}");
    let id = sb.newest_run_id();
    assert!(
        stderr.contains(&format!("capstan approve {id} --key")),
        "{stderr}"
    );
    // The run keeps the keys it started with: editing the file now adds nobody.
    std::fs::write(
        dir.join("approvers/allowed_signers"),
        format!(
            "{allowed}dave {}\n",
            std::fs::read_to_string(keys.join("dave.pub"))
                .unwrap()
                .trim()
        ),
    )
    .unwrap();

    let approve = |who: &str, extra: &[&str]| {
        let mut args = vec!["approve", id.as_str(), "--key", key[who].as_str()];
        args.extend(extra);
        sb.capstan(&args)
    };
    let unlisted = approve("dave", &[]);
    assert_eq!(unlisted.code, 7, "{unlisted:?}");
    assert!(
        unlisted.stderr.contains("not in allowed_signers"),
        "{unlisted:?}"
    );
    let own = approve("alice", &[]);
    assert_eq!(own.code, 7, "{own:?}");
    assert!(own.stderr.contains("who started this run"), "{own:?}");
    let bob = approve("bob", &["--comment", "reviewed"]);
    assert_eq!(bob.code, 0, "{bob:?}");
    assert!(
        bob.stderr.contains("bob approved")
            && bob.stderr.contains("signed with a listed key")
            && bob.stderr.contains("1 of 2"),
        "{bob:?}"
    );
    let posing = approve("carol", &["--as", "bob"]);
    assert_eq!(posing.code, 7, "{posing:?}");
    assert!(posing.stderr.contains("the key is carol's"), "{posing:?}");

    // ssh-keygen accepts the signature Capstan made over the documented statement.
    let show = sb.show(&id);
    let (run_row, request) = (&show["run"], &show["pending_approval"]);
    let digest = request["digest"].as_str().unwrap().to_string();
    assert!(
        request["image_digest"]
            .as_str()
            .is_some_and(|d| !d.is_empty()),
        "{request:#}"
    );
    let bobs = &show["approvals"][0];
    assert_eq!(
        bobs["identity"], "signed with a listed key of bob",
        "{bobs:#}"
    );
    let signed = statement(
        run_row,
        request,
        "approve",
        bobs["at"].as_str().unwrap(),
        &digest,
    );
    std::fs::write(keys.join("allowed_signers"), &allowed).unwrap();
    std::fs::write(keys.join("bob.sig"), bobs["signature"].as_str().unwrap()).unwrap();
    let verify = [
        "-Y",
        "verify",
        "-n",
        "capstan-approval",
        "-I",
        "bob",
        "-f",
        "allowed_signers",
        "-s",
        "bob.sig",
    ];
    let (ok, said) = ssh_keygen(&keys, &verify, signed.as_bytes());
    assert!(ok, "ssh-keygen -Y verify: {said}");

    // A signature over another plan digest, recorded for this one, does not count.
    let at = jiff::Timestamp::now().to_string();
    let other_plan = "0".repeat(64);
    let wrong = keygen_sign(
        &keys,
        Path::new(&key["carol"]),
        &statement(run_row, request, "approve", &at, &other_plan),
    );
    let insert = |signature: &str| {
        sb.tamper(
            "INSERT INTO approvals (run_id, stage, digest, decision, approver, at, comment, policy, signature) \
             VALUES (?1, 'approve', ?2, 'approved', 'carol', ?3, NULL, 'manual', ?4)",
            &[&id, &digest, &at, signature],
        );
    };
    insert(&wrong);
    let refused = sb.capstan(&["resume", &id, "-q"]);
    assert_eq!(refused.code, 5, "{refused:?}");
    assert!(
        refused.stderr.contains("1 of 2 approvals so far (by bob)")
            && refused.stderr.contains("carol does not count")
            && refused.stderr.contains("does not match the statement"),
        "{refused:?}"
    );
    sb.tamper("DELETE FROM approvals WHERE approver = 'carol'", &[]);

    // Bob's decision edited after signing (its comment is not signed, its time is).
    sb.tamper(
        "UPDATE approvals SET at = ?1 WHERE approver = 'bob'",
        &[&at],
    );
    let edited = sb.capstan(&["resume", &id, "-q"]);
    assert_eq!(edited.code, 5, "{edited:?}");
    assert!(
        edited.stderr.contains("0 of 2 approvals") && edited.stderr.contains("bob does not count"),
        "{edited:?}"
    );
    sb.tamper(
        "UPDATE approvals SET at = ?1 WHERE approver = 'bob'",
        &[bobs["at"].as_str().unwrap()],
    );

    // Carol signs with ssh-keygen alone (offline), over the right statement:
    // Capstan accepts it, and the second listed signature lets apply run.
    let right = keygen_sign(
        &keys,
        Path::new(&key["carol"]),
        &statement(run_row, request, "approve", &at, &digest),
    );
    insert(&right);
    let done = sb.capstan(&["resume", &id, "-q"]);
    assert_eq!(done.code, 0, "{done:?}");
    let record = Run::read(Path::new(run_row["run_dir"].as_str().unwrap()));
    assert_eq!(applies(&record), 1);
    let checked = record.log("apply");
    assert!(
        checked.contains("approved by bob, carol (signed by listed keys)"),
        "{checked}"
    );

    // verify checks every signature, and names a decision edited afterwards.
    let verified = sb.capstan(&["verify", &id]);
    assert_eq!(verified.code, 0, "{verified:?}");
    assert!(
        verified
            .stdout
            .contains("2 decisions signed by listed approvers (bob, carol)"),
        "{verified:?}"
    );
    sb.tamper(
        "UPDATE approvals SET digest = ?1 WHERE approver = 'carol'",
        &[&other_plan],
    );
    let tampered = sb.capstan(&["verify", &id]);
    assert_eq!(tampered.code, 9, "{tampered:?}");
    assert!(
        tampered.stdout.contains("signatures")
            && tampered.stdout.contains("by carol")
            && tampered.stdout.contains("does not match the statement"),
        "{tampered:?}"
    );
}

/// On a terminal, with approvers' keys listed, the prompt asks for the
/// approver's key and signs: the author's key is refused there and then, a
/// listed approver's signature approves, and `verify` checks it.
#[test]
fn the_terminal_prompt_signs_with_the_approvers_key() {
    let sb = Sandbox::new();
    let keys = sb.path().join("keys");
    std::fs::create_dir_all(&keys).unwrap();
    let (alice, alice_public) = keygen(&keys, "alice");
    let (bob, bob_public) = keygen(&keys, "bob");
    let pipeline = gate(&sb, &[("alice", &alice_public), ("bob", &bob_public)]);
    let line = format!(
        "{} run {} --env production --as alice -q",
        env!("CARGO_BIN_EXE_capstan"),
        pipeline.display()
    );
    let typed = format!(
        "{}\nyes\n\n{}\nyes\nlooks right\n",
        alice.display(),
        bob.display()
    );
    let out = sb.on_a_terminal(&line, typed.as_bytes());
    let screen = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{screen}");
    assert!(screen.contains("approver's SSH key"), "{screen}");
    assert!(screen.contains("who started this run"), "{screen}");
    let id = sb.newest_run_id();
    let show = sb.show(&id);
    let approvals = show["approvals"].as_array().unwrap();
    assert_eq!(approvals.len(), 1, "{show:#}");
    assert_eq!(
        (
            &approvals[0]["by"],
            &approvals[0]["identity"],
            &approvals[0]["comment"]
        ),
        (
            &Value::from("bob"),
            &Value::from("signed with a listed key of bob"),
            &Value::from("looks right")
        )
    );
    let verified = sb.capstan(&["verify", &id]);
    assert_eq!(verified.code, 0, "{verified:?}");
    assert!(
        verified
            .stdout
            .contains("1 decision signed by listed approvers (bob)"),
        "{verified:?}"
    );
}

/// The author's own listed key does not approve their run under another
/// name: the listed keys their ssh-agent held when the run started are
/// recorded as theirs.
#[test]
fn a_key_the_author_held_when_starting_the_run_never_approves_it() {
    let sb = Sandbox::new();
    let keys = sb.path().join("keys");
    std::fs::create_dir_all(&keys).unwrap();
    let (alice, alice_public) = keygen(&keys, "alice");
    let (bob, bob_public) = keygen(&keys, "bob");
    let socket = keys.join("agent.sock");
    let mut agent = Command::new("ssh-agent")
        .arg("-D")
        .arg("-a")
        .arg(&socket)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("ssh-agent runs (.ci/setup installs openssh-client)");
    crate::harness::eventually(
        std::time::Duration::from_secs(10),
        "the agent's socket",
        || socket.exists().then_some(()),
    );
    let add = Command::new("ssh-add")
        .arg("-q")
        .arg(&alice)
        .env("SSH_AUTH_SOCK", &socket)
        .output()
        .unwrap();
    assert!(add.status.success(), "{add:?}");
    let pipeline = gate(&sb, &[("alice", &alice_public), ("bob", &bob_public)]);
    // The author runs under a name of their own, with their key in the agent.
    let ran: crate::harness::Ran = sb
        .command(&[
            "run",
            pipeline.to_str().unwrap(),
            "--env",
            "production",
            "--as",
            "al",
            "-q",
        ])
        .env("SSH_AUTH_SOCK", &socket)
        .output()
        .unwrap()
        .into();
    assert_eq!(ran.code, 5, "{ran:?}");
    let id = sb.newest_run_id();
    let own = sb.capstan(&["approve", &id, "--key", alice.to_str().unwrap()]);
    let _ = agent.kill();
    let _ = agent.wait();
    assert_eq!(own.code, 7, "{own:?}");
    assert!(
        own.stderr
            .contains("that al held in ssh-agent when starting this run"),
        "{own:?}"
    );
    let other = sb.capstan(&["approve", &id, "--key", bob.to_str().unwrap()]);
    assert_eq!(other.code, 0, "{other:?}");
}
