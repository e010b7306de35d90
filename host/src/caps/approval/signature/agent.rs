//! Signing through ssh-agent (`SSH_AUTH_SOCK`): the approver's private key
//! stays in the agent (passphrase, hardware token), Capstan sends it the
//! `sshsig` data to sign. The agent protocol is four messages
//! (draft-miller-ssh-agent: request identities, identities answer, sign
//! request, sign response), written here rather than pulling an async
//! client crate into the host.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ssh_key::{Algorithm, HashAlg, LineEnding, PublicKey, Signature, SshSig};

const FAILURE: u8 = 5;
const REQUEST_IDENTITIES: u8 = 11;
const IDENTITIES_ANSWER: u8 = 12;
const SIGN_REQUEST: u8 = 13;
const SIGN_RESPONSE: u8 = 14;
/// Sign with `rsa-sha2-512` (an RSA key's default, SHA-1, is not accepted).
const RSA_SHA2_512: u32 = 4;
/// No agent message of ours is near this; a larger length is garbage.
const MAX_MESSAGE: usize = 1 << 20;

/// Why the agent could not sign.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("SSH_AUTH_SOCK is not set: start ssh-agent and `ssh-add` your key, or give --key FILE")]
    NoAgent,
    #[error("cannot talk to ssh-agent at {}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("ssh-agent at {} answered something unexpected ({0})", path.display())]
    Protocol { path: PathBuf, what: String },
    #[error(
        "ssh-agent refused to sign with {fingerprint} (a key that needs confirmation, or was removed)"
    )]
    Refused { fingerprint: String },
}

/// A connection to the agent of `SSH_AUTH_SOCK`.
pub struct Agent {
    path: PathBuf,
    socket: UnixStream,
}

impl Agent {
    pub fn from_env() -> Result<Agent, AgentError> {
        let path = std::env::var_os("SSH_AUTH_SOCK")
            .filter(|p| !p.is_empty())
            .ok_or(AgentError::NoAgent)?;
        Agent::connect(Path::new(&path))
    }

    pub fn connect(path: &Path) -> Result<Agent, AgentError> {
        let io = |source| AgentError::Io {
            path: path.to_path_buf(),
            source,
        };
        let socket = UnixStream::connect(path).map_err(io)?;
        // An agent that asks for confirmation waits on a human; a dead one
        // must not hang `capstan approve`.
        socket
            .set_read_timeout(Some(Duration::from_secs(120)))
            .map_err(io)?;
        Ok(Agent {
            path: path.to_path_buf(),
            socket,
        })
    }

    /// The public keys the agent holds (those it cannot describe are left out).
    pub fn keys(&mut self) -> Result<Vec<PublicKey>, AgentError> {
        let reply = self.call(&[REQUEST_IDENTITIES])?;
        let mut r = Reader(&reply);
        if r.byte()? != IDENTITIES_ANSWER {
            return Err(self.protocol("no identities answer"));
        }
        let count = r.u32()? as usize;
        let mut keys = Vec::new();
        for _ in 0..count.min(4096) {
            let blob = r.string()?;
            let _comment = r.string()?;
            if let Ok(key) = PublicKey::from_bytes(blob) {
                keys.push(key);
            }
        }
        Ok(keys)
    }

    /// Sign `message` in `namespace` with the agent's `key`, as
    /// `ssh-keygen -Y sign` does: the armored signature.
    pub fn sign(
        &mut self,
        key: &PublicKey,
        namespace: &str,
        message: &[u8],
    ) -> Result<String, AgentError> {
        let hash = HashAlg::Sha512;
        let data = SshSig::signed_data(namespace, hash, message)
            .map_err(|e| self.protocol(&e.to_string()))?;
        let blob = key.to_bytes().map_err(|e| self.protocol(&e.to_string()))?;
        let flags = match key.algorithm() {
            Algorithm::Rsa { .. } => RSA_SHA2_512,
            _ => 0,
        };
        let mut request = vec![SIGN_REQUEST];
        put_string(&mut request, &blob);
        put_string(&mut request, &data);
        request.extend_from_slice(&flags.to_be_bytes());
        let reply = self.call(&request)?;
        let mut r = Reader(&reply);
        match r.byte()? {
            SIGN_RESPONSE => {}
            FAILURE => {
                return Err(AgentError::Refused {
                    fingerprint: key.fingerprint(HashAlg::Sha256).to_string(),
                });
            }
            other => return Err(self.protocol(&format!("message type {other}"))),
        }
        let signature = Signature::try_from(r.string()?)
            .map_err(|e| self.protocol(&format!("signature: {e}")))?;
        SshSig::new(key.key_data().clone(), namespace, hash, signature)
            .and_then(|sig| sig.to_pem(LineEnding::LF))
            .map_err(|e| self.protocol(&e.to_string()))
    }

    fn call(&mut self, body: &[u8]) -> Result<Vec<u8>, AgentError> {
        let io = |source| AgentError::Io {
            path: self.path.clone(),
            source,
        };
        let mut framed = (body.len() as u32).to_be_bytes().to_vec();
        framed.extend_from_slice(body);
        self.socket.write_all(&framed).map_err(io)?;
        let mut len = [0u8; 4];
        self.socket.read_exact(&mut len).map_err(io)?;
        let len = u32::from_be_bytes(len) as usize;
        if len == 0 || len > MAX_MESSAGE {
            return Err(self.protocol(&format!("a message of {len} bytes")));
        }
        let mut reply = vec![0u8; len];
        self.socket.read_exact(&mut reply).map_err(io)?;
        Ok(reply)
    }

    fn protocol(&self, what: &str) -> AgentError {
        AgentError::Protocol {
            path: self.path.clone(),
            what: what.to_string(),
        }
    }
}

fn put_string(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
    out.extend_from_slice(bytes);
}

/// Reads the agent's answer; running short is a protocol error.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], AgentError> {
        if self.0.len() < n {
            return Err(AgentError::Protocol {
                path: PathBuf::from("SSH_AUTH_SOCK"),
                what: "a message cut short".into(),
            });
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn byte(&mut self) -> Result<u8, AgentError> {
        Ok(self.take(1)?[0])
    }

    fn u32(&mut self) -> Result<u32, AgentError> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn string(&mut self) -> Result<&'a [u8], AgentError> {
        let n = self.u32()? as usize;
        self.take(n)
    }
}
