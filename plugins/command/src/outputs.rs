//! The file a step writes its outputs to (`$CAPSTAN_OUTPUT`), in the format
//! of GitHub Actions' `$GITHUB_OUTPUT`:
//!
//! ```text
//! version=1.4.2
//! image_id=golden-20261126
//! notes<<EOF
//! first line
//! second line
//! EOF
//! ```
//!
//! `KEY=VALUE` sets `KEY` to everything after the first `=`; `KEY<<DELIM`
//! sets it to the lines up to the next line that is exactly `DELIM`
//! (joined with `\n`, without a final newline). Blank lines between
//! entries are skipped, a `\r` before a line's `\n` is dropped, and a key
//! set twice keeps its last value.

use std::fmt;

/// Bytes of an output file the stage reads at most: outputs are for small
/// values (ids, versions, paths); bulky data belongs in a file.
pub const MAX_BYTES: u64 = 1 << 20;

/// What is wrong with an output file, and on which line (1-based).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Malformed {
    pub line: usize,
    pub problem: String,
}

impl fmt::Display for Malformed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.problem)
    }
}

/// The outputs in `text`, in the order they were written (a key set twice
/// appears twice; the last one wins when they are added to the outcome).
pub fn parse(text: &str) -> Result<Vec<(String, String)>, Malformed> {
    let mut outputs = Vec::new();
    let mut lines = text.split('\n').map(|l| l.strip_suffix('\r').unwrap_or(l));
    let mut number = 0;
    while let Some(line) = lines.next() {
        number += 1;
        if line.trim().is_empty() {
            continue;
        }
        let malformed = move |problem: String| Malformed {
            line: number,
            problem,
        };
        // `=` before any `<<` is `KEY=VALUE`; `<<` before any `=` opens a
        // multiline value (its delimiter may hold `=`).
        let equals = line.find('=');
        let heredoc = line.find("<<").filter(|h| equals.is_none_or(|e| *h < e));
        if let Some(h) = heredoc {
            let (key, delimiter) = (&line[..h], &line[h + 2..]);
            check_name(key).map_err(malformed)?;
            if delimiter.trim().is_empty() {
                return Err(malformed(format!(
                    "`{key}<<` needs a delimiter after `<<`, e.g. `{key}<<EOF`"
                )));
            }
            let start = number;
            let mut value: Vec<&str> = Vec::new();
            loop {
                let Some(next) = lines.next() else {
                    return Err(Malformed {
                        line: start,
                        problem: format!(
                            "`{key}<<{delimiter}` is never ended: no line after it is exactly `{delimiter}`"
                        ),
                    });
                };
                number += 1;
                if next == delimiter {
                    break;
                }
                value.push(next);
            }
            outputs.push((key.to_string(), value.join("\n")));
        } else if let Some(e) = equals {
            let key = &line[..e];
            check_name(key).map_err(malformed)?;
            outputs.push((key.to_string(), line[e + 1..].to_string()));
        } else {
            return Err(malformed(format!(
                "`{}` is neither `KEY=VALUE` nor `KEY<<DELIMITER`",
                shorten(line)
            )));
        }
    }
    Ok(outputs)
}

/// Why `key` cannot name an output: downstream stages name it in
/// `${stages.<stage>.outputs.<key>}`, so it follows the rules of stage
/// names (letters, digits, `_` and `-`, at most 64, not starting with `-`).
pub fn check_name(key: &str) -> Result<(), String> {
    let problem = if key.is_empty() {
        "is empty"
    } else if key.len() > 64 {
        "is longer than 64 characters"
    } else if key.starts_with('-') {
        "starts with `-`"
    } else if !key
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        "may hold only letters, digits, `_` and `-`"
    } else {
        return Ok(());
    };
    Err(format!("output name `{}` {problem}", shorten(key)))
}

