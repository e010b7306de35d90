//! The `connect` capability: TCP reachability probes, HTTP GETs and
//! webhook POSTs to granted `host:port` patterns. Plugins have no sockets
//! of their own.
//!
//! An HTTP request is checked and made as one object: the URL is parsed
//! once, its host and port checked against the grant, the host resolved
//! once, and the connection made to exactly those addresses (a resolver
//! that only hands them back), so nothing is looked up again between the
//! check and the use; no proxy from the environment, no redirects.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde_json::json;
use wasmtime::component::{HasSelf, Linker};

use super::audit::StageAudit;
use crate::bindings::capstan::plugin::network as wit;
use crate::caps::state::StageState;
use crate::pipeline::patterns::{ConnectPattern, Target};
use crate::store::AuditKind;

/// The largest body a plugin may POST: a chat message with room to spare
/// (Slack takes 40,000 characters of text, Teams about 28 KB), and a bound
/// on what one call can send out.
pub const MAX_POST_BODY: usize = 256 * 1024;

/// The most of an answer's body handed back to the plugin.
pub const MAX_RESPONSE_BODY: u64 = 64 * 1024;

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
    /// The run's secrets: none leaves the host in a probe.
    pub redactor: crate::caps::secret::Redactor,
    /// The secrets granted to the stage: a POST to `secret:<name>` goes to
    /// the URL one holds (a webhook's), which the plugin never sees.
    pub secrets: Option<std::sync::Arc<crate::caps::secret::deliver::Delivered>>,
}

