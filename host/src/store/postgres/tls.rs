//! TLS to the server, with libpq's `sslmode`s, by rustls with ring (as
//! `network.http-post` uses):
//!
//! | `sslmode`          | connects                                  | the server's certificate                  |
//! |--------------------|-------------------------------------------|-------------------------------------------|
//! | `disable`, `allow` | in the clear                              | —                                         |
//! | `prefer` (default) | with TLS if the server offers it, else in the clear | not checked, unless `sslrootcert` is given: then as `verify-ca` |
//! | `require`          | with TLS, or not at all                   | as `prefer`                               |
//! | `verify-ca`        | with TLS, or not at all                   | signed by a CA in `sslrootcert`, or without it one of the Mozilla roots built in |
//! | `verify-full`      | with TLS, or not at all                   | as `verify-ca`, and for the URL's host    |
//!
//! Unlike libpq, `allow` never retries with TLS (a server that insists on
//! it refuses the connection), and nothing is read from `~/.postgresql`:
//! what is trusted is what the URL says. `sslcert` and `sslkey` (PEM files,
//! the key unencrypted and private as libpq requires) give a client
//! certificate, for servers that ask for one. Files are read once, when
//! the store opens.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use ::postgres::config::SslMode;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{WantsClientCert, WebPkiServerVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::ParsedCertificate;
use rustls::{
    AlertDescription, CertificateError, ClientConfig, ConfigBuilder, DigitallySignedStruct,
    RootCertStore, SignatureScheme,
};
use tokio_postgres_rustls::MakeRustlsConnect;

use super::PgError;

/// An `sslmode`, as libpq names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Mode {
    Disable,
    Allow,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl Mode {
    fn parse(given: &str) -> Result<Mode, PgError> {
        Ok(match given {
            "disable" => Mode::Disable,
            "allow" => Mode::Allow,
            "prefer" => Mode::Prefer,
            "require" => Mode::Require,
            "verify-ca" => Mode::VerifyCa,
            "verify-full" => Mode::VerifyFull,
            other => {
                return Err(PgError::Url(format!(
                    "unknown sslmode `{other}` (disable, allow, prefer, require, verify-ca or verify-full)"
                )));
            }
        })
    }

    fn as_str(self) -> &'static str {
        match self {
            Mode::Disable => "disable",
            Mode::Allow => "allow",
            Mode::Prefer => "prefer",
            Mode::Require => "require",
            Mode::VerifyCa => "verify-ca",
            Mode::VerifyFull => "verify-full",
        }
    }

    /// The client's mode: it knows no `allow` and checks no certificate
    /// itself (the rustls configuration does).
    pub(super) fn client(self) -> SslMode {
        match self {
            Mode::Disable | Mode::Allow => SslMode::Disable,
            Mode::Prefer => SslMode::Prefer,
            Mode::Require | Mode::VerifyCa | Mode::VerifyFull => SslMode::Require,
        }
    }
}

/// The URL's TLS parameters, as given (percent-decoded). The client does
/// not know them: they are taken out of the URL before it reads it.
#[derive(Debug, Default)]
pub(super) struct Params {
    sslmode: Option<String>,
    sslrootcert: Option<String>,
    sslcert: Option<String>,
    sslkey: Option<String>,
    sslpassword: bool,
}

impl Params {
    /// The parameters read here.
    pub(super) const KEYS: [&str; 5] =
        ["sslmode", "sslrootcert", "sslcert", "sslkey", "sslpassword"];

    /// Keep `value` of `key`, one of [`Params::KEYS`].
    pub(super) fn set(&mut self, key: &str, value: String) {
        match key {
            "sslmode" => self.sslmode = Some(value),
            "sslrootcert" => self.sslrootcert = Some(value),
            "sslcert" => self.sslcert = Some(value),
            "sslkey" => self.sslkey = Some(value),
            "sslpassword" => self.sslpassword = true,
            other => unreachable!("not a TLS parameter: {other}"),
        }
    }
}

/// How the store connects: in the clear, or with TLS and what it trusts.
#[derive(Clone)]
pub(super) struct Tls {
    mode: Mode,
    /// What the server's certificate must be signed by; `None`: it is not
    /// checked.
    trust: Option<Trust>,
    /// The client certificate's file (`sslcert`), if any.
    client_cert: Option<PathBuf>,
    connector: Option<MakeRustlsConnect>,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls")
            .field("mode", &self.mode)
            .field("trust", &self.trust)
            .field("client_cert", &self.client_cert)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone)]
enum Trust {
    /// The CAs in `sslrootcert`.
    File(PathBuf),
    /// The Mozilla roots built in (webpki-roots).
    Mozilla,
}

