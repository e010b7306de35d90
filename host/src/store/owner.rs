//! Which process runs a run, and whether it is still alive: a pid alone is
//! not enough (pids are reused), so the owner is the pid plus the process's
//! start time (from `/proc/<pid>/stat`) plus the host it runs on.
//!
//! A host is named by its host id, not its hostname: two machines (or
//! containers) with one hostname must never take each other's processes
//! for their own. The id is derived from the machine id, the boot id (pids
//! and start times restart with every boot) and the pid namespace (a
//! container that cannot see another's pids must not judge them), or set
//! with `CAPSTAN_HOST_ID`.

use std::sync::OnceLock;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// A process, identified well enough to tell that it has died.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Owner {
    pub pid: u32,
    /// Start time in clock ticks since boot (`/proc/<pid>/stat` field 22).
    pub start: u64,
    /// The hostname, for people.
    pub host: String,
    /// The host id ([`host_id`]); empty in records made before it existed,
    /// which are judged by hostname.
    #[serde(default)]
    pub host_id: String,
}

/// Whether a process lives, as far as this host can tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Liveness {
    Alive,
    Dead,
    /// It runs on another host: only its lease can tell.
    Elsewhere,
}

impl Owner {
    /// This process.
    pub fn current() -> Owner {
        let pid = std::process::id();
        Owner::of(pid).unwrap_or(Owner {
            pid,
            start: 0,
            host: host_name(),
            host_id: host_id().to_string(),
        })
    }

    /// A running process of this host, if there is one with this pid.
    pub fn of(pid: u32) -> Option<Owner> {
        Some(Owner {
            pid,
            start: start_time(pid)?,
            host: host_name(),
            host_id: host_id().to_string(),
        })
    }

    /// Whether the process runs on this host (so its pid can be checked).
    pub fn is_here(&self) -> bool {
        if self.host_id.is_empty() {
            self.host == host_name()
        } else {
            self.host_id == host_id()
        }
    }

    pub fn liveness(&self) -> Liveness {
        if !self.is_here() {
            return Liveness::Elsewhere;
        }
        match start_time(self.pid) {
            Some(start) if start == self.start => Liveness::Alive,
            _ => Liveness::Dead,
        }
    }

    /// Whether the process still runs. A process on another host cannot be
    /// checked from here: it counts as alive (never steal a live lock; the
    /// lease decides, see `store::lease`).
    pub fn is_alive(&self) -> bool {
        self.liveness() != Liveness::Dead
    }
}

impl std::fmt::Display for Owner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "pid {} on {}", self.pid, self.host)?;
        if !self.host_id.is_empty() && !self.is_here() {
            write!(f, " (host id {})", self.host_id)?;
        }
        Ok(())
    }
}

fn host_name() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "localhost".into())
}

/// This host's id: `CAPSTAN_HOST_ID` if set, else 16 hex digits of the
/// sha256 of the machine id, the boot id and the pid namespace.
pub fn host_id() -> &'static str {
    static ID: OnceLock<String> = OnceLock::new();
    ID.get_or_init(|| {
        if let Ok(id) = std::env::var("CAPSTAN_HOST_ID")
            && !id.trim().is_empty()
        {
            return id.trim().to_string();
        }
        let read = |path: &str| std::fs::read_to_string(path).unwrap_or_default();
        let machine = match read("/etc/machine-id") {
            m if !m.trim().is_empty() => m,
            _ => read("/var/lib/dbus/machine-id"),
        };
        let boot = read("/proc/sys/kernel/random/boot_id");
        let pid_ns = std::fs::read_link("/proc/self/ns/pid")
            .map(|p| p.display().to_string())
            .unwrap_or_default();
        let mut hash = Sha256::new();
        for part in [machine.trim(), boot.trim(), &pid_ns, &host_name()] {
            hash.update(part.as_bytes());
            hash.update([0]);
        }
        hex::encode(&hash.finalize()[..8])
    })
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
            host_id: "another-machine".into(),
            ..gone.clone()
        };
        assert!(elsewhere.is_alive(), "cannot tell, so never steal");
        assert_eq!(elsewhere.liveness(), Liveness::Elsewhere);
    }

    #[test]
    fn a_host_is_its_id_not_its_name() {
        let me = Owner::current();
        assert_eq!(me.host_id, host_id());
        if std::env::var_os("CAPSTAN_HOST_ID").is_none() {
            assert_eq!(host_id().len(), 16, "{}", host_id());
        }
        // Another machine with this machine's hostname: its pids are not ours.
        let twin = Owner {
            host_id: "0123456789abcdef".into(),
            ..me.clone()
        };
        assert!(!twin.is_here());
        assert_eq!(twin.liveness(), Liveness::Elsewhere);
        // A record made before host ids: judged by hostname.
        let legacy = Owner {
            host_id: String::new(),
            ..me.clone()
        };
        assert!(legacy.is_here());
        assert_eq!(legacy.liveness(), Liveness::Alive);
        // Records read back without the field (audit details of old runs).
        let old: Owner = serde_json::from_str(r#"{"pid":1,"start":2,"host":"h"}"#).unwrap();
        assert_eq!(old.host_id, "");
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
