//! What this machine offers for [`super`]: where the membership tree is,
//! where a process limit can be set, found once from `/proc/self/mountinfo`
//! and `/proc/self/cgroup` (creating the base proves it writable).

use std::fmt;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// What this machine offers, found once by [`support`].
#[derive(Debug, Default)]
pub struct Support {
    /// Where members are tracked and killed.
    pub(super) tree: Option<Tree>,
    /// Whether `tree` itself limits processes (v2 pids enabled down to its
    /// base, or the tree is the v1 pids hierarchy).
    pub(super) tree_pids: bool,
    /// The v1 pids base, where the limit comes from there instead.
    v1_pids: Option<PathBuf>,
    /// The v1 freezer base, used only where the tree can neither kill
    /// (`cgroup.kill`) nor freeze (`cgroup.freeze`) a group itself.
    v1_freezer: Option<PathBuf>,
    /// Why something is missing, for messages.
    notes: Vec<String>,
}

#[derive(Debug)]
pub(super) struct Tree {
    pub(super) base: PathBuf,
    pub(super) v2: bool,
}

impl Support {
    /// Whether programs can be put into cgroups at all.
    pub fn available(&self) -> bool {
        self.tree.is_some()
    }

    /// Whether [`ExecCgroup::create`] can limit the number of processes.
    pub fn limits_processes(&self) -> bool {
        self.tree_pids || self.v1_pids.is_some()
    }

    /// Every base directory (one per hierarchy), each with whether it is
    /// the membership tree.
    pub(super) fn bases(&self) -> Vec<(&Path, Role)> {
        let mut bases = Vec::new();
        if let Some(t) = &self.tree {
            bases.push((t.base.as_path(), Role::Tree { v2: t.v2 }));
        }
        if let Some(p) = &self.v1_pids {
            bases.push((p.as_path(), Role::Pids));
        }
        if let Some(f) = &self.v1_freezer {
            bases.push((f.as_path(), Role::Freezer));
        }
        bases
    }
}

impl fmt::Display for Support {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Some(tree) = &self.tree else {
            return write!(f, "cgroups unavailable: {}", self.notes.join("; "));
        };
        let v = if tree.v2 { "v2" } else { "v1 pids" };
        write!(f, "cgroup {v} at {}", tree.base.display())?;
        match (&self.v1_pids, self.tree_pids) {
            (_, true) => write!(f, ", pids limit via cgroup {v}")?,
            (Some(p), false) => write!(f, ", pids limit via cgroup v1 at {}", p.display())?,
            (None, false) => write!(f, ", no pids limit ({})", self.notes.join("; "))?,
        }
        if let Some(freezer) = &self.v1_freezer {
            write!(f, ", freezer v1 at {}", freezer.display())?;
        }
        Ok(())
    }
}

/// What one hierarchy's directories are for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Role {
    Tree { v2: bool },
    Pids,
    Freezer,
}

/// What the machine offers, detected on first use. Detecting creates the
/// base directories (only creating one proves it writable).
pub fn support() -> &'static Support {
    static SUPPORT: OnceLock<Support> = OnceLock::new();
    SUPPORT.get_or_init(|| {
        let read = |p| fs::read_to_string(p).unwrap_or_default();
        detect(&locate(
            &read("/proc/self/mountinfo"),
            &read("/proc/self/cgroup"),
        ))
    })
}

/// This process's own cgroup directories: in the v2 hierarchy, and in the
/// v1 hierarchies that hold `pids` and `freezer`.
#[derive(Debug, Default, PartialEq)]
struct Located {
    v2: Option<PathBuf>,
    v1_pids: Option<PathBuf>,
    v1_freezer: Option<PathBuf>,
}

/// Find this process's cgroups from the texts of `/proc/self/mountinfo`
/// and `/proc/self/cgroup`.
fn locate(mountinfo: &str, self_cgroup: &str) -> Located {
    // (fstype, mount root, mount point, super options) of cgroup mounts.
    let mounts: Vec<(&str, String, String, Vec<&str>)> = mountinfo
        .lines()
        .filter_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            let left: Vec<&str> = left.split(' ').collect();
            let mut right = right.split(' ');
            let fstype = right.next()?;
            let options = right.nth(1).unwrap_or("").split(',').collect();
            Some((
                fstype,
                unescape(left.get(3)?),
                unescape(left.get(4)?),
                options,
            ))
        })
        .filter(|(fstype, ..)| *fstype == "cgroup" || *fstype == "cgroup2")
        .collect();
    // The directory of `path` (as `/proc/self/cgroup` gives it, relative
    // to the hierarchy's root) under a mount of that hierarchy.
    let dir = |fstype: &str, controller: Option<&str>, path: &str| -> Option<PathBuf> {
        let (_, root, point, _) = mounts.iter().find(|(t, _, _, options)| {
            *t == fstype && controller.is_none_or(|c| options.contains(&c))
        })?;
        // A mount of a subtree shows only that subtree; a path outside it
        // (`/../x`, from another cgroup namespace) cannot be reached.
        let rel = match root.as_str() {
            "/" => path,
            root => path.strip_prefix(root)?,
        };
        if rel.split('/').any(|c| c == "..") {
            return None;
        }
        Some(Path::new(point).join(rel.trim_start_matches('/')))
    };
    let mut found = Located::default();
    for line in self_cgroup.lines() {
        let mut fields = line.splitn(3, ':');
        let (Some(id), Some(controllers), Some(path)) =
            (fields.next(), fields.next(), fields.next())
        else {
            continue;
        };
        if id == "0" && controllers.is_empty() {
            found.v2 = dir("cgroup2", None, path);
        }
        for c in controllers.split(',') {
            match c {
                "pids" => found.v1_pids = dir("cgroup", Some("pids"), path),
                "freezer" => found.v1_freezer = dir("cgroup", Some("freezer"), path),
                _ => {}
            }
        }
    }
    found
}

