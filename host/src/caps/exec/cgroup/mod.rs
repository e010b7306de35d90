//! One cgroup per program a stage starts, so that every descendant of it —
//! also one that called `setsid` or double-forked — is found and ended, and
//! so that a process-count limit holds for it (root ignores `RLIMIT_NPROC`).
//!
//! Cgroups rather than a PID namespace: a program such as `terraform apply`
//! must outlive a host that was SIGKILLed and run to its end (a namespace's
//! processes die with its init), and a later `capstan` process finds a
//! run's programs again by the run id in the cgroup path.
//!
//! Layout, in each hierarchy used: `<base>/<run-id>/<stage>.<host-pid>-<n>`,
//! where `<base>` is `capstan/` under this process's own cgroup. Programs
//! live only in the leaves, never capstan itself: cgroup v2 lets a cgroup
//! enable the pids controller for its children only while it holds no
//! process. The membership tree is cgroup v2 where it can be written;
//! the pids limit comes from the v2 pids controller where it can be enabled
//! down to the base, else from the cgroup v1 `pids` hierarchy, mirrored.
//! Where nothing is writable [`support`] says so and callers fall back to
//! the `/proc` walk of [`super::tree`] and `RLIMIT_NPROC`.

use std::fs::{self, OpenOptions};
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use super::tree;

mod support;

use support::{Role, enable_pids_in};
pub use support::{Support, support};

/// How many freeze–kill–thaw rounds [`ExecCgroup::kill`] makes where there
/// is no `cgroup.kill`; each round ends what the previous one missed.
const KILL_ROUNDS: usize = 10;
/// How long a drop waits for killed members to be gone before it leaves
/// removing the directories to a thread (a drop must not block long).
const DROP_WAIT: Duration = Duration::from_millis(100);
/// How long that thread keeps trying.
const CLEANUP_WAIT: Duration = Duration::from_secs(10);

/// Why `run_id` cannot name a directory, if it cannot: it must be one path
/// component that is no special name (ids are `20261126-101500-7f3a`).
fn run_id_problem(run_id: &str) -> Option<&'static str> {
    if run_id.is_empty() || run_id.len() > 128 {
        Some("must hold 1 to 128 characters")
    } else if run_id.starts_with('.') {
        Some("must not start with `.`")
    } else if !run_id
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        Some("may hold only letters, digits, `-`, `_` and `.`")
    } else {
        None
    }
}

fn invalid(what: &str, name: &str, problem: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidInput,
        format!("{what} {name:?} cannot name a cgroup: it {problem}"),
    )
}

/// Distinguishes the cgroups one host makes; the host's pid keeps them
/// apart from those of another host on the same run (a resume).
static NEXT: AtomicU64 = AtomicU64::new(0);

/// The cgroup(s) of one started program. Dropping it ends every process in
/// it and removes its directories.
#[derive(Debug)]
pub struct ExecCgroup {
    /// `(leaf directory, role)`, the membership tree first.
    dirs: Vec<(PathBuf, Role)>,
    /// `cgroup.procs` of each leaf, opened by the parent: the child joins by
    /// writing to them (see [`join`]).
    procs: Vec<OwnedFd>,
}

