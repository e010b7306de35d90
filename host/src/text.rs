//! Plugin text made safe for a terminal.
//!
//! Anything a plugin says (summaries, failure reasons, log lines, outputs,
//! approval subjects and details, audit details) is data. Before it reaches
//! a terminal it goes through [`inline`] (one-line contexts) or [`block`]
//! (multi-line contexts), which show every control character, escape
//! sequence and invisible bidi/format control as a visible escape (`\x1b`,
//! `\r`, `\u{202e}`), so that nothing a plugin prints is interpreted by the
//! terminal: no cursor movement, no clearing the screen, no text hidden or
//! reordered, and no line of its own that looks like one of the host's.
//! JSON output and the run store keep the raw text (serde escapes it).
//!
//! A backslash is not escaped. What matters is that nothing is *interpreted*,
//! and a literal `\x1b` a plugin prints is inert text whether or not it can
//! be told apart from an escaped ESC. Leaving `\` alone keeps paths, regexes
//! and Windows-style text readable, and makes escaping idempotent: text that
//! went through [`inline`] once (e.g. a host line in the stage log that
//! quotes plugin text) is unchanged by a second pass when it is displayed.

use std::borrow::Cow;
use std::fmt::Write;

/// `s` for a one-line context: every control character, including `\n`,
/// `\r` and `\t`, shown as a visible escape. Borrows when there is nothing
/// to escape.
///
/// ```
/// use capstan::text::inline;
/// assert_eq!(inline("plan: 3 to add"), "plan: 3 to add");
/// assert_eq!(inline("ok\n\x1b[2J"), r"ok\n\x1b[2J");
/// ```
pub fn inline(s: &str) -> Cow<'_, str> {
    escape(s, false)
}

/// `s` for a multi-line context: like [`inline`], but `\n` (and `\r\n`)
/// stay line breaks and tabs stay tabs (tool output aligns columns with
/// them, and a tab moves the cursor only forward). A lone `\r` is escaped:
/// it would return the cursor to the start of the line and let the rest
/// overwrite what came before.
///
/// ```
/// use capstan::text::block;
/// assert_eq!(block("line 1\nline 2\n"), "line 1\nline 2\n");
/// assert_eq!(block("50%\r100%\n"), "50%\\r100%\n");
/// ```
pub fn block(s: &str) -> Cow<'_, str> {
    escape(s, true)
}

/// Whether [`inline`] shows `c` as an escape: C0 and C1 controls and DEL
/// (`char::is_control`), and the invisible characters that reorder or hide
/// text (bidi embeddings, overrides and isolates, zero-width characters,
/// line/paragraph separators, the byte-order mark).
pub fn escapes(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{061C}'              // arabic letter mark (bidi)
            | '\u{200B}'..='\u{200F}' // zero-width space/joiners, LRM, RLM
            | '\u{2028}' | '\u{2029}' // line and paragraph separators
            | '\u{202A}'..='\u{202E}' // bidi embeddings and overrides
            | '\u{2060}'..='\u{2064}' // word joiner, invisible operators
            | '\u{2066}'..='\u{2069}' // bidi isolates
            | '\u{206A}'..='\u{206F}' // deprecated format controls
            | '\u{FEFF}' // byte-order mark / zero-width no-break space
        )
}

/// How many bytes `bytes` begins with that are printable ASCII, `\n` or
/// `\t`: text [`block`] leaves as it is without decoding it (a `\r` is not
/// counted: whether it stays depends on the byte after it). Checked 32
/// bytes at a time, without a branch per byte, so the compiler vectorises
/// it (with AVX2 where the CPU has it): the common case of plain text is
/// about as fast as copying it.
pub fn plain_len(bytes: &[u8]) -> usize {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU has AVX2.
        return unsafe { plain_len_avx2(bytes) };
    }
    plain_len_blocks(bytes)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn plain_len_avx2(bytes: &[u8]) -> usize {
    plain_len_blocks(bytes)
}

