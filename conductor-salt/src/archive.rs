//! Archives of runs: every file of one CPID in one `.tar.gz`.

use std::path::{Path, PathBuf};

use conductor_core::{BackendError, Error};
use conductor_core::{Cpid, Layout};

/// Packs every file of run `cpid` (map, provider, profile, state and cloud
/// run logs) into `<to>/conductor-run-<cpid>.tar.gz`; entries are named
/// `config/...` and `runner/...` after their root. The archive is mode 0600
/// (it holds the provider file and its credentials) and `to` is created
/// mode 0700 when it does not exist. With `remove`, the files are deleted
/// once the archive is written. Returns the archive's path.
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
    {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(to)
            .map_err(|e| Error::io(to, e))?;
    }
    let path = to.join(format!("conductor-run-{cpid}.tar.gz"));
    let tmp = to.join(format!(".conductor-run-{cpid}.tar.gz.tmp"));
    let write = || -> std::io::Result<()> {
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        let _ = std::fs::remove_file(&tmp); // a crashed archive's leftover
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        // Whatever the umask, and even when the name existed before.
        file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
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
            remove_empty_dirs(&d);
        }
    }
    Ok(path)
}

/// Removes `dir` and its subdirectories that are empty (bottom up); a
/// directory still holding a file stays.
fn remove_empty_dirs(dir: &Path) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                remove_empty_dirs(&e.path());
            }
        }
    }
    let _ = std::fs::remove_dir(dir);
}
