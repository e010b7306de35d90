//! The sandbox of the programs a stage starts: Landlock file rules, a
//! network namespace, no capabilities, resource limits, and (with
//! [`super::cgroup`]) the whole process tree kept in one cgroup.
//!
//! Everything that can fail or allocate is done in the host, before `fork`:
//! the Landlock ruleset is built once per stage from the very directory
//! handles the grants were checked with (rules bind inodes, so no path is
//! resolved again), and once more for each program that receives secret
//! files (with a read rule for each of them), and the namespace maps are
//! formatted. Between `fork` and
//! `exec` the child only makes system calls ([`ChildSetup::apply`]), in an
//! order where each step still has the rights it needs: join the cgroup,
//! lower the limits, enter the network namespace, drop capabilities, then
//! `no_new_privs` and Landlock last.

use std::collections::HashMap;
use std::ffi::CString;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use landlock::{
    ABI, Access, AccessFs, CompatLevel, Compatible, PathBeneath, PathFd, Ruleset, RulesetAttr,
    RulesetCreatedAttr, Scope,
};
use serde::Serialize;

use super::mounts::{MountPlan, Mounts};
use crate::caps::fs::GrantDir;
use crate::pipeline::Network;
use crate::pipeline::sandbox::{Limits, Sandbox};

/// Test fixture: `CAPSTAN_FIXTURE_LANDLOCK_ABI=0` makes the host believe the
/// kernel has no Landlock (a kernel without it cannot be had here). It can
/// only make a run refuse to start, or (with `require = false`) say that
/// its children are unconfined.
pub const FIXTURE_ABI_ENV: &str = "CAPSTAN_FIXTURE_LANDLOCK_ABI";

/// The newest Landlock ABI this host asks for; older kernels enforce what
/// they know (`ioctl` on devices from ABI 5, signal and abstract-socket
/// scoping from 6, connecting to Unix sockets by path from 9).
const WANTED: ABI = ABI::V9;

/// The kernel's Landlock ABI version, or `None` where it has none.
pub fn landlock_abi() -> Option<i32> {
    static ABI: OnceLock<Option<i32>> = OnceLock::new();
    *ABI.get_or_init(|| {
        if let Ok(fixture) = std::env::var(FIXTURE_ABI_ENV) {
            return fixture.parse().ok().filter(|v: &i32| *v > 0);
        }
        // SAFETY: the documented version query: no pointer is read.
        let version = unsafe {
            libc::syscall(
                libc::SYS_landlock_create_ruleset,
                std::ptr::null::<u8>(),
                0usize,
                1u32, // LANDLOCK_CREATE_RULESET_VERSION
            )
        };
        (version > 0).then_some(version as i32)
    })
}

/// The Landlock ABI the file rules are enforced with here (the kernel's,
/// up to the newest this host asks for), or `None` where there is none.
pub fn enforced_abi() -> Option<i32> {
    landlock_abi().map(|abi| abi.min(WANTED as i32))
}

/// How the files of a stage's children are confined, as the audit log and
/// `capstan audit` show it.
#[derive(Debug, Clone, Serialize)]
pub struct FileRules {
    /// `landlock ABI 6`, or why there are no file rules.
    pub enforced: String,
    /// Readable and executable.
    pub read: Vec<PathBuf>,
    /// Readable, writable and executable: the work dir, write grants and
    /// the private temporary directory.
    pub write: Vec<PathBuf>,
    /// Device files, readable and writable.
    pub devices: Vec<PathBuf>,
    /// How many upstream stages' work dirs are readable and executable too
    /// (the run's `stages/<stage>`; which stages is the pipeline's DAG, the
    /// stage's `start` event names its direct needs). A count, so that a
    /// stage's record does not grow with the stages before it.
    pub upstream_work_dirs: usize,
}

