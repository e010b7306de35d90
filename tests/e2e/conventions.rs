//! What a new user meets first: the pipeline file's JSON Schema checked by
//! a real editor engine (taplo, which Even Better TOML runs), shell
//! completions and manual pages, `capstan plugin new` building and running
//! as created, and a plugin built for the wrong target told how to fix it.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::golden_image;
use crate::harness::{Ran, Sandbox};

/// `taplo lint` of `file` against the schema at `schema` (none: the file's
/// own `#:schema` directive), with no configuration file or catalog.
fn taplo(file: &Path, schema: Option<&Path>) -> Output {
    let mut cmd = Command::new("taplo");
    cmd.args(["lint", "--no-auto-config", "--colors", "never"]);
    if let Some(schema) = schema {
        cmd.arg("--schema")
            .arg(format!("file://{}", schema.display()));
    }
    cmd.arg(file)
        .output()
        .expect("taplo (PyPI `taplo`, installed by .ci/setup) runs")
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn the_schema_of_a_pipeline_checks_it_and_its_plugins_with_in_taplo() {
    let sb = Sandbox::new();
    let snippet = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../examples/custom-stage/pipeline-snippet.toml"
    ))
    .unwrap()
    .replace(
        "../../target/wasm32-wasip2/release/capstan_custom_stage.wasm",
        capstan_test_artifacts::CUSTOM_STAGE,
    );
    let pipeline = golden_image::example(&sb, |text| text + &snippet);
    let schema = sb.path().join("gi/pipeline.schema.json");
    let ran = sb.capstan(&[
        "schema",
        pipeline.to_str().unwrap(),
        "--out",
        schema.to_str().unwrap(),
    ]);
    assert_eq!(ran.code, 0, "{ran:?}");
    let written: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&schema).unwrap()).unwrap();
    for key in ["terraform.with", "approval.with", "change-window.with"] {
        assert!(
            written["definitions"][key].is_object(),
            "{key} missing from {:?}",
            written["definitions"].as_object().unwrap().keys()
        );
    }
    let out = taplo(&pipeline, Some(&schema));
    assert!(out.status.success(), "{}", text(&out));

    // Mistakes inside `with` tables, as an editor shows them: a misspelt
    // key of the terraform plugin, a wrong type for the change-window one.
    let original = std::fs::read_to_string(&pipeline).unwrap();
    let wrong = original
        .replacen(
            "max_destroy = 0\nforbid_replace",
            "max_destroyy = 0\nforbid_replace",
            1,
        )
        .replace("hours = \"08:00-16:00\"", "hours = 8");
    assert_ne!(wrong, original);
    // The way the README tells editors to find the schema.
    let bad = sb.write(
        "gi/bad.toml",
        &format!("#:schema ./pipeline.schema.json\n{wrong}"),
    );
    let out = taplo(&bad, None);
    let said = text(&out);
    assert!(!out.status.success(), "{said}");
    assert!(said.contains("'max_destroyy' was unexpected"), "{said}");
    assert!(
        said.contains("8 is not valid under any of the schemas"),
        "{said}"
    );
    // capstan agrees (its own message is the one to act on).
    let ran = sb.capstan(&["validate", bad.to_str().unwrap()]);
    assert_eq!(ran.code, 4, "{ran:?}");
    assert!(ran.stderr.contains("max_destroyy"), "{ran:?}");
}

#[test]
fn the_schema_of_any_pipeline_checks_the_examples_in_taplo() {
    let sb = Sandbox::new();
    let ran = sb.capstan(&["schema"]);
    assert_eq!(ran.code, 0, "{ran:?}");
    let schema = sb.write("capstan.schema.json", &ran.stdout);
    let examples = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../examples"));
    for example in ["hello/pipeline.toml", "golden-image/pipeline.toml"] {
        let out = taplo(&examples.join(example), Some(&schema));
        assert!(out.status.success(), "{example}: {}", text(&out));
    }
    let typo = sb.write(
        "typo.toml",
        "[pipeline]\nname = \"p\"\n[stages.a]\nplugin = \"x\"\ntimout = \"5m\"\n",
    );
    let out = taplo(&typo, Some(&schema));
    assert!(!out.status.success());
    assert!(
        text(&out).contains("'timout' was unexpected"),
        "{}",
        text(&out)
    );
}

