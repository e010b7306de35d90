//! [`Error`]: why a stage failed.

use std::fmt;

use crate::ExecError;
use crate::bindings::capstan::plugin::types::StageError;

/// Why a stage failed: the WIT `stage-error`, shown in the run summary.
///
/// `?` converts the errors a stage typically meets: [`ExecError`] (a
/// refused command becomes [`Error::NotPermitted`] with the host's message,
/// anything else [`Error::Failed`]), [`std::io::Error`] and
/// [`serde_json::Error`].
///
/// ```
/// use capstan_plugin::Error;
///
/// let e = Error::failed("terraform plan found 2 errors").context("plan");
/// assert_eq!(e.to_string(), "plan: terraform plan found 2 errors");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// The `with` config is wrong; the message names the field.
    InvalidConfig(String),
    /// The host refused a capability; the message names it.
    NotPermitted(String),
    /// The stage's work failed; the message carries the tool's own error
    /// lines.
    Failed(String),
}

impl Error {
    /// The `with` config is wrong.
    pub fn config(message: impl Into<String>) -> Self {
        Error::InvalidConfig(message.into())
    }

    /// The stage's work failed.
    pub fn failed(message: impl Into<String>) -> Self {
        Error::Failed(message.into())
    }

    /// The host refused a capability.
    pub fn not_permitted(message: impl Into<String>) -> Self {
        Error::NotPermitted(message.into())
    }

    /// The message, without the kind.
    pub fn message(&self) -> &str {
        match self {
            Error::InvalidConfig(m) | Error::NotPermitted(m) | Error::Failed(m) => m,
        }
    }

    /// The same error with `context: ` in front of its message.
    pub fn context(self, context: impl fmt::Display) -> Self {
        let wrap = |m: String| format!("{context}: {m}");
        match self {
            Error::InvalidConfig(m) => Error::InvalidConfig(wrap(m)),
            Error::NotPermitted(m) => Error::NotPermitted(wrap(m)),
            Error::Failed(m) => Error::Failed(wrap(m)),
        }
    }

    pub(crate) fn into_wit(self) -> StageError {
        match self {
            Error::InvalidConfig(m) => StageError::InvalidConfig(m),
            Error::NotPermitted(m) => StageError::NotPermitted(m),
            Error::Failed(m) => StageError::Failed(m),
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::InvalidConfig(m) => write!(f, "invalid config: {m}"),
            Error::NotPermitted(m) => write!(f, "not permitted: {m}"),
            Error::Failed(m) => f.write_str(m),
        }
    }
}

impl std::error::Error for Error {}

impl From<ExecError> for Error {
    fn from(e: ExecError) -> Self {
        match e.kind() {
            crate::ExecErrorKind::NotPermitted(m) => Error::NotPermitted(m.clone()),
            _ => Error::Failed(e.to_string()),
        }
    }
}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        match e.kind() {
            std::io::ErrorKind::PermissionDenied => Error::NotPermitted(e.to_string()),
            _ => Error::Failed(e.to_string()),
        }
    }
}

impl From<serde_json::Error> for Error {
    fn from(e: serde_json::Error) -> Self {
        Error::Failed(format!("invalid JSON: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bindings::capstan::plugin::process::Error as WitExecError;

    #[test]
    fn display_and_wit() {
        assert_eq!(
            Error::config("field `x`: bad").to_string(),
            "invalid config: field `x`: bad"
        );
        assert_eq!(
            Error::not_permitted("exec `cat`").to_string(),
            "not permitted: exec `cat`"
        );
        assert_eq!(Error::failed("boom").to_string(), "boom");
        assert_eq!(Error::failed("boom").message(), "boom");
        assert_eq!(
            Error::not_permitted("m").context("c").into_wit(),
            StageError::NotPermitted("c: m".into())
        );
    }

    #[test]
    fn conversions() {
        let refused = ExecError::from_wit("cat", WitExecError::NotPermitted("no grant".into()));
        assert_eq!(Error::from(refused), Error::NotPermitted("no grant".into()));
        let missing = ExecError::from_wit("tf", WitExecError::NotFound("no such file".into()));
        assert_eq!(
            Error::from(missing),
            Error::Failed("`tf` not found: no such file".into())
        );
        let io = std::io::Error::new(std::io::ErrorKind::PermissionDenied, "denied");
        assert_eq!(Error::from(io), Error::NotPermitted("denied".into()));
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "gone");
        assert_eq!(Error::from(io), Error::Failed("gone".into()));
        let json = serde_json::from_str::<u32>("x").unwrap_err();
        assert!(
            Error::from(json)
                .to_string()
                .starts_with("invalid JSON: expected value")
        );
    }
}
