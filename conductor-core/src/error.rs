//! The error type of `conductor-core`: the umbrella over the leaf errors
//! ([`InputError`], [`PillarError`], [`BackendError`], [`ReserveError`]) and
//! what only a run can hit. Nothing below it in the crate depends on it.

use std::path::PathBuf;

use serde::Serialize;
use thiserror::Error;

use crate::backend::{BackendError, BackendErrorKind};
use crate::ids::IdScope;
use crate::input::{InputError, PillarError};
use crate::names::Role;
use crate::reserve::{keys_text, Key};

/// Why the naming engine cannot give a request its names and ids.
#[derive(Debug, Clone, Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum PlanError {
    /// Every index the role's basename can hold is taken.
    #[error(
        "role {role}: basename {basename} has no free index left (it holds 1 to {max}); \
         add an X to the pattern or remove unused instances"
    )]
    NoFreeIndex {
        /// The role (or cluster member).
        role: Role,
        /// Its basename.
        basename: String,
        /// The largest index the basename holds.
        max: u32,
    },
    /// Every id of a scope is taken.
    #[error("no free id left in scope {scope}")]
    NoFreeId {
        /// The scope.
        scope: IdScope,
    },
    /// The request asks for more instances than one run builds.
    #[error("the run asks for more than {max} instances; split it into smaller runs")]
    TooManyInstances {
        /// The limit.
        max: usize,
    },
    /// A name whose index and ids were free is in use anyway.
    #[error(
        "name {name} is already in use although its index and ids were free; \
         check for instances with conductor tags that do not match their names"
    )]
    NameInUse {
        /// The name.
        name: String,
    },
    /// A planned launch breaks one of EC2's limits (tags, user data).
    #[error("{instance}: {why}; EC2 would refuse its launch")]
    Ec2Limit {
        /// The planned instance.
        instance: String,
        /// Which limit, by how much, and the fix.
        why: String,
    },
}

/// How an error should be reported; maps to the CLI's exit codes.
/// Deliberately exhaustive: a new class must be given an exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorClass {
    /// The run did something and something failed (exit 1).
    Failed,
    /// Bad input: arguments, flags, paths or pillar; nothing done (exit 2).
    BadInput,
    /// Reservations: retries exhausted or a lease lost; nothing launched (exit 3).
    Exhausted,
    /// Cloud or Salt unreachable; nothing launched (exit 4).
    Unreachable,
    /// Stopped by the caller's cancellation (a signal); no instance
    /// launched or terminated.
    Interrupted,
}

/// The error type of `conductor-core`.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum Error {
    /// A bad argument or name.
    #[error(transparent)]
    Input(#[from] InputError),
    /// Pillar data with the wrong shape.
    #[error(transparent)]
    Pillar(#[from] PillarError),
    /// The naming engine cannot satisfy the request.
    #[error(transparent)]
    Plan(#[from] PlanError),
    /// `adopt` refused: conflicting or unmatched instances; nothing written.
    #[error(transparent)]
    Adopt(Box<crate::adopt_error::AdoptError>),
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
    /// The run no longer holds some of its reservations (not renewed in
    /// time, or taken over); it stopped before launching anything.
    #[error(
        "this run lost its reservations of {} ({reason}); nothing was launched. \
         Run it again; check that the reserver is reachable and the clocks agree",
        keys_text(keys)
    )]
    LeaseLost {
        /// The keys lost (empty when the renewal failed as a whole).
        keys: Vec<Key>,
        /// What happened.
        reason: String,
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
    /// A `pre_*` orchestration hook failed; nothing was launched or destroyed.
    #[error("the {hook} hook failed; nothing was launched{}", log.as_ref().map(|p| format!(". See {}", p.display())).unwrap_or_default())]
    HookFailed {
        /// The hook (`pre_create orch.conductor_common`).
        hook: String,
        /// The log of the failed run.
        log: Option<PathBuf>,
    },
    /// The master's grains cache could not be read while planning or adopting.
    #[error(
        "cannot read the Salt master's grains cache, which holds the ids of instances the Python runner built: {source}. \
         Fix the master (--salt-config-dir, --salt-bin-dir). A plan or create can skip the grains with --no-grains \
         (ids then come from EC2 tags and names only: safe once every runner-built instance is adopted); adopt cannot, it needs them"
    )]
    GrainsUnreadable {
        /// What went wrong.
        #[source]
        source: BackendError,
    },
    /// This host's clock is further from the cloud's than the release
    /// grace: other masters would see this run's leases expire early or
    /// late. Nothing was reserved.
    #[error(
        "{skew}, more than the release grace ({} s): other masters would see this run's reservations expire early or late, and reuse names still being launched. \
         Fix this host's clock (NTP: `chronyc tracking` or `timedatectl` shows the offset), or raise --release-grace; nothing was reserved",
        grace.as_secs()
    )]
    ClockSkew {
        /// The clocks compared.
        skew: crate::clock::ClockSkew,
        /// The release grace it exceeds.
        grace: std::time::Duration,
    },
    /// The caller cancelled the run before any instance was launched or
    /// terminated.
    #[error("interrupted before any instance was launched or terminated")]
    Interrupted,
    /// A task of the run panicked or was aborted (a bug: please report it).
    #[error("{during}: a task of the run failed: {message}")]
    Task {
        /// What the task did.
        during: String,
        /// The panic or abort, as text.
        message: String,
    },
}

impl From<crate::adopt_error::AdoptError> for Error {
    fn from(e: crate::adopt_error::AdoptError) -> Self {
        Self::Adopt(Box::new(e))
    }
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

    /// A task that did not finish (`JoinError`).
    pub fn task(during: impl Into<String>, e: tokio::task::JoinError) -> Self {
        Self::Task {
            during: during.into(),
            message: e.to_string(),
        }
    }

    /// How this error should be reported (exit code class).
    pub fn class(&self) -> ErrorClass {
        match self {
            Error::Input(_)
            | Error::Pillar(_)
            | Error::Plan(_)
            | Error::Adopt(_)
            | Error::ClockSkew { .. } => ErrorClass::BadInput,
            Error::RetriesExhausted { .. } | Error::LeaseLost { .. } => ErrorClass::Exhausted,
            Error::Backend { source, .. } => backend_class(source.kind),
            Error::Interrupted => ErrorClass::Interrupted,
            Error::GrainsUnreadable { .. } => ErrorClass::Unreachable,
            Error::Io { .. } | Error::HookFailed { .. } | Error::Task { .. } => ErrorClass::Failed,
        }
    }
}

/// The class of a backend failure.
pub fn backend_class(kind: BackendErrorKind) -> ErrorClass {
    match kind {
        BackendErrorKind::Unreachable | BackendErrorKind::Throttled => ErrorClass::Unreachable,
        BackendErrorKind::Rejected => ErrorClass::BadInput,
        _ => ErrorClass::Failed,
    }
}

/// Result alias of `conductor-core`.
pub type Result<T, E = Error> = std::result::Result<T, E>;