/// Why a stage's sandbox cannot be built.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error("cannot create the private temporary directory of the stage's programs: {0}")]
    Tmp(io::Error),
    #[error("cannot build the Landlock rules of the stage's programs: {0}")]
    Landlock(#[from] landlock::RulesetError),
    #[error("cannot open {path} for the stage's file rules: {source}")]
    Open { path: PathBuf, source: io::Error },
}

/// The file rules and private temporary directory shared by every program
/// one stage attempt starts. Dropped (the directory removed) when the stage
/// ends, after its programs.
#[derive(Debug)]
pub struct StageSandbox {
    ruleset: Option<OwnedFd>,
    /// The rules of programs that receive secret files: the stage's, and
    /// a read rule for each of their files (other programs of the stage
    /// cannot open them).
    with_secrets: HashMap<String, OwnedFd>,
    pub rules: FileRules,
    mounts: Arc<Mounts>,
    tmp: tempfile::TempDir,
}

/// A location every program may use, opened once when the pipeline is
/// prepared: the rules bind what was checked then (against Capstan's
/// state), never what the path leads to later.
#[derive(Debug)]
pub struct Opened {
    pub path: PathBuf,
    fd: OwnedFd,
}

impl Opened {
    /// Identities of the location and of its parents (a file's parents by
    /// its path: system files, which only root can move).
    pub fn lineage(&self) -> io::Result<Vec<crate::caps::fs::Identity>> {
        let file = std::fs::File::from(self.fd.try_clone()?);
        let meta = file.metadata()?;
        if meta.is_dir() {
            return crate::caps::fs::lineage_of(file);
        }
        let parent = self.path.parent().unwrap_or(Path::new("/"));
        let mut out = vec![crate::caps::fs::Identity::of(&meta)];
        out.extend(crate::caps::fs::lineage_of(std::fs::File::open(parent)?)?);
        Ok(out)
    }
}

/// `[sandbox]`'s locations, opened (`O_PATH`); one removed since the
/// pipeline loaded is left out (no rule, never a wider one).
#[derive(Debug, Default)]
pub struct SystemPaths {
    pub read: Vec<Opened>,
    pub devices: Vec<Opened>,
}

impl SystemPaths {
    pub fn open(config: &Sandbox) -> SystemPaths {
        let open = |paths: &[PathBuf]| {
            paths
                .iter()
                .filter_map(|path| {
                    let fd = nix::fcntl::open(
                        path,
                        nix::fcntl::OFlag::O_PATH | nix::fcntl::OFlag::O_CLOEXEC,
                        nix::sys::stat::Mode::empty(),
                    )
                    .ok()?;
                    Some(Opened {
                        path: path.clone(),
                        fd,
                    })
                })
                .collect()
        };
        SystemPaths {
            read: open(&config.read),
            devices: open(&config.devices),
        }
    }
}

/// The directories one stage's programs may use.
pub struct StageDirs<'a> {
    /// Read grants and the work dirs of upstream stages.
    pub read: &'a [GrantDir],
    /// The work dir and write grants.
    pub write: &'a [GrantDir],
    /// The program files the stage may start (readable and executable even
    /// where they lie outside the system locations).
    pub programs: Vec<&'a std::fs::File>,
    /// The stage attempt's secret files, by the program that may read
    /// them, and their private directory (which programs see, when
    /// directories are hidden, but only those get rules for its files).
    pub secrets: Vec<(&'a str, Vec<&'a std::fs::File>)>,
    pub secret_dir: Option<&'a Path>,
    /// The run's `stages/` directory, where the work dir and the upstream
    /// dirs are: where directories are hidden, it is mounted back whole,
    /// once, instead of one mount per upstream stage (a stage deep in a
    /// long chain has hundreds). Landlock still decides what programs may
    /// open in it: their own work dir and the upstream ones, nothing else.
    pub stages: Option<&'a GrantDir>,
}

