//! Exit codes, documented in `--help` and the README.

use std::process::ExitCode;

/// Everything ran and succeeded.
pub const OK: u8 = 0;
/// The run finished and at least one stage failed.
pub const STAGE_FAILED: u8 = 1;
/// The command line is wrong (clap's own code).
pub const USAGE: u8 = 2;
/// The pipeline file is invalid.
pub const INVALID_PIPELINE: u8 = 3;
/// A plugin could not be loaded, or a capability it requests is not granted,
/// or a granted program is missing, or a `with` table does not fit its
/// plugin's schema; nothing ran.
pub const PLUGIN_OR_GRANT: u8 = 4;
/// The run is paused, waiting for an approval.
pub const AWAITING_APPROVAL: u8 = 5;
/// Another run holds the environment's lock.
pub const LOCKED: u8 = 6;
/// The request was refused: approving your own run, an approval for another
/// digest, resuming a run that cannot continue.
pub const REFUSED: u8 = 7;
/// The run was stopped: Ctrl-C, SIGTERM or `capstan cancel`.
pub const CANCELLED: u8 = 8;
/// `capstan verify` found a run's records not as they were written (a
/// broken audit chain, digests that differ, a plan applied unapproved).
pub const UNVERIFIED: u8 = 9;
/// Capstan itself failed (I/O, a bug).
pub const INTERNAL: u8 = 10;
/// `capstan drift` found the environment drifted from its configuration.
pub const DRIFT: u8 = 11;

/// The table printed at the end of `--help`.
pub const HELP: &str = "\
Exit codes:
  0   success
  1   the run finished and a stage failed
  2   command-line usage error
  3   the pipeline file is invalid
  4   a plugin cannot be loaded, a requested capability is not granted, a
      granted program is missing, or a `with` table does not fit its
      plugin's schema (nothing ran)
  5   the run is waiting for an approval
  6   another run holds the environment's lock (see --wait)
  7   refused: e.g. approving your own run, an approval for another plan,
      resuming a run that cannot continue
  8   the run was stopped (Ctrl-C, SIGTERM, `capstan cancel`) and recorded
      as cancelled
  9   verification failed: `capstan verify` found a run's records changed
      (the first broken link is named)
  10  internal error
  11  `capstan drift` found drift (the plan of the deployed configuration
      has changes)";

/// An error that knows its exit code.
#[derive(Debug)]
pub struct Failure {
    pub code: u8,
    pub message: String,
}

impl Failure {
    pub fn new(code: u8, message: impl Into<String>) -> Failure {
        Failure {
            code,
            message: message.into(),
        }
    }
}

impl From<anyhow::Error> for Failure {
    fn from(e: anyhow::Error) -> Failure {
        Failure::new(INTERNAL, format!("error: {e:#}"))
    }
}

pub fn code(c: u8) -> ExitCode {
    ExitCode::from(c)
}
