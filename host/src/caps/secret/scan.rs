//! When a stage that received secrets ends, the run directory is searched
//! for their values (not for values plugins marked sensitive: see
//! `run::stage`, `left_behind`): a program or plugin may write a
//! value to a file of its work dir, which would then be kept with the run
//! (and read by the stages after it). A value found fails the stage, and
//! is replaced by `***` in the file, so that nothing kept holds it.
//!
//! Searched: every regular file under the run directory, symlinks not
//! followed, each read as a stream, except the work dirs of other stages
//! (their own stage searches them when it ends), the private temporary
//! directories of stages still running (`tmp/`) and their secret files
//! (`secrets/`).

use std::fs::File;
use std::io::{self, BufReader, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use super::redact::{Origin, Patterns, Stream};

/// A value found in a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    /// The file, relative to the run directory.
    pub file: PathBuf,
    pub origin: Origin,
    /// Whether the file was rewritten with the value masked (files of the
    /// stage's work dir; the host's own files are its redaction's, and a
    /// value there is a bug to report, not to hide).
    pub masked: bool,
}

/// Search the run directory `run_dir` after stage `stage` ended, for the
/// values of `patterns` (the stage's own). Values found in the stage's
/// work dir (`work_dir`) are masked there.
pub fn run_dir(run_dir: &Path, work_dir: &Path, patterns: &Patterns) -> io::Result<Vec<Found>> {
    let mut found = Vec::new();
    if patterns.is_empty() {
        return Ok(found);
    }
    let stages = run_dir.join("stages");
    let skip = |path: &Path| {
        path == run_dir.join("tmp")
            || path == super::deliver::secrets_dir(run_dir)
            || (path.parent() == Some(stages.as_path()) && path != work_dir)
    };
    walk(run_dir, &skip, &mut |path| {
        let Some(origin) = first_value(path, patterns)? else {
            return Ok(());
        };
        let masked = path.starts_with(work_dir);
        if masked {
            mask(path, patterns)?;
        }
        found.push(Found {
            file: path.strip_prefix(run_dir).unwrap_or(path).to_path_buf(),
            origin,
            masked,
        });
        Ok(())
    })?;
    // What the stage left first (the host's own files would be a bug).
    found.sort_by(|a, b| (!a.masked, &a.file).cmp(&(!b.masked, &b.file)));
    Ok(found)
}

/// Every regular file under `dir` (not through symlinks), but what `skip`
/// says.
fn walk(
    dir: &Path,
    skip: &dyn Fn(&Path) -> bool,
    visit: &mut dyn FnMut(&Path) -> io::Result<()>,
) -> io::Result<()> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        // Removed meanwhile (a stage's temporary directory).
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let entry = entry?;
        let path = entry.path();
        if skip(&path) {
            continue;
        }
        let kind = entry.file_type()?;
        if kind.is_dir() {
            walk(&path, skip, visit)?;
        } else if kind.is_file() {
            visit(&path)?;
        }
    }
    Ok(())
}

/// Open `path` if it is (still) a regular file, never through a symlink
/// and never blocking on a FIFO swapped in.
fn open_regular(path: &Path) -> io::Result<Option<File>> {
    let file = match std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)
    {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => return Ok(None),
        Err(e) => return Err(e),
    };
    Ok(file.metadata()?.is_file().then_some(file))
}

/// The origin of the first value in the file at `path`, read as a stream.
fn first_value(path: &Path, patterns: &Patterns) -> io::Result<Option<Origin>> {
    let (Some(automaton), Some(file)) = (patterns.automaton(), open_regular(path)?) else {
        return Ok(None);
    };
    match automaton.stream_find_iter(BufReader::new(file)).next() {
        Some(m) => Ok(Some(patterns.origin_of(m?.pattern().as_usize()).clone())),
        None => Ok(None),
    }
}

/// Rewrite the file at `path` with every value masked (a new file with its
/// mode, renamed over it).
fn mask(path: &Path, patterns: &Patterns) -> io::Result<()> {
    let Some(mut file) = open_regular(path)? else {
        return Ok(());
    };
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut out = tempfile::NamedTempFile::new_in(dir)?;
    let mut stream = Stream::default();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        out.write_all(&stream.push(patterns, &buf[..n]))?;
    }
    out.write_all(&stream.flush(patterns))?;
    out.as_file()
        .set_permissions(file.metadata()?.permissions())?;
    out.persist(path).map_err(|e| e.error)?;
    Ok(())
}