impl StageSandbox {
    /// Build the rules for `stage`'s programs. Without Landlock the rules
    /// are only recorded (the run refused to start unless the pipeline says
    /// `require = false`).
    pub fn new(
        stage: &str,
        system: &SystemPaths,
        dirs: StageDirs,
        tmp_parent: &Path,
    ) -> Result<StageSandbox, SandboxError> {
        std::fs::create_dir_all(tmp_parent).map_err(SandboxError::Tmp)?;
        let tmp = tempfile::Builder::new()
            .prefix(&format!("{stage}-"))
            .tempdir_in(tmp_parent)
            .map_err(SandboxError::Tmp)?;
        let mounts = Mounts::prepare(tmp.path(), exposed(system, &dirs, tmp.path())?)
            .map_err(SandboxError::Tmp)?;
        let mounts = Arc::new(mounts);
        let mut rules = FileRules {
            enforced: String::new(),
            read: system.read.iter().map(|o| o.path.clone()).collect(),
            write: dirs.write.iter().map(|d| d.path.clone()).collect(),
            devices: system.devices.iter().map(|o| o.path.clone()).collect(),
            upstream_work_dirs: 0,
        };
        for dir in dirs.read {
            if dirs.stages.is_some_and(|s| dir.path.starts_with(&s.path)) {
                rules.upstream_work_dirs += 1;
            } else {
                rules.read.push(dir.path.clone());
            }
        }
        rules.write.push(tmp.path().to_path_buf());
        let Some(abi) = enforced_abi() else {
            rules.enforced = "none: this kernel has no Landlock ([sandbox] require = false)".into();
            return Ok(StageSandbox {
                ruleset: None,
                with_secrets: HashMap::new(),
                rules,
                mounts,
                tmp,
            });
        };
        rules.enforced = format!("landlock ABI {abi}");
        let ruleset = build_ruleset(system, &dirs, tmp.path(), &[])?;
        let mut with_secrets = HashMap::new();
        for (program, files) in &dirs.secrets {
            if !files.is_empty()
                && let Some(own) = build_ruleset(system, &dirs, tmp.path(), files)?
            {
                with_secrets.insert(program.to_string(), own);
            }
        }
        Ok(StageSandbox {
            ruleset,
            with_secrets,
            rules,
            mounts,
            tmp,
        })
    }

    /// The private temporary directory (`TMPDIR` of every program).
    pub fn tmp(&self) -> &Path {
        self.tmp.path()
    }

    /// What the child of one exec of `program` must do before `exec`.
    pub fn child(
        &self,
        program: &str,
        network: Network,
        limits: Limits,
        cgroup: Vec<RawFd>,
        pids_limited: bool,
        cwd: &Path,
    ) -> ChildSetup {
        // SAFETY: geteuid/getegid cannot fail.
        let (uid, gid) = unsafe { (libc::geteuid(), libc::getegid()) };
        let maps = (uid != 0).then(|| UserMaps {
            uid_map: CString::new(format!("{uid} {uid} 1")).expect("no NUL"),
            gid_map: CString::new(format!("{gid} {gid} 1")).expect("no NUL"),
        });
        let ruleset = self.with_secrets.get(program).or(self.ruleset.as_ref());
        ChildSetup {
            ruleset: ruleset.map(|fd| fd.as_raw_fd()),
            network,
            limits,
            cgroup,
            limit_processes: !pids_limited,
            drop_capabilities: uid == 0,
            maps,
            cwd: self.mounts.reenter(cwd),
            plan: self.mounts.plan(),
            mounts: self.mounts.clone(),
        }
    }
}

