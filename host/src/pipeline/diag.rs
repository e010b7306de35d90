//! Problems with a pipeline, located by file, line and column, with a hint
//! saying how to fix them: the one type for everything that stops a
//! pipeline before it runs (an invalid file, exit code 3; a plugin, grant,
//! program or `with` problem, exit code 4), printed for people or as JSON
//! (`capstan validate --json`) for editors and CI.

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

use serde::Serialize;

/// How bad a problem is: an error stops the pipeline, a warning does not.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Error,
    Warning,
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Severity::Error => "error",
            Severity::Warning => "warning",
        })
    }
}

/// One problem with a pipeline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub severity: Severity,
    pub file: PathBuf,
    /// 1-based line and column (in characters) of the problem, when it has
    /// a place.
    pub location: Option<(usize, usize)>,
    /// The offending source line (around the problem, when it is long).
    pub source_line: Option<String>,
    /// Where the underline starts in `source_line`, in characters.
    pub caret: usize,
    /// Width of the underline under `source_line`.
    pub width: usize,
    /// The stage the problem is in, if any.
    pub stage: Option<String>,
    pub message: String,
    pub help: Option<String>,
}

/// A diagnostic as `--json` prints it.
#[derive(Debug, Serialize)]
pub struct JsonDiagnostic<'a> {
    pub severity: Severity,
    pub file: String,
    pub line: Option<usize>,
    pub column: Option<usize>,
    pub stage: Option<&'a str>,
    pub message: &'a str,
    pub help: Option<&'a str>,
}

impl Diagnostic {
    /// A problem at `span` (byte offsets) of `source`.
    pub fn at(
        file: &Path,
        source: &str,
        span: Option<Range<usize>>,
        message: impl Into<String>,
    ) -> Self {
        Self::indexed(file, source, &LineIndex::new(source), span, message)
    }

    /// A problem at `span` of `source`, whose lines `index` holds.
    pub fn indexed(
        file: &Path,
        source: &str,
        index: &LineIndex,
        span: Option<Range<usize>>,
        message: impl Into<String>,
    ) -> Self {
        let mut d = Diagnostic {
            severity: Severity::Error,
            file: file.to_path_buf(),
            location: None,
            source_line: None,
            caret: 0,
            width: 0,
            stage: None,
            message: message.into(),
            help: None,
        };
        if let Some(span) = span {
            let start = floor_char_boundary(source, span.start);
            let end = floor_char_boundary(source, span.end.max(start));
            let (line, col) = index.locate(source, start);
            let text = index.line(source, line);
            let at = (start - (text.as_ptr() as usize - source.as_ptr() as usize)).min(text.len());
            let (shown, caret, shown_end) = excerpt(text, at);
            // The underline ends with the span, the line or what is shown.
            let underlined = &text[at..shown_end.min(at + (end - start)).max(at)];
            d.location = Some((line, col));
            d.source_line = Some(shown);
            d.caret = caret;
            d.width = underlined.chars().count().max(1);
        }
        d
    }

    /// A problem of the file as a whole.
    pub fn file(file: &Path, message: impl Into<String>) -> Self {
        Self::at(file, "", None, message)
    }

    pub fn help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }

    pub fn stage(mut self, stage: impl Into<String>) -> Self {
        self.stage = Some(stage.into());
        self
    }

    pub fn warning(mut self) -> Self {
        self.severity = Severity::Warning;
        self
    }

    pub fn json(&self) -> JsonDiagnostic<'_> {
        JsonDiagnostic {
            severity: self.severity,
            file: self.file.display().to_string(),
            line: self.location.map(|(l, _)| l),
            column: self.location.map(|(_, c)| c),
            stage: self.stage.as_deref(),
            message: &self.message,
            help: self.help.as_deref(),
        }
    }
}

