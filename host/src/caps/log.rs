//! The stage log: one file per stage that receives the plugin's `log`
//! records, its stdout/stderr and every child's output, with a cap on the
//! total (the stage's `max_output`). Also the host side of the `log`
//! interface.

use std::borrow::Cow;
use std::fs::File;
use std::io::Write;
use std::path::Path;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use wasmtime::component::Linker;

use crate::bindings::capstan::plugin::log as wit;
use crate::caps::secret::redact::{self, Added, Origin, Redactor};
use crate::caps::state::StageState;
use crate::run::progress::Progress;
use crate::text;

/// Shared handle to one stage's log.
#[derive(Clone)]
pub struct LogSink {
    inner: Arc<Mutex<Inner>>,
}

struct Inner {
    /// `None` for a sink that only counts (e.g. while describing a plugin).
    file: Option<File>,
    written: u64,
    cap: u64,
    exceeded: bool,
    /// The run's display and this stage's name there: whole lines go to it
    /// (its spinner line, and stderr without `-q`).
    live: Option<(Progress, String)>,
    /// Partial line not yet shown.
    pending: Vec<u8>,
    /// The file is at the start of a line (nothing kept yet, or the last
    /// byte kept was `\n`): a host line can be written as it is.
    fresh: bool,
    /// Everything kept since the last line start is spaces or tabs: a
    /// plugin's next bytes may still begin a line that looks like the host's.
    blank: bool,
    /// The last bytes written, to explain a crash (e.g. a panic message).
    tail: Vec<u8>,
    /// The start of a UTF-8 sequence that the next write completes.
    carry: Vec<u8>,
    /// The run's secrets and sensitive values, masked before anything is
    /// kept or shown; `stream` holds back the end of a write that could
    /// begin one, until the next write tells.
    redactor: Redactor,
    stream: redact::Stream,
}

const TAIL: usize = 4096;

/// The stage printed more than its `max_output`.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("output limit of {0} bytes exceeded")]
pub struct OutputLimit(pub u64);

impl LogSink {
    /// Open the log file at `path` for appending (a resumed stage's next
    /// attempt goes after the earlier ones); `cap` counts this attempt only.
    pub fn create(
        path: &Path,
        cap: u64,
        live: Option<(Progress, String)>,
    ) -> std::io::Result<LogSink> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        Ok(Self::with_file(Some(file), cap, live))
    }

    /// A sink that keeps nothing but still enforces `cap`.
    pub fn discard(cap: u64) -> LogSink {
        Self::with_file(None, cap, None)
    }

    fn with_file(file: Option<File>, cap: u64, live: Option<(Progress, String)>) -> LogSink {
        LogSink {
            inner: Arc::new(Mutex::new(Inner {
                file,
                written: 0,
                cap,
                exceeded: false,
                live,
                pending: Vec::new(),
                fresh: true,
                blank: true,
                tail: Vec::new(),
                carry: Vec::new(),
                redactor: Redactor::new(),
                stream: redact::Stream::default(),
            })),
        }
    }

    /// Mask the values `redactor` knows (now and later) in everything
    /// kept: the file, the live echo, the tail.
    pub fn redacting(self, redactor: Redactor) -> LogSink {
        self.inner.lock().expect("log lock").redactor = redactor;
        self
    }

    /// Write what is held back in case it began a secret (the stream ends).
    pub fn flush(&self) {
        let mut inner = self.inner.lock().expect("log lock");
        inner.release_held();
    }

    /// Append plugin bytes (its stdout/stderr, its children's output):
    /// kept as text (control characters and escape sequences written as
    /// visible escapes, so whoever reads the file with any tool sees them
    /// inert) with every line that would pass for a host line neutralised.
    /// Past the cap, write a marker once and refuse.
    pub fn write(&self, bytes: &[u8]) -> Result<(), OutputLimit> {
        let mut inner = self.inner.lock().expect("log lock");
        let patterns = inner.redactor.patterns();
        let bytes = inner.stream.push(&patterns, bytes);
        inner.keep_plugin_bytes(&bytes)
    }

    /// Count `n` bytes against the cap without keeping them (output a
    /// plugin asked not to log).
    pub fn count(&self, n: u64) -> Result<(), OutputLimit> {
        self.inner.lock().expect("log lock").count(n)
    }

    /// Write one line of the host's own (e.g. "$ terraform plan"). It is
    /// always a whole line: it starts on a fresh line if the plugin left a
    /// partial one, and plugin text it quotes cannot break it into more
    /// lines (control characters are escaped, see [`crate::text::inline`]).
    pub fn line(&self, text: &str) {
        let mut inner = self.inner.lock().expect("log lock");
        // Plugin bytes held back come first: the host line ends their stream.
        inner.release_held();
        let text = inner.redactor.redact(text).into_owned();
        let text = crate::text::inline(&text);
        let mut line = String::with_capacity(text.len() + 2);
        // A UTF-8 sequence the plugin left unfinished will not be completed
        // now: show its bytes.
        for b in std::mem::take(&mut inner.carry) {
            line.push_str(&format!("\\x{b:02x}"));
            inner.fresh = false;
        }
        if !inner.fresh {
            line.push('\n');
        }
        line.push_str(&text);
        line.push('\n');
        let _ = inner.put(line.as_bytes());
    }

    /// Whether the cap was hit.
    pub fn exceeded(&self) -> bool {
        self.inner.lock().expect("log lock").exceeded
    }

    /// The last few KiB written, as text.
    pub fn tail(&self) -> String {
        String::from_utf8_lossy(&self.inner.lock().expect("log lock").tail).into_owned()
    }

    /// Bytes written so far.
    pub fn written(&self) -> u64 {
        self.inner.lock().expect("log lock").written
    }

    /// Count `n` bytes the stage caused to be written elsewhere (the audit
    /// lines its requests produce) against the same cap.
    pub fn charge(&self, n: u64) -> Result<(), OutputLimit> {
        let mut inner = self.inner.lock().expect("log lock");
        if inner.exceeded {
            return Err(OutputLimit(inner.cap));
        }
        inner.written = inner.written.saturating_add(n);
        if inner.written > inner.cap {
            return Err(inner.exceed());
        }
        Ok(())
    }
}

