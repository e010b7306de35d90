//! Every kind of bad pipeline file gives exactly the expected message
//! (snapshots in `snapshots/`), with the file, line and column and a fix.

use sha2::Digest;

use crate::harness::Sandbox;

/// `capstan validate` on `toml`; the exit code and stderr, with the
/// sandbox path replaced so snapshots are stable.
fn validate(toml: &str) -> String {
    let sb = Sandbox::new();
    sb.write("not-a-component.wasm", "this is text, not WebAssembly\n");
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
    "[pipeline]\nname = \"p\"\n[plugins.old]\npath = \"{old_contract}\"\n[stages.a]\nplugin = \"old\"\n"
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
