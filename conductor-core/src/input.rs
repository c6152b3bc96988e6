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

/// Pillar data that does not have the expected shape; `path` is the key
/// path. Loading a pillar reports every error it finds at once (up to
/// [`MAX_PILLAR_ERRORS`]): the first here, the others in `also`, one a line.
#[derive(Debug, Clone, Error, PartialEq, Eq)]
#[error("{}", self.lines())]
pub struct PillarError {
    /// Dotted key path from the pillar root, e.g. `conductor.groups.devops.roles.mq.nodes`.
    pub path: String,
    /// What is wrong and what is expected.
    pub message: String,
    /// The other errors found in the same pillar, in the order found.
    pub also: Vec<PillarError>,
}

/// Most errors one pillar load reports.
pub const MAX_PILLAR_ERRORS: usize = 20;

impl PillarError {
    /// Builds an error at `path`.
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            message: message.into(),
            also: Vec::new(),
        }
    }

    /// One error of all of `errors` (the first, the others in `also`);
    /// `None` when there are none.
    pub fn all(errors: Vec<PillarError>) -> Option<Self> {
        let mut it = errors.into_iter();
        let mut first = it.next()?;
        first.also.extend(it);
        Some(first)
    }

    /// This error and every one in `also`, each `pillar key `…`: …` on its line.
    fn lines(&self) -> String {
        let mut out = format!("pillar key `{}`: {}", self.path, self.message);
        for e in &self.also {
            out.push_str(&format!("\npillar key `{}`: {}", e.path, e.message));
        }
        out
    }
}
