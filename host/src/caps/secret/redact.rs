//! Redaction: every value a run must not show (the secrets its stages
//! received, the values plugins marked sensitive), and the forms a program
//! or a plugin may print it in, replaced by `***` wherever the host writes
//! text: the terminal, stage logs, the audit log, the run store,
//! `outputs.json`, `run.json`.
//!
//! One [`Redactor`] per run, shared by everything that writes; values are
//! added as stages resolve them and kept in memory only (wiped when the
//! run's last copy is dropped). Matches may overlap (two values sharing a
//! part): the union of every match is masked, so no part of one value
//! stays visible next to another's mask. A byte stream written in pieces
//! (plugin stdout, children's output) goes through a [`Stream`], which
//! holds back a piece's end while it could still begin a value.

use std::borrow::Cow;
use std::fmt;
use std::ops::Range;
use std::sync::{Arc, RwLock};

use aho_corasick::{AhoCorasick, MatchKind};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
use zeroize::Zeroizing;

/// What a value is replaced by.
pub const MASK: &str = "***";

/// Values shorter than this are not redacted: masking every `abc` of a
/// run would hide ordinary text and protect nothing (declared secrets that
/// short are refused when they are resolved; see [`super::resolve`]).
pub const MIN_LEN: usize = 4;

/// Lines of a multi-line value (a PEM key) are redacted on their own too,
/// when at least this long: a program may print one line at a time.
const MIN_LINE: usize = 8;

/// A piece of a stream held back beyond this is let through (redacted as
/// far as it is known): only endless overlapping matches get there.
const MAX_HELD: usize = 64 * 1024;

/// Where a value comes from, for messages (never the value itself).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// A secret declared in `[secrets]`.
    Secret(String),
    /// A value the plugin of this stage marked sensitive (WIT
    /// `log.sensitive`, e.g. a Terraform output marked `sensitive`).
    Sensitive { stage: String },
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Secret(name) => write!(f, "secret `{name}`"),
            Origin::Sensitive { stage } => {
                write!(f, "a value the plugin of stage `{stage}` marked sensitive")
            }
        }
    }
}

/// Whether a value was added.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Added {
    Yes,
    /// Already known (the same value under any origin).
    Known,
    /// Shorter than [`MIN_LEN`]: not redacted.
    TooShort,
}

/// The run's redaction: shared by every writer, grown as values become
/// known. Cloning shares it.
#[derive(Clone, Default)]
pub struct Redactor {
    current: Arc<RwLock<Arc<Patterns>>>,
}

impl fmt::Debug for Redactor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Redactor({} values)", self.patterns().values.len())
    }
}

/// The values known at one moment, with every form of each, compiled
/// into one automaton. Immutable: adding a value makes a new one.
pub struct Patterns {
    values: Vec<(Origin, Zeroizing<Vec<u8>>)>,
    /// Every form of every value, and the value it is a form of.
    forms: Vec<(Zeroizing<Vec<u8>>, usize)>,
    /// All forms, matched at once (standard semantics: every overlapping
    /// match can be listed, and files can be scanned as streams).
    automaton: Option<AhoCorasick>,
    /// All forms again, for telling fast whether any is in a text at all
    /// (most text holds none): a vectorised (Teddy) searcher, where the CPU
    /// has one and the forms are few enough. The automaton's own prefilter
    /// looks for bytes that are rare in text, not in the base64 and
    /// percent-encoded forms, and lets the log through at ~150 MB/s.
    any: Option<aho_corasick::packed::Searcher>,
    /// The longest form, in bytes.
    longest: usize,
    /// Bytes that begin some form (to find quickly where a value could
    /// start at the end of a piece).
    first: [bool; 256],
}

impl Redactor {
    /// No value known: everything passes as it is.
    pub fn new() -> Redactor {
        Redactor::default()
    }

    /// Redact `value` (and its forms) from now on.
    pub fn add(&self, origin: Origin, value: &[u8]) -> Added {
        if value.len() < MIN_LEN {
            return Added::TooShort;
        }
        let mut current = self.current.write().expect("redactor lock");
        if current.values.iter().any(|(_, v)| v.as_slice() == value) {
            return Added::Known;
        }
        let mut values: Vec<(Origin, Zeroizing<Vec<u8>>)> = current.values.clone();
        values.push((origin, Zeroizing::new(value.to_vec())));
        *current = Arc::new(Patterns::compile(values));
        Added::Yes
    }

