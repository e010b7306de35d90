//! Signatures made and checked both by Capstan and by the real ssh-keygen.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use super::*;

fn statement() -> Statement {
    Statement {
        run_id: "20261129-054356-prod".into(),
        pipeline_digest: "sha256:1111".into(),
        environment: "prod".into(),
        stage: "apply".into(),
        plan_digest: "sha256:2222".into(),
        image_digest: Some("sha256:3333".into()),
        decision: Decision::Approved,
        time: "2026-11-29T05:43:56Z".parse().unwrap(),
    }
}

/// A key made by `ssh-keygen -t ed25519` with `passphrase`: the private
/// key's path and the public key line.
pub(crate) fn keygen(dir: &Path, name: &str, passphrase: &str) -> (PathBuf, String) {
    let path = dir.join(name);
    let out = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-C", name, "-N", passphrase, "-f"])
        .arg(&path)
        .output()
        .expect("ssh-keygen runs (.ci/setup installs openssh-client)");
    assert!(out.status.success(), "{out:?}");
    let public = std::fs::read_to_string(path.with_extension("pub")).unwrap();
    (path, public.trim().to_string())
}

/// `ssh-keygen -Y verify` of `signature` over `message`, as `principal`.
fn ssh_keygen_verify(
    dir: &Path,
    allowed: &str,
    principal: &str,
    message: &[u8],
    signature: &str,
) -> Output {
    let (allowed_path, sig_path) = (dir.join("allowed_signers"), dir.join("message.sig"));
    std::fs::write(&allowed_path, allowed).unwrap();
    std::fs::write(&sig_path, signature).unwrap();
    let mut child = Command::new("ssh-keygen")
        .args(["-Y", "verify", "-n", NAMESPACE, "-I", principal, "-f"])
        .arg(&allowed_path)
        .arg("-s")
        .arg(&sig_path)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child.stdin.take().unwrap().write_all(message).unwrap();
    child.wait_with_output().unwrap()
}

/// `ssh-keygen -Y sign -n <namespace>` of `message` with `key`.
fn ssh_keygen_sign(dir: &Path, key: &Path, namespace: &str, message: &[u8]) -> String {
    // A file of its own: ssh-keygen keeps an existing .sig (and exits 0).
    let path = dir.join(format!("statement-{namespace}.txt"));
    std::fs::write(&path, message).unwrap();
    let out = Command::new("ssh-keygen")
        .args(["-q", "-Y", "sign", "-n", namespace, "-f"])
        .arg(key)
        .arg(&path)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    std::fs::read_to_string(path.with_extension("txt.sig")).unwrap()
}

#[test]
fn the_canonical_form_is_fixed_lines_and_refuses_line_breaks() {
    let text = String::from_utf8(statement().canonical().unwrap()).unwrap();
    assert_eq!(
        text,
        "capstan-approval-v1\nrun_id=20261129-054356-prod\npipeline_digest=sha256:1111\n\
         environment=prod\nstage=apply\nplan_digest=sha256:2222\nimage_digest=sha256:3333\n\
         decision=approve\ntime=2026-11-29T05:43:56Z\n"
    );
    let no_image = Statement {
        image_digest: None,
        decision: Decision::Rejected,
        ..statement()
    };
    let text = String::from_utf8(no_image.canonical().unwrap()).unwrap();
    assert!(
        text.contains("\nimage_digest=\ndecision=reject\n"),
        "{text}"
    );
    let sneaky = Statement {
        stage: "apply\nplan_digest=sha256:9999".into(),
        ..statement()
    };
    assert_eq!(
        sneaky.canonical().unwrap_err().to_string(),
        "the approval statement's stage contains a line break, which its signed form cannot hold"
    );
    let empty = Statement {
        plan_digest: String::new(),
        ..statement()
    };
    assert_eq!(
        empty.canonical().unwrap_err().to_string(),
        "the approval statement's plan_digest is empty"
    );
}

#[test]
fn a_signature_capstan_makes_is_accepted_by_capstan_and_by_ssh_keygen() {
    let dir = tempfile::tempdir().unwrap();
    let (key, public) = keygen(dir.path(), "alice", "");
    let signature = sign(&statement(), &key).unwrap();
    assert!(
        signature.starts_with("-----BEGIN SSH SIGNATURE-----\n"),
        "{signature}"
    );
    let allowed = format!("# approvers\n\nalice@example.com,alice {public}\n");
    let signers = AllowedSigners::parse(&allowed).unwrap();
    assert_eq!(
        signers.verify(&statement(), &signature).unwrap(),
        "alice@example.com"
    );

    let message = statement().canonical().unwrap();
    let out = ssh_keygen_verify(dir.path(), &allowed, "alice", &message, &signature);
    assert!(out.status.success(), "{out:?}");
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        said.contains("Good \"capstan-approval\" signature for alice"),
        "{said}"
    );
    // ssh-keygen, too, checks the bytes: an edited statement fails there.
    let edited = Statement {
        plan_digest: "sha256:9999".into(),
        ..statement()
    };
    let out = ssh_keygen_verify(
        dir.path(),
        &allowed,
        "alice",
        &edited.canonical().unwrap(),
        &signature,
    );
    assert!(!out.status.success(), "{out:?}");
}

