//! The run store and `audit.jsonl` after a host stopped between the two:
//! a writer appends an event's line to the file, then records the event in
//! the store with the line's hash as the new head (under the file's lock,
//! so no other writer comes between). A host killed after the first step
//! leaves lines the store lacks; the next writer (a resumed run, `capstan
//! approve`, `capstan cancel`) finds the store's head before the end of
//! the file and records those lines in the store. A store head that is no
//! line of the file means lines were cut off its end (or the file was
//! replaced): the store keeps the events, the writer records the cut in
//! the chain, and `capstan verify` names it.

use serde_json::{Value, json};

use super::chain;
use crate::store::{AuditKind, AuditRow};

/// The `event` of the `run` record of lines recorded in the store late.
pub const RECONCILED: &str = "audit-store-reconciled";
/// The `event` of the `run` record of a store head the file lacks.
pub const CUT: &str = "audit-log-cut";

/// How the store stands to the file.
#[derive(Debug, PartialEq)]
pub enum Reconcile {
    /// The store has recorded every line.
    InSync,
    /// Lines after the store's head that it never recorded: (line number,
    /// hash, event), oldest first.
    Behind(Vec<(usize, String, AuditRow)>),
    /// The store's head is no line of the file.
    Cut {
        head: String,
        /// Complete lines in the file.
        lines: usize,
    },
    /// The chain breaks before reaching the store's head: `capstan verify`
    /// names the break; nothing is changed.
    Broken,
}

/// Compare the file (`bytes`, the whole of run `run`'s audit.jsonl, a torn
/// last line already cut off) with the store's `head` for it; `stored`:
/// how many events the store holds for the run (what a missing head means).
pub fn reconcile(run: &str, bytes: &[u8], head: Option<&str>, stored: usize) -> Reconcile {
    let walk = chain::walk(run, bytes);
    let from = match head {
        Some(head) => match walk.hashes.iter().position(|h| h == head) {
            Some(i) => i + 1,
            None if walk.broken.is_some() => return Reconcile::Broken,
            None => {
                return Reconcile::Cut {
                    head: head.to_string(),
                    lines: walk.lines,
                };
            }
        },
        // No line recorded yet: all of them are to be; events without a
        // head are a run from before the chain, left as they are.
        None if stored == 0 => 0,
        None => return Reconcile::InSync,
    };
    // Up to a break at most: lines after it do not chain.
    let lines: Vec<&[u8]> = bytes.split(|&b| b == b'\n').collect();
    let behind: Vec<_> = (from..walk.hashes.len())
        .filter_map(|i| Some((i + 1, walk.hashes[i].clone(), row(lines[i])?)))
        .collect();
    if behind.is_empty() {
        Reconcile::InSync
    } else {
        Reconcile::Behind(behind)
    }
}

/// The event a line holds, as the store keeps it.
fn row(line: &[u8]) -> Option<AuditRow> {
    let e: Value = serde_json::from_slice(line).ok()?;
    Some(AuditRow {
        time: e["time"].as_str()?.to_string(),
        stage: e["stage"].as_str()?.to_string(),
        plugin: e["plugin"].as_str()?.to_string(),
        capability: AuditKind::parse(e["capability"].as_str()?),
        allowed: e["allowed"].as_bool()?,
        detail: e["detail"].clone(),
        reason: e["reason"].as_str().map(str::to_string),
    })
}

