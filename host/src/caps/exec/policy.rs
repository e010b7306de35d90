//! The `exec` capability: which programs a stage may start, with which
//! arguments, environment and working directory.
//!
//! The pure part ([`ExecPolicy::allows`]) is table-tested below; the host
//! side of the `process` interface that enforces it is [`super::process`].

use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sha2::{Digest, Sha256};
use thiserror::Error;
use wildmatch::WildMatch;

use crate::caps::env;
use crate::pipeline::sandbox::{Limits, Sandbox};
use crate::pipeline::{ExecGrant, Network};

/// A program the pipeline lets a stage start, resolved when it loads.
#[derive(Debug, Clone)]
pub struct ExecPolicy {
    /// The name plugins use (`terraform`).
    pub program: String,
    /// Absolute path resolved from `PATH` at load time.
    pub path: PathBuf,
    /// sha256 of the program file (hex).
    pub digest: String,
    pub args: Vec<String>,
    pub env: Vec<String>,
    pub timeout: Option<Duration>,
    /// The network it sees and its limits (the grant's, else the
    /// pipeline's `[sandbox]` defaults).
    pub network: Network,
    pub limits: Limits,
    /// The program file that was hashed, kept open: children run this very
    /// file (exec'd from the descriptor), never whatever `path` leads to later.
    pub file: Arc<ProgramFile>,
}

/// An open program file and what it was like when it was hashed.
#[derive(Debug)]
pub struct ProgramFile {
    pub file: File,
    stamp: Stamp,
    /// A `#!` script: its interpreter opens the file by the path it is run
    /// by, so the descriptor must stay open across `exec`.
    pub script: bool,
}

/// What changes when a file's content is rewritten in place (ctime cannot
/// be set back by anyone but the kernel).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Stamp {
    dev: u64,
    ino: u64,
    size: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl Stamp {
    fn of(file: &File) -> std::io::Result<Stamp> {
        let m = file.metadata()?;
        Ok(Stamp {
            dev: m.dev(),
            ino: m.ino(),
            size: m.size(),
            mtime: (m.mtime(), m.mtime_nsec()),
            ctime: (m.ctime(), m.ctime_nsec()),
        })
    }
}

impl ProgramFile {
    fn new(file: File, stamp: Stamp) -> ProgramFile {
        let mut magic = [0u8; 2];
        let script = file.read_exact_at(&mut magic, 0).is_ok() && &magic == b"#!";
        ProgramFile {
            file,
            stamp,
            script,
        }
    }

    /// The path that executes this open file (`execve` of
    /// `/proc/self/fd/N`, as `fexecve` does); the descriptor must stay open
    /// across `exec` in the child for `#!` scripts, whose interpreter opens it.
    pub fn exec_path(&self) -> PathBuf {
        crate::caps::fs::fd_path(&self.file)
    }

    /// Whether the file was modified in place since it was hashed.
    pub fn unchanged(&self) -> bool {
        Stamp::of(&self.file).is_ok_and(|s| s == self.stamp)
    }
}

/// A grant whose program cannot be used.
#[derive(Debug, Error)]
pub enum ResolveError {
    #[error(
        "program `{program}` is granted but not found on PATH ({reason}); install it, or grant it by absolute path"
    )]
    NotFound { program: String, reason: String },
    #[error(
        "program `{program}` ({path}) has sha256 {actual}, but the grant pins {pinned}; review the new binary, then update `sha256`"
    )]
    PinMismatch {
        program: String,
        path: String,
        actual: String,
        pinned: String,
    },
    #[error("cannot open program `{program}` ({path}) to hash it: {source}")]
    Read {
        program: String,
        path: String,
        source: std::io::Error,
    },
}

