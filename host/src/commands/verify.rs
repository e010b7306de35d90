//! `capstan verify`: whether a run's records are as they were written.

use std::io::Write;

use crate::exit::{self, Failure};
use crate::run::verify::{Outcome, verify};
use crate::term;
use crate::text::inline;

/// Check a run's records, offline, from its run directory and the run store:
/// the audit log's hash chain (each line carries the hash of the one
/// before) and the head the store keeps, the pipeline and plugin digests
/// (run store, run.json, each stage's start record), and that every plan a
/// stage applied is the one approved. Prints one line per check and, for a
/// failure, the first broken link (file, line, what differs).
#[derive(Debug, clap::Args)]
#[command(after_help = "\
Examples:
  capstan verify latest
  capstan verify 20261126-101500-7f3a
  capstan verify 7f3a --json          # a unique prefix or suffix is enough

Exit codes: 0 every check passed; 9 a check failed (the first broken link is
named); 2 no such run.

Approvals are not signed yet: verify checks who approved which digest as the
run store records it, not their identity.")]
pub struct Args {
    /// The run: its id, a unique prefix or suffix of it, `latest` (the run
    /// that started last) or `latest@<environment>`.
    pub run: String,
    /// Print the checks as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

pub fn exec(args: &Args, cli: &super::Cli) -> Result<u8, Failure> {
    let store = cli.store()?;
    let run = store.run(&args.run).map_err(super::store_failure)?;
    let report = verify(&run, store.as_ref()).map_err(super::store_failure)?;
    let mut out = term::stdout();
    let written = if args.json {
        writeln!(
            out,
            "{}",
            serde_json::to_string_pretty(&report).expect("JSON")
        )
    } else {
        (|| {
            for c in &report.checks {
                let outcome = match c.outcome {
                    Outcome::Ok => "ok",
                    Outcome::Failed => "FAILED",
                    Outcome::NotChecked => "not checked",
                };
                let at = match (&c.file, c.line) {
                    (Some(f), Some(l)) => format!("{}:{l}: ", inline(f)),
                    (Some(f), None) => format!("{}: ", inline(f)),
                    _ => String::new(),
                };
                writeln!(
                    out,
                    "{outcome:<12} {:<16} {at}{}",
                    c.check,
                    inline(&c.detail)
                )?;
            }
            let verdict = if report.verified {
                "verified: its records are as they were written"
            } else {
                "NOT verified: see FAILED above for the first broken link"
            };
            writeln!(out, "run {} {verdict}", report.run)
        })()
    };
    written
        .and_then(|()| out.flush())
        .map_err(term::output_failure)?;
    Ok(if report.verified {
        exit::OK
    } else {
        exit::UNVERIFIED
    })
}
