//! Every kind of bad pipeline file gives exactly the expected message
//! (snapshots in `snapshots/`), with the file, line and column and a fix;
//! every problem at once, each once; never a panic.

use std::time::Duration;

use sha2::Digest;

use crate::harness::Sandbox;

/// A sandbox with a file that is not a component and the old-contract
/// plugin (inside it, so that a caret under its path is as wide everywhere).
fn sandbox() -> Sandbox {
    let sb = Sandbox::new();
    sb.write("not-a-component.wasm", "this is text, not WebAssembly\n");
    std::fs::copy(
        capstan_test_artifacts::OLD_CONTRACT,
        sb.path().join("old-contract.wasm"),
    )
    .unwrap();
    sb
}

/// `capstan validate` on `toml`; the exit code and stderr, with the
/// sandbox path replaced so snapshots are stable.
fn validate(toml: &str) -> String {
    validate_in(&sandbox(), toml)
}

fn validate_in(sb: &Sandbox, toml: &str) -> String {
    let path = sb.pipeline(toml);
    let ran = sb.capstan(&["validate", path.to_str().unwrap()]);
    let text = format!("exit {}\n{}", ran.code, ran.stderr);
    let text = text.replace(&sb.path().to_string_lossy().to_string(), "<sandbox>");
    let artifacts = std::path::Path::new(capstan_test_artifacts::HELLO)
        .parent()
        .unwrap()
        .to_string_lossy()
        .to_string();
    let hello_sha = hex::encode(sha2::Sha256::digest(
        std::fs::read(capstan_test_artifacts::HELLO).unwrap(),
    ));
    text.replace(&artifacts, "<artifacts>")
        .replace(&hello_sha, "<sha256 of hello>")
}

macro_rules! snapshot {
    ($name:ident, $toml:expr) => {
        #[test]
        fn $name() {
            insta::assert_snapshot!(validate($toml));
        }
    };
}

const HEAD: &str = "[pipeline]\nname = \"p\"\n[plugins.hello]\npath = \"{hello}\"\n";

snapshot!(toml_syntax_error, "[pipeline]\nname = \"p\n");

snapshot!(
    unknown_key_in_a_stage,
    &format!("{HEAD}[stages.a]\nplugn = \"hello\"\n")
);

snapshot!(
    duplicate_stage,
    &format!("{HEAD}[stages.a]\nplugin = \"hello\"\n[stages.a]\nplugin = \"hello\"\n")
);

snapshot!(
    unknown_needs_with_a_suggestion,
    &format!(
        "{HEAD}[stages.build]\nplugin = \"hello\"\n[stages.plan]\nplugin = \"hello\"\nneeds = [\"biuld\"]\n"
    )
);

snapshot!(
    cycle,
    &format!(
        "{HEAD}[stages.a]\nplugin = \"hello\"\nneeds = [\"c\"]\n[stages.b]\nplugin = \"hello\"\nneeds = [\"a\"]\n[stages.c]\nplugin = \"hello\"\nneeds = [\"b\"]\n"
    )
);

snapshot!(
    reference_to_a_stage_not_upstream,
    &format!(
        "{HEAD}[stages.build]\nplugin = \"hello\"\n[stages.apply]\nplugin = \"hello\"\nwith = {{ message = \"${{stages.build.outputs.template_id}}\" }}\n"
    )
);

snapshot!(
    reference_to_an_unknown_stage,
    &format!(
        "{HEAD}[stages.apply]\nplugin = \"hello\"\nwith = {{ message = \"id ${{stages.biuld.outputs.id}}\" }}\n"
    )
);

snapshot!(
    malformed_reference,
    &format!(
        "{HEAD}[stages.a]\nplugin = \"hello\"\nwith = {{ message = \"${{stage.build.outputs}}\" }}\n"
    )
);

