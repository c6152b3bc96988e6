//! The error type of `conductor-core` and the errors backends return.

use std::path::PathBuf;

use thiserror::Error;

use crate::reserve::Key;

/// A value given by the user (argument, name, pillar value) that is not valid.
#[derive(Debug, Clone, Error, PartialEq, Eq)]
#[error("invalid {what} {value:?}: {reason}")]
pub struct InputError {
    /// What the value is (`group`, `region`, `count`, ...).
    pub what: String,
    /// The value as given (control characters escaped by `Debug`).
    pub value: String,
    /// Why it is refused and how to fix it.
    pub reason: String,
}

impl InputError {
    /// Builds an error for `what` = `value` refused because of `reason`.
    pub fn invalid(what: &str, value: &str, reason: &str) -> Self {
        Self {
            what: what.into(),
            value: value.into(),
            reason: reason.into(),
        }
    }
}

/// Pillar data that does not have the expected shape; `path` is the key path.
#[derive(Debug, Clone, Error, PartialEq, Eq)]
#[error("pillar key `{path}`: {message}")]
pub struct PillarError {
    /// Dotted key path from the pillar root, e.g. `conductor.groups.devops.roles.mq.nodes`.
    pub path: String,
    /// What is wrong and what is expected.
    pub message: String,
}

impl PillarError {
    /// Builds an error at `path`.
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            message: message.into(),
        }
    }
}

/// What kind of failure a backend hit; decides retries and the exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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
}

/// The error of `Reserver::try_reserve`.
#[derive(Debug, Error)]
pub enum ReserveError {
    /// Some keys are held by another live owner; nothing was reserved.
    #[error("keys already reserved by another run: {}", keys_text(.0))]
    Conflict(Vec<Key>),
    /// The reserver itself failed.
    #[error(transparent)]
    Backend(#[from] BackendError),
}

fn keys_text(keys: &[Key]) -> String {
    keys.iter()
        .map(|k| k.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// How an error should be reported; maps to the CLI's exit codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// Provisioning or a state failed (exit 1).
    Failed,
    /// Bad input: arguments or pillar (exit 2).
    BadInput,
    /// Reservation retries exhausted (exit 3).
    Exhausted,
    /// Cloud or Salt unreachable (exit 4).
    Unreachable,
}

/// The error type of `conductor-core`.
#[derive(Debug, Error)]
pub enum Error {
    /// A bad argument or name.
    #[error(transparent)]
    Input(#[from] InputError),
    /// Pillar data with the wrong shape.
    #[error(transparent)]
    Pillar(#[from] PillarError),
    /// The naming engine cannot satisfy the request.
    #[error("{0}")]
    Naming(String),
    /// Reservations kept conflicting with other runs.
    #[error(
        "gave up after {attempts} attempts to reserve names and ids; still held by other runs: {}. \
         Retry later, or run `conductor reservations list` to see who holds them",
        keys_text(keys)
    )]
    RetriesExhausted {
        /// Attempts made.
        attempts: u32,
        /// Keys that conflicted on the last attempt.
        keys: Vec<Key>,
    },
    /// A backend failed while doing `during`.
    #[error("{during}: {source}")]
    Backend {
        /// The lifecycle step (`reading the inventory`, `launching`, ...).
        during: String,
        /// The backend's error.
        #[source]
        source: BackendError,
    },
    /// Local file I/O failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The run finished but some instances or states failed; the report holds details.
    #[error("{0}")]
    RunFailed(String),
}

impl Error {
    /// Wraps a backend error with the step it happened in.
    pub fn backend(during: impl Into<String>, source: BackendError) -> Self {
        Self::Backend {
            during: during.into(),
            source,
        }
    }

    /// Wraps an I/O error on `path`.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            path: path.into(),
            source,
        }
    }

    /// How this error should be reported (exit code class).
    pub fn class(&self) -> ErrorClass {
        match self {
            Error::Input(_) | Error::Pillar(_) | Error::Naming(_) => ErrorClass::BadInput,
            Error::RetriesExhausted { .. } => ErrorClass::Exhausted,
            Error::Backend { source, .. } => match source.kind {
                BackendErrorKind::Unreachable | BackendErrorKind::Throttled => {
                    ErrorClass::Unreachable
                }
                BackendErrorKind::Rejected => ErrorClass::BadInput,
                BackendErrorKind::Failed | BackendErrorKind::Io => ErrorClass::Failed,
            },
            Error::Io { .. } | Error::RunFailed(_) => ErrorClass::Failed,
        }
    }
}

/// Result alias of `conductor-core`.
pub type Result<T, E = Error> = std::result::Result<T, E>;
