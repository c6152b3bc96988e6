//! `conductor runs`: the files of past runs, found by CPID under the runner root.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

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

fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            walk(&p, out);
        } else {
            out.push(p);
        }
    }
}

/// Every file of run `cpid`: its map directory, cloud and state run logs, and
/// its provider and profile files.
pub fn files_of(layout: &Layout, cpid: Cpid) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for d in [
        layout.maps_dir(cpid),
        layout.cloud_runs_dir(cpid),
        layout.state_runs_dir(cpid),
    ] {
        walk(&d, &mut files);
    }
    let suffix = format!("_{cpid}.conf");
    for d in ["cloud.providers.d", "cloud.profiles.d"] {
        let Ok(entries) = std::fs::read_dir(layout.config_dir.join(d)) else {
            continue;
        };
        for e in entries.flatten() {
            if e.file_name().to_str().is_some_and(|n| n.ends_with(&suffix)) {
                files.push(e.path());
            }
        }
    }
    files.sort();
    files
}

/// Every run with files under the runner root, oldest first.
pub fn list(layout: &Layout) -> Vec<RunFiles> {
    let mut cpids = BTreeMap::new();
    for d in ["maps", "cloud_runs", "state_runs"] {
        let Ok(entries) = std::fs::read_dir(layout.runner_dir.join(d)) else {
            continue;
        };
        for e in entries.flatten() {
            if let Some(c) = e.file_name().to_str().and_then(|n| Cpid::parse(n).ok()) {
                cpids.insert((c.epoch(), c.to_string()), c);
            }
        }
    }
    cpids
        .into_values()
        .map(|cpid| RunFiles {
            cpid,
            started: cpid.epoch(),
            files: files_of(layout, cpid),
        })
        .collect()
}
