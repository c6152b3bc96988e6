//! `conductor runs`: the files of past runs, found by CPID under the roots.

use std::path::PathBuf;

use conductor_core::{iso_utc, Cpid, Layout};
use serde::Serialize;

/// One run found on disk.
#[derive(Debug, Serialize)]
pub struct RunFiles {
    /// The run's CPID.
    pub cpid: Cpid,
    /// When it started (epoch seconds, from the CPID).
    pub started: u64,
    /// When it started, as UTC ISO 8601 (`2026-12-01T17:30:00Z`).
    pub started_at: String,
    /// The group it built (from its provider file's name), when known.
    pub group: Option<String>,
    /// Every file of the run.
    pub files: Vec<PathBuf>,
}

/// Every run with files under the runner root, oldest first.
pub fn list(layout: &Layout) -> Vec<RunFiles> {
    layout
        .runs()
        .into_iter()
        .map(|cpid| {
            let files = layout.run_files(cpid);
            let suffix = format!("_{cpid}.conf");
            let group = files.iter().find_map(|f| {
                let name = f.file_name()?.to_str()?;
                let group = name.strip_suffix(&suffix)?;
                (f.parent()?.file_name()? == "cloud.providers.d").then(|| group.to_string())
            });
            RunFiles {
                cpid,
                started: cpid.epoch(),
                started_at: iso_utc(cpid.epoch()),
                group,
                files,
            }
        })
        .collect()
}
