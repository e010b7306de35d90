//! The stage log as it was written before its fast path (byte by byte:
//! every write decoded, every line start looked at), kept as the oracle
//! the sink is compared with: for any writes, host lines, counts, flushes
//! and cap, the file, the tail and the counts must come out byte for byte
//! the same.

use super::*;

/// The old `Inner`, keeping the file in memory; no live echo.
struct Oracle {
    file: Vec<u8>,
    written: u64,
    cap: u64,
    exceeded: bool,
    fresh: bool,
    blank: bool,
    tail: Vec<u8>,
    carry: Vec<u8>,
    redactor: Redactor,
    stream: redact::Stream,
}

impl Oracle {
    fn new(cap: u64, redactor: Redactor) -> Oracle {
        Oracle {
            file: Vec::new(),
            written: 0,
            cap,
            exceeded: false,
            fresh: true,
            blank: true,
            tail: Vec::new(),
            carry: Vec::new(),
            redactor,
            stream: redact::Stream::default(),
        }
    }

    fn write(&mut self, bytes: &[u8]) -> Result<(), OutputLimit> {
        let patterns = self.redactor.patterns();
        let bytes = self.stream.push(&patterns, bytes).into_owned();
        self.keep_plugin_bytes(&bytes)
    }

    fn count(&mut self, bytes: &[u8]) -> Result<(), OutputLimit> {
        self.put(bytes, false)
    }

    fn flush(&mut self) {
        self.release_held();
    }

    fn line(&mut self, text: &str) {
        self.release_held();
        let text = self.redactor.redact(text).into_owned();
        let text = crate::text::inline(&text);
        let mut line = String::with_capacity(text.len() + 2);
        for b in std::mem::take(&mut self.carry) {
            line.push_str(&format!("\\x{b:02x}"));
            self.fresh = false;
        }
        if !self.fresh {
            line.push('\n');
        }
        line.push_str(&text);
        line.push('\n');
        let _ = self.put(line.as_bytes(), true);
    }

    fn keep_plugin_bytes(&mut self, bytes: &[u8]) -> Result<(), OutputLimit> {
        let text = self.as_text(bytes);
        let bytes = self.neutralise(&text).into_owned();
        self.put(&bytes, true)
    }

    fn release_held(&mut self) {
        if self.stream.holds() {
            let patterns = self.redactor.patterns();
            let held = self.stream.flush(&patterns);
            let _ = self.keep_plugin_bytes(&held);
        }
    }

    fn as_text<'a>(&mut self, bytes: &'a [u8]) -> std::borrow::Cow<'a, [u8]> {
        let plain = |b: &u8| (0x20..0x7f).contains(b) || *b == b'\n' || *b == b'\t';
        if self.carry.is_empty() && bytes.iter().all(plain) {
            return std::borrow::Cow::Borrowed(bytes);
        }
        let mut input = std::mem::take(&mut self.carry);
        input.extend_from_slice(bytes);
        let mut out = Vec::with_capacity(input.len() + 16);
        let mut rest = input.as_slice();
        loop {
            let (valid, error) = match std::str::from_utf8(rest) {
                Ok(text) => (text, None),
                Err(e) => (
                    std::str::from_utf8(&rest[..e.valid_up_to()]).expect("checked prefix"),
                    Some(e),
                ),
            };
            out.extend_from_slice(old_block(valid).as_bytes());
            let Some(e) = error else { break };
            let after = &rest[e.valid_up_to()..];
            match e.error_len() {
                None => {
                    self.carry = after.to_vec();
                    break;
                }
                Some(n) => {
                    for b in &after[..n] {
                        out.extend_from_slice(format!("\\x{b:02x}").as_bytes());
                    }
                    rest = &after[n..];
                }
            }
        }
        std::borrow::Cow::Owned(out)
    }

    fn neutralise<'a>(&self, bytes: &'a [u8]) -> std::borrow::Cow<'a, [u8]> {
        let starts = self.blank.then_some(0).into_iter().chain(
            bytes
                .iter()
                .enumerate()
                .filter(|(_, b)| **b == b'\n')
                .map(|(at, _)| at + 1),
        );
        let mut out: Option<Vec<u8>> = None;
        let mut copied = 0;
        for at in starts {
            if !old_looks_like_host(&bytes[at..]) {
                continue;
            }
            let out = out.get_or_insert_with(|| Vec::with_capacity(bytes.len() + NEUTRAL.len()));
            out.extend_from_slice(&bytes[copied..at]);
            out.extend_from_slice(NEUTRAL);
            copied = at;
        }
        match out {
            None => std::borrow::Cow::Borrowed(bytes),
            Some(mut out) => {
                out.extend_from_slice(&bytes[copied..]);
                std::borrow::Cow::Owned(out)
            }
        }
    }

    fn put(&mut self, bytes: &[u8], keep: bool) -> Result<(), OutputLimit> {
        if self.exceeded {
            return Err(OutputLimit(self.cap));
        }
        let room = self.cap.saturating_sub(self.written) as usize;
        let take = bytes.len().min(room);
        self.written += take as u64;
        if keep {
            let kept = &bytes[..take];
            self.file.extend_from_slice(kept);
            self.tail.extend_from_slice(kept);
            let excess = self.tail.len().saturating_sub(TAIL);
            self.tail.drain(..excess);
            self.track_lines(kept);
        }
        if take < bytes.len() {
            return Err(self.exceed());
        }
        Ok(())
    }

    fn exceed(&mut self) -> OutputLimit {
        self.exceeded = true;
        let cap = self.cap;
        let fresh = if self.fresh { "" } else { "\n" };
        let _ = writeln!(
            self.file,
            "{fresh}[capstan] output limit of {cap} bytes exceeded; the stage is stopped"
        );
        OutputLimit(cap)
    }

    fn track_lines(&mut self, kept: &[u8]) {
        match kept.iter().rposition(|b| *b == b'\n') {
            Some(at) => {
                let rest = &kept[at + 1..];
                self.fresh = rest.is_empty();
                self.blank = rest.iter().all(is_blank);
            }
            None => {
                self.fresh &= kept.is_empty();
                self.blank &= kept.iter().all(is_blank);
            }
        }
    }
}

