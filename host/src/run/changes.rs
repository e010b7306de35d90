//! `capstan run --changed-since <git ref>`: which stages a change concerns.
//!
//! A stage runs when a file changed since the ref (committed, staged, in the
//! working tree, or new and not ignored) matches one of its
//! `triggers.paths` (globs relative to the pipeline file), when `--force`
//! names it, when a stage it needs runs, or when it declares no triggers
//! and needs nothing (nothing says it could be skipped). Every other stage
//! is *unchanged*: it does not run, and its outputs are those of the
//! environment's last good run, as `[rollback] reuse` takes them.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use globset::{Glob, GlobBuilder, GlobSetBuilder};

use crate::pipeline::Pipeline;

/// Why the changed files cannot be listed.
#[derive(Debug, thiserror::Error)]
pub enum ChangesError {
    #[error(
        "cannot run git to list the changes since `{since}`: {source}; install git, or run without --changed-since"
    )]
    NoGit {
        since: String,
        source: std::io::Error,
    },
    #[error("git {args} (in {dir}) failed: {stderr}")]
    Git {
        args: String,
        dir: String,
        stderr: String,
    },
}

/// The files changed since a ref, relative to the pipeline file's directory
/// (those outside it cannot match its globs and are left out).
#[derive(Debug, Clone)]
pub struct Changes {
    pub since: String,
    pub files: Vec<PathBuf>,
}

