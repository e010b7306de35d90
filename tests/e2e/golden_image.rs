//! The golden-image example, end to end with real Packer, Terraform and
//! Ansible, in a copy of `examples/golden-image` inside the test's sandbox.

use std::path::{Path, PathBuf};

use crate::harness::{Run, Sandbox, adversary_stage};

const EXAMPLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/golden-image");

/// Built plugins, by the file name the example's pipeline uses.
const PLUGINS: &[(&str, &str)] = &[
    ("capstan_packer.wasm", capstan_test_artifacts::PACKER),
    ("capstan_terraform.wasm", capstan_test_artifacts::TERRAFORM),
    ("capstan_approval.wasm", capstan_test_artifacts::APPROVAL),
    ("capstan_ansible.wasm", capstan_test_artifacts::ANSIBLE),
    (
        "capstan_smoke_test.wasm",
        capstan_test_artifacts::SMOKE_TEST,
    ),
    (
        "capstan_custom_stage.wasm",
        capstan_test_artifacts::CUSTOM_STAGE,
    ),
    ("capstan_command.wasm", capstan_test_artifacts::COMMAND),
];

/// The example's stages, in order.
const STAGES: [&str; 7] = [
    "build",
    "lint",
    "plan",
    "approve",
    "apply",
    "configure",
    "smoke",
];

/// Copy the example (not what earlier runs left in work/) into the sandbox;
/// `edit` may change the pipeline text. Returns the pipeline path.
pub fn example(sb: &Sandbox, edit: impl FnOnce(String) -> String) -> PathBuf {
    let to = sb.path().join("gi");
    copy_dir(Path::new(EXAMPLE), &to);
    let mut text = std::fs::read_to_string(to.join("pipeline.toml")).unwrap();
    for (file, built) in PLUGINS {
        text = text.replace(&format!("../../target/wasm32-wasip2/release/{file}"), built);
    }
    let path = to.join("pipeline.toml");
    std::fs::write(&path, edit(text)).unwrap();
    path
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap().flatten() {
        let (src, dst) = (entry.path(), to.join(entry.file_name()));
        if entry.file_type().unwrap().is_dir() {
            // work/: only the empty directories a clean clone has.
            if from.file_name().is_some_and(|n| n == "work") {
                std::fs::create_dir_all(&dst).unwrap();
            } else {
                copy_dir(&src, &dst);
            }
        } else if from
            .parent()
            .and_then(Path::file_name)
            .is_none_or(|n| n != "work")
        {
            std::fs::copy(&src, &dst).unwrap();
        }
    }
}

pub fn run(sb: &Sandbox, pipeline: &Path, args: &[&str]) -> (i32, String, Run) {
    let mut all = vec!["run", pipeline.to_str().unwrap(), "-q"];
    all.extend(args);
    let ran = sb.capstan(&all);
    (ran.code, ran.stderr, sb.last_run())
}