/// Every directory the stage's rules let programs use, with a handle of
/// its own (for [`Mounts`] to mount back where it hides them).
fn exposed(
    system: &SystemPaths,
    dirs: &StageDirs,
    tmp: &Path,
) -> Result<Vec<(PathBuf, OwnedFd)>, SandboxError> {
    let dup = |path: &Path, fd: BorrowedFd| {
        fd.try_clone_to_owned()
            .map(|fd| (path.to_path_buf(), fd))
            .map_err(|source| SandboxError::Open {
                path: path.to_path_buf(),
                source,
            })
    };
    let mut out = Vec::new();
    for opened in &system.read {
        out.push(dup(&opened.path, opened.fd.as_fd())?);
    }
    if let Some(stages) = dirs.stages {
        out.push(dup(&stages.path, stages.as_fd())?);
    }
    let in_stages = |path: &Path| dirs.stages.is_some_and(|s| path.starts_with(&s.path));
    for dir in dirs.read.iter().chain(dirs.write) {
        if !in_stages(&dir.path) {
            out.push(dup(&dir.path, dir.as_fd())?);
        }
    }
    let tmp_dir = std::fs::File::open(tmp).map_err(SandboxError::Tmp)?;
    out.push((tmp.to_path_buf(), tmp_dir.into()));
    if let Some(dir) = dirs.secret_dir {
        let handle = std::fs::File::open(dir).map_err(|source| SandboxError::Open {
            path: dir.to_path_buf(),
            source,
        })?;
        out.push((dir.to_path_buf(), handle.into()));
    }
    Ok(out)
}

/// The Landlock ruleset of the stage's programs (see [`StageSandbox::new`]),
/// and read rules for `secret_files`, the secret files of one program.
fn build_ruleset(
    system: &SystemPaths,
    dirs: &StageDirs,
    tmp: &Path,
    secret_files: &[&std::fs::File],
) -> Result<Option<OwnedFd>, SandboxError> {
    let read = AccessFs::from_read(WANTED);
    let all = AccessFs::from_all(WANTED);
    let device = AccessFs::from_file(WANTED) & !AccessFs::Execute;
    let open = |path: &Path| {
        PathFd::new(path).map_err(|e| SandboxError::Open {
            path: path.to_path_buf(),
            source: io::Error::other(e.to_string()),
        })
    };
    let mut ruleset = Ruleset::default()
        .set_compatibility(CompatLevel::BestEffort)
        .handle_access(all)?
        .scope(Scope::from_all(WANTED))?
        .create()?;
    for opened in &system.read {
        ruleset = ruleset.add_rule(PathBeneath::new(opened.fd.as_fd(), read))?;
    }
    for opened in &system.devices {
        ruleset = ruleset.add_rule(PathBeneath::new(opened.fd.as_fd(), device))?;
    }
    for dir in dirs.read {
        ruleset = ruleset.add_rule(PathBeneath::new(dir.as_fd(), read))?;
    }
    for file in &dirs.programs {
        ruleset = ruleset.add_rule(PathBeneath::new(file.as_fd(), read))?;
    }
    for dir in dirs.write {
        ruleset = ruleset.add_rule(PathBeneath::new(dir.as_fd(), all))?;
    }
    // A secret file: read, nothing else (its directory gets no rule, so it
    // cannot be listed, and no other file in it opened).
    for file in secret_files {
        ruleset = ruleset.add_rule(PathBeneath::new(file.as_fd(), AccessFs::ReadFile))?;
    }
    ruleset = ruleset.add_rule(PathBeneath::new(open(tmp)?, all))?;
    // Its own rule: seen through the bind mount, the directory is a
    // mount's root, and Landlock walks from there to `/dev`, never
    // through the temporary directory.
    ruleset = ruleset.add_rule(PathBeneath::new(open(&tmp.join("shm"))?, all))?;
    Ok(ruleset.into())
}

/// A user namespace's maps, formatted before `fork`.
#[derive(Debug)]
struct UserMaps {
    uid_map: CString,
    gid_map: CString,
}

/// The steps one child takes between `fork` and `exec`.
#[derive(Debug)]
pub struct ChildSetup {
    ruleset: Option<RawFd>,
    network: Network,
    limits: Limits,
    /// `cgroup.procs` files to join.
    cgroup: Vec<RawFd>,
    /// No cgroup limits the process count: `RLIMIT_NPROC` (per user, and
    /// not for root) is the fallback.
    limit_processes: bool,
    /// Root: start with no capabilities, and never regain them.
    drop_capabilities: bool,
    /// Not root: a user namespace owns the new namespaces.
    maps: Option<UserMaps>,
    mounts: Arc<Mounts>,
    plan: MountPlan,
    /// Entered again after the mounts (see [`Mounts::reenter`]).
    cwd: Option<CString>,
}