#[inline(always)]
fn plain_len_blocks(bytes: &[u8]) -> usize {
    let (blocks, _) = bytes.as_chunks::<32>();
    let clean = blocks
        .iter()
        .take_while(|block| block.iter().fold(true, |all, b| all & is_plain(*b)))
        .count();
    let at = clean * 32;
    at + bytes[at..]
        .iter()
        .position(|b| !is_plain(*b))
        .unwrap_or(bytes.len() - at)
}

/// Whether `b` is printable ASCII, `\n` or `\t` (see [`plain_len`]).
#[inline(always)]
pub fn is_plain(b: u8) -> bool {
    // `|`, not `||`: no branch, for the vectorised loop above.
    (b.wrapping_sub(0x20) < 0x5f) | (b == b'\n') | (b == b'\t')
}

fn escape(s: &str, keep_newlines: bool) -> Cow<'_, str> {
    // `\n` and `\t` are kept in a block, and `\r` too when it ends a line
    // (`\r\n`).
    let kept = |at: usize, c: char| {
        keep_newlines
            && (c == '\n' || c == '\t' || (c == '\r' && s.as_bytes().get(at + 1) == Some(&b'\n')))
    };
    // A block's plain start (often all of it) is not decoded character by
    // character.
    let skip = if keep_newlines {
        plain_len(s.as_bytes())
    } else {
        0
    };
    let Some(first) = s[skip..]
        .char_indices()
        .find(|&(at, c)| escapes(c) && !kept(skip + at, c))
        .map(|(at, _)| skip + at)
    else {
        return Cow::Borrowed(s);
    };
    let mut out = String::with_capacity(s.len() + 16);
    out.push_str(&s[..first]);
    for (at, c) in s[first..].char_indices() {
        if !escapes(c) || kept(first + at, c) {
            out.push(c);
            continue;
        }
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x80 => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c => {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
        }
    }
    Cow::Owned(out)
}