    /// The values known now.
    pub fn patterns(&self) -> Arc<Patterns> {
        self.current.read().expect("redactor lock").clone()
    }

    /// `text` with every known value masked; borrowed when none is in it.
    pub fn redact<'a>(&self, text: &'a str) -> Cow<'a, str> {
        let patterns = self.patterns();
        match patterns.redact_bytes(text.as_bytes()) {
            Cow::Borrowed(_) => Cow::Borrowed(text),
            // Masks replace whole matches; a match cut inside a UTF-8
            // sequence can leave a stray byte, shown as U+FFFD.
            Cow::Owned(bytes) => Cow::Owned(String::from_utf8_lossy(&bytes).into_owned()),
        }
    }

    /// `text` redacted, in place.
    pub fn redact_string(&self, text: &mut String) {
        if let Cow::Owned(redacted) = self.redact(text) {
            *text = redacted;
        }
    }

    /// Every string of `value`, object keys included, redacted; a number
    /// whose digits hold a value becomes the string `***`.
    pub fn redact_json(&self, value: &mut serde_json::Value) {
        let patterns = self.patterns();
        if patterns.is_empty() {
            return;
        }
        patterns.redact_json(value);
    }

    /// Where the first known value in `bytes` comes from, if any.
    pub fn find(&self, bytes: &[u8]) -> Option<Origin> {
        self.patterns().find(bytes)
    }

    /// Whether no value is known.
    pub fn is_empty(&self) -> bool {
        self.patterns().is_empty()
    }

    /// The known values whose origin `keep` accepts (one stage's, for the
    /// search of what it left behind).
    pub fn only(&self, keep: impl Fn(&Origin) -> bool) -> Patterns {
        let values = self
            .patterns()
            .values
            .iter()
            .filter(|(origin, _)| keep(origin))
            .cloned()
            .collect();
        Patterns::compile(values)
    }
}

impl Default for Patterns {
    fn default() -> Patterns {
        Patterns::compile(Vec::new())
    }
}

impl Patterns {
    fn compile(values: Vec<(Origin, Zeroizing<Vec<u8>>)>) -> Patterns {
        let mut forms: Vec<(Zeroizing<Vec<u8>>, usize)> = Vec::new();
        for (index, (_, value)) in values.iter().enumerate() {
            for form in forms_of(value) {
                if !forms.iter().any(|(f, _)| f.as_slice() == form.as_slice()) {
                    forms.push((form, index));
                }
            }
        }
        let automaton = AhoCorasick::builder()
            .match_kind(MatchKind::Standard)
            .build(forms.iter().map(|(f, _)| f.as_slice()))
            .ok();
        let any = aho_corasick::packed::Config::new()
            .builder()
            .extend(forms.iter().map(|(f, _)| f.as_slice()))
            .build();
        let mut first = [false; 256];
        for (f, _) in &forms {
            first[f[0] as usize] = true;
        }
        Patterns {
            longest: forms.iter().map(|(f, _)| f.len()).max().unwrap_or(0),
            values,
            forms,
            automaton,
            any,
            first,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.forms.is_empty()
    }

    /// The origins of the values known.
    pub fn origins(&self) -> impl Iterator<Item = &Origin> {
        self.values.iter().map(|(o, _)| o)
    }

    /// The automaton of every form (standard semantics), for scanning.
    pub fn automaton(&self) -> Option<&AhoCorasick> {
        self.automaton.as_ref()
    }

    /// The origin of the value whose form is pattern `pattern`.
    pub fn origin_of(&self, pattern: usize) -> &Origin {
        &self.values[self.forms[pattern].1].0
    }

    /// The longest form, in bytes.
    pub fn longest(&self) -> usize {
        self.longest
    }

    fn find(&self, bytes: &[u8]) -> Option<Origin> {
        let m = self.automaton.as_ref()?.find(bytes)?;
        Some(self.origin_of(m.pattern().as_usize()).clone())
    }

    /// The places of every match in `hay`, overlapping ones merged, in
    /// order.
    fn spans(&self, hay: &[u8]) -> Vec<Range<usize>> {
        let Some(automaton) = &self.automaton else {
            return Vec::new();
        };
        // A text that holds no form has no match to list.
        if self.any.as_ref().is_some_and(|any| any.find(hay).is_none()) {
            return Vec::new();
        }
        let mut found: Vec<Range<usize>> = automaton
            .find_overlapping_iter(hay)
            .map(|m| m.range())
            .collect();
        found.sort_by_key(|r| (r.start, std::cmp::Reverse(r.end)));
        let mut merged: Vec<Range<usize>> = Vec::new();
        for r in found {
            match merged.last_mut() {
                Some(last) if r.start <= last.end => last.end = last.end.max(r.end),
                _ => merged.push(r),
            }
        }
        merged
    }

    /// `hay` with `spans` (sorted, disjoint, within it) masked.
    fn masked(hay: &[u8], spans: &[Range<usize>]) -> Vec<u8> {
        let mut out = Vec::with_capacity(hay.len());
        let mut at = 0;
        for span in spans {
            out.extend_from_slice(&hay[at..span.start]);
            out.extend_from_slice(MASK.as_bytes());
            at = span.end;
        }
        out.extend_from_slice(&hay[at..]);
        out
    }

    /// `hay` with every known value masked; borrowed when none is in it.
    pub fn redact_bytes<'a>(&self, hay: &'a [u8]) -> Cow<'a, [u8]> {
        let spans = self.spans(hay);
        if spans.is_empty() {
            Cow::Borrowed(hay)
        } else {
            Cow::Owned(Self::masked(hay, &spans))
        }
    }

    fn redact_str(&self, text: &mut String) {
        if let Cow::Owned(bytes) = self.redact_bytes(text.as_bytes()) {
            *text = String::from_utf8_lossy(&bytes).into_owned();
        }
    }

    fn redact_json(&self, value: &mut serde_json::Value) {
        use serde_json::Value;
        match value {
            Value::String(s) => self.redact_str(s),
            Value::Number(n) => {
                if self.find(n.to_string().as_bytes()).is_some() {
                    *value = Value::String(MASK.into());
                }
            }
            Value::Array(items) => items.iter_mut().for_each(|v| self.redact_json(v)),
            Value::Object(map) => {
                let entries = std::mem::take(map);
                for (mut key, mut v) in entries {
                    self.redact_str(&mut key);
                    self.redact_json(&mut v);
                    map.insert(key, v);
                }
            }
            Value::Null | Value::Bool(_) => {}
        }
    }

    /// Whether some form begins with `tail` and is longer: more bytes
    /// could make it a match.
    fn could_begin(&self, tail: &[u8]) -> bool {
        self.first[tail[0] as usize]
            && self
                .forms
                .iter()
                .any(|(f, _)| f.len() > tail.len() && f.starts_with(tail))
    }
}

