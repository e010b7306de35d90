//! The `connect` capability: TCP reachability probes to granted
//! `host:port` patterns. Plugins have no sockets of their own.

use std::time::{Duration, Instant};

use serde_json::json;
use wasmtime::component::{HasSelf, Linker};
use wildmatch::WildMatch;

use super::audit::StageAudit;
use crate::runtime::StageState;
use crate::runtime::bindings::capstan::plugin::network as wit;

/// Whether `host:port` matches one of the grant's patterns (`*` wildcards,
/// e.g. `127.0.0.1:*` or `*.internal:22`).
pub fn allows(patterns: &[String], host: &str, port: u16) -> bool {
    let target = format!("{host}:{port}");
    patterns.iter().any(|p| WildMatch::new(p).matches(&target))
}

/// Per-stage state of the `network` interface.
pub struct NetworkHost {
    pub patterns: Vec<String>,
    pub audit: StageAudit,
}

impl wit::Host for NetworkHost {
    async fn tcp_probe(
        &mut self,
        host: String,
        port: u16,
        timeout_ms: u32,
    ) -> wasmtime::Result<Result<Result<u32, String>, wit::Error>> {
        let detail = json!({ "host": host, "port": port });
        if !allows(&self.patterns, &host, port) {
            let reason = format!(
                "connect to `{host}:{port}` is not granted (granted: {:?}); add it to `connect` in the stage's grants",
                self.patterns
            );
            self.audit.denied("connect", detail, &reason);
            return Ok(Err(wit::Error::NotPermitted(reason)));
        }
        let started = Instant::now();
        let limit = Duration::from_millis(timeout_ms.clamp(1, 60_000) as u64);
        let result = match tokio::time::timeout(
            limit,
            tokio::net::TcpStream::connect((host.as_str(), port)),
        )
        .await
        {
            Ok(Ok(_stream)) => Ok(started.elapsed().as_millis() as u32),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err(format!("timed out after {} ms", limit.as_millis())),
        };
        self.audit.allowed(
            "connect",
            json!({ "host": host, "port": port, "result": format!("{result:?}") }),
        );
        Ok(Ok(result))
    }
}

pub fn add_to_linker(linker: &mut Linker<StageState>) -> wasmtime::Result<()> {
    wit::add_to_linker::<StageState, HasSelf<NetworkHost>>(linker, |s| &mut s.network)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connect_patterns() {
        let grants = vec!["127.0.0.1:*".to_string(), "db.internal:5432".to_string()];
        let table = [
            ("127.0.0.1", 22, true),
            ("127.0.0.1", 65535, true),
            ("127.0.0.10", 22, false),
            ("db.internal", 5432, true),
            ("db.internal", 5433, false),
            ("evil.example", 443, false),
        ];
        for (host, port, expected) in table {
            assert_eq!(allows(&grants, host, port), expected, "{host}:{port}");
        }
        assert!(!allows(&[], "127.0.0.1", 1));
    }
}