#[test]
fn dev_runs_green_then_a_second_run_changes_nothing_and_policy_is_enforced() {
    let sb = Sandbox::new();
    let pipeline = example(&sb, |t| t);
    let (code, stderr, first) = run(&sb, &pipeline, &["--env", "dev"]);
    assert_eq!(code, 0, "{stderr}");
    for stage in STAGES {
        assert_eq!(
            first.status(stage),
            "succeeded",
            "{stage}: {:#}",
            first.stage(stage)
        );
    }
    // Packer built an image; Terraform picked it; Ansible configured both hosts.
    let image = first.output("build", "template_id");
    assert!(image.as_str().unwrap().starts_with("golden-"), "{image}");
    assert_eq!(first.output("apply", "image_id"), image);
    assert_eq!(first.output("apply", "image_source"), "pinned");
    assert_eq!(first.output("approve", "policy"), "automatic");
    assert_eq!(
        first.output("configure", "failed_hosts"),
        serde_json::json!([])
    );
    let marker = sb
        .path()
        .join("gi/work/targets/dev/web-1/var/lib/capstan/deployed.json");
    assert!(
        std::fs::read_to_string(marker)
            .unwrap()
            .contains(image.as_str().unwrap())
    );
    // The smoke stage's JUnit report parses: 6 test cases, no failures.
    let junit =
        std::fs::read_to_string(first.output("smoke", "junit_file").as_str().unwrap()).unwrap();
    let doc = roxmltree::Document::parse(&junit).expect("JUnit XML parses");
    assert_eq!(
        doc.descendants()
            .filter(|n| n.has_tag_name("testcase"))
            .count(),
        6
    );
    assert_eq!(
        doc.descendants()
            .filter(|n| n.has_tag_name("failure"))
            .count(),
        0
    );
    // The approval is bound to the plan's digest, and apply applied that one.
    assert_eq!(
        first.output("approve", "digest"),
        first.output("plan", "plan_digest")
    );
    assert_eq!(
        first.output("apply", "applied_digest"),
        first.output("plan", "plan_digest")
    );

    // Second run: nothing to build, no infrastructure change, nothing changed on the hosts.
    let (code, stderr, second) = run(&sb, &pipeline, &["--env", "dev"]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(second.output("build", "skipped"), true);
    assert_eq!(
        second.output("plan", "has_changes"),
        false,
        "{:#}",
        second.stage("plan")
    );
    assert_eq!(second.output("configure", "changed"), 0);
    assert_eq!(second.output("apply", "image_id"), image);

    // A plan beyond the policy fails the plan stage, naming the rule.
    let text = std::fs::read_to_string(&pipeline).unwrap().replace(
        "forbid_replace = true",
        "forbid_replace = true\nrequire_changes = true",
    );
    std::fs::write(&pipeline, text).unwrap();
    let (code, _, third) = run(&sb, &pipeline, &["--env", "dev"]);
    assert_eq!(code, 1);
    assert_eq!(third.status("plan"), "failed");
    assert!(
        third.reason("plan").contains("require_changes"),
        "{}",
        third.reason("plan")
    );
    assert_eq!(third.status("apply"), "skipped");

    // A configuration Terraform would format differently fails the lint
    // stage (a command stage), naming the step and the file; nothing is planned.
    let main_tf = sb.path().join("gi/infrastructure/main.tf");
    let mut tf = std::fs::read_to_string(&main_tf).unwrap();
    tf.push_str("\nlocals {\n  unformatted=1\n}\n");
    std::fs::write(&main_tf, tf).unwrap();
    let (code, _, fourth) = run(&sb, &pipeline, &["--env", "dev"]);
    assert_eq!(code, 1);
    fourth.assert_failed_naming("lint", &["step `format`", "exit code 3", "main.tf"]);
    assert_eq!(fourth.status("plan"), "skipped");
}

#[test]
fn production_without_a_terminal_stops_at_the_gate() {
    let sb = Sandbox::new();
    let pipeline = example(&sb, |t| t);
    let (code, stderr, run) = run(&sb, &pipeline, &["--env", "production", "--as", "carol"]);
    assert_eq!(code, 5, "{stderr}");
    assert_eq!(run.record["status"], "awaiting-approval");
    assert_eq!(run.status("approve"), "awaiting-approval");
    for stage in ["apply", "configure", "smoke"] {
        assert_eq!(run.status(stage), "skipped", "{stage}");
    }
    assert!(
        stderr.contains("waiting for approval") && stderr.contains("capstan approve"),
        "{stderr}"
    );
    assert!(
        stderr.contains("carol"),
        "the message names the author who may not approve: {stderr}"
    );
    // Recorded as pending; Terraform never applied.
    let approval = run
        .audit_of("approve")
        .into_iter()
        .find(|e| e["capability"] == "approval")
        .expect("approval recorded");
    assert_eq!(approval["detail"]["decision"], "pending");
    assert_eq!(
        approval["detail"]["digest"],
        run.output("plan", "plan_digest")
    );
    assert!(run.audit_of("apply").is_empty(), "apply must not run");
    assert!(!sb.path().join("gi/work/targets/production").exists());
}

/// Someone alters the plan file after it was approved and before apply:
/// a stage between them holds the run for two seconds, and the test
/// appends to the plan file meanwhile, as an outside actor would.
#[test]
fn an_altered_plan_file_makes_apply_refuse() {
    let sb = Sandbox::new();
    let pipeline = example(&sb, |t| {
        let hold = adversary_stage(
            "hold",
            r#"{ action = "exec", program = "sleep", args = ["2"] }"#,
            "needs = [\"approve\"]",
        )
        .replace("read = [\"ro\"]", "read = [\"../ro\"]")
        .replace("write = [\"rw\"]", "write = [\"../rw\"]");
        let apply = "[stages.apply]\nplugin = \"terraform\"\nneeds = [\"approve\"]\n";
        assert!(
            t.contains(apply),
            "the example's apply stage moved: update this test"
        );
        t.replace(
            apply,
            "[stages.apply]\nplugin = \"terraform\"\nneeds = [\"approve\", \"hold\"]\n",
        ) + &format!(
            "\n[plugins.adversary]\npath = \"{}\"\n{hold}",
            capstan_test_artifacts::ADVERSARY
        )
    });
    let mut child = sb
        .command(&["run", pipeline.to_str().unwrap(), "-q", "--env", "dev"])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until the approval is recorded, then alter the approved plan file.
    let started = std::time::Instant::now();
    let tampered = loop {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(60),
            "the run never reached the approval"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
        let Ok(runs) = std::fs::read_dir(sb.path().join(".capstan/runs")) else {
            continue;
        };
        let Some(dir) = runs.flatten().next().map(|e| e.path()) else {
            continue;
        };
        let outputs = std::fs::read_to_string(dir.join("outputs.json")).unwrap_or_default();
        if outputs.contains("\"approve\"") {
            let plan = dir.join("stages/plan/tfplan");
            let mut bytes = std::fs::read(&plan).unwrap();
            bytes.extend_from_slice(b"not what was approved");
            std::fs::write(&plan, bytes).unwrap();
            break plan;
        }
    };
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(1));
    let run = sb.last_run();
    assert_eq!(
        run.status("hold"),
        "succeeded",
        "the file was altered while `hold` ran: {:#}",
        run.stage("hold")
    );
    assert_eq!(run.status("apply"), "failed");
    let reason = run.reason("apply");
    let approved = run.output("plan", "plan_digest");
    assert!(
        reason.contains(approved.as_str().unwrap()) && reason.contains("digest"),
        "{reason}"
    );
    assert!(tampered.exists());
    let applied = run
        .audit_of("apply")
        .into_iter()
        .any(|e| e["capability"] == "exec" && e["detail"]["args"][0] == "apply");
    assert!(!applied, "terraform apply must not run");
}

