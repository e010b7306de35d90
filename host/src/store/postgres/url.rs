//! A PostgreSQL run store's URL (`postgres://user[:password]@host[:port]/db[?…]`,
//! or `postgresql://`): read into the client's settings, and shown
//! everywhere with its password replaced by `***`.

use std::time::Duration;

use ::postgres::config::Config;

use super::PgError;
use super::tls::{Params, Tls};

/// The schemes of a PostgreSQL URL.
const SCHEMES: [&str; 2] = ["postgres://", "postgresql://"];

/// Whether `given` (a `--store`) is a PostgreSQL URL rather than a path.
pub fn is_postgres(given: &str) -> bool {
    SCHEMES.iter().any(|s| given.starts_with(s))
}

/// `url` with its password (in the user part or a `password=` parameter)
/// and a client key's passphrase (`sslpassword=`, refused anyway) replaced
/// by `***`. The user part ends at the first `@`, as the client
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
                Some((key, _)) if key == "password" || key == "sslpassword" => format!("{key}=***"),
                _ => p.to_string(),
            })
            .collect();
        shown.push('?');
        shown.push_str(&params.join("&"));
    }
    shown
}

/// The client settings `url` gives, and how it connects (TLS, see
/// [`tls`]): the password from `$PGPASSWORD` when the URL has none; 30 s to
/// connect unless `connect_timeout` says otherwise.
pub(super) fn config(url: &str) -> Result<(Config, Tls), PgError> {
    let (rest, params) = take_tls_params(url)?;
    let tls = Tls::new(params)?;
    let mut config: Config = rest
        .parse()
        .map_err(|e: ::postgres::Error| PgError::Url(super::said(&e)))?;
    config.ssl_mode(tls.mode().client());
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
    Ok((config, tls))
}

/// `url` without the TLS parameters read here ([`Params`]), and those
/// parameters, percent-decoded.
fn take_tls_params(url: &str) -> Result<(String, Params), PgError> {
    let mut params = Params::default();
    // Parameters follow the first `?` after the user part.
    let after_user = url.find('@').map_or(0, |at| at + 1);
    let Some(q) = url[after_user..].find('?').map(|q| after_user + q) else {
        return Ok((url.to_string(), params));
    };
    let mut kept = Vec::new();
    for param in url[q + 1..].split('&') {
        match param.split_once('=') {
            Some((key, value)) if Params::KEYS.contains(&key) => {
                let value = percent_encoding::percent_decode_str(value)
                    .decode_utf8()
                    .map_err(|_| PgError::Url(format!("{key}: not UTF-8 once percent-decoded")))?;
                params.set(key, value.into_owned());
            }
            _ => kept.push(param),
        }
    }
    let mut rest = url[..q].to_string();
    if !kept.is_empty() {
        rest.push('?');
        rest.push_str(&kept.join("&"));
    }
    Ok((rest, params))
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
    fn sslmodes_are_libpqs_and_tls_parameters_are_not_passed_to_the_client() {
        use ::postgres::config::SslMode;
        for (mode, client) in [
            ("disable", SslMode::Disable),
            ("allow", SslMode::Disable),
            ("prefer", SslMode::Prefer),
            ("require", SslMode::Require),
            // Without sslrootcert: the Mozilla roots.
            ("verify-ca", SslMode::Require),
            ("verify-full", SslMode::Require),
        ] {
            let (c, _) = config(&format!(
                "postgres://u@h:7/d?sslmode={mode}&connect_timeout=5"
            ))
            .unwrap();
            assert_eq!(c.get_ssl_mode(), client, "{mode}");
            assert_eq!(c.get_ports(), [7]);
            assert_eq!(c.get_connect_timeout(), Some(&Duration::from_secs(5)));
        }
        let (c, _) = config("postgres://u@h/d").unwrap();
        assert_eq!(c.get_ssl_mode(), SslMode::Prefer, "libpq's default");
        let err = config("postgres://u@h/d?sslmode=sometimes").unwrap_err();
        assert!(err.to_string().contains("sometimes"), "{err}");
        // In the clear, the files are not read (as libpq).
        config("postgres://u@h/d?sslmode=disable&sslrootcert=/no/such.pem").unwrap();
    }

    #[test]
    fn tls_files_that_cannot_be_used_are_named_with_the_fix() {
        let dir = tempfile::tempdir().unwrap();
        let err = |params: &str| {
            config(&format!("postgres://u:pw@h/d?{params}"))
                .err()
                .unwrap_or_else(|| panic!("{params} accepted"))
                .to_string()
        };
        // Percent-decoded.
        let e = err("sslmode=verify-full&sslrootcert=%2Fno%20such%2Fca.pem");
        assert!(
            e.starts_with("sslrootcert /no such/ca.pem cannot be read (")
                && e.contains("give a PEM file of the CA certificates"),
            "{e}"
        );
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        let e = err(&format!("sslmode=require&sslrootcert={}", empty.display()));
        assert!(e.contains("holds no certificate"), "{e}");
        let e = err("sslmode=require&sslcert=/c.pem");
        assert!(e.contains("sslcert is given without sslkey"), "{e}");
        let e = err("sslmode=require&sslpassword=s3cret");
        assert!(
            e.starts_with("sslpassword: a client key with a passphrase is not supported")
                && !e.contains("s3cret"),
            "{e}"
        );
        assert_eq!(
            redact("postgres://u@h/d?sslpassword=s3cret"),
            "postgres://u@h/d?sslpassword=***"
        );
        let e = err("sslmode=verify-full&sslrootcert=system");
        assert!(
            e.contains("sslrootcert=system (the system's CAs) is not supported"),
            "{e}"
        );
    }

    #[test]
    fn a_client_key_others_may_read_is_refused_as_libpq_does() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        // Read as PEM only after the mode is checked: any certificate does.
        let cert = dir.path().join("client.pem");
        std::fs::write(
            &cert,
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        let key = dir.path().join("client.key");
        std::fs::write(
            &key,
            "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
        )
        .unwrap();
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
        let url = format!(
            "postgres://u@h/d?sslmode=require&sslcert={}&sslkey={}",
            cert.display(),
            key.display()
        );
        let e = config(&url).err().unwrap().to_string();
        assert!(
            e.contains(&format!(
                "sslkey {} may be read or written by others (mode 0644): `chmod 600` it",
                key.display()
            )),
            "{e}"
        );
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
        // Private now: its content is what fails.
        let e = config(&url).err().unwrap().to_string();
        assert!(
            e.starts_with(&format!(
                "sslkey {} holds no usable private key (",
                key.display()
            )),
            "{e}"
        );
    }

    #[test]
    fn a_password_in_the_url_wins_over_pgpassword() {
        let (c, _) = config("postgres://u:from%40url@h/d").unwrap();
        assert_eq!(c.get_password(), Some(&b"from@url"[..]));
    }
}
