//! The error every backend returns (cloud, reserver, pillar source, Salt).
//! A leaf module: it depends on nothing else in the crate.

use thiserror::Error;

/// What kind of failure a backend hit; decides retries and the exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum BackendErrorKind {
    /// The service could not be reached or did not answer (network, timeout, 5xx).
    Unreachable,
    /// The service refused the call because of rate limits; worth retrying.
    Throttled,
    /// The service refused the request as invalid (bad AMI, unknown subnet, auth).
    Rejected,
    /// The operation ran and failed (a failed state, a failed launch).
    Failed,
    /// Local I/O on the machine running Conductor failed.
    Io,
}

/// An error returned by a backend (cloud, reserver, pillar source, Salt).
#[derive(Debug, Error)]
#[error("{message}")]
pub struct BackendError {
    /// The kind of failure.
    pub kind: BackendErrorKind,
    /// A message for the operator that names the input or resource involved.
    pub message: String,
    /// The underlying error, if any.
    #[source]
    pub source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

impl BackendError {
    /// Builds an error of `kind` with `message`.
    pub fn new(kind: BackendErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
            source: None,
        }
    }

    /// Attaches the underlying cause.
    pub fn with_source(mut self, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        self.source = Some(Box::new(source));
        self
    }

    /// Appends what the operator can do about it.
    pub fn with_hint(mut self, hint: &str) -> Self {
        self.message = format!("{}; {hint}", self.message);
        self
    }

    /// An I/O error on `path`.
    pub fn io(path: &std::path::Path, source: std::io::Error) -> Self {
        Self::new(
            BackendErrorKind::Io,
            format!("{}: {source}", path.display()),
        )
        .with_source(source)
    }

    /// A background task of the backend that panicked or was cancelled.
    pub fn task(what: &str, e: tokio::task::JoinError) -> Self {
        Self::new(
            BackendErrorKind::Io,
            format!("{what}: the task failed: {e}"),
        )
    }
}