/// Why an exec was refused. Messages name the rule and how to change it.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum Denial {
    #[error(
        "program `{program}` is not granted to this stage (granted: {granted}); to allow it add [[stages.<stage>.grants.exec]] program = \"{program}\" to the pipeline file"
    )]
    Program { program: String, granted: String },
    #[error(
        "`{program}` argument {position} `{arg}` does not match the granted pattern `{pattern}`"
    )]
    Argument {
        program: String,
        position: usize,
        arg: String,
        pattern: String,
    },
    #[error("`{program}` is missing argument {position} (the grant requires `{pattern}`)")]
    MissingArgument {
        program: String,
        position: usize,
        pattern: String,
    },
    #[error(
        "`{program}` got {count} arguments, but the grant allows at most {allowed} (`args` = {patterns})"
    )]
    TooManyArguments {
        program: String,
        count: usize,
        allowed: usize,
        patterns: String,
    },
    #[error(
        "`{program}` may not be given environment variable `{name}`; add it to `env` of the exec grant"
    )]
    Env { program: String, name: String },
    #[error("working directory `{cwd}` is outside the stage's granted directories")]
    Cwd { cwd: String },
    #[error(
        "`{program}` {what} holds {origin} (or an encoding of it): command lines are visible to every user of the machine (`ps`, /proc/<pid>/cmdline), so a secret reaches a program only through its grant's `env` or `file`"
    )]
    Secret {
        program: String,
        what: String,
        origin: String,
    },
    #[error(
        "program `{program}` ({path}) was modified since it was checked when the pipeline loaded; it is not run"
    )]
    Changed { program: String, path: String },
}

impl ExecPolicy {
    /// Resolve a grant's program to an absolute path and check its pin;
    /// its network and limits come from the grant, else from `sandbox`.
    pub fn resolve(grant: &ExecGrant, sandbox: &Sandbox) -> Result<ExecPolicy, ResolveError> {
        let path = which::which(&grant.program).map_err(|e| ResolveError::NotFound {
            program: grant.program.clone(),
            reason: e.to_string(),
        })?;
        let path = path.canonicalize().unwrap_or(path);
        let read_error = |source| ResolveError::Read {
            program: grant.program.clone(),
            path: path.display().to_string(),
            source,
        };
        let file = File::open(&path).map_err(read_error)?;
        let (digest, stamp) = file_digest(&file).map_err(read_error)?;
        if let Some(pinned) = &grant.sha256
            && !pinned.eq_ignore_ascii_case(&digest)
        {
            return Err(ResolveError::PinMismatch {
                program: grant.program.clone(),
                path: path.display().to_string(),
                actual: digest,
                pinned: pinned.clone(),
            });
        }
        Ok(ExecPolicy {
            program: grant.program.clone(),
            path,
            digest,
            args: grant.args.clone(),
            env: grant.env.clone(),
            timeout: grant.timeout,
            network: sandbox.network(grant),
            limits: sandbox.limits(grant),
            file: Arc::new(ProgramFile::new(file, stamp)),
        })
    }

    /// Whether the open program still has the content that was hashed: its
    /// change stamp is the same, or (when something else changed its stamp,
    /// such as the file being replaced on `PATH`, which unlinks it) it hashes
    /// the same again from the descriptor.
    pub fn unchanged(&self) -> bool {
        self.file.unchanged()
            || file_digest(&self.file.file).is_ok_and(|(digest, _)| digest == self.digest)
    }

    /// Whether `args` fit the grant's per-position patterns. Each pattern
    /// takes one argument (`a|b` alternatives, `*`/`?` wildcards inside),
    /// except a lone `**`, which takes all remaining arguments.
    pub fn allows(&self, args: &[String]) -> Result<(), Denial> {
        for (position, pattern) in self.args.iter().enumerate() {
            if pattern == "**" {
                return Ok(());
            }
            let Some(arg) = args.get(position) else {
                return Err(Denial::MissingArgument {
                    program: self.program.clone(),
                    position: position + 1,
                    pattern: pattern.clone(),
                });
            };
            if !pattern
                .split('|')
                .any(|alt| WildMatch::new(alt).matches(arg))
            {
                return Err(Denial::Argument {
                    program: self.program.clone(),
                    position: position + 1,
                    arg: arg.clone(),
                    pattern: pattern.clone(),
                });
            }
        }
        if args.len() > self.args.len() {
            return Err(Denial::TooManyArguments {
                program: self.program.clone(),
                count: args.len(),
                allowed: self.args.len(),
                patterns: format!("{:?}", self.args),
            });
        }
        Ok(())
    }

    /// Whether the plugin may set `name` in the child's environment.
    pub fn allows_env(&self, name: &str) -> Result<(), Denial> {
        if self.env.iter().any(|p| env::matches(p, name)) {
            Ok(())
        } else {
            Err(Denial::Env {
                program: self.program.clone(),
                name: name.to_string(),
            })
        }
    }
}

