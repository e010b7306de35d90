//! Time to recovery: the incident walk (definition in the module docs).

use std::collections::{BTreeMap, HashSet};

use jiff::{SignedDuration, Timestamp};

use super::{RunFacts, RunKind};

/// Incidents that started in the window.
pub(super) struct Incidents {
    /// Duration of each incident that has ended.
    pub recovered: Vec<SignedDuration>,
    /// Incidents that have not ended.
    pub open: u64,
}

/// A point on an environment's timeline. Failures sort before recoveries at
/// the same instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Event {
    Failure,
    Recovery,
}

/// Walks the history of `environment` (of each environment separately when
/// `None`) and returns the incidents that started in [since, until).
/// `undone` holds the ids some rollback run undoes.
pub(super) fn incidents(
    history: &[RunFacts],
    environment: Option<&str>,
    undone: &HashSet<&str>,
    since: Timestamp,
    until: Timestamp,
) -> Incidents {
    let mut timelines: BTreeMap<&str, Vec<(Timestamp, Event)>> = BTreeMap::new();
    for r in history {
        if environment.is_some_and(|e| r.environment != e) {
            continue;
        }
        let events = timelines.entry(&r.environment).or_default();
        if r.kind == RunKind::Rollback {
            events.push((r.started, Event::Failure));
        }
        if let Some(ended) = r.ended {
            if r.kind == RunKind::Deploy && r.verified == Some(false) {
                events.push((ended, Event::Failure));
            }
            if r.verified == Some(true) && !undone.contains(r.id.as_str()) {
                events.push((ended, Event::Recovery));
            }
        }
    }

    let in_window = |t: Timestamp| since <= t && t < until;
    let mut out = Incidents {
        recovered: Vec::new(),
        open: 0,
    };
    for mut events in timelines.into_values() {
        events.sort_unstable();
        let mut open: Option<Timestamp> = None;
        for (at, event) in events {
            match (event, open) {
                (Event::Failure, None) => open = Some(at),
                (Event::Recovery, Some(start)) => {
                    if in_window(start) {
                        out.recovered.push(at.duration_since(start));
                    }
                    open = None;
                }
                (Event::Failure, Some(_)) | (Event::Recovery, None) => {}
            }
        }
        if open.is_some_and(in_window) {
            out.open += 1;
        }
    }
    out
}
