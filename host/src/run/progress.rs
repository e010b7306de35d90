//! What an operator sees while a run goes on, on stderr.
//!
//! On a terminal: one line per running stage with a spinner, its elapsed
//! time and its last log line; finished stages (and, without `-q`, every
//! log line) scroll above. Elsewhere (CI logs, files): plain timestamped
//! lines, and a "still running" line for a stage silent for 30 s, so a
//! long stage never looks hung.
//!
//! Everything shown that a plugin wrote is escaped (see [`crate::text`]).
//! Colour follows `--color` and `NO_COLOR` (see [`crate::term::colour`]).
//! Nothing here fails when stderr does (see [`crate::term::eprint`]).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::events::{self, Event};
use crate::term::{self, Stream};
use crate::text::inline;

/// A stage silent this long gets a "still running" line (not on a
/// terminal); `CAPSTAN_STILL_RUNNING` (e.g. `2m`) changes it.
pub const SILENCE: Duration = Duration::from_secs(30);

fn silence() -> Duration {
    std::env::var("CAPSTAN_STILL_RUNNING")
        .ok()
        .and_then(|v| humantime::parse_duration(&v).ok())
        .filter(|d| !d.is_zero())
        .unwrap_or(SILENCE)
}

/// How much echoed log text is printed at once, at most (about).
const ECHO_BATCH: usize = 128 * 1024;

/// Shared handle to the run's progress display.
#[derive(Clone)]
pub struct Progress {
    inner: Arc<Inner>,
}

struct Inner {
    /// Bars on a terminal; `None`: plain lines.
    bars: Option<MultiProgress>,
    /// Plain lines with echo: what is printed, written by a thread of its
    /// own (see [`Echo`]).
    echo_writer: Option<Echo>,
    /// Echo every log line (no `-q`).
    echo: bool,
    colour: bool,
    stages: Mutex<HashMap<String, Running>>,
}

struct Running {
    bar: Option<ProgressBar>,
    started: Instant,
    /// When the stage last printed (or was last said to be running).
    heard: Instant,
}

/// The display of the run going on, for code that prints or prompts in the
/// middle of it (an approval prompt, a stop notice).
static CURRENT: OnceLock<Mutex<Option<Progress>>> = OnceLock::new();

fn current() -> Option<Progress> {
    CURRENT.get()?.lock().ok()?.clone()
}

/// Print a line of the host's above the stage lines (straight to stderr
/// when no run is displayed). The crate's `eprintln!` comes here.
pub fn println(text: &str) {
    match current() {
        Some(p) => p.print(text),
        None => term::eprint(format_args!("{text}\n")),
    }
}

/// Run `f` (e.g. a prompt waiting for a human) with the stage lines
/// hidden. Not [`MultiProgress::suspend`]: that holds the display's lock
/// throughout, and every other stage's log would wait for the human too.
pub fn suspend<R>(f: impl FnOnce() -> R) -> R {
    // What is still queued for the echo goes out before the prompt.
    if let Some(echo) = current()
        .as_ref()
        .and_then(|p| p.inner.echo_writer.as_ref())
    {
        echo.drain();
    }
    let Some(bars) = current().and_then(|p| p.inner.bars.clone()) else {
        return f();
    };
    let _ = bars.clear();
    bars.set_draw_target(ProgressDrawTarget::hidden());
    let result = f();
    bars.set_draw_target(ProgressDrawTarget::stderr());
    result
}

