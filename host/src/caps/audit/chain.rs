//! The hash chain of a run's `audit.jsonl`: every line starts with
//! `"prev"`, the sha256 (hex) of the line before it without its newline;
//! the first line's is the hash of a genesis text naming the run, so that
//! lines cannot move between runs. Changing, removing, inserting or
//! reordering a line breaks the link of the line after it; the run store
//! keeps the hash of the last line written (the head), so that cutting
//! lines off the end shows too.
//!
//! A host killed while writing a line leaves a torn last line (no newline).
//! The next writer (a resumed run, `capstan approve`, `capstan cancel`)
//! cuts it off and records that it did, with the bytes it cut, in a
//! [`REPAIRED`] event; `capstan verify` reports a torn line it finds, and
//! every repair.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

use serde_json::{Value, json};
use sha2::{Digest, Sha256};

/// The `event` of the `run` audit record a writer adds when it cut off a
/// torn last line.
pub const REPAIRED: &str = "audit-log-repaired";

/// How much of a torn line its repair record quotes (it hashes all of it).
const QUOTED: usize = 16 * 1024;

/// The `prev` of a run's first line.
pub fn genesis(run: &str) -> String {
    hash(format!("capstan audit.jsonl v1 of run {run}").as_bytes())
}

/// The hash of one line, without its newline.
pub fn hash(line: &[u8]) -> String {
    hex::encode(Sha256::digest(line))
}

/// The end of an audit log as a writer finds it.
#[derive(Debug, Default)]
pub struct Tail {
    /// The hash of the last complete line; `None`: there is none.
    pub last: Option<String>,
    /// Where the last complete line ends (after its newline).
    pub end: u64,
    /// Bytes after the last newline: a line its writer did not finish.
    pub torn: Option<Vec<u8>>,
}

impl Tail {
    /// Read the end of `file` (`len` bytes long) backwards: the last
    /// complete line and whatever follows it.
    pub fn read(file: &File, len: u64) -> io::Result<Tail> {
        let Some(last_newline) = rfind_newline(file, len)? else {
            return Ok(Tail {
                last: None,
                end: 0,
                torn: (len > 0).then(|| read_range(file, 0, len)).transpose()?,
            });
        };
        let end = last_newline + 1;
        let start = rfind_newline(file, last_newline)?.map_or(0, |n| n + 1);
        let line = read_range(file, start, last_newline)?;
        Ok(Tail {
            last: Some(hash(&line)),
            end,
            torn: (end < len)
                .then(|| read_range(file, end, len))
                .transpose()?,
        })
    }

    /// The detail of the [`REPAIRED`] record of cutting `torn` off.
    pub fn repair_detail(&self, torn: &[u8]) -> Value {
        let quoted = &torn[..torn.len().min(QUOTED)];
        json!({
            "event": REPAIRED,
            "why": "the last line of audit.jsonl was incomplete (a host stopped while writing it); it was cut off",
            "offset": self.end,
            "bytes": torn.len(),
            "sha256": hash(torn),
            "text": String::from_utf8_lossy(quoted),
            "quoted_bytes": quoted.len(),
        })
    }
}

/// The position of the last `\n` before `before`.
fn rfind_newline(file: &File, before: u64) -> io::Result<Option<u64>> {
    let mut buf = [0u8; 8192];
    let mut end = before;
    while end > 0 {
        let start = end.saturating_sub(buf.len() as u64);
        let chunk = &mut buf[..(end - start) as usize];
        file.read_exact_at(chunk, start)?;
        if let Some(i) = chunk.iter().rposition(|&b| b == b'\n') {
            return Ok(Some(start + i as u64));
        }
        end = start;
    }
    Ok(None)
}

fn read_range(file: &File, start: u64, end: u64) -> io::Result<Vec<u8>> {
    let mut bytes = vec![0; (end - start) as usize];
    file.read_exact_at(&mut bytes, start)?;
    Ok(bytes)
}

/// What walking a whole audit log found.
#[derive(Debug, Default)]
pub struct Walk {
    /// The hash of every complete line up to the first broken link (line
    /// `n` is `hashes[n - 1]`).
    pub hashes: Vec<String>,
    /// Complete lines in the file.
    pub lines: usize,
    /// The first broken link.
    pub broken: Option<Broken>,
    /// Bytes after the last newline (a line its writer did not finish).
    pub torn: Option<usize>,
    /// Lines recording the repair of a torn line, and how many bytes each cut.
    pub repairs: Vec<(usize, u64)>,
}

/// The first line that does not chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Broken {
    /// 1-based.
    pub line: usize,
    pub what: String,
}

/// Walk `bytes` (a run's whole `audit.jsonl`) from the genesis of `run`.
pub fn walk(run: &str, bytes: &[u8]) -> Walk {
    let mut walk = Walk::default();
    let mut parts: Vec<&[u8]> = bytes.split(|&b| b == b'\n').collect();
    // After the last newline: empty, or a torn line.
    let rest = parts.pop().unwrap_or_default();
    walk.torn = (!rest.is_empty()).then_some(rest.len());
    walk.lines = parts.len();
    let genesis = genesis(run);
    for (i, line) in parts.iter().enumerate() {
        let n = i + 1;
        let expected = walk.hashes.last().unwrap_or(&genesis);
        let event: Value = match serde_json::from_slice(line) {
            Ok(v @ Value::Object(_)) => v,
            Ok(_) => {
                walk.broken = Some(Broken {
                    line: n,
                    what: "is not a JSON object".into(),
                });
                break;
            }
            Err(e) => {
                walk.broken = Some(Broken {
                    line: n,
                    what: format!("is not JSON (column {}: {e})", e.column()),
                });
                break;
            }
        };
        let Some(prev) = event["prev"].as_str() else {
            walk.broken = Some(Broken {
                line: n,
                what: "has no `prev` hash (written by a Capstan that did not chain its audit log, or edited)".into(),
            });
            break;
        };
        if prev != expected {
            walk.broken = Some(Broken {
                line: n,
                what: unlinked(n, prev, &walk.hashes, &genesis),
            });
            break;
        }
        if event["capability"] == "run" && event["detail"]["event"] == REPAIRED {
            walk.repairs
                .push((n, event["detail"]["bytes"].as_u64().unwrap_or(0)));
        }
        walk.hashes.push(hash(line));
    }
    walk
}