#[test]
fn a_failing_smoke_check_fails_the_run_and_the_custom_stage_runs_with_the_same_host() {
    let sb = Sandbox::new();
    let snippet = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../examples/custom-stage/pipeline-snippet.toml"
    ))
    .unwrap();
    let pipeline = example(&sb, |t| {
        let failing = "\n[[stages.smoke.with.checks]]\nname = \"a file that is not there\"\ncategory = \"functionality\"\nkind = \"file\"\npath = \"${pipeline.dir}/work/targets/${run.environment}/web-1/etc/not-there\"\n";
        let t = t.replacen(
            "[[stages.smoke.grants.exec]]",
            &format!("{failing}\n[[stages.smoke.grants.exec]]"),
            1,
        );
        // The custom stage goes in by editing only the pipeline file.
        t + &snippet.replace(
            "../../target/wasm32-wasip2/release/capstan_custom_stage.wasm",
            capstan_test_artifacts::CUSTOM_STAGE,
        )
    });
    let (code, stderr, run) = run(&sb, &pipeline, &["--env", "dev"]);
    assert_eq!(code, 1, "{stderr}");
    assert_eq!(run.status("smoke"), "failed");
    assert!(
        run.reason("smoke").contains("a file that is not there"),
        "{}",
        run.reason("smoke")
    );
    let junit_path = run.dir.join("stages/smoke/junit.xml");
    assert!(junit_path.exists(), "{:#}", run.stage("smoke"));
    let junit = std::fs::read_to_string(junit_path).unwrap();
    let doc = roxmltree::Document::parse(&junit).expect("JUnit XML parses");
    let failures: Vec<_> = doc
        .descendants()
        .filter(|n| n.has_tag_name("failure"))
        .collect();
    assert_eq!(failures.len(), 1, "{junit}");
    assert_eq!(
        run.status("change-window"),
        "succeeded",
        "{:#}",
        run.stage("change-window")
    );
    assert_eq!(run.output("change-window", "enforced"), false);
}

/// SGR sequences (colours, bold): what `--color never` leaves out.
const SGR: &str = r"\x1b\[[0-9;]*m";

/// What the frames of `stage`'s spinner line in `screen` show after its
/// elapsed time (`⠹ plan    2s <its last log line>`, colours left out).
fn spinner_frames(screen: &str, stage: &str) -> Vec<String> {
    let plain = regex::Regex::new(SGR).unwrap().replace_all(screen, "");
    // A frame ends where the next is drawn (`\r`, an escape) or, on a
    // terminal of no known width, where the next stage's line begins.
    let frame = regex::Regex::new(&format!(
        r"[⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏] {stage} +\d+s ([^\r\n\x1b⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏]*)"
    ))
    .unwrap();
    frame
        .captures_iter(&plain)
        .map(|c| c[1].trim().to_string())
        .collect()
}