/// `text` on one line for a table cell, cut at `max` characters (the full
/// text is in the store): runs of spaces become one, and control
/// characters inside it (line breaks too) are shown escaped, never
/// interpreted (see [`crate::text::inline`]).
pub fn one_line(text: &str, max: usize) -> String {
    let line = text
        .trim()
        .split(|c: char| c.is_whitespace() && !escapes(c))
        .filter(|word| !word.is_empty())
        .collect::<Vec<_>>()
        .join(" ");
    match line.char_indices().nth(max) {
        Some((at, _)) => format!("{}…", inline(&line[..at])),
        None => inline(&line).into_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BOTH: &[(&str, &str)] = &[
        ("", ""),
        ("plain text", "plain text"),
        ("ünïcödé ✓ ✗ ⏸ — 日本語 👍", "ünïcödé ✓ ✗ ⏸ — 日本語 👍"),
        (r"C:\path\x1b stays", r"C:\path\x1b stays"),
        ("\x1b[2J\x1b[H", r"\x1b[2J\x1b[H"),
        ("\x1b]0;title\x07", r"\x1b]0;title\x07"),
        ("bell\x07 nul\0 del\x7f", r"bell\x07 nul\x00 del\x7f"),
        ("csi\u{9b}31m", r"csi\u{9b}31m"),
        ("c1 \u{80}\u{85}\u{9f}", r"c1 \u{80}\u{85}\u{9f}"),
        ("admin\u{202e}txt.exe", r"admin\u{202e}txt.exe"),
        (
            "\u{202a}\u{202b}\u{202c}\u{202d}",
            r"\u{202a}\u{202b}\u{202c}\u{202d}",
        ),
        (
            "\u{2066}\u{2067}\u{2068}\u{2069}",
            r"\u{2066}\u{2067}\u{2068}\u{2069}",
        ),
        (
            "zero\u{200b}width\u{200d}\u{200e}\u{200f}",
            r"zero\u{200b}width\u{200d}\u{200e}\u{200f}",
        ),
        ("\u{feff}bom", r"\u{feff}bom"),
        ("sep\u{2028}\u{2029}", r"sep\u{2028}\u{2029}"),
        ("end\r", r"end\r"),
        ("50%\r100%", r"50%\r100%"),
    ];

    #[test]
    fn inline_escapes_every_control() {
        let table: &[(&str, &str)] = &[
            ("two\nlines", r"two\nlines"),
            ("tab\there", r"tab\there"),
            ("crlf\r\n", r"crlf\r\n"),
            (
                "ok\n✓ deploy (0.1s): forged",
                r"ok\n✓ deploy (0.1s): forged",
            ),
        ];
        for (input, want) in BOTH.iter().chain(table) {
            assert_eq!(inline(input), *want, "inline({input:?})");
        }
    }

    #[test]
    fn block_keeps_line_breaks_and_tabs_only() {
        let table: &[(&str, &str)] = &[
            ("two\nlines\n", "two\nlines\n"),
            ("col\tcol\n", "col\tcol\n"),
            ("crlf\r\nline\r\n", "crlf\r\nline\r\n"),
            ("lone\rcr\n", "lone\\rcr\n"),
            ("cr\r\r\n", "cr\\r\r\n"),
            ("\n\n", "\n\n"),
            ("ok\n\x1b[1A\x1b[2K✓ deploy", "ok\n\\x1b[1A\\x1b[2K✓ deploy"),
        ];
        for (input, want) in BOTH.iter().chain(table) {
            assert_eq!(block(input), *want, "block({input:?})");
        }
    }

    #[test]
    fn nothing_to_escape_borrows() {
        for s in ["", "plain", "ünïcödé ✓", r"back\slash"] {
            assert!(matches!(inline(s), Cow::Borrowed(_)), "{s:?}");
            assert!(matches!(block(s), Cow::Borrowed(_)), "{s:?}");
        }
        assert!(matches!(block("a\nb\r\n"), Cow::Borrowed(_)));
        assert!(matches!(inline("a\nb"), Cow::Owned(_)));
    }

    #[test]
    fn plain_len_stops_at_the_first_byte_that_needs_a_look() {
        let naive = |bytes: &[u8]| {
            bytes
                .iter()
                .position(|b| !((0x20..0x7f).contains(b) || *b == b'\n' || *b == b'\t'))
                .unwrap_or(bytes.len())
        };
        let mut rng = fastrand::Rng::with_seed(3);
        for _ in 0..20_000 {
            let len = rng.usize(0..200);
            let mut bytes: Vec<u8> = (0..len).map(|_| rng.u8(0x20..0x7f)).collect();
            // Now and then one byte anywhere that is not plain (or is).
            if len > 0 && rng.bool() {
                bytes[rng.usize(..len)] = rng.u8(..);
            }
            assert_eq!(plain_len(&bytes), naive(&bytes), "{bytes:?}");
            assert_eq!(plain_len_blocks(&bytes), naive(&bytes), "{bytes:?}");
        }
        for b in 0..=255u8 {
            let bytes = [b' '; 40].iter().copied().chain([b]).collect::<Vec<_>>();
            assert_eq!(plain_len(&bytes), naive(&bytes), "{b:#x}");
        }
    }

    #[test]
    fn escaping_twice_changes_nothing() {
        for (input, _) in BOTH {
            let once = inline(input).into_owned();
            assert_eq!(inline(&once), once);
            assert_eq!(block(&once), once);
        }
    }

    #[test]
    fn output_has_no_character_that_escapes() {
        let all: String = (0u32..0x3000).filter_map(char::from_u32).collect();
        assert!(!inline(&all).chars().any(escapes));
        assert!(
            !block(&all)
                .chars()
                .any(|c| escapes(c) && c != '\n' && c != '\t')
        );
    }
}