/// Why line `n`, whose `prev` is `prev`, does not follow line `n - 1`.
fn unlinked(n: usize, prev: &str, hashes: &[String], genesis: &str) -> String {
    let before = n - 1;
    if prev == genesis {
        return format!(
            "claims to be the first line, after {before} lines: the lines before it were inserted, or lines were reordered"
        );
    }
    match hashes.iter().position(|h| h == prev) {
        Some(i) => format!(
            "follows line {}, not line {before}: lines {}–{before} were inserted, or lines were reordered",
            i + 1,
            i + 2
        ),
        None if before == 0 => {
            "is not the first line of this run's log: its `prev` is not this run's genesis hash (lines were removed before it, or it comes from another run)".into()
        }
        None => format!(
            "does not follow line {before}: its `prev` is not the hash of line {before} \
             (line {before} was changed, or lines were removed between them)"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A chained log of `n` small events of run `r`.
    fn log(n: usize) -> Vec<u8> {
        let mut out = Vec::new();
        let mut prev = genesis("r");
        for i in 0..n {
            let line = serde_json::to_vec(&json!({"prev": prev, "i": i})).unwrap();
            prev = hash(&line);
            out.extend_from_slice(&line);
            out.push(b'\n');
        }
        out
    }

    #[test]
    fn an_untouched_log_chains_and_another_runs_does_not() {
        let walk = walk("r", &log(5));
        assert_eq!((walk.broken, walk.lines, walk.torn), (None, 5, None));
        assert_eq!(walk.hashes.len(), 5);
        let other = super::walk("s", &log(5));
        assert_eq!(other.broken.map(|b| b.line), Some(1));
    }

    #[test]
    fn a_changed_byte_breaks_the_link_after_it_or_its_own_line() {
        let mut bytes = log(5);
        // Line 3's `i`: still JSON, so line 4 names it.
        let third = bytes
            .split(|&b| b == b'\n')
            .take(2)
            .map(|l| l.len() + 1)
            .sum::<usize>();
        let at = third + bytes[third..].iter().position(|&b| b == b'}').unwrap() - 1;
        bytes[at] ^= 1;
        let broken = walk("r", &bytes).broken.unwrap();
        assert_eq!(broken.line, 4, "{broken:?}");
        assert!(broken.what.contains("line 3 was changed"), "{broken:?}");
        // A quote turned into something else: line 3 itself no longer parses.
        let mut bytes = log(5);
        bytes[third + 1] = b'x';
        assert_eq!(walk("r", &bytes).broken.unwrap().line, 3);
    }

    #[test]
    fn removed_inserted_and_reordered_lines_are_named() {
        let lines: Vec<Vec<u8>> = log(5)
            .split(|&b| b == b'\n')
            .filter(|l| !l.is_empty())
            .map(|l| [l, b"\n"].concat())
            .collect();
        let removed: Vec<u8> = [&lines[..2], &lines[3..]].concat().concat();
        let broken = walk("r", &removed).broken.unwrap();
        assert_eq!(broken.line, 3);
        let swapped: Vec<u8> = [&lines[0][..], &lines[2], &lines[1], &lines[3]].concat();
        assert_eq!(walk("r", &swapped).broken.unwrap().line, 2);
        let repeated: Vec<u8> = [&lines[0][..], &lines[1], &lines[2], &lines[1]].concat();
        let broken = walk("r", &repeated).broken.unwrap();
        assert_eq!(broken.line, 4);
        assert!(broken.what.contains("follows line 1"), "{broken:?}");
    }

    #[test]
    fn a_torn_last_line_is_reported_not_a_broken_link() {
        let mut bytes = log(3);
        bytes.extend_from_slice(b"{\"prev\":\"ab");
        let walk = walk("r", &bytes);
        assert_eq!((walk.broken, walk.lines, walk.torn), (None, 3, Some(11)));
    }

    #[test]
    fn the_tail_is_read_backwards_across_chunks() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        // Lines longer than a read chunk.
        let long = "x".repeat(20_000);
        let first = format!("{{\"a\":\"{long}\"}}");
        let second = format!("{{\"b\":\"{long}\"}}");
        std::fs::write(&path, format!("{first}\n{second}\ntorn")).unwrap();
        let file = File::open(&path).unwrap();
        let len = file.metadata().unwrap().len();
        let tail = Tail::read(&file, len).unwrap();
        assert_eq!(tail.last, Some(hash(second.as_bytes())));
        assert_eq!(tail.end, len - 4);
        assert_eq!(tail.torn.as_deref(), Some(&b"torn"[..]));
        std::fs::write(&path, "only torn").unwrap();
        let tail = Tail::read(&File::open(&path).unwrap(), 9).unwrap();
        assert_eq!((tail.last, tail.end), (None, 0));
        assert_eq!(tail.torn.as_deref(), Some(&b"only torn"[..]));
        let tail = Tail::read(&File::open(&path).unwrap(), 0).unwrap();
        assert!(tail.last.is_none() && tail.torn.is_none());
    }
}
