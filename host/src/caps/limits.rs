//! Resource limits of one plugin instance: linear memory and tables, with a
//! flag that tells the caller a failure was the memory cap, not a bug.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// A `ResourceLimiter` that refuses memory growth past `memory` bytes in
/// total: a component holds one linear memory per core instance, so the cap
/// is on the sum of them all, not on each (a plugin with many memories
/// cannot multiply its budget).
pub struct Limiter {
    pub memory: usize,
    pub hit: Arc<AtomicBool>,
    used: usize,
}

/// Core instances, memories and tables one plugin may create, well above
/// what a component built by wit-bindgen has (a handful of each).
const MAX_INSTANCES: usize = 1000;
const MAX_MEMORIES: usize = 100;
const MAX_TABLES: usize = 1000;

impl Limiter {
    pub fn new(memory: usize, hit: Arc<AtomicBool>) -> Limiter {
        Limiter {
            memory,
            hit,
            used: 0,
        }
    }
}

impl wasmtime::ResourceLimiter for Limiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let total = self.used.saturating_sub(current).saturating_add(desired);
        if total > self.memory {
            self.hit.store(true, Ordering::SeqCst);
            wasmtime::bail!(
                "memory limit of {} MiB exceeded (the plugin asked for {} MiB in all)",
                self.memory >> 20,
                total >> 20
            );
        }
        self.used = total;
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= 1_000_000)
    }

    fn instances(&self) -> usize {
        MAX_INSTANCES
    }

    fn memories(&self) -> usize {
        MAX_MEMORIES
    }

    fn tables(&self) -> usize {
        MAX_TABLES
    }
}

/// Raise this process's open-descriptor limit to its hard maximum, so that
/// the per-stage caps (the WASI resource table of each stage) are what
/// bounds a stage, not a process-wide limit one stage could exhaust for all.
pub fn raise_descriptor_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE)
        && soft < hard
    {
        let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
    }
}

/// Cap on the entries of one stage's WASI resource table (open files and
/// directories, streams, pollables). Each open file is a host descriptor:
/// with several stages at once, no stage may hold more than a share of the
/// process's limit, so one stage cannot starve the others (4096 at most).
pub fn stage_handle_cap() -> usize {
    use nix::sys::resource::{Resource, getrlimit};
    let soft = getrlimit(Resource::RLIMIT_NOFILE).map_or(1024, |(soft, _)| soft);
    (soft / 8).clamp(64, 4096) as usize
}

#[cfg(test)]
mod tests {
    use wasmtime::ResourceLimiter;

    use super::*;

    #[test]
    fn the_memory_cap_is_on_all_memories_together() {
        let hit = Arc::new(AtomicBool::new(false));
        let mut limiter = Limiter::new(10 << 20, hit.clone());
        // Two memories of 4 MiB each fit; a third does not, though each
        // alone is under the cap.
        assert!(limiter.memory_growing(0, 4 << 20, None).unwrap());
        assert!(limiter.memory_growing(0, 4 << 20, None).unwrap());
        assert!(limiter.memory_growing(0, 4 << 20, None).is_err());
        assert!(hit.load(Ordering::SeqCst));
        // Growing one of them counts only the growth.
        let mut limiter = Limiter::new(10 << 20, Arc::new(AtomicBool::new(false)));
        assert!(limiter.memory_growing(0, 4 << 20, None).unwrap());
        assert!(limiter.memory_growing(4 << 20, 9 << 20, None).unwrap());
        assert!(limiter.memory_growing(9 << 20, 11 << 20, None).is_err());
    }
}