impl ExecCgroup {
    /// Make the cgroup of a program that stage `stage` of run `run_id` is
    /// about to start, limited to `max_processes` (counting zombies not
    /// yet reaped). A limit where [`Support::limits_processes`] is false
    /// is an error: the caller applies `RLIMIT_NPROC` instead.
    pub fn create(run_id: &str, stage: &str, max_processes: Option<u64>) -> io::Result<ExecCgroup> {
        if let Some(problem) = run_id_problem(run_id) {
            return Err(invalid("run id", run_id, problem));
        }
        if let Some(problem) = crate::pipeline::name_problem(stage) {
            return Err(invalid("stage name", stage, problem));
        }
        let support = support();
        if !support.available() {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                support.to_string(),
            ));
        }
        if max_processes.is_some() && !support.limits_processes() {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                format!("no process limit can be set: {support}"),
            ));
        }
        let name = format!(
            "{stage}.{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        // Built up one directory at a time: on an error, dropping it
        // removes those already made.
        let mut made = ExecCgroup {
            dirs: Vec::new(),
            procs: Vec::new(),
        };
        for (base, role) in support.bases() {
            let leaf = make_leaf(&base.join(run_id), &name, role)?;
            made.dirs.push((leaf.clone(), role));
            let procs = OpenOptions::new()
                .write(true)
                .open(leaf.join("cgroup.procs"))
                .map_err(|e| context(e, "open", &leaf.join("cgroup.procs")))?;
            made.procs.push(procs.into());
        }
        if let (Some(max), Some(dir)) = (max_processes, made.pids_dir()) {
            let file = dir.join("pids.max");
            fs::write(&file, max.to_string()).map_err(|e| context(e, "write", &file))?;
        }
        Ok(made)
    }

    /// The raw descriptors (open, close-on-exec) of each `cgroup.procs` the
    /// child must join with [`join`] before it execs.
    pub fn join_fds(&self) -> Vec<RawFd> {
        self.procs.iter().map(AsRawFd::as_raw_fd).collect()
    }

    /// The membership cgroup's directory, for the audit log.
    pub fn path(&self) -> &Path {
        &self.dirs[0].0
    }

    /// The processes in it now (not zombies: they have left it).
    pub fn pids(&self) -> Vec<i32> {
        members(self.path())
    }

    /// Whether no process is left in it.
    pub fn is_empty(&self) -> bool {
        is_empty(self.path(), self.dirs[0].1)
    }

    /// End every process in it: with `cgroup.kill` where the kernel has it
    /// (atomic, also against forks under way); else freeze, SIGKILL each
    /// member, thaw, a few rounds. Does not wait for them to be gone.
    pub fn kill(&self) {
        kill(self.path(), self.freezer());
    }

    /// [`Self::kill`], then wait up to `limit` for the cgroup to be empty;
    /// whether it is.
    pub async fn kill_and_wait(&self, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        loop {
            self.kill();
            if self.is_empty() {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Whether a fork was refused because of the process limit.
    pub fn process_limit_hit(&self) -> bool {
        let Some(dir) = self.pids_dir() else {
            return false;
        };
        fs::read_to_string(dir.join("pids.events"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.strip_prefix("max "))
            .any(|n| n.trim().parse::<u64>().is_ok_and(|n| n > 0))
    }

    /// Where `pids.max` and `pids.events` are.
    fn pids_dir(&self) -> Option<&Path> {
        let tree_pids = support().tree_pids;
        self.dirs
            .iter()
            .find(|(_, role)| match role {
                Role::Pids => true,
                Role::Tree { .. } => tree_pids,
                Role::Freezer => false,
            })
            .map(|(dir, _)| dir.as_path())
    }

    fn freezer(&self) -> Option<&Path> {
        self.dirs
            .iter()
            .find(|(_, role)| *role == Role::Freezer)
            .map(|(dir, _)| dir.as_path())
    }
}

impl Drop for ExecCgroup {
    /// Kill, then remove the leaves and, where it was the last, the run's
    /// directory. Waits briefly; a thread finishes the removal for members
    /// that take longer to die.
    fn drop(&mut self) {
        if self.dirs.is_empty() {
            return;
        }
        self.kill();
        let deadline = Instant::now() + DROP_WAIT;
        while !self.is_empty() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
        self.procs.clear();
        let dirs = std::mem::take(&mut self.dirs);
        if remove(&dirs) {
            return;
        }
        let _ = std::thread::Builder::new()
            .name("cgroup-cleanup".into())
            .spawn(move || {
                let deadline = Instant::now() + CLEANUP_WAIT;
                while !remove(&dirs) && Instant::now() < deadline {
                    kill(&dirs[0].0, None);
                    std::thread::sleep(Duration::from_millis(20));
                }
            });
    }
}

/// Remove leaves (and their run directories where now empty); whether
/// every leaf is gone.
fn remove(dirs: &[(PathBuf, Role)]) -> bool {
    let mut all = true;
    for (leaf, _) in dirs {
        match fs::remove_dir(leaf) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(_) => all = false,
        }
        // Fails while another program of the run has a cgroup: fine.
        if let Some(run_dir) = leaf.parent() {
            let _ = fs::remove_dir(run_dir);
        }
    }
    all
}

/// Make `<run_dir>/<name>`. A run directory removed by another host's last
/// cgroup between our steps is made again.
fn make_leaf(run_dir: &Path, name: &str, role: Role) -> io::Result<PathBuf> {
    let leaf = run_dir.join(name);
    let mut tries = 0;
    loop {
        tries += 1;
        let made = mkdir(run_dir)
            .and_then(|()| match role {
                // Children of the run's v2 directory get the pids controller.
                Role::Tree { v2: true } if support().tree_pids => enable_pids_in(run_dir),
                _ => Ok(()),
            })
            .and_then(|()| fs::create_dir(&leaf));
        match made {
            Ok(()) => return Ok(leaf),
            Err(e) if e.kind() == io::ErrorKind::NotFound && tries < 10 => continue,
            Err(e) => return Err(context(e, "make", &leaf)),
        }
    }
}

fn mkdir(dir: &Path) -> io::Result<()> {
    match fs::create_dir(dir) {
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        other => other,
    }
}

fn context(e: io::Error, what: &str, path: &Path) -> io::Error {
    io::Error::new(
        e.kind(),
        format!("cannot {what} cgroup {}: {e}", path.display()),
    )
}

/// Join the cgroups whose `cgroup.procs` are `fds` (from
/// [`ExecCgroup::join_fds`]). Called in the forked child before it execs,
/// so only async-signal-safe calls: one `write` of `0` ("this process")
/// per descriptor; no allocation, no lock.
pub fn join(fds: &[RawFd]) -> io::Result<()> {
    for &fd in fds {
        // SAFETY: the descriptors stay open in the parent's ExecCgroup,
        // which outlives the spawn, and so in this forked copy of it.
        let fd = unsafe { BorrowedFd::borrow_raw(fd) };
        nix::unistd::write(fd, b"0").map_err(io::Error::from)?;
    }
    Ok(())
}

/// The processes in `dir` and in cgroups below it.
fn members(dir: &Path) -> Vec<i32> {
    let mut found = Vec::new();
    let mut dirs = vec![dir.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        if let Ok(procs) = fs::read_to_string(dir.join("cgroup.procs")) {
            found.extend(procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()));
        }
        dirs.extend(subdirs(&dir));
    }
    found
}

fn subdirs(dir: &Path) -> Vec<PathBuf> {
    fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .map(|e| e.path())
        .collect()
}

fn is_empty(dir: &Path, role: Role) -> bool {
    if role == (Role::Tree { v2: true })
        && let Ok(events) = fs::read_to_string(dir.join("cgroup.events"))
    {
        return events.lines().any(|l| l.trim() == "populated 0");
    }
    members(dir).is_empty()
}

/// End every process in the cgroup `dir` (of the membership tree), with
/// `freezer` its v1 freezer counterpart if any.
fn kill(dir: &Path, freezer: Option<&Path>) {
    if fs::write(dir.join("cgroup.kill"), "1").is_ok() {
        return;
    }
    kill_by_signals(dir, freezer);
}

/// Without `cgroup.kill`: freeze so that nothing forks while the members
/// are read and killed, SIGKILL each, thaw so that they can die.
fn kill_by_signals(dir: &Path, freezer: Option<&Path>) {
    for _ in 0..KILL_ROUNDS {
        freeze(dir, freezer, true);
        let pids = members(dir);
        tree::signal(&pids, Signal::SIGKILL);
        freeze(dir, freezer, false);
        if pids.is_empty() {
            return;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

fn freeze(dir: &Path, freezer: Option<&Path>, on: bool) {
    if fs::write(dir.join("cgroup.freeze"), if on { "1" } else { "0" }).is_ok() {
        return;
    }
    if let Some(freezer) = freezer {
        let _ = fs::write(
            freezer.join("freezer.state"),
            if on { "FROZEN" } else { "THAWED" },
        );
    }
}

/// The directories of run `run_id` in each hierarchy (none for an id that
/// cannot be one).
fn run_dirs(run_id: &str) -> Vec<(PathBuf, Role)> {
    if run_id_problem(run_id).is_some() {
        return Vec::new();
    }
    support()
        .bases()
        .into_iter()
        .map(|(base, role)| (base.join(run_id), role))
        .collect()
}

/// Every live process in a cgroup of run `run_id` on this machine: those
/// its programs started too, which a host killed mid-run never recorded.
pub fn run_members(run_id: &str) -> Vec<i32> {
    let mut pids: Vec<i32> = run_dirs(run_id)
        .iter()
        .filter(|(_, role)| *role != Role::Freezer)
        .flat_map(|(dir, _)| members(dir))
        .collect();
    pids.sort_unstable();
    pids.dedup();
    pids
}

/// End every process in run `run_id`'s cgroups (without waiting for them
/// to be gone), and remove its cgroups that are empty: call it again, once
/// [`run_members`] is empty, to remove the rest.
pub fn kill_run(run_id: &str) {
    let dirs = run_dirs(run_id);
    let Some((tree, _)) = dirs.first() else {
        return;
    };
    let freezer = dirs.iter().find(|(_, r)| *r == Role::Freezer);
    for leaf in subdirs(tree) {
        let frozen = freezer.map(|(dir, _)| dir.join(leaf.file_name().unwrap_or_default()));
        kill(&leaf, frozen.as_deref());
    }
    // A process running as root can move itself out of the tree's cgroup:
    // one still in the run's v1 pids cgroups is ended by signal.
    for (run_dir, role) in &dirs[1..] {
        if *role == Role::Pids {
            tree::signal(&members(run_dir), Signal::SIGKILL);
        }
    }
    for (run_dir, _) in &dirs {
        for leaf in subdirs(run_dir) {
            let _ = fs::remove_dir(leaf);
        }
        let _ = fs::remove_dir(run_dir);
    }
}

/// A fixture for tests of what uses a run's cgroups: `sleep 600` started
/// in a new cgroup of stage `stage` of run `run`, as a program is.
#[cfg(test)]
pub fn sleep_in(run: &str, stage: &str) -> (ExecCgroup, std::process::Child) {
    use std::os::unix::process::CommandExt;
    let cg = ExecCgroup::create(run, stage, None).unwrap_or_else(|e| {
        panic!("this test needs writable cgroups (root, or a delegated cgroup v2): {e}")
    });
    let fds = cg.join_fds();
    let mut command = std::process::Command::new("sleep");
    command.arg("600");
    // SAFETY: `join` is async-signal-safe.
    unsafe { command.pre_exec(move || join(&fds)) };
    let child = command.spawn().expect("sleep starts");
    (cg, child)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::CommandExt;
    use std::process::{Command, Stdio};

    /// These tests need cgroups (root, or a delegated cgroup v2), as CI has.
    fn need_cgroups() -> &'static Support {
        let s = support();
        assert!(
            s.available() && s.limits_processes(),
            "these tests need writable cgroups with a pids controller (run as root, or in a \
             delegated cgroup v2): {s}"
        );
        s
    }

    /// A run id of its own for each test (they run at once).
    fn run_id(test: &str) -> String {
        format!("test-{}-{test}", std::process::id())
    }

    fn spawn_in(cg: &ExecCgroup, script: &str) -> std::process::Child {
        let fds = cg.join_fds();
        let mut command = Command::new("sh");
        command
            .args(["-c", script])
            .stdin(Stdio::null())
            .stdout(Stdio::piped());
        // SAFETY: `join` is async-signal-safe.
        unsafe { command.pre_exec(move || join(&fds)) };
        command.spawn().expect("sh starts")
    }

    fn read_line(child: &mut std::process::Child) -> String {
        use std::io::BufRead;
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        line.trim().to_string()
    }

    /// Whether `pid` runs (a zombie does not).
    fn runs(pid: i32) -> bool {
        fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
            s.rsplit_once(')')
                .is_some_and(|(_, r)| !r.starts_with(" Z"))
        })
    }

    /// Wait (a bound against hanging, not a timed assertion) for `done`.
    fn until(what: &str, done: impl Fn() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !done() {
            assert!(Instant::now() < deadline, "never: {what}");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    #[test]
    fn support_is_described() {
        let s = need_cgroups();
        let text = s.to_string();
        assert!(text.starts_with("cgroup v"), "{text}");
        assert!(text.contains("pids limit via cgroup"), "{text}");
    }

    #[test]
    fn a_child_that_joins_is_a_member() {
        need_cgroups();
        let cg = ExecCgroup::create(&run_id("join"), "plan", None).unwrap();
        assert!(cg.is_empty());
        let mut child = spawn_in(&cg, "echo started; exec sleep 600");
        assert_eq!(read_line(&mut child), "started");
        let pid = child.id() as i32;
        assert_eq!(cg.pids(), [pid]);
        assert!(!cg.is_empty());
        let own = fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
        let name = cg.path().file_name().unwrap().to_str().unwrap();
        assert!(own.contains(name), "{own}");
        assert!(run_members(&run_id("join")).contains(&pid));
        drop(cg);
        child.wait().unwrap();
    }

    #[tokio::test]
    async fn a_setsid_double_forked_grandchild_is_killed() {
        need_cgroups();
        let cg = ExecCgroup::create(&run_id("setsid"), "apply", None).unwrap();
        // The grandchild leaves the session and the process group; its
        // parent exits, so it is nobody's descendant in this tree.
        let mut child = spawn_in(
            &cg,
            "setsid sh -c 'sleep 600 >/dev/null & echo $!' </dev/null 2>/dev/null",
        );
        let grandchild: i32 = read_line(&mut child).parse().unwrap();
        child.wait().unwrap();
        until("the grandchild is a member", || {
            cg.pids().contains(&grandchild)
        });
        assert!(cg.kill_and_wait(Duration::from_secs(60)).await);
        assert!(cg.pids().is_empty());
        until("the grandchild is gone", || !runs(grandchild));
    }

    #[test]
    fn without_cgroup_kill_members_are_frozen_and_killed() {
        need_cgroups();
        let cg = ExecCgroup::create(&run_id("signals"), "apply", None).unwrap();
        let mut child = spawn_in(&cg, "sleep 600 & sleep 600 & echo $!; wait");
        let sleeper: i32 = read_line(&mut child).parse().unwrap();
        until("three members", || cg.pids().len() == 3);
        kill_by_signals(cg.path(), cg.freezer());
        until("empty", || cg.is_empty());
        child.wait().unwrap();
        until("the sleeper is gone", || !runs(sleeper));
        // Thawed: a new member is not left frozen.
        let frozen = fs::read_to_string(cg.path().join("cgroup.events")).unwrap_or_default();
        assert!(!frozen.contains("frozen 1"), "{frozen}");
    }

    #[test]
    fn a_fork_loop_stops_at_the_process_limit() {
        need_cgroups();
        let cg = ExecCgroup::create(&run_id("forks"), "bomb", Some(8)).unwrap();
        assert!(!cg.process_limit_hit());
        // The shell may give up at its first refused fork: either way the
        // group ends up at its limit.
        let mut child = spawn_in(
            &cg,
            "i=0; while [ $i -lt 50 ]; do sleep 600 >/dev/null & i=$((i+1)); done 2>/dev/null; wait",
        );
        until("a fork is refused", || cg.process_limit_hit());
        let dir = cg.pids_dir().unwrap();
        let count = |file: &str| -> u64 {
            fs::read_to_string(dir.join(file))
                .unwrap()
                .trim()
                .parse()
                .unwrap()
        };
        assert!(cg.pids().len() <= 8, "{:?}", cg.pids());
        assert!(count("pids.current") <= 8);
        if dir.join("pids.peak").exists() {
            assert_eq!(count("pids.peak"), 8);
        }
        drop(cg);
        child.wait().unwrap();
    }

    #[test]
    fn drop_ends_the_members_and_removes_the_directories() {
        need_cgroups();
        let run = run_id("drop");
        let cg = ExecCgroup::create(&run, "deploy", Some(16)).unwrap();
        let dirs: Vec<PathBuf> = cg.dirs.iter().map(|(d, _)| d.clone()).collect();
        assert!(dirs.len() >= 2, "a tree and a pids limit: {dirs:?}");
        let mut child = spawn_in(&cg, "echo started; exec sleep 600");
        assert_eq!(read_line(&mut child), "started");
        drop(cg);
        child.wait().unwrap();
        for dir in &dirs {
            assert!(!dir.exists(), "{} left", dir.display());
            assert!(
                !dir.parent().unwrap().exists(),
                "run dir of {}",
                dir.display()
            );
        }
    }

    #[test]
    fn the_members_of_a_forgotten_run_are_found_and_ended() {
        need_cgroups();
        let run = run_id("forgotten");
        let (cg, mut child) = sleep_in(&run, "apply");
        let tree_dir = cg.path().to_path_buf();
        let pid = child.id() as i32;
        // As a SIGKILLed host leaves it: cgroup and program live on.
        std::mem::forget(cg);
        assert_eq!(run_members(&run), [pid]);
        kill_run(&run);
        child.wait().unwrap();
        until("no member", || run_members(&run).is_empty());
        kill_run(&run);
        assert!(!tree_dir.exists());
        assert!(!tree_dir.parent().unwrap().exists());
        assert!(run_members(&run).is_empty());
    }

    #[test]
    fn names_that_are_no_path_component_are_refused() {
        for (run, stage) in [
            ("..", "plan"),
            (".hidden", "plan"),
            ("a/b", "plan"),
            ("a\0b", "plan"),
            ("", "plan"),
            ("r1", "a.b"),
            ("r1", "../x"),
            ("r1", ""),
        ] {
            let e = ExecCgroup::create(run, stage, None).unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::InvalidInput, "{run:?} {stage:?}");
        }
        assert!(run_members("../..").is_empty());
        assert!(run_id_problem("20261126-101500-7f3a").is_none());
    }
}
