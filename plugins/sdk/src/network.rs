//! Reachability probes and webhooks (the WIT `network` interface; needs the
//! `connect` capability, and each target must match the stage's `connect`
//! grant). Plugins have no sockets: the host opens the connection, and
//! records it in the run's audit log.
//!
//! - [`tcp_probe`]: does `host:port` accept a TCP connection?
//! - [`http_get`]: what does a plain `http://` URL answer to a GET?
//! - [`http_post`]: send a message to an `http://` or `https://` webhook.
//!
//! All return a nested result: the outer `Err` means the request could not
//! be made at all (not granted, invalid target), the inner one that it was
//! made and the endpoint did not answer (refused, timed out, unresolvable) —
//! the usual *finding* of a smoke test, not a failure of the plugin.
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

use std::borrow::Cow;
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
    let timeout_ms = millis(timeout);
    match wit::tcp_probe(host, port, timeout_ms) {
        Ok(result) => Ok(result.map(|ms| Duration::from_millis(ms.into()))),
        Err(wit::Error::NotPermitted(m)) => Err(Error::not_permitted(m)),
        Err(wit::Error::Invalid(m)) => {
            Err(Error::config(format!("cannot probe {host}:{port}: {m}")))
        }
    }
}

/// What an HTTP endpoint answered to [`http_get`] or [`http_post`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpResponse {
    /// The HTTP status code (any status is an answer: a 503 is not an
    /// `Err`).
    pub status: u16,
    /// The first 64 KiB of the body at most (the host caps it).
    pub body: Vec<u8>,
    /// Time until the complete (capped) answer.
    pub duration: Duration,
}

impl HttpResponse {
    /// The body as text (invalid UTF-8 replaced).
    pub fn body_str(&self) -> Cow<'_, str> {
        String::from_utf8_lossy(&self.body)
    }
}

/// GET `url` within `timeout` and return what the endpoint answered.
///
/// Only plain `http://` URLs are probed (no TLS); the URL's host and port
/// (80 when absent) must match the stage's `connect` grant. Redirects are
/// not followed, and no proxy is used. The host caps `timeout` at one
/// minute.
///
/// The outer `Err` means the request could not be made (not granted:
/// [`Error::NotPermitted`], naming the grant to add; not an `http://` URL:
/// [`Error::InvalidConfig`]); the inner one that there was no answer
/// (refused, timed out, unresolvable), and why.
///
/// ```no_run
/// use std::time::Duration;
///
/// # fn main() -> Result<(), capstan_plugin::Error> {
/// let url = "http://127.0.0.1:8080/healthz";
/// match capstan_plugin::network::http_get(url, Duration::from_secs(5))? {
///     Ok(answer) if answer.status == 200 && answer.body_str().contains("ok") => {
///         println!("healthy in {:?}", answer.duration)
///     }
///     Ok(answer) => println!("unhealthy: HTTP {}", answer.status),
///     Err(why) => println!("no answer: {why}"),
/// }
/// # Ok(())
/// # }
/// ```
pub fn http_get(url: &str, timeout: Duration) -> Result<Result<HttpResponse, String>, Error> {
    match wit::http_get(url, millis(timeout)) {
        Ok(result) => Ok(result.map(|r| HttpResponse {
            status: r.status,
            body: r.body,
            duration: Duration::from_millis(r.duration_ms.into()),
        })),
        Err(wit::Error::NotPermitted(m)) => Err(Error::not_permitted(m)),
        // The host's message names the URL.
        Err(wit::Error::Invalid(m)) => Err(Error::config(m)),
    }
}

/// POST `body` (of type `content_type`, e.g. `application/json`) to `url`
/// within `timeout` and return what the endpoint answered: a webhook.
///
/// `http://` and `https://` URLs (https verified against the Mozilla roots
/// built into the host); the URL's host and port (80 or 443 when absent)
/// must match the stage's `connect` grant. The host resolves the name once
/// and connects to what it resolved, follows no redirect and uses no
/// proxy; the body is at most 256 KiB, the answer's body is cut at 64 KiB.
/// The audit log keeps only the URL's `scheme://host:port` and the body's
/// size: webhook URLs carry their token in the path or the query, so do not
/// print the URL either. Needs a host of contract 0.1.1 or later.
///
/// The outer `Err` means the request could not be made (not granted:
/// [`Error::NotPermitted`], naming the grant to add; not an http(s) URL, a
/// body too big: [`Error::InvalidConfig`]); the inner one that there was no
/// answer (refused, timed out, TLS failed), and why. Any status is an
/// answer: check it.
///
/// ```no_run
/// use std::time::Duration;
///
/// # fn main() -> Result<(), capstan_plugin::Error> {
/// let url = std::env::var("WEBHOOK_URL").unwrap_or_default();
/// let body = br#"{"text": "deployed"}"#;
/// match capstan_plugin::network::http_post(&url, "application/json", body, Duration::from_secs(10))? {
///     Ok(answer) if (200..300).contains(&answer.status) => println!("delivered"),
///     Ok(answer) => println!("refused: HTTP {} {}", answer.status, answer.body_str()),
///     Err(why) => println!("not delivered: {why}"),
/// }
/// # Ok(())
/// # }
/// ```
pub fn http_post(
    url: &str,
    content_type: &str,
    body: &[u8],
    timeout: Duration,
) -> Result<Result<HttpResponse, String>, Error> {
    match wit::http_post(url, content_type, body, millis(timeout)) {
        Ok(result) => Ok(result.map(|r| HttpResponse {
            status: r.status,
            body: r.body,
            duration: Duration::from_millis(r.duration_ms.into()),
        })),
        Err(wit::Error::NotPermitted(m)) => Err(Error::not_permitted(m)),
        // The host's message never shows more of the URL than its origin.
        Err(wit::Error::Invalid(m)) => Err(Error::config(m)),
    }
}

/// `timeout` in whole milliseconds, saturating at `u32::MAX`.
fn millis(timeout: Duration) -> u32 {
    u32::try_from(timeout.as_millis()).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeouts_saturate_and_bodies_decode() {
        assert_eq!(millis(Duration::from_millis(1500)), 1500);
        assert_eq!(millis(Duration::from_secs(u64::MAX)), u32::MAX);
        let r = HttpResponse {
            status: 200,
            body: b"ok \xff".to_vec(),
            duration: Duration::ZERO,
        };
        assert_eq!(r.body_str(), "ok \u{fffd}");
    }
}
