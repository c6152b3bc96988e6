//! Archives of runs: every file of one CPID in one `.tar.gz`.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use conductor_core::{BackendError, CancellationToken, Error};
use conductor_core::{Cpid, Layout};

/// Packs every file of run `cpid` (map, provider, profile, state and cloud
/// run logs) into `<to>/conductor-run-<cpid>.tar.gz`; entries are named
/// `config/...` and `runner/...` after their root. The archive is mode 0600
/// (it holds the provider file and its credentials) and `to` is created
/// mode 0700 when it does not exist. It is written under a temporary name of
/// its own and renamed once complete, so archivers of the same run at once
/// never leave a part of one in its place. With `remove`, the files are
/// deleted once the archive is written. Returns the archive's path.
///
/// `cancel` is looked at before each file is packed: cancelled there, the
/// temporary file is removed and nothing else changed
/// ([`Error::Interrupted`]). Cancelled once every file is packed, the
/// archive is completed but the run's files are not removed, even with
/// `remove` (the path is returned; a warning says the files stay). The
/// work runs on a blocking thread and this waits for it to end, so when
/// this returns nothing is still being written or removed.
pub async fn archive(
    layout: &Layout,
    cpid: Cpid,
    to: &Path,
    remove: bool,
    cancel: &CancellationToken,
) -> Result<PathBuf, Error> {
    let layout = layout.clone();
    let to = to.to_path_buf();
    let cancel = cancel.clone();
    let span = tracing::info_span!("conductor.archive", %cpid, to = %to.display(), remove);
    tokio::task::spawn_blocking(move || {
        span.in_scope(|| archive_sync(&layout, cpid, &to, remove, &cancel))
    })
    .await
    .map_err(|e| Error::task("archiving the run", e))?
}

fn archive_sync(
    layout: &Layout,
    cpid: Cpid,
    to: &Path,
    remove: bool,
    cancel: &CancellationToken,
) -> Result<PathBuf, Error> {
    archive_files(
        layout,
        cpid,
        to,
        remove,
        &|| cancel.is_cancelled(),
        &mut || {},
    )
}

/// Numbers the temporary archives made by this process.
static NEXT_TMP: AtomicU64 = AtomicU64::new(0);