fn git(dir: &Path, args: &[&str], since: &str) -> Result<Vec<u8>, ChangesError> {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .output()
        .map_err(|source| ChangesError::NoGit {
            since: since.to_string(),
            source,
        })?;
    if !out.status.success() {
        return Err(ChangesError::Git {
            args: args.join(" "),
            dir: dir.display().to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(out.stdout)
}

/// What changed under `dir` since `since` (a commit, branch or tag).
pub fn since(dir: &Path, since: &str) -> Result<Changes, ChangesError> {
    let top = git(dir, &["rev-parse", "--show-toplevel"], since)?;
    let top = PathBuf::from(String::from_utf8_lossy(&top).trim());
    // `--end-of-options` keeps a ref such as `--output=x` from being an option.
    let diff = git(
        dir,
        &[
            "diff",
            "--name-only",
            "-z",
            "--no-renames",
            "--end-of-options",
            since,
            "--",
        ],
        since,
    )?;
    let new = git(
        dir,
        &[
            "ls-files",
            "-z",
            "--others",
            "--exclude-standard",
            "--full-name",
        ],
        since,
    )?;
    let base = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
    let top = top.canonicalize().unwrap_or(top);
    let files = diff
        .split(|b| *b == 0)
        .chain(new.split(|b| *b == 0))
        .filter(|p| !p.is_empty())
        .filter_map(|p| {
            let path = top.join(String::from_utf8_lossy(p).as_ref());
            path.strip_prefix(&base).ok().map(Path::to_path_buf)
        })
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    Ok(Changes {
        since: since.to_string(),
        files,
    })
}

/// A `triggers.paths` glob, as git reads pathspecs: `*` stays in one
/// directory, `**` crosses them.
pub fn glob(pattern: &str) -> Result<Glob, globset::Error> {
    GlobBuilder::new(pattern).literal_separator(true).build()
}

/// Which stages run, and why each other one does not.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selection {
    pub run: BTreeSet<String>,
    /// Stages that do not run, with the reason (`no changes under …`).
    pub unchanged: Vec<(String, String)>,
}

/// The stages of `pipeline` that `changes` (and `forced`) make run.
pub fn select(pipeline: &Pipeline, changes: &Changes, forced: &[String]) -> Selection {
    let mut out = Selection::default();
    // Stages are in dependency order: what a stage needs is decided first.
    for (name, stage) in &pipeline.stages {
        let triggered = !stage.trigger_paths.is_empty() && {
            let mut set = GlobSetBuilder::new();
            for p in &stage.trigger_paths {
                // Validated when the pipeline was loaded.
                if let Ok(glob) = glob(p) {
                    set.add(glob);
                }
            }
            let set = set.build().unwrap_or_else(|_| globset::GlobSet::empty());
            changes.files.iter().any(|f| set.is_match(f))
        };
        let upstream_runs = stage.needs.iter().any(|n| out.run.contains(n));
        let unfiltered = stage.trigger_paths.is_empty() && stage.needs.is_empty();
        if forced.contains(name) || triggered || upstream_runs || unfiltered {
            out.run.insert(name.clone());
            continue;
        }
        let under = if stage.trigger_paths.is_empty() {
            format!("what it needs ({})", stage.needs.join(", "))
        } else {
            stage.trigger_paths.join(", ")
        };
        out.unchanged.push((
            name.clone(),
            format!("skipped: no changes under {under} since {}", changes.since),
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::run::testing::pipeline;

    const PIPELINE: &str = r#"
[pipeline]
name = "p"
[plugins.x]
path = "x.wasm"
[stages.build]
plugin = "x"
triggers.paths = ["packer/**"]
[stages.lint]
plugin = "x"
triggers.paths = ["infrastructure/*.tf"]
[stages.plan]
plugin = "x"
needs = ["build", "lint"]
triggers.paths = ["infrastructure/**"]
[stages.apply]
plugin = "x"
needs = ["plan"]
[stages.report]
plugin = "x"
"#;

    fn changed(files: &[&str]) -> Changes {
        Changes {
            since: "main".into(),
            files: files.iter().map(PathBuf::from).collect(),
        }
    }

    fn running(s: &Selection) -> Vec<&str> {
        s.run.iter().map(String::as_str).collect()
    }

    #[test]
    fn changed_paths_run_their_stages_and_what_needs_them() {
        let (_d, p) = pipeline(PIPELINE);
        let s = select(&p, &changed(&["packer/template.json"]), &[]);
        assert_eq!(running(&s), ["apply", "build", "plan", "report"]);
        assert_eq!(
            s.unchanged,
            [(
                "lint".to_string(),
                "skipped: no changes under infrastructure/*.tf since main".to_string()
            )]
        );
        let s = select(&p, &changed(&["infrastructure/modules/vpc/main.tf"]), &[]);
        assert_eq!(
            running(&s),
            ["apply", "plan", "report"],
            "`*` stays in one directory"
        );
        assert_eq!(s.unchanged[0].0, "build");
        let s = select(&p, &changed(&["README.md"]), &[]);
        assert_eq!(running(&s), ["report"]);
        assert_eq!(
            s.unchanged.last().unwrap(),
            &(
                "apply".to_string(),
                "skipped: no changes under what it needs (plan) since main".to_string()
            )
        );
        let s = select(&p, &changed(&[]), &["build".to_string()]);
        assert_eq!(running(&s), ["apply", "build", "plan", "report"]);
    }

    #[test]
    fn changes_come_from_git_relative_to_the_pipeline_file() {
        let dir = tempfile::tempdir().unwrap();
        let repo = dir.path();
        let sh = |args: &[&str]| {
            let out = Command::new("git")
                .arg("-C")
                .arg(repo)
                .args(args)
                .output()
                .unwrap();
            assert!(out.status.success(), "{out:?}");
        };
        sh(&["init", "-q", "-b", "main"]);
        sh(&["config", "user.email", "t@example.com"]);
        sh(&["config", "user.name", "t"]);
        std::fs::create_dir_all(repo.join("deploy/packer")).unwrap();
        std::fs::write(repo.join("deploy/packer/a.json"), "1").unwrap();
        std::fs::write(repo.join("outside.txt"), "1").unwrap();
        sh(&["add", "."]);
        sh(&["commit", "-q", "-m", "one"]);
        std::fs::write(repo.join("deploy/packer/a.json"), "2").unwrap();
        std::fs::write(repo.join("deploy/new.tf"), "new").unwrap();
        std::fs::write(repo.join("outside.txt"), "2").unwrap();
        let c = since(&repo.join("deploy"), "main").unwrap();
        assert_eq!(
            c.files,
            [PathBuf::from("new.tf"), PathBuf::from("packer/a.json")]
        );
        let e = since(&repo.join("deploy"), "nope").unwrap_err().to_string();
        assert!(e.contains("git diff") && e.contains("nope"), "{e}");
        let e = since(&repo.join("deploy"), "--output=/tmp/x")
            .unwrap_err()
            .to_string();
        assert!(e.contains("failed"), "{e}");
    }
}
