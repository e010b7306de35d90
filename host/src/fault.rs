//! Fault injection for the crash-recovery tests: with
//! `CAPSTAN_FAULT=<point>:<stage>` the host kills itself with SIGKILL at that
//! point, exactly as `kill -9` would, but at a known instant. Points:
//!
//! - `stage-start`: the stage's attempt is recorded as running, the plugin
//!   has not been called;
//! - `stage-end`: the plugin has returned (its tools ran to the end), the
//!   outcome is not recorded yet — the worst moment for an apply;
//! - `exec-start` with `<stage>/<first argument>` (e.g.
//!   `exec-start:apply/apply`): a child was just started; it outlives the
//!   host and runs to its end.
//! - `audit-written` with a stage: the stage's first audit event is in
//!   `audit.jsonl`, not yet in the run store.
//!
//! Killing the host is all it can do, so it is harmless to leave in the
//! binary; the e2e tests also kill the host from outside at random moments.

use std::sync::OnceLock;

use nix::sys::signal::{Signal, raise};

pub const ENV: &str = "CAPSTAN_FAULT";

/// `CAPSTAN_FAULT`, read once: `point` is on the path of every exec.
fn armed() -> Option<&'static str> {
    static SPEC: OnceLock<Option<String>> = OnceLock::new();
    SPEC.get_or_init(|| std::env::var(ENV).ok()).as_deref()
}

/// Die here if `CAPSTAN_FAULT` is `<point>:<target>` (`target` is only
/// formatted when a fault is armed).
pub fn point(point: &str, target: impl std::fmt::Display) {
    let Some(spec) = armed() else { return };
    if spec.split_once(':') == Some((point, target.to_string().as_str())) {
        eprintln!("capstan: {ENV}={spec}: killing this host process with SIGKILL");
        let _ = raise(Signal::SIGKILL);
    }
}