snapshot!(
    missing_plugin_file,
    "[pipeline]\nname = \"p\"\n[plugins.hello]\npath = \"plugins/missing.wasm\"\n[stages.a]\nplugin = \"hello\"\n"
);

snapshot!(
    sha256_pin_mismatch,
    "[pipeline]\nname = \"p\"\n[plugins.hello]\npath = \"{hello}\"\nsha256 = \"0000000000000000000000000000000000000000000000000000000000000000\"\n[stages.a]\nplugin = \"hello\"\n"
);

snapshot!(
    undeclared_plugin,
    &format!("{HEAD}[stages.a]\nplugin = \"helo\"\n")
);

snapshot!(
    bad_duration,
    &format!("{HEAD}[stages.a]\nplugin = \"hello\"\ntimeout = \"ten minutes\"\n")
);

snapshot!(
    missing_grant_shows_the_lines_to_paste,
    &format!("{HEAD}[stages.greet]\nplugin = \"hello\"\nwith = {{ message = \"hi\" }}\n")
);

snapshot!(
    granted_program_not_installed_and_with_missing_a_required_field,
    &format!(
        "{HEAD}[stages.greet]\nplugin = \"hello\"\n[[stages.greet.grants.exec]]\nprogram = \"echo\"\nargs = [\"*\"]\n[[stages.greet.grants.exec]]\nprogram = \"no-such-tool-capstan\"\n"
    )
);

snapshot!(
    plugin_built_against_another_contract,
    "[pipeline]\nname = \"p\"\n[plugins.old]\npath = \"old-contract.wasm\"\n[stages.a]\nplugin = \"old\"\n"
);

snapshot!(
    file_that_is_not_a_component,
    "[pipeline]\nname = \"p\"\n[plugins.text]\npath = \"not-a-component.wasm\"\n[stages.a]\nplugin = \"text\"\n"
);

snapshot!(
    rollback_reuses_an_unknown_stage,
    &format!(
        "{HEAD}[stages.build]\nplugin = \"hello\"\n[stages.b]\nplugin = \"hello\"\nneeds = [\"build\"]\non_failure = \"rollback\"\n[rollback]\nreuse = [\"bulid\"]\n"
    )
);

snapshot!(
    on_failure_rollback_without_a_rollback_section,
    &format!("{HEAD}[stages.a]\nplugin = \"hello\"\non_failure = \"rollback\"\n")
);

snapshot!(
    on_failure_unknown_value,
    &format!("{HEAD}[stages.a]\nplugin = \"hello\"\non_failure = \"retry\"\n")
);

snapshot!(
    run_if_unknown_value,
    &format!("{HEAD}[stages.a]\nplugin = \"hello\"\nrun_if = \"failed\"\n")
);

snapshot!(
    status_reference_to_a_stage_not_upstream,
    &format!(
        "{HEAD}[stages.a]\nplugin = \"hello\"\n[stages.b]\nplugin = \"hello\"\nrun_if = \"always\"\nwith = {{ message = \"a is ${{stages.a.status}}\" }}\n"
    )
);

snapshot!(
    run_if_failure_without_needs,
    &format!(
        "{HEAD}[stages.notify]\nplugin = \"hello\"\nrun_if = \"failure\"\nwith = {{ message = \"x\" }}\n"
    )
);

snapshot!(
    double_star_that_is_not_the_last_argument_pattern,
    &format!(
        "{HEAD}[stages.a]\nplugin = \"hello\"\n[[stages.a.grants.exec]]\nprogram = \"echo\"\nargs = [\"-n\", \"**\", \"--force\"]\n"
    )
);

snapshot!(
    double_star_inside_a_pattern,
    &format!(
        "{HEAD}[stages.a]\nplugin = \"hello\"\n[[stages.a.grants.exec]]\nprogram = \"echo\"\nargs = [\"*\", \"-out=**|x\"]\n"
    )
);

