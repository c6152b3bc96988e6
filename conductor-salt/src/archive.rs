//! Archives of runs: every file of one CPID in one `.tar.gz`.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use conductor_core::{BackendError, CancellationToken, Error};
use conductor_core::{Cpid, Layout};

/// Packs every file of run `cpid` (map, provider, profile, state and cloud
/// run logs) into `<to>/conductor-run-<cpid>.tar.gz` ([`pack`]) and, with
/// `remove`, deletes those files once the archive is complete
/// ([`Packed::remove_files`]), holding the archivers' lock from listing the
/// files until they are removed. Returns the archive's path.
///
/// `cancel` is looked at while waiting for the lock and before each file is
/// packed: cancelled there, the temporary file is removed and nothing else
/// changed ([`Error::Interrupted`]). Cancelled once every file is packed,
/// the archive is completed but the run's files are not removed, even with
/// `remove` (the path is returned; a warning says the files stay). The work
/// runs on a blocking thread and this waits for it to end, so when this
/// returns nothing is still being written or removed.
pub async fn archive(
    layout: &Layout,
    cpid: Cpid,
    to: &Path,
    remove: bool,
    cancel: &CancellationToken,
) -> Result<PathBuf, Error> {
    blocking(layout, cpid, to, remove, cancel, archive_files).await
}

/// The work of [`archive`] or [`pack`] (taking `stop` and a [`Step`] hook).
type Work<T> =
    fn(&Layout, Cpid, &Path, bool, &dyn Fn() -> bool, &mut dyn FnMut(Step)) -> Result<T, Error>;

