//! Where output goes: whether stdout and stderr are terminals, how wide,
//! whether to colour them (`--color`, `NO_COLOR`), tables laid out for
//! them, a command's results on stdout, where a reader that went away
//! (`capstan show … | head -1`) ends the command quietly, and messages on
//! stderr, which never fail (see [`eprint`]).

use std::ffi::OsString;
use std::fmt;
use std::io::{self, IsTerminal, Write};
use std::sync::OnceLock;

use comfy_table::{
    Attribute, Cell, Color, ColumnConstraint, ContentArrangement, Table, presets::UTF8_BORDERS_ONLY,
};

use crate::exit::{self, Failure};

/// `--color`: when to colour output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum ColorChoice {
    /// On a terminal, unless `NO_COLOR` is set (or `TERM` is `dumb`).
    #[default]
    Auto,
    Always,
    Never,
}

impl ColorChoice {
    /// The `--color` given on the command line `args`, read before clap
    /// parses it, so that clap's own help and errors follow it too (`auto`
    /// when absent or not a valid choice: clap then says what is wrong).
    pub fn given(args: impl IntoIterator<Item = OsString>) -> ColorChoice {
        use clap::ValueEnum;
        let mut args = args.into_iter().skip(1);
        let mut value = None;
        while let Some(arg) = args.next() {
            let Some(arg) = arg.to_str() else { continue };
            if arg == "--" {
                break;
            } else if arg == "--color" {
                value = args.next();
            } else if let Some(v) = arg.strip_prefix("--color=") {
                value = Some(v.into());
            }
        }
        value
            .as_ref()
            .and_then(|v| v.to_str())
            .and_then(|v| ColorChoice::from_str(v, false).ok())
            .unwrap_or_default()
    }
}

impl From<ColorChoice> for clap::ColorChoice {
    /// clap's `auto` honours `NO_COLOR` and a `dumb` terminal too.
    fn from(choice: ColorChoice) -> clap::ColorChoice {
        match choice {
            ColorChoice::Auto => clap::ColorChoice::Auto,
            ColorChoice::Always => clap::ColorChoice::Always,
            ColorChoice::Never => clap::ColorChoice::Never,
        }
    }
}

/// An output stream of the process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

static CHOICE: OnceLock<ColorChoice> = OnceLock::new();

/// Set the `--color` choice, once, before anything is printed.
pub fn set_colour(choice: ColorChoice) {
    let _ = CHOICE.set(choice);
}

/// Whether to colour what is written to `stream`.
pub fn colour(stream: Stream) -> bool {
    decide(
        CHOICE.get().copied().unwrap_or_default(),
        std::env::var_os("NO_COLOR"),
        std::env::var_os("TERM"),
        is_terminal(stream),
    )
}

/// The rule, with its inputs given: `always` and `never` are what they say;
/// `auto` colours a terminal unless `NO_COLOR` is set to anything non-empty
/// (<https://no-color.org>) or the terminal is `dumb`.
fn decide(
    choice: ColorChoice,
    no_color: Option<OsString>,
    term: Option<OsString>,
    terminal: bool,
) -> bool {
    match choice {
        ColorChoice::Always => true,
        ColorChoice::Never => false,
        ColorChoice::Auto => {
            terminal && no_color.is_none_or(|v| v.is_empty()) && term.is_none_or(|t| t != "dumb")
        }
    }
}

pub fn is_terminal(stream: Stream) -> bool {
    match stream {
        Stream::Stdout => io::stdout().is_terminal(),
        Stream::Stderr => io::stderr().is_terminal(),
    }
}

/// The width of the terminal `stream` is; `None` when it is no terminal.
pub fn width(stream: Stream) -> Option<u16> {
    if !is_terminal(stream) {
        return None;
    }
    let size = match stream {
        Stream::Stdout => terminal_size::terminal_size_of(io::stdout()),
        Stream::Stderr => terminal_size::terminal_size_of(io::stderr()),
    };
    size.map(|(w, _)| w.0).filter(|w| *w > 0)
}

/// How tables are drawn for one stream: fitted to a terminal's width
/// (cells wrap), coloured or not. Piped output is neither: one line per row,
/// as wide as it needs, no escape sequences.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Layout {
    pub width: Option<u16>,
    pub colour: bool,
}