#[test]
fn a_schema_needs_a_valid_pipeline_and_loadable_plugins() {
    let sb = Sandbox::new();
    let invalid = sb.pipeline("[pipeline]\nname = \"p\"\n[stages.a]\nplugin = \"nope\"\n");
    let ran = sb.capstan(&["schema", invalid.to_str().unwrap()]);
    assert_eq!(ran.code, 3, "{ran:?}");
    assert!(ran.stdout.is_empty(), "{ran:?}");
    sb.write("text.wasm", "not a plugin\n");
    let broken = sb.pipeline(
        "[pipeline]\nname = \"p\"\n[plugins.t]\npath = \"text.wasm\"\n[stages.a]\nplugin = \"t\"\n",
    );
    let ran = sb.capstan(&["schema", broken.to_str().unwrap()]);
    assert_eq!(ran.code, 4, "{ran:?}");
    assert!(
        ran.stderr.contains("plugin `t`: `") && ran.stderr.contains("no schema was made"),
        "{ran:?}"
    );
}

#[test]
fn bash_completes_subcommands_and_their_options() {
    let sb = Sandbox::new();
    let ran = sb.capstan(&["completions", "bash"]);
    assert_eq!(ran.code, 0, "{ran:?}");
    for sub in ["run", "validate", "schema", "plugin", "completions", "man"] {
        assert!(ran.stdout.contains(sub), "{sub}");
    }
    let script = sb.write("capstan.bash", &ran.stdout);
    // What bash offers after `capstan ru<TAB>` and `capstan plugin n<TAB>`.
    let complete = |words: &str| -> String {
        let line = format!(
            "source {}; COMP_WORDS=({words}); COMP_CWORD=$((${{#COMP_WORDS[@]}} - 1)); \
             _capstan capstan \"${{COMP_WORDS[-1]}}\" \"${{COMP_WORDS[-2]}}\"; echo \"${{COMPREPLY[@]}}\"",
            script.display()
        );
        let out = Command::new("bash").args(["-c", &line]).output().unwrap();
        assert!(out.status.success(), "{}", text(&out));
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    assert_eq!(complete("capstan ru"), "run runs");
    assert_eq!(complete("capstan plugin n"), "new");
    assert!(complete("capstan schema --").contains("--out"));
    for shell in ["zsh", "fish", "elvish", "powershell"] {
        let ran = sb.capstan(&["completions", shell]);
        assert_eq!(ran.code, 0, "{shell}: {ran:?}");
        assert!(ran.stdout.contains("completions"), "{shell}");
    }
    let ran = sb.capstan(&["completions", "tcsh"]);
    assert_eq!(ran.code, 2, "{ran:?}");
    assert!(ran.stderr.contains("possible values: bash"), "{ran:?}");
}

#[test]
fn manual_pages_cover_every_command() {
    let sb = Sandbox::new();
    let ran = sb.capstan(&["man"]);
    assert_eq!(ran.code, 0, "{ran:?}");
    assert!(ran.stdout.contains("\n.TH capstan 1 "), "{}", ran.stdout);
    assert!(ran.stdout.contains(".SH SUBCOMMANDS"));
    for sub in [
        "capstan\\-run(1)",
        "capstan\\-schema(1)",
        "capstan\\-plugin(1)",
    ] {
        assert!(ran.stdout.contains(sub), "{sub}");
    }
    assert!(
        ran.stdout.contains("Exit codes:"),
        "the exit codes are in the page"
    );

    let dir = sb.path().join("man1");
    std::fs::create_dir(&dir).unwrap();
    let ran = sb.capstan(&["man", "--out", dir.to_str().unwrap()]);
    assert_eq!(ran.code, 0, "{ran:?}");
    let written: Vec<PathBuf> = ran.stdout.lines().map(PathBuf::from).collect();
    for page in [
        "capstan.1",
        "capstan-run.1",
        "capstan-plugin-new.1",
        "capstan-man.1",
    ] {
        let path = dir.join(page);
        assert!(written.contains(&path), "{page} not listed: {written:?}");
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains(".TH "), "{page}");
    }
    assert!(!dir.join("capstan-help.1").exists());
    let ran = sb.capstan(&["man", "--out", sb.path().join("missing").to_str().unwrap()]);
    assert_eq!(ran.code, 2, "{ran:?}");
    assert!(
        ran.stderr.contains("cannot write the manual pages"),
        "{ran:?}"
    );
}

