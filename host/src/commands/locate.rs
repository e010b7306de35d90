//! Where Capstan's state (`.capstan/`: run store, run directories, compiled
//! plugins when the per-user cache is not used) lives when `--state-dir`
//! does not say. It follows the pipeline
//! file, not the current directory: two runs of one pipeline started from
//! different directories share one store, and so one environment lock.

use std::path::{Path, PathBuf};

/// The state directory's name.
pub const STATE_DIR: &str = ".capstan";

/// What a command's state is found from.
pub enum Anchor<'a> {
    /// A pipeline file: its repository's (or its own directory's) state,
    /// created on first use.
    Pipeline(&'a Path),
    /// Runs already recorded (a run id, history): the nearest state found
    /// looking upwards from the current directory, as git finds `.git`. It
    /// must exist: reading an empty store would only say "no such run".
    Recorded,
    /// Only the compiled-plugin cache: the nearest state upwards, else one
    /// in the current directory.
    Cache,
}

/// The state dir of `pipeline`: the nearest `.capstan/` between the file's
/// directory and the root of the git repository holding it, else one at
/// that root; outside a repository, the one beside the file.
pub fn for_pipeline(pipeline: &Path) -> std::io::Result<PathBuf> {
    let file = std::path::absolute(pipeline)?;
    let dir = file.parent().unwrap_or(Path::new("/")).to_path_buf();
    let Some(root) = dir.ancestors().find(|d| d.join(".git").exists()) else {
        return Ok(dir.join(STATE_DIR));
    };
    let existing = dir
        .ancestors()
        .take_while(|d| d.starts_with(root))
        .map(|d| d.join(STATE_DIR))
        .find(|s| s.is_dir());
    Ok(existing.unwrap_or_else(|| root.join(STATE_DIR)))
}

/// The nearest `.capstan/` holding a run store (or any `.capstan/` when the
/// store is elsewhere), looking upwards from `from`.
pub fn upwards(from: &Path, store_given: bool) -> Option<PathBuf> {
    from.ancestors().map(|d| d.join(STATE_DIR)).find(|s| {
        if store_given {
            s.is_dir()
        } else {
            s.join("capstan.db").is_file()
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_follows_the_pipeline_to_its_repository_root() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        let deep = root.join("repo/infra/pipelines");
        std::fs::create_dir_all(&deep).unwrap();
        let file = deep.join("deploy.toml");
        // Outside a repository: beside the file.
        assert_eq!(for_pipeline(&file).unwrap(), deep.join(STATE_DIR));
        // Inside one: at its root, wherever the file is in it.
        std::fs::create_dir(root.join("repo/.git")).unwrap();
        assert_eq!(
            for_pipeline(&file).unwrap(),
            root.join("repo").join(STATE_DIR)
        );
        // An existing state dir nearer the file, inside the repository, wins.
        std::fs::create_dir(root.join("repo/infra").join(STATE_DIR)).unwrap();
        assert_eq!(
            for_pipeline(&file).unwrap(),
            root.join("repo/infra").join(STATE_DIR)
        );
        // One above the repository does not count.
        std::fs::remove_dir(root.join("repo/infra").join(STATE_DIR)).unwrap();
        std::fs::create_dir(root.join(STATE_DIR)).unwrap();
        assert_eq!(
            for_pipeline(&file).unwrap(),
            root.join("repo").join(STATE_DIR)
        );
    }

    #[test]
    fn recorded_state_is_found_upwards() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        let deep = root.join("repo/a/b");
        std::fs::create_dir_all(&deep).unwrap();
        assert_eq!(upwards(&deep, false), None);
        std::fs::create_dir_all(root.join("repo").join(STATE_DIR)).unwrap();
        // A state dir with no store in it is not one to read runs from…
        assert_eq!(upwards(&deep, false), None);
        // …unless the store is given elsewhere.
        assert_eq!(
            upwards(&deep, true),
            Some(root.join("repo").join(STATE_DIR))
        );
        std::fs::write(root.join("repo").join(STATE_DIR).join("capstan.db"), "").unwrap();
        assert_eq!(
            upwards(&deep, false),
            Some(root.join("repo").join(STATE_DIR))
        );
    }
}