#[test]
fn a_signature_ssh_keygen_makes_is_accepted_by_capstan() {
    let dir = tempfile::tempdir().unwrap();
    let (key, public) = keygen(dir.path(), "bob", "");
    let message = statement().canonical().unwrap();
    let signature = ssh_keygen_sign(dir.path(), &key, NAMESPACE, &message);
    let signers = AllowedSigners::parse(&format!("bob {public}")).unwrap();
    assert_eq!(signers.verify(&statement(), &signature).unwrap(), "bob");

    // Made for git, it is no approval, whatever it signs.
    let for_git = ssh_keygen_sign(dir.path(), &key, "git", &message);
    assert!(matches!(
        signers.verify(&statement(), &for_git),
        Err(VerifyError::WrongNamespace { found }) if found == "git"
    ));
}

#[test]
fn an_edited_statement_an_unlisted_key_and_another_namespace_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (key, public) = keygen(dir.path(), "alice", "");
    let (_, mallory) = keygen(dir.path(), "mallory", "");
    let signature = sign(&statement(), &key).unwrap();
    let listed = AllowedSigners::parse(&format!("alice {public}")).unwrap();

    let other_plan = Statement {
        plan_digest: "sha256:9999".into(),
        ..statement()
    };
    let refusal = listed.verify(&other_plan, &signature).unwrap_err();
    assert!(
        matches!(refusal, VerifyError::BadSignature { .. }),
        "{refusal}"
    );
    assert!(
        refusal
            .to_string()
            .starts_with("the signature by alice (SHA256:"),
        "{refusal}"
    );

    let others = AllowedSigners::parse(&format!("mallory {mallory}")).unwrap();
    let refusal = others.verify(&statement(), &signature).unwrap_err();
    assert!(
        matches!(refusal, VerifyError::UnlistedKey { .. }),
        "{refusal}"
    );

    let for_git = AllowedSigners::parse(&format!("alice namespaces=\"other\" {public}")).unwrap();
    let refusal = for_git.verify(&statement(), &signature).unwrap_err();
    assert!(
        matches!(&refusal, VerifyError::NamespaceNotAllowed { namespaces, line: 1, .. } if namespaces == "other"),
        "{refusal}"
    );
    // ssh-keygen agrees, on both.
    let message = statement().canonical().unwrap();
    let line = format!("alice namespaces=\"other\" {public}");
    assert!(
        !ssh_keygen_verify(dir.path(), &line, "alice", &message, &signature)
            .status
            .success()
    );
    let line =
        format!("\"alice\" namespaces=\"git,capstan-*\",valid-after=\"20260101Z\" {public} laptop");
    let both = AllowedSigners::parse(&line).unwrap();
    assert_eq!(both.verify(&statement(), &signature).unwrap(), "alice");
    let out = ssh_keygen_verify(dir.path(), &line, "alice", &message, &signature);
    assert!(out.status.success(), "{out:?}");

    let expired =
        AllowedSigners::parse(&format!("alice valid-before=\"20260601Z\" {public}")).unwrap();
    let refusal = expired.verify(&statement(), &signature).unwrap_err();
    assert!(
        matches!(refusal, VerifyError::OutsideValidity { .. }),
        "{refusal}"
    );

    let refusal = listed.verify(&statement(), "not a signature").unwrap_err();
    assert!(matches!(refusal, VerifyError::Malformed(_)), "{refusal}");
}

#[test]
fn a_key_with_a_passphrase_is_refused_with_how_to_use_it() {
    let dir = tempfile::tempdir().unwrap();
    let (key, _) = keygen(dir.path(), "carol", "correct horse");
    let refusal = sign(&statement(), &key).unwrap_err().to_string();
    assert!(
        refusal.starts_with(&format!(
            "the key {} is protected by a passphrase: load it into ssh-agent",
            key.display()
        )),
        "{refusal}"
    );
    let public = key.with_extension("pub");
    let refusal = sign(&statement(), &public).unwrap_err().to_string();
    assert!(
        refusal.contains("is not an OpenSSH private key"),
        "{refusal}"
    );
}

