//! How people name a run on the command line: its id
//! (`20261126-101500-7f3a`), any unique prefix (`20261126-1015`) or suffix
//! (`7f3a`) of it, `latest` (the run that started last) or
//! `latest@<environment>` (the one that started last in that environment).
//! Every store resolves names by these rules ([`RunRef::parse`], [`pick`]).

use super::{Result, StoreError};

/// A run as named on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunRef<'a> {
    /// The run that started last, in one environment or in any.
    Latest { environment: Option<&'a str> },
    /// A whole id, or a prefix or suffix of one.
    Id(&'a str),
}

impl<'a> RunRef<'a> {
    /// Ids start with a date, so `latest…` never reads as a prefix of one.
    pub fn parse(given: &'a str) -> RunRef<'a> {
        match given.strip_prefix("latest") {
            Some("") => RunRef::Latest { environment: None },
            Some(rest) => match rest.strip_prefix('@') {
                Some(environment) => RunRef::Latest {
                    environment: Some(environment),
                },
                None => RunRef::Id(given),
            },
            None => RunRef::Id(given),
        }
    }
}

/// Whether `id` is named by `given` (the id, a prefix or a suffix of it).
pub fn names(given: &str, id: &str) -> bool {
    !given.is_empty() && (id.starts_with(given) || id.ends_with(given))
}

/// The one run `given` names among `candidates` (the ids it names, as
/// [`names`] says): an exact id wins over runs it is also a prefix or suffix of.
pub fn pick(given: &str, mut candidates: Vec<String>) -> Result<String> {
    if candidates.iter().any(|c| c == given) {
        return Ok(given.to_string());
    }
    match candidates.len() {
        0 => Err(StoreError::NoSuchRun(given.to_string())),
        1 => Ok(candidates.remove(0)),
        _ => {
            candidates.sort();
            Err(StoreError::Ambiguous {
                given: given.to_string(),
                matches: candidates,
            })
        }
    }
}

/// How many candidates an ambiguity error lists.
const LISTED: usize = 8;

pub(super) fn ambiguous(given: &str, matches: &[String]) -> String {
    let mut listed = matches
        .iter()
        .take(LISTED)
        .map(|m| format!("\n  {m}"))
        .collect::<String>();
    if matches.len() > LISTED {
        listed.push_str(&format!("\n  … and {} more", matches.len() - LISTED));
    }
    format!(
        "`{given}` names {} runs (as a prefix or suffix of their ids):{listed}\n\
         give more of the id, or `latest` / `latest@<environment>`",
        matches.len()
    )
}

pub(super) fn no_latest(environment: Option<&str>, known: &[String]) -> String {
    match environment {
        Some("") if !known.is_empty() => format!(
            "`latest@` needs an environment after the `@`, e.g. `latest@{}`",
            known[0]
        ),
        Some(e) if !known.is_empty() => format!(
            "no run of environment `{e}` in the run store; runs are recorded for: {}",
            known.join(", ")
        ),
        _ => "no run in the run store yet".to_string(),
    }
}