snapshot!(
    connect_pattern_with_a_name_wildcard,
    &format!(
        "{HEAD}[stages.a]\nplugin = \"hello\"\n[stages.a.grants]\nconnect = [\"127.0.0.1:*\", \"*.internal:22\"]\n"
    )
);

snapshot!(
    protected_names_an_unknown_environment,
    "[pipeline]\nname = \"p\"\nenvironments = [\"dev\", \"production\"]\nprotected = [\"producton\"]\n[plugins.hello]\npath = \"{hello}\"\n[stages.a]\nplugin = \"hello\"\n"
);

// A stage name is a file name in the run directory: one with a path in it
// would put the stage's work dir (writable by its plugin) and log anywhere.
snapshot!(
    stage_name_that_is_a_path,
    &format!("{HEAD}[stages.\"../../state\"]\nplugin = \"hello\"\n")
);

// A stage that another stage needs, itself invalid: `validate` panicked
// (exit 101) on each of these.
snapshot!(
    needs_a_stage_whose_plugin_path_is_a_typo,
    &format!(
        "{HEAD}[plugins.packer]\npath = \"plugins/packr.wasm\"\n[stages.build]\nplugin = \"packer\"\n[stages.plan]\nplugin = \"hello\"\nneeds = [\"build\"]\nwith = {{ message = \"${{stages.build.outputs.id}}\" }}\n"
    )
);

snapshot!(
    needs_a_stage_that_needs_itself,
    &format!(
        "{HEAD}[stages.build]\nplugin = \"hello\"\nneeds = [\"build\"]\n[stages.plan]\nplugin = \"hello\"\nneeds = [\"build\"]\n"
    )
);

snapshot!(
    needs_a_stage_of_an_undeclared_plugin_in_a_cycle,
    &format!(
        "{HEAD}[stages.build]\nplugin = \"packer\"\nneeds = [\"plan\"]\n[stages.plan]\nplugin = \"hello\"\nneeds = [\"build\"]\n"
    )
);

const GREET: &str = "[stages.greet]\nplugin = \"hello\"\nwith = { message = \"hi\" }\n[[stages.greet.grants.exec]]\nprogram = \"echo\"\nargs = [\"*\"]\n";

// The value next to the misspelt key is a reference: the key is checked
// at once all the same, and reported once (not also as a missing `message`).
snapshot!(
    with_key_misspelt_next_to_a_reference,
    &format!(
        "{HEAD}{GREET}[stages.answer]\nplugin = \"hello\"\nneeds = [\"greet\"]\nwith = {{ mesage = \"${{stages.greet.outputs.message}}\" }}\n[[stages.answer.grants.exec]]\nprogram = \"echo\"\nargs = [\"*\"]\n"
    )
);

snapshot!(
    with_value_of_the_wrong_type,
    &format!(
        "{HEAD}[stages.greet]\nplugin = \"hello\"\n[stages.greet.with]\nmessage = [\"hi\", \"${{run.id}}\"]\n[[stages.greet.grants.exec]]\nprogram = \"echo\"\nargs = [\"*\"]\n"
    )
);

snapshot!(
    timeout_longer_than_the_longest_allowed,
    &format!("{HEAD}[stages.a]\nplugin = \"hello\"\ntimeout = \"500000000years\"\n")
);

// Everything is found in one pass, each at its place: two missing
// programs, a `with` key unknown next to a reference, a missing grant, a
// grant that reaches Capstan's state.
#[test]
fn every_problem_at_once() {
    let sb = sandbox();
    std::fs::create_dir(sb.path().join(".capstan")).unwrap();
    insta::assert_snapshot!(validate_in(
        &sb,
        &format!(
            "{HEAD}[stages.a]\nplugin = \"hello\"\nwith = {{ message = \"hi\", colour = \"${{run.id}}\" }}\n[[stages.a.grants.exec]]\nprogram = \"no-such-tool-one\"\n[[stages.a.grants.exec]]\nprogram = \"no-such-tool-two\"\n[stages.b]\nplugin = \"hello\"\nwith = {{ message = \"hi\" }}\n[stages.b.grants]\nread = [\".capstan\"]\n"
        )
    ));
}