/// The approval prompt, from its banner to `until`, is as the host wrote
/// it: no spinner drawn over it, no escape sequence in it.
fn prompt_is_intact(screen: &str, until: &str) {
    let start = screen
        .find("\n━━ approval needed: stage `approve`")
        .expect(screen);
    let end = start + screen[start..].find(until).expect(screen);
    let prompt = &screen[start..end];
    assert!(
        !prompt.contains([
            '\x1b', '\r', '⠋', '⠙', '⠹', '⠸', '⠼', '⠴', '⠦', '⠧', '⠇', '⠏'
        ]),
        "the prompt is garbled: {prompt:?}"
    );
}

/// On a terminal the host prompts: the run's author is refused, another
/// person approves, and the run goes on to apply. `script` gives the run a
/// pseudo-terminal and types the answers. Reviewers see the plan as
/// Terraform renders it, with the counts and the checklist, at the prompt
/// (paged when longer than the terminal) and in `capstan show`. Progress
/// is live: a spinner line per running stage with its elapsed time and
/// last log line, finished stages above, the prompt drawn over by nothing;
/// coloured unless `--color never`.
#[test]
fn production_on_a_terminal_prompts_and_refuses_self_approval() {
    let sb = Sandbox::new();
    let pipeline = example(&sb, |t| t);
    let line = format!(
        "env -u NO_COLOR TERM=xterm {} run {} --env production --as carol -q",
        env!("CARGO_BIN_EXE_capstan"),
        pipeline.display()
    );
    let out = sb.on_a_terminal(&line, b"carol\nalice\nyes\nlooks good\n");
    let screen = String::from_utf8_lossy(&out.stdout).replace("\r\n", "\n");
    assert!(out.status.success(), "{screen}");
    assert!(
        screen.contains("carol started this run and may not approve it"),
        "{screen}"
    );
    // The terminal has no size (nobody sized script's pty): nothing is
    // paged. The counts, Terraform's own plan, then the checklist.
    let at = |text: &str| {
        screen
            .find(text)
            .unwrap_or_else(|| panic!("{text:?} not at the prompt:\n{screen}"))
    };
    let counts =
        at("\n  │ plan: 0 to create, 0 to update, 0 to delete, 0 to replace; 9 output changes");
    let plan = at("\n  │\n  │ Changes to Outputs:\n  │   + ansible_inventory = <<-EOT\n");
    let last = at("\n  │ state, without changing any real infrastructure.\n");
    let checklist = at("\n  [ ] nothing is destroyed or replaced\n");
    let question = at("approver name (empty: leave it pending): ");
    assert!(counts < plan && plan < last && last < checklist && checklist < question);
    assert!(
        screen.contains("\n  │   + image_id          = \"golden-"),
        "{screen}"
    );
    prompt_is_intact(&screen, "comment (optional): ");
    // Finished stages scroll above the spinners, coloured by their mark.
    for stage in STAGES {
        let done = format!("\x1b[32m✓ {stage} (");
        assert!(screen.contains(&done), "{done:?} not on:\n{screen}");
    }
    let run = sb.last_run();
    // While `plan` ran, its spinner line showed its elapsed time and the
    // last line it logged.
    let plan_log = std::fs::read_to_string(run.dir.join("logs/plan.log")).unwrap();
    let frames = spinner_frames(&screen, "plan");
    assert!(
        frames
            .iter()
            .any(|shown| !shown.is_empty() && plan_log.contains(shown.as_str())),
        "no spinner line of `plan` with a line of its log: {frames:?}\n{screen}"
    );
    let plain = regex::Regex::new(SGR).unwrap().replace_all(&screen, "");
    let (built, planning, planned, asked) = (
        plain.find("✓ build (").unwrap(),
        regex::Regex::new("[⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏] plan ")
            .unwrap()
            .find(&plain)
            .unwrap()
            .start(),
        plain.find("✓ plan (").unwrap(),
        plain.find("━━ approval needed").unwrap(),
    );
    assert!(
        built < planning && planning < planned && planned < asked,
        "{plain}"
    );
    // The end-of-run table colours statuses.
    assert!(screen.contains("\x1b[38;5;10m succeeded "), "{screen}");
    assert_eq!(run.status("apply"), "succeeded", "{screen}");
    assert_eq!(
        run.output("approve", "approvers"),
        serde_json::json!(["alice"])
    );
    let approval = run
        .audit_of("approve")
        .into_iter()
        .find(|e| e["capability"] == "approval")
        .unwrap();
    assert_eq!(approval["detail"]["decision"], "approved");
    assert_eq!(approval["detail"]["policy"], "manual");
    assert_eq!(approval["detail"]["by"], serde_json::json!(["alice"]));
    assert_eq!(approval["detail"]["author"], "carol");

    // `show` of the decided run: what the reviewers saw, the plan cut to
    // its first lines (not a terminal) unless `--plan`.
    let id = sb.newest_run_id();
    let digest = run.output("plan", "plan_digest");
    let shown = sb.capstan(&["show", &id]);
    assert_eq!(shown.code, 0, "{shown:?}");
    for line in [
        "approval request of stage `approve` (asked ",
        &format!("\n  digest {}\n", digest.as_str().unwrap()),
        "\n  checklist:\n    [ ] the image is the one this run built: golden-",
        "\n    [ ] nothing is destroyed or replaced\n",
        "\n  details:\n  │ plan: 0 to create,",
        "\n  │ Changes to Outputs:\n",
        &format!("more lines: `capstan show {id} --plan` prints them all\n"),
    ] {
        assert!(shown.stdout.contains(line), "{line:?}: {shown:?}");
    }
    assert!(
        !shown.stdout.contains("without changing any real"),
        "{shown:?}"
    );
    let whole = sb.capstan(&["show", &id, "--plan"]);
    assert!(
        whole
            .stdout
            .contains("\n  │ state, without changing any real infrastructure.\n")
            && !whole.stdout.contains("--plan` prints them all"),
        "{whole:?}"
    );

    // Nobody answers at the prompt: the run waits, and is approved later
    // from another process like any paused run. On a terminal shorter
    // than the plan, the plan goes through the operator's pager.
    // `--color never`: progress and the table, not a colour in sight.
    let paged = format!("stty rows 8 cols 120; PAGER='sed s/^/paged:/' {line} --color never");
    let out = sb.on_a_terminal(&paged, b"\n");
    let screen = String::from_utf8_lossy(&out.stdout).replace("\r\n", "\n");
    assert_eq!(out.status.code(), Some(5), "{screen}");
    assert!(
        !regex::Regex::new(SGR).unwrap().is_match(&screen),
        "{screen:?}"
    );
    assert!(!spinner_frames(&screen, "plan").is_empty(), "{screen:?}");
    for line in ["✓ plan (", "⏸ approve: waiting for approval"] {
        assert!(screen.contains(line), "{line:?}:\n{screen}");
    }
    prompt_is_intact(&screen, "approver name (empty: leave it pending): ");
    // The end-of-run table fits the terminal: its summaries wrap.
    let table = &screen[screen.rfind('┌').expect(&screen)..];
    let table = &table[..table.find("\nrun ").expect(table)];
    assert!(table.lines().count() > 11, "{table}");
    for row in table.lines() {
        assert!(
            row.chars().count() <= 120,
            "{row:?} is wider than the terminal:\n{table}"
        );
    }
    assert!(
        regex::Regex::new("│ approve +WAITING ")
            .unwrap()
            .is_match(table),
        "{table}"
    );
    let id = sb.newest_run_id();
    assert!(
        screen.contains(&format!("capstan approve {id}")),
        "{screen}"
    );
    for line in [
        "\npaged:  │ plan: 0 to create, 0 to update, 0 to delete, 0 to replace; no output changes",
        "\npaged:  │ No changes. Your infrastructure matches the configuration.\n",
        &format!("\n(the details were paged; `capstan show {id} --plan` prints them again)\n"),
        "\n  [ ] nothing is destroyed or replaced\n",
    ] {
        assert!(screen.contains(line), "{line:?}:\n{screen}");
    }
    let shown = sb.capstan(&["show", &id]);
    for line in [
        "\n    [ ] the change window allows a deploy now\n",
        "\n  │ No changes. Your infrastructure matches the configuration.\n",
        "\nwaiting for approval: stage `approve`",
    ] {
        assert!(shown.stdout.contains(line), "{line:?}: {shown:?}");
    }
    assert_eq!(sb.capstan(&["approve", &id, "--as", "alice"]).code, 0);
    let resumed = sb.capstan(&["resume", &id, "-q"]);
    assert_eq!(resumed.code, 0, "{resumed:?}");
}
