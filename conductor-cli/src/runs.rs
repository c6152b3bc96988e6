//! `conductor runs`: the files of past runs, found by CPID under the roots.

use std::path::PathBuf;

use conductor_core::{Cpid, Layout};
use serde::Serialize;

/// One run found on disk.
#[derive(Debug, Serialize)]
pub struct RunFiles {
    /// The run's CPID.
    pub cpid: Cpid,
    /// When it started (epoch seconds, from the CPID).
    pub started: u64,
    /// Every file of the run.
    pub files: Vec<PathBuf>,
}

/// Every run with files under the runner root, oldest first.
pub fn list(layout: &Layout) -> Vec<RunFiles> {
    layout
        .runs()
        .into_iter()
        .map(|cpid| RunFiles {
            cpid,
            started: cpid.epoch(),
            files: layout.run_files(cpid),
        })
        .collect()
}