/// How the host's own lines in a stage log begin ("[capstan] …" and
/// "$ program args"): a plugin line may not.
const HOST_MARKERS: [&[u8]; 2] = [b"[capstan]", b"$ "];

/// Put before a plugin line that would otherwise pass for a host line.
const NEUTRAL: &[u8] = b"[plugin] ";

fn is_blank(b: &u8) -> bool {
    matches!(b, b' ' | b'\t')
}

/// Whether a plugin line whose bytes, from this write on, are `rest` could
/// pass for a host line: after spaces and tabs it begins with a host marker,
/// or the write ends before that can be told (what came is the start of a
/// marker, and the next write could complete it).
fn looks_like_host(rest: &[u8]) -> bool {
    let end = memchr::memchr(b'\n', rest);
    let line = &rest[..end.unwrap_or(rest.len())];
    let line = &line[line.iter().take_while(|b| is_blank(b)).count()..];
    !line.is_empty()
        && HOST_MARKERS
            .iter()
            .any(|m| line.starts_with(m) || (end.is_none() && m.starts_with(line)))
}

impl Inner {
    /// Plugin bytes, already redacted, kept as inert text.
    fn keep_plugin_bytes(&mut self, bytes: &[u8]) -> Result<(), OutputLimit> {
        let text = self.as_text(bytes);
        let kept = self.neutralise(&text);
        self.put(&kept)
    }

    /// Keep what the redaction stream held back, redacted.
    fn release_held(&mut self) {
        if self.stream.holds() {
            let patterns = self.redactor.patterns();
            let held = self.stream.flush(&patterns);
            let _ = self.keep_plugin_bytes(&held);
        }
    }

