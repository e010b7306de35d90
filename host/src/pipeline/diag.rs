//! Errors in a pipeline file, located by file, line and column, with a hint
//! saying how to fix them.

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

/// One problem in a pipeline file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub file: PathBuf,
    /// 1-based line and column of the problem, when it has a place.
    pub location: Option<(usize, usize)>,
    /// The offending source line, for display.
    pub source_line: Option<String>,
    /// Width of the underline under `source_line`.
    pub width: usize,
    pub message: String,
    pub help: Option<String>,
}

impl Diagnostic {
    /// A problem at `span` (byte offsets) of `source`.
    pub fn at(
        file: &Path,
        source: &str,
        span: Option<Range<usize>>,
        message: impl Into<String>,
    ) -> Self {
        let (location, source_line, width) = match span {
            Some(span) => {
                let (line, col) = line_col(source, span.start);
                let text = source.lines().nth(line - 1).unwrap_or("").to_string();
                let width = source[span.start..span.end.min(source.len())]
                    .lines()
                    .next()
                    .map_or(1, |s| s.chars().count().max(1));
                (Some((line, col)), Some(text), width)
            }
            None => (None, None, 0),
        };
        Diagnostic {
            file: file.to_path_buf(),
            location,
            source_line,
            width,
            message: message.into(),
            help: None,
        }
    }

    /// A problem of the file as a whole.
    pub fn file(file: &Path, message: impl Into<String>) -> Self {
        Self::at(file, "", None, message)
    }

    pub fn help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }
}

/// 1-based line and column (in characters) of a byte offset.
pub fn line_col(source: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(source.len());
    let before = &source[..offset];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().unwrap_or("").chars().count() + 1;
    (line, col)
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "error: {}", self.message)?;
        match self.location {
            Some((line, col)) => {
                writeln!(f, "  --> {}:{line}:{col}", self.file.display())?;
                if let Some(text) = &self.source_line {
                    let gutter = " ".repeat(line.to_string().len());
                    writeln!(f, "{gutter} |")?;
                    writeln!(f, "{line} | {text}")?;
                    writeln!(
                        f,
                        "{gutter} | {}{}",
                        " ".repeat(col - 1),
                        "^".repeat(self.width)
                    )?;
                }
            }
            None => writeln!(f, "  --> {}", self.file.display())?,
        }
        if let Some(help) = &self.help {
            for (i, line) in help.lines().enumerate() {
                let lead = if i == 0 { "  = help: " } else { "          " };
                writeln!(f, "{lead}{line}")?;
            }
        }
        Ok(())
    }
}

/// All the problems found in one pipeline file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostics(pub Vec<Diagnostic>);

impl fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, d) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{d}")?;
        }
        let n = self.0.len();
        write!(
            f,
            "\n{n} error{} in the pipeline file",
            if n == 1 { "" } else { "s" }
        )
    }
}

impl std::error::Error for Diagnostics {}

/// The closest of `candidates` to `name`, for "did you mean" hints.
pub fn closest<'a>(name: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    candidates
        .into_iter()
        .map(|c| (strsim::levenshtein(name, c), c))
        .filter(|(d, c)| *d <= 2.max(c.len() / 3))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}