impl Progress {
    /// Bars if stderr is a terminal, plain lines otherwise. The display
    /// becomes the current one (see [`println`], [`suspend`]) until
    /// [`Progress::finish`].
    pub fn start(echo: bool) -> Progress {
        // In GitHub Actions each stage's log is printed whole, in a group,
        // when it ends (see `run::github`), not line by line as it goes.
        let echo = echo && !super::github::active();
        let colour = term::colour(Stream::Stderr);
        // indicatif styles through `console`, whose own rule knows neither
        // `--color` nor `NO_COLOR`: ours decides.
        console::set_colors_enabled_stderr(colour);
        let bars = term::is_terminal(Stream::Stderr)
            .then(|| MultiProgress::with_draw_target(ProgressDrawTarget::stderr()));
        let echo_writer = (echo && bars.is_none()).then(Echo::start).flatten();
        let progress = Progress {
            inner: Arc::new(Inner {
                bars,
                echo_writer,
                echo,
                colour,
                stages: Mutex::new(HashMap::new()),
            }),
        };
        *CURRENT
            .get_or_init(Default::default)
            .lock()
            .expect("progress lock") = Some(progress.clone());
        if progress.inner.bars.is_none() {
            let weak = Arc::downgrade(&progress.inner);
            let silence = silence();
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    let Some(inner) = weak.upgrade() else { return };
                    Progress { inner }.say_still_running(silence);
                }
            });
        }
        progress
    }

    /// Stop displaying (the end-of-run table follows).
    pub fn finish(&self) {
        if let Some(bars) = &self.inner.bars {
            let _ = bars.clear();
        }
        if let Some(echo) = &self.inner.echo_writer {
            echo.drain();
        }
        if let Some(current) = CURRENT.get() {
            *current.lock().expect("progress lock") = None;
        }
    }

    /// `stage` started.
    pub fn started(&self, stage: &str) {
        events::emit(Event::StageStarted { stage });
        let now = Instant::now();
        let bar = self.inner.bars.as_ref().map(|bars| {
            let bar = bars.add(ProgressBar::new_spinner());
            bar.set_style(self.spinner_style());
            bar.set_prefix(inline(stage).into_owned());
            bar.enable_steady_tick(Duration::from_millis(120));
            bar
        });
        if bar.is_none() {
            self.print(&stamped(&format!("▶ {} started", inline(stage))));
        }
        self.stages().lock().expect("progress lock").insert(
            stage.to_string(),
            Running {
                bar,
                started: now,
                heard: now,
            },
        );
    }

    /// Whether log lines show anywhere (echoed, or on a spinner line): with
    /// `-q` and no terminal they do not, and the log sink need not split
    /// its output into lines for nothing.
    pub fn wants_lines(&self) -> bool {
        self.inner.echo || self.inner.bars.is_some() || events::enabled()
    }

    /// Whole lines of `stage`'s log (plugin text, not yet escaped), each
    /// ending in `\n`: each one is an event, the last that is not blank
    /// shows on the stage's spinner line, and (without `-q`) every one is
    /// echoed, a batch of lines at a time (one write for many lines: a
    /// stage printing a lot must not cost a write per line).
    pub fn output(&self, stage: &str, lines: &str) {
        if events::enabled() {
            each_line(lines, |line| events::emit(Event::Log { stage, line }));
        }
        if let Some(running) = self.stages().lock().expect("progress lock").get_mut(stage) {
            // Silence is what the operator sees: with `-q`, every line.
            if self.inner.echo {
                running.heard = Instant::now();
            }
            if let Some(bar) = &running.bar
                && let Some(line) = lines
                    .rsplit_terminator('\n')
                    .map(|line| line.trim_end_matches('\r'))
                    .find(|line| !line.trim().is_empty())
            {
                bar.set_message(inline(line.trim()).into_owned());
            }
        }
        if !self.inner.echo {
            return;
        }
        let prefix = format!("{stage} | ");
        match &self.inner.echo_writer {
            Some(echo) => echo.send(Echoed::Lines {
                prefix,
                lines: lines.to_string(),
            }),
            None => echo_batches(&prefix, lines, |batch| self.print(batch)),
        }
    }

    /// `stage` ended; `line` says how (one line, escaped).
    pub fn finished(&self, stage: &str, line: &str) {
        if let Some(running) = self.stages().lock().expect("progress lock").remove(stage)
            && let Some(bar) = running.bar
        {
            bar.finish_and_clear();
        }
        let line = if self.inner.bars.is_some() {
            self.paint(line)
        } else {
            stamped(line)
        };
        self.print(&line);
    }

    /// A host line above the stage lines. With an echo writer it is
    /// written after every log line handed to it before, and before this
    /// returns: what the host says (an error, say, just before it exits) is
    /// never lost behind queued log lines.
    fn print(&self, text: &str) {
        if let Some(echo) = &self.inner.echo_writer {
            echo.send(Echoed::Line(format!("{text}\n")));
            echo.drain();
            return;
        }
        if let Some(bars) = &self.inner.bars
            && !bars.is_hidden()
            && bars.println(text).is_ok()
        {
            return;
        }
        term::eprint(format_args!("{text}\n"));
    }

    fn stages(&self) -> &Mutex<HashMap<String, Running>> {
        &self.inner.stages
    }

    /// Plain mode: a line for every stage silent for `silence`.
    fn say_still_running(&self, silence: Duration) {
        let now = Instant::now();
        let mut quiet = Vec::new();
        for (stage, running) in self.stages().lock().expect("progress lock").iter_mut() {
            if now.duration_since(running.heard) >= silence {
                running.heard = now;
                quiet.push((stage.clone(), now.duration_since(running.started)));
            }
        }
        quiet.sort();
        for (stage, elapsed) in quiet {
            self.print(&stamped(&format!(
                "… {} still running ({})",
                inline(&stage),
                short_duration(elapsed)
            )));
        }
    }

    fn spinner_style(&self) -> ProgressStyle {
        let template = if self.inner.colour {
            "{spinner:.cyan} {prefix:.bold} {elapsed:>5.dim} {wide_msg}"
        } else {
            "{spinner} {prefix} {elapsed:>5} {wide_msg}"
        };
        ProgressStyle::with_template(template)
            .expect("a valid template")
            .tick_chars("⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏ ")
    }

    /// Colour a finished-stage line by its mark.
    fn paint(&self, line: &str) -> String {
        if !self.inner.colour {
            return line.to_string();
        }
        let style = match line.chars().next() {
            Some('✓') => console::Style::new().green(),
            Some('✗') => console::Style::new().red().bold(),
            Some('⏸') => console::Style::new().yellow().bold(),
            Some('■') => console::Style::new().magenta(),
            _ => console::Style::new().dim(),
        };
        style.force_styling(true).apply_to(line).to_string()
    }
}