/// Mount points in mountinfo escape space, tab, newline and `\` as octal.
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes.get(i + 1..i + 4).and_then(|d| {
            let d = std::str::from_utf8(d).ok()?;
            u8::from_str_radix(d, 8).ok()
        });
        match (bytes[i], octal) {
            (b'\\', Some(b)) => {
                out.push(b);
                i += 4;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Set up the base directories where `found` allows.
fn detect(found: &Located) -> Support {
    let mut s = Support::default();
    if let Some(own) = &found.v2 {
        let base = own.join("capstan");
        match make_base(&base) {
            Ok(()) => {
                s.tree_pids = enable_pids(own, &base)
                    .map_err(|why| s.notes.push(format!("cgroup v2 pids controller: {why}")))
                    .is_ok();
                s.tree = Some(Tree { base, v2: true });
            }
            Err(e) => s.notes.push(e.to_string()),
        }
    } else {
        s.notes
            .push("no cgroup v2 hierarchy of this process".into());
    }
    if !s.tree_pids {
        match &found.v1_pids {
            Some(own) => {
                let base = own.join("capstan");
                match make_base(&base) {
                    Ok(()) => s.v1_pids = Some(base),
                    Err(e) => s.notes.push(e.to_string()),
                }
            }
            None => s.notes.push("no cgroup v1 pids hierarchy".into()),
        }
    }
    if s.tree.is_none()
        && let Some(base) = s.v1_pids.take()
    {
        // Without v2, the v1 pids hierarchy tracks members as well.
        s.tree = Some(Tree { base, v2: false });
        s.tree_pids = true;
    }
    let tree_stops = s.tree.as_ref().is_some_and(|t| {
        t.v2 && (t.base.join("cgroup.kill").exists() || t.base.join("cgroup.freeze").exists())
    });
    if s.tree.is_some()
        && !tree_stops
        && let Some(own) = &found.v1_freezer
    {
        let base = own.join("capstan");
        if make_base(&base).is_ok() {
            s.v1_freezer = Some(base);
        }
    }
    s
}

/// Create a base directory and prove that cgroups can be made in it.
fn make_base(base: &Path) -> io::Result<()> {
    let fail = |what: &str, e: io::Error| {
        io::Error::new(
            e.kind(),
            format!("cannot {what} cgroup {}: {e}", base.display()),
        )
    };
    fs::create_dir_all(base).map_err(|e| fail("make", e))?;
    // Run ids never start with `.`: no run's directory is touched.
    let probe = base.join(format!(".probe-{}", std::process::id()));
    fs::create_dir(&probe).map_err(|e| fail("make a cgroup in", e))?;
    let _ = fs::remove_dir(&probe);
    Ok(())
}

/// Enable the v2 pids controller for the children of `own` and of `base`.
fn enable_pids(own: &Path, base: &Path) -> Result<(), String> {
    let controllers = fs::read_to_string(own.join("cgroup.controllers")).unwrap_or_default();
    if !controllers.split_whitespace().any(|c| c == "pids") {
        return Err(format!("not available in {}", own.display()));
    }
    // In `own` this fails (EBUSY) where it holds processes and is not the
    // root: a delegated cgroup must have been set up for it.
    for dir in [own, base] {
        enable_pids_in(dir).map_err(|e| format!("cannot enable it in {}: {e}", dir.display()))?;
    }
    Ok(())
}

pub(super) fn enable_pids_in(dir: &Path) -> io::Result<()> {
    let control = dir.join("cgroup.subtree_control");
    if fs::read_to_string(&control)?
        .split_whitespace()
        .any(|c| c == "pids")
    {
        return Ok(());
    }
    fs::write(control, "+pids")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_cgroups_are_located_on_hybrid_and_pure_v2_systems() {
        let hybrid = "\
35 25 0:30 / /sys/fs/cgroup ro,nosuid shared:9 - tmpfs tmpfs ro,mode=755
36 35 0:31 / /sys/fs/cgroup/unified rw,nosuid shared:10 - cgroup2 cgroup2 rw,nsdelegate
40 35 0:35 / /sys/fs/cgroup/pids rw,nosuid shared:14 - cgroup cgroup rw,pids
41 35 0:36 / /sys/fs/cgroup/cpu,cpuacct rw shared:15 - cgroup cgroup rw,cpu,cpuacct
42 35 0:37 /ci /sys/fs/cgroup/free\\040zer rw shared:16 - cgroup cgroup rw,freezer
";
        let own = "12:pids:/system.slice/ci.service\n4:cpu,cpuacct:/\n3:freezer:/ci/job\n0::/system.slice/ci.service\n";
        assert_eq!(
            locate(hybrid, own),
            Located {
                v2: Some("/sys/fs/cgroup/unified/system.slice/ci.service".into()),
                v1_pids: Some("/sys/fs/cgroup/pids/system.slice/ci.service".into()),
                v1_freezer: Some("/sys/fs/cgroup/free zer/job".into()),
            }
        );
        let pure = "30 23 0:26 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot\n";
        assert_eq!(
            locate(pure, "0::/user.slice/user-1000.slice/user@1000.service/app.slice/run.scope\n"),
            Located {
                v2: Some("/sys/fs/cgroup/user.slice/user-1000.slice/user@1000.service/app.slice/run.scope".into()),
                ..Located::default()
            }
        );
        // Outside the mounted part (another cgroup namespace): unreachable.
        assert_eq!(locate(pure, "0::/../other\n"), Located::default());
    }
}