impl Tls {
    /// The TLS `params` ask for, with their files read.
    pub(super) fn new(params: Params) -> Result<Tls, PgError> {
        let mode = match params.sslmode.as_deref() {
            Some(given) => Mode::parse(given)?,
            None => Mode::Prefer,
        };
        if params.sslpassword {
            return Err(PgError::TlsSetting(
                "sslpassword: a client key with a passphrase is not supported; decrypt it \
                 (`openssl pkey -in KEY -out PLAIN`), keep that file mode 0600, give it as \
                 sslkey and leave sslpassword out"
                    .into(),
            ));
        }
        if matches!(mode, Mode::Disable | Mode::Allow) {
            // libpq ignores the files too in the clear.
            return Ok(Tls {
                mode,
                trust: None,
                client_cert: None,
                connector: None,
            });
        }
        let trust = match (params.sslrootcert, mode) {
            (Some(system), _) if system == "system" => {
                return Err(PgError::TlsSetting(
                    "sslrootcert=system (the system's CAs) is not supported: leave sslrootcert \
                     out to trust the Mozilla root CAs built into Capstan, or give a PEM file \
                     of the CAs to trust"
                        .into(),
                ));
            }
            (Some(file), _) => Some(Trust::File(PathBuf::from(file))),
            (None, Mode::VerifyCa | Mode::VerifyFull) => Some(Trust::Mozilla),
            (None, _) => None,
        };
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .expect("ring supports TLS 1.2 and 1.3")
            .dangerous()
            .with_custom_certificate_verifier(verifier(mode, trust.as_ref(), provider)?);
        let (mut config, client_cert) = match (params.sslcert, params.sslkey) {
            (None, None) => (builder.with_no_client_auth(), None),
            (Some(cert), Some(key)) => {
                let (cert, key) = (PathBuf::from(cert), PathBuf::from(key));
                (client_auth(builder, &cert, &key)?, Some(cert))
            }
            (cert, _) => {
                let (given, missing) = match cert {
                    Some(_) => ("sslcert", "sslkey"),
                    None => ("sslkey", "sslcert"),
                };
                return Err(PgError::TlsSetting(format!(
                    "{given} is given without {missing}: a client certificate needs both \
                     (sslcert=/path/client.pem&sslkey=/path/client.key)"
                )));
            }
        };
        // What PostgreSQL 17 asks of direct TLS (`sslnegotiation=direct`);
        // older servers ignore it.
        config.alpn_protocols = vec![b"postgresql".to_vec()];
        Ok(Tls {
            mode,
            trust,
            client_cert,
            connector: Some(MakeRustlsConnect::new(config)),
        })
    }

    pub(super) fn mode(&self) -> Mode {
        self.mode
    }

    /// What makes TLS connections; `None`: connect in the clear.
    pub(super) fn connector(&self) -> Option<&MakeRustlsConnect> {
        self.connector.as_ref()
    }

    /// A failure to connect to `host`: said as a TLS problem with its fix
    /// if TLS is what failed.
    pub(super) fn explain(&self, e: ::postgres::Error, host: &str) -> PgError {
        match self.problem(&e, host) {
            Some((what, fix)) => PgError::Tls {
                what,
                fix,
                source: e,
            },
            None => PgError::Connect(e),
        }
    }

    fn problem(&self, e: &::postgres::Error, host: &str) -> Option<(String, String)> {
        if let Some(tls) = rustls_error(e) {
            return Some(self.handshake(tls, host));
        }
        // The client's own words: its error kinds are not public.
        let says = |text: &str| causes(e).any(|c| c.to_string() == text);
        if says("server does not support TLS") {
            return Some((
                format!(
                    "the server does not support TLS (sslmode={})",
                    self.mode.as_str()
                ),
                "turn TLS on in the server's postgresql.conf (`ssl = on`, with ssl_cert_file and \
                 ssl_key_file), or, on a network you trust, connect without it (sslmode=disable)"
                    .into(),
            ));
        }
        if says("no hostname provided for TLS handshake") {
            return Some((
                "TLS needs the server's name, and the URL gives only its address (hostaddr)".into(),
                "give the server's name as the URL's host".into(),
            ));
        }
        // The server's refusals that are about TLS (pg_hba.conf's `cert`
        // method or `clientcert`, and `hostssl` rules).
        let refusal = e.as_db_error()?.message();
        if refusal.contains("client certificate") {
            return Some((
                format!("the server asks for a client certificate ({refusal})"),
                match &self.client_cert {
                    None => {
                        "give one and its key: sslcert=/path/client.pem&sslkey=/path/client.key"
                    }
                    Some(_) => {
                        "give one signed by a CA in the server's ssl_ca_file, with the \
                         user's name as its CN (the `cert` method of pg_hba.conf)"
                    }
                }
                .into(),
            ));
        }
        if refusal.contains("pg_hba.conf") && refusal.ends_with("no encryption") {
            return Some((
                format!("the server takes this connection only with TLS ({refusal})"),
                "connect with TLS: sslmode=verify-full (or prefer, the default)".into(),
            ));
        }
        None
    }

