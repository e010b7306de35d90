//! Fencing: once a process has lost a run (its lock was released by force,
//! or another host took the run over after its lease ran out), nothing it
//! still writes about that run may land. A store remembers the runs this
//! process created or claimed, and with which owner; every later write
//! about one of them checks, in its own transaction, that the run is still
//! that owner's. Other processes' writes (an approval, a cancel) are not
//! fenced: they never ran the run.

use std::collections::HashMap;
use std::sync::Mutex;

use super::{Owner, RunState, StoreError};

#[derive(Debug, Default)]
pub struct Fences {
    owned: Mutex<HashMap<String, Owner>>,
}

impl Fences {
    /// This process now runs `run` as `owner`.
    pub fn claim(&self, run: &str, owner: &Owner) {
        self.owned
            .lock()
            .expect("fences")
            .insert(run.to_string(), owner.clone());
    }

    /// The owner this process ran `run` as, if it did.
    pub fn expected(&self, run: &str) -> Option<Owner> {
        self.owned.lock().expect("fences").get(run).cloned()
    }

    /// `Ok` unless this process ran `run` as `expected` and the store now
    /// records another owner, or the run as interrupted (`recorded`: the
    /// run's status and owner; `None`: no such run).
    pub fn check(
        run: &str,
        expected: Option<&Owner>,
        recorded: Option<(RunState, Owner)>,
    ) -> Result<(), StoreError> {
        let Some(mine) = expected else {
            return Ok(());
        };
        match recorded {
            // An interrupted run is nobody's until it is claimed: its host
            // was judged gone (or its lock forced away).
            Some((status, now)) if now != *mine || status == RunState::Interrupted => {
                Err(StoreError::Fenced {
                    run: run.to_string(),
                    status,
                    owner: now,
                })
            }
            // Still this process's, or recorded by nothing yet.
            _ => Ok(()),
        }
    }
}