/// Redaction of one byte stream written in pieces (a stage's log): a value
/// cut across two writes is still caught. The end of a piece that could
/// begin a value is held back until the next piece, or [`Stream::flush`],
/// tells.
#[derive(Default)]
pub struct Stream {
    held: Vec<u8>,
}

impl Stream {
    /// What of `bytes` (after what was held) can be written now, redacted;
    /// borrowed when nothing was held and nothing is masked.
    pub fn push<'a>(&mut self, patterns: &Patterns, bytes: &'a [u8]) -> Cow<'a, [u8]> {
        if patterns.is_empty() && self.held.is_empty() {
            return Cow::Borrowed(bytes);
        }
        let held = std::mem::take(&mut self.held);
        let joined;
        let buf: &[u8] = if held.is_empty() {
            bytes
        } else {
            let mut held = held;
            held.extend_from_slice(bytes);
            joined = held;
            &joined
        };
        let spans = patterns.spans(buf);
        // Every value that starts before the last `longest - 1` bytes is
        // wholly in `buf`, so it was found; one that starts after may be
        // completed by the next piece: hold from where one could start.
        let window = buf.len().saturating_sub(patterns.longest.saturating_sub(1));
        let mut cut = (window..buf.len())
            .find(|&i| patterns.could_begin(&buf[i..]))
            .unwrap_or(buf.len());
        // A match across the cut is held whole: a longer or overlapping
        // value may still grow from it.
        if let Some(span) = spans.iter().find(|s| s.start < cut && s.end > cut) {
            cut = span.start;
        }
        if buf.len() - cut > MAX_HELD {
            cut = buf.len();
        }
        let ready: Vec<Range<usize>> = spans.into_iter().filter(|s| s.end <= cut).collect();
        self.held = buf[cut..].to_vec();
        if ready.is_empty() && buf.len() == bytes.len() {
            return Cow::Borrowed(&bytes[..cut]);
        }
        Cow::Owned(Patterns::masked(&buf[..cut], &ready))
    }

    /// Everything held, redacted (the stream ends, or a host line comes).
    pub fn flush(&mut self, patterns: &Patterns) -> Vec<u8> {
        let held = std::mem::take(&mut self.held);
        patterns.redact_bytes(&held).into_owned()
    }

    /// Whether bytes are held back.
    pub fn holds(&self) -> bool {
        !self.held.is_empty()
    }
}

