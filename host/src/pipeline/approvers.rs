//! `[approvers]`, validated: the SSH keys whose signatures count as
//! approvals, from `allowed_signers` lines written in the pipeline file
//! and/or an `allowed_signers` file it names. The text is kept as read: a
//! run stores it when it starts, and its approvals are checked against that
//! copy (see `caps::approval::trust`).

use std::path::Path;

use super::diag::Diagnostic;
use super::file::ApproversEntry;
use super::read::read_bounded;
use super::source::{Part, SourceMap};
use crate::caps::approval::signature::AllowedSigners;

/// The approvers' keys of a pipeline.
#[derive(Debug, Clone)]
pub struct Approvers {
    /// In `allowed_signers` format: the file's lines, then the inline ones.
    pub text: String,
    pub signers: AllowedSigners,
}

/// Larger than any list of people's keys.
const MAX_FILE: u64 = 1 << 20;

pub fn validate(
    entry: &ApproversEntry,
    dir: &Path,
    map: &SourceMap,
) -> Result<Approvers, Vec<Diagnostic>> {
    let mut problems = Vec::new();
    let mut text = String::new();
    if let Some(file) = &entry.allowed_signers {
        let path = dir.join(file.get_ref());
        let at = map.error_at(Some(file.span()), String::new());
        match read_bounded(&path, MAX_FILE).map(String::from_utf8) {
            Ok(Ok(body)) => match AllowedSigners::parse(&body) {
                Ok(_) => {
                    text.push_str(&body);
                    if !text.ends_with('\n') {
                        text.push('\n');
                    }
                }
                Err(e) => problems.push(Diagnostic {
                    message: format!(
                        "[approvers] allowed_signers {}:{}: {}",
                        path.display(),
                        e.line,
                        e.problem
                    ),
                    help: Some(
                        "each line is `<principals> [options] <key type> <base64 key>`, as \
                         `ssh-keygen -Y verify` reads it (ssh-keygen(1), ALLOWED SIGNERS)"
                            .into(),
                    ),
                    ..at
                }),
            },
            Ok(Err(_)) => problems.push(Diagnostic {
                message: format!(
                    "[approvers] allowed_signers {} is not UTF-8 text",
                    path.display()
                ),
                help: Some("give an allowed_signers text file".into()),
                ..at
            }),
            Err(e) => problems.push(Diagnostic {
                message: format!("[approvers] allowed_signers {}: {e}", path.display()),
                help: Some(format!(
                    "create it, or fix the path (relative to {})",
                    dir.display()
                )),
                ..at
            }),
        }
    }
    for (i, line) in entry.keys.iter().enumerate() {
        match AllowedSigners::parse(line.get_ref()) {
            Ok(one) if one.signers().len() == 1 => {
                text.push_str(line.get_ref().trim());
                text.push('\n');
            }
            Ok(_) => problems.push(Diagnostic {
                message: "[approvers] keys: each entry is one allowed_signers line".into(),
                help: Some("e.g. keys = [\"bob ssh-ed25519 AAAAC3Nza...\"]".into()),
                ..map.error(&["approvers", "keys", &i.to_string()], Part::Value, "")
            }),
            Err(e) => problems.push(Diagnostic {
                message: format!("[approvers] keys: {}", e.problem),
                help: Some(
                    "write `<principal> <key type> <base64 key>`, e.g. the output of \
                     `echo \"bob $(cat ~/.ssh/id_ed25519.pub)\"`"
                        .into(),
                ),
                ..map.error(&["approvers", "keys", &i.to_string()], Part::Value, "")
            }),
        }
    }
    if !problems.is_empty() {
        return Err(problems);
    }
    // An [approvers] table that lists nobody would silently mean "names
    // only": the opposite of what writing it asks for.
    if text.trim().is_empty() {
        let span = map.nearest(&["approvers"], Part::Key);
        return Err(vec![
            map.error_at(Some(span), "[approvers] lists no key")
                .help("list the approvers' public keys, or remove [approvers] (approvals are then names only, \"identity not verified\")"),
        ]);
    }
    let signers = AllowedSigners::parse(&text).expect("each part parsed");
    Ok(Approvers { text, signers })
}

#[cfg(test)]
mod tests {
    use crate::pipeline::Pipeline;

    const KEY: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIEcc7xSj9SIjYCMpbLN2RtQlA/ylZYkXgB1VOeZ6cqWb";

