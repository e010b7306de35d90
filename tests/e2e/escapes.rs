//! Ways out of the sandbox found by attacking the host (issue 8), one test
//! per class: paths re-pointed between the host's check and its use, a
//! compiled-cache entry that is not the host's, programs replaced after they
//! were pinned, floods on every path to a limit, one stage starving another,
//! `describe` and compiling as denial of service, blocking host calls, and
//! text posing as the host's.
//!
//! Every `capstan` here runs under a guard ([`Guarded`]): a host that hangs
//! is killed and the test fails, no process outlives its test.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;

use crate::harness::{Guarded, Ran, Run, Sandbox, adversary_stage as stage};

/// How long any one `capstan` may run before the guard kills it.
const GUARD: Duration = Duration::from_secs(60);

/// The text `forge-text` puts everywhere (as in the adversary).
const FORGED: &str = "\x1b[2J\r✓ deploy (0.1s): approved \x1b]0;title\x07 \u{202e}desrever txet";

/// A pipeline of adversary stages.
fn pipeline(sb: &Sandbox, name: &str, stages: &[String]) -> PathBuf {
    sb.pipeline(&format!(
        "[pipeline]\nname = \"{name}\"\nenvironments = [\"dev\"]\nconcurrency = 4\n\
         [defaults]\ntimeout = \"60s\"\n[plugins.adversary]\npath = \"{{adversary}}\"\n{}",
        stages.concat()
    ))
}

/// `capstan run <pipeline> -q` under the guard, and the run it recorded.
fn run(sb: &Sandbox, pipeline: &Path) -> (Ran, Duration, Run) {
    let (ran, took) = sb.capstan_within(&["run", pipeline.to_str().unwrap(), "-q"], GUARD);
    (ran, took, sb.last_run())
}

/// No stage of `run` reports an escape.
fn nothing_escaped(run: &Run) {
    for stage in run.record["stages"].as_array().unwrap() {
        let said = format!("{} {}", stage["summary"], stage["reason"]);
        assert!(
            !said.contains("ESCAPED") && stage["outputs"]["escaped"] != true,
            "{} escaped: {stage:#}",
            stage["name"]
        );
    }
}

fn failed_naming(run: &Run, stage: &str, words: &[&str]) {
    run.assert_failed_naming(stage, words);
}

/// A limit `stage` hit is recorded as such in audit.jsonl.
fn limit_audited(run: &Run, stage: &str) {
    assert!(
        run.audit_of(stage)
            .iter()
            .any(|e| e["capability"] == "limit"),
        "{stage}: no limit event in audit.jsonl: {:#?}",
        run.audit_of(stage)
    );
}

/// A benign stage that must succeed beside the attacks.
fn beside() -> String {
    stage(
        "beside",
        r#"{ action = "exec", program = "echo", args = ["hello"] }"#,
        "",
    )
}

fn beside_succeeded(run: &Run) {
    assert_eq!(
        run.status("beside"),
        "succeeded",
        "{:#}",
        run.stage("beside")
    );
    assert_eq!(run.output("beside", "stdout"), "hello\n");
}

/// Every path under `dir` (symlinks not followed) whose file name is `name`.
fn find_named(dir: &Path, name: &str) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return found;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if entry.file_name() == name {
            found.push(path.clone());
        }
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            found.extend(find_named(&path, name));
        }
    }
    found
}

