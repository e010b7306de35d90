//! Which process runs a run, and whether it is still alive: a pid alone is
//! not enough (pids are reused), so the owner is the pid plus the process's
//! start time (from `/proc/<pid>/stat`) plus the host name.

use serde::{Deserialize, Serialize};

/// A process, identified well enough to tell that it has died.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Owner {
    pub pid: u32,
    /// Start time in clock ticks since boot (`/proc/<pid>/stat` field 22).
    pub start: u64,
    pub host: String,
}

impl Owner {
    /// This process.
    pub fn current() -> Owner {
        let pid = std::process::id();
        Owner::of(pid).unwrap_or(Owner {
            pid,
            start: 0,
            host: host_name(),
        })
    }

    /// A running process of this host, if there is one with this pid.
    pub fn of(pid: u32) -> Option<Owner> {
        Some(Owner {
            pid,
            start: start_time(pid)?,
            host: host_name(),
        })
    }

    /// Whether the process still runs. A process on another host cannot be
    /// checked from here: it counts as alive (never steal a live lock).
    pub fn is_alive(&self) -> bool {
        if self.host != host_name() {
            return true;
        }
        match start_time(self.pid) {
            Some(start) => start == self.start,
            None => false,
        }
    }
}

impl std::fmt::Display for Owner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "pid {} on {}", self.pid, self.host)
    }
}

fn host_name() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "localhost".into())
}

/// Field 22 of `/proc/<pid>/stat`; `None` if there is no such process. The
/// command name (field 2) may hold spaces and parentheses, so fields are
/// counted from the last `)`.
fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_start(&stat)
}

fn parse_start(stat: &str) -> Option<u64> {
    let after = &stat[stat.rfind(')')? + 1..];
    let mut fields = after.split_whitespace();
    // `after` starts at field 3, the state: a zombie (nobody reaped it yet)
    // or a dying process is dead already.
    if matches!(fields.next()?, "Z" | "X" | "x") {
        return None;
    }
    // Field 22 is the 19th after the state.
    fields.nth(18)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_is_alive_and_a_reused_pid_is_not() {
        let me = Owner::current();
        assert!(me.start > 0);
        assert!(me.is_alive());
        let reused = Owner {
            start: me.start + 1,
            ..me.clone()
        };
        assert!(!reused.is_alive());
        let gone = Owner {
            pid: u32::MAX - 1,
            ..me.clone()
        };
        assert!(!gone.is_alive());
        let elsewhere = Owner {
            host: "another-host".into(),
            ..gone
        };
        assert!(elsewhere.is_alive(), "cannot tell, so never steal");
    }

    #[test]
    fn command_names_with_spaces_and_parens() {
        let stat = "42 (a b) c)) S 1 42 42 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 1000 10";
        assert_eq!(parse_start(stat), Some(987654));
        assert_eq!(parse_start("garbage"), None);
        let zombie = stat.replace(") S ", ") Z ");
        assert_eq!(parse_start(&zombie), None, "a zombie is dead");
    }
}