#[test]
fn allowed_signers_errors_name_the_line() {
    let dir = tempfile::tempdir().unwrap();
    let (_, public) = keygen(dir.path(), "alice", "");
    let cases = [
        ("alice".to_string(), "line 1: no key after the principals"),
        (
            "# c\n\nalice ssh-ed25519 AAAAnotbase64!\n".to_string(),
            "line 3: not a public key",
        ),
        (
            format!("alice {public}\nbob frobnicate {public}"),
            "line 2: unknown option `frobnicate`",
        ),
        (
            format!("alice namespaces=other {public}"),
            "line 1: the value of `namespaces` must be in double quotes",
        ),
        (
            format!("alice valid-after=\"2026\" {public}"),
            "line 1: valid-after=\"2026\" is not a time",
        ),
        (
            format!("\"alice {public}"),
            "line 1: a double quote is not closed",
        ),
        (format!(",alice {public}"), "line 1: an empty principal"),
        (
            "alice namespaces=\"capstan-approval\"\n".to_string(),
            "line 1: no key after the options",
        ),
    ];
    for (text, expected) in cases {
        let problem = AllowedSigners::parse(&text).unwrap_err().to_string();
        assert!(problem.starts_with(expected), "{text:?}: {problem}");
    }
    let ok = AllowedSigners::parse(&format!("# who\nalice,bob {public}\n\n  \n")).unwrap();
    assert_eq!(ok.signers()[0].principals, ["alice", "bob"]);
    assert_eq!(ok.signers()[0].line, 2);
}

/// `ssh-agent -D` on a socket of its own, killed when dropped.
struct TestAgent {
    child: std::process::Child,
    socket: PathBuf,
}

impl TestAgent {
    fn start(dir: &Path) -> TestAgent {
        let socket = dir.join("agent.sock");
        let child = Command::new("ssh-agent")
            .arg("-D")
            .arg("-a")
            .arg(&socket)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("ssh-agent runs (.ci/setup installs openssh-client)");
        for _ in 0..500 {
            if socket.exists() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        TestAgent { child, socket }
    }

    fn add(&self, key: &Path) {
        let out = Command::new("ssh-add")
            .arg("-q")
            .arg(key)
            .env("SSH_AUTH_SOCK", &self.socket)
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
    }
}

impl Drop for TestAgent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn ssh_agent_signs_what_ssh_keygen_and_the_listed_keys_accept() {
    let dir = tempfile::tempdir().unwrap();
    let (bob_key, bob) = keygen(dir.path(), "bob", "");
    // A key with a passphrase: only usable through the agent.
    let (carol_key, carol) = keygen(dir.path(), "carol", "secret words");
    let agent = TestAgent::start(dir.path());
    let mut client = Agent::connect(&agent.socket).unwrap();
    assert!(client.keys().unwrap().is_empty());
    agent.add(&bob_key);
    let mut add = Command::new("ssh-add");
    add.arg(&carol_key)
        .env("SSH_AUTH_SOCK", &agent.socket)
        .env("SSH_ASKPASS_REQUIRE", "force")
        .env("SSH_ASKPASS", dir.path().join("askpass"))
        .stdin(Stdio::null());
    std::fs::write(
        dir.path().join("askpass"),
        "#!/bin/sh\necho 'secret words'\n",
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(
        dir.path().join("askpass"),
        std::fs::Permissions::from_mode(0o700),
    )
    .unwrap();
    let out = add.output().unwrap();
    assert!(out.status.success(), "{out:?}");
    let held = client.keys().unwrap();
    assert_eq!(held.len(), 2);
    let allowed = format!("carol {carol}\n");
    let signers = AllowedSigners::parse(&allowed).unwrap();
    let message = statement().canonical().unwrap();
    // The agent key the pipeline lists is the one used: carol's, not bob's.
    let public = |line: &str| PublicKey::from_openssh(line).unwrap();
    let carols = held
        .iter()
        .find(|k| k.key_data() == public(&carol).key_data())
        .unwrap();
    let signature = client.sign(carols, NAMESPACE, &message).unwrap();
    assert_eq!(signers.verify(&statement(), &signature).unwrap(), "carol");
    let out = ssh_keygen_verify(dir.path(), &allowed, "carol", &message, &signature);
    assert!(out.status.success(), "{out:?}");
    // bob is in the agent but not listed: his signature is nobody's approval.
    let bobs = held
        .iter()
        .find(|k| k.key_data() == public(&bob).key_data())
        .unwrap();
    let by_bob = client.sign(bobs, NAMESPACE, &message).unwrap();
    assert!(matches!(
        signers.verify(&statement(), &by_bob),
        Err(VerifyError::UnlistedKey { .. })
    ));
}