fn old_looks_like_host(rest: &[u8]) -> bool {
    let end = rest.iter().position(|b| *b == b'\n');
    let line = &rest[..end.unwrap_or(rest.len())];
    let line = &line[line.iter().take_while(|b| is_blank(b)).count()..];
    !line.is_empty()
        && HOST_MARKERS
            .iter()
            .any(|m| line.starts_with(m) || (end.is_none() && m.starts_with(line)))
}

/// `text::block` as it was: every character decoded.
fn old_block(s: &str) -> std::borrow::Cow<'_, str> {
    let kept = |at: usize, c: char| {
        c == '\n' || c == '\t' || (c == '\r' && s.as_bytes().get(at + 1) == Some(&b'\n'))
    };
    if !s
        .char_indices()
        .any(|(at, c)| crate::text::escapes(c) && !kept(at, c))
    {
        return std::borrow::Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 16);
    for (at, c) in s.char_indices() {
        if !crate::text::escapes(c) || kept(at, c) {
            out.push(c);
            continue;
        }
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x80 => out.push_str(&format!("\\x{:02x}", c as u32)),
            c => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
        }
    }
    std::borrow::Cow::Owned(out)
}

/// Pieces random output is made of: plain text (long runs too, past the
/// fast path's blocks), line ends, blanks, host markers whole and cut,
/// controls, escape sequences, multi-byte characters (bidi controls among
/// them) whole and cut, invalid bytes, and the secrets' values.
const PIECES: &[&[u8]] = &[
    b"a",
    b"plain words ",
    b"0123456789 abcdefghijklmnopqrstuvwxyz 0123456789 abcdefghijklmnopqrstuvwxyz",
    b"\n",
    b"\n",
    b"\r\n",
    b"\r",
    b" ",
    b"\t",
    b"[capstan] ",
    b"[cap",
    b"stan]",
    b"$ ",
    b"$",
    b"[",
    b"[info] x",
    b"\x1b[2K",
    b"\x1b",
    b"\x00",
    b"\x7f",
    b"\x07",
    "é".as_bytes(),
    "✓ done".as_bytes(),
    "\u{202e}".as_bytes(),
    "\u{85}".as_bytes(),
    "😀".as_bytes(),
    b"\xc3",
    b"\xe2\x9c",
    b"\x80",
    b"\xf0\x9f",
    b"\x98\x80",
    b"\xff\xfe",
    b"s3cret-value",
    b"s3cr",
    b"et-value",
    b"czNjcmV0LXZhbHVl",
];

/// One call on a sink.
#[derive(Debug)]
enum Call {
    Write(Vec<u8>),
    Count(Vec<u8>),
    Line(String),
    Flush,
}

