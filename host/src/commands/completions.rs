//! `capstan completions`: shell completion scripts, from the command line
//! definition itself (so they cannot lag behind it).

use clap::CommandFactory;
use clap_complete::Shell;

use crate::exit::{self, Failure};

/// Print the completion script for SHELL (subcommands, options and their
/// values).
#[derive(Debug, clap::Args)]
#[command(after_help = "\
Examples:
  capstan completions bash > ~/.local/share/bash-completion/completions/capstan
  capstan completions zsh > \"${fpath[1]}/_capstan\"
  capstan completions fish > ~/.config/fish/completions/capstan.fish")]
pub struct Args {
    /// The shell.
    #[arg(value_enum)]
    pub shell: Shell,
}

pub fn exec(args: &Args) -> Result<u8, Failure> {
    let mut script = Vec::new();
    clap_complete::generate(
        args.shell,
        &mut super::Cli::command(),
        "capstan",
        &mut script,
    );
    crate::term::print(String::from_utf8_lossy(&script))?;
    Ok(exit::OK)
}
