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

/// `secs` since the Unix epoch as `YYYY-MM-DDTHH:MM:SSZ` (proleptic
/// Gregorian calendar; the civil-from-days algorithm of H. Hinnant).
pub fn iso_utc(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3_600,
        rem % 3_600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::iso_utc;

    #[test]
    fn iso_dates() {
        assert_eq!(iso_utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(iso_utc(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(iso_utc(1_796_146_235), "2026-12-01T17:30:35Z");
        assert_eq!(iso_utc(4_107_542_399), "2100-02-28T23:59:59Z");
    }
}
