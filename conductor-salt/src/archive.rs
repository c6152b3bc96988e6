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
/// its own and renamed once complete. Archivers of one run take turns: each
/// holds an exclusive `flock` on `<runner-dir>/.archive.lock` from listing
/// the files until it removed them, so a second one never packs the part
/// of the run a first left while removing it (it finds no files then, and
/// says where the archive is). Holding the lock, it removes the temporary
/// archives of this run a killed archiver left in `to`. With `remove`, the
/// files are deleted once the archive is written. Returns the archive's
/// path.
///
/// `cancel` is looked at before each file is packed: cancelled there, the
/// temporary file is removed and nothing else changed
/// ([`Error::Interrupted`]). Cancelled once every file is packed, the
/// archive is completed but the run's files are not removed, even with
/// `remove` (the path is returned; a warning says the files stay). The
/// work runs on a blocking thread and this waits for it to end, so when
/// this returns nothing is still being written or removed. (An archiver
/// waiting for the lock looks at `cancel` once it has it.)
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
        span.in_scope(|| {
            archive_files(
                &layout,
                cpid,
                &to,
                remove,
                &|| cancel.is_cancelled(),
                &mut |_| {},
            )
        })
    })
    .await
    .map_err(|e| Error::task("archiving the run", e))?
}

/// The lock archivers of the runs under `layout` take turns on.
fn lock_path(layout: &Layout) -> PathBuf {
    layout.runner_dir.join(".archive.lock")
}

/// Holds the archivers' lock ([`lock_path`]) until the file is dropped:
/// waits while another archiver holds it. `Ok(None)` when the runner
/// directory does not exist (no run has files there, nor an archiver a
/// lock).
fn lock_archivers(layout: &Layout) -> Result<Option<File>, Error> {
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::OpenOptionsExt;
    let path = lock_path(layout);
    // Read-only is enough for flock: a lock file another user created
    // (mode 0644) serves too.
    let file = match File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            match std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(false)
                .mode(0o644)
                .open(&path)
            {
                Ok(f) => f,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
                Err(e) => return Err(Error::io(&path, e)),
            }
        }
        Err(e) => return Err(Error::io(&path, e)),
    };
    loop {
        // SAFETY: flock on a descriptor owned here; released when `file`
        // is closed.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } == 0 {
            return Ok(Some(file));
        }
        let e = std::io::Error::last_os_error();
        if e.kind() != std::io::ErrorKind::Interrupted {
            return Err(Error::io(&path, e));
        }
    }
}

/// Removes the temporary archives of run `cpid` in `to`
/// (`.conductor-run-<cpid>.tar.gz.*.tmp`): call holding the archivers'
/// lock, when every archiver of the run still writing one holds it, so
/// those left are a killed archiver's.
fn remove_stale_temps(to: &Path, cpid: Cpid) {
    let prefix = format!(".conductor-run-{cpid}.tar.gz.");
    let Ok(entries) = std::fs::read_dir(to) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name();
        if name
            .to_str()
            .is_some_and(|n| n.starts_with(&prefix) && n.ends_with(".tmp"))
        {
            match std::fs::remove_file(e.path()) {
                Ok(()) => tracing::info!(
                    path = %e.path().display(),
                    "removed a temporary archive a killed archiver left"
                ),
                Err(err) => tracing::warn!(
                    path = %e.path().display(),
                    error = %err,
                    "cannot remove a temporary archive a killed archiver left"
                ),
            }
        }
    }
}

/// Where an archiver is, for the hook of [`archive_files`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Step {
    /// About to take the archivers' lock.
    Locking,
    /// One more file packed.
    Packed,
    /// One more file removed.
    Removed,
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