/// sha256 (hex) of an open program file, streamed (tools are often 100 MB)
/// and remembered per file identity and change stamp, so that a pipeline
/// granting `terraform` to three stages hashes it once. The stamp is taken
/// before and after hashing: a file rewritten meanwhile is refused.
fn file_digest(file: &File) -> std::io::Result<(String, Stamp)> {
    static SEEN: Mutex<Option<HashMap<Stamp, String>>> = Mutex::new(None);
    let stamp = Stamp::of(file)?;
    if let Some(digest) = SEEN
        .lock()
        .expect("digest memo")
        .as_ref()
        .and_then(|m| m.get(&stamp))
    {
        return Ok((digest.clone(), stamp));
    }
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    let mut offset = 0u64;
    loop {
        let n = file.read_at(&mut buf, offset)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        offset += n as u64;
    }
    if Stamp::of(file)? != stamp {
        return Err(std::io::Error::other(
            "the file changed while it was hashed",
        ));
    }
    let digest = hex::encode(hasher.finalize());
    SEEN.lock()
        .expect("digest memo")
        .get_or_insert_default()
        .insert(stamp, digest.clone());
    Ok((digest, stamp))
}

/// The policy for the program a plugin names. Only the granted name is
/// accepted: not a path to it, not a shell line.
pub fn find<'a>(policies: &'a [ExecPolicy], program: &str) -> Result<&'a ExecPolicy, Denial> {
    policies
        .iter()
        .find(|p| p.program == program)
        .ok_or_else(|| Denial::Program {
            program: program.to_string(),
            granted: if policies.is_empty() {
                "nothing".into()
            } else {
                policies
                    .iter()
                    .map(|p| p.program.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            },
        })
}