/// `lines` (whole lines, each ending in `\n`) as echoed: each after
/// `prefix`, escaped unless plain, handed to `print` a batch at a time
/// without the batch's last `\n` (one write for many lines: a stage
/// printing a lot must not cost a write per line).
fn echo_batches(prefix: &str, lines: &str, mut print: impl FnMut(&str)) {
    // Plain text all through (the usual case) is its own escaped form:
    // checked once, not line by line.
    let plain = crate::text::plain_len(lines.as_bytes()) == lines.len();
    let mut batch = String::with_capacity(ECHO_BATCH.min(lines.len()) + 256);
    let mut flush = |batch: &mut String| {
        if let Some(text) = batch.strip_suffix('\n') {
            print(text);
        }
        batch.clear();
    };
    each_line(lines, |line| {
        batch.push_str(prefix);
        if plain {
            batch.push_str(line);
        } else {
            batch.push_str(&crate::text::block(line));
        }
        batch.push('\n');
        if batch.len() >= ECHO_BATCH {
            flush(&mut batch);
        }
    });
    flush(&mut batch);
}

/// What the echo writer is handed.
enum Echoed {
    /// A stage's lines, to echo after `prefix`.
    Lines { prefix: String, lines: String },
    /// A host line, as printed (its `\n` included).
    Line(String),
    /// Answer once everything before is written.
    Drained(std::sync::mpsc::SyncSender<()>),
}

/// The thread that echoes log lines (plain mode, no `-q`), so that a stage
/// printing a lot has its lines formatted and written on another core while
/// its output goes on being read and logged. A few batches may wait; past
/// that, the stage's reader waits for the terminal, as it did when it wrote
/// itself.
struct Echo {
    queue: std::sync::mpsc::SyncSender<Echoed>,
}

impl Echo {
    /// `None` if the thread cannot start: then lines are written as they
    /// come, by whoever hands them over.
    fn start() -> Option<Echo> {
        let (queue, received) = std::sync::mpsc::sync_channel::<Echoed>(8);
        let spawned = std::thread::Builder::new()
            .name("capstan-echo".into())
            .spawn(move || {
                for echoed in received {
                    match echoed {
                        Echoed::Lines { prefix, lines } => echo_batches(&prefix, &lines, |batch| {
                            term::eprint(format_args!("{batch}\n"))
                        }),
                        Echoed::Line(line) => term::eprint(format_args!("{line}")),
                        Echoed::Drained(done) => {
                            let _ = done.send(());
                        }
                    }
                }
            });
        spawned.ok().map(|_| Echo { queue })
    }

    fn send(&self, echoed: Echoed) {
        // The thread ends only with the process.
        let _ = self.queue.send(echoed);
    }

    /// Wait until everything handed over so far is written.
    fn drain(&self) {
        let (done, wait) = std::sync::mpsc::sync_channel(1);
        self.send(Echoed::Drained(done));
        let _ = wait.recv();
    }
}

/// `f` for each line of `text`, without its end (`\n`, and the `\r`s
/// before it); the line ends found a block of bytes at a time.
fn each_line<'a>(text: &'a str, mut f: impl FnMut(&'a str)) {
    let mut start = 0;
    for end in memchr::memchr_iter(b'\n', text.as_bytes()) {
        f(text[start..end].trim_end_matches('\r'));
        start = end + 1;
    }
    if start < text.len() {
        f(text[start..].trim_end_matches('\r'));
    }
}

/// `12:01:02 <line>`: the local time of day, for logs read later.
fn stamped(line: &str) -> String {
    let now = jiff::Zoned::now();
    format!("{} {line}", now.strftime("%H:%M:%S"))
}

/// `2m10s`, `45s`.
pub fn short_duration(d: Duration) -> String {
    let secs = d.as_secs();
    match (secs / 3600, secs / 60 % 60, secs % 60) {
        (0, 0, s) => format!("{s}s"),
        (0, m, s) => format!("{m}m{s:02}s"),
        (h, m, s) => format!("{h}h{m:02}m{s:02}s"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_split_as_before_without_their_ends() {
        for text in [
            "",
            "a\n",
            "a\nb\n",
            "a\r\n\r\n\n",
            "cr\r\r\nx",
            "tail",
            "\n\n",
        ] {
            let mut got = Vec::new();
            each_line(text, |line| got.push(line));
            let want: Vec<&str> = text
                .split_inclusive('\n')
                .map(|line| line.trim_end_matches(['\n', '\r']))
                .collect();
            assert_eq!(got, want, "{text:?}");
        }
    }

    #[test]
    fn durations_read_like_a_clock() {
        assert_eq!(short_duration(Duration::from_secs(45)), "45s");
        assert_eq!(short_duration(Duration::from_secs(130)), "2m10s");
        assert_eq!(
            short_duration(Duration::from_secs(3 * 3600 + 62)),
            "3h01m02s"
        );
    }
}
