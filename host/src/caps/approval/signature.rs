//! Signed approval statements: what an approver signs with their SSH key,
//! and checking such a signature against an `allowed_signers` file.
//!
//! Signatures are SSH signatures (`sshsig`, PEM armored as
//! `-----BEGIN SSH SIGNATURE-----`) in the namespace [`NAMESPACE`], the
//! same as `ssh-keygen -Y sign -n capstan-approval` makes over
//! [`Statement::canonical`]; `ssh-keygen -Y verify -n capstan-approval`
//! accepts Capstan's, and Capstan accepts ssh-keygen's. So an approver can
//! sign without Capstan and anyone can check a signature without it.

mod agent;
mod allowed;
#[cfg(test)]
pub(crate) mod tests;

use std::path::{Path, PathBuf};

use ssh_key::{HashAlg, LineEnding, PrivateKey, PublicKey, SshSig};

use crate::store::Decision;
pub use agent::{Agent, AgentError};
pub use allowed::{AllowedSigners, ParseError, Signer};

/// The SSH signature namespace of approvals: a signature made for another
/// purpose (git commits, files) is never taken for an approval.
pub const NAMESPACE: &str = "capstan-approval";

/// The first line of [`Statement::canonical`]; a later format gets another.
const VERSION_LINE: &str = "capstan-approval-v1";

/// What an approver signs: one decision on one plan of one run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Statement {
    pub run_id: String,
    /// The pipeline file's digest as the run recorded it.
    pub pipeline_digest: String,
    pub environment: String,
    pub stage: String,
    /// The digest of what is approved (the plan the stage will apply).
    pub plan_digest: String,
    /// The image the plan deploys, when there is one.
    pub image_digest: Option<String>,
    pub decision: Decision,
    /// When the approver decided; written in RFC 3339, UTC.
    pub time: jiff::Timestamp,
}

/// A statement that cannot be written unambiguously.
#[derive(Debug, thiserror::Error)]
pub enum StatementError {
    #[error(
        "the approval statement's {field} contains a line break, which its signed form cannot hold"
    )]
    LineBreak { field: &'static str },
    #[error("the approval statement's {field} is empty")]
    Empty { field: &'static str },
}

impl Statement {
    /// The bytes that are signed, UTF-8:
    ///
    /// ```text
    /// capstan-approval-v1
    /// run_id=<run id>
    /// pipeline_digest=<digest>
    /// environment=<name>
    /// stage=<name>
    /// plan_digest=<digest>
    /// image_digest=<digest, or nothing when there is no image>
    /// decision=<approve|reject>
    /// time=<RFC 3339 UTC, e.g. 2026-11-29T05:43:56Z>
    /// ```
    ///
    /// Every line ends with `\n`, the keys always appear in this order, and a
    /// value runs to the end of its line, so no two statements have the same
    /// bytes. Values are taken as they are (no trimming or case folding);
    /// one holding a line break, or an empty one (other than `image_digest`
    /// when there is no image), is refused.
    pub fn canonical(&self) -> Result<Vec<u8>, StatementError> {
        let decision = match self.decision {
            Decision::Approved => "approve",
            Decision::Rejected => "reject",
        };
        let time = self.time.to_string();
        let image = match &self.image_digest {
            Some(d) if d.is_empty() => {
                return Err(StatementError::Empty {
                    field: "image_digest",
                });
            }
            Some(d) => d.as_str(),
            None => "",
        };
        let fields: [(&'static str, &str); 8] = [
            ("run_id", &self.run_id),
            ("pipeline_digest", &self.pipeline_digest),
            ("environment", &self.environment),
            ("stage", &self.stage),
            ("plan_digest", &self.plan_digest),
            ("image_digest", image),
            ("decision", decision),
            ("time", &time),
        ];
        let mut out = format!("{VERSION_LINE}\n");
        for (field, value) in fields {
            if value.contains(['\n', '\r']) {
                return Err(StatementError::LineBreak { field });
            }
            if value.is_empty() && field != "image_digest" {
                return Err(StatementError::Empty { field });
            }
            out.push_str(&format!("{field}={value}\n"));
        }
        Ok(out.into_bytes())
    }
}

/// Why a statement could not be signed.
#[derive(Debug, thiserror::Error)]
pub enum SignError {
    #[error(transparent)]
    Statement(#[from] StatementError),
    #[error("cannot read the SSH key {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "{} is not an OpenSSH private key ({source}); give the private key file (not the .pub), \
         in OpenSSH's format (`ssh-keygen -p -f {}` rewrites an old PEM key in it)",
        path.display(), path.display()
    )]
    NotAKey {
        path: PathBuf,
        source: ssh_key::Error,
    },
    #[error(
        "the key {} is protected by a passphrase: load it into ssh-agent (`ssh-add {}`) \
         and sign through SSH_AUTH_SOCK, or give a key file without a passphrase",
        path.display(), path.display()
    )]
    Encrypted { path: PathBuf },
    #[error("cannot sign with the key {}: {source}", path.display())]
    Sign {
        path: PathBuf,
        source: ssh_key::Error,
    },
}