/// The largest char boundary of `s` at or below `i` (spans come from the
/// parser or from searches in the text, but a location must never panic).
fn floor_char_boundary(s: &str, i: usize) -> usize {
    let mut i = i.min(s.len());
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

/// The part of a long `line` shown around byte `at`: the text (with `…`
/// where it is cut), where `at` is in it (in characters), and the byte in
/// `line` where the shown part ends. A file may be one long line with many
/// problems: each shows a bounded window.
fn excerpt(line: &str, at: usize) -> (String, usize, usize) {
    const BEFORE: usize = 40;
    const AFTER: usize = 80;
    if line.len() <= BEFORE + AFTER {
        return (line.to_string(), line[..at].chars().count(), line.len());
    }
    let mut start = at;
    let mut before = 0;
    for (i, _) in line[..at].char_indices().rev().take(BEFORE) {
        start = i;
        before += 1;
    }
    let end = line[at..]
        .char_indices()
        .nth(AFTER)
        .map_or(line.len(), |(i, _)| at + i);
    let cut_start = start > 0;
    let text = format!(
        "{}{}{}",
        if cut_start { "…" } else { "" },
        &line[start..end],
        if end < line.len() { "…" } else { "" }
    );
    (text, before + usize::from(cut_start), end)
}

/// Where the lines of a text start, and how many characters come before
/// every 64th byte: a problem is located in constant time wherever it is,
/// however many there are.
#[derive(Debug, Clone, Default)]
pub struct LineIndex {
    starts: Vec<usize>,
    chars: Vec<usize>,
}

const BLOCK: usize = 64;

/// Whether `b` starts a character (is not a UTF-8 continuation byte).
fn starts_char(b: &u8) -> bool {
    (*b as i8) >= -0x40
}

impl LineIndex {
    pub fn new(text: &str) -> LineIndex {
        let bytes = text.as_bytes();
        let mut starts = vec![0];
        starts.extend(
            bytes
                .iter()
                .enumerate()
                .filter(|(_, b)| **b == b'\n')
                .map(|(i, _)| i + 1),
        );
        let mut chars = Vec::with_capacity(bytes.len() / BLOCK + 1);
        let mut count = 0;
        for block in bytes.chunks(BLOCK) {
            chars.push(count);
            count += block.iter().filter(|b| starts_char(b)).count();
        }
        LineIndex { starts, chars }
    }

    /// Characters of `text` before byte `offset`.
    fn chars_before(&self, text: &str, offset: usize) -> usize {
        let block = offset / BLOCK;
        let base = self.chars.get(block).copied().unwrap_or_default();
        base + text.as_bytes()[block * BLOCK..offset]
            .iter()
            .filter(|b| starts_char(b))
            .count()
    }

    /// 1-based line and column (in characters) of byte `offset`.
    pub fn locate(&self, text: &str, offset: usize) -> (usize, usize) {
        let offset = floor_char_boundary(text, offset);
        let line = self.starts.partition_point(|&s| s <= offset).max(1);
        let start = self.starts[line - 1];
        let col = self.chars_before(text, offset) - self.chars_before(text, start) + 1;
        (line, col)
    }

    /// The text of 1-based `line`, without its line break.
    pub fn line<'t>(&self, text: &'t str, line: usize) -> &'t str {
        let start = self.starts.get(line - 1).copied().unwrap_or(text.len());
        let end = self.starts.get(line).map_or(text.len(), |e| e - 1);
        let line = &text[start.min(end)..end];
        line.strip_suffix('\r').unwrap_or(line)
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{}: {}", self.severity, self.message)?;
        // The width of the line number, so that `|` and `=` line up.
        let mut gutter = " ".to_string();
        match self.location {
            Some((line, col)) => {
                writeln!(f, "  --> {}:{line}:{col}", self.file.display())?;
                if let Some(text) = &self.source_line {
                    gutter = " ".repeat(line.to_string().len());
                    writeln!(f, "{gutter} |")?;
                    writeln!(f, "{line} | {text}")?;
                    writeln!(
                        f,
                        "{gutter} | {}{}",
                        " ".repeat(self.caret),
                        "^".repeat(self.width)
                    )?;
                }
            }
            None => writeln!(f, "  --> {}", self.file.display())?,
        }
        if let Some(help) = &self.help {
            for (i, line) in help.lines().enumerate() {
                let lead = if i == 0 {
                    format!("{gutter} = help: ")
                } else {
                    " ".repeat(gutter.len() + 9)
                };
                let lead = if line.is_empty() {
                    lead.trim_end()
                } else {
                    &lead
                };
                writeln!(f, "{lead}{line}")?;
            }
        }
        Ok(())
    }
}

/// All the problems found in one pipeline, each once, in the order found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Diagnostics(pub Vec<Diagnostic>);

impl Diagnostics {
    /// `found` without repeats: a problem reached by two checks (or by one
    /// check twice) is reported once.
    /// Past [`MAX_SHOWN`], the rest are counted in a last problem placed
    /// at the first of them.
    pub fn new(mut found: Vec<Diagnostic>) -> Diagnostics {
        let mut seen = std::collections::HashSet::new();
        found.retain(|d| seen.insert((d.file.clone(), d.location, d.message.clone())));
        if found.len() > MAX_SHOWN {
            let rest = found.split_off(MAX_SHOWN);
            let more = Diagnostic {
                message: format!(
                    "{} more problems are not shown; this is the first of them",
                    rest.len()
                ),
                help: Some("fix the problems above, then check again".into()),
                stage: None,
                ..rest[0].clone()
            };
            found.push(more);
        }
        Diagnostics(found)
    }