#[test]
fn a_with_typo_next_to_a_reference_fails_dry_run_too_with_its_line() {
    let sb = sandbox();
    let path = sb.pipeline(&format!(
        "{HEAD}{GREET}[stages.answer]\nplugin = \"hello\"\nneeds = [\"greet\"]\nwith = {{ mesage = \"${{stages.greet.outputs.message}}\" }}\n[[stages.answer.grants.exec]]\nprogram = \"echo\"\nargs = [\"*\"]\n"
    ));
    let ran = sb.capstan(&["run", path.to_str().unwrap(), "--dry-run"]);
    assert_eq!(ran.code, 4, "{ran:?}");
    assert!(
        ran.stderr.contains("unknown key `mesage` in `with`")
            && ran
                .stderr
                .contains(&format!("--> {}:14:10", path.display())),
        "{ran:?}"
    );
    assert!(!ran.stdout.contains("dry run"), "{ran:?}");
}

#[test]
fn invalid_utf8_is_located() {
    let sb = sandbox();
    let path = sb.path().join("pipeline.toml");
    std::fs::write(&path, b"[pipeline]\nname = \"caf\xe9\"\n").unwrap();
    let ran = sb.capstan(&["validate", path.to_str().unwrap()]);
    assert_eq!(ran.code, 3, "{ran:?}");
    assert!(
        ran.stderr
            .contains("error: the pipeline file is not valid UTF-8 (byte 0xe9)")
            && ran.stderr.contains(&format!("--> {}:2:12", path.display())),
        "{ran:?}"
    );
}

/// Reading a device, a FIFO or a huge file ends at once with a message
/// (the limit guards against a hang; it is not a measure of speed).
#[test]
fn files_that_are_not_pipeline_files_are_refused_without_reading_them_whole() {
    let sb = sandbox();
    let limit = Duration::from_secs(60);
    let (ran, _) = sb.capstan_within(&["validate", "/dev/zero"], limit);
    assert_eq!(ran.code, 3, "{ran:?}");
    assert!(
        ran.stderr.contains(
            "cannot read the pipeline file: it is a character device, not a regular file"
        ),
        "{ran:?}"
    );
    let fifo = sb.path().join("fifo.toml");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).unwrap();
    let (ran, _) = sb.capstan_within(&["run", fifo.to_str().unwrap(), "--dry-run"], limit);
    assert_eq!(ran.code, 3, "{ran:?}");
    assert!(
        ran.stderr.contains("it is a FIFO, not a regular file"),
        "{ran:?}"
    );
    let big = sb.write("big.toml", &"# padding\n".repeat(110_000));
    let (ran, _) = sb.capstan_within(&["validate", big.to_str().unwrap()], limit);
    assert_eq!(ran.code, 3, "{ran:?}");
    assert!(ran.stderr.contains("it is larger than 1.0 MiB"), "{ran:?}");
}

