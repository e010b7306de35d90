//! `capstan plugin …`: look at one plugin on its own, or start a new one.

mod describe;
mod new;

pub use describe::describe_file;

use crate::exit::Failure;

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    Describe(describe::Args),
    New(new::Args),
}

pub async fn exec(cmd: &Command, cli: &super::Cli) -> Result<u8, Failure> {
    match cmd {
        Command::Describe(args) => describe::exec(args, cli).await,
        Command::New(args) => new::exec(args),
    }
}
