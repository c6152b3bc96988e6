//! The CPID of the run a command started, remembered for its failure
//! report (`--json`'s `cpid`, the stderr line) when the run fails after
//! claiming one.

use std::sync::{Arc, OnceLock};

use conductor_core::{Cpid, Observer, Step};

/// An observer that keeps the first CPID it is told of and passes every
/// step on to `inner`.
#[derive(Debug)]
pub struct RunCpid {
    inner: Option<Arc<dyn Observer>>,
    cpid: OnceLock<Cpid>,
}

impl RunCpid {
    /// Remembers the CPID, forwarding steps to `inner` (tests' observers).
    pub fn new(inner: Option<Arc<dyn Observer>>) -> Self {
        Self {
            inner,
            cpid: OnceLock::new(),
        }
    }

    /// The CPID of the run, once it claimed one.
    pub fn get(&self) -> Option<Cpid> {
        self.cpid.get().copied()
    }
}

impl Observer for RunCpid {
    fn step(&self, cpid: Cpid, step: Step) {
        let _ = self.cpid.set(cpid);
        if let Some(o) = &self.inner {
            o.step(cpid, step);
        }
    }
}
