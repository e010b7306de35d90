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
//!
//! Killing the host is all it can do, so it is harmless to leave in the
//! binary; the e2e tests also kill the host from outside at random moments.

use nix::sys::signal::{Signal, raise};

pub const ENV: &str = "CAPSTAN_FAULT";

/// Die here if `CAPSTAN_FAULT` names this point of this stage.
pub fn point(point: &str, stage: &str) {
    if std::env::var(ENV).is_ok_and(|spec| spec == format!("{point}:{stage}")) {
        eprintln!("capstan: {ENV}={point}:{stage}: killing this host process with SIGKILL");
        let _ = raise(Signal::SIGKILL);
    }
}