/// The forms a value may be printed in: as it is; each long line of a
/// multi-line value; standard and URL-safe base64, padded and not, also
/// as part of a longer encoded text (at each of the three byte offsets);
/// percent-encoded (`%20` and `+` for spaces, upper- and lower-case hex);
/// escaped in a JSON string (as serde, as ASCII-only encoders with
/// `\uXXXX`, and with `\/`).
pub fn forms_of(value: &[u8]) -> Vec<Zeroizing<Vec<u8>>> {
    let mut out: Vec<Zeroizing<Vec<u8>>> = Vec::new();
    let mut add = |form: Vec<u8>| {
        let form = Zeroizing::new(form);
        if form.len() >= MIN_LEN && !out.contains(&form) {
            out.push(form);
        }
    };
    add(value.to_vec());
    if value.contains(&b'\n') {
        for line in value.split(|b| *b == b'\n') {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            if line.len() >= MIN_LINE {
                add(line.to_vec());
            }
        }
    }
    for engine in [STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD] {
        add(engine.encode(value).into_bytes());
    }
    for engine in [STANDARD_NO_PAD, URL_SAFE_NO_PAD] {
        for offset in 0..3 {
            if let Some(core) = base64_core(&engine, value, offset) {
                add(core);
            }
        }
    }
    let percent = percent_encoding::percent_encode(value, UNRESERVED_KEPT).to_string();
    add(lower_hex_escapes(&percent).into_bytes());
    add(percent.replace("%20", "+").into_bytes());
    add(percent.into_bytes());
    if let Ok(text) = std::str::from_utf8(value) {
        let json = serde_json::to_string(text).expect("a string serializes");
        let json = &json[1..json.len() - 1];
        add(json.replace('/', "\\/").into_bytes());
        add(ascii_json(json).into_bytes());
        add(json.as_bytes().to_vec());
    }
    out
}

/// What percent-encoding leaves as it is: RFC 3986's unreserved characters.
const UNRESERVED_KEPT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// The base64 characters that encode only bytes of `value` when it
/// stands `offset` bytes into a longer text that is encoded: its encoding
/// there, without the characters shared with the bytes around it. `None`
/// when that leaves too little to be told from chance.
fn base64_core(engine: &impl Engine, value: &[u8], offset: usize) -> Option<Vec<u8>> {
    let mut padded = vec![0u8; offset];
    padded.extend_from_slice(value);
    let encoded = engine.encode(&padded).into_bytes();
    // Character i encodes bits [6i, 6i + 6): keep those within the value's.
    let start = (8 * offset).div_ceil(6);
    let end = (8 * (offset + value.len())) / 6;
    (end >= start + 8).then(|| encoded[start..end].to_vec())
}