/// What a coloured cell says at a glance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tone {
    Good,
    Bad,
    /// Waiting for someone, or needing a look (interrupted, running).
    Attention,
    /// Stopped on purpose (cancelled).
    Stopped,
    Plain,
}

impl Layout {
    pub fn of(stream: Stream) -> Layout {
        Layout {
            width: width(stream),
            colour: colour(stream),
        }
    }

    /// A table with this layout and a header row.
    pub fn table<const N: usize>(self, header: [&str; N]) -> Table {
        let mut table = Table::new();
        // The layout decides, not comfy-table's own look at stdout: the
        // table may be rendered into a string, or for stderr.
        table.force_no_tty().load_preset(UTF8_BORDERS_ONLY);
        if self.colour {
            table.enforce_styling();
        }
        if let Some(width) = self.width {
            table
                .set_content_arrangement(ContentArrangement::Dynamic)
                .set_width(width);
        }
        table.set_header(header.map(|h| self.cell(h, Tone::Plain).add_attribute(Attribute::Bold)));
        table
    }

    /// Leave out `droppable` columns (least needed first) while the table
    /// is wider than this layout's width; what remains wraps to fit. Piped
    /// output keeps every column.
    pub fn fit(self, table: &mut Table, droppable: &[usize]) {
        let Some(width) = self.width else {
            return;
        };
        for &column in droppable {
            if natural_width(table) <= usize::from(width) {
                return;
            }
            if let Some(c) = table.column_mut(column) {
                c.set_constraint(ColumnConstraint::Hidden);
            }
        }
    }

    /// A cell, coloured by `tone` when this layout colours.
    pub fn cell(self, text: impl Into<String>, tone: Tone) -> Cell {
        let cell = Cell::new(text.into());
        let colour = match tone {
            _ if !self.colour => return cell,
            Tone::Good => Color::Green,
            Tone::Bad => Color::Red,
            Tone::Attention => Color::Yellow,
            Tone::Stopped => Color::Magenta,
            Tone::Plain => return cell,
        };
        cell.fg(colour)
    }
}

/// How wide `table` is with no cell wrapped: the length of its top border
/// (never styled), as every table here has one.
fn natural_width(table: &Table) -> usize {
    let mut unwrapped = table.clone();
    unwrapped.set_content_arrangement(ContentArrangement::Disabled);
    unwrapped.lines().next().map_or(0, |l| l.chars().count())
}

/// Standard output for a command's results. Write with `?` and end the
/// command with [`output_failure`] on an error.
pub fn stdout() -> io::StdoutLock<'static> {
    io::stdout().lock()
}

/// Write `text` to stdout, as a command's results.
pub fn print(text: impl std::fmt::Display) -> Result<(), Failure> {
    let mut out = stdout();
    write!(out, "{text}")
        .and_then(|()| out.flush())
        .map_err(output_failure)
}

/// How a command ends when writing its results failed. A closed pipe
/// (`capstan show … | head -1`) means the reader has what it wanted: the
/// command stops there, with exit 0 and nothing said (an empty message).
/// SIGPIPE stays ignored rather than deadly, as Rust sets it: the host
/// writes to pipes of programs it runs, which may close them early.
pub fn output_failure(e: io::Error) -> Failure {
    if e.kind() == io::ErrorKind::BrokenPipe {
        Failure::new(exit::OK, "")
    } else {
        Failure::new(
            exit::INTERNAL,
            format!("error: cannot write to standard output: {e}"),
        )
    }
}