/// Sign `statement` with the private key in the OpenSSH key file `key`:
/// the armored SSH signature (`-----BEGIN SSH SIGNATURE-----`), SHA-512,
/// namespace [`NAMESPACE`], as `ssh-keygen -Y sign` writes it.
///
/// Only unencrypted key files are read here. Keys behind ssh-agent
/// (`SSH_AUTH_SOCK`) are not supported by this function yet: a key with a
/// passphrase is refused with [`SignError::Encrypted`].
pub fn sign(statement: &Statement, key: &Path) -> Result<String, SignError> {
    let message = statement.canonical()?;
    let text = std::fs::read_to_string(key).map_err(|source| SignError::Read {
        path: key.to_path_buf(),
        source,
    })?;
    let private = PrivateKey::from_openssh(&text).map_err(|source| SignError::NotAKey {
        path: key.to_path_buf(),
        source,
    })?;
    if private.is_encrypted() {
        return Err(SignError::Encrypted {
            path: key.to_path_buf(),
        });
    }
    let failed = |source| SignError::Sign {
        path: key.to_path_buf(),
        source,
    };
    private
        .sign(NAMESPACE, HashAlg::Sha512, &message)
        .and_then(|sig| sig.to_pem(LineEnding::LF))
        .map_err(failed)
}

/// Why a signature does not stand for a listed approver's decision.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error(transparent)]
    Statement(#[from] StatementError),
    #[error("the signature is not an SSH signature (-----BEGIN SSH SIGNATURE-----): {0}")]
    Malformed(String),
    #[error(
        "the signature was made for the namespace `{found}`, not `{NAMESPACE}`: it is no Capstan approval \
         (sign with `-n {NAMESPACE}`)"
    )]
    WrongNamespace { found: String },
    #[error("the signing key {fingerprint} is not in allowed_signers: it is nobody's approval")]
    UnlistedKey { fingerprint: String },
    #[error(
        "the key {fingerprint} of {principal} is listed for namespaces=\"{namespaces}\" only \
         (allowed_signers line {line}); add `{NAMESPACE}` there to let it approve"
    )]
    NamespaceNotAllowed {
        principal: String,
        fingerprint: String,
        namespaces: String,
        line: usize,
    },
    #[error(
        "the key {fingerprint} of {principal} is not valid at the statement's time {time} \
         (allowed_signers line {line}: {window})"
    )]
    OutsideValidity {
        principal: String,
        fingerprint: String,
        time: jiff::Timestamp,
        window: String,
        line: usize,
    },
    #[error(
        "the signature by {principal} ({fingerprint}) does not match the statement: it was made over \
         other text (a statement edited after signing, or for another plan)"
    )]
    BadSignature {
        principal: String,
        fingerprint: String,
    },
    #[error("cannot check the signature of {principal} ({fingerprint}): {problem}")]
    Unsupported {
        principal: String,
        fingerprint: String,
        problem: String,
    },
}

impl AllowedSigners {
    /// The principal whose listed key signed `statement`, if `armored` is a
    /// valid signature of it in [`NAMESPACE`] by a key listed for that
    /// namespace (entries with a `namespaces` option that does not allow it
    /// do not count) and valid at the statement's time (`valid-after`,
    /// `valid-before`; like git, which checks a commit's signature at its
    /// date, so that an old approval stays checkable after a key expires).
    /// The principal is the first one of the entry that lists the key.
    pub fn verify(&self, statement: &Statement, armored: &str) -> Result<String, VerifyError> {
        self.verify_signer(statement, armored)
            .map(|s| s.principal().to_string())
    }

