//! What `capstan stats` reads of the history ([`RunStore::outcomes`]), as
//! both backends decode it. Each run keeps its timed stage attempts
//! (`runs.stage_times`, rewritten as each attempt ends): reading one row
//! per run, not one per attempt, is what makes a long history quick to
//! read. Decoding them is then most of the work, so the JSON is read
//! straight into [`StageTime`]s, and each stage name is kept once
//! ([`Names`]).

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use serde::Deserialize;
use serde::de::{DeserializeSeed, Deserializer, SeqAccess, Visitor};

use super::StageTime;

/// Stage names as read, each kept once and shared by its attempts.
#[derive(Default)]
pub(super) struct Names {
    known: Vec<Arc<str>>,
    by_name: HashMap<Arc<str>, usize>,
    /// Where the name after the last one asked for is: run after run, a
    /// pipeline's stages come in the same order.
    next: usize,
}

impl Names {
    pub(super) fn get(&mut self, name: &str) -> Arc<str> {
        let at = match self.known.get(self.next) {
            Some(next) if **next == *name => self.next,
            _ => match self.by_name.get(name) {
                Some(&at) => at,
                None => {
                    let new: Arc<str> = name.into();
                    self.by_name.insert(new.clone(), self.known.len());
                    self.known.push(new);
                    self.known.len() - 1
                }
            },
        };
        self.next = if at + 1 < self.known.len() { at + 1 } else { 0 };
        self.known[at].clone()
    }
}

/// A run's `started` or `ended` as stored, if it is an RFC 3339 time.
pub(super) fn time(text: &str) -> Option<jiff::Timestamp> {
    text.parse().ok()
}

/// A run's `stage_times` as stored: a JSON array of `[stage, duration_ms,
/// succeeded]`, one for each succeeded or failed attempt with a duration.
pub(super) fn stage_times(text: &str, names: &mut Names) -> serde_json::Result<Vec<StageTime>> {
    let mut times = Vec::new();
    let mut json = serde_json::Deserializer::from_str(text);
    Attempts {
        names,
        times: &mut times,
    }
    .deserialize(&mut json)?;
    json.end()?;
    Ok(times)
}

/// Reads the attempts of `stage_times` straight into `times`, names
/// borrowed from the text (where they have no escape) until kept.
struct Attempts<'a> {
    names: &'a mut Names,
    times: &'a mut Vec<StageTime>,
}

/// One element of `stage_times`.
#[derive(Deserialize)]
struct Attempt<'a>(#[serde(borrow)] Cow<'a, str>, i64, bool);

impl<'de> DeserializeSeed<'de> for Attempts<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, json: D) -> Result<(), D::Error> {
        json.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for Attempts<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an array of [stage, duration_ms, succeeded]")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut attempts: A) -> Result<(), A::Error> {
        while let Some(Attempt(name, duration_ms, succeeded)) = attempts.next_element()? {
            self.times.push(StageTime {
                name: self.names.get(&name),
                // Kept as the database's signed integer, as `stages` keeps it.
                duration_ms: duration_ms as u64,
                succeeded,
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stage_times_read_as_stored_with_escapes() {
        let mut names = Names::default();
        let text = r#"[["build", 1500, true], ["sm\"oke", 20, false], ["build", -1, false]]"#;
        let times = stage_times(text, &mut names).unwrap();
        let seen: Vec<(&str, u64, bool)> = times
            .iter()
            .map(|t| (&*t.name, t.duration_ms, t.succeeded))
            .collect();
        assert_eq!(
            seen,
            [
                ("build", 1500, true),
                ("sm\"oke", 20, false),
                ("build", u64::MAX, false)
            ]
        );
        assert!(stage_times(r#"[["build", 1]]"#, &mut names).is_err());
        assert!(stage_times(r#"[["build", 1, true]] []"#, &mut names).is_err());
    }

    #[test]
    fn names_are_kept_once_whatever_order_they_come_in() {
        let mut names = Names::default();
        let order = [
            "build", "plan", "apply", "build", "plan", "apply", "smoke", "plan", "build",
        ];
        let got: Vec<Arc<str>> = order.iter().map(|n| names.get(n)).collect();
        for (name, arc) in order.iter().zip(&got) {
            assert_eq!(**arc, **name);
        }
        // The same name is the same allocation.
        assert!(Arc::ptr_eq(&got[0], &got[3]) && Arc::ptr_eq(&got[0], &got[8]));
        assert!(Arc::ptr_eq(&got[1], &got[7]));
        assert_eq!(names.known.len(), 4);
    }
}