/// Runs `work` on a blocking thread, in the archive's span, told to stop
/// once `cancel` is cancelled, and waits for it to end.
async fn blocking<T: Send + 'static>(
    layout: &Layout,
    cpid: Cpid,
    to: &Path,
    remove: bool,
    cancel: &CancellationToken,
    work: Work<T>,
) -> Result<T, Error> {
    let layout = layout.clone();
    let to = to.to_path_buf();
    let cancel = cancel.clone();
    let span = tracing::info_span!("conductor.archive", %cpid, to = %to.display(), remove);
    tokio::task::spawn_blocking(move || {
        span.in_scope(|| {
            work(
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

/// Packs every file of run `cpid` into `<to>/conductor-run-<cpid>.tar.gz`;
/// entries are named `config/...` and `runner/...` after their root. The
/// archive is mode 0600 (it holds the provider file and its credentials)
/// and `to` is created mode 0700 when it does not exist. It is written
/// under a temporary name of its own and renamed once complete.
///
/// When the archive already exists (a run archived before, whose
/// `--remove` stopped partway), the new one is the union: every entry of
/// the old one whose name is not among the files packed now is copied into
/// it (the files on disk win), so archiving again never loses a file. An
/// old archive that cannot be read is not replaced: the error names it.
///
/// Archivers of one run take turns: the returned [`Packed`] holds an
/// exclusive `flock` on `<runner-dir>/.archive.lock`, taken before the
/// files are listed, until it is dropped or [`Packed::remove_files`]
/// removed exactly the files packed, so a second archiver never packs the
/// part of the run a first left while removing it. Holding the lock, it
/// removes the temporary archives of this run a killed archiver left in
/// `to`. When the lock cannot be taken (a runner directory this user
/// cannot write, a filesystem without `flock`), `remove` (the files are to
/// be removed) makes that an error naming the lock file; without it, the
/// archive is written without the lock and a warning says why.
///
/// `cancel` is looked at while waiting for the lock and before each file
/// is packed: cancelled, the temporary file is removed and nothing else
/// changed ([`Error::Interrupted`]).
pub async fn pack(
    layout: &Layout,
    cpid: Cpid,
    to: &Path,
    remove: bool,
    cancel: &CancellationToken,
) -> Result<Packed, Error> {
    blocking(layout, cpid, to, remove, cancel, pack_files).await
}

/// The file name of run `cpid`'s archive: `conductor-run-<cpid>.tar.gz`.
pub fn file_name(cpid: Cpid) -> String {
    format!("conductor-run-{cpid}.tar.gz")
}

/// A complete archive of a run, with the files packed in it and the
/// archivers' lock (released when this is dropped).
#[derive(Debug)]
pub struct Packed {
    layout: Layout,
    cpid: Cpid,
    path: PathBuf,
    files: Vec<PathBuf>,
    remove: bool,
    _lock: Option<File>,
}

impl Packed {
    /// The archive's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Removes exactly the files packed (not a file written since), then
    /// the run's directories left empty, and releases the lock; returns
    /// the archive's path. Cancelled before, nothing is removed
    /// ([`Error::Interrupted`]; a warning says the files stay). Only for
    /// an archive packed with `remove`.
    pub async fn remove_files(self, cancel: &CancellationToken) -> Result<PathBuf, Error> {
        if cancel.is_cancelled() {
            tracing::warn!(cpid = %self.cpid, archive = %self.path.display(), "interrupted: the archive is complete; the run's files were not removed");
            return Err(Error::Interrupted);
        }
        tokio::task::spawn_blocking(move || {
            self.remove(&mut |_| {})?;
            Ok(self.path)
        })
        .await
        .map_err(|e| Error::task("removing the run's files", e))?
    }

    /// [`Packed::remove_files`]' work, calling `between` after each file
    /// removed.
    fn remove(&self, between: &mut dyn FnMut(Step)) -> Result<(), Error> {
        if !self.remove {
            return Err(Error::backend(
                "removing the run's files",
                BackendError::new(
                    conductor_core::BackendErrorKind::Io,
                    "the archive was packed without remove (maybe without the archivers' lock)",
                ),
            ));
        }
        for f in &self.files {
            match std::fs::remove_file(f) {
                Ok(()) => between(Step::Removed),
                // Removed by something other than an archiver (which holds
                // the lock): gone either way.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::io(f, e)),
            }
        }
        for d in [
            self.layout.maps_dir(self.cpid),
            self.layout.cloud_runs_dir(self.cpid),
            self.layout.state_runs_dir(self.cpid),
        ] {
            remove_empty_dirs(&d);
        }
        Ok(())
    }
}

/// The lock archivers of the runs under `layout` take turns on.
fn lock_path(layout: &Layout) -> PathBuf {
    layout.runner_dir.join(".archive.lock")
}

/// How long an archiver waits between two tries of the lock another holds.
const LOCK_RETRY: std::time::Duration = std::time::Duration::from_millis(100);

/// Holds the archivers' lock ([`lock_path`]) until the file is dropped:
/// tries again every [`LOCK_RETRY`] while another archiver holds it,
/// calling `between(Step::Waiting)` once and returning
/// [`Error::Interrupted`] once `stop` says so. `Ok(None)` when the runner
/// directory does not exist (no run has files there, nor an archiver a
/// lock), or when the lock cannot be had and `remove` is false (a warning
/// says why); with `remove`, that is an error naming the lock file.
fn lock_archivers(
    layout: &Layout,
    remove: bool,
    stop: &dyn Fn() -> bool,
    between: &mut dyn FnMut(Step),
) -> Result<Option<File>, Error> {
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::OpenOptionsExt;
    let path = lock_path(layout);
    let unavailable = |e: std::io::Error| -> Result<Option<File>, Error> {
        let no_flock = matches!(
            e.raw_os_error(),
            Some(libc::ENOLCK) | Some(libc::EOPNOTSUPP)
        );
        if remove {
            let hint = if no_flock {
                "this filesystem has no working flock, which `runs archive --remove` needs: \
                 use a local --runner-dir, or archive without --remove (and remove the run's \
                 files from one host)"
            } else {
                "`runs archive --remove` needs to create and lock it: run it as a user who can \
                 write to the runner directory (or create the lock file for it), or archive \
                 without --remove"
            };
            Err(Error::backend(
                "taking the archivers' lock",
                BackendError::io(&path, e).with_hint(hint),
            ))
        } else {
            tracing::warn!(
                lock = %path.display(),
                error = %e,
                "cannot take the archivers' lock; archiving without it (nothing is removed)"
            );
            Ok(None)
        }
    };
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
                Err(e) => return unavailable(e),
            }
        }
        Err(e) => return unavailable(e),
    };
    let mut waiting = false;
    loop {
        // SAFETY: flock on a descriptor owned here; released when `file`
        // is closed.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
            return Ok(Some(file));
        }
        let e = std::io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::EINTR) => continue,
            Some(libc::EWOULDBLOCK) => {
                if !std::mem::replace(&mut waiting, true) {
                    tracing::info!(lock = %path.display(), "waiting for another archiver");
                    between(Step::Waiting);
                }
                if stop() {
                    tracing::warn!(
                        "interrupted while waiting for the archivers' lock: nothing written"
                    );
                    return Err(Error::Interrupted);
                }
                std::thread::sleep(LOCK_RETRY);
            }
            _ => return unavailable(e),
        }
    }
}
/// Removes the temporary archives of run `cpid` in `to`
/// (`.conductor-run-<cpid>.tar.gz.*.tmp`): call holding the archivers'
/// lock, when every archiver of the run still writing one holds it, so
/// those left are a killed archiver's.
fn remove_stale_temps(to: &Path, cpid: Cpid) {
    let prefix = format!(".{}.", file_name(cpid));
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
    /// Another archiver holds the lock: waiting for it (once).
    Waiting,
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
            ".{}.{}.{n}.tmp",
            file_name(cpid),
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

/// [`archive`]'s work: [`pack_files`], then, with `remove` and unless
/// `stop` says so, [`Packed::remove`].
fn archive_files(
    layout: &Layout,
    cpid: Cpid,
    to: &Path,
    remove: bool,
    stop: &dyn Fn() -> bool,
    between: &mut dyn FnMut(Step),
) -> Result<PathBuf, Error> {
    let packed = pack_files(layout, cpid, to, remove, stop, between)?;
    if remove && stop() {
        tracing::warn!(%cpid, archive = %packed.path.display(), "interrupted: the archive is complete; the run's files were not removed");
    } else if remove {
        packed.remove(between)?;
    }
    Ok(packed.path)
}

/// Why writing an archive failed.
enum WriteError {
    /// Writing the new one.
    Write(std::io::Error),
    /// Reading the archive already there.
    Old(std::io::Error),
}

impl From<std::io::Error> for WriteError {
    fn from(e: std::io::Error) -> Self {
        Self::Write(e)
    }
}

/// [`pack`]'s work, asking `stop` while waiting for the lock and before
/// each file (or entry of the old archive) is packed, and calling
/// `between` at each [`Step`] (where a test holds one archiver while
/// another runs).
fn pack_files(
    layout: &Layout,
    cpid: Cpid,
    to: &Path,
    remove: bool,
    stop: &dyn Fn() -> bool,
    between: &mut dyn FnMut(Step),
) -> Result<Packed, Error> {
    between(Step::Locking);
    let lock = lock_archivers(layout, remove, stop, between)?;
    let files = layout.run_files(cpid);
    let path = to.join(file_name(cpid));
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
    if lock.is_some() {
        remove_stale_temps(to, cpid);
    }
    let (tmp, file) = create_temp(to, cpid)
        .map_err(|e| Error::backend("writing the archive", BackendError::io(to, e)))?;
    // Ok(false): stopped before every file was packed, nothing renamed.
    let write = || -> Result<bool, WriteError> {
        use std::os::unix::fs::PermissionsExt;
        // Whatever the umask.
        file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
        let gz = flate2::write::GzEncoder::new(file, flate2::Compression::default());
        let mut tar = tar::Builder::new(gz);
        let mut names = std::collections::HashSet::new();
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
            tar.append_path_with_name(f, &name)?;
            names.insert(name);
            between(Step::Packed);
        }
        // The entries of the archive already there that are not on disk
        // any more (removed by an archiver that stopped partway).
        match File::open(&path) {
            Ok(old) => {
                let mut old = tar::Archive::new(flate2::read::GzDecoder::new(old));
                for e in old.entries().map_err(WriteError::Old)? {
                    let mut e = e.map_err(WriteError::Old)?;
                    let name = e.path().map_err(WriteError::Old)?.into_owned();
                    if names.contains(&name) {
                        continue;
                    }
                    if stop() {
                        return Ok(false);
                    }
                    let mut body = Vec::new();
                    std::io::Read::read_to_end(&mut e, &mut body).map_err(WriteError::Old)?;
                    let mut header = e.header().clone();
                    tar.append_data(&mut header, &name, body.as_slice())?;
                    names.insert(name);
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(WriteError::Old(e)),
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
        Err(WriteError::Write(e)) => {
            let _ = std::fs::remove_file(&tmp);
            return Err(Error::backend(
                "writing the archive",
                BackendError::io(&path, e),
            ));
        }
        Err(WriteError::Old(e)) => {
            let _ = std::fs::remove_file(&tmp);
            return Err(Error::backend(
                "reading the archive already there",
                BackendError::io(&path, e).with_hint(
                    "it is not replaced (it may hold files of the run no longer on disk): \
                     move it aside, then archive again",
                ),
            ));
        }
    }
    Ok(Packed {
        layout: layout.clone(),
        cpid,
        path,
        files,
        remove,
        _lock: lock,
    })
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
    /// starts, and A goes on only once B waits for the lock A holds (or B
    /// is done). Without the lock, B never waits: it lists the two files
    /// left, packs them and renames its archive over A's, while A is held.
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
                    // Sent once B found the lock held, not before it tried.
                    if step == Step::Waiting {
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
                    let heard = a_hears.recv().unwrap();
                    assert_eq!(heard, "waiting for the lock", "B did not wait for A");
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

    /// A `--remove` that stopped partway (a second signal, a file it could
    /// not remove, a crash) left some of the run's files: archiving again
    /// keeps, from the archive already there, the entries of the files
    /// removed, and the files on disk win over their old entries.
    #[test]
    fn archiving_again_after_a_partial_removal_keeps_every_file() {
        let dir = tempfile::tempdir().unwrap();
        let (layout, cpid, expected) = a_run(dir.path());
        let out = dir.path().join("archives");
        let path = archive_files(&layout, cpid, &out, false, &|| false, &mut |_| {}).unwrap();
        // The removal stopped after the first file.
        let files = layout.run_files(cpid);
        std::fs::remove_file(&files[0]).unwrap();
        // A file written to since is archived as it is now.
        std::fs::write(&files[2], "rewritten\n").unwrap();
        let again = archive_files(&layout, cpid, &out, true, &|| false, &mut |_| {}).unwrap();
        assert_eq!(again, path);
        let mut got = entries(&path).unwrap();
        got.sort();
        let mut want = expected.clone();
        want[2].1 = "rewritten\n".len();
        want.sort();
        assert_eq!(
            got, want,
            "every file of the run, the rewritten one as it is now"
        );
        assert!(layout.run_files(cpid).is_empty());
        assert_eq!(names(&out), [path.file_name().unwrap().to_string_lossy()]);
    }

    /// An archive already there that cannot be read is neither replaced
    /// nor are the run's files removed: the error names it and what to do.
    #[test]
    fn an_unreadable_archive_already_there_is_not_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let (layout, cpid, _) = a_run(dir.path());
        let out = dir.path().join("archives");
        std::fs::create_dir(&out).unwrap();
        let path = out.join(format!("conductor-run-{cpid}.tar.gz"));
        std::fs::write(&path, "not a gzip file").unwrap();
        let e = archive_files(&layout, cpid, &out, true, &|| false, &mut |_| {})
            .unwrap_err()
            .to_string();
        assert!(
            e.contains(&path.display().to_string()) && e.contains("move it aside"),
            "{e}"
        );
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "not a gzip file");
        assert_eq!(names(&out), [path.file_name().unwrap().to_string_lossy()]);
        assert_eq!(layout.run_files(cpid).len(), 3, "the run's files stay");
    }

    /// Whether `/proc/locks` shows a process waiting for a lock on the
    /// file of inode `ino` (a waiter's line has `->`).
    fn a_waiter_on(ino: u64) -> bool {
        let locks = std::fs::read_to_string("/proc/locks").unwrap_or_default();
        let suffix = format!(":{ino}");
        locks
            .lines()
            .any(|l| l.contains("->") && l.split_whitespace().any(|f| f.ends_with(&suffix)))
    }

    /// An archiver waiting for the lock another holds stops when told to:
    /// [`Error::Interrupted`], nothing written, nothing removed. (Were it
    /// blocked in `flock`, a waiter shows in `/proc/locks`: the holder
    /// then lets it have the lock, and it archives.)
    #[test]
    fn an_archiver_waiting_for_the_lock_stops_when_told() {
        use std::os::fd::AsRawFd;
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        let (layout, cpid, _) = a_run(dir.path());
        let out = dir.path().join("archives");
        let held = File::create(lock_path(&layout)).unwrap();
        // SAFETY: flock on a descriptor owned here.
        assert_eq!(unsafe { libc::flock(held.as_raw_fd(), libc::LOCK_EX) }, 0);
        let ino = held.metadata().unwrap().ino();
        let done = std::sync::atomic::AtomicBool::new(false);
        let r = std::thread::scope(|s| {
            let done = &done;
            s.spawn(move || {
                while !done.load(Ordering::SeqCst) {
                    if a_waiter_on(ino) {
                        drop(held);
                        return;
                    }
                    std::thread::yield_now();
                }
            });
            let waited = std::cell::Cell::new(false);
            let r = archive_files(&layout, cpid, &out, true, &|| waited.get(), &mut |step| {
                if step == Step::Waiting {
                    waited.set(true);
                }
            });
            done.store(true, Ordering::SeqCst);
            r
        });
        assert!(matches!(r, Err(Error::Interrupted)), "{r:?}");
        assert!(!out.exists(), "nothing written");
        assert_eq!(layout.run_files(cpid).len(), 3, "the run's files stay");
    }

    /// A lock that cannot be had (here a symbolic link to itself: ELOOP,
    /// as root too) does not stop an archive without `remove` (a warning
    /// says why); with `remove`, it is an error naming the lock file and
    /// what to do, and nothing is written or removed.
    #[test]
    fn a_lock_that_cannot_be_had_stops_only_a_removing_archive() {
        let dir = tempfile::tempdir().unwrap();
        let (layout, cpid, expected) = a_run(dir.path());
        let out = dir.path().join("archives");
        let lock = lock_path(&layout);
        std::os::unix::fs::symlink(&lock, &lock).unwrap();
        let e = archive_files(&layout, cpid, &out, true, &|| false, &mut |_| {})
            .unwrap_err()
            .to_string();
        assert!(
            e.contains(&lock.display().to_string()) && e.contains("without --remove"),
            "{e}"
        );
        assert!(!out.exists(), "nothing written");
        assert_eq!(layout.run_files(cpid).len(), 3, "the run's files stay");
        let path = archive_files(&layout, cpid, &out, false, &|| false, &mut |_| {}).unwrap();
        assert_eq!(entries(&path).unwrap(), expected);
        assert_eq!(layout.run_files(cpid).len(), 3);
    }

    /// [`pack`] then [`Packed::remove_files`] removes exactly the files
    /// packed: one written between the two stays.
    #[tokio::test]
    async fn remove_files_removes_only_the_files_packed() {
        let dir = tempfile::tempdir().unwrap();
        let (layout, cpid, expected) = a_run(dir.path());
        let out = dir.path().join("archives");
        let cancel = CancellationToken::new();
        let packed = pack(&layout, cpid, &out, true, &cancel).await.unwrap();
        let later = layout.cloud_runs_dir(cpid).join("later.log");
        std::fs::write(&later, "written after the archive").unwrap();
        let path = packed.remove_files(&cancel).await.unwrap();
        assert_eq!(entries(&path).unwrap(), expected);
        assert_eq!(layout.run_files(cpid), [later]);
    }
}