    /// `bytes` as inert text: valid UTF-8 through [`text::block`]
    /// (newlines and tabs kept, every other control shown as an escape),
    /// invalid bytes as `\xNN`; a sequence cut at the end of a write is
    /// completed by the next. Runs of plain ASCII (most output) are copied
    /// as they are, found a block of bytes at a time; only what lies
    /// between them is decoded. Borrows plain ASCII text.
    fn as_text<'a>(&mut self, bytes: &'a [u8]) -> Cow<'a, [u8]> {
        let mut carry = std::mem::take(&mut self.carry);
        let mut at = if carry.is_empty() {
            text::plain_len(bytes)
        } else {
            0
        };
        if at == bytes.len() && carry.is_empty() {
            return Cow::Borrowed(bytes);
        }
        let mut out = Vec::with_capacity(bytes.len() + carry.len() + 16);
        out.extend_from_slice(&bytes[..at]);
        while at < bytes.len() || !carry.is_empty() {
            // What needs decoding, with the plain byte after it: an ASCII
            // byte ends any UTF-8 sequence (what follows decodes alone), and
            // tells whether a `\r` before it ends a line.
            let end = bytes[at..]
                .iter()
                .position(|b| text::is_plain(*b))
                .map_or(bytes.len(), |n| at + n + 1);
            if carry.is_empty() {
                self.decode(&bytes[at..end], &mut out);
            } else {
                carry.extend_from_slice(&bytes[at..end]);
                self.decode(&carry, &mut out);
                carry = Vec::new();
            }
            at = end;
            let plain = text::plain_len(&bytes[at..]);
            out.extend_from_slice(&bytes[at..at + plain]);
            at += plain;
        }
        Cow::Owned(out)
    }

    /// `input` decoded onto `out` as [`Inner::as_text`] says; a sequence
    /// it ends in the middle of waits in `carry` for the next write.
    fn decode(&mut self, input: &[u8], out: &mut Vec<u8>) {
        let mut rest = input;
        loop {
            let (valid, error) = match std::str::from_utf8(rest) {
                Ok(text) => (text, None),
                Err(e) => (
                    std::str::from_utf8(&rest[..e.valid_up_to()]).expect("checked prefix"),
                    Some(e),
                ),
            };
            out.extend_from_slice(text::block(valid).as_bytes());
            let Some(e) = error else { break };
            let after = &rest[e.valid_up_to()..];
            match e.error_len() {
                None => {
                    self.carry = after.to_vec();
                    break;
                }
                Some(n) => {
                    for b in &after[..n] {
                        let _ = write!(out, "\\x{b:02x}");
                    }
                    rest = &after[n..];
                }
            }
        }
    }

    /// `bytes` from the plugin with `[plugin] ` put before each line that
    /// would look like the host's. Lines are tracked across writes (`blank`),
    /// so a marker split over two writes is caught too. Only the lines whose
    /// first byte after blanks is `[` or `$` can look like the host's: those
    /// bytes are looked for (a vectorised search), not every line start.
    /// Borrows when no line needs it.
    fn neutralise<'a>(&self, bytes: &'a [u8]) -> Cow<'a, [u8]> {
        let mut out: Option<Vec<u8>> = None;
        let mut copied = 0;
        for hit in memchr::memchr2_iter(b'[', b'$', bytes) {
            let blanks = bytes[..hit]
                .iter()
                .rev()
                .take_while(|b| is_blank(b))
                .count();
            let at = hit - blanks;
            let line_start = match at {
                0 => self.blank,
                _ => bytes[at - 1] == b'\n',
            };
            if !line_start || !looks_like_host(&bytes[at..]) {
                continue;
            }
            let out = out.get_or_insert_with(|| Vec::with_capacity(bytes.len() + NEUTRAL.len()));
            out.extend_from_slice(&bytes[copied..at]);
            out.extend_from_slice(NEUTRAL);
            copied = at;
        }
        match out {
            None => Cow::Borrowed(bytes),
            Some(mut out) => {
                out.extend_from_slice(&bytes[copied..]);
                Cow::Owned(out)
            }
        }
    }

    /// Keep `bytes`, counted against the cap; past it, write a marker
    /// once and refuse.
    fn put(&mut self, bytes: &[u8]) -> Result<(), OutputLimit> {
        if self.exceeded {
            return Err(OutputLimit(self.cap));
        }
        let room = self.cap.saturating_sub(self.written) as usize;
        let take = bytes.len().min(room);
        self.written += take as u64;
        let kept = &bytes[..take];
        if let Some(file) = &mut self.file {
            let _ = file.write_all(kept);
        }
        self.echo_lines(kept);
        self.keep_tail(kept);
        self.track_lines(kept);
        if take < bytes.len() {
            return Err(self.exceed());
        }
        Ok(())
    }

    /// Count `n` bytes not kept against the cap, as [`Inner::put`] does.
    fn count(&mut self, n: u64) -> Result<(), OutputLimit> {
        if self.exceeded {
            return Err(OutputLimit(self.cap));
        }
        let take = n.min(self.cap.saturating_sub(self.written));
        self.written += take;
        if take < n {
            return Err(self.exceed());
        }
        Ok(())
    }

    /// The cap was passed: say so once in the log, on a line of its own.
    fn exceed(&mut self) -> OutputLimit {
        self.exceeded = true;
        let cap = self.cap;
        let fresh = if self.fresh { "" } else { "\n" };
        if let Some(file) = &mut self.file {
            let _ = writeln!(
                file,
                "{fresh}[capstan] output limit of {cap} bytes exceeded; the stage is stopped"
            );
        }
        OutputLimit(cap)
    }

    /// The last [`TAIL`] bytes of what was kept, `kept` included.
    fn keep_tail(&mut self, kept: &[u8]) {
        let kept = &kept[kept.len().saturating_sub(TAIL)..];
        let excess = (self.tail.len() + kept.len()).saturating_sub(TAIL);
        self.tail.drain(..excess);
        self.tail.extend_from_slice(kept);
    }

    /// Where the file stands after `kept` was written: at a line start, and
    /// whether the current line is blank so far.
    fn track_lines(&mut self, kept: &[u8]) {
        match memchr::memrchr(b'\n', kept) {
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

    /// Hand whole lines to the run's display, which escapes them for the
    /// terminal (the file keeps its own inert copy): every line `bytes`
    /// completes, at once; the partial line after them waits for the next.
    fn echo_lines(&mut self, bytes: &[u8]) {
        let Some((progress, stage)) = &self.live else {
            return;
        };
        let Some(last) = memchr::memrchr(b'\n', bytes) else {
            self.pending.extend_from_slice(bytes);
            return;
        };
        let (lines, rest) = bytes.split_at(last + 1);
        if self.pending.is_empty() {
            progress.output(stage, &lossy(lines));
        } else {
            self.pending.extend_from_slice(lines);
            progress.output(stage, &lossy(&self.pending));
            self.pending.clear();
        }
        self.pending.extend_from_slice(rest);
    }
}

/// Text kept in the log as a `str`: it is UTF-8 (see [`Inner::as_text`])
/// unless the cap cut a character. Validated in one pass, not decoded
/// character by character as [`String::from_utf8_lossy`] does.
fn lossy(bytes: &[u8]) -> Cow<'_, str> {
    match std::str::from_utf8(bytes) {
        Ok(text) => Cow::Borrowed(text),
        Err(_) => String::from_utf8_lossy(bytes),
    }
}

