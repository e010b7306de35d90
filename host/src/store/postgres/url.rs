//! A PostgreSQL run store's URL (`postgres://user[:password]@host[:port]/db[?…]`,
//! or `postgresql://`): read into the client's settings, and shown
//! everywhere with its password replaced by `***`.

use std::time::Duration;

use ::postgres::config::{Config, SslMode};

use super::PgError;

/// The schemes of a PostgreSQL URL.
const SCHEMES: [&str; 2] = ["postgres://", "postgresql://"];

/// Whether `given` (a `--store`) is a PostgreSQL URL rather than a path.
pub fn is_postgres(given: &str) -> bool {
    SCHEMES.iter().any(|s| given.starts_with(s))
}

/// `url` with its password (in the user part or a `password=` parameter)
/// replaced by `***`. The user part ends at the first `@`, as the client
/// reads it.
pub fn redact(url: &str) -> String {
    let Some(scheme) = SCHEMES.iter().find(|s| url.starts_with(**s)) else {
        return url.to_string();
    };
    let rest = &url[scheme.len()..];
    let (user, rest) = match rest.find('@') {
        Some(at) => {
            let creds = &rest[..at];
            let user = match creds.find(':') {
                Some(colon) => format!("{}:***@", &creds[..colon]),
                None => format!("{creds}@"),
            };
            (user, &rest[at + 1..])
        }
        None => (String::new(), rest),
    };
    let (place, query) = match rest.find('?') {
        Some(q) => (&rest[..q], Some(&rest[q + 1..])),
        None => (rest, None),
    };
    let mut shown = format!("{scheme}{user}{place}");
    if let Some(query) = query {
        let params: Vec<String> = query
            .split('&')
            .map(|p| match p.split_once('=') {
                Some((key, _)) if key == "password" => format!("{key}=***"),
                _ => p.to_string(),
            })
            .collect();
        shown.push('?');
        shown.push_str(&params.join("&"));
    }
    shown
}

/// The client settings `url` gives: the password from `$PGPASSWORD` when
/// the URL has none; plain connections only for now (`sslmode=require`,
/// `verify-ca` and `verify-full` are refused rather than quietly not
/// encrypted); 30 s to connect unless `connect_timeout` says otherwise.
pub fn config(url: &str) -> Result<Config, PgError> {
    let (without_tls, mode) = take_sslmode(url);
    match mode.as_deref() {
        None | Some("disable" | "allow" | "prefer") => {}
        Some(tls @ ("require" | "verify-ca" | "verify-full")) => {
            return Err(PgError::TlsUnsupported(tls.to_string()));
        }
        Some(other) => {
            return Err(PgError::Url(format!(
                "unknown sslmode `{other}` (disable, allow, prefer, require, verify-ca or verify-full)"
            )));
        }
    }
    let mut config: Config = without_tls
        .parse()
        .map_err(|e: ::postgres::Error| PgError::Url(super::said(&e)))?;
    config.ssl_mode(SslMode::Disable);
    if config.get_password().is_none()
        && let Some(password) = std::env::var_os("PGPASSWORD")
    {
        config.password(password.as_encoded_bytes());
    }
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(Duration::from_secs(30));
    }
    if config.get_application_name().is_none() {
        config.application_name("capstan");
    }
    Ok(config)
}

/// `url` without its `sslmode` parameter, and that parameter's value (the
/// client knows fewer modes than libpq, and none of them is TLS here).
fn take_sslmode(url: &str) -> (String, Option<String>) {
    // Parameters follow the first `?` after the user part.
    let after_user = url.find('@').map_or(0, |at| at + 1);
    let Some(q) = url[after_user..].find('?').map(|q| after_user + q) else {
        return (url.to_string(), None);
    };
    let mut mode = None;
    let kept: Vec<&str> = url[q + 1..]
        .split('&')
        .filter(|p| match p.split_once('=') {
            Some(("sslmode", value)) => {
                mode = Some(value.to_string());
                false
            }
            _ => true,
        })
        .collect();
    let mut rest = url[..q].to_string();
    if !kept.is_empty() {
        rest.push('?');
        rest.push_str(&kept.join("&"));
    }
    (rest, mode)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_redacted_wherever_the_url_has_one() {
        assert_eq!(
            redact("postgres://capstan:s3cret@db.example:5432/capstan"),
            "postgres://capstan:***@db.example:5432/capstan"
        );
        assert_eq!(
            redact("postgresql://capstan@db/capstan?password=s3cret&sslmode=disable"),
            "postgresql://capstan@db/capstan?password=***&sslmode=disable"
        );
        // The client ends the user part at the first `@`: so does redaction.
        assert_eq!(redact("postgres://u:p@ss@h/d"), "postgres://u:***@ss@h/d");
        assert_eq!(redact("postgres://h/d"), "postgres://h/d");
        assert_eq!(redact("/a/path.db"), "/a/path.db");
    }

    #[test]
    fn sslmodes_that_ask_for_tls_are_refused_others_are_plain() {
        for mode in ["require", "verify-ca", "verify-full"] {
            let err = config(&format!("postgres://u@h/d?sslmode={mode}")).unwrap_err();
            assert!(
                err.to_string().contains("TLS") && err.to_string().contains(mode),
                "{err}"
            );
        }
        for mode in ["disable", "allow", "prefer"] {
            let c = config(&format!(
                "postgres://u@h:7/d?sslmode={mode}&connect_timeout=5"
            ))
            .unwrap();
            assert_eq!(c.get_ssl_mode(), SslMode::Disable);
            assert_eq!(c.get_ports(), [7]);
            assert_eq!(c.get_connect_timeout(), Some(&Duration::from_secs(5)));
        }
        let err = config("postgres://u@h/d?sslmode=sometimes").unwrap_err();
        assert!(err.to_string().contains("sometimes"), "{err}");
    }

    #[test]
    fn a_password_in_the_url_wins_over_pgpassword() {
        let c = config("postgres://u:from%40url@h/d").unwrap();
        assert_eq!(c.get_password(), Some(&b"from@url"[..]));
    }
}
