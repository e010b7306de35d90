//! The grammar of grant patterns, so that each means one thing: exec `args`
//! patterns (checked here at load, matched by `caps::exec`) and `connect`
//! patterns (parsed here, both at load and by `caps::network::allows`).
//!
//! ```text
//! args      = pattern*                  one per argument position
//! pattern   = "**"                      all remaining arguments; only as the last pattern
//!           | alt ("|" alt)*            one argument matching any alternative
//! alt       = text with `*` (any text) and `?` (one character); never `**`
//!
//! connect   = host ":" port
//! host      = "*"                       any IP literal (v4 or v6), never a name
//!           | octet "." octet "." octet "." octet     an IPv4 literal; octet = 0-255 or "*"
//!           | "[" ipv6 "]"              one IPv6 literal, exactly
//!           | name                      one DNS name, exactly (case-insensitive), no wildcards
//! port      = 1-65535 | "*"
//! ```

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// A problem with one pattern: what is wrong and how to fix it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PatternError {
    pub message: String,
    pub help: String,
}

fn problem(message: impl Into<String>, help: impl Into<String>) -> PatternError {
    PatternError {
        message: message.into(),
        help: help.into(),
    }
}

/// The problems of an exec grant's `args`, by position: `**` anywhere but
/// alone in the last position is refused, because `caps::exec` stops
/// checking at the first `**`.
pub fn args_problems(args: &[String]) -> Vec<(usize, PatternError)> {
    let last = args.len().saturating_sub(1);
    args.iter()
        .enumerate()
        .filter_map(|(i, pattern)| {
            if pattern == "**" && i != last {
                Some((i, problem(
                    format!("`**` is argument pattern {} of {}, but it may only be the last", i + 1, args.len()),
                    "`**` matches all remaining arguments, so the patterns after it would never be checked; \
                     make `**` the last pattern, or use `*` for exactly one argument of any text",
                )))
            } else if pattern != "**" && pattern.contains("**") {
                Some((i, problem(
                    format!("argument pattern `{pattern}` contains `**`"),
                    "`**` stands alone, as the last pattern, for all remaining arguments; inside a pattern \
                     write `*` for any text within one argument (e.g. `-out=*`)",
                )))
            } else {
                None
            }
        })
        .collect()
}

/// The host part of a `connect` pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostPattern {
    /// `*`: any IP literal, never a name.
    AnyIp,
    /// An IPv4 literal; `None` octets are `*`.
    V4([Option<u8>; 4]),
    /// `[…]`: one IPv6 literal.
    V6(Ipv6Addr),
    /// One DNS name, lowercase, matched exactly.
    Name(String),
}

/// One parsed `connect` pattern, `host:port`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectPattern {
    pub host: HostPattern,
    /// `None`: any port.
    pub port: Option<u16>,
}

/// What a plugin asks to reach: an IP literal or a name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Ip(IpAddr),
    Name(String),
}

impl Target {
    /// `host` as the plugin gave it: an IP literal when std parses it as one
    /// (an IPv6 literal may be bracketed), a name otherwise. Forms a
    /// resolver may read as an address (`127.1`, `127.0.0.1.`) are names
    /// here, so they match only a name pattern, and no such pattern loads.
    pub fn parse(host: &str) -> Target {
        let bare = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .and_then(|h| h.parse::<Ipv6Addr>().ok());
        match (bare, host.parse::<IpAddr>()) {
            (Some(v6), _) => Target::Ip(IpAddr::V6(v6)),
            (None, Ok(ip)) => Target::Ip(ip),
            (None, Err(_)) => Target::Name(host.to_string()),
        }
    }
}

const CONNECT_FORMS: &str = "write `host:port`: an IP address whose octets may be `*` (`10.0.0.*:443`), `*` for any IP \
     address, `[::1]` for IPv6, or one exact host name (`db.internal:5432`); the port is a number or `*`";

impl ConnectPattern {
    pub fn parse(pattern: &str) -> Result<ConnectPattern, PatternError> {
        let Some((host, port)) = pattern.rsplit_once(':') else {
            return Err(problem(
                format!("connect pattern `{pattern}` has no port"),
                CONNECT_FORMS,
            ));
        };
        let port = match port {
            "*" => None,
            p if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => match p.parse::<u16>() {
                Ok(n) if n > 0 => Some(n),
                _ => {
                    return Err(problem(
                        format!("connect pattern `{pattern}`: port `{p}` is not 1-65535"),
                        "the port is a number from 1 to 65535, or `*` for any port",
                    ));
                }
            },
            p => {
                return Err(problem(
                    format!("connect pattern `{pattern}`: port `{p}` is not a number or `*`"),
                    "the port is a number from 1 to 65535, or `*` for any port (no ranges or partial wildcards)",
                ));
            }
        };
        let host = host_pattern(pattern, host)?;
        Ok(ConnectPattern { host, port })
    }