/// `LogSink` as the guest's stdout/stderr.
impl wasmtime_wasi::cli::IsTerminal for LogSink {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl wasmtime_wasi::cli::StdoutStream for LogSink {
    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

impl tokio::io::AsyncWrite for LogSink {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Poll::Ready(
            self.write(buf)
                .map(|()| buf.len())
                .map_err(std::io::Error::other),
        )
    }
    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// Host side of `capstan:plugin/log`.
pub struct LogHost {
    pub sink: LogSink,
    /// The run's redactor and this stage's name: values the plugin marks
    /// sensitive are added to it; its warnings and errors become CI
    /// annotations.
    pub redactor: Redactor,
    pub stage: String,
    /// How many values (and bytes) this stage marked sensitive, each
    /// bounded: the redactor is rebuilt for each.
    pub sensitive: (usize, usize),
}

/// The most values one stage may mark sensitive, and their total size.
const MAX_SENSITIVE: (usize, usize) = (1000, 1 << 20);

impl wit::Host for LogHost {
    async fn write(&mut self, level: wit::Level, message: String) -> wasmtime::Result<()> {
        let level = match level {
            wit::Level::Trace => "trace",
            wit::Level::Debug => "debug",
            wit::Level::Info => "info",
            wit::Level::Warn => "warn",
            wit::Level::Error => "error",
        };
        for line in message.lines() {
            self.sink.write(format!("[{level}] {line}\n").as_bytes())?;
        }
        let annotated = match level {
            "warn" => Some(crate::run::github::Level::Warning),
            "error" => Some(crate::run::github::Level::Error),
            _ => None,
        };
        if let Some(annotated) = annotated {
            crate::run::github::logged(&self.stage, annotated, &message);
        }
        Ok(())
    }

    async fn progress(
        &mut self,
        done: u64,
        total: Option<u64>,
        message: String,
    ) -> wasmtime::Result<()> {
        let of = total.map(|t| format!("/{t}")).unwrap_or_default();
        self.sink
            .write(format!("[progress {done}{of}] {message}\n").as_bytes())?;
        Ok(())
    }

