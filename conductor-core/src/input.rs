//! Errors of bad input: a value given by the user, or pillar data of the
//! wrong shape. A leaf module: it depends on nothing else in the crate.

use thiserror::Error;

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