/// `text` cut to 80 characters, for messages.
fn shorten(text: &str) -> String {
    if text.chars().count() > 80 {
        text.chars().take(79).chain(['…']).collect()
    } else {
        text.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(text: &str) -> Vec<(String, String)> {
        parse(text).unwrap_or_else(|e| panic!("{text:?}: {e}"))
    }

    fn pairs(items: &[(&str, &str)]) -> Vec<(String, String)> {
        items
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn key_value_lines() {
        assert_eq!(ok(""), pairs(&[]));
        assert_eq!(ok("\n\n  \n"), pairs(&[]));
        assert_eq!(
            ok("version=1.4.2\nimage_id=golden-1\n"),
            pairs(&[("version", "1.4.2"), ("image_id", "golden-1")])
        );
        // Everything after the first `=`, spaces and `<<` included.
        assert_eq!(
            ok("url=http://x/?a=b&c=d\nnote= two  spaces \nshift=a<<b"),
            pairs(&[
                ("url", "http://x/?a=b&c=d"),
                ("note", " two  spaces "),
                ("shift", "a<<b")
            ])
        );
        assert_eq!(ok("empty="), pairs(&[("empty", "")]));
        // CRLF files, and a key set twice (kept in order: the last wins later).
        assert_eq!(
            ok("a=1\r\nb=2\r\na=3\r\n"),
            pairs(&[("a", "1"), ("b", "2"), ("a", "3")])
        );
        assert_eq!(ok("k-1_B=x"), pairs(&[("k-1_B", "x")]));
    }

    #[test]
    fn multiline_values() {
        assert_eq!(
            ok("notes<<EOF\nfirst line\n\nthird = x\nEOF\nafter=1\n"),
            pairs(&[("notes", "first line\n\nthird = x"), ("after", "1")])
        );
        // The delimiter is any text; `=` after `<<` belongs to it.
        assert_eq!(
            ok("body<<ghadelimiter_5f=2\nline\nghadelimiter_5f=2"),
            pairs(&[("body", "line")])
        );
        assert_eq!(ok("empty<<END\nEND\n"), pairs(&[("empty", "")]));
        // Only a line that is exactly the delimiter ends the value.
        assert_eq!(
            ok("v<<EOF\n EOF\nEOF2\nEOF\n"),
            pairs(&[("v", " EOF\nEOF2")])
        );
        assert_eq!(ok("v<<EOF\r\na\r\nEOF\r\n"), pairs(&[("v", "a")]));
    }

    fn err(text: &str) -> String {
        parse(text)
            .map(|o| panic!("{text:?} parsed: {o:?}"))
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn malformed_files_name_the_line() {
        assert_eq!(
            err("ok=1\n\njust text\n"),
            "line 3: `just text` is neither `KEY=VALUE` nor `KEY<<DELIMITER`"
        );
        assert_eq!(
            err("a=1\nnotes<<EOF\nx\n"),
            "line 2: `notes<<EOF` is never ended: no line after it is exactly `EOF`"
        );
        assert_eq!(
            err("notes<<\nx\n"),
            "line 1: `notes<<` needs a delimiter after `<<`, e.g. `notes<<EOF`"
        );
        // The line count goes on after a multiline value.
        assert_eq!(
            err("a<<E\n1\n2\nE\noops"),
            "line 5: `oops` is neither `KEY=VALUE` nor `KEY<<DELIMITER`"
        );
        let long = format!("{}\n", "x".repeat(200));
        assert!(err(&long).contains(&format!("`{}…`", "x".repeat(79))));
    }

    #[test]
    fn keys_must_be_output_names() {
        assert_eq!(err("=value"), "line 1: output name `` is empty");
        assert_eq!(
            err("image id=x"),
            "line 1: output name `image id` may hold only letters, digits, `_` and `-`"
        );
        assert_eq!(
            err("KEY =x"),
            "line 1: output name `KEY ` may hold only letters, digits, `_` and `-`"
        );
        assert_eq!(
            err("a.b=x"),
            "line 1: output name `a.b` may hold only letters, digits, `_` and `-`"
        );
        assert_eq!(err("-x=1"), "line 1: output name `-x` starts with `-`");
        assert!(err(&format!("{}=1", "k".repeat(65))).ends_with("is longer than 64 characters"));
        assert_eq!(
            err("ok=1\nbad key<<EOF\nx\nEOF"),
            "line 2: output name `bad key` may hold only letters, digits, `_` and `-`"
        );
        assert!(check_name("ümlaut").is_err());
    }
}