    async fn sensitive(&mut self, value: String) -> wasmtime::Result<()> {
        let (count, bytes) = self.sensitive;
        if count >= MAX_SENSITIVE.0 || bytes + value.len() > MAX_SENSITIVE.1 {
            return Err(wasmtime::Error::msg(format!(
                "the plugin marked more than {} values (or {} bytes) sensitive",
                MAX_SENSITIVE.0,
                bytesize::ByteSize(MAX_SENSITIVE.1 as u64)
            )));
        }
        self.sensitive = (count + 1, bytes + value.len());
        let origin = Origin::Sensitive {
            stage: self.stage.clone(),
        };
        if self.redactor.add(origin, value.as_bytes()) == Added::TooShort {
            self.sink.line(&format!(
                "[capstan] a value marked sensitive is shorter than {} bytes: it is not redacted",
                redact::MIN_LEN
            ));
        }
        Ok(())
    }
}

pub fn add_to_linker(linker: &mut Linker<StageState>) -> wasmtime::Result<()> {
    wit::add_to_linker::<StageState, wasmtime::component::HasSelf<LogHost>>(linker, |s| &mut s.log)
}

#[cfg(test)]
mod oracle;

#[cfg(test)]
mod tests {
    use super::*;

    /// One call on the sink: plugin bytes kept (`P`), plugin bytes only
    /// counted (`C`), a host line (`H`).
    enum W {
        /// Plugin text.
        P(&'static str),
        /// Plugin bytes (not necessarily UTF-8).
        B(&'static [u8]),
        /// Counted, not kept.
        C(&'static str),
        /// A host line.
        H(&'static str),
    }
    use W::*;

    fn file_after(calls: &[W]) -> String {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("stage.log");
        let sink = LogSink::create(&path, 1 << 20, None).unwrap();
        for call in calls {
            match call {
                P(s) => sink.write(s.as_bytes()).unwrap(),
                B(b) => sink.write(b).unwrap(),
                C(s) => sink.count(s.len() as u64).unwrap(),
                H(s) => sink.line(s),
            }
        }
        std::fs::read_to_string(&path).unwrap()
    }

    #[test]
    fn plugin_lines_never_pass_for_host_lines() {
        let table: &[(&[W], &str)] = &[
            (&[P("hello\n")], "hello\n"),
            (&[P("[info] fine\n")], "[info] fine\n"),
            (&[P("[capstan] forged\n")], "[plugin] [capstan] forged\n"),
            (&[P("$ rm -rf /\n")], "[plugin] $ rm -rf /\n"),
            (
                &[P("ok\n[capstan] x\n$ y\nz\n")],
                "ok\n[plugin] [capstan] x\n[plugin] $ y\nz\n",
            ),
            (&[P("mid [capstan] $ x\n")], "mid [capstan] $ x\n"),
            (&[P("$5 and $HOME\n")], "$5 and $HOME\n"),
            (&[P("$\n[capstan\n")], "$\n[capstan\n"),
            // A marker split over two writes.
            (
                &[P("[cap"), P("stan] split\n")],
                "[plugin] [capstan] split\n",
            ),
            (&[P("$"), P(" ls\n")], "[plugin] $ ls\n"),
            (&[P("ok\n["), P("capstan]\n")], "ok\n[plugin] [capstan]\n"),
            // A write that ends on the start of a marker is neutralised
            // even if the line turns out not to be one.
            (&[P("[capstan"), P("\n")], "[plugin] [capstan\n"),
            // Indented, and indented across writes.
            (&[P("  [capstan] x\n")], "[plugin]   [capstan] x\n"),
            (
                &[P("  "), P("[capstan] indented\n")],
                "  [plugin] [capstan] indented\n",
            ),
            (&[P("\t$ x\n")], "[plugin] \t$ x\n"),
            (&[P("\n"), P("[capstan]\n")], "\n[plugin] [capstan]\n"),
            (&[P("a"), P("[capstan]\n")], "a[capstan]\n"),
            // Control sequences are written as visible escapes, so no
            // viewer of the file interprets them.
            (&[P("\x1b[2K[capstan] x\n")], "\\x1b[2K[capstan] x\n"),
            (&[P("\r[capstan] x\n")], "\\r[capstan] x\n"),
            (&[P("ok\r\n")], "ok\r\n"),
            (&[P("col\tcol\n")], "col\tcol\n"),
            (&[P("\u{202e}txt\n")], "\\u{202e}txt\n"),
            // A UTF-8 sequence split over two writes, and invalid bytes.
            (&[B(b"caf\xc3"), B(b"\xa9\n")], "caf\u{e9}\n"),
            (&[B(b"bad \xff\xfe!\n")], "bad \\xff\\xfe!\n"),
            // An unfinished sequence before a host line is shown, not lost.
            (
                &[B(b"cut \xe2\x9c"), H("[capstan] next")],
                "cut \\xe2\\x9c\n[capstan] next\n",
            ),
        ];
        for (calls, want) in table {
            assert_eq!(file_after(calls), *want);
        }
    }

    #[test]
    fn host_lines_are_whole_lines() {
        let table: &[(&[W], &str)] = &[
            (&[H("[capstan] start")], "[capstan] start\n"),
            (
                &[H("$ echo hi"), P("hi\n"), H("[capstan] done")],
                "$ echo hi\nhi\n[capstan] done\n",
            ),
            (
                &[P("partial"), H("[capstan] host")],
                "partial\n[capstan] host\n",
            ),
            (&[P("a\nb"), H("$ x")], "a\nb\n$ x\n"),
            (&[P("  "), H("$ x")], "  \n$ x\n"),
            // Output only counted is not in the file: the line is still open.
            (&[P("x"), C("y\n"), H("h")], "x\nh\n"),
            (&[C("y"), H("h")], "h\n"),
            // Plugin text a host line quotes cannot add lines to it.
            (
                &[H("[capstan] denied: `sh\n[capstan] ok`")],
                "[capstan] denied: `sh\\n[capstan] ok`\n",
            ),
            (&[H("$ echo a\rb\x1b[2J")], "$ echo a\\rb\\x1b[2J\n"),
        ];
        for (calls, want) in table {
            assert_eq!(file_after(calls), *want);
        }
    }

    #[test]
    fn ordinary_output_is_not_copied() {
        let sink = LogSink::discard(1 << 20);
        let inner = sink.inner.lock().unwrap();
        for bytes in [&b"plain\n"[..], b"a\nb\nc", b"", b"[info] x\n", b"$5\n"] {
            assert!(matches!(
                inner.neutralise(bytes),
                std::borrow::Cow::Borrowed(_)
            ));
        }
    }

    #[test]
    fn the_prefix_counts_against_the_cap() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("stage.log");
        let sink = LogSink::create(&path, 12, None).unwrap();
        assert!(sink.write(b"[capstan]\n").is_err());
        assert!(sink.exceeded());
        assert_eq!(sink.written(), 12);
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "[plugin] [ca\n[capstan] output limit of 12 bytes exceeded; the stage is stopped\n"
        );
    }

    #[test]
    fn secrets_are_masked_in_the_file_and_the_tail_even_split_across_writes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("stage.log");
        let redactor = Redactor::new();
        let sink = LogSink::create(&path, 1 << 20, None)
            .unwrap()
            .redacting(redactor.clone());
        sink.write(b"before it is known: hunter2-secret\n").unwrap();
        redactor.add(Origin::Secret("t".into()), b"hunter2-secret");
        sink.write(b"token: hunt").unwrap();
        sink.write(b"er2-secret\nnext ").unwrap();
        // A host line ends the plugin's stream: what was held comes first.
        sink.write(b"hunter2").unwrap();
        sink.line("[capstan] denied: `echo hunter2-secret`");
        sink.write(b"aHVudGVyMi1zZWNyZXQ=").unwrap();
        sink.write(b" and \"hunter2-secret\"").unwrap();
        sink.flush();
        let file = std::fs::read_to_string(&path).unwrap();
        assert_eq!(
            file,
            "before it is known: hunter2-secret\ntoken: ***\nnext hunter2\n[capstan] denied: `echo ***`\n*** and \"***\""
        );
        assert!(!sink.tail().contains("hunter2-secret\nnext"));
        assert_eq!(sink.written(), file.len() as u64);
    }

    #[test]
    fn the_limit_marker_is_a_whole_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("stage.log");
        let sink = LogSink::create(&path, 4, None).unwrap();
        sink.write(b"abc\n").unwrap();
        assert!(sink.write(b"x").is_err());
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "abc\n[capstan] output limit of 4 bytes exceeded; the stage is stopped\n"
        );
    }
}