/// Creates a temporary archive of this archiver's own in `to`,
/// `.conductor-run-<cpid>.tar.gz.<pid>.<n>.tmp`, mode 0600 from its
/// creation: never a name that exists, so two archivers of one run (two
/// `runs archive` at once) never write, rename or remove each other's.
fn create_temp(to: &Path, cpid: Cpid) -> std::io::Result<(PathBuf, File)> {
    use std::os::unix::fs::OpenOptionsExt;
    loop {
        let n = NEXT_TMP.fetch_add(1, Ordering::Relaxed);
        let tmp = to.join(format!(
            ".conductor-run-{cpid}.tar.gz.{}.{n}.tmp",
            std::process::id()
        ));
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
        {
            Ok(file) => return Ok((tmp, file)),
            // A crashed archiver's leftover (of an earlier process with this pid).
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
}

/// [`archive_sync`], asking `stop` before each file is packed and before
/// the files are removed, and calling `between` after each file packed
/// (where a test holds one archiver while another runs).
fn archive_files(
    layout: &Layout,
    cpid: Cpid,
    to: &Path,
    remove: bool,
    stop: &dyn Fn() -> bool,
    between: &mut dyn FnMut(),
) -> Result<PathBuf, Error> {
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
    let (tmp, file) = create_temp(to, cpid)
        .map_err(|e| Error::backend("writing the archive", BackendError::io(to, e)))?;
    // Ok(false): stopped before every file was packed, nothing renamed.
    let write = || -> std::io::Result<bool> {
        use std::os::unix::fs::PermissionsExt;
        // Whatever the umask.
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
            if stop() {
                return Ok(false);
            }
            tar.append_path_with_name(f, name)?;
            between();
        }
        let gz = tar.into_inner()?;
        gz.finish()?.sync_all()?;
        // Only this archiver's own file, complete, takes the archive's name.
        std::fs::rename(&tmp, &path)?;
        Ok(true)
    };
    match write() {
        Ok(true) => {}
        Ok(false) => {
            let _ = std::fs::remove_file(&tmp);
            tracing::warn!(%cpid, "interrupted: no archive written; the run's files stay");
            return Err(Error::Interrupted);
        }
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            return Err(Error::backend(
                "writing the archive",
                BackendError::io(&path, e),
            ));
        }
    }
    if remove && stop() {
        tracing::warn!(%cpid, archive = %path.display(), "interrupted: the archive is complete; the run's files were not removed");
    } else if remove {
        for f in &files {
            match std::fs::remove_file(f) {
                Ok(()) => {}
                // Removed by another archiver of the run, which archived it too.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::io(f, e)),
            }
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::sync::Barrier;

    /// The entries of a `.tar.gz` with their sizes, read to the end (a
    /// truncated archive fails here).
    fn entries(path: &Path) -> std::io::Result<Vec<(String, usize)>> {
        let file = File::open(path)?;
        let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(file));
        let mut out = Vec::new();
        for e in tar.entries()? {
            let mut e = e?;
            let name = e.path()?.display().to_string();
            let mut body = Vec::new();
            e.read_to_end(&mut body)?;
            out.push((name, body.len()));
        }
        Ok(out)
    }

    /// Two archivers of one run with `remove`: B starts while A writes (A's
    /// temporary file exists and holds one file), A finishes, renames and
    /// removes the run's files while B is halfway. The archive is A's,
    /// whole; B fails on a file A removed and leaves nothing behind.
    #[test]
    fn an_archiver_starting_while_another_writes_leaves_a_whole_archive() {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::new(dir.path().join("etc/salt"), dir.path().join("srv/runners"));
        let cpid = Cpid::from_parts(1, 10);
        let files = [
            layout.maps_dir(cpid).join("devops.map"),
            layout.cloud_runs_dir(cpid).join("create.log"),
            layout.state_runs_dir(cpid).join("devops.log"),
        ];
        for (i, f) in files.iter().enumerate() {
            std::fs::create_dir_all(f.parent().unwrap()).unwrap();
            // Not all alike, so the archive is more than a few bytes.
            let body: String = (0..20_000).map(|n| format!("{i}.{n}\n")).collect();
            std::fs::write(f, body).unwrap();
        }
        let expected: Vec<(String, usize)> = layout
            .run_files(cpid)
            .iter()
            .map(|f| {
                let rel = f.strip_prefix(&layout.runner_dir).unwrap();
                let size = std::fs::metadata(f).unwrap().len() as usize;
                (format!("runner/{}", rel.display()), size)
            })
            .collect();
        assert_eq!(expected.len(), 3);
        let out = dir.path().join("archives");
        let a_writing = Barrier::new(2);
        let b_writing = Barrier::new(2);
        let a_done = Barrier::new(2);
        let (a, b) = std::thread::scope(|s| {
            let b = s.spawn(|| {
                a_writing.wait();
                let mut first = true;
                archive_files(&layout, cpid, &out, true, &|| false, &mut || {
                    if std::mem::take(&mut first) {
                        b_writing.wait();
                        a_done.wait();
                    }
                })
            });
            let mut first = true;
            let a = archive_files(&layout, cpid, &out, true, &|| false, &mut || {
                if std::mem::take(&mut first) {
                    a_writing.wait();
                    b_writing.wait();
                }
            });
            a_done.wait();
            (a, b.join().unwrap())
        });
        let path = a.unwrap();
        assert!(b.is_err(), "B packs a file A removed: {b:?}");
        assert_eq!(entries(&path).unwrap(), expected, "the archive is whole");
        assert!(layout.run_files(cpid).is_empty());
        let left: Vec<_> = std::fs::read_dir(&out)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(left, [path.file_name().unwrap()], "no temporary file left");
    }

    /// A run of three files under a temporary directory.
    fn a_run(dir: &Path) -> (Layout, Cpid) {
        let layout = Layout::new(dir.join("etc/salt"), dir.join("srv/runners"));
        let cpid = Cpid::from_parts(1, 10);
        for f in [
            layout.maps_dir(cpid).join("devops.map"),
            layout.cloud_runs_dir(cpid).join("create.log"),
            layout.state_runs_dir(cpid).join("devops.log"),
        ] {
            std::fs::create_dir_all(f.parent().unwrap()).unwrap();
            std::fs::write(f, "x\n").unwrap();
        }
        (layout, cpid)
    }

    fn names_in(dir: &Path) -> Vec<std::ffi::OsString> {
        std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect()
    }

    #[test]
    fn an_archive_stopped_between_files_leaves_no_file_and_removes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let (layout, cpid) = a_run(dir.path());
        let out = dir.path().join("archives");
        let packed = std::cell::Cell::new(0);
        let r = archive_files(
            &layout,
            cpid,
            &out,
            true,
            &|| packed.get() == 1,
            &mut || packed.set(packed.get() + 1),
        );
        assert!(matches!(r, Err(Error::Interrupted)), "{r:?}");
        assert_eq!(packed.get(), 1, "stopped after the first file");
        assert!(names_in(&out).is_empty(), "no temporary file, no archive");
        assert_eq!(layout.run_files(cpid).len(), 3, "the run's files stay");
    }

    #[test]
    fn an_archive_stopped_once_packed_is_complete_and_removes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let (layout, cpid) = a_run(dir.path());
        let out = dir.path().join("archives");
        let packed = std::cell::Cell::new(0);
        let path = archive_files(
            &layout,
            cpid,
            &out,
            true,
            &|| packed.get() == 3,
            &mut || packed.set(packed.get() + 1),
        )
        .unwrap();
        assert_eq!(entries(&path).unwrap().len(), 3, "the archive is whole");
        assert_eq!(names_in(&out), [path.file_name().unwrap()]);
        assert_eq!(layout.run_files(cpid).len(), 3, "the run's files stay");
    }
}
