//! `[sandbox]` and the sandbox fields of exec grants, validated: the file
//! locations every started program may read, whether Landlock is required,
//! and each grant's network and limits with the defaults filled in. The
//! host side that applies them is `caps::exec::sandbox`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;
use wildmatch::WildMatch;

use super::diag::Diagnostic;
use super::file::{ChildLimits, ExecGrant, Network, SandboxEntry};
use super::source::{Part, SourceMap};

/// Where tools find their libraries, interpreters, users, name resolution,
/// time zones and TLS roots. Read and execute only; entries that do not
/// exist on this machine are left out. A `*` in the last component matches
/// names in its directory (`/etc/python3*`: Debian's Python reads its
/// `sitecustomize` there).
pub const SYSTEM_READ: &[&str] = &[
    "/usr",
    "/bin",
    "/sbin",
    "/lib",
    "/lib32",
    "/lib64",
    "/libx32",
    "/etc/passwd",
    "/etc/group",
    "/etc/nsswitch.conf",
    "/etc/hosts",
    "/etc/host.conf",
    "/etc/resolv.conf",
    "/etc/gai.conf",
    "/etc/services",
    "/etc/protocols",
    "/etc/localtime",
    "/etc/timezone",
    "/etc/ld.so.cache",
    "/etc/ld.so.conf",
    "/etc/ld.so.conf.d",
    "/etc/ssl",
    "/etc/ca-certificates",
    "/etc/ca-certificates.conf",
    "/etc/pki",
    "/etc/crypto-policies",
    "/etc/mime.types",
    "/etc/python3*",
    // Process and CPU facts runtimes read about themselves (Go, Python).
    // Landlock keeps other processes' sensitive files (`environ`, `mem`,
    // `fd/`) out of reach: they need ptrace rights across its domain.
    "/proc",
    "/sys/devices/system/cpu",
    "/sys/kernel/mm/transparent_hugepage",
];

/// Device files every started program may read and write.
pub const SYSTEM_DEVICES: &[&str] = &[
    "/dev/null",
    "/dev/zero",
    "/dev/full",
    "/dev/random",
    "/dev/urandom",
];

/// Defaults of [`ChildLimits`].
pub const DEFAULT_OPEN_FILES: u64 = 4096;
pub const DEFAULT_PROCESSES: u64 = 1024;
pub const DEFAULT_CPU: Duration = Duration::from_secs(3600);
pub const DEFAULT_ADDRESS_SPACE: u64 = 16 << 30;

/// `[sandbox]`, validated.
#[derive(Debug, Clone, Serialize)]
pub struct Sandbox {
    /// Refuse to run where the kernel lacks Landlock.
    pub require: bool,
    /// Canonical paths every child may read and execute: the system set
    /// (unless `system = false`) and `read`.
    pub read: Vec<PathBuf>,
    /// Device files every child may read and write.
    pub devices: Vec<PathBuf>,
    /// Network of grants that do not set one.
    pub network: Network,
    /// Limits of grants that do not set them (all filled in).
    pub limits: Limits,
}

/// Every limit of one started program, defaults filled in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Limits {
    pub open_files: u64,
    pub processes: u64,
    #[serde(with = "humantime_secs")]
    pub cpu: Duration,
    pub address_space: u64,
}

mod humantime_secs {
    pub fn serialize<S: serde::Serializer>(
        d: &std::time::Duration,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(*d).to_string())
    }
}

impl Limits {
    const DEFAULT: Limits = Limits {
        open_files: DEFAULT_OPEN_FILES,
        processes: DEFAULT_PROCESSES,
        cpu: DEFAULT_CPU,
        address_space: DEFAULT_ADDRESS_SPACE,
    };

    /// These limits with the fields `over` sets replaced.
    fn with(self, over: &ChildLimits) -> Limits {
        Limits {
            open_files: over.open_files.unwrap_or(self.open_files),
            processes: over.processes.unwrap_or(self.processes),
            cpu: over.cpu.unwrap_or(self.cpu),
            address_space: over
                .address_space
                .map_or(self.address_space, |b| b.as_u64()),
        }
    }
}

impl Default for Sandbox {
    fn default() -> Sandbox {
        Sandbox {
            require: true,
            read: existing(SYSTEM_READ),
            devices: existing(SYSTEM_DEVICES),
            network: Network::Host,
            limits: Limits::DEFAULT,
        }
    }
}

impl Sandbox {
    /// The network `grant`'s program sees.
    pub fn network(&self, grant: &ExecGrant) -> Network {
        grant.network.unwrap_or(self.network)
    }