fn random_output(rng: &mut fastrand::Rng, pieces: usize) -> Vec<u8> {
    let mut out = Vec::new();
    for _ in 0..pieces {
        let piece = PIECES[rng.usize(..PIECES.len())];
        // Sometimes long runs of one piece (long lines, long plain runs).
        let times = if rng.u8(..10) == 0 {
            rng.usize(1..200)
        } else {
            1
        };
        for _ in 0..times {
            out.extend_from_slice(piece);
        }
    }
    out
}

/// Random output cut into random writes, with host lines, counted output
/// and flushes among them.
fn random_calls(rng: &mut fastrand::Rng) -> Vec<Call> {
    let pieces = rng.usize(0..80);
    let output = random_output(rng, pieces);
    let mut calls = Vec::new();
    let mut at = 0;
    while at < output.len() {
        let n = match rng.u8(..4) {
            0 => 1,
            1 => rng.usize(1..8),
            2 => rng.usize(1..100),
            _ => rng.usize(1..5000),
        };
        let end = (at + n).min(output.len());
        calls.push(Call::Write(output[at..end].to_vec()));
        at = end;
        match rng.u8(..30) {
            0 => calls.push(Call::Line("[capstan] host \x1b s3cret-value".into())),
            1 => calls.push(Call::Count(random_output(rng, 3))),
            2 => calls.push(Call::Flush),
            _ => {}
        }
    }
    calls.push(Call::Flush);
    calls
}

/// Runs `calls` on the sink and on the oracle (with the same cap and the
/// same secret, known from the start or not); both say the same after
/// every call. Returns the file.
fn compare(seed: u64, calls: &[Call], cap: u64, secret: bool) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("stage.log");
    let redactor = Redactor::new();
    if secret {
        redactor.add(Origin::Secret("s".into()), b"s3cret-value");
    }
    let sink = LogSink::create(&path, cap, None)
        .unwrap()
        .redacting(redactor.clone());
    let mut oracle = Oracle::new(cap, redactor);
    for (i, call) in calls.iter().enumerate() {
        let (got, want) = match call {
            Call::Write(b) => (sink.write(b).is_ok(), oracle.write(b).is_ok()),
            Call::Count(b) => (sink.count(b.len() as u64).is_ok(), oracle.count(b).is_ok()),
            Call::Line(t) => {
                sink.line(t);
                oracle.line(t);
                (true, true)
            }
            Call::Flush => {
                sink.flush();
                oracle.flush();
                (true, true)
            }
        };
        let file = std::fs::read(&path).unwrap();
        let inner = sink.inner.lock().unwrap();
        let got = (
            got,
            String::from_utf8_lossy(&file),
            &inner.tail,
            &inner.carry,
            (inner.written, inner.exceeded, inner.fresh, inner.blank),
        );
        let want = (
            want,
            String::from_utf8_lossy(&oracle.file),
            &oracle.tail,
            &oracle.carry,
            (oracle.written, oracle.exceeded, oracle.fresh, oracle.blank),
        );
        assert!(
            got == want && file == oracle.file,
            "seed {seed}, cap {cap}, secret {secret}, after call {i} ({call:?}):\n\
             sink:   {got:?}\noracle: {want:?}"
        );
    }
    std::fs::read(&path).unwrap()
}

#[test]
fn the_log_is_byte_for_byte_what_the_byte_by_byte_sink_wrote() {
    for seed in 0..3000u64 {
        let mut rng = fastrand::Rng::with_seed(seed);
        let calls = random_calls(&mut rng);
        let cap = match rng.u8(..4) {
            0 => rng.u64(0..2000),
            _ => 1 << 30,
        };
        compare(seed, &calls, cap, rng.bool());
    }
}

#[test]
fn a_secret_cut_anywhere_across_writes_is_masked() {
    let output: &[u8] = b"[capstan] s3cret-value\n\x1b s3cret-value\r\nx\xc3s3cret-value";
    for a in 0..=output.len() {
        for b in a..=output.len() {
            let calls = [
                Call::Write(output[..a].to_vec()),
                Call::Write(output[a..b].to_vec()),
                Call::Write(output[b..].to_vec()),
                Call::Flush,
            ];
            let file = compare(0, &calls, 1 << 20, true);
            assert!(
                !file.windows(12).any(|w| w == b"s3cret-value"),
                "cut at {a} and {b}: {:?}",
                String::from_utf8_lossy(&file)
            );
        }
    }
}

#[test]
fn block_is_what_it_was() {
    let mut rng = fastrand::Rng::with_seed(7);
    for _ in 0..3000 {
        let bytes = random_output(&mut rng, 30);
        let text = String::from_utf8_lossy(&bytes);
        assert_eq!(crate::text::block(&text), old_block(&text), "{text:?}");
    }
}
