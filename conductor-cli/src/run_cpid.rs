//! The CPID of the run a command started, remembered for its failure
//! report (`--json`'s `cpid`, the stderr line) when the run fails after
//! claiming one.

use std::sync::{Arc, OnceLock};

use conductor_core::{Cpid, Observer, Progress, Step};

/// An observer that keeps the first CPID it is told of and passes every
/// step and progress on to `inner`.
#[derive(Debug)]
pub struct RunCpid {
    inner: Vec<Arc<dyn Observer>>,
    cpid: OnceLock<Cpid>,
}

impl RunCpid {
    /// Remembers the CPID, forwarding to `inner` (the progress display,
    /// tests' observers).
    pub fn new(inner: Vec<Arc<dyn Observer>>) -> Self {
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
        for o in &self.inner {
            o.step(cpid, step);
        }
    }

    fn progress(&self, cpid: Cpid, progress: &Progress) {
        for o in &self.inner {
            o.progress(cpid, progress);
        }
    }
}
