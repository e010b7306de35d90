//! The sandbox part of `capstan audit`: per stage, the file rules its
//! programs run under (shared by its exec grants) and whether this machine
//! enforces them; per exec grant, its network, limits, and whether it
//! amounts to running arbitrary code inside that sandbox.

use std::io::{self, Write};
use std::path::PathBuf;

use serde_json::{Value, json};

use crate::caps::exec::arbitrary;
use crate::caps::exec::sandbox::enforced_abi;
use crate::pipeline::sandbox::Sandbox;
use crate::pipeline::{ExecGrant, Stage};
use crate::text::inline;

/// The file rules of `stage`'s programs, as the run builds them
/// (`caps::exec::sandbox::StageSandbox`); `null` when it may start none.
pub(super) fn stage(stage: &Stage, sandbox: &Sandbox) -> Value {
    if stage.grants.exec.is_empty() {
        return Value::Null;
    }
    let (enforcement, confined) = match enforced_abi() {
        Some(abi) => (format!("landlock ABI {abi}"), true),
        None if sandbox.require => (
            "none: this kernel has no Landlock, so runs refuse to start ([sandbox] require = true)"
                .to_string(),
            false,
        ),
        None => (
            "NOT confined: this kernel has no Landlock and [sandbox] require = false, so the programs run without these file rules; network and limits still apply"
                .to_string(),
            false,
        ),
    };
    // A directory granted both ways is a write rule only, as in the run.
    let read: Vec<&PathBuf> = stage
        .read_dirs
        .iter()
        .filter(|r| !stage.write_dirs.contains(r))
        .collect();
    json!({
        "enforcement": enforcement,
        "confined": confined,
        "read_exec": {
            "system": sandbox.read,
            "grants": read,
            "upstream_work_dirs": stage.upstream,
        },
        "read_write_exec": {
            "work_dir": true,
            "grants": stage.write_dirs,
            "private": ["TMPDIR", "/dev/shm"],
        },
        "devices": sandbox.devices,
    })
}

/// The sandbox fields of one exec grant's entry: network, limits, and the
/// reasons it amounts to arbitrary code. The plugin can always write its
/// work dir, which is its programs' `HOME` and default working directory:
/// configuration and scripts read from there are the plugin's to choose.
pub(super) fn grant(grant: &ExecGrant, stage: &Stage, sandbox: &Sandbox) -> Value {
    let limits = sandbox.limits(grant);
    let g = &grant.limits;
    let from_grant: Vec<&str> = [
        ("open_files", g.open_files.is_some()),
        ("processes", g.processes.is_some()),
        ("cpu", g.cpu.is_some()),
        ("address_space", g.address_space.is_some()),
    ]
    .into_iter()
    .filter_map(|(name, set)| set.then_some(name))
    .collect();
    json!({
        "network": sandbox.network(grant),
        "network_is_default": grant.network.is_none(),
        "limits": limits,
        "limits_from_grant": from_grant,
        "arbitrary_code": arbitrary::arbitrary_code_in(grant, true, &stage.write_dirs),
    })
}

/// The stage's file rules as text: the system set compactly (the full list
/// is in `--json`), paths from the pipeline file escaped.
pub(super) fn print_stage(out: &mut impl Write, s: &Value) -> io::Result<()> {
    if s.is_null() {
        return Ok(());
    }
    let paths = |v: &Value| -> Vec<String> {
        v.as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .map(|p| inline(p).into_owned())
            .collect()
    };
    let r = &s["read_exec"];
    let mut read = vec![format!(
        "system locations ({} paths, see `[sandbox]`)",
        r["system"].as_array().map_or(0, Vec::len)
    )];
    read.extend(paths(&r["grants"]));
    let upstream = paths(&r["upstream_work_dirs"]);
    if !upstream.is_empty() {
        read.push(format!(
            "work dirs of upstream stages: {}",
            upstream.join(", ")
        ));
    }
    let mut write = vec!["its work dir".to_string()];
    write.extend(paths(&s["read_write_exec"]["grants"]));
    write.push("a private TMPDIR and /dev/shm".into());
    let enforcement = s["enforcement"].as_str().unwrap_or_default();
    if s["confined"] == true {
        writeln!(
            out,
            "  sandbox  file rules of every program the stage starts (enforced: {enforcement}):"
        )?;
    } else {
        writeln!(
            out,
            "  sandbox  file rules of every program the stage starts — {enforcement}:"
        )?;
    }
    writeln!(out, "             read+exec   {}", read.join("; "))?;
    writeln!(out, "             read+write  {}", write.join("; "))
}