/// `cargo` as the tests' own build runs it, without what the outer build
/// sets for itself (its target dir, flags, wrappers).
fn cargo(dir: &Path, target_dir: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO"));
    cmd.current_dir(dir).env("CARGO_TARGET_DIR", target_dir);
    for var in [
        "CARGO_ENCODED_RUSTFLAGS",
        "RUSTFLAGS",
        "CARGO_BUILD_RUSTFLAGS",
        "CARGO_BUILD_TARGET",
        "CARGO_BUILD_TARGET_DIR",
        "RUSTC_WORKSPACE_WRAPPER",
        "RUSTC_WRAPPER",
        "CARGO_MAKEFLAGS",
        "MAKEFLAGS",
    ] {
        cmd.env_remove(var);
    }
    cmd
}

/// Where the test plugins were built (`target/wasm-artifacts`): a new
/// plugin built there reuses their compiled dependencies.
fn artifacts_target_dir() -> PathBuf {
    Path::new(capstan_test_artifacts::HELLO)
        .ancestors()
        .nth(3)
        .expect("…/wasm-artifacts/wasm32-wasip2/release/x.wasm")
        .to_path_buf()
}

#[test]
fn a_new_plugin_builds_offline_and_runs_as_created() {
    let sb = Sandbox::new();
    let dir = sb.path().join("demo");
    let ran = sb.capstan(&["plugin", "new", "demo", "--path", dir.to_str().unwrap()]);
    assert_eq!(ran.code, 0, "{ran:?}");
    assert!(ran.stdout.contains("cargo build --release"), "{ran:?}");
    for file in [
        ".cargo/config.toml",
        "Cargo.lock",
        "src/lib.rs",
        "pipeline.toml",
        "README.md",
    ] {
        assert!(dir.join(file).is_file(), "{file}");
    }

    // `cargo build --release`, as the new README says: the target comes
    // from .cargo/config.toml, the crates from the lock file it started
    // with and cargo's cache.
    let target = artifacts_target_dir();
    let out = cargo(&dir, &target)
        .args(["build", "--release", "--offline"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let built = target.join("wasm32-wasip2/release/demo.wasm");
    // Where the pipeline looks for it without a shared target dir.
    let expected = dir.join("target/wasm32-wasip2/release/demo.wasm");
    std::fs::create_dir_all(expected.parent().unwrap()).unwrap();
    std::fs::copy(&built, &expected).unwrap();

    let pipeline = dir.join("pipeline.toml");
    let ran = sb.capstan(&["run", pipeline.to_str().unwrap()]);
    assert_eq!(ran.code, 0, "{ran:?}");
    let run = sb.last_run();
    assert_eq!(run.status("greet"), "succeeded");
    assert_eq!(run.output("greet", "greeting"), "Hello, world!");
    assert_eq!(
        run.log("greet").matches("Hello, world!").count(),
        2,
        "{}",
        run.log("greet")
    );
    let greeting = run.dir.join("stages/greet/greeting.txt");
    assert_eq!(
        std::fs::read_to_string(greeting).unwrap(),
        "Hello, world!\n"
    );

    // Its schema reaches the pipeline's: `with` is checked in the editor.
    let ran = sb.capstan(&["schema", pipeline.to_str().unwrap()]);
    assert_eq!(ran.code, 0, "{ran:?}");
    let schema: serde_json::Value = serde_json::from_str(&ran.stdout).unwrap();
    let with = &schema["definitions"]["demo.with"];
    assert_eq!(with["required"], serde_json::json!(["name"]), "{with:#}");

    // Built for the host instead, it stops at once with the fix.
    let host = host_triple();
    let out = cargo(&dir, &target)
        .args(["build", "--release", "--offline", "--target", &host])
        .output()
        .unwrap();
    let said = text(&out);
    assert!(!out.status.success(), "{said}");
    assert!(
        said.contains("this Capstan plugin is being built for the wrong target")
            && said.contains("add `--target wasm32-wasip2`"),
        "{said}"
    );
    assert!(!said.contains("linking with"), "no linker error: {said}");
}

/// The machine's own target, as rustc names it.
fn host_triple() -> String {
    let out = Command::new("rustc").arg("-vV").output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("host: "))
        .expect("rustc -vV names the host")
        .to_string()
}

#[test]
fn a_new_plugin_needs_a_free_directory_and_a_usable_name() {
    let sb = Sandbox::new();
    let taken = sb.write("taken/file", "x");
    let ran = sb.capstan(&[
        "plugin",
        "new",
        "demo",
        "--path",
        taken.parent().unwrap().to_str().unwrap(),
    ]);
    assert_eq!(ran.code, 2, "{ran:?}");
    assert!(ran.stderr.contains("exists and is not empty"), "{ran:?}");
    for (name, reason) in [
        ("2fast", "must start with a letter"),
        ("my plugin", "may hold only letters"),
        ("fn", "is a Rust keyword"),
    ] {
        let ran = sb.capstan(&["plugin", "new", name]);
        assert_eq!(ran.code, 2, "{name}: {ran:?}");
        assert!(
            ran.stderr
                .contains(&format!("`{name}` cannot name a plugin"))
                && ran.stderr.contains(reason),
            "{name}: {ran:?}"
        );
        assert!(!sb.path().join(name).exists());
    }
    let ran = sb.capstan(&[
        "plugin",
        "new",
        "demo",
        "--sdk",
        sb.path().to_str().unwrap(),
    ]);
    assert_eq!(ran.code, 2, "{ran:?}");
    assert!(
        ran.stderr.contains("is not the capstan-plugin SDK"),
        "{ran:?}"
    );
}

/// A host library where the pipeline expects a component: what a plugin
/// built without `--target wasm32-wasip2` is.
#[test]
fn a_plugin_built_for_the_host_is_refused_with_the_fix() {
    let sb = Sandbox::new();
    let library = sb.path().join("native.wasm");
    let out = Command::new("rustc")
        .args(["--crate-type", "cdylib", "--crate-name", "native", "-o"])
        .arg(&library)
        .arg(sb.write(
            "native.rs",
            "#[unsafe(no_mangle)]\npub extern \"C\" fn describe() {}\n",
        ))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let pipeline = sb.pipeline(
        "[pipeline]\nname = \"p\"\n[plugins.native]\npath = \"native.wasm\"\n[stages.a]\nplugin = \"native\"\n",
    );
    let ran: Ran = sb.capstan(&["validate", pipeline.to_str().unwrap()]);
    assert_eq!(ran.code, 4, "{ran:?}");
    assert!(
        ran.stderr.contains("is a native ELF shared library")
            && ran.stderr.contains(
                "the plugin was built for the wrong target; add `--target wasm32-wasip2`"
            ),
        "{ran:?}"
    );
    let ran = sb.capstan(&["plugin", "describe", library.to_str().unwrap()]);
    assert_eq!(ran.code, 4, "{ran:?}");
    assert!(
        ran.stderr.contains("add `--target wasm32-wasip2`"),
        "{ran:?}"
    );
}