impl ChildSetup {
    /// Confine the calling process (the forked child). Async-signal-safe:
    /// system calls only, no allocation, no lock.
    pub fn apply(&self) -> io::Result<()> {
        super::cgroup::join(&self.cgroup)?;
        self.set_limits()?;
        self.enter_namespaces()?;
        if self.drop_capabilities {
            drop_capabilities()?;
        }
        check(unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } as i64)?;
        if let Some(ruleset) = self.ruleset {
            check(unsafe { libc::syscall(libc::SYS_landlock_restrict_self, ruleset, 0u32) })?;
        }
        // No descriptor of the host survives `exec`, even one a library
        // opened without `O_CLOEXEC` and flagged a moment later (a `fork` on
        // another thread in between would have inherited it): an open
        // descriptor is a way around every rule above.
        check(unsafe {
            libc::syscall(
                libc::SYS_close_range,
                3u32,
                u32::MAX,
                libc::CLOSE_RANGE_CLOEXEC,
            )
        })?;
        Ok(())
    }

    fn set_limits(&self) -> io::Result<()> {
        let l = &self.limits;
        lower(libc::RLIMIT_NOFILE, l.open_files, l.open_files)?;
        // CPU: SIGXCPU at the limit (a chance to stop cleanly), SIGKILL a
        // few seconds later.
        let cpu = l.cpu.as_secs().max(1);
        lower(libc::RLIMIT_CPU, cpu, cpu.saturating_add(5))?;
        lower(libc::RLIMIT_AS, l.address_space, l.address_space)?;
        if self.limit_processes {
            lower(libc::RLIMIT_NPROC, l.processes, l.processes)?;
        }
        Ok(())
    }

    /// A mount namespace (for the private `/dev/shm`) and, unless the
    /// grant says `host`, a network namespace; not as root, a user
    /// namespace that owns them. Only the network part must succeed: a
    /// user who may not create namespaces still runs `host` programs, with
    /// no `/dev/shm` at all.
    fn enter_namespaces(&self) -> io::Result<()> {
        let user = if self.maps.is_some() {
            libc::CLONE_NEWUSER
        } else {
            0
        };
        let net = if self.network == Network::Host {
            0
        } else {
            libc::CLONE_NEWNET
        };
        let mut mounts = self.plan.any();
        if unsafe { libc::unshare(user | net | if mounts { libc::CLONE_NEWNS } else { 0 }) } < 0 {
            if net == 0 {
                return Ok(());
            }
            mounts = false;
            check(unsafe { libc::unshare(user | net) } as i64)?;
        }
        if let Some(maps) = &self.maps {
            write_file(c"/proc/self/setgroups", b"deny")?;
            write_file(c"/proc/self/uid_map", maps.uid_map.as_bytes())?;
            write_file(c"/proc/self/gid_map", maps.gid_map.as_bytes())?;
        }
        if self.network == Network::Loopback {
            loopback_up()?;
        }
        if mounts {
            self.mounts.apply(&self.plan, self.cwd.as_deref())?;
        }
        Ok(())
    }
}

/// Set a limit, never above the current hard limit (raising one needs a
/// capability a child should not use).
fn lower(resource: libc::__rlimit_resource_t, soft: u64, hard: u64) -> io::Result<()> {
    let mut current = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    check(unsafe { libc::getrlimit(resource, &mut current) } as i64)?;
    let hard = hard.min(current.rlim_max);
    let new = libc::rlimit {
        rlim_cur: soft.min(hard),
        rlim_max: hard,
    };
    check(unsafe { libc::setrlimit(resource, &new) } as i64).map(|_| ())
}

