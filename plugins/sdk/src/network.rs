//! TCP reachability probes (the WIT `network` interface; needs the
//! `connect` capability). Plugins have no sockets.
//!
//! ```no_run
//! use std::time::Duration;
//!
//! # fn main() -> Result<(), capstan_plugin::Error> {
//! match capstan_plugin::network::tcp_probe("app.internal", 443, Duration::from_secs(3))? {
//!     Ok(took) => println!("reachable in {took:?}"),
//!     Err(why) => println!("unreachable: {why}"),
//! }
//! # Ok(())
//! # }
//! ```

use std::time::Duration;

use crate::Error;
use crate::bindings::capstan::plugin::network as wit;

/// Try to open a TCP connection to `host:port` within `timeout`, then close
/// it. The outer `Err` means the probe could not be made (not granted:
/// [`Error::NotPermitted`]; invalid host or port: [`Error::InvalidConfig`]);
/// the inner one that the endpoint did not accept the connection, and why.
pub fn tcp_probe(
    host: &str,
    port: u16,
    timeout: Duration,
) -> Result<Result<Duration, String>, Error> {
    let timeout_ms = u32::try_from(timeout.as_millis()).unwrap_or(u32::MAX);
    match wit::tcp_probe(host, port, timeout_ms) {
        Ok(result) => Ok(result.map(|ms| Duration::from_millis(ms.into()))),
        Err(wit::Error::NotPermitted(m)) => Err(Error::not_permitted(m)),
        Err(wit::Error::Invalid(m)) => {
            Err(Error::config(format!("cannot probe {host}:{port}: {m}")))
        }
    }
}