    /// What a failed handshake means, and what to do.
    fn handshake(&self, e: &rustls::Error, host: &str) -> (String, String) {
        use CertificateError as C;
        match e {
            rustls::Error::InvalidCertificate(C::UnknownIssuer | C::BadSignature) => {
                let (signers, fix) = match &self.trust {
                    Some(Trust::File(path)) => (
                        format!("a CA in sslrootcert {}", path.display()),
                        "give the CA certificate that signed the server's as sslrootcert (a PEM \
                         file), or check that the URL names the right server",
                    ),
                    _ => (
                        "any of the Mozilla root CAs built into Capstan (no sslrootcert is given)"
                            .to_string(),
                        "give the CA certificate that signed the server's: \
                         ?sslrootcert=/path/to/ca.pem (a PEM file)",
                    ),
                };
                (
                    format!(
                        "the server's certificate is not trusted: it is not signed by {signers} ({e})"
                    ),
                    fix.to_string(),
                )
            }
            rustls::Error::InvalidCertificate(
                C::NotValidForName | C::NotValidForNameContext { .. },
            ) => (
                format!("the server's certificate is not for `{host}` ({e})"),
                "connect by a name the certificate is for, or give the server a certificate for \
                 this name (verify-ca checks who signed it, not the name)"
                    .into(),
            ),
            rustls::Error::InvalidCertificate(
                C::Expired
                | C::ExpiredContext { .. }
                | C::NotValidYet
                | C::NotValidYetContext { .. },
            ) => (
                format!("the server's certificate is not valid now ({e})"),
                "renew the server's certificate (ssl_cert_file), or check this machine's clock"
                    .into(),
            ),
            rustls::Error::InvalidCertificate(_) => (
                format!("the server's certificate cannot be used ({e})"),
                "give the server a certificate for TLS servers (ssl_cert_file), signed by the CA \
                 in sslrootcert"
                    .into(),
            ),
            rustls::Error::AlertReceived(alert) => match (&self.client_cert, alert) {
                (
                    None,
                    AlertDescription::CertificateRequired | AlertDescription::HandshakeFailure,
                ) => (
                    format!("the server asks for a client certificate ({e})"),
                    "give one and its key: sslcert=/path/client.pem&sslkey=/path/client.key".into(),
                ),
                (Some(cert), _) if alert_about_certificate(*alert) => (
                    format!(
                        "the server does not accept the client certificate sslcert {} ({e})",
                        cert.display()
                    ),
                    "use a certificate signed by a CA in the server's ssl_ca_file (for the `cert` \
                     method of pg_hba.conf, with the user's name as its CN)"
                        .into(),
                ),
                _ => (
                    format!("the server ended the TLS handshake ({e})"),
                    "check the server's TLS settings and its log".into(),
                ),
            },
            _ => (
                format!("the TLS handshake failed ({e})"),
                "check the server's TLS settings (Capstan speaks TLS 1.2 and 1.3) and its log"
                    .into(),
            ),
        }
    }
}

fn alert_about_certificate(alert: AlertDescription) -> bool {
    matches!(
        alert,
        AlertDescription::BadCertificate
            | AlertDescription::UnsupportedCertificate
            | AlertDescription::CertificateRevoked
            | AlertDescription::CertificateExpired
            | AlertDescription::CertificateUnknown
            | AlertDescription::UnknownCA
            | AlertDescription::AccessDenied
            | AlertDescription::DecryptError
    )
}

/// `e` and its causes.
fn causes<'a>(
    e: &'a (dyn std::error::Error + 'static),
) -> impl Iterator<Item = &'a (dyn std::error::Error + 'static)> {
    std::iter::successors(Some(e), |c| c.source())
}

/// The rustls error among `e`'s causes. tokio-rustls wraps it in an
/// `io::Error`, whose `source` skips it: looked for inside those too.
fn rustls_error(e: &::postgres::Error) -> Option<&rustls::Error> {
    causes(e).find_map(|c| {
        c.downcast_ref::<rustls::Error>().or_else(|| {
            c.downcast_ref::<std::io::Error>()?
                .get_ref()?
                .downcast_ref::<rustls::Error>()
        })
    })
}