impl NetworkHost {
    /// `Some(error)` when `host:port` is not granted, or `target` (the host
    /// or URL) holds a secret (the denial recorded).
    fn check(
        &self,
        host: &str,
        port: u16,
        target: &str,
        detail: serde_json::Value,
    ) -> Option<wit::Error> {
        if let Some(origin) = self.redactor.find(target.as_bytes()) {
            // Neither the URL nor the body is shown: a webhook's URL holds
            // its own token.
            let reason = format!(
                "the request to `{host}:{port}` holds {origin} (or an encoding of it): a secret leaves \
                 the host only for the programs it is granted to"
            );
            let reason = self.redactor.redact(&reason).into_owned();
            self.audit.denied(AuditKind::Connect, detail, &reason);
            return Some(wit::Error::NotPermitted(reason));
        }
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

/// What an HTTP request sends.
enum Method {
    Get,
    Post { content_type: String, body: Vec<u8> },
}

/// A URL a plugin asked for, parsed once: what is checked against the grant
/// and what the request then goes to.
struct Endpoint {
    url: String,
    /// The URL is the value of this granted secret (`secret:<name>`).
    secret: Option<String>,
    host: String,
    port: u16,
    /// The URL as the audit log and messages show it: whole for a GET (a
    /// health endpoint), only `scheme://host:port` for a POST, because
    /// webhook URLs carry their token in the path (Slack) or the query
    /// (Teams workflows).
    shown: String,
}

impl Endpoint {
    /// Parse `url`, whose scheme must be one of `schemes`; `whole` says
    /// whether messages may show the whole URL.
    fn parse(url: &str, schemes: &[&str], whole: bool) -> Result<Endpoint, wit::Error> {
        let uri: ureq::http::Uri = url.parse().map_err(|e| {
            let named = if whole {
                format!("`{url}`")
            } else {
                "the URL".to_string()
            };
            wit::Error::Invalid(format!("{named} is not a URL: {e}"))
        })?;
        let scheme = uri.scheme_str().unwrap_or_default();
        let host = uri.host().unwrap_or_default();
        if !schemes.contains(&scheme) || host.is_empty() {
            let wanted: Vec<String> = schemes.iter().map(|s| format!("{s}://")).collect();
            let named = if whole {
                format!("`{url}`")
            } else {
                format!("`{scheme}://{host}…`")
            };
            return Err(wit::Error::Invalid(format!(
                "{named}: only {} URLs with a host can be requested",
                wanted.join(" and ")
            )));
        }
        let host = host.trim_matches(['[', ']']).to_string();
        let port = uri
            .port_u16()
            .unwrap_or(if scheme == "https" { 443 } else { 80 });
        let shown = if whole {
            url.to_string()
        } else {
            // An IPv6 host is written back in brackets.
            let at = if host.contains(':') {
                format!("[{host}]")
            } else {
                host.clone()
            };
            format!("{scheme}://{at}:{port}")
        };
        Ok(Endpoint {
            secret: None,
            url: url.to_string(),
            host,
            port,
            shown,
        })
    }

    /// `text` (an error from the HTTP client) without the URL in it, when
    /// the URL may not be shown.
    fn scrub(&self, text: String) -> String {
        if self.shown == self.url {
            text
        } else {
            text.replace(&self.url, &self.shown)
        }
    }
}

impl NetworkHost {
    /// Check `endpoint` against the grant, resolve its host once and make
    /// the request to the addresses resolved, within `limit`; record it.
    async fn request(
        &self,
        endpoint: Endpoint,
        method: Method,
        limit: Duration,
    ) -> Result<Result<wit::HttpResponse, String>, wit::Error> {
        let (verb, sent) = match &method {
            Method::Get => ("GET", None),
            Method::Post { body, .. } => ("POST", Some(body.len())),
        };
        let detail = |more: serde_json::Value| {
            let mut d = json!({ "method": verb, "url": endpoint.shown });
            if let Some(name) = &endpoint.secret {
                d["url_secret"] = name.as_str().into();
            }
            if let Some(bytes) = sent {
                d["bytes"] = bytes.into();
            }
            if let (Some(d), serde_json::Value::Object(more)) = (d.as_object_mut(), more) {
                d.extend(more);
            }
            d
        };
        // The whole URL and the body are searched for secrets: a plugin
        // could carry one in either to a granted host. (A URL that is a
        // granted secret is the one place that secret goes.)
        let mut searched = match &endpoint.secret {
            Some(_) => Vec::new(),
            // Decoded too: a server reads `%2D` as `-`, whichever bytes a
            // plugin chose to escape.
            None => {
                let decoded =
                    percent_encoding::percent_decode_str(&endpoint.url).collect::<Vec<u8>>();
                [endpoint.url.as_bytes(), b"\n", &decoded].concat()
            }
        };
        if let Method::Post { body, .. } = &method {
            searched.push(b'\n');
            searched.extend_from_slice(body);
        }
        let searched = String::from_utf8_lossy(&searched);
        let checked = self.check(&endpoint.host, endpoint.port, &searched, detail(json!({})));
        if let Some(denied) = checked {
            return Err(denied);
        }
        let started = Instant::now();
        let result = match resolve(&endpoint, limit).await {
            Err(e) => Err(e),
            Ok(addrs) => {
                let left = limit.saturating_sub(started.elapsed());
                let (url, pinned) = (endpoint.url.clone(), addrs.clone());
                // ureq's own global timeout bounds the request; this bounds
                // the host call even if something in it does not honour that.
                let request =
                    tokio::task::spawn_blocking(move || send(&url, pinned, method, left, started));
                let bound = left + Duration::from_millis(100);
                match tokio::time::timeout(bound, request).await {
                    Ok(done) => done
                        .map_err(|e| format!("the request ended abnormally: {e}"))
                        .and_then(|r| r),
                    Err(_) => Err(format!("timed out after {} ms", limit.as_millis())),
                }
                .map(|r| (r, addrs))
            }
        };
        let result = result.map_err(|e| endpoint.scrub(e));
        let summary = match &result {
            Ok((r, addrs)) => json!({ "status": r.status, "addresses": addrs }),
            Err(e) => json!({ "error": e }),
        };
        self.audit
            .allowed(AuditKind::Connect, detail(json!({ "result": summary })));
        Ok(result.map(|(r, _)| r))
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
        let detail = json!({ "host": host, "port": port });
        if let Some(denied) = self.check(&host, port, &host, detail) {
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
        let endpoint = match Endpoint::parse(&url, &["http"], true) {
            Ok(endpoint) => endpoint,
            Err(e) => return Ok(Err(e)),
        };
        Ok(self
            .request(endpoint, Method::Get, self.limit(timeout_ms))
            .await)
    }

    async fn http_post(
        &mut self,
        url: String,
        content_type: String,
        body: Vec<u8>,
        timeout_ms: u32,
    ) -> wasmtime::Result<Result<Result<wit::HttpResponse, String>, wit::Error>> {
        self.audit.within_budget()?;
        let endpoint = match url.strip_prefix(SECRET_URL) {
            Some(name) => self.secret_url(name),
            None => Endpoint::parse(&url, &["http", "https"], false),
        };
        let endpoint = match endpoint {
            Ok(endpoint) => endpoint,
            Err(e) => return Ok(Err(e)),
        };
        if body.len() > MAX_POST_BODY {
            return Ok(Err(wit::Error::Invalid(format!(
                "the body to POST to {} is {} bytes, more than the {MAX_POST_BODY} allowed; send less",
                endpoint.shown,
                body.len()
            ))));
        }
        // A header value is one line of visible ASCII: nothing a plugin
        // writes there can start another header.
        if content_type.is_empty()
            || content_type.len() > 256
            || !content_type.bytes().all(|b| (b' '..=b'~').contains(&b))
        {
            return Ok(Err(wit::Error::Invalid(format!(
                "content type {content_type:?} is not one line of visible ASCII (at most 256 bytes), \
                 e.g. \"application/json\""
            ))));
        }
        let method = Method::Post { content_type, body };
        Ok(self.request(endpoint, method, self.limit(timeout_ms)).await)
    }
}

/// A POST to `secret:<name>` goes to the URL the secret `<name>` granted
/// to the stage holds.
pub const SECRET_URL: &str = "secret:";

impl NetworkHost {
    /// The endpoint of the URL that the granted secret `name` holds; the
    /// secret's name, never its value, is in messages and the audit log.
    fn secret_url(&self, name: &str) -> Result<Endpoint, wit::Error> {
        let value = self.secrets.as_ref().and_then(|s| s.text_of(name));
        let Some(value) = value else {
            let reason = format!(
                "secret `{}` is not granted to this stage: declare it in [secrets] and grant it \
                 ([stages.<stage>.grants.secrets] {} = {{ env = \"<VARIABLE>\" }})",
                crate::text::inline(name),
                crate::caps::secret::toml_key(name)
            );
            self.audit.denied(
                AuditKind::Connect,
                json!({ "method": "POST", "url_secret": name }),
                &reason,
            );
            return Err(wit::Error::NotPermitted(reason));
        };
        let mut endpoint =
            Endpoint::parse(value.trim(), &["http", "https"], false).map_err(|_| {
                wit::Error::Invalid(format!(
                    "secret `{}` does not hold an http:// or https:// URL",
                    crate::text::inline(name)
                ))
            })?;
        endpoint.secret = Some(name.to_string());
        Ok(endpoint)
    }
}

/// The addresses of `endpoint`'s host, looked up once (an IP literal is its
/// own address), within `limit`.
async fn resolve(endpoint: &Endpoint, limit: Duration) -> Result<Vec<SocketAddr>, String> {
    let lookup = tokio::net::lookup_host((endpoint.host.as_str(), endpoint.port));
    match tokio::time::timeout(limit, lookup).await {
        Ok(Ok(addrs)) => {
            let addrs: Vec<SocketAddr> = addrs.take(Pinned::MAX).collect();
            if addrs.is_empty() {
                Err(format!("`{}` has no address", endpoint.host))
            } else {
                Ok(addrs)
            }
        }
        Ok(Err(e)) => Err(format!("cannot resolve `{}`: {e}", endpoint.host)),
        Err(_) => Err(format!(
            "timed out after {} ms resolving `{}`",
            limit.as_millis(),
            endpoint.host
        )),
    }
}

/// A resolver that hands back the addresses the host resolved when it
/// checked the request: ureq connects to those, and looks nothing up.
#[derive(Debug)]
struct Pinned(Vec<SocketAddr>);

impl Pinned {
    /// The most addresses ureq keeps from a resolver.
    const MAX: usize = 16;
}

impl ureq::unversioned::resolver::Resolver for Pinned {
    fn resolve(
        &self,
        _uri: &ureq::http::Uri,
        _config: &ureq::config::Config,
        _timeout: ureq::unversioned::transport::NextTimeout,
    ) -> Result<ureq::unversioned::resolver::ResolvedSocketAddrs, ureq::Error> {
        let mut out = self.empty();
        for addr in self.0.iter().take(Self::MAX) {
            out.push(*addr);
        }
        Ok(out)
    }
}

/// One capped request to `addrs`: no redirects, no proxy from the
/// environment; https verifies the URL's host name against the Mozilla
/// roots compiled in.
fn send(
    url: &str,
    addrs: Vec<SocketAddr>,
    method: Method,
    limit: Duration,
    started: Instant,
) -> Result<wit::HttpResponse, String> {
    use std::io::Read;
    let config = ureq::Agent::config_builder()
        .timeout_global(Some(limit))
        .http_status_as_error(false)
        .max_redirects(0)
        .proxy(None)
        .build();
    let agent = ureq::Agent::with_parts(
        config,
        ureq::unversioned::transport::DefaultConnector::new(),
        Pinned(addrs),
    );
    let answer = match method {
        Method::Get => agent.get(url).call(),
        Method::Post { content_type, body } => agent
            .post(url)
            .header("content-type", content_type)
            .send(&body[..]),
    };
    let mut response = answer.map_err(|e| e.to_string())?;
    let status = response.status().as_u16();
    let mut body = Vec::new();
    let reader = response.body_mut().as_reader();
    reader
        .take(MAX_RESPONSE_BODY)
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
    fn no_secret_leaves_in_a_probe() {
        use crate::caps::log::LogSink;
        use crate::caps::secret::{Origin, Redactor};
        let redactor = Redactor::new();
        redactor.add(Origin::Secret("token".into()), b"tok-0123456789");
        let host = NetworkHost {
            patterns: vec!["*:*".into(), "example.test:*".into()],
            audit: StageAudit::discard(LogSink::discard(1 << 20)),
            deadline: Instant::now(),
            redactor,
            secrets: None,
        };
        let url = "http://example.test/?t=dG9rLTAxMjM0NTY3ODk";
        let Some(wit::Error::NotPermitted(why)) = host.check("example.test", 80, url, json!({}))
        else {
            panic!("a URL holding a secret was let through");
        };
        assert_eq!(
            why,
            "the request to `example.test:80` holds secret `token` (or an encoding of it): a secret leaves the host only for the programs it is granted to"
        );
        assert!(
            host.check("example.test", 80, "http://example.test/", json!({}))
                .is_none()
        );
    }

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

    use std::io::{Read, Write};
    use std::net::TcpListener;
    use std::sync::mpsc;

    use crate::caps::log::LogSink;
    use wit::Host as _;

    /// A stage's network host granted `patterns`, with a minute to go.
    fn host(patterns: &[&str]) -> NetworkHost {
        NetworkHost {
            patterns: patterns.iter().map(|p| p.to_string()).collect(),
            audit: StageAudit::discard(LogSink::discard(1 << 20)),
            deadline: Instant::now() + Duration::from_secs(60),
            redactor: crate::caps::secret::Redactor::new(),
            secrets: None,
        }
    }

    /// A loopback HTTP server answering every request with `answer` (a
    /// whole HTTP response), sending each request it read (head and body)
    /// on the channel. Its thread ends with the test process.
    fn server(answer: &'static str) -> (u16, mpsc::Receiver<Vec<u8>>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { return };
                let request = read_request(&mut stream);
                let _ = stream.write_all(answer.as_bytes());
                if tx.send(request).is_err() {
                    return;
                }
            }
        });
        (port, rx)
    }

