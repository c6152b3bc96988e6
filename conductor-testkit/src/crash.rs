//! `KillAt`: an [`Observer`] that SIGKILLs its own process when a run
//! passes a given lifecycle [`Step`] — the crash tests' way to die at a
//! precise point (the library and the binary carry no such hook).

use conductor_core::{Cpid, Observer, Step};

/// The environment variable naming the step to die at (`reserved`, ...;
/// see [`Step::as_str`]), read by [`KillAt::from_env`].
pub const CRASH_AT_ENV: &str = "CONDUCTOR_CRASH_AT";

/// Kills this process with SIGKILL when a run reaches its step.
#[derive(Debug, Clone, Copy)]
pub struct KillAt(pub Step);

impl KillAt {
    /// The step named by [`CRASH_AT_ENV`], when set. Panics on an unknown name.
    pub fn from_env() -> Option<Self> {
        let name = std::env::var(CRASH_AT_ENV).ok()?;
        let step = Step::parse(&name).unwrap_or_else(|| {
            panic!(
                "{CRASH_AT_ENV}={name:?} is not a step; one of {:?}",
                Step::ALL.map(|s| s.as_str())
            )
        });
        Some(Self(step))
    }
}

impl Observer for KillAt {
    fn step(&self, _cpid: Cpid, step: Step) {
        if step == self.0 {
            // SAFETY: sends SIGKILL to this process; nothing runs after it.
            unsafe {
                libc::kill(libc::getpid(), libc::SIGKILL);
            }
        }
    }
}
