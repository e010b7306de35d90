//! How people name a run on the command line: its id
//! (`20261126-101500-7f3a`), any unique prefix (`20261126-1015`) or suffix
//! (`7f3a`) of it, `latest` (the run that started last) or
//! `latest@<environment>` (the one that started last in that environment).
//! Every store resolves names by these rules ([`resolve`]), with queries of
//! its own ([`Ids`]): the matching is done by the database, not by loading
//! every id.

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

/// The queries that resolve a name, as each store answers them.
pub(super) trait Ids {
    /// What the store's queries fail with (a [`StoreError`] too).
    type Error: From<StoreError>;
    /// `id` itself, if a run has it.
    fn exact(&mut self, id: &str) -> std::result::Result<Option<String>, Self::Error>;
    /// The ids `given` (not empty) is a prefix or suffix of, as [`names`] says.
    fn named(&mut self, given: &str) -> std::result::Result<Vec<String>, Self::Error>;
    /// The run that started last (in `environment`, if given).
    fn latest(
        &mut self,
        environment: Option<&str>,
    ) -> std::result::Result<Option<String>, Self::Error>;
    /// The environments that have runs, sorted.
    fn environments(&mut self) -> std::result::Result<Vec<String>, Self::Error>;
}

/// The id of the run `given` names ([`RunRef`]).
pub(super) fn resolve<I: Ids>(given: &str, ids: &mut I) -> std::result::Result<String, I::Error> {
    match RunRef::parse(given) {
        RunRef::Latest { environment } => match ids.latest(environment)? {
            Some(id) => Ok(id),
            None => Err(StoreError::NoLatest {
                environment: environment.map(str::to_string),
                known: ids.environments()?,
            }
            .into()),
        },
        // The common case (every id the host passes itself) by key.
        RunRef::Id(id) => match ids.exact(id)? {
            Some(id) => Ok(id),
            None if id.is_empty() => Err(StoreError::NoSuchRun(String::new()).into()),
            None => {
                let named = ids.named(id)?;
                debug_assert!(named.iter().all(|c| names(id, c)), "{id}: {named:?}");
                Ok(pick(id, named)?)
            }
        },
    }
}

/// `given` as a `LIKE` pattern matching itself only (escaped with `\`).
pub(super) fn like_escaped(given: &str) -> String {
    let mut pattern = String::with_capacity(given.len());
    for c in given.chars() {
        if matches!(c, '%' | '_' | '\\') {
            pattern.push('\\');
        }
        pattern.push(c);
    }
    pattern
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