#[test]
fn validate_json_lists_every_problem_with_its_place() {
    let sb = sandbox();
    let path = sb.pipeline(&format!(
        "{HEAD}[stages.a]\nplugin = \"hello\"\nwith = {{ mesage = \"${{run.id}}\" }}\n[[stages.a.grants.exec]]\nprogram = \"no-such-tool-capstan\"\n"
    ));
    let file = path.to_str().unwrap();
    let ran = sb.capstan(&["validate", file, "--json"]);
    assert_eq!(ran.code, 4, "{ran:?}");
    let problems: serde_json::Value = serde_json::from_str(&ran.stdout).unwrap();
    assert_eq!(
        problems,
        serde_json::json!([
            {
                "severity": "error",
                "file": file,
                "line": 7,
                "column": 10,
                "stage": "a",
                "message": "stage `a` (plugin `hello`): unknown key `mesage` in `with`",
                "help": "did you mean `message`?",
            },
            {
                "severity": "error",
                "file": file,
                "line": 8,
                "column": 12,
                "stage": "a",
                "message": "stage `a` (plugin `hello`) requests exec `echo` — \"to print the greeting through a real host program\" — but the pipeline does not grant it",
                "help": "add to the pipeline file:\n\n    [[stages.a.grants.exec]]\n    program = \"echo\"\n    args = [\"**\"]  # narrow to the arguments it needs, e.g. [\"init|plan\", \"**\"]",
            },
            {
                "severity": "error",
                "file": file,
                "line": 9,
                "column": 11,
                "stage": "a",
                "message": "stage `a`: program `no-such-tool-capstan` is granted but not found on PATH (cannot find binary path); install it, or grant it by absolute path",
                "help": null,
            },
        ]),
        "{ran:?}"
    );
    assert_eq!(ran.stderr, "", "{ran:?}");

    // An invalid file: exit 3, the same shape.
    let path = sb.pipeline("[pipeline]\nname = \"p\"\n[stages.a]\nplugn = \"hello\"\n");
    let ran = sb.capstan(&["validate", path.to_str().unwrap(), "--json"]);
    assert_eq!(ran.code, 3, "{ran:?}");
    let problems: serde_json::Value = serde_json::from_str(&ran.stdout).unwrap();
    assert_eq!(problems[0]["line"], 4, "{ran:?}");
    assert_eq!(problems[0]["column"], 1, "{ran:?}");
    assert_eq!(problems.as_array().unwrap().len(), 1, "{ran:?}");

    // A valid file: exit 0, its warnings.
    let path = sb.pipeline(&format!(
        "{HEAD}{GREET}[stages.greet.grants]\nenv = [\"HOME\"]\n"
    ));
    let ran = sb.capstan(&["validate", path.to_str().unwrap(), "--json"]);
    assert_eq!(ran.code, 0, "{ran:?}");
    let problems: serde_json::Value = serde_json::from_str(&ran.stdout).unwrap();
    assert_eq!(problems[0]["severity"], "warning", "{ran:?}");
    assert_eq!(problems[0]["line"], 11, "{ran:?}");
    assert_eq!(problems.as_array().unwrap().len(), 1, "{ran:?}");
}

/// A value that is a reference is checked when the stage starts, once
/// resolved: the stage fails naming the place of the value.
#[test]
fn a_resolved_reference_of_the_wrong_type_fails_its_stage_at_its_place() {
    let sb = sandbox();
    let exec = crate::harness::adversary_stage(
        "a",
        "{ action = \"exec\", program = \"echo\", args = [\"hello\"] }",
        "",
    );
    let path = sb.pipeline(&format!("[pipeline]\nname = \"p\"\n[plugins.adversary]\npath = \"{{adversary}}\"\n[plugins.hello]\npath = \"{{hello}}\"\n{exec}\n[stages.b]\nplugin = \"hello\"\nneeds = [\"a\"]\nwith = {{ message = \"${{stages.a.outputs.exit_code}}\" }}\n[[stages.b.grants.exec]]\nprogram = \"echo\"\nargs = [\"*\"]\n"));
    let text = std::fs::read_to_string(&path).unwrap();
    let line = 1 + text.lines().position(|l| l.contains("exit_code")).unwrap();
    let ran = sb.capstan(&["run", path.to_str().unwrap(), "-q"]);
    assert_eq!(ran.code, 1, "{ran:?}");
    let run = sb.last_run();
    assert_eq!(run.status("a"), "succeeded", "{ran:?}");
    assert_eq!(
        run.reason("b"),
        format!(
            "`with`, its references resolved, does not fit the plugin's config schema: \
             `with.message`: 0 is not of type \"string\" ({}:{line}:20)",
            path.display()
        )
    );
}