fn write_file(path: &std::ffi::CStr, bytes: &[u8]) -> io::Result<()> {
    let fd = unsafe { libc::open(path.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC) };
    check(fd as i64)?;
    let written = unsafe { libc::write(fd, bytes.as_ptr().cast(), bytes.len()) };
    unsafe { libc::close(fd) };
    check(written as i64).map(|_| ())
}

/// Bring `lo` up in the (new) network namespace.
fn loopback_up() -> io::Result<()> {
    let socket = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    check(socket as i64)?;
    // SAFETY: an all-zero ifreq is valid; the name is set below.
    let mut request: libc::ifreq = unsafe { std::mem::zeroed() };
    for (slot, byte) in request.ifr_name.iter_mut().zip(b"lo\0") {
        *slot = *byte as libc::c_char;
    }
    let result = (|| {
        check(unsafe { libc::ioctl(socket, libc::SIOCGIFFLAGS, &mut request) } as i64)?;
        unsafe {
            request.ifr_ifru.ifru_flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
        }
        check(unsafe { libc::ioctl(socket, libc::SIOCSIFFLAGS, &request) } as i64)
    })();
    unsafe { libc::close(socket) };
    result.map(|_| ())
}

/// Start the program with no capabilities and make sure it never gains
/// any: `exec` as root grants none (`SECBIT_NOROOT`), the bounding set is
/// empty (file capabilities give nothing), ambient ones are cleared. A
/// root child with capabilities could load a kernel module or a BPF
/// program and leave every other rule behind.
fn drop_capabilities() -> io::Result<()> {
    const SECBIT_NOROOT: libc::c_ulong = 1 << 0;
    const SECBIT_NOROOT_LOCKED: libc::c_ulong = 1 << 1;
    const SECBIT_NO_SETUID_FIXUP: libc::c_ulong = 1 << 2;
    const SECBIT_NO_SETUID_FIXUP_LOCKED: libc::c_ulong = 1 << 3;
    const SECBIT_KEEP_CAPS_LOCKED: libc::c_ulong = 1 << 5;
    const SECBIT_NO_CAP_AMBIENT_RAISE: libc::c_ulong = 1 << 6;
    const SECBIT_NO_CAP_AMBIENT_RAISE_LOCKED: libc::c_ulong = 1 << 7;
    let bits = SECBIT_NOROOT
        | SECBIT_NOROOT_LOCKED
        | SECBIT_NO_SETUID_FIXUP
        | SECBIT_NO_SETUID_FIXUP_LOCKED
        | SECBIT_KEEP_CAPS_LOCKED
        | SECBIT_NO_CAP_AMBIENT_RAISE
        | SECBIT_NO_CAP_AMBIENT_RAISE_LOCKED;
    check(unsafe { libc::prctl(libc::PR_SET_SECUREBITS, bits, 0, 0, 0) } as i64)?;
    for cap in 0..64 {
        // EINVAL past the kernel's last capability.
        if unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap, 0, 0, 0) } < 0
            && io::Error::last_os_error().raw_os_error() != Some(libc::EINVAL)
        {
            return Err(io::Error::last_os_error());
        }
    }
    check(unsafe {
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL,
            0,
            0,
            0,
        )
    } as i64)?;
    #[repr(C)]
    struct Header {
        version: u32,
        pid: i32,
    }
    #[repr(C)]
    #[derive(Clone, Copy)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    let header = Header {
        version: 0x2008_0522, // _LINUX_CAPABILITY_VERSION_3
        pid: 0,
    };
    let none = [Data {
        effective: 0,
        permitted: 0,
        inheritable: 0,
    }; 2];
    check(unsafe { libc::syscall(libc::SYS_capset, &header, none.as_ptr()) })?;
    Ok(())
}

pub(super) fn check(result: i64) -> io::Result<i64> {
    if result < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(result)
    }
}