/// An exec grant's network, limits and arbitrary-code marks, under its
/// `exec` line.
pub(super) fn print_grant(out: &mut impl Write, e: &Value) -> io::Result<()> {
    let network = format!(
        "{}{}",
        e["network"].as_str().unwrap_or_default(),
        if e["network_is_default"] == true {
            " (default)"
        } else {
            ""
        }
    );
    let set: Vec<&str> = e["limits_from_grant"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    let limits = serde_json::from_value::<LimitsText>(e["limits"].clone())
        .map(|l| l.show(&set))
        .unwrap_or_default();
    writeln!(out, "           network {network} · limits {limits}")?;
    for reason in e["arbitrary_code"].as_array().into_iter().flatten() {
        writeln!(
            out,
            "           ⚠ runs arbitrary code (inside the sandbox): {}",
            inline(reason.as_str().unwrap_or_default())
        )?;
    }
    Ok(())
}

/// [`Limits`] as serialized (cpu as text), read back for display.
#[derive(serde::Deserialize)]
struct LimitsText {
    open_files: u64,
    processes: u64,
    cpu: String,
    address_space: u64,
}

impl LimitsText {
    /// `open files 4096, processes 64 (grant), ...`: the fields the grant
    /// sets marked, the others are the `[sandbox.limits]` defaults.
    fn show(&self, set: &[&str]) -> String {
        let mark = |name: &str| if set.contains(&name) { " (grant)" } else { "" };
        format!(
            "open files {}{}, processes {}{}, cpu {}{}, address space {}{}",
            self.open_files,
            mark("open_files"),
            self.processes,
            mark("processes"),
            self.cpu,
            mark("cpu"),
            bytesize::ByteSize(self.address_space),
            mark("address_space"),
        )
    }
}

/// One line for the file rules a stage's programs ran under, from its
/// `start` audit event's `detail.sandbox` (`capstan audit --run`): how
/// they were enforced and how many paths each rule had (the paths are in
/// `--json`). Raw: the caller escapes it.
pub(super) fn stage_rules(rules: &Value) -> Option<String> {
    let enforced = rules["enforced"].as_str()?;
    let count = |key: &str| rules[key].as_array().map_or(0, Vec::len);
    Some(format!(
        "programs' files: {enforced}; read+exec {} paths, read+write {} (see --json)",
        count("read"),
        count("write")
    ))
}

/// One line for the sandbox an exec ran with, from its audit event's
/// `detail.sandbox` (`capstan audit --run`): `in landlock ABI 6, network
/// none, 4096 files, 1024 processes, cpu 1h, 16.0 GiB`. Raw: the caller
/// escapes it.
pub(super) fn ran_with(sandbox: &Value) -> Option<String> {
    let files = sandbox["files"].as_str()?;
    let network = sandbox["network"].as_str().unwrap_or("?");
    let limits = serde_json::from_value::<LimitsText>(sandbox["limits"].clone())
        .map(|l| {
            format!(
                ", {} files, {} processes, cpu {}, {}",
                l.open_files,
                l.processes,
                l.cpu,
                bytesize::ByteSize(l.address_space)
            )
        })
        .unwrap_or_default();
    Some(format!("in {files}, network {network}{limits}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::sandbox::Limits;

    #[test]
    fn limits_read_back_as_they_are_serialized() {
        let limits = Sandbox::default().limits;
        let text: LimitsText = serde_json::from_value(json!(limits)).unwrap();
        assert_eq!(
            text.show(&["processes"]),
            "open files 4096, processes 1024 (grant), cpu 1h, address space 16.0 GiB"
        );
        let line = ran_with(
            &json!({"files": "landlock ABI 6", "network": "none", "limits": Limits { processes: 64, ..limits }}),
        );
        assert_eq!(
            line.as_deref(),
            Some("in landlock ABI 6, network none, 4096 files, 64 processes, cpu 1h, 16.0 GiB")
        );
    }
}
