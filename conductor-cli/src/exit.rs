//! Exit codes and the error the binary reports.

use conductor_core::{Error, ErrorClass};

/// Success.
pub const OK: u8 = 0;
/// Provisioning or a state failed.
pub const FAILED: u8 = 1;
/// Bad input: words, flags, pillar.
pub const BAD_INPUT: u8 = 2;
/// Reservation retries exhausted.
pub const EXHAUSTED: u8 = 3;
/// Cloud or Salt unreachable.
pub const UNREACHABLE: u8 = 4;
/// Interrupted by SIGINT (SIGTERM gives 143, SIGHUP 129: 128 + the signal).
pub const INTERRUPTED: u8 = 130;

/// An error with its exit code.
#[derive(Debug)]
pub struct Failure {
    /// Exit code.
    pub code: u8,
    /// Message for stderr.
    pub message: String,
}

impl Failure {
    /// A bad-input failure (exit 2).
    pub fn input(message: impl Into<String>) -> Self {
        Self {
            code: BAD_INPUT,
            message: message.into(),
        }
    }

    /// A failure with an explicit code.
    pub fn new(code: u8, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}

/// The class an exit code reports, as `--json` names it.
pub fn class_of(code: u8) -> &'static str {
    match code {
        OK => "ok",
        FAILED => "failed",
        BAD_INPUT => "bad_input",
        EXHAUSTED => "exhausted",
        UNREACHABLE => "unreachable",
        _ => "interrupted",
    }
}

/// The exit code of an error class.
pub fn code(class: ErrorClass) -> u8 {
    match class {
        ErrorClass::Failed => FAILED,
        ErrorClass::BadInput => BAD_INPUT,
        ErrorClass::Exhausted => EXHAUSTED,
        ErrorClass::Unreachable => UNREACHABLE,
        ErrorClass::Interrupted => INTERRUPTED,
    }
}

impl From<Error> for Failure {
    fn from(e: Error) -> Self {
        let mut message = e.to_string();
        let mut source = std::error::Error::source(&e);
        while let Some(s) = source {
            let text = s.to_string();
            if !message.contains(&text) {
                message.push_str(&format!(": {text}"));
            }
            source = s.source();
        }
        Self {
            code: code(e.class()),
            message,
        }
    }
}

impl From<conductor_core::InputError> for Failure {
    fn from(e: conductor_core::InputError) -> Self {
        Self::input(e.to_string())
    }
}

impl Failure {
    /// A backend's error while doing `during` (names what failed).
    pub fn backend(during: &str, e: conductor_core::BackendError) -> Self {
        Error::backend(during, e).into()
    }
}