    /// One request: its head, then as many body bytes as Content-Length says.
    fn read_request(stream: &mut std::net::TcpStream) -> Vec<u8> {
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            let n = stream.read(&mut buf).unwrap_or(0);
            if n == 0 {
                return got;
            }
            got.extend_from_slice(&buf[..n]);
            // Not HTTP (a TLS handshake): answer at once.
            if !got[0].is_ascii_alphabetic() {
                return got;
            }
            let text = String::from_utf8_lossy(&got).to_ascii_lowercase();
            if let Some(end) = text.find("\r\n\r\n") {
                let length = text[..end]
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse::<usize>().ok())
                    .unwrap_or(0);
                if got.len() >= end + 4 + length {
                    return got;
                }
            }
        }
    }

    fn post(
        host: &mut NetworkHost,
        url: &str,
        body: &[u8],
    ) -> Result<Result<wit::HttpResponse, String>, wit::Error> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime
            .block_on(host.http_post(url.into(), "application/json".into(), body.to_vec(), 10_000))
            .unwrap()
    }

    /// Every route a POST has out of the host: the body (plain or encoded),
    /// the URL's path and query, and a `secret:` URL the stage is not
    /// granted. None reaches the (granted) server.
    #[test]
    fn no_secret_leaves_in_a_post() {
        use crate::caps::secret::Origin;
        let (port, requests) =
            server("HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok");
        let mut granted = host(&["127.0.0.1:*"]);
        granted
            .redactor
            .add(Origin::Secret("token".into()), b"tok-0123456789");
        let base = format!("http://127.0.0.1:{port}");
        let tries: [(String, &[u8]); 5] = [
            (format!("{base}/hook"), b"{\"text\": \"tok-0123456789\"}"),
            (
                format!("{base}/hook"),
                b"{\"text\": \"dG9rLTAxMjM0NTY3ODk=\"}",
            ),
            (format!("{base}/hook/tok-0123456789"), b"{}"),
            (format!("{base}/hook?t=tok%2D0123456789"), b"{}"),
            ("secret:token".to_string(), b"{}"),
        ];
        for (url, body) in tries {
            match post(&mut granted, &url, body) {
                Err(wit::Error::NotPermitted(why)) => {
                    assert!(!why.contains("tok-0123456789"), "{why}");
                }
                other => panic!("{url}: {other:?}"),
            }
        }
        assert!(requests.try_recv().is_err(), "nothing reached the server");
    }

    #[test]
    fn posts_go_to_granted_targets_only() {
        let (port, requests) =
            server("HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok");
        let url = format!("http://127.0.0.1:{port}/hooks/T0/secret-token?sig=abc");

        // Granted: the body and its type arrive as sent.
        let answer = post(&mut host(&["127.0.0.1:*"]), &url, br#"{"text":"hi"}"#)
            .expect("granted")
            .expect("answered");
        assert_eq!((answer.status, answer.body.as_slice()), (200, &b"ok"[..]));
        let request = String::from_utf8(requests.recv().unwrap()).unwrap();
        assert!(
            request.starts_with("POST /hooks/T0/secret-token?sig=abc HTTP/1.1\r\n"),
            "{request}"
        );
        assert!(
            request
                .to_ascii_lowercase()
                .contains("content-type: application/json\r\n")
        );
        assert!(request.ends_with("\r\n\r\n{\"text\":\"hi\"}"), "{request}");

        // Another port, a name for the address, another address: refused
        // before any connection, naming the grant, never the path.
        for (grant, target) in [
            (
                format!("127.0.0.1:{}", port.wrapping_add(1).max(1)),
                url.clone(),
            ),
            (
                "127.0.0.1:*".to_string(),
                format!("http://localhost:{port}/hooks/T0/secret-token"),
            ),
            ("127.0.0.2:*".to_string(), url.clone()),
        ] {
            let Err(wit::Error::NotPermitted(message)) = post(&mut host(&[&grant]), &target, b"{}")
            else {
                panic!("{target} with {grant}: not refused");
            };
            assert!(message.contains("add it to `connect`"), "{message}");
            assert!(!message.contains("secret-token"), "{message}");
        }
        assert!(
            requests.try_recv().is_err(),
            "a refused post reached the server"
        );
    }

    #[test]
    fn a_redirect_is_answered_not_followed() {
        let (elsewhere, followed) = server("HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n");
        let redirect: &'static str = Box::leak(
            format!(
                "HTTP/1.1 307 Temporary Redirect\r\nlocation: http://127.0.0.1:{elsewhere}/\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
            )
            .into_boxed_str(),
        );
        let (port, requests) = server(redirect);
        let url = format!("http://127.0.0.1:{port}/hook");
        let answer = post(&mut host(&["127.0.0.1:*"]), &url, b"{}")
            .unwrap()
            .unwrap();
        assert_eq!(answer.status, 307);
        assert!(requests.recv().is_ok());
        assert!(followed.try_recv().is_err(), "the redirect was followed");
    }

    #[test]
    fn oversize_bodies_bad_urls_and_header_tricks_are_refused_before_connecting() {
        let (port, requests) = server("HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n");
        let url = format!("http://127.0.0.1:{port}/hook/secret-token");
        let mut granted = host(&["127.0.0.1:*"]);
        let Err(wit::Error::Invalid(message)) =
            post(&mut granted, &url, &vec![b'x'; MAX_POST_BODY + 1])
        else {
            panic!("an oversize body was not refused");
        };
        assert!(
            message.contains("more than the 262144 allowed"),
            "{message}"
        );
        assert!(!message.contains("secret-token"), "{message}");
        for bad in [
            "ftp://127.0.0.1/x",
            "127.0.0.1:80/x",
            "http:///x",
            "not a url",
        ] {
            assert!(
                matches!(post(&mut granted, bad, b"{}"), Err(wit::Error::Invalid(_))),
                "{bad}"
            );
        }
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        for content_type in ["", "text/plain\r\nx-injected: 1", "t\u{e9}xt"] {
            let answer = runtime
                .block_on(granted.http_post(url.clone(), content_type.into(), b"{}".to_vec(), 1000))
                .unwrap();
            assert!(
                matches!(answer, Err(wit::Error::Invalid(_))),
                "{content_type:?}"
            );
        }
        assert!(
            requests.try_recv().is_err(),
            "a refused post reached the server"
        );
    }

    #[test]
    fn https_speaks_tls_to_the_address_checked() {
        // A plain-HTTP server on loopback: an https request to it is a TLS
        // handshake (it fails), not a plaintext request.
        let (port, requests) = server("HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n");
        let url = format!("https://127.0.0.1:{port}/hook");
        let answer = post(&mut host(&["127.0.0.1:*"]), &url, b"{}").expect("granted");
        assert!(
            answer.is_err(),
            "a plaintext server answered TLS: {answer:?}"
        );
        let hello = requests.recv().unwrap();
        assert_eq!(hello.first(), Some(&0x16), "not a TLS handshake record");
        // The default port of https is 443.
        let Err(wit::Error::NotPermitted(message)) = post(
            &mut host(&["127.0.0.1:80"]),
            "https://127.0.0.1/hook",
            b"{}",
        ) else {
            panic!("port 443 was taken as granted");
        };
        assert!(message.contains("127.0.0.1:443"), "{message}");
    }

    #[test]
    fn endpoints_show_only_what_may_be_shown() {
        #[rustfmt::skip]
        let table = [
            ("https://hooks.slack.com/services/T0/B0/XYZ", false, "hooks.slack.com", 443, "https://hooks.slack.com:443"),
            ("http://[::1]:8080/a?sig=s", false, "::1", 8080, "http://[::1]:8080"),
            ("http://user:pw@10.0.0.1/x", false, "10.0.0.1", 80, "http://10.0.0.1:80"),
            ("http://127.0.0.1:9/health", true, "127.0.0.1", 9, "http://127.0.0.1:9/health"),
        ];
        for (url, whole, host, port, shown) in table {
            let e =
                Endpoint::parse(url, &["http", "https"], whole).unwrap_or_else(|_| panic!("{url}"));
            assert_eq!(
                (e.host.as_str(), e.port, e.shown.as_str()),
                (host, port, shown),
                "{url}"
            );
            let scrubbed = e.scrub(format!("io error talking to {url}: refused"));
            assert_eq!(scrubbed.contains(url), whole, "{scrubbed}");
        }
        let Err(wit::Error::Invalid(message)) =
            Endpoint::parse("https://h/secret", &["http"], false)
        else {
            panic!("https was taken for a GET");
        };
        assert!(!message.contains("secret"), "{message}");
        assert!(message.contains("only http:// URLs"), "{message}");
    }
}
