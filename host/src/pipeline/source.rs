//! Where every key and value of the pipeline file stands, so that a problem
//! found after parsing (by the validator, a plugin's config schema, a grant
//! check) points at its line and column.

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

use indexmap::IndexMap;
use toml::de::{DeTable, DeValue};

use super::diag::{Diagnostic, LineIndex};

/// The text of a pipeline file and the places of its keys and values.
pub struct SourceMap {
    /// The path as given on the command line (shown in messages).
    pub file: PathBuf,
    pub text: String,
    lines: LineIndex,
    root: Node,
}

/// Which place of an entry: `key = …` or `… = value`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    Key,
    Value,
}

struct Node {
    /// Where the key is (`None` for the document and array items).
    key: Option<Range<usize>>,
    value: Range<usize>,
    kids: Kids,
}

enum Kids {
    Leaf,
    Table(IndexMap<String, Node>),
    Array(Vec<Node>),
}

impl fmt::Debug for SourceMap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SourceMap({})", self.file.display())
    }
}

impl SourceMap {
    /// The places of `text`; a text that is not TOML has no places inside
    /// (each lookup then falls back to the start of the file).
    pub fn new(file: &Path, text: String) -> SourceMap {
        let root = match DeTable::parse(&text) {
            Ok(table) => {
                let span = table.span();
                node(None, span, &DeValue::Table(table.into_inner()))
            }
            Err(_) => Node {
                key: None,
                value: 0..0,
                kids: Kids::Leaf,
            },
        };
        SourceMap {
            file: file.to_path_buf(),
            lines: LineIndex::new(&text),
            text,
            root,
        }
    }

    /// 1-based line and column of the entry at `path` (or the nearest
    /// entry that holds it).
    pub fn line_col<S: AsRef<str>>(&self, path: &[S], part: Part) -> (usize, usize) {
        let at = self.nearest(path, part).start;
        self.lines.locate(&self.text, at)
    }

    /// The place of the entry at `path` (keys of tables, indexes of arrays
    /// as decimal text), if the file has it.
    pub fn span<S: AsRef<str>>(&self, path: &[S], part: Part) -> Option<Range<usize>> {
        let (found, depth) = self.walk(path);
        (depth == path.len()).then(|| found.place(part))
    }

    /// The place of the entry at `path`, or of the nearest entry that holds
    /// it (a key that is missing is reported where it belongs).
    pub fn nearest<S: AsRef<str>>(&self, path: &[S], part: Part) -> Range<usize> {
        let (found, depth) = self.walk(path);
        if depth == path.len() {
            found.place(part)
        } else {
            found.place(Part::Key)
        }
    }

    /// A problem at `path`, located at its nearest place.
    pub fn error<S: AsRef<str>>(
        &self,
        path: &[S],
        part: Part,
        message: impl Into<String>,
    ) -> Diagnostic {
        self.error_at(Some(self.nearest(path, part)), message)
    }

    /// A problem at `span` of the text (`None`: the file as a whole).
    pub fn error_at(&self, span: Option<Range<usize>>, message: impl Into<String>) -> Diagnostic {
        Diagnostic::indexed(&self.file, &self.text, &self.lines, span, message)
    }

    /// Where `needle` stands inside `within` (for a caret under part of a
    /// string value), or `within` itself when it is not written there as it
    /// is (escapes).
    pub fn narrow(&self, within: Range<usize>, needle: &str) -> Range<usize> {
        self.text
            .get(within.clone())
            .and_then(|hay| hay.find(needle))
            .map(|i| within.start + i..within.start + i + needle.len())
            .unwrap_or(within)
    }

    /// The deepest node along `path`, and how many segments it matched.
    fn walk<S: AsRef<str>>(&self, path: &[S]) -> (&Node, usize) {
        let mut at = &self.root;
        for (depth, segment) in path.iter().enumerate() {
            let next = match &at.kids {
                Kids::Table(entries) => entries.get(segment.as_ref()),
                Kids::Array(items) => segment
                    .as_ref()
                    .parse::<usize>()
                    .ok()
                    .and_then(|i| items.get(i)),
                Kids::Leaf => None,
            };
            match next {
                Some(n) => at = n,
                None => return (at, depth),
            }
        }
        (at, path.len())
    }
}

impl Node {
    fn place(&self, part: Part) -> Range<usize> {
        match (part, &self.key) {
            (Part::Key, Some(key)) => key.clone(),
            _ => self.value.clone(),
        }
    }
}

fn node(key: Option<Range<usize>>, value: Range<usize>, de: &DeValue<'_>) -> Node {
    let kids = match de {
        DeValue::Table(table) => Kids::Table(
            table
                .iter()
                .map(|(k, v)| {
                    let n = node(Some(k.span()), v.span(), v.get_ref());
                    (k.get_ref().to_string(), n)
                })
                .collect(),
        ),
        DeValue::Array(items) => Kids::Array(
            items
                .iter()
                .map(|v| node(None, v.span(), v.get_ref()))
                .collect(),
        ),
        _ => Kids::Leaf,
    };
    Node { key, value, kids }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "[pipeline]\nname = \"p\"\n[stages.a]\nplugin = \"x\"\nwith = { message = \"hi\", n.m = [1, {z = 2}] }\n[[stages.a.grants.exec]]\nprogram = \"echo\"\n";

    fn at(map: &SourceMap, span: Range<usize>) -> &str {
        &map.text[span]
    }

    #[test]
    fn finds_keys_values_and_array_items() {
        let map = SourceMap::new(Path::new("p.toml"), TEXT.into());
        let key = map
            .span(&["stages", "a", "with", "message"], Part::Key)
            .unwrap();
        assert_eq!(at(&map, key), "message");
        let value = map
            .span(&["stages", "a", "with", "n", "m", "1", "z"], Part::Value)
            .unwrap();
        assert_eq!(at(&map, value), "2");
        let program = map
            .span(
                &["stages", "a", "grants", "exec", "0", "program"],
                Part::Value,
            )
            .unwrap();
        assert_eq!(at(&map, program), "\"echo\"");
        assert_eq!(map.span(&["stages", "a", "with", "nope"], Part::Key), None);
    }

    #[test]
    fn a_missing_entry_is_placed_at_what_holds_it() {
        let map = SourceMap::new(Path::new("p.toml"), TEXT.into());
        let near = map.nearest(&["stages", "a", "with", "nope", "deeper"], Part::Value);
        assert_eq!(at(&map, near), "with");
        let d = map.error(&["stages", "a", "with", "nope"], Part::Key, "m");
        assert_eq!(d.location, Some((5, 1)));
    }

    #[test]
    fn narrows_to_a_part_of_a_value_when_written_as_is() {
        let map = SourceMap::new(Path::new("p.toml"), TEXT.into());
        let value = map
            .span(&["stages", "a", "with", "message"], Part::Value)
            .unwrap();
        assert_eq!(at(&map, map.narrow(value.clone(), "i")), "i");
        assert_eq!(at(&map, map.narrow(value, "\\u0069")), "\"hi\"");
    }

    #[test]
    fn text_that_is_not_toml_places_everything_at_the_start() {
        let map = SourceMap::new(Path::new("p.toml"), "[pipeline\n".into());
        assert_eq!(map.nearest(&["stages", "a"], Part::Key), 0..0);
        assert_eq!(map.error(&["x"], Part::Key, "m").location, Some((1, 1)));
    }
}
