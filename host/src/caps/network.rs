//! The `connect` capability: TCP reachability probes to granted
//! `host:port` patterns. Plugins have no sockets of their own.

use std::time::{Duration, Instant};

use serde_json::json;
use wasmtime::component::{HasSelf, Linker};

use super::audit::StageAudit;
use crate::bindings::capstan::plugin::network as wit;
use crate::caps::state::StageState;
use crate::pipeline::patterns::{ConnectPattern, Target};
use crate::store::AuditKind;

/// Whether `host:port` matches one of the grant's patterns (grammar in
/// `pipeline::patterns`): IP patterns (`127.0.0.*:*`, `*:22`, `[::1]:80`)
/// match only a host that is an IP literal, a name pattern (`db.internal:5432`)
/// only that name, case-insensitively. The host is never matched as text, so
/// `127.0.0.*` does not admit the name `127.0.0.1.attacker.example`. A pattern
/// that does not parse (the pipeline validator refuses those) matches nothing.
pub fn allows(patterns: &[String], host: &str, port: u16) -> bool {
    let target = Target::parse(host);
    patterns
        .iter()
        .any(|p| ConnectPattern::parse(p).is_ok_and(|pattern| pattern.matches(&target, port)))
}

/// Per-stage state of the `network` interface.
pub struct NetworkHost {
    pub patterns: Vec<String>,
    pub audit: StageAudit,
    /// When the stage's wall-clock limit runs out: no probe outlives it.
    pub deadline: Instant,
}

impl NetworkHost {
    /// `Some(error)` when `host:port` is not granted (the denial recorded).
    fn check(&self, host: &str, port: u16, detail: serde_json::Value) -> Option<wit::Error> {
        if allows(&self.patterns, host, port) {
            return None;
        }
        let reason = format!(
            "connect to `{host}:{port}` is not granted (granted: {:?}); add it to `connect` in the stage's grants",
            self.patterns
        );
        self.audit.denied(AuditKind::Connect, detail, &reason);
        Some(wit::Error::NotPermitted(reason))
    }
}

impl NetworkHost {
    /// The limit a plugin asked for, kept within one minute and within what
    /// is left of the stage's time.
    fn limit(&self, timeout_ms: u32) -> Duration {
        let asked = Duration::from_millis(timeout_ms.clamp(1, 60_000) as u64);
        asked.min(self.deadline.saturating_duration_since(Instant::now()))
    }
}

impl wit::Host for NetworkHost {
    async fn tcp_probe(
        &mut self,
        host: String,
        port: u16,
        timeout_ms: u32,
    ) -> wasmtime::Result<Result<Result<u32, String>, wit::Error>> {
        self.audit.within_budget()?;
        if let Some(denied) = self.check(&host, port, json!({ "host": host, "port": port })) {
            return Ok(Err(denied));
        }
        let started = Instant::now();
        let limit = self.limit(timeout_ms);
        let connect = tokio::net::TcpStream::connect((host.as_str(), port));
        let result = match tokio::time::timeout(limit, connect).await {
            Ok(Ok(_stream)) => Ok(started.elapsed().as_millis() as u32),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err(format!("timed out after {} ms", limit.as_millis())),
        };
        self.audit.allowed(
            AuditKind::Connect,
            json!({ "host": host, "port": port, "result": format!("{result:?}") }),
        );
        Ok(Ok(result))
    }

