//! Archives of runs: every file of one CPID in one `.tar.gz`.

use std::path::{Path, PathBuf};

use conductor_core::{BackendError, Error};
use conductor_core::{Cpid, Layout};

/// Packs every file of run `cpid` (map, provider, profile, state and cloud
/// run logs) into `<to>/conductor-run-<cpid>.tar.gz`; entries are named
/// `config/...` and `runner/...` after their root. With `remove`, the files
/// are deleted once the archive is written. Returns the archive's path.
pub async fn archive(
    layout: &Layout,
    cpid: Cpid,
    to: &Path,
    remove: bool,
) -> Result<PathBuf, Error> {
    let layout = layout.clone();
    let to = to.to_path_buf();
    let span = tracing::info_span!("conductor.archive", %cpid, to = %to.display(), remove);
    tokio::task::spawn_blocking(move || span.in_scope(|| archive_sync(&layout, cpid, &to, remove)))
        .await
        .map_err(|e| Error::task("archiving the run", e))?
}

fn archive_sync(layout: &Layout, cpid: Cpid, to: &Path, remove: bool) -> Result<PathBuf, Error> {
    let files = layout.run_files(cpid);
    if files.is_empty() {
        return Err(conductor_core::InputError::invalid(
            "cpid",
            &cpid.to_string(),
            &format!(
                "no files of this run under {} or {}",
                layout.runner_dir.display(),
                layout.config_dir.display()
            ),
        )
        .into());
    }
    std::fs::create_dir_all(to).map_err(|e| Error::io(to, e))?;
    let path = to.join(format!("conductor-run-{cpid}.tar.gz"));
    let tmp = to.join(format!(".conductor-run-{cpid}.tar.gz.tmp"));
    let write = || -> std::io::Result<()> {
        let file = std::fs::File::create(&tmp)?;
        let gz = flate2::write::GzEncoder::new(file, flate2::Compression::default());
        let mut tar = tar::Builder::new(gz);
        for f in &files {
            let name = match (
                f.strip_prefix(&layout.config_dir),
                f.strip_prefix(&layout.runner_dir),
            ) {
                (Ok(rel), _) => Path::new("config").join(rel),
                (_, Ok(rel)) => Path::new("runner").join(rel),
                _ => continue,
            };
            tar.append_path_with_name(f, name)?;
        }
        let gz = tar.into_inner()?;
        gz.finish()?.sync_all()?;
        std::fs::rename(&tmp, &path)
    };
    if let Err(e) = write() {
        let _ = std::fs::remove_file(&tmp);
        return Err(Error::backend(
            "writing the archive",
            BackendError::io(&path, e),
        ));
    }
    if remove {
        for f in &files {
            std::fs::remove_file(f).map_err(|e| Error::io(f, e))?;
        }
        for d in [
            layout.maps_dir(cpid),
            layout.cloud_runs_dir(cpid),
            layout.state_runs_dir(cpid),
        ] {
            let _ = std::fs::remove_dir(d);
        }
    }
    Ok(path)
}