    /// Whether `target` on `port` matches: IP patterns match only IP
    /// literals, a name pattern only the same name.
    pub fn matches(&self, target: &Target, port: u16) -> bool {
        if self.port.is_some_and(|p| p != port) {
            return false;
        }
        match (&self.host, target) {
            (HostPattern::AnyIp, Target::Ip(_)) => true,
            (HostPattern::V4(octets), Target::Ip(IpAddr::V4(ip))) => octets
                .iter()
                .zip(ip.octets())
                .all(|(want, got)| want.is_none_or(|w| w == got)),
            (HostPattern::V6(want), Target::Ip(IpAddr::V6(ip))) => want == ip,
            (HostPattern::Name(want), Target::Name(name)) => want.eq_ignore_ascii_case(name),
            _ => false,
        }
    }
}

fn host_pattern(pattern: &str, host: &str) -> Result<HostPattern, PatternError> {
    if host == "*" {
        return Ok(HostPattern::AnyIp);
    }
    if let Some(inner) = host.strip_prefix('[') {
        return match inner.strip_suffix(']').map(str::parse::<Ipv6Addr>) {
            Some(Ok(ip)) => Ok(HostPattern::V6(ip)),
            _ => Err(problem(
                format!("connect pattern `{pattern}`: `{host}` is not an IPv6 address"),
                "write one IPv6 address in brackets, exactly, e.g. `[::1]:8080` (IPv6 wildcards are not supported; `*` is any IP address)",
            )),
        };
    }
    if host.contains(':') {
        return Err(problem(
            format!("connect pattern `{pattern}`: an IPv6 address must be in brackets"),
            format!("write `[{host}]:<port>`"),
        ));
    }
    if host.is_empty() {
        return Err(problem(
            format!("connect pattern `{pattern}` has no host"),
            CONNECT_FORMS,
        ));
    }
    let labels: Vec<&str> = host.split('.').collect();
    let numeric = |l: &str| l == "*" || (!l.is_empty() && l.bytes().all(|b| b.is_ascii_digit()));
    if labels.iter().all(|l| numeric(l)) {
        if labels.len() != 4 {
            return Err(problem(
                format!("connect pattern `{pattern}`: `{host}` is not an IPv4 address"),
                "write four octets, each 0-255 or `*`, e.g. `10.0.0.*`",
            ));
        }
        let mut octets = [None; 4];
        for (slot, label) in octets.iter_mut().zip(&labels) {
            if *label == "*" {
                continue;
            }
            // Through `Ipv4Addr`'s own rules: no leading zeros, 0-255.
            let probe = format!("{label}.0.0.0");
            match probe.parse::<Ipv4Addr>() {
                Ok(ip) => *slot = Some(ip.octets()[0]),
                Err(_) => {
                    return Err(problem(
                        format!("connect pattern `{pattern}`: octet `{label}` is not 0-255"),
                        "each octet is a decimal number from 0 to 255 without leading zeros, or `*`",
                    ));
                }
            }
        }
        return Ok(HostPattern::V4(octets));
    }
    if host.contains('*') || host.contains('?') {
        return Err(problem(
            format!(
                "connect pattern `{pattern}`: name wildcards are not supported; list each host"
            ),
            "a host name matches only itself (case-insensitive); wildcards are for IP addresses \
             (`10.0.0.*`, `*`), which the host checks as addresses, never as text",
        ));
    }
    if host.ends_with('.') {
        return Err(problem(
            format!("connect pattern `{pattern}`: `{host}` ends with a dot"),
            format!(
                "write the name without it: `{}`",
                host.trim_end_matches('.')
            ),
        ));
    }
    let label_ok = |l: &&str| {
        !l.is_empty()
            && l.len() <= 63
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    if host.len() > 253 || !labels.iter().all(label_ok) {
        return Err(problem(
            format!("connect pattern `{pattern}`: `{host}` is not a host name"),
            "a host name is dot-separated labels of ASCII letters, digits and `-`, e.g. `db.internal`",
        ));
    }
    if labels
        .last()
        .is_some_and(|l| l.starts_with(|c: char| c.is_ascii_digit()))
    {
        return Err(problem(
            format!("connect pattern `{pattern}`: `{host}` looks like a number, not a host name"),
            "a resolver may read a name ending in a number as an address (`127.1`, `0x7f.1`); \
             write an IPv4 address as four decimal octets, e.g. `127.0.0.1`",
        ));
    }
    Ok(HostPattern::Name(host.to_ascii_lowercase()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn args_patterns() {
        let strs = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        #[rustfmt::skip]
        let table: &[(&[&str], &[usize])] = &[
            (&[], &[]),
            (&["**"], &[]),
            (&["init|plan", "**"], &[]),
            (&["-out=*", "*"], &[]),
            (&["**", "apply"], &[0]),
            (&["a", "**", "**"], &[1]),
            (&["a**"], &[0]),
            (&["**|x", "**"], &[0]),
            (&["x|**"], &[0]),
            (&["***"], &[0]),
        ];
        for (args, bad) in table {
            let got: Vec<usize> = args_problems(&strs(args)).iter().map(|(i, _)| *i).collect();
            assert_eq!(&got, bad, "{args:?}");
        }
        let (_, e) = &args_problems(&strs(&["**", "apply"]))[0];
        assert!(e.message.contains("may only be the last"), "{e:?}");
    }

    /// The parsed host and port, or words of the refusal.
    type Want = Result<(HostPattern, Option<u16>), &'static str>;

    #[test]
    fn connect_pattern_grammar() {
        #[rustfmt::skip]
        let table: &[(&str, Want)] = &[
            ("127.0.0.1:*", Ok((HostPattern::V4([Some(127), Some(0), Some(0), Some(1)]), None))),
            ("10.*.0.*:443", Ok((HostPattern::V4([Some(10), None, Some(0), None]), Some(443)))),
            ("*:22", Ok((HostPattern::AnyIp, Some(22)))),
            ("[::1]:80", Ok((HostPattern::V6(Ipv6Addr::LOCALHOST), Some(80)))),
            ("DB.Internal:5432", Ok((HostPattern::Name("db.internal".into()), Some(5432)))),
            ("localhost:*", Ok((HostPattern::Name("localhost".into()), None))),
            ("*.internal:22", Err("name wildcards are not supported")),
            ("db*:22", Err("name wildcards are not supported")),
            ("127.0.0.1.*:80", Err("not an IPv4 address")),
            ("127.0.*:80", Err("not an IPv4 address")),
            ("127.0.0.1*:80", Err("name wildcards")),
            ("256.0.0.1:80", Err("not 0-255")),
            ("127.0.0.01:80", Err("not 0-255")),
            ("127.1:80", Err("not an IPv4 address")),
            ("0x7f.1:80", Err("looks like a number")),
            ("db.internal.:80", Err("ends with a dot")),
            ("::1:80", Err("must be in brackets")),
            ("[::*]:80", Err("not an IPv6 address")),
            ("db.internal", Err("has no port")),
            ("db.internal:", Err("not a number")),
            ("db.internal:80-90", Err("not a number")),
            ("db.internal:8*", Err("not a number")),
            ("db.internal:+80", Err("not a number")),
            ("db.internal:0", Err("not 1-65535")),
            ("db.internal:65536", Err("not 1-65535")),
            (":80", Err("has no host")),
            ("bad_-.x:1", Err("not a host name")),
            ("exa mple:1", Err("not a host name")),
        ];
        for (pattern, want) in table {
            let got = ConnectPattern::parse(pattern);
            match (want, &got) {
                (Ok((host, port)), Ok(p)) => {
                    assert_eq!((&p.host, &p.port), (host, port), "{pattern}")
                }
                (Err(text), Err(e)) => assert!(e.message.contains(text), "{pattern}: {e:?}"),
                _ => panic!("{pattern}: want {want:?}, got {got:?}"),
            }
        }
    }

    #[test]
    fn targets() {
        assert_eq!(
            Target::parse("127.0.0.1"),
            Target::Ip("127.0.0.1".parse().unwrap())
        );
        assert_eq!(Target::parse("[::1]"), Target::Ip("::1".parse().unwrap()));
        assert_eq!(Target::parse("::1"), Target::Ip("::1".parse().unwrap()));
        for name in [
            "127.0.0.1.",
            "127.1",
            "0x7f000001",
            "127.0.0.1.attacker.example",
            "[127.0.0.1]",
        ] {
            assert_eq!(Target::parse(name), Target::Name(name.into()), "{name}");
        }
    }
}