    async fn http_get(
        &mut self,
        url: String,
        timeout_ms: u32,
    ) -> wasmtime::Result<Result<Result<wit::HttpResponse, String>, wit::Error>> {
        self.audit.within_budget()?;
        let uri: ureq::http::Uri = match url.parse() {
            Ok(uri) => uri,
            Err(e) => {
                return Ok(Err(wit::Error::Invalid(format!(
                    "`{url}` is not a URL: {e}"
                ))));
            }
        };
        if uri.scheme_str() != Some("http") {
            let message = format!("`{url}`: only plain http:// URLs can be probed");
            return Ok(Err(wit::Error::Invalid(message)));
        }
        let host = uri
            .host()
            .unwrap_or_default()
            .trim_matches(['[', ']'])
            .to_string();
        let port = uri.port_u16().unwrap_or(80);
        if let Some(denied) = self.check(&host, port, json!({ "url": url })) {
            return Ok(Err(denied));
        }
        let (target, limit) = (url.clone(), self.limit(timeout_ms));
        // ureq's own global timeout bounds the request; this bounds the host
        // call even if something in it does not honour that.
        let request = tokio::task::spawn_blocking(move || http_get(&target, limit));
        let result = match tokio::time::timeout(limit + Duration::from_millis(100), request).await {
            Ok(done) => done?,
            Err(_) => Err(format!("timed out after {} ms", limit.as_millis())),
        };
        let summary = match &result {
            Ok(r) => json!({ "status": r.status }),
            Err(e) => json!({ "error": e }),
        };
        self.audit
            .allowed(AuditKind::Connect, json!({ "url": url, "result": summary }));
        Ok(Ok(result))
    }
}

/// A plain, capped GET; no redirects, no proxy from the environment.
fn http_get(url: &str, limit: Duration) -> Result<wit::HttpResponse, String> {
    use std::io::Read;
    let started = Instant::now();
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(limit))
        .http_status_as_error(false)
        .max_redirects(0)
        .proxy(None)
        .build()
        .into();
    let mut response = agent.get(url).call().map_err(|e| e.to_string())?;
    let status = response.status().as_u16();
    let mut body = Vec::new();
    let reader = response.body_mut().as_reader();
    reader
        .take(64 * 1024)
        .read_to_end(&mut body)
        .map_err(|e| e.to_string())?;
    Ok(wit::HttpResponse {
        status,
        body,
        duration_ms: started.elapsed().as_millis() as u32,
    })
}

pub fn add_to_linker(linker: &mut Linker<StageState>) -> wasmtime::Result<()> {
    wit::add_to_linker::<StageState, HasSelf<NetworkHost>>(linker, |s| &mut s.network)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connect_patterns() {
        let grants: Vec<String> = [
            "127.0.0.*:*",
            "10.1.*.*:443",
            "db.internal:5432",
            "[::1]:80",
            "not a pattern",
        ]
        .map(String::from)
        .to_vec();
        #[rustfmt::skip]
        let table = [
            ("127.0.0.1", 22, true),
            ("127.0.0.254", 65535, true),
            ("127.0.1.1", 22, false),
            // wildcards match IP literals only, never names that spell one
            ("127.0.0.1.attacker.example", 80, false),
            ("127.0.0.1.", 80, false),
            ("127.1", 80, false),
            ("0x7f000001", 80, false),
            ("10.1.2.3", 443, true),
            ("10.1.2.3", 444, false),
            ("10.2.2.3", 443, false),
            // names: exactly, case-insensitively, on the granted port
            ("db.internal", 5432, true),
            ("DB.INTERNAL", 5432, true),
            ("db.internal", 5433, false),
            ("db.internal.", 5432, false),
            ("x.db.internal", 5432, false),
            ("evil.example", 443, false),
            // IPv6, bracketed or not, exactly
            ("::1", 80, true),
            ("[::1]", 80, true),
            ("0:0:0:0:0:0:0:1", 80, true),
            ("::1", 81, false),
            ("::2", 80, false),
            // an IPv4 pattern is not an IPv4-mapped IPv6 address
            ("::ffff:127.0.0.1", 22, false),
            ("not a pattern", 1, false),
        ];
        for (host, port, expected) in table {
            assert_eq!(allows(&grants, host, port), expected, "{host}:{port}");
        }
        assert!(!allows(&[], "127.0.0.1", 1));
        let any_ip = ["*:22".to_string()];
        assert!(allows(&any_ip, "192.0.2.1", 22));
        assert!(allows(&any_ip, "2001:db8::1", 22));
        assert!(
            !allows(&any_ip, "localhost", 22),
            "`*` is any IP, never a name"
        );
    }
}