impl Reconcile {
    /// The detail of the `run` record of what was done, if anything was.
    pub fn record(&self, stored: usize) -> Option<Value> {
        match self {
            Reconcile::InSync | Reconcile::Broken => None,
            Reconcile::Behind(lines) => Some(json!({
                "event": RECONCILED,
                "why": "a host stopped after writing these lines to audit.jsonl and before the run store recorded them; they are recorded now",
                "lines": [lines[0].0, lines[lines.len() - 1].0],
                "count": lines.len(),
            })),
            Reconcile::Cut { head, lines } => Some(json!({
                "event": CUT,
                "why": "the run store's head (the hash of the last line it recorded) is no line of audit.jsonl: lines were cut off its end, or the file was replaced; the run store keeps their events",
                "store_head": head,
                "file_lines": lines,
                "store_events": stored,
            })),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A chained log of `n` events of run `r`, as the host writes them.
    fn log(n: usize) -> (Vec<u8>, Vec<String>) {
        let mut out = Vec::new();
        let mut hashes = Vec::new();
        let mut prev = chain::genesis("r");
        for i in 0..n {
            let line = serde_json::to_vec(&json!({
                "prev": prev, "time": format!("t{i}"), "stage": "s", "plugin": "p",
                "capability": "exec", "detail": {"i": i}, "allowed": i % 2 == 0,
            }))
            .unwrap();
            prev = chain::hash(&line);
            hashes.push(prev.clone());
            out.extend_from_slice(&line);
            out.push(b'\n');
        }
        (out, hashes)
    }

    #[test]
    fn a_store_with_the_last_line_is_in_sync() {
        let (bytes, hashes) = log(3);
        assert_eq!(
            reconcile("r", &bytes, Some(&hashes[2]), 3),
            Reconcile::InSync
        );
        assert_eq!(reconcile("r", b"", None, 0), Reconcile::InSync);
        // Events from before the chain had no head.
        assert_eq!(reconcile("r", &bytes, None, 3), Reconcile::InSync);
        assert_eq!(Reconcile::InSync.record(3), None);
    }

    #[test]
    fn lines_after_the_stores_head_are_to_be_recorded() {
        let (bytes, hashes) = log(4);
        let Reconcile::Behind(lines) = reconcile("r", &bytes, Some(&hashes[1]), 2) else {
            panic!("behind")
        };
        let numbers: Vec<usize> = lines.iter().map(|(n, _, _)| *n).collect();
        assert_eq!(numbers, [3, 4]);
        assert_eq!(lines[1].1, hashes[3]);
        let event = &lines[0].2;
        assert_eq!(
            (event.time.as_str(), event.capability.clone(), event.allowed),
            ("t2", AuditKind::Exec, true)
        );
        assert_eq!(event.detail, json!({"i": 2}));
        assert_eq!(event.reason, None);
        let record = Reconcile::Behind(lines).record(2).unwrap();
        assert_eq!(record["event"], RECONCILED);
        assert_eq!(record["lines"], json!([3, 4]));
        // Killed before the store recorded the first line.
        let Reconcile::Behind(all) = reconcile("r", &bytes, None, 0) else {
            panic!("behind")
        };
        assert_eq!(all.len(), 4);
    }

    #[test]
    fn a_head_the_file_lacks_is_a_cut_and_a_break_before_it_is_left_alone() {
        let (bytes, hashes) = log(4);
        // The last line cut off.
        let end = bytes[..bytes.len() - 1]
            .iter()
            .rposition(|&b| b == b'\n')
            .unwrap();
        let short = &bytes[..end + 1];
        let cut = reconcile("r", short, Some(&hashes[3]), 4);
        assert_eq!(
            cut,
            Reconcile::Cut {
                head: hashes[3].clone(),
                lines: 3
            }
        );
        let record = cut.record(4).unwrap();
        assert_eq!(
            (
                &record["event"],
                &record["file_lines"],
                &record["store_events"]
            ),
            (&json!(CUT), &json!(3), &json!(4))
        );
        // Line 2 changed: the chain breaks before the head is reached.
        let mut changed = bytes.clone();
        let second = changed.iter().position(|&b| b == b'\n').unwrap() + 1;
        let at = second + changed[second..].iter().position(|&b| b == b'}').unwrap() - 1;
        changed[at] ^= 1;
        assert_eq!(
            reconcile("r", &changed, Some(&hashes[3]), 4),
            Reconcile::Broken
        );
        // A break after the head: the lines up to it are recorded, no more.
        let Reconcile::Behind(lines) = reconcile("r", &changed, Some(&hashes[0]), 1) else {
            panic!("behind")
        };
        assert_eq!(lines.len(), 1, "line 2 itself still chains");
    }
}
