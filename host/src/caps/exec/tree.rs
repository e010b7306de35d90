//! The processes this host started, found by parentage in `/proc`: the
//! children of every stage, their children, and (because the host is a
//! child subreaper, see [`adopt_orphans`]) those whose parent exited early,
//! including ones that left their process group with `setsid`. Stopping a
//! run signals all of them, not just the process groups it created.

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// Make orphaned descendants this process's children instead of init's, so
/// that a double-forked or `setsid` child of a stage stays findable as a
/// descendant until it ends.
pub fn adopt_orphans() {
    let _ = nix::sys::prctl::set_child_subreaper(true);
}

/// One line of `/proc/<pid>/stat`: its parent, and whether it is a zombie.
fn parent_of(pid: i32) -> Option<(i32, bool)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // `pid (comm) state ppid …`; comm may hold spaces and parentheses.
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    let state = fields.next()?;
    let ppid = fields.next()?.parse().ok()?;
    Some((ppid, state == "Z" || state == "X"))
}

/// Every living (not zombie) descendant of `root`, parents before children.
pub fn descendants(root: i32) -> Vec<i32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let table: Vec<(i32, i32, bool)> = entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(|pid| parent_of(pid).map(|(ppid, dead)| (pid, ppid, dead)))
        .collect();
    let mut found = vec![root];
    let mut next = 0;
    while next < found.len() {
        let parent = found[next];
        found.extend(
            table
                .iter()
                .filter(|(_, ppid, _)| *ppid == parent)
                .map(|(pid, _, _)| *pid),
        );
        next += 1;
    }
    found.remove(0);
    found.retain(|pid| table.iter().any(|(p, _, dead)| p == pid && !dead));
    found
}

/// The living descendants of this process.
pub fn own_descendants() -> Vec<i32> {
    descendants(std::process::id() as i32)
}

/// Send `signal` to each of `pids` (already gone ones are ignored).
pub fn signal(pids: &[i32], signal: Signal) {
    for pid in pids {
        let _ = kill(Pid::from_raw(*pid), signal);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descendants_include_grandchildren_that_left_the_group() {
        adopt_orphans();
        // sh starts a `setsid` sleep in the background (not holding the
        // pipe read below) and exits: the sleep
        // is orphaned, adopted by this (subreaper) process, in a session of
        // its own, and still found.
        let mut sh = std::process::Command::new("sh")
            .args(["-c", "setsid sleep 30 >/dev/null 2>&1 & echo $!"])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut out = String::new();
        use std::io::Read;
        sh.stdout.take().unwrap().read_to_string(&mut out).unwrap();
        sh.wait().unwrap();
        let sleeper: i32 = out.trim().parse().unwrap();
        assert!(own_descendants().contains(&sleeper), "{sleeper} not found");
        signal(&[sleeper], Signal::SIGKILL);
        let _ = nix::sys::wait::waitpid(Pid::from_raw(sleeper), None);
        assert!(!own_descendants().contains(&sleeper));
    }
}