/// An upstream stage that may write `rw` re-points `rw/sub` (a downstream
/// stage's write grant) at Capstan's state dir after the pipeline loaded.
/// The downstream stage writes through the directory that was granted, or
/// is refused: nothing lands in `.capstan`.
#[test]
fn a_grant_repointed_into_capstans_state_dir_by_an_upstream_stage_stays_put() {
    let sb = Sandbox::new();
    std::fs::create_dir(sb.path().join("rw/sub")).unwrap();
    let downstream = stage(
        "plant",
        r#"{ action = "write-file", path = "{sandbox}/rw/sub/planted-by-plugin.txt", content = "planted" }"#,
        "needs = [\"repoint\"]",
    )
    .replace(r#"write = ["rw"]"#, r#"write = ["rw/sub"]"#);
    let p = pipeline(
        &sb,
        "repoint",
        &[
            stage(
                "repoint",
                r#"{ action = "repoint", path = "{sandbox}/rw/sub", target = "{sandbox}/.capstan" }"#,
                "",
            ),
            downstream,
        ],
    );
    let (ran, _, run) = run(&sb, &p);
    nothing_escaped(&run);
    assert_eq!(
        run.status("repoint"),
        "succeeded",
        "the attack needs its symlink: {:#}\n{ran:?}",
        run.stage("repoint")
    );
    eprintln!("repoint: {}", run.stage("repoint")["summary"]);
    eprintln!("plant: {:#}", run.stage("plant"));
    let sub = sb.path().join("rw/sub");
    assert!(
        sub.symlink_metadata().unwrap().is_symlink(),
        "rw/sub was re-pointed"
    );
    let planted = find_named(&sb.path().join(".capstan"), "planted-by-plugin.txt");
    assert!(
        planted.is_empty(),
        "the write followed the re-pointed grant into .capstan: {planted:?}"
    );
    let original = sb.path().join("rw/sub.moved/planted-by-plugin.txt");
    match run.status("plant").as_str() {
        "succeeded" => assert_eq!(
            std::fs::read_to_string(&original).ok().as_deref(),
            Some("planted"),
            "the write landed in the granted directory (now rw/sub.moved)"
        ),
        _ => assert!(!original.exists(), "{:#}", run.stage("plant")),
    }
}

/// A compiled-cache entry replaced by another plugin's compiled code is not
/// used: the plugin is compiled again, run.json says so, stderr warns, and
/// the stage behaves as itself.
#[test]
fn a_cache_entry_swapped_for_another_plugins_is_recompiled() {
    let sb = Sandbox::new();
    let p = sb.pipeline(&format!(
        "[pipeline]\nname = \"swap\"\n[plugins.hello]\npath = \"{{hello}}\"\n\
         [plugins.adversary]\npath = \"{{adversary}}\"\n\
         [stages.greet]\nplugin = \"hello\"\nwith = {{ message = \"hello from hello\" }}\n\
         [[stages.greet.grants.exec]]\nprogram = \"echo\"\nargs = [\"*\"]\n{}",
        beside()
    ));
    let (ran, _, first) = run(&sb, &p);
    assert_eq!(ran.code, 0, "{ran:?}");
    let digest = |run: &Run, plugin: &str| {
        let record = run.record["plugins"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == plugin)
            .unwrap_or_else(|| panic!("no plugin {plugin} in {:#}", run.record))
            .clone();
        let sha = record["sha256"].as_str().unwrap();
        sha.trim_start_matches("sha256:").to_string()
    };
    let entries: Vec<PathBuf> = std::fs::read_dir(sb.user_cache().join("components"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "cwasm"))
        .collect();
    let entry = |plugin: &str| {
        let sha = digest(&first, plugin);
        entries
            .iter()
            .find(|e| e.file_name().unwrap().to_string_lossy().contains(&sha))
            .unwrap_or_else(|| panic!("no cache entry for {plugin} ({sha}): {entries:?}"))
            .clone()
    };
    // The adversary's compiled code under hello's name.
    std::fs::copy(entry("adversary"), entry("hello")).unwrap();

    let (ran, _, second) = run(&sb, &p);
    assert_eq!(ran.code, 0, "{ran:?}");
    let cache = |plugin: &str| {
        second.record["plugins"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == plugin)
            .unwrap()["cache"]
            .clone()
    };
    assert_eq!(
        cache("hello"),
        "recompiled",
        "{:#}",
        second.record["plugins"]
    );
    assert_eq!(cache("adversary"), "hit", "{:#}", second.record["plugins"]);
    assert!(
        ran.stderr.contains("warning") && ran.stderr.contains("`hello`"),
        "no warning names the rejected entry: {ran:?}"
    );
    assert_eq!(second.output("greet", "message"), "hello from hello");
    beside_succeeded(&second);
    // The entry now holds hello's own compiled code, trusted again.
    let (ran, _, third) = run(&sb, &p);
    assert_eq!(ran.code, 0, "{ran:?}");
    assert_eq!(
        third.record["plugins"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == "hello")
            .unwrap()["cache"],
        "hit"
    );
}

/// One stage flips `rw/x` between a real directory and a symlink pointing
/// outside while another runs `pwd -P` in `rw/x` again and again: the
/// working directory the host checked is the one the child runs in, so no
/// child ever runs outside. Run several times.
#[test]
fn the_cwd_race_is_never_won() {
    const RUNS: usize = 5;
    // Most are refused in a few microseconds (while `rw/x` is the symlink);
    // the rest race.
    const EXECS: u32 = 3000;
    let sb = Sandbox::new();
    let root = sb.path();
    std::fs::create_dir(root.join("outside")).unwrap();
    std::fs::create_dir(root.join("rw/real")).unwrap();
    std::os::unix::fs::symlink(root.join("outside"), root.join("rw/link")).unwrap();
    let p = pipeline(
        &sb,
        "race",
        &[
            stage(
                "flip",
                r#"{ action = "flip", dir = "{sandbox}/rw/real", link = "{sandbox}/rw/link", name = "{sandbox}/rw/x", millis = 800, dwell_us = 2000 }"#,
                "",
            ),
            stage(
                "race",
                &format!(r#"{{ action = "cwd-race", cwd = "{{sandbox}}/rw/x", times = {EXECS} }}"#),
                "",
            ),
        ],
    );
    let mut ran_inside = 0;
    for attempt in 1..=RUNS {
        let (ran, _, run) = run(&sb, &p);
        nothing_escaped(&run);
        assert_eq!(
            run.status("flip"),
            "succeeded",
            "run {attempt}: {:#}\n{ran:?}",
            run.stage("flip")
        );
        assert_eq!(
            run.status("race"),
            "succeeded",
            "run {attempt}: {:#}\n{ran:?}",
            run.stage("race")
        );
        eprintln!(
            "run {attempt}: flip {}, race {}",
            run.stage("flip")["summary"],
            run.stage("race")["outputs"]
        );
        let count = |key: &str| run.output("race", key).as_u64().unwrap();
        assert_eq!(count("ran") + count("refused"), u64::from(EXECS));
        ran_inside += count("ran");
    }
    assert!(
        ran_inside > 0,
        "no `pwd -P` ran in {RUNS} runs: the race was never exercised"
    );
}

/// A program pinned by sha256 (a script `bin/echo`, first on PATH) cannot
/// be replaced under the pipeline: a write grant reaching it is refused at
/// load, and a file renamed over it after the load is not what runs.
#[test]
fn a_pinned_program_is_the_one_that_runs() {
    let sb = Sandbox::new();
    let original = "#!/bin/sh\necho \"original-echo $*\"\n";
    let script = sb.write("bin/echo", original);
    make_executable(&script);
    let path = format!(
        "{}:{}",
        sb.path().join("bin").display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let sha = {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(original.as_bytes()))
    };
    let pinned = |name: &str, with: &str, extra: &str| {
        stage(name, with, extra).replace(
            "program = \"echo\"\n",
            &format!("program = \"echo\"\nsha256 = \"{sha}\"\n"),
        )
    };
    let guarded = |args: &[&str]| {
        let mut cmd = sb.command(args);
        cmd.env("PATH", &path);
        Guarded::spawn(cmd)
    };

    // (a) A write grant over the directory holding the program.
    let p = pipeline(
        &sb,
        "overwrite",
        &[pinned("overwrite", r#"{ action = "context" }"#, "")
            .replace(r#"write = ["rw"]"#, r#"write = ["bin"]"#)],
    );
    let (ran, _) = guarded(&["run", p.to_str().unwrap(), "-q"]).wait(GUARD);
    assert_eq!(ran.code, 4, "{ran:?}");
    assert!(
        ran.stderr.contains("reaches") && ran.stderr.contains("the program `echo`"),
        "{ran:?}"
    );
    assert!(
        !sb.path().join(".capstan/runs").exists()
            || std::fs::read_dir(sb.path().join(".capstan/runs"))
                .unwrap()
                .next()
                .is_none(),
        "nothing ran"
    );

    // (b) Replaced after the load, while an earlier stage sleeps.
    let p = pipeline(
        &sb,
        "replace",
        &[
            pinned(
                "nap",
                r#"{ action = "exec", program = "sleep", args = ["2"] }"#,
                "",
            ),
            pinned(
                "later",
                r#"{ action = "exec", program = "echo", args = ["hello"] }"#,
                "needs = [\"nap\"]",
            ),
        ],
    );
    let mut capstan = guarded(&["run", p.to_str().unwrap(), "-q"]);
    // Wait until `nap` has started its `sleep`: the pipeline has loaded.
    let runs = sb.path().join(".capstan/runs");
    loop {
        let napping = std::fs::read_dir(&runs)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|d| std::fs::read_to_string(d.path().join("audit.jsonl")).ok())
            .flat_map(|a| {
                a.lines()
                    .filter_map(|l| serde_json::from_str::<Value>(l).ok())
                    .collect::<Vec<_>>()
            })
            .any(|e| e["stage"] == "nap" && e["capability"] == "exec");
        if napping {
            break;
        }
        assert!(
            capstan.running() && capstan.elapsed() < GUARD,
            "`nap` never started its sleep"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let replacement = sb.write("bin/echo.new", "#!/bin/sh\necho \"replaced-echo $*\"\n");
    make_executable(&replacement);
    std::fs::rename(&replacement, &script).unwrap();
    let (ran, _) = capstan.wait(GUARD);
    let run = sb.last_run();
    eprintln!("later: {:#}", run.stage("later"));
    assert_eq!(run.status("nap"), "succeeded", "{:#}", run.stage("nap"));
    let log = run.log("later");
    assert!(
        !log.contains("replaced-echo") && !run.stage("later").to_string().contains("replaced-echo"),
        "the replacement ran: {:#}\n{log}",
        run.stage("later")
    );
    // The descriptor that was hashed is what runs: the original.
    assert_eq!(ran.code, 0, "{ran:?}");
    assert_eq!(
        run.output("later", "stdout"),
        "original-echo hello\n",
        "{:#}\n{log}\n{ran:?}",
        run.stage("later")
    );
}

fn make_executable(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// `--state-dir` through a symlink to a directory that does not exist yet
/// (a first run), inside a write grant: the overlap is seen, nothing runs,
/// and the state dir is not created.
#[test]
fn a_first_run_through_a_symlinked_state_dir_is_refused() {
    let sb = Sandbox::new();
    let link = sb.path().join("state-link");
    std::os::unix::fs::symlink(sb.path().join("rw/state"), &link).unwrap();
    let p = pipeline(&sb, "state", &[stage("s", r#"{ action = "context" }"#, "")]);
    let (ran, _) = sb.capstan_within(
        &[
            "--state-dir",
            link.to_str().unwrap(),
            "run",
            p.to_str().unwrap(),
            "-q",
        ],
        GUARD,
    );
    assert_eq!(ran.code, 4, "{ran:?}");
    assert!(
        ran.stderr.contains("reaches") && ran.stderr.contains("Capstan's state dir"),
        "{ran:?}"
    );
    assert!(
        sb.path().join("rw/state").symlink_metadata().is_err(),
        "the state dir was created inside the write grant"
    );
}

/// Output the host writes for a stage counts against its `max_output`
/// whatever the path: unlogged child output, the audit lines its denials
/// cause, and what it returns (summary, outputs). Past the limit the stage
/// ends, named; what it wrote stays within twice the limit.
#[test]
fn output_and_audit_floods_stop_at_max_output() {
    const LIMIT: usize = 256 << 10;
    let sb = Sandbox::new();
    let p = pipeline(
        &sb,
        "floods",
        &[
            stage(
                "unlogged_flood",
                r#"{ action = "exec-flood-unlogged" }"#,
                "max_output = \"256KiB\"",
            ),
            stage(
                "deny_flood",
                r#"{ action = "deny-flood", times = 20000 }"#,
                "max_output = \"256KiB\"",
            ),
            stage(
                "big_outcome",
                r#"{ action = "big-outcome", bytes = 1048576 }"#,
                "max_output = \"256KiB\"",
            ),
            beside(),
        ],
    );
    let (ran, _, run) = run(&sb, &p);
    assert_eq!(ran.code, 1, "{ran:?}");
    nothing_escaped(&run);
    beside_succeeded(&run);
    for flood in ["unlogged_flood", "deny_flood", "big_outcome"] {
        eprintln!(
            "{flood}: {} ({} bytes of log, {} of audit)",
            run.reason(flood),
            run.log(flood).len(),
            run.audit_bytes(flood)
        );
        failed_naming(&run, flood, &["output limit", "limit `max_output`"]);
        limit_audited(&run, flood);
        let log = run.log(flood).len();
        let audit = run.audit_bytes(flood);
        assert!(
            log + audit <= 2 * LIMIT,
            "{flood}: {log} bytes of log and {audit} of audit lines, over 2 × {LIMIT}"
        );
    }
    assert!(
        !run.denials("deny_flood").is_empty(),
        "the refused execs are audited"
    );
    // What a stage returns is written to run.json and the store: a stage
    // over its limit keeps none of it.
    let record = std::fs::read_to_string(run.dir.join("run.json")).unwrap();
    assert!(
        record.len() < LIMIT,
        "run.json holds {} bytes",
        record.len()
    );
}

/// A stage that opens files without end hits its own cap on handles; a
/// concurrent stage can still start a program.
#[test]
fn descriptor_exhaustion_does_not_starve_a_concurrent_stage() {
    let sb = Sandbox::new();
    std::fs::create_dir(sb.path().join("rw/held")).unwrap();
    let p = pipeline(
        &sb,
        "handles",
        &[
            stage(
                "hold",
                r#"{ action = "hold-files", dir = "{sandbox}/rw/held", count = 50000, hold_ms = 3000 }"#,
                "",
            ),
            stage(
                "echo_after",
                r#"{ action = "exec-after", delay_ms = 1000, program = "echo", args = ["hello"] }"#,
                "",
            ),
        ],
    );
    let (ran, _, run) = run(&sb, &p);
    nothing_escaped(&run);
    assert_eq!(
        run.status("echo_after"),
        "succeeded",
        "{:#}\n{:#}\n{ran:?}",
        run.stage("echo_after"),
        run.stage("hold")
    );
    assert_eq!(run.output("echo_after", "stdout"), "hello\n");
    eprintln!("hold: {:#}", run.stage("hold"));
    if run.status("hold") == "failed" {
        failed_naming(&run, "hold", &["limit"]);
    } else {
        let opened = run.output("hold", "opened").as_u64().unwrap();
        assert!(opened <= 4096, "the holder kept {opened} files open");
        assert!(
            !run.output("hold", "first_error").is_null(),
            "opening stopped at an error"
        );
    }
    let created = std::fs::read_dir(sb.path().join("rw/held"))
        .unwrap()
        .count();
    assert!(
        created <= 4097,
        "the holder created {created} files (opened each)"
    );
}

/// A plugin whose `describe` sleeps makes no command hang: each fails,
/// saying the plugin did not describe itself in time, naming the file.
#[test]
fn a_sleeping_describe_fails_in_time() {
    let sb = Sandbox::new();
    let wasm = capstan_test_artifacts::SLEEPY_DESCRIBE;
    let p = sb.pipeline(
        "[pipeline]\nname = \"sleepy\"\n[plugins.sleepy]\npath = \"{sleepy_describe}\"\n\
         [stages.nap]\nplugin = \"sleepy\"\n",
    );
    let p = p.to_str().unwrap();
    // (command, must it fail?) `audit` reports on the plugin; the others
    // cannot go on without its description.
    let commands: [(&[&str], bool); 4] = [
        (&["plugin", "describe", wasm], true),
        (&["validate", p], true),
        (&["audit", p], false),
        (&["run", p, "-q"], true),
    ];
    // All at once: each waits for the describe budget.
    let running: Vec<_> = commands
        .iter()
        .map(|(args, must_fail)| (args, must_fail, sb.spawn(args)))
        .collect();
    let file = Path::new(wasm).file_name().unwrap().to_str().unwrap();
    for (args, must_fail, capstan) in running {
        let (ran, took) = capstan.wait(GUARD);
        if *must_fail {
            assert_ne!(ran.code, 0, "capstan {args:?}: {ran:?}");
        }
        let said = format!("{}{}", ran.stdout, ran.stderr);
        let lower = said.to_lowercase();
        assert!(
            lower.contains("describe")
                && (lower.contains("in time") || lower.contains("within"))
                && said.contains(file),
            "capstan {args:?} does not say the plugin did not describe itself in time: {ran:?}"
        );
        assert!(
            took < Duration::from_secs(30),
            "capstan {args:?} took {took:?}"
        );
    }
}

/// 1000 components nested in each other: refused before compiling, naming
/// the bound, quickly.
#[test]
fn a_deeply_nested_component_is_refused_before_compiling() {
    use wasm_encoder::{Component, NestedComponentSection};
    let sb = Sandbox::new();
    let mut component = Component::new();
    for _ in 1..1000 {
        let mut outer = Component::new();
        outer.section(&NestedComponentSection(&component));
        component = outer;
    }
    let path = sb.path().join("nested.wasm");
    std::fs::write(&path, component.finish()).unwrap();
    let (ran, took) = sb.capstan_within(&["plugin", "describe", path.to_str().unwrap()], GUARD);
    assert_ne!(ran.code, 0, "{ran:?}");
    assert!(
        ran.stderr.contains("nesting depth") && ran.stderr.contains("limit"),
        "{ran:?}"
    );
    assert!(took < Duration::from_secs(10), "took {took:?}: {ran:?}");
}

/// A stage's timeout ends it even when it is blocked in a host call: one
/// reading a FIFO nobody writes (a WASI call), one doing `http-get` to a
/// server that accepts and never answers, with a timeout far past the
/// stage's. Both end at their deadline, the stage beside them succeeds, and
/// `capstan` exits.
#[test]
fn blocking_host_calls_end_at_the_stage_deadline() {
    use std::net::TcpListener;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    let sb = Sandbox::new();
    let fifo = sb.path().join("rw/fifo");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    listener.set_nonblocking(true).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let silent = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut held = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                if let Ok((conn, _)) = listener.accept() {
                    held.push(conn);
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            held.len()
        })
    };
    let p = pipeline(
        &sb,
        "blocked",
        &[
            stage(
                "fifo",
                r#"{ action = "open-fifo", path = "{sandbox}/rw/fifo" }"#,
                "timeout = \"2s\"",
            ),
            stage(
                "silent",
                &format!(
                    r#"{{ action = "http-get", url = "http://127.0.0.1:{port}/", timeout_ms = 60000 }}"#
                ),
                "timeout = \"2s\"",
            ),
            beside(),
        ],
    );
    let (ran, took, run) = run(&sb, &p);
    stop.store(true, Ordering::Relaxed);
    let accepted = silent.join().unwrap();
    assert_eq!(ran.code, 1, "{ran:?}");
    nothing_escaped(&run);
    failed_naming(&run, "fifo", &["timed out", "limit `timeout`"]);
    limit_audited(&run, "fifo");
    eprintln!(
        "fifo: {}\nsilent: {}",
        run.reason("fifo"),
        run.reason("silent")
    );
    failed_naming(&run, "silent", &["timed out", "limit `timeout`"]);
    limit_audited(&run, "silent");
    assert!(
        accepted > 0,
        "the http-get never connected: {:#}",
        run.stage("silent")
    );
    beside_succeeded(&run);
    assert!(took < Duration::from_secs(20), "the run took {took:?}");
}

/// Raw characters that a terminal interprets, or that hide text.
fn raw_controls(text: &str) -> Vec<String> {
    ['\x1b', '\r', '\u{202e}', '\x07']
        .into_iter()
        .filter(|c| text.contains(*c))
        .map(|c| format!("{c:?}"))
        .collect()
}

/// `text` shows the plugin's forged text as visible escapes, and has none
/// of its raw controls.
fn shown_escaped(what: &str, text: &str) {
    let raw = raw_controls(text);
    assert!(raw.is_empty(), "{what} prints raw {raw:?}:\n{text}");
    for visible in [r"\x1b[2J", r"\r", r"\u{202e}"] {
        assert!(text.contains(visible), "{what} lacks `{visible}`:\n{text}");
    }
}

/// Whether some string in `v` is exactly `s`.
fn holds_string(v: &Value, s: &str) -> bool {
    match v {
        Value::String(t) => t == s,
        Value::Array(a) => a.iter().any(|v| holds_string(v, s)),
        Value::Object(o) => o.values().any(|v| holds_string(v, s)),
        _ => false,
    }
}

/// Plugin text (summary, log lines, stdout, outputs, exec arguments, an
/// approval request) reaches terminals escaped, and a plugin line can never
/// look like the host's; JSON keeps the raw text.
#[test]
fn plugin_text_reaches_terminals_escaped() {
    let sb = Sandbox::new();
    let p = pipeline(
        &sb,
        "forge",
        &[
            stage(
                "forge",
                r#"{ action = "forge-text", approval = false }"#,
                "",
            ),
            stage("forge_gate", r#"{ action = "forge-text" }"#, ""),
        ],
    );
    // Not `-q`: the live echo of stage logs and the result lines.
    let (ran, _) = sb.capstan_within(&["run", p.to_str().unwrap(), "--env", "dev"], GUARD);
    assert_eq!(ran.code, 5, "the gate waits for approval: {ran:?}");
    let run = sb.last_run();
    assert_eq!(run.status("forge"), "succeeded", "{:#}", run.stage("forge"));
    assert_eq!(
        run.status("forge_gate"),
        "awaiting-approval",
        "{:#}",
        run.stage("forge_gate")
    );
    shown_escaped("the run's stderr", &ran.stderr);
    let id = run.record["run_id"].as_str().unwrap().to_string();
    for args in [
        vec!["show", id.as_str()],
        vec!["logs", id.as_str()],
        vec!["audit", "--run", id.as_str()],
    ] {
        let (shown, _) = sb.capstan_within(&args, GUARD);
        assert_eq!(shown.code, 0, "capstan {args:?}: {shown:?}");
        shown_escaped(&format!("capstan {}", args.join(" ")), &shown.stdout);
        let raw = raw_controls(&shown.stderr);
        assert!(raw.is_empty(), "capstan {args:?} stderr: raw {raw:?}");
    }
    // A plugin line never looks like the host's.
    for stage in ["forge", "forge_gate"] {
        let log = run.log(stage);
        assert!(
            log.lines()
                .any(|l| l.starts_with("[plugin] [capstan] approved by bob")),
            "{stage}: no prefixed forged line:\n{log}"
        );
        assert!(
            log.lines().any(|l| l.starts_with("[plugin] $ rm -rf /")),
            "{stage}: no prefixed forged command line:\n{log}"
        );
        assert!(
            !log.lines()
                .any(|l| l.starts_with("[capstan] approved by bob")),
            "{stage}: a plugin line poses as the host's:\n{log}"
        );
        // The file itself holds the text inert, for any viewer.
        shown_escaped(&format!("{stage}'s log file"), &log);
    }
    // JSON keeps the raw text.
    let shown = sb.show(&id);
    assert!(
        holds_string(&shown, FORGED),
        "show --json lost the raw text: {shown:#}"
    );
    assert_eq!(run.output("forge", "forged"), FORGED);
}
