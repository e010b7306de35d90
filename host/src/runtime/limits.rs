//! Resource limits of one plugin instance: linear memory and tables, with a
//! flag that tells the caller a failure was the memory cap, not a bug.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// A `ResourceLimiter` that refuses memory growth past `memory` bytes.
pub struct Limiter {
    pub memory: usize,
    pub hit: Arc<AtomicBool>,
}

impl wasmtime::ResourceLimiter for Limiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.memory {
            self.hit.store(true, Ordering::SeqCst);
            wasmtime::bail!(
                "memory limit of {} MiB exceeded (the plugin asked for {} MiB)",
                self.memory >> 20,
                desired >> 20
            );
        }
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
}
