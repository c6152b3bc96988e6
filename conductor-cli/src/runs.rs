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
    /// When it started, in this host's time zone (`TZ`), ISO 8601 with the
    /// offset (`2026-12-01T18:30:00+01:00`).
    pub started_local: String,
    /// The group it built (from its provider file's name), when known.
    pub group: Option<String>,
    /// Every file of the run.
    pub files: Vec<PathBuf>,
    /// How it ended, when the run's record says (runs of this version on).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub record: Option<RunRecord>,
}

/// How a run ended, written by the binary at its end as
/// `<runner-dir>/cloud_runs/<CPID>/run.json`.
#[derive(Clone, Debug, Serialize, serde::Deserialize)]
pub struct RunRecord {
    /// The command (`group create`).
    pub command: String,
    /// Its `group=`, if any.
    pub group: Option<String>,
    /// Its `pillarenv=`, if any.
    pub env: Option<String>,
    /// `ok`, `failed`, `bad_input`, `exhausted`, `unreachable`, `interrupted`.
    pub result: String,
    /// The exit code.
    pub exit_code: u8,
    /// The instances it launched, destroyed or updated.
    pub instances: Vec<String>,
    /// When it ended, as UTC ISO 8601.
    pub ended_at: String,
}

/// The file of `cpid`'s record.
fn record_path(layout: &Layout, cpid: Cpid) -> PathBuf {
    layout.cloud_runs_dir(cpid).join("run.json")
}

/// Writes `record` as `cpid`'s (crash-safely, mode 0644); a failure is
/// only logged: the run itself is done.
pub fn write_record(layout: &Layout, cpid: Cpid, record: &RunRecord) {
    let bytes = serde_json::to_vec_pretty(record).expect("a record serializes");
    let path = record_path(layout, cpid);
    if let Err(e) = conductor_core::write_atomic(&path, &bytes, 0o644) {
        tracing::warn!(path = %path.display(), error = %e, "writing the run's record failed");
    }
}

extern "C" {
    /// POSIX: reads `TZ` (localtime_r alone need not).
    fn tzset();
}

/// `secs` (epoch) in the local time zone (`TZ`, else /etc/localtime), ISO
/// 8601 with its offset; UTC's form when the time cannot be converted.
pub fn local_iso(secs: u64) -> String {
    let Ok(t) = libc::time_t::try_from(secs) else {
        return iso_utc(secs);
    };
    // SAFETY: tzset and localtime_r only read the environment and the zone
    // files; `tm` is a plain struct localtime_r fills.
    let tm = unsafe {
        tzset();
        let mut tm: libc::tm = std::mem::zeroed();
        if libc::localtime_r(&t, &mut tm).is_null() {
            return iso_utc(secs);
        }
        tm
    };
    let off = tm.tm_gmtoff;
    let sign = if off < 0 { '-' } else { '+' };
    let off = off.unsigned_abs();
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}{sign}{:02}:{:02}",
        tm.tm_year + 1900,
        tm.tm_mon + 1,
        tm.tm_mday,
        tm.tm_hour,
        tm.tm_min,
        tm.tm_sec,
        off / 3600,
        off % 3600 / 60
    )
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
            let record: Option<RunRecord> = std::fs::read(record_path(layout, cpid))
                .ok()
                .and_then(|b| serde_json::from_slice(&b).ok());
            RunFiles {
                cpid,
                started: cpid.epoch(),
                started_at: iso_utc(cpid.epoch()),
                started_local: local_iso(cpid.epoch()),
                group: group.or_else(|| record.as_ref().and_then(|r| r.group.clone())),
                files,
                record,
            }
        })
        .collect()
}
