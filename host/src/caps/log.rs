//! The stage log: one file per stage that receives the plugin's `log`
//! records, its stdout/stderr and every child's output, with a cap on the
//! total (the stage's `max_output`). Also the host side of the `log`
//! interface.

use std::fs::File;
use std::io::Write;
use std::path::Path;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use wasmtime::component::Linker;

use crate::runtime::StageState;
use crate::runtime::bindings::capstan::plugin::log as wit;

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
    /// Prefix for echoing to the host's stderr, when live output is on.
    echo: Option<String>,
    /// Partial line not yet echoed.
    pending: Vec<u8>,
    /// The last bytes written, to explain a crash (e.g. a panic message).
    tail: Vec<u8>,
}

const TAIL: usize = 4096;

/// The stage printed more than its `max_output`.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("output limit of {0} bytes exceeded")]
pub struct OutputLimit(pub u64);

impl LogSink {
    /// Open the log file at `path` for appending (a resumed stage's next
    /// attempt goes after the earlier ones); `cap` counts this attempt only.
    pub fn create(path: &Path, cap: u64, echo: Option<String>) -> std::io::Result<LogSink> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        Ok(Self::with_file(Some(file), cap, echo))
    }

    /// A sink that keeps nothing but still enforces `cap`.
    pub fn discard(cap: u64) -> LogSink {
        Self::with_file(None, cap, None)
    }

    fn with_file(file: Option<File>, cap: u64, echo: Option<String>) -> LogSink {
        LogSink {
            inner: Arc::new(Mutex::new(Inner {
                file,
                written: 0,
                cap,
                exceeded: false,
                echo,
                pending: Vec::new(),
                tail: Vec::new(),
            })),
        }
    }

    /// Append bytes; past the cap, write a marker once and refuse.
    pub fn write(&self, bytes: &[u8]) -> Result<(), OutputLimit> {
        self.append(bytes, true)
    }

    /// Count bytes against the cap without keeping them (output a plugin
    /// asked not to log).
    pub fn count(&self, bytes: &[u8]) -> Result<(), OutputLimit> {
        self.append(bytes, false)
    }

    fn append(&self, bytes: &[u8], keep: bool) -> Result<(), OutputLimit> {
        let mut inner = self.inner.lock().expect("log lock");
        if inner.exceeded {
            return Err(OutputLimit(inner.cap));
        }
        let room = inner.cap.saturating_sub(inner.written) as usize;
        let take = bytes.len().min(room);
        inner.written += take as u64;
        if keep {
            if let Some(file) = &mut inner.file {
                let _ = file.write_all(&bytes[..take]);
            }
            inner.echo_lines(&bytes[..take]);
            inner.tail.extend_from_slice(&bytes[..take]);
            let excess = inner.tail.len().saturating_sub(TAIL);
            inner.tail.drain(..excess);
        }
        if take < bytes.len() {
            inner.exceeded = true;
            let cap = inner.cap;
            if let Some(file) = &mut inner.file {
                let _ = writeln!(
                    file,
                    "\n[capstan] output limit of {cap} bytes exceeded; the stage is stopped"
                );
            }
            return Err(OutputLimit(cap));
        }
        Ok(())
    }

    /// Write one line of the host's own (e.g. "$ terraform plan").
    pub fn line(&self, text: &str) {
        let _ = self.write(format!("{text}\n").as_bytes());
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
}

impl Inner {
    fn echo_lines(&mut self, bytes: &[u8]) {
        let Some(prefix) = self.echo.clone() else {
            return;
        };
        self.pending.extend_from_slice(bytes);
        while let Some(pos) = self.pending.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = self.pending.drain(..=pos).collect();
            eprint!("{prefix} | {}", String::from_utf8_lossy(&line));
        }
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
}

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
}

pub fn add_to_linker(linker: &mut Linker<StageState>) -> wasmtime::Result<()> {
    wit::add_to_linker::<StageState, wasmtime::component::HasSelf<LogHost>>(linker, |s| &mut s.log)
}