/// [`archive`]'s work, asking `stop` before each file is packed and before
/// the files are removed, and calling `between` at each [`Step`] (where a
/// test holds one archiver while another runs).
fn archive_files(
    layout: &Layout,
    cpid: Cpid,
    to: &Path,
    remove: bool,
    stop: &dyn Fn() -> bool,
    between: &mut dyn FnMut(Step),
) -> Result<PathBuf, Error> {
    between(Step::Locking);
    // Held until this archiver returns.
    let _lock = lock_archivers(layout)?;
    let files = layout.run_files(cpid);
    let path = to.join(format!("conductor-run-{cpid}.tar.gz"));
    if files.is_empty() {
        let mut reason = format!(
            "no files of this run under {} or {}",
            layout.runner_dir.display(),
            layout.config_dir.display()
        );
        if path.exists() {
            reason.push_str(&format!(
                "; its archive already exists at {}",
                path.display()
            ));
        }
        return Err(conductor_core::InputError::invalid("cpid", &cpid.to_string(), &reason).into());
    }
    {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(to)
            .map_err(|e| Error::io(to, e))?;
    }
    remove_stale_temps(to, cpid);
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
            between(Step::Packed);
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
                Ok(()) => between(Step::Removed),
                // Removed by something other than an archiver (which holds
                // the lock): gone either way.
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
    use std::sync::mpsc;

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

    /// A run with three files of 20,000 lines under a temporary
    /// directory's `etc/salt` and `srv/runners`, and what its archive
    /// holds: (layout, cpid, entries with their sizes).
    fn a_run(dir: &Path) -> (Layout, Cpid, Vec<(String, usize)>) {
        let layout = Layout::new(dir.join("etc/salt"), dir.join("srv/runners"));
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
        (layout, cpid, expected)
    }

    /// The names in `dir`, sorted.
    fn names(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    /// Two archivers of one run with `remove`: A has renamed its whole
    /// archive into place and removed one of the run's three files when B
    /// starts. Without the lock, B lists the two files left, packs them and
    /// renames its archive over A's: the file A removed is in no archive.
    /// With it, B waits until A is done, then finds no files and says where
    /// the archive is; the archive in place is A's, whole.
    #[test]
    fn an_archiver_starting_while_another_removes_the_files_leaves_the_whole_archive() {
        let dir = tempfile::tempdir().unwrap();
        let (layout, cpid, expected) = a_run(dir.path());
        let out = dir.path().join("archives");
        let (start_b, b_may_start) = mpsc::channel::<()>();
        let (b_says, a_hears) = mpsc::channel::<&str>();
        let (a, b) = std::thread::scope(|s| {
            let (layout, out) = (&layout, &out);
            let b = s.spawn(move || {
                b_may_start.recv().unwrap();
                let locking = b_says.clone();
                let b = archive_files(layout, cpid, out, true, &|| false, &mut |step| {
                    if step == Step::Locking {
                        let _ = locking.send("waiting for the lock");
                    }
                });
                let _ = b_says.send("done");
                b
            });
            let mut first = true;
            let a = archive_files(layout, cpid, out, true, &|| false, &mut |step| {
                if step == Step::Removed && std::mem::take(&mut first) {
                    start_b.send(()).unwrap();
                    // B waits for the lock A holds (and goes on once A
                    // returned), or, without a lock, has run to its end.
                    a_hears.recv().unwrap();
                }
            });
            (a, b.join().unwrap())
        });
        let path = a.unwrap();
        assert_eq!(entries(&path).unwrap(), expected, "the archive is whole");
        let b = b.unwrap_err().to_string();
        assert!(
            b.contains(&format!(
                "no files of this run under {}",
                layout.runner_dir.display()
            )) && b.contains(&format!("its archive already exists at {}", path.display())),
            "{b}"
        );
        assert!(layout.run_files(cpid).is_empty());
        assert_eq!(
            names(&out),
            [path.file_name().unwrap().to_string_lossy()],
            "no temporary file left"
        );
    }

    /// A killed archiver's temporary archive of the run is removed by the
    /// next archiver of the run; another run's stays (its archiver may be
    /// writing it).
    #[test]
    fn the_next_archiver_removes_a_killed_archivers_temporary_archive() {
        let dir = tempfile::tempdir().unwrap();
        let (layout, cpid, expected) = a_run(dir.path());
        let out = dir.path().join("archives");
        std::fs::create_dir(&out).unwrap();
        let other = Cpid::from_parts(2, 20);
        let left = format!(".conductor-run-{cpid}.tar.gz.4242.7.tmp");
        let others = format!(".conductor-run-{other}.tar.gz.4242.8.tmp");
        for name in [&left, &others] {
            std::fs::write(out.join(name), "part of an archive").unwrap();
        }
        let path = archive_files(&layout, cpid, &out, false, &|| false, &mut |_| {}).unwrap();
        assert_eq!(entries(&path).unwrap(), expected);
        assert_eq!(
            names(&out),
            [others, format!("conductor-run-{cpid}.tar.gz")],
            "{left} removed"
        );
    }

    /// Archives the run of `a_run` with `remove`, told to stop once
    /// `after` files are packed; returns what it returned and how many files
    /// it packed.
    fn archive_stopping(
        layout: &Layout,
        cpid: Cpid,
        out: &Path,
        after: usize,
    ) -> (Result<PathBuf, Error>, usize) {
        let packed = std::cell::Cell::new(0);
        let stop = || packed.get() == after;
        let r = archive_files(layout, cpid, out, true, &stop, &mut |step| {
            if step == Step::Packed {
                packed.set(packed.get() + 1)
            }
        });
        (r, packed.get())
    }

    #[test]
    fn an_archive_stopped_between_files_leaves_no_file_and_removes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let (layout, cpid, _) = a_run(dir.path());
        let out = dir.path().join("archives");
        let (r, packed) = archive_stopping(&layout, cpid, &out, 1);
        assert!(matches!(r, Err(Error::Interrupted)), "{r:?}");
        assert_eq!(packed, 1, "stopped after the first file");
        assert!(names(&out).is_empty(), "no temporary file, no archive");
        assert_eq!(layout.run_files(cpid).len(), 3, "the run's files stay");
    }

    #[test]
    fn an_archive_stopped_once_packed_is_complete_and_removes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let (layout, cpid, expected) = a_run(dir.path());
        let out = dir.path().join("archives");
        let (r, packed) = archive_stopping(&layout, cpid, &out, 3);
        let path = r.unwrap();
        assert_eq!(packed, 3);
        assert_eq!(entries(&path).unwrap(), expected, "the archive is whole");
        assert_eq!(names(&out), [path.file_name().unwrap().to_string_lossy()]);
        assert_eq!(layout.run_files(cpid).len(), 3, "the run's files stay");
    }
}