    pub fn errors(&self) -> usize {
        self.0
            .iter()
            .filter(|d| d.severity == Severity::Error)
            .count()
    }

    pub fn has_errors(&self) -> bool {
        self.errors() > 0
    }

    /// The problems as a JSON array (`--json`).
    pub fn to_json(&self) -> String {
        let all: Vec<_> = self.0.iter().map(Diagnostic::json).collect();
        serde_json::to_string_pretty(&all).unwrap_or_else(|_| "[]".into())
    }

    /// Each problem, then `footer` after the count of errors.
    pub fn report(&self, footer: &str) -> String {
        let mut out = String::new();
        for d in &self.0 {
            out.push_str(&d.to_string());
            out.push('\n');
        }
        let n = self.errors();
        out.push_str(&format!(
            "{n} error{}{footer}",
            if n == 1 { "" } else { "s" }
        ));
        out
    }
}

impl fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.report(" in the pipeline file"))
    }
}

impl std::error::Error for Diagnostics {}

/// The most problems reported at once.
pub const MAX_SHOWN: usize = 100;

/// `names` for a hint: the first few, joined.
pub fn list<S: AsRef<str>>(names: impl IntoIterator<Item = S>) -> String {
    const FIRST: usize = 20;
    let mut names = names.into_iter();
    let mut shown: Vec<String> = names
        .by_ref()
        .take(FIRST)
        .map(|n| n.as_ref().to_string())
        .collect();
    let rest = names.count();
    if rest > 0 {
        shown.push(format!("… ({rest} more)"));
    }
    shown.join(", ")
}

/// The closest of `candidates` to `name`, for "did you mean" hints.
pub fn closest<'a>(name: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    // The distance costs the product of the lengths: names this long are
    // not typos of each other anyway.
    const LONGEST: usize = 100;
    if name.len() > LONGEST {
        return None;
    }
    candidates
        .into_iter()
        .take(1000)
        .filter(|c| c.len() <= LONGEST)
        .map(|c| (strsim::levenshtein(name, c), c))
        .filter(|(d, c)| *d <= 2.max(c.len() / 3))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations_never_panic_on_odd_spans() {
        let text = "a = \"é\"\n";
        let at = |span| Diagnostic::at(Path::new("f"), text, Some(span), "m").location;
        assert_eq!(at(5..6), Some((1, 6)));
        assert_eq!(at(Range { start: 6, end: 5 }), Some((1, 6)));
        assert_eq!(at(100..200), Some((2, 1)));
    }

    #[test]
    fn a_long_line_is_shown_around_the_problem() {
        let text = format!(
            "needs = [{}\"x\"{}]\n",
            "\"é\", ".repeat(100),
            ", \"y\"".repeat(100)
        );
        let at = text.find("\"x\"").unwrap();
        let d = Diagnostic::at(Path::new("f"), &text, Some(at..at + 3), "m");
        assert_eq!(d.location, Some((1, at - 100 + 1)));
        let shown = d.source_line.as_deref().unwrap();
        assert!(shown.starts_with('…') && shown.ends_with('…'), "{shown}");
        let under: String = shown.chars().skip(d.caret).take(d.width).collect();
        assert_eq!(under, "\"x\"");
        assert!(shown.chars().count() < 130, "{shown}");
    }

    #[test]
    fn lines_and_columns_count_characters() {
        let text = "a\r\nbé = 1\n\nz";
        let index = LineIndex::new(text);
        assert_eq!(index.locate(text, 0), (1, 1));
        assert_eq!(index.locate(text, 3), (2, 1));
        assert_eq!(index.locate(text, text.find('=').unwrap()), (2, 4));
        assert_eq!(index.locate(text, text.len()), (4, 2));
        assert_eq!(index.line(text, 1), "a");
        assert_eq!(index.line(text, 3), "");
        let long = "é".repeat(1000) + "x";
        let index = LineIndex::new(&long);
        assert_eq!(index.locate(&long, long.len() - 1), (1, 1001));
    }

    #[test]
    fn each_problem_is_reported_once_and_counted() {
        let d = |m: &str| Diagnostic::at(Path::new("f"), "x\n", Some(0..1), m);
        let all = Diagnostics::new(vec![d("a"), d("b"), d("a"), d("w").warning()]);
        assert_eq!(all.0.len(), 3);
        assert_eq!(all.errors(), 2);
        assert!(all.report("!").ends_with("2 errors!"));
        let json: serde_json::Value = serde_json::from_str(&all.to_json()).unwrap();
        assert_eq!(json[0]["line"], 1);
        assert_eq!(json[0]["column"], 1);
        assert_eq!(json[2]["severity"], "warning");
        assert_eq!(json[2]["stage"], serde_json::Value::Null);
    }
}
