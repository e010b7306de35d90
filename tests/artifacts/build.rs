//! Builds the wasm plugins the tests load, with a nested `cargo build
//! --release --target wasm32-wasip2` (as wasmtime's
//! `crates/test-programs/artifacts/build.rs` does), and writes
//! `$OUT_DIR/artifacts.rs` with one path constant per plugin.
//!
//! To add a plugin, add it to [`PLUGINS`].

use std::env;
use std::ffi::OsString;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The plugin packages to build: `(cargo package, directory from the
/// workspace root)`. Each gets a constant named after the package without
/// its `capstan-` prefix (`capstan-old-contract` → `OLD_CONTRACT`), whose
/// value is the path of `<package with _ for ->.wasm`.
const PLUGINS: &[(&str, &str)] = &[
    ("capstan-hello", "examples/hello/plugin"),
    ("capstan-packer", "plugins/packer"),
    ("capstan-terraform", "plugins/terraform"),
    ("capstan-approval", "plugins/approval"),
    ("capstan-ansible", "plugins/ansible"),
    ("capstan-smoke-test", "plugins/smoke-test"),
    ("capstan-command", "plugins/command"),
    ("capstan-notify", "plugins/notify"),
    ("capstan-custom-stage", "examples/custom-stage/plugin"),
    ("capstan-adversary", "tests/plugins/adversary"),
    ("capstan-leaky", "tests/plugins/leaky"),
    ("capstan-old-contract", "tests/plugins/old-contract"),
    ("capstan-sleepy-describe", "tests/plugins/sleepy-describe"),
];

/// Also rebuild when these change (paths from the workspace root).
const WATCH: &[&str] = &[
    "wit",
    "plugins/sdk",
    "tests/plugins",
    "Cargo.toml",
    "Cargo.lock",
];

const TARGET: &str = "wasm32-wasip2";

/// Variables of the outer build that would break, or leak into, the nested
/// one: flags meant for the host target, the outer target and target dir,
/// and wrappers such as clippy-driver.
const REMOVE_ENV: &[&str] = &[
    "CARGO_ENCODED_RUSTFLAGS",
    "RUSTFLAGS",
    "CARGO_BUILD_RUSTFLAGS",
    "CARGO_BUILD_TARGET",
    "CARGO_TARGET_DIR",
    "CARGO_BUILD_TARGET_DIR",
    "CARGO_BUILD_BUILD_DIR",
    "RUSTC_WORKSPACE_WRAPPER",
    "CARGO_PRIMARY_PACKAGE",
    "CARGO_MAKEFLAGS",
    "MAKEFLAGS",
    "MFLAGS",
];

fn main() {
    let manifest_dir = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").unwrap());
    let workspace = manifest_dir.join("../..").canonicalize().unwrap();
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").unwrap());
    let target_dir = workspace.join("target").join("wasm-artifacts");

    for path in WATCH.iter().chain(PLUGINS.iter().map(|(_, dir)| dir)) {
        println!("cargo:rerun-if-changed={}", workspace.join(path).display());
    }

    check_target();

    let mut cmd = Command::new(env::var_os("CARGO").unwrap_or_else(|| OsString::from("cargo")));
    cmd.current_dir(&workspace)
        .args(["build", "--release", "--target", TARGET])
        // Cargo parses this script's stdout: keep the nested build off it.
        .stdout(Stdio::from(std::io::stderr()));
    for (package, _) in PLUGINS {
        cmd.args(["-p", package]);
    }
    for var in REMOVE_ENV {
        cmd.env_remove(var);
    }
    // A target dir of its own: the outer build holds the lock on `target/`.
    cmd.env("CARGO_TARGET_DIR", &target_dir);
    if env::var_os("CARGO_CFG_MIRI").is_some() {
        cmd.env_remove("RUSTC").env_remove("RUSTC_WRAPPER");
    }
    eprintln!("running: {cmd:?}");
    let status = cmd
        .status()
        .expect("failed to start the nested `cargo build`");
    assert!(
        status.success(),
        "building the wasm plugins failed ({status}); see the output above"
    );

    let release = target_dir.join(TARGET).join("release");
    let mut code = String::new();
    let mut all = String::new();
    for (package, dir) in PLUGINS {
        let wasm = release.join(format!("{}.wasm", package.replace('-', "_")));
        assert!(
            wasm.is_file(),
            "the nested build did not produce {}",
            wasm.display()
        );
        let name = package
            .trim_start_matches("capstan-")
            .replace('-', "_")
            .to_uppercase();
        writeln!(code, "/// `{package}` (`{dir}`), built for `{TARGET}`.").unwrap();
        writeln!(
            code,
            "pub const {name}: &str = {:?};",
            wasm.to_str().unwrap()
        )
        .unwrap();
        writeln!(all, "    ({package:?}, {name}),").unwrap();
    }
    writeln!(
        code,
        "/// Every plugin above, as `(cargo package, path of the .wasm)`."
    )
    .unwrap();
    writeln!(code, "pub const ALL: &[(&str, &str)] = &[\n{all}];").unwrap();
    std::fs::write(out_dir.join("artifacts.rs"), code).unwrap();
}

/// Fail early, and clearly, when the wasm target is not installed.
fn check_target() {
    let rustc = env::var_os("RUSTC").unwrap_or_else(|| OsString::from("rustc"));
    let libdir = Command::new(&rustc)
        .args(["--print", "target-libdir", "--target", TARGET])
        .output()
        .ok()
        .filter(|out| out.status.success())
        .map(|out| PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()));
    if !libdir.as_deref().is_some_and(Path::is_dir) {
        eprintln!(
            "error: the Rust target `{TARGET}` is not installed, and the test plugins need it.\n\
             Run: rustup target add {TARGET}"
        );
        std::process::exit(1);
    }
}
