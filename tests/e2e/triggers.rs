//! `capstan run --changed-since`: in a git repository holding the
//! golden-image example, a change under packer/ builds and deploys; a
//! change only under infrastructure/ keeps the last good image (the build
//! is recorded as unchanged, with the good run's outputs); `--force build`
//! builds anyway.

use std::path::Path;
use std::process::Command;

use crate::golden_image::example;
use crate::harness::{Run, Sandbox};

fn git(repo: &Path, args: &[&str]) {
    let out = Command::new("git")
        .arg("-C")
        .arg(repo)
        .args(args)
        .output()
        .expect("git runs");
    assert!(out.status.success(), "git {args:?}: {out:?}");
}

/// `capstan run … --env dev -q <extra>`: the exit code, stderr and the run.
fn run(sb: &Sandbox, pipeline: &Path, extra: &[&str]) -> (i32, String, Run) {
    let mut args = vec!["run", pipeline.to_str().unwrap(), "--env", "dev", "-q"];
    args.extend(extra);
    let ran = sb.capstan(&args);
    (ran.code, ran.stderr, sb.last_run())
}

fn append(path: &Path, text: &str) {
    let mut old = std::fs::read_to_string(path).unwrap();
    old.push_str(text);
    std::fs::write(path, old).unwrap();
}

/// The status and message the run store has for `stage` of `run`.
fn stored(sb: &Sandbox, run: &str, stage: &str) -> (String, String) {
    let show = sb.show(run);
    let s = show["stages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == stage)
        .unwrap_or_else(|| panic!("no {stage}: {show:#}"))
        .clone();
    (
        s["status"].as_str().unwrap().to_string(),
        s["message"].as_str().unwrap().to_string(),
    )
}

#[test]
fn changed_paths_decide_what_runs_and_the_rest_keeps_the_last_good_run() {
    let sb = Sandbox::new();
    let pipeline = example(&sb, |t| t);
    let repo = pipeline.parent().unwrap();
    git(repo, &["init", "-q", "-b", "main"]);
    git(repo, &["config", "user.email", "ci@example.com"]);
    git(repo, &["config", "user.name", "ci"]);
    git(repo, &["add", "."]);
    git(repo, &["commit", "-q", "-m", "example"]);
    let (code, stderr, good) = run(&sb, &pipeline, &[]);
    assert_eq!(code, 0, "{stderr}");
    let first_image = good.output("build", "template_id");

    // A change under packer/: the build runs, and everything after it.
    append(
        &repo.join("packer/scripts/bake.sh"),
        "\n# a change to the image\n",
    );
    let (code, stderr, built) = run(&sb, &pipeline, &["--changed-since", "HEAD"]);
    assert_eq!(code, 0, "{stderr}");
    let id = sb.newest_run_id();
    assert_eq!(
        built.output("build", "skipped"),
        false,
        "inputs changed: Packer built"
    );
    for stage in ["build", "plan", "approve", "apply", "configure", "smoke"] {
        assert_eq!(stored(&sb, &id, stage).0, "succeeded", "{stage}");
    }
    let (status, message) = stored(&sb, &id, "lint");
    assert_eq!(status, "reused");
    assert!(
        message
            .starts_with("skipped: no changes under infrastructure/** since HEAD (outputs of run "),
        "{message}"
    );
    let second_image = built.output("build", "template_id");
    assert_ne!(second_image, first_image);
    git(repo, &["commit", "-q", "-am", "image change"]);

    // A change only under infrastructure/: no build; the plan takes the
    // last good run's image.
    append(&repo.join("infrastructure/variables.tf"), "\n# a comment\n");
    let (code, stderr, planned) = run(&sb, &pipeline, &["--changed-since", "HEAD"]);
    assert_eq!(code, 0, "{stderr}");
    let id = sb.newest_run_id();
    let (status, message) = stored(&sb, &id, "build");
    assert_eq!(status, "reused");
    assert!(
        message.starts_with("skipped: no changes under packer/** since HEAD (outputs of run "),
        "{message}"
    );
    assert_eq!(stored(&sb, &id, "plan").0, "succeeded");
    assert_eq!(planned.output("apply", "image_id"), second_image);
    assert!(
        !planned
            .audit
            .iter()
            .any(|e| e["stage"] == "build" && e["capability"] == "exec"),
        "the build did not run"
    );

    // --force build: the build runs, and Packer rebuilds though nothing
    // under packer/ changed.
    let (code, stderr, forced) = run(
        &sb,
        &pipeline,
        &["--changed-since", "HEAD", "--force", "build"],
    );
    assert_eq!(code, 0, "{stderr}");
    let id = sb.newest_run_id();
    assert_eq!(stored(&sb, &id, "build").0, "succeeded");
    assert_eq!(forced.output("build", "skipped"), false);
    assert!(
        forced.log("build").contains("skip_unchanged.force"),
        "{}",
        forced.log("build")
    );

    // A ref git does not know is a usage error naming it.
    let (code, stderr, _) = run(&sb, &pipeline, &["--changed-since", "no-such-ref"]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("no-such-ref"), "{stderr}");
}