/// Write to stderr, ignoring failure. std's `eprintln!` panics when
/// stderr is a pipe whose reader went away (`capstan run … 2>&1 | head -1`):
/// mid-run, that would end the host with the run unrecorded and its
/// programs left running. Nothing said on stderr is worth that. The
/// crate's own `eprintln!` and `eprint!` (see `lib.rs`) come here.
pub fn eprint(args: fmt::Arguments<'_>) {
    let _ = io::stderr().lock().write_fmt(args);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_colours_a_terminal_unless_no_color_or_a_dumb_terminal() {
        use ColorChoice::*;
        let set = |v: &str| Some(OsString::from(v));
        assert!(decide(Auto, None, set("xterm"), true));
        assert!(!decide(Auto, None, set("xterm"), false));
        assert!(!decide(Auto, set("1"), set("xterm"), true));
        assert!(
            decide(Auto, set(""), None, true),
            "an empty NO_COLOR is unset"
        );
        assert!(!decide(Auto, None, set("dumb"), true));
        assert!(decide(Always, set("1"), set("dumb"), false));
        assert!(!decide(Never, None, set("xterm"), true));
    }

    #[test]
    fn the_color_flag_is_read_before_clap_parses() {
        let given = |line: &str| ColorChoice::given(line.split(' ').map(OsString::from));
        assert_eq!(given("capstan --help"), ColorChoice::Auto);
        assert_eq!(given("capstan --color never --help"), ColorChoice::Never);
        assert_eq!(
            given("capstan run --color=always p.toml"),
            ColorChoice::Always
        );
        assert_eq!(
            given("capstan --color never run --color always"),
            ColorChoice::Always,
            "the last one counts, as for clap"
        );
        assert_eq!(given("capstan --color sometimes"), ColorChoice::Auto);
        assert_eq!(given("capstan --color"), ColorChoice::Auto);
        assert_eq!(
            given("capstan logs -- --color never"),
            ColorChoice::Auto,
            "after `--`, arguments are not flags"
        );
    }

    #[test]
    fn a_table_fits_the_width_it_is_given_and_colours_only_when_told() {
        let long = "a reason long enough to need wrapping on a narrow terminal, ".repeat(3);
        let rows = |layout: Layout| {
            let mut t = layout.table(["stage", "status", "reason"]);
            t.add_row([
                layout.cell("apply", Tone::Plain),
                layout.cell("failed", Tone::Bad),
                layout.cell(long.clone(), Tone::Plain),
            ]);
            t.to_string()
        };
        let piped = rows(Layout::default());
        assert_eq!(piped.lines().count(), 5, "{piped}");
        assert!(!piped.contains('\x1b'), "{piped}");
        let narrow = rows(Layout {
            width: Some(60),
            colour: false,
        });
        assert!(narrow.lines().count() > 5, "{narrow}");
        for line in narrow.lines() {
            assert!(line.chars().count() <= 60, "{line:?} in\n{narrow}");
        }
        let coloured = rows(Layout {
            width: None,
            colour: true,
        });
        // crossterm's red, around the padded cell.
        assert!(coloured.contains("\x1b[38;5;9m failed "), "{coloured:?}");
        assert!(!coloured.contains("\x1b[38;5;9m apply"), "{coloured:?}");
    }

    #[test]
    fn columns_are_left_out_least_needed_first_until_the_table_fits() {
        let table = |layout: Layout| {
            let mut t = layout.table(["id", "a", "b", "c"]);
            t.add_row([
                "20261126-101500-7f3a",
                "aaaaaaaaaa",
                "bbbbbbbbbb",
                "cccccccccc",
            ]);
            layout.fit(&mut t, &[3, 1]);
            t.to_string()
        };
        let all = table(Layout::default());
        assert!(all.contains("aaaa") && all.contains("cccc"), "{all}");
        let narrow = table(Layout {
            width: Some(50),
            colour: false,
        });
        assert!(!narrow.contains("cccc"), "{narrow}");
        assert!(
            narrow.contains("aaaaaaaaaa") && narrow.contains("bbbbbbbbbb"),
            "{narrow}"
        );
        let narrower = table(Layout {
            width: Some(40),
            colour: false,
        });
        assert!(
            !narrower.contains("aaaa") && !narrower.contains("cccc"),
            "{narrower}"
        );
        assert!(narrower.contains("20261126-101500-7f3a"), "{narrower}");
        for line in narrow.lines().chain(narrower.lines()) {
            assert!(line.chars().count() <= 50, "{line}");
        }
    }

    #[test]
    fn a_closed_pipe_ends_quietly_and_other_write_errors_do_not() {
        let quiet = output_failure(io::Error::from(io::ErrorKind::BrokenPipe));
        assert_eq!((quiet.code, quiet.message.as_str()), (exit::OK, ""));
        let full = output_failure(io::Error::from_raw_os_error(28));
        assert_eq!(full.code, exit::INTERNAL);
        assert!(full.message.contains("standard output"), "{}", full.message);
    }
}