    /// As [`AllowedSigners::verify`], the whole entry of the key.
    pub fn verify_signer(
        &self,
        statement: &Statement,
        armored: &str,
    ) -> Result<&Signer, VerifyError> {
        let message = statement.canonical()?;
        let sig =
            SshSig::from_pem(armored.trim()).map_err(|e| VerifyError::Malformed(e.to_string()))?;
        if sig.namespace() != NAMESPACE {
            return Err(VerifyError::WrongNamespace {
                found: sig.namespace().to_string(),
            });
        }
        let fingerprint = sig.public_key().fingerprint(HashAlg::Sha256).to_string();
        let listed: Vec<&Signer> = self
            .signers()
            .iter()
            .filter(|s| !s.cert_authority && s.key.key_data() == sig.public_key())
            .collect();
        let Some(first) = listed.first() else {
            return Err(VerifyError::UnlistedKey { fingerprint });
        };
        let Some(signer) = listed.iter().find(|s| s.allows_namespace(NAMESPACE)) else {
            return Err(VerifyError::NamespaceNotAllowed {
                principal: first.principal().to_string(),
                fingerprint,
                namespaces: first.namespaces.join(","),
                line: first.line,
            });
        };
        if let Some(window) = signer.outside_validity(statement.time) {
            return Err(VerifyError::OutsideValidity {
                principal: signer.principal().to_string(),
                fingerprint,
                time: statement.time,
                window,
                line: signer.line,
            });
        }
        let principal = signer.principal().to_string();
        let key = PublicKey::new(sig.public_key().clone(), "");
        match key.verify(NAMESPACE, &message, &sig) {
            Ok(()) => Ok(signer),
            Err(ssh_key::Error::Crypto) => Err(VerifyError::BadSignature {
                principal,
                fingerprint,
            }),
            Err(e) => Err(VerifyError::Unsupported {
                principal,
                fingerprint,
                problem: e.to_string(),
            }),
        }
    }
}

/// Fingerprints of the keys `signers` lists that the ssh-agent of
/// `SSH_AUTH_SOCK` holds (none without an agent): at the start of a run,
/// the author's, whose signatures never approve it.
pub fn held_in_agent(signers: &AllowedSigners) -> Vec<String> {
    let Ok(mut agent) = Agent::from_env() else {
        return Vec::new();
    };
    let Ok(held) = agent.keys() else {
        return Vec::new();
    };
    held.iter()
        .filter(|k| {
            signers
                .signers()
                .iter()
                .any(|s| s.key.key_data() == k.key_data())
        })
        .map(|k| k.fingerprint(HashAlg::Sha256).to_string())
        .collect()
}

/// The key an approver signs with.
#[derive(Debug, Clone)]
pub enum Key {
    /// An unencrypted OpenSSH private key file.
    File(PathBuf),
    /// The first key of the agent behind `SSH_AUTH_SOCK` that `signers`
    /// lists for approvals.
    Agent,
}

/// Why no listed key of the agent could sign.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error(transparent)]
    File(#[from] SignError),
    #[error(transparent)]
    Agent(#[from] AgentError),
    #[error(
        "none of the {held} key(s) in ssh-agent is an approver's key of this pipeline ([approvers]): \
         `ssh-add` yours, or give --key FILE"
    )]
    NoListedKey { held: usize },
}

/// Sign `statement` with `key`; with [`Key::Agent`], the agent's first key
/// that `signers` lists for the approval namespace.
pub fn sign_with(
    statement: &Statement,
    key: &Key,
    signers: &AllowedSigners,
) -> Result<String, KeyError> {
    match key {
        Key::File(path) => Ok(sign(statement, path)?),
        Key::Agent => {
            let message = statement.canonical().map_err(SignError::from)?;
            let mut agent = Agent::from_env()?;
            let held = agent.keys()?;
            let listed = held.iter().find(|k| {
                signers
                    .signers()
                    .iter()
                    .any(|s| s.key.key_data() == k.key_data() && s.allows_namespace(NAMESPACE))
            });
            let Some(key) = listed else {
                return Err(KeyError::NoListedKey { held: held.len() });
            };
            Ok(agent.sign(key, NAMESPACE, &message)?)
        }
    }
}
