//! Leveled records and progress in the stage log (the WIT `log`
//! interface).
//!
//! Plain `println!`/`eprintln!` also reach the stage log; these add a
//! level. The crate-root macros [`info!`](crate::info) and friends take
//! `format!` arguments:
//!
//! ```
//! let (done, total) = (3, 10);
//! capstan_plugin::info!("uploaded {done} of {total} files");
//! capstan_plugin::log::progress(done, Some(total), "uploading");
//! ```
//!
//! Outside a Capstan host (a plugin's unit tests on the build machine)
//! records go to stderr.
//!
//! [`sensitive`] marks a value the host must keep out of everything the
//! run shows and keeps, e.g. an output a tool reports as sensitive.

/// Severity of a log record.
pub use crate::bindings::capstan::plugin::log::Level;

/// Write one record at `level`.
pub fn write(level: Level, message: &str) {
    #[cfg(target_arch = "wasm32")]
    crate::bindings::capstan::plugin::log::write(level, message);
    #[cfg(not(target_arch = "wasm32"))]
    eprintln!("[{level:?}] {message}");
}

/// Write a `trace` record.
pub fn trace(message: &str) {
    write(Level::Trace, message);
}

/// Write a `debug` record.
pub fn debug(message: &str) {
    write(Level::Debug, message);
}

/// Write an `info` record.
pub fn info(message: &str) {
    write(Level::Info, message);
}

/// Write a `warn` record.
pub fn warn(message: &str) {
    write(Level::Warn, message);
}

/// Write an `error` record.
pub fn error(message: &str) {
    write(Level::Error, message);
}

/// Report progress of a long step: `done` out of `total` (if known).
pub fn progress(done: u64, total: Option<u64>, message: &str) {
    #[cfg(target_arch = "wasm32")]
    crate::bindings::capstan::plugin::log::progress(done, total, message);
    #[cfg(not(target_arch = "wasm32"))]
    match total {
        Some(total) => eprintln!("[progress {done}/{total}] {message}"),
        None => eprintln!("[progress {done}] {message}"),
    }
}

/// Mark `value` sensitive for the rest of the run: from now on the host
/// replaces it, and its base64, URL-encoded and JSON-escaped forms, by
/// `***` in the terminal, stage logs, the audit log, the run store,
/// outputs, summaries, errors and reports. Use it for what
/// a tool marks secret in its output before anything prints it, such as
/// Terraform's `sensitive = true` outputs. Values shorter than 4 bytes are
/// not redacted (they would hide ordinary text; the stage log says so).
///
/// Secrets the pipeline declares need no call: the host redacts them
/// itself (see [`Info::secret`](crate::Info::secret)).
///
/// ```
/// // A database password read from a tool's JSON output.
/// let password = "correct horse battery staple";
/// capstan_plugin::log::sensitive(password);
/// capstan_plugin::info!("connecting with {password}"); // logged as `connecting with ***`
/// ```
pub fn sensitive(value: &str) {
    #[cfg(target_arch = "wasm32")]
    crate::bindings::capstan::plugin::log::sensitive(value);
    #[cfg(not(target_arch = "wasm32"))]
    let _ = value;
}

/// Log at `trace` level, with `format!` arguments.
#[macro_export]
macro_rules! trace {
    ($($arg:tt)*) => { $crate::log::trace(&::std::format!($($arg)*)) };
}

/// Log at `debug` level, with `format!` arguments.
#[macro_export]
macro_rules! debug {
    ($($arg:tt)*) => { $crate::log::debug(&::std::format!($($arg)*)) };
}

/// Log at `info` level, with `format!` arguments.
#[macro_export]
macro_rules! info {
    ($($arg:tt)*) => { $crate::log::info(&::std::format!($($arg)*)) };
}

/// Log at `warn` level, with `format!` arguments.
#[macro_export]
macro_rules! warn {
    ($($arg:tt)*) => { $crate::log::warn(&::std::format!($($arg)*)) };
}

/// Log at `error` level, with `format!` arguments.
#[macro_export]
macro_rules! error {
    ($($arg:tt)*) => { $crate::log::error(&::std::format!($($arg)*)) };
}