/// `%2f` for `%2F`: some encoders write lower-case hex.
fn lower_hex_escapes(percent: &str) -> String {
    let mut out = String::with_capacity(percent.len());
    let mut after = 0;
    for c in percent.chars() {
        if c == '%' {
            after = 2;
            out.push(c);
        } else if after > 0 {
            after -= 1;
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

/// A JSON string body with every non-ASCII character as `\uXXXX`
/// (lower-case hex, surrogate pairs above the BMP), as Python's
/// `json.dumps` writes by default.
fn ascii_json(json: &str) -> String {
    let mut out = String::with_capacity(json.len());
    for c in json.chars() {
        if c.is_ascii() {
            out.push(c);
        } else {
            let mut units = [0u16; 2];
            for unit in c.encode_utf16(&mut units) {
                out.push_str(&format!("\\u{unit:04x}"));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn redactor(values: &[&str]) -> Redactor {
        let r = Redactor::new();
        for (i, v) in values.iter().enumerate() {
            r.add(Origin::Secret(format!("s{i}")), v.as_bytes());
        }
        r
    }

    #[test]
    fn every_encoding_of_a_value_is_masked() {
        let value = "pa ss/w+rd:é€😀\"x";
        let r = redactor(&[value]);
        let b = value.as_bytes();
        let json = serde_json::to_string(value).unwrap();
        let encoded = [
            value.to_string(),
            STANDARD.encode(b),
            STANDARD_NO_PAD.encode(b),
            URL_SAFE.encode(b),
            URL_SAFE_NO_PAD.encode(b),
            percent_encoding::utf8_percent_encode(value, percent_encoding::NON_ALPHANUMERIC)
                .to_string()
                .replace("%2D", "-")
                .replace("%2E", ".")
                .replace("%5F", "_")
                .replace("%7E", "~"),
            "pa+ss%2Fw%2Brd%3A%C3%A9%E2%82%AC%F0%9F%98%80%22x".into(),
            "pa%20ss%2fw%2brd%3a%c3%a9%e2%82%ac%f0%9f%98%80%22x".into(),
            json[1..json.len() - 1].to_string(),
            r#"pa ss\/w+rd:\u00e9\u20ac\ud83d\ude00\"x"#.replace("\\/", "/"),
            r#"pa ss\/w+rd:é€😀\"x"#.into(),
        ];
        for form in encoded {
            let text = format!("before {form} after");
            assert_eq!(r.redact(&text), "before *** after", "{form}");
        }
    }

    #[test]
    fn base64_of_a_longer_text_holding_the_value_is_masked_at_every_offset() {
        let value = "correct-horse-battery";
        let r = redactor(&[value]);
        for prefix in ["", "u:", "us:", "use:", "user:"] {
            for suffix in ["", "!", "!!", "!!!"] {
                let whole = format!("{prefix}{value}{suffix}");
                for engine in [STANDARD, URL_SAFE_NO_PAD] {
                    let encoded = engine.encode(&whole);
                    let shown = r.redact(&encoded);
                    assert!(shown.contains(MASK), "{whole}: {encoded} -> {shown}");
                    // At most the characters shared with the bytes around
                    // it (two at each end) and the padding stay.
                    let left = shown.replace(MASK, "");
                    let prefix_chars = (prefix.len() * 8).div_ceil(6);
                    assert!(
                        left.trim_end_matches('=').len() <= prefix_chars + 2 + suffix.len() * 2 + 1,
                        "{whole}: {shown}"
                    );
                }
            }
        }
    }

    #[test]
    fn overlapping_values_leave_no_part_visible() {
        let r = redactor(&["abcdef", "cdefgh", "xyz-long-value"]);
        let table = [
            ("abcdefgh", "***"),
            ("..abcdef..cdefgh..", "..***..***.."),
            ("abcdefabcdef", "***"),
            ("nothing here", "nothing here"),
            ("xyz-long-value and abcdef", "*** and ***"),
        ];
        for (text, want) in table {
            assert_eq!(r.redact(text), want, "{text}");
        }
    }

    #[test]
    fn short_values_and_duplicates_are_not_added() {
        let r = Redactor::new();
        assert_eq!(r.add(Origin::Secret("a".into()), b"abc"), Added::TooShort);
        assert_eq!(r.add(Origin::Secret("a".into()), b"abcd"), Added::Yes);
        assert_eq!(
            r.add(Origin::Sensitive { stage: "s".into() }, b"abcd"),
            Added::Known
        );
        assert_eq!(r.redact("xabcdx abc"), "x***x abc");
        assert!(matches!(r.redact("plain"), Cow::Borrowed(_)));
    }

    #[test]
    fn lines_of_a_multi_line_value_are_masked_alone() {
        let key = "-----BEGIN KEY-----\r\nMIIEvQIBADANBgkqhkiG9w0B\nAQEFAASCBKcwggSjAgEAAoIB\n-----END KEY-----\n";
        let r = redactor(&[key]);
        assert_eq!(r.redact(key), "***");
        assert_eq!(
            r.redact("[info] MIIEvQIBADANBgkqhkiG9w0B\n"),
            "[info] ***\n"
        );
        assert_eq!(r.redact("-----END KEY-----"), "***");
    }

    #[test]
    fn json_strings_keys_and_numbers_are_redacted() {
        let r = redactor(&["t0ps3cret", "31415926"]);
        let mut value = serde_json::json!({
            "t0ps3cret": "x t0ps3cret y",
            "list": ["dDBwczNjcmV0", 31415926, 3141592, true, null],
            "nested": {"k": "t0ps3cret"}
        });
        r.redact_json(&mut value);
        assert_eq!(
            value,
            serde_json::json!({
                "***": "x *** y",
                "list": ["***", "***", 3141592, true, null],
                "nested": {"k": "***"}
            })
        );
    }

    /// Feeds `text` cut at every pair of places, as three writes.
    fn streamed(r: &Redactor, text: &[u8], cuts: (usize, usize)) -> Vec<u8> {
        let patterns = r.patterns();
        let mut stream = Stream::default();
        let mut out = Vec::new();
        let (a, b) = cuts;
        for piece in [&text[..a], &text[a..b], &text[b..]] {
            out.extend_from_slice(&stream.push(&patterns, piece));
        }
        out.extend_from_slice(&stream.flush(&patterns));
        out
    }

    #[test]
    fn a_value_split_across_writes_is_caught() {
        let r = redactor(&["s3cr3t-value", "t-valueXYZ", "zzzz"]);
        for text in [
            &b"say s3cr3t-value now\n"[..],
            b"s3cr3t-valueXYZ!",
            b"czMzcjN0LXZhbHVl and zzzzzzzzz",
            b"no values at all, just text\n",
        ] {
            let whole = r.patterns().redact_bytes(text).into_owned();
            for a in 0..=text.len() {
                for b in a..=text.len() {
                    assert_eq!(
                        streamed(&r, text, (a, b)),
                        whole,
                        "{:?} cut at {a} and {b}",
                        String::from_utf8_lossy(text)
                    );
                }
            }
        }
    }

    #[test]
    fn a_stream_holds_back_only_what_could_begin_a_value() {
        let r = redactor(&["abcdefgh"]);
        let patterns = r.patterns();
        let mut stream = Stream::default();
        assert_eq!(&*stream.push(&patterns, b"line one\n"), b"line one\n");
        assert!(!stream.holds());
        assert_eq!(&*stream.push(&patterns, b"x abc"), b"x ");
        assert!(stream.holds());
        assert_eq!(&*stream.push(&patterns, b"defgh y"), b"*** y");
        assert_eq!(&*stream.push(&patterns, b" abx"), b" abx");
        assert_eq!(stream.flush(&patterns), b"");
        // Nothing known: bytes pass as they are.
        let none = Redactor::new().patterns();
        assert!(matches!(stream.push(&none, b"abc"), Cow::Borrowed(_)));
    }

    #[test]
    fn values_added_later_apply_to_what_is_still_held() {
        let r = redactor(&["first-value"]);
        let mut stream = Stream::default();
        let out = stream.push(&r.patterns(), b"first-v").into_owned();
        r.add(Origin::Sensitive { stage: "s".into() }, b"late-value");
        let mut all = out;
        all.extend_from_slice(&stream.push(&r.patterns(), b"alue late-value"));
        all.extend_from_slice(&stream.flush(&r.patterns()));
        assert_eq!(all, b"*** ***");
    }

    #[test]
    fn the_quick_check_misses_no_text_that_holds_a_form() {
        let r = redactor(&["s3cr3t-value", "t-valueXYZ", "pa ss/w+rd:é€"]);
        let with = r.patterns();
        if cfg!(target_arch = "x86_64") && std::arch::is_x86_feature_detected!("ssse3") {
            assert!(with.any.is_some(), "no vectorised searcher was built");
        }
        let mut without = Patterns::compile(with.values.clone());
        without.any = None;
        let mut pieces: Vec<Vec<u8>> = with.forms.iter().map(|(f, _)| f.to_vec()).collect();
        for form in pieces.clone() {
            pieces.push(form[..form.len() / 2].to_vec());
            pieces.push(form[form.len() / 2..].to_vec());
        }
        pieces.extend([b"plain text ".to_vec(), b"\n".to_vec(), vec![0xff, b'%']]);
        let mut rng = fastrand::Rng::with_seed(1);
        for _ in 0..5000 {
            let mut text = Vec::new();
            for _ in 0..rng.usize(0..12) {
                text.extend_from_slice(&pieces[rng.usize(..pieces.len())]);
            }
            assert_eq!(
                with.spans(&text),
                without.spans(&text),
                "{:?}",
                String::from_utf8_lossy(&text)
            );
        }
    }

    #[test]
    fn find_names_the_origin_never_the_value() {
        let r = Redactor::new();
        r.add(Origin::Secret("token".into()), b"tok-123456");
        r.add(
            Origin::Sensitive {
                stage: "apply".into(),
            },
            b"db-password",
        );
        assert_eq!(
            r.find(b"x dG9rLTEyMzQ1Ng== y"),
            Some(Origin::Secret("token".into()))
        );
        assert_eq!(
            r.find(b"db-password").map(|o| o.to_string()),
            Some("a value the plugin of stage `apply` marked sensitive".into())
        );
        assert_eq!(r.find(b"nothing"), None);
    }
}