/// Why the stage fails, for `found` (not empty) in stage `stage`.
pub fn reason(stage: &str, found: &[Found]) -> String {
    let first = &found[0];
    let what = match &first.origin {
        Origin::Secret(name) => format!("secret `{name}`"),
        Origin::Sensitive { .. } => "a value its plugin marked sensitive".to_string(),
    };
    let more = match found.len() {
        1 => String::new(),
        2 => " (and 1 more file)".to_string(),
        n => format!(" (and {} more files)", n - 1),
    };
    let fix = if first.masked {
        "it is now replaced by *** there; remove it, or write it outside the run directory"
    } else {
        "a file the host writes: this is a bug of Capstan's redaction, please report it"
    };
    format!(
        "stage `{stage}` left {what} in {}{more}: {fix}",
        first.file.display()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::caps::secret::Redactor;

    #[test]
    fn values_left_in_the_work_dir_are_found_and_masked() {
        let run = tempfile::tempdir().unwrap();
        let run = run.path();
        let work = run.join("stages/deploy");
        let other = run.join("stages/other");
        for dir in [
            &work.join("sub"),
            &other,
            &run.join("logs"),
            &run.join("tmp/x"),
        ] {
            std::fs::create_dir_all(dir).unwrap();
        }
        let r = Redactor::new();
        r.add(Origin::Secret("token".into()), b"tok-0123456789");
        let value = "tok-0123456789";
        std::fs::write(work.join("clean.txt"), "nothing here").unwrap();
        // Split across the scanner's reads, deep in a big file.
        let mut big = vec![b'x'; 200_000];
        big.extend_from_slice(format!("[{value}]").as_bytes());
        std::fs::write(work.join("sub/big.bin"), &big).unwrap();
        std::fs::write(work.join("b64.txt"), "dG9rLTAxMjM0NTY3ODk=").unwrap();
        // Not this stage's: skipped (their own stage answers for them).
        std::fs::write(other.join("theirs.txt"), value).unwrap();
        std::fs::write(run.join("tmp/x/t"), value).unwrap();
        // A symlink to a file holding it is not followed; a FIFO is not read.
        std::os::unix::fs::symlink(other.join("theirs.txt"), work.join("link")).unwrap();
        nix::unistd::mkfifo(&work.join("fifo"), nix::sys::stat::Mode::S_IRWXU).unwrap();
        std::fs::write(run.join("logs/deploy.log"), format!("said {value}\n")).unwrap();

        let found = run_dir(run, &work, &r.patterns()).unwrap();
        let files: Vec<(String, bool)> = found
            .iter()
            .map(|f| (f.file.display().to_string(), f.masked))
            .collect();
        assert_eq!(
            files,
            [
                ("stages/deploy/b64.txt".to_string(), true),
                ("stages/deploy/sub/big.bin".to_string(), true),
                ("logs/deploy.log".to_string(), false),
            ]
        );
        assert_eq!(
            std::fs::read_to_string(work.join("b64.txt")).unwrap(),
            "***"
        );
        let big_after = std::fs::read(work.join("sub/big.bin")).unwrap();
        assert!(big_after.ends_with(b"x[***]"));
        assert_eq!(big_after.len(), 200_000 + 5);
        assert_eq!(
            reason("deploy", &found),
            "stage `deploy` left secret `token` in stages/deploy/b64.txt (and 2 more files): it is now replaced by *** there; remove it, or write it outside the run directory"
        );
        assert_eq!(
            reason("deploy", &found[2..]),
            "stage `deploy` left secret `token` in logs/deploy.log: a file the host writes: this is a bug of Capstan's redaction, please report it"
        );
        // Masked files no longer hold it.
        std::fs::remove_file(run.join("logs/deploy.log")).unwrap();
        assert!(run_dir(run, &work, &r.patterns()).unwrap().is_empty());
    }
}
