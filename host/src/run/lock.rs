//! Environment locks: two runs on one environment never overlap. A run takes
//! its environment's lock before its first stage and keeps it until it ends
//! (also while it waits for approval: its plan must stay the one applied).

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::store::{Lock, LockHolder, Owner, RunStore, StoreError};

/// Why the lock was not taken.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("environment `{}` is locked by run {}", .0.environment, .0.run_id)]
    Held(LockHolder),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// How often a waiting run looks again.
const POLL: Duration = Duration::from_millis(250);

/// Take `environment`'s lock for `run`, waiting up to `wait` for the holder
/// to finish. Returns the holder of a stale lock that was released.
pub async fn acquire(
    store: &Arc<dyn RunStore>,
    environment: &str,
    run: &str,
    wait: Option<Duration>,
) -> Result<Option<LockHolder>, LockError> {
    let me = Owner::current();
    let deadline = wait.map(|w| Instant::now() + w);
    let mut told = false;
    loop {
        match store.try_lock(environment, run, &me)? {
            Lock::Acquired { released_stale } => return Ok(released_stale),
            Lock::Held(holder) => {
                let Some(deadline) = deadline.filter(|d| Instant::now() < *d) else {
                    return Err(LockError::Held(holder));
                };
                if !told {
                    super::events::emit(super::events::Event::LockWaited {
                        environment,
                        holder: &holder.run_id,
                        up_to_s: deadline.saturating_duration_since(Instant::now()).as_secs(),
                    });
                    eprintln!(
                        "environment `{environment}` is locked by run {} ({}); waiting up to {}…",
                        holder.run_id,
                        holder.run_status.map_or("starting", |s| s.as_str()),
                        humantime::format_duration(Duration::from_secs(
                            deadline.saturating_duration_since(Instant::now()).as_secs()
                        ))
                    );
                    told = true;
                }
                tokio::time::sleep(POLL).await;
            }
        }
    }
}
