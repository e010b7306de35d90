//! `capstan man`: manual pages, from the command line definition itself
//! (so they say what `--help` says).

use std::path::{Path, PathBuf};

use clap::CommandFactory;
use clap_mangen::Man;

use crate::exit::{self, Failure};

/// Print the capstan(1) manual page (roff), or write one page per command
/// into a directory.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
Examples:
  capstan man | man -l -
  capstan man --out /usr/local/share/man/man1   # capstan.1, capstan-run.1, …")]
pub struct Args {
    /// Write capstan.1 and a page per subcommand (capstan-run.1, …) into
    /// DIR, and print their paths, instead of printing capstan.1.
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
}

pub fn exec(args: &Args) -> Result<u8, Failure> {
    // `capstan help` prints the other pages' text: no page of its own.
    let mut command = super::Cli::command().disable_help_subcommand(true);
    command.build();
    let Some(dir) = &args.out else {
        let mut page = Vec::new();
        Man::new(command)
            .render(&mut page)
            .expect("rendering into memory does not fail");
        crate::term::print(String::from_utf8_lossy(&page))?;
        return Ok(exit::OK);
    };
    let written = write_pages(command, dir).map_err(|e| {
        Failure::new(
            exit::USAGE,
            format!(
                "error: cannot write the manual pages into {}: {e}\n  give an existing, writable directory",
                dir.display()
            ),
        )
    })?;
    let list: String = written
        .iter()
        .map(|p| format!("{}\n", p.display()))
        .collect();
    crate::term::print(list)?;
    Ok(exit::OK)
}

/// One page per command, subcommands (`capstan-plugin-new.1`) included.
fn write_pages(command: clap::Command, dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut written = Vec::new();
    for sub in command.get_subcommands().filter(|s| !s.is_hide_set()) {
        written.extend(write_pages(sub.clone(), dir)?);
    }
    written.insert(0, Man::new(command).generate_to(dir)?);
    Ok(written)
}