/// What checks the server's certificate in `mode`, against `trust` (none
/// if `None`).
fn verifier(
    mode: Mode,
    trust: Option<&Trust>,
    provider: Arc<CryptoProvider>,
) -> Result<Arc<dyn ServerCertVerifier>, PgError> {
    let algorithms = provider.signature_verification_algorithms;
    Ok(match trust {
        None => Arc::new(NoNameCheck {
            roots: None,
            algorithms,
        }),
        Some(trust) if mode == Mode::VerifyFull => {
            WebPkiServerVerifier::builder_with_provider(Arc::new(roots(trust)?), provider)
                .build()
                .map_err(|e| PgError::TlsSetting(format!("cannot check certificates: {e}")))?
        }
        Some(trust) => Arc::new(NoNameCheck {
            roots: Some(Arc::new(roots(trust)?)),
            algorithms,
        }),
    })
}

/// `builder` with the client certificate `cert` and its key `key`.
fn client_auth(
    builder: ConfigBuilder<ClientConfig, WantsClientCert>,
    cert: &Path,
    key: &Path,
) -> Result<ClientConfig, PgError> {
    builder
        .with_client_auth_cert(certificates(cert, "sslcert")?, private_key(key)?)
        .map_err(|e| match e {
            rustls::Error::InconsistentKeys(_) => PgError::TlsSetting(format!(
                "sslcert {} and sslkey {} do not go together ({e}): give the key of that \
                 certificate",
                cert.display(),
                key.display()
            )),
            _ => setting("sslkey", key, &format!("holds no usable private key ({e})")),
        })
}

/// The CAs `trust` names.
fn roots(trust: &Trust) -> Result<RootCertStore, PgError> {
    let path = match trust {
        Trust::Mozilla => {
            return Ok(RootCertStore {
                roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
            });
        }
        Trust::File(path) => path,
    };
    let mut roots = RootCertStore::empty();
    for cert in certificates(path, "sslrootcert")? {
        roots.add(cert).map_err(|e| {
            setting(
                "sslrootcert",
                path,
                &format!("holds a certificate that cannot be a CA ({e})"),
            )
        })?;
    }
    Ok(roots)
}

/// The PEM certificates in `path` (the parameter `param`): at least one.
fn certificates(path: &Path, param: &str) -> Result<Vec<CertificateDer<'static>>, PgError> {
    let pem = read(path, param)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| setting(param, path, &format!("is not a valid PEM file ({e})")))?;
    if certs.is_empty() {
        return Err(setting(
            param,
            path,
            "holds no certificate (no `-----BEGIN CERTIFICATE-----`)",
        ));
    }
    Ok(certs)
}

/// The client's private key in `path` (`sslkey`), which only its owner
/// may read, as libpq requires.
fn private_key(path: &Path) -> Result<PrivateKeyDer<'static>, PgError> {
    let pem = read(path, "sslkey")?;
    let meta = std::fs::metadata(path)
        .map_err(|e| setting("sslkey", path, &format!("cannot be read ({e})")))?;
    let mine = meta.uid() == nix::unistd::geteuid().as_raw();
    let mode = meta.mode();
    if !mine && meta.uid() != 0 {
        return Err(setting(
            "sslkey",
            path,
            "must belong to the user Capstan runs as, or to root",
        ));
    }
    // Owned by root, group-readable is allowed (a group of readers).
    let others = if mine { mode & 0o077 } else { mode & 0o037 };
    if others != 0 {
        return Err(setting(
            "sslkey",
            path,
            &format!(
                "may be read or written by others (mode {:04o}): `chmod 600` it (0640 or less \
                 if root owns it)",
                mode & 0o7777
            ),
        ));
    }
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| {
        setting(
            "sslkey",
            path,
            &format!("holds no usable private key ({e}): give the client certificate's key, PEM, without a passphrase"),
        )
    })
}

fn read(path: &Path, param: &str) -> Result<Vec<u8>, PgError> {
    std::fs::read(path).map_err(|e| setting(param, path, &format!("cannot be read ({e})")))
}

fn setting(param: &str, path: &Path, problem: &str) -> PgError {
    let fix = match param {
        "sslrootcert" => "give a PEM file of the CA certificates that sign the server's",
        "sslcert" => "give the client's certificate as a PEM file",
        _ => "give the client certificate's key as a PEM file, mode 0600",
    };
    PgError::TlsSetting(format!("{param} {} {problem}; {fix}", path.display()))
}

/// Checks the server's certificate chain against `roots` but not its name
/// (`verify-ca`, and `prefer` or `require` with `sslrootcert`), or nothing
/// at all (`roots` is `None`: `prefer` and `require`); the handshake's
/// signatures always.
#[derive(Debug)]
struct NoNameCheck {
    roots: Option<Arc<RootCertStore>>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for NoNameCheck {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if let Some(roots) = &self.roots {
            rustls::client::verify_server_cert_signed_by_trust_anchor(
                &ParsedCertificate::try_from(end_entity)?,
                roots,
                intermediates,
                now,
                self.algorithms.all,
            )?;
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}