    /// `[approvers]` and the stages after a one-plugin header, loaded from a
    /// temporary directory that also holds `files`.
    fn load(tail: &str, files: &[(&str, &str)]) -> Result<Pipeline, String> {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("x.wasm"), b"").unwrap();
        for (name, text) in files {
            std::fs::write(dir.path().join(name), text).unwrap();
        }
        let text = format!(
            "[pipeline]\nname = \"p\"\n[plugins.x]\npath = \"x.wasm\"\n\
             [stages.plan]\nplugin = \"x\"\n\
             [stages.approve]\nplugin = \"x\"\nneeds = [\"plan\"]\nimage_digest = \"${{stages.plan.outputs.image}}\"\n\
             [stages.approve.grants]\napproval = true\n{tail}"
        );
        let file = dir.path().join("pipeline.toml");
        std::fs::write(&file, &text).unwrap();
        Pipeline::load(&file).map_err(|d| d.to_string())
    }

    const APPLY: &str = "[stages.apply]\nplugin = \"x\"\nneeds = [\"approve\"]\n\
        with = { approved_digest = \"${stages.approve.outputs.digest}\" }\n\
        requires_approval = { stage = \"approve\", digest = \"approved_digest\" }\n";

    #[test]
    fn keys_come_from_the_file_and_the_pipeline_and_bad_lines_are_named() {
        let p = load(
            &format!(
                "{APPLY}[approvers]\nallowed_signers = \"signers\"\nkeys = [\"carol {KEY}\"]\n"
            ),
            &[("signers", &format!("# team\nbob {KEY}\n"))],
        )
        .unwrap();
        let approvers = p.approvers.unwrap();
        let names: Vec<&str> = approvers
            .signers
            .signers()
            .iter()
            .map(|s| s.principal())
            .collect();
        assert_eq!(names, ["bob", "carol"]);
        let gate = p.stages["apply"].requires_approval.clone().unwrap();
        assert_eq!(
            (gate.stage.as_str(), gate.digest_key.as_str()),
            ("approve", "approved_digest")
        );
        assert_eq!(
            p.stages["approve"].image_digest.as_deref(),
            Some("${stages.plan.outputs.image}")
        );
        assert!(load("", &[]).unwrap().approvers.is_none());

        let bad_file = load(
            "[approvers]\nallowed_signers = \"signers\"\n",
            &[("signers", &format!("bob {KEY}\nnot a key line\n"))],
        )
        .unwrap_err();
        assert!(bad_file.contains("signers:2:"), "{bad_file}");
        let missing = load("[approvers]\nallowed_signers = \"nope\"\n", &[]).unwrap_err();
        assert!(
            missing.contains("[approvers] allowed_signers") && missing.contains("nope"),
            "{missing}"
        );
        let bad_inline =
            load("[approvers]\nkeys = [\"carol ssh-ed25519 AAAA!!\"]\n", &[]).unwrap_err();
        assert!(
            bad_inline.contains("pipeline.toml:") && bad_inline.contains("[approvers] keys"),
            "{bad_inline}"
        );
        let empty = load("[approvers]\nkeys = []\n", &[]).unwrap_err();
        assert!(empty.contains("[approvers] lists no key"), "{empty}");
    }

    #[test]
    fn requires_approval_names_an_upstream_approval_stage_and_a_with_key() {
        let apply = |gate: &str, needs: &str| {
            format!(
                "[stages.apply]\nplugin = \"x\"\nneeds = [{needs}]\n\
                 with = {{ approved_digest = \"d\" }}\nrequires_approval = {gate}\n"
            )
        };
        let cases = [
            (
                apply(
                    "{ stage = \"nope\", digest = \"approved_digest\" }",
                    "\"approve\"",
                ),
                "names stage `nope`, which does not exist",
            ),
            (
                apply(
                    "{ stage = \"approve\", digest = \"approved_digest\" }",
                    "\"plan\"",
                ),
                "which is not upstream of `apply`",
            ),
            (
                apply(
                    "{ stage = \"plan\", digest = \"approved_digest\" }",
                    "\"approve\"",
                ),
                "which is not granted `approval`",
            ),
            (
                apply(
                    "{ stage = \"approve\", digest = \"digest\" }",
                    "\"approve\"",
                ),
                "its `with` has no string `digest`",
            ),
        ];
        for (tail, want) in cases {
            let e = load(&tail, &[]).unwrap_err();
            assert!(e.contains(want), "{want}: {e}");
        }
        let e = load(
            "[stages.other]\nplugin = \"x\"\nimage_digest = \"${stages.plan.outputs.image}\"\n",
            &[],
        )
        .unwrap_err();
        assert!(e.contains("`plan` is not upstream of `other`"), "{e}");
    }
}