/// The child's environment: a baseline (`PATH` from the host, `HOME` = the
/// stage work dir), the host variables the grant passes through, `TMPDIR`
/// = the sandbox's private directory (the host's `/tmp` is out of reach),
/// then the plugin's own variables (already checked against the grant).
pub fn child_env(
    policy: &ExecPolicy,
    host: impl IntoIterator<Item = (String, String)>,
    work_dir: &Path,
    tmp: Option<&Path>,
    plugin_env: &[(String, String)],
) -> Vec<(String, String)> {
    let host: Vec<(String, String)> = host.into_iter().collect();
    let mut vars: Vec<(String, String)> = Vec::new();
    let mut set = |k: &str, v: &str| {
        vars.retain(|(name, _)| name != k);
        vars.push((k.to_string(), v.to_string()));
    };
    if let Some((_, path)) = host.iter().find(|(k, _)| k == "PATH") {
        set("PATH", path);
    }
    set("HOME", &work_dir.to_string_lossy());
    for (k, v) in env::select(&policy.env, host.iter().cloned()) {
        set(&k, &v);
    }
    if let Some(tmp) = tmp {
        set("TMPDIR", &tmp.to_string_lossy());
    }
    for (k, v) in plugin_env {
        set(k, v);
    }
    vars
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(args: &[&str], env: &[&str]) -> ExecPolicy {
        let file = File::open(std::env::current_exe().unwrap()).unwrap();
        let stamp = Stamp::of(&file).unwrap();
        ExecPolicy {
            program: "terraform".into(),
            path: "/usr/bin/terraform".into(),
            digest: String::new(),
            args: args.iter().map(|s| s.to_string()).collect(),
            env: env.iter().map(|s| s.to_string()).collect(),
            timeout: None,
            network: Network::Host,
            limits: Sandbox::default().limits,
            file: Arc::new(ProgramFile::new(file, stamp)),
        }
    }

    #[test]
    fn a_program_replaced_on_its_path_still_runs_as_hashed_but_an_edit_does_not() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tool");
        std::fs::write(&path, "#!/bin/sh\necho original\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        let grant: ExecGrant =
            toml::from_str(&format!("program = {:?}", path.to_str().unwrap())).unwrap();
        let policy = ExecPolicy::resolve(&grant, &Sandbox::default()).unwrap();
        assert!(policy.unchanged());
        // Another file renamed over the path: the open one is untouched
        // (only its link count, and so its ctime, changed).
        let new = dir.path().join("tool.new");
        std::fs::write(&new, "#!/bin/sh\necho replaced\n").unwrap();
        std::fs::set_permissions(&new, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::rename(&new, &path).unwrap();
        assert!(policy.unchanged());
        // The open file itself rewritten (through another name for it).
        let policy = ExecPolicy::resolve(&grant, &Sandbox::default()).unwrap();
        std::thread::sleep(Duration::from_millis(20));
        std::fs::write(&path, "#!/bin/sh\necho edited\n").unwrap();
        assert!(!policy.unchanged());
    }

    #[test]
    fn a_program_rewritten_in_place_is_seen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tool");
        std::fs::write(&path, "#!/bin/sh\necho one\n").unwrap();
        let file = File::open(&path).unwrap();
        let (digest, stamp) = file_digest(&file).unwrap();
        let program = ProgramFile::new(file, stamp);
        assert!(program.script);
        assert!(program.unchanged());
        std::thread::sleep(Duration::from_millis(20));
        std::fs::write(&path, "#!/bin/sh\necho two\n").unwrap();
        assert!(!program.unchanged());
        let (again, _) = file_digest(&File::open(&path).unwrap()).unwrap();
        assert_ne!(
            digest, again,
            "the memo must not answer for changed content"
        );
    }

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn argument_patterns() {
        let table: &[(&[&str], &[&str], bool)] = &[
            (&[], &[], true),
            (&[], &["x"], false),
            (&["init|plan|show"], &["plan"], true),
            (&["init|plan|show"], &["apply"], false),
            (&["init|plan|show"], &[], false),
            (&["plan", "-out=*"], &["plan", "-out=/w/tfplan"], true),
            (&["plan", "-out=*"], &["plan", "-destroy"], false),
            (&["*"], &["anything at all"], true),
            (&["*"], &["a", "b"], false),
            (&["show", "**"], &["show"], true),
            (&["show", "**"], &["show", "-json", "tfplan"], true),
            (&["**"], &["-c", "rm -rf /"], true),
            (&["-c"], &["-c", "x"], false),
            (&["hello|world"], &["--evil-flag"], false),
            (&["apply", "tfplan"], &["apply"], false),
        ];
        for (patterns, args, expected) in table {
            let got = policy(patterns, &[]).allows(&strings(args));
            assert_eq!(
                got.is_ok(),
                *expected,
                "patterns {patterns:?} args {args:?}: {got:?}"
            );
        }
    }

    #[test]
    fn denial_messages_name_the_rule() {
        let err = policy(&["init|plan"], &[])
            .allows(&strings(&["apply"]))
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "`terraform` argument 1 `apply` does not match the granted pattern `init|plan`"
        );
        let err = find(&[policy(&[], &[])], "sh").unwrap_err();
        assert!(
            err.to_string()
                .contains("program `sh` is not granted to this stage (granted: terraform)"),
            "{err}"
        );
    }

    #[test]
    fn only_the_granted_name_finds_a_policy() {
        let policies = [policy(&[], &[])];
        for program in [
            "terraform",
            "/usr/bin/terraform",
            "terraform ",
            "sh",
            "terraform; sh",
            "../terraform",
        ] {
            assert_eq!(
                find(&policies, program).is_ok(),
                program == "terraform",
                "{program}"
            );
        }
    }

    #[test]
    fn env_for_children() {
        let p = policy(&[], &["TF_VAR_*", "TF_IN_AUTOMATION"]);
        assert!(p.allows_env("TF_VAR_region").is_ok());
        assert!(p.allows_env("TF_IN_AUTOMATION").is_ok());
        assert!(p.allows_env("LD_PRELOAD").is_err());
        let host = vec![
            ("PATH".to_string(), "/usr/bin".to_string()),
            ("HOME".to_string(), "/root".to_string()),
            ("AWS_SECRET_ACCESS_KEY".to_string(), "s3cr3t".to_string()),
            ("TF_VAR_region".to_string(), "eu".to_string()),
            ("TMPDIR".to_string(), "/tmp".to_string()),
        ];
        let vars = child_env(
            &p,
            host,
            Path::new("/run/w"),
            Some(Path::new("/tmp/capstan-x")),
            &[("TF_IN_AUTOMATION".into(), "1".into())],
        );
        assert_eq!(
            vars,
            vec![
                ("PATH".to_string(), "/usr/bin".to_string()),
                ("HOME".to_string(), "/run/w".to_string()),
                ("TF_VAR_region".to_string(), "eu".to_string()),
                ("TMPDIR".to_string(), "/tmp/capstan-x".to_string()),
                ("TF_IN_AUTOMATION".to_string(), "1".to_string()),
            ]
        );
    }
}