    /// The limits `grant`'s program runs with.
    pub fn limits(&self, grant: &ExecGrant) -> Limits {
        self.limits.with(&grant.limits)
    }
}

/// Validate `[sandbox]` of the file at `dir` (its relative paths are
/// relative to `dir`); problems are located in `map`.
pub fn validate(
    entry: &SandboxEntry,
    dir: &Path,
    map: &SourceMap,
) -> Result<Sandbox, Vec<Diagnostic>> {
    let mut problems = Vec::new();
    let mut read = if entry.system.unwrap_or(true) {
        existing(SYSTEM_READ)
    } else {
        Vec::new()
    };
    for (i, path) in entry.read.iter().enumerate() {
        let at = || {
            map.error(
                &["sandbox", "read", &i.to_string()],
                Part::Value,
                String::new(),
            )
        };
        let joined = dir.join(path);
        match joined.canonicalize() {
            Ok(p) => read.push(p),
            Err(e) => problems.push(Diagnostic {
                message: format!("[sandbox] read `{path}` ({}): {e}", joined.display()),
                help: Some(format!(
                    "create it, or fix the path (absolute, or relative to {})",
                    dir.display()
                )),
                ..at()
            }),
        }
    }
    for (key, value) in [
        ("open_files", entry.limits.open_files),
        ("processes", entry.limits.processes),
    ] {
        if value == Some(0) {
            problems.push(zero_limit(map, &["sandbox", "limits", key], key));
        }
    }
    if !problems.is_empty() {
        return Err(problems);
    }
    Ok(Sandbox {
        require: entry.require.unwrap_or(true),
        read,
        devices: existing(SYSTEM_DEVICES),
        network: entry.network.unwrap_or(Network::Host),
        limits: Limits::DEFAULT.with(&entry.limits),
    })
}

/// A limit of 0 would stop the program before it starts: refused at load.
pub fn zero_limit(map: &SourceMap, path: &[&str], key: &str) -> Diagnostic {
    map.error(
        path,
        Part::Value,
        format!("`{key}` of 0 would stop every program at its start"),
    )
    .help(format!(
        "set `{key}` to at least 1, or leave it out for the default"
    ))
}

/// The entries of `paths` that exist here, canonical, with `*` patterns in
/// the last component expanded.
fn existing(paths: &[&str]) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for path in paths {
        let path = Path::new(path);
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        if name.contains('*') {
            let pattern = WildMatch::new(name);
            let parent = path.parent().unwrap_or(Path::new("/"));
            let Ok(entries) = std::fs::read_dir(parent) else {
                continue;
            };
            let mut found: Vec<PathBuf> = entries
                .flatten()
                .filter(|e| e.file_name().to_str().is_some_and(|n| pattern.matches(n)))
                .filter_map(|e| e.path().canonicalize().ok())
                .collect();
            found.sort();
            out.extend(found);
        } else if let Ok(p) = path.canonicalize() {
            out.push(p);
        }
    }
    out.dedup();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_set_holds_what_exists_and_never_a_home() {
        let sandbox = Sandbox::default();
        assert!(sandbox.read.contains(&PathBuf::from("/usr")));
        assert!(sandbox.read.iter().all(|p| p.exists()));
        for home in ["/root", "/home", "/tmp", "/var"] {
            assert!(
                !sandbox.read.iter().any(|p| p.starts_with(home)),
                "{home} is in the default set: {:?}",
                sandbox.read
            );
        }
        assert!(!sandbox.read.contains(&PathBuf::from("/")));
        assert!(!sandbox.read.contains(&PathBuf::from("/etc")));
    }

    #[test]
    fn a_grant_overrides_the_pipeline_defaults_field_by_field() {
        let sandbox = Sandbox {
            limits: Limits::DEFAULT.with(&ChildLimits {
                processes: Some(64),
                ..Default::default()
            }),
            network: Network::None,
            ..Sandbox::default()
        };
        let grant: ExecGrant = toml::from_str(
            "program = \"sh\"\nnetwork = \"loopback\"\nlimits = { open_files = 10 }",
        )
        .unwrap();
        assert_eq!(sandbox.network(&grant), Network::Loopback);
        let limits = sandbox.limits(&grant);
        assert_eq!((limits.open_files, limits.processes), (10, 64));
        assert_eq!(limits.cpu, DEFAULT_CPU);
        let plain: ExecGrant = toml::from_str("program = \"sh\"").unwrap();
        assert_eq!(sandbox.network(&plain), Network::None);
    }
}
