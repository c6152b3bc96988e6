//! `FsReserver`: one file per key under `reserved_names/` and `reserved_ids/`.
//!
//! A key is granted by publishing a fully written, fsynced temp file with
//! `link(2)`, which, like `open(O_CREAT|O_EXCL)`, fails when the name exists:
//! readers never see a half-written owner, and the directory is fsynced before
//! the grant is reported. Taking over a free key, changing an expiry or phase
//! and pruning hold an exclusive `flock` on `<runner-dir>/.reserved.lock` and
//! re-read the owner under it, so two runs cannot both take over the same
//! key, a holder that renewed meanwhile keeps its key, and `prune` never
//! frees a key whose owner is alive, nor, before its lease expires, one whose
//! owner runs on another host or in another pid namespace of this host name
//! (its liveness is unknown here, see [`Owner::alive`]).
//!
//! An entry at a key path that is not a readable regular file holding
//! Conductor's owner JSON (the Python `conduct.group` runner writes its own
//! files there, under the same key names; or a file this user cannot read, a
//! directory, a symlink, a FIFO) is a [`Holder::Foreign`]: held by an unknown
//! owner, never taken over, listed with its age (from `lstat`), removed only
//! by `prune` with an age. Only regular files are opened, without following
//! symlinks or blocking; `prune` removes a symlink itself (never its target)
//! and a directory only when it is empty (a non-empty one is left, with a
//! warning: it is someone else's data).
//!
//! **Scope.** This is sound on one host, or on a shared filesystem whose
//! `link` is atomic and whose `flock` is coherent between clients (not every
//! NFS setup). Liveness by pid only works for owners on this host, in this
//! pid namespace (an owner records it, [`Owner::pid_ns`]); an owner on
//! another host, or in another container of the same host name, is free only
//! when its lease expires. Across Salt masters
//! or CI runners, use the DynamoDB reserver instead.
//!
//! An unreadable directory, a read-only filesystem or a runner directory
//! that is a file are reported as [`BackendErrorKind::Io`](crate::BackendErrorKind::Io) errors naming the
//! path and the fix. Temp files left by a killed writer are removed by
//! `prune`.

use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, UNIX_EPOCH};

use async_trait::async_trait;

use super::{
    ms, now_ms, Holder, Key, KeyKind, Lease, Owner, Phase, Reservation, ReserveError, Reserver,
};
use crate::backend::{BackendError, BackendErrorKind};
use crate::layout::{replace_file, sync_dir, Layout};
use crate::names::Env;

/// A [`Reserver`] on the local filesystem (see the module docs for guarantees).
#[derive(Clone, Debug)]
pub struct FsReserver {
    names: PathBuf,
    ids: PathBuf,
    lock: PathBuf,
}

/// Name prefix of the temp files a grant writes before linking them.
const TMP_PREFIX: &str = ".tmp.";

/// Age after which a temp file in a reservation directory is a leftover of
/// a killed writer (a live one keeps it for milliseconds).
const TMP_STALE: Duration = Duration::from_secs(60);

impl FsReserver {
    /// A reserver under `layout.runner_dir`.
    pub fn new(layout: &Layout) -> Self {
        Self {
            names: layout.reserved_names_dir(),
            ids: layout.reserved_ids_dir(),
            lock: layout.runner_dir.join(".reserved.lock"),
        }
    }

    fn dir(&self, kind: KeyKind) -> &Path {
        match kind {
            KeyKind::Name => &self.names,
            KeyKind::Id => &self.ids,
        }
    }

    fn path(&self, key: &Key) -> PathBuf {
        self.dir(key.kind()).join(key.as_str())
    }

    fn ensure_dirs(&self) -> Result<(), BackendError> {
        for d in [&self.names, &self.ids] {
            fs::create_dir_all(d).map_err(|e| io_err(d, e))?;
        }
        Ok(())
    }

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&FsReserver) -> T + Send + 'static,
    ) -> Result<T, BackendError> {
        let me = self.clone();
        tokio::task::spawn_blocking(move || f(&me))
            .await
            .map_err(|e| BackendError::task("a reservation", e))
    }

    /// Holds the takeover lock until dropped.
    fn lock(&self) -> Result<File, BackendError> {
        if let Some(root) = self.lock.parent() {
            fs::create_dir_all(root).map_err(|e| io_err(root, e))?;
        }
        let f = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o644)
            .open(&self.lock)
            .map_err(|e| io_err(&self.lock, e))?;
        loop {
            // SAFETY: flock on an fd we own; released when the file is closed.
            if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) } == 0 {
                return Ok(f);
            }
            let e = std::io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::EINTR) => continue,
                Some(libc::ENOLCK) | Some(libc::EOPNOTSUPP) => {
                    return Err(BackendError::io(&self.lock, e).with_hint(
                        "this filesystem has no working flock, which FsReserver needs: \
                         use a local --runner-dir, or --reserver dynamodb",
                    ))
                }
                _ => return Err(io_err(&self.lock, e)),
            }
        }
    }

    /// Publishes `owner` at `path` if nothing is there. `Ok(false)` when taken.
    fn publish(&self, path: &Path, owner: &Owner) -> Result<bool, BackendError> {
        let dir = path.parent().unwrap_or(Path::new("."));
        let tmp = dir.join(format!(
            "{TMP_PREFIX}{}.{}",
            std::process::id(),
            rand::random::<u64>()
        ));
        let body = owner_json(owner);
        let write = || -> std::io::Result<()> {
            let mut f = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o644)
                .open(&tmp)?;
            f.write_all(&body)?;
            f.sync_all()
        };
        if let Err(e) = write() {
            let _ = fs::remove_file(&tmp);
            return Err(io_err(dir, e));
        }
        let linked = fs::hard_link(&tmp, path);
        let _ = fs::remove_file(&tmp);
        match linked {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == ErrorKind::AlreadyExists => Ok(false),
            Err(e) => Err(io_err(path, e)),
        }
    }

    /// Who holds the key at `path`; `None` when nothing is there. Only a
    /// regular file is opened (not following a symlink, not blocking on a
    /// FIFO swapped in meanwhile); any other entry, and a file that cannot
    /// be read or parsed, is foreign.
    fn read_holder(path: &Path) -> Result<Option<Holder>, BackendError> {
        fault(Step::Read, path).map_err(|e| io_err(path, e))?;
        let meta = match fs::symlink_metadata(path) {
            Ok(m) => m,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_err(path, e)),
        };
        let foreign = Holder::Foreign {
            modified: modified_ms(&meta),
        };
        if !meta.is_file() {
            return Ok(Some(foreign));
        }
        let read = || -> std::io::Result<Vec<u8>> {
            let mut bytes = Vec::new();
            OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
                .open(path)?
                .read_to_end(&mut bytes)?;
            Ok(bytes)
        };
        match read() {
            Ok(bytes) => Ok(Some(
                serde_json::from_slice::<Owner>(&bytes).map_or(foreign, Holder::Run),
            )),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(_) => Ok(Some(foreign)),
        }
    }

    /// Grants `key` to `owner`: fresh, or by taking over a free holder.
    /// A key held by a live owner is refused on a read, before a temp file
    /// is written and fsynced for nothing (runs that want the same names
    /// try many held keys); `link` stays the arbiter when the key is free.
    fn grant(&self, key: &Key, owner: &Owner, now: u64) -> Result<bool, BackendError> {
        let path = self.path(key);
        if Self::read_holder(&path)?.is_some_and(|h| !h.is_free(now)) {
            return Ok(false);
        }
        if self.publish(&path, owner)? {
            return Ok(true);
        }
        if Self::read_holder(&path)?.is_some_and(|h| !h.is_free(now)) {
            return Ok(false);
        }
        let _guard = self.lock()?;
        // Re-read under the lock: only a holder still free may be replaced.
        match Self::read_holder(&path)? {
            Some(h) if h.is_free(now) => {
                remove(&path)?;
                self.publish(&path, owner)
            }
            None => self.publish(&path, owner),
            Some(_) => Ok(false),
        }
    }

    fn reserve_sync(&self, keys: &[Key], owner: &Owner) -> Result<Lease, ReserveError> {
        self.ensure_dirs()?;
        let mut unique = std::collections::BTreeSet::new();
        let keys: Vec<Key> = keys.iter().filter(|k| unique.insert(*k)).cloned().collect();
        let mut granted: Vec<Key> = Vec::new();
        match self.grant_all(&keys, owner, &mut granted) {
            Ok(()) => Ok(Lease {
                keys,
                owner: owner.clone(),
            }),
            Err(e) => {
                // All or nothing, on a conflict as on an error: no key stays
                // owned that the caller does not know it holds.
                if !granted.is_empty() {
                    self.rollback(granted, owner);
                }
                Err(e)
            }
        }
    }

    /// Grants every key of `keys` to `owner`, pushing each onto `granted`
    /// as it is granted, and makes the grants durable; on a conflict or an
    /// error returns early, and the caller rolls back what `granted` holds.
    fn grant_all(
        &self,
        keys: &[Key],
        owner: &Owner,
        granted: &mut Vec<Key>,
    ) -> Result<(), ReserveError> {
        let now = now_ms();
        let mut conflicts = Vec::new();
        for key in keys {
            if !conflicts.is_empty() {
                // Already failing: only find out which other keys are held.
                if Self::read_holder(&self.path(key))?.is_some_and(|h| !h.is_free(now)) {
                    conflicts.push(key.clone());
                }
                continue;
            }
            if self.grant(key, owner, now)? {
                granted.push(key.clone());
            } else {
                conflicts.push(key.clone());
            }
        }
        if !conflicts.is_empty() {
            return Err(ReserveError::Conflict(conflicts));
        }
        for kind in [KeyKind::Name, KeyKind::Id] {
            if keys.iter().any(|k| k.kind() == kind) {
                sync(self.dir(kind))?;
            }
        }
        Ok(())
    }

    fn rollback(&self, granted: Vec<Key>, owner: &Owner) {
        let lease = Lease {
            keys: granted,
            owner: owner.clone(),
        };
        if let Err(e) = self.update_sync(&lease, 0, Phase::Planning) {
            tracing::error!(error = %e, "rolling back a partial reservation failed; its keys expire with the lease");
        }
    }

    /// Updates every key of the lease still held by its run. A key that
    /// fails does not stop the others (a renewal or release of the rest
    /// still happens): the first failure is returned once all were tried,
    /// unless keys were lost, which is returned first (the run must stop).
    fn update_sync(&self, lease: &Lease, expires: u64, phase: Phase) -> Result<(), ReserveError> {
        let _guard = self.lock()?;
        let now = now_ms();
        let mut lost = Vec::new();
        let mut failed: Option<BackendError> = None;
        let mut rewritten = std::collections::BTreeSet::new();
        for key in &lease.keys {
            match self.update_key(key, &lease.owner, expires, phase, now) {
                Ok(Some(true)) => {
                    rewritten.insert(key.kind());
                }
                Ok(Some(false)) => {}
                Ok(None) => lost.push(key.clone()),
                Err(e) => {
                    tracing::warn!(%key, error = %e, "updating a reservation failed; updating the lease's other keys");
                    failed.get_or_insert(e);
                }
            }
        }
        // One directory fsync for all the renames into it.
        for kind in rewritten {
            if let Err(e) = sync(self.dir(kind)) {
                failed.get_or_insert(e);
            }
        }
        if !lost.is_empty() {
            if let Some(e) = failed {
                tracing::warn!(error = %e, "an update failed besides the keys lost");
            }
            return Err(ReserveError::Lost(lost));
        }
        match failed {
            Some(e) => Err(e.into()),
            None => Ok(()),
        }
    }

    /// Sets the expiry and phase of `key` if `owner`'s run holds it, or
    /// removes it when `expires` is at or before `now`: `Some(true)` when
    /// rewritten, `Some(false)` when removed, `None` when not the run's.
    fn update_key(
        &self,
        key: &Key,
        owner: &Owner,
        expires: u64,
        phase: Phase,
        now: u64,
    ) -> Result<Option<bool>, BackendError> {
        let path = self.path(key);
        let mut holder = match Self::read_holder(&path)? {
            Some(Holder::Run(o)) if o.same_run(owner) => o,
            _ => return Ok(None),
        };
        if expires <= now {
            remove(&path)?;
            return Ok(Some(false));
        }
        holder.expires = expires;
        holder.phase = phase;
        fault(Step::Rewrite, &path).map_err(|e| io_err(&path, e))?;
        replace_file(&path, &owner_json(&holder), 0o644).map_err(|e| io_err(&path, e))?;
        Ok(Some(true))
    }

    /// Every key file of `kind` with its path, skipping temp files and names
    /// that are not keys.
    fn entries(&self, kind: KeyKind) -> Result<Vec<(Key, PathBuf)>, BackendError> {
        let dir = self.dir(kind);
        let entries = match fs::read_dir(dir) {
            Ok(e) => e,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(vec![]),
            Err(e) => return Err(io_err(dir, e)),
        };
        let mut out = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| io_err(dir, e))?;
            let Some(name) = entry.file_name().to_str().map(str::to_string) else {
                continue;
            };
            if let Ok(key) = Key::new(kind, name) {
                out.push((key, entry.path()));
            }
        }
        Ok(out)
    }

    /// The reservations whose key `wanted` accepts; the others' files are
    /// skipped by name, unread.
    fn list_sync(&self, wanted: impl Fn(&Key) -> bool) -> Result<Vec<Reservation>, BackendError> {
        let mut out = Vec::new();
        for kind in [KeyKind::Name, KeyKind::Id] {
            for (key, path) in self.entries(kind)? {
                if !wanted(&key) {
                    continue;
                }
                if let Some(holder) = Self::read_holder(&path)? {
                    out.push(Reservation { key, kind, holder });
                }
            }
        }
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    fn prune_sync(
        &self,
        now: u64,
        env: Option<&Env>,
        older_than: Option<Duration>,
    ) -> Result<Vec<Key>, BackendError> {
        let _guard = self.lock()?;
        let mut pruned = Vec::new();
        for r in self.list_sync(|k| k.in_prune_scope(env))? {
            if r.holder.is_prunable(now, older_than) {
                let path = self.path(&r.key);
                if matches!(r.holder, Holder::Foreign { .. }) {
                    tracing::warn!(key = %r.key, "removing a reservation file of an unknown owner (older than --older-than)");
                }
                if remove(&path)? {
                    pruned.push(r.key);
                } else {
                    tracing::warn!(path = %path.display(), "left a directory that is not empty at a reservation key: its key stays held; remove it by hand if nothing uses it");
                }
            }
        }
        for kind in [KeyKind::Name, KeyKind::Id] {
            self.sweep_temps(kind)?;
        }
        Ok(pruned)
    }

    /// Removes temp files a killed writer left (older than [`TMP_STALE`]).
    fn sweep_temps(&self, kind: KeyKind) -> Result<(), BackendError> {
        let dir = self.dir(kind);
        let entries = match fs::read_dir(dir) {
            Ok(e) => e,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(io_err(dir, e)),
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let age = entry
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok())
                .unwrap_or_default();
            // A grant's or an atomic rewrite's temp file (`.tmp.<pid>.<n>`),
            // or an older version's rewrite (`.<key>.tmp.<pid>.<n>`).
            if name.starts_with('.') && name.contains(".tmp.") && age >= TMP_STALE {
                remove(&entry.path())?;
            }
        }
        Ok(())
    }
}

/// Fsyncs reservation directory `dir` (see [`sync_dir`]).
fn sync(dir: &Path) -> Result<(), BackendError> {
    fault(Step::SyncDir, dir)
        .and_then(|()| sync_dir(dir))
        .map_err(|e| io_err(dir, e))
}

/// An I/O step of the reserver that a unit test can make fail.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Step {
    /// Reading the holder of a key.
    Read,
    /// Rewriting a key's owner record.
    Rewrite,
    /// Fsyncing a reservation directory.
    SyncDir,
}

#[cfg(test)]
thread_local! {
    /// The faults injected on this thread: a step fails on a path.
    static FAULTS: std::cell::RefCell<Vec<(Step, PathBuf)>> =
        const { std::cell::RefCell::new(Vec::new()) };
}

/// Fails `step` on `path` when a unit test on this thread injected that
/// fault; outside tests, and otherwise, does nothing.
fn fault(step: Step, path: &Path) -> std::io::Result<()> {
    #[cfg(test)]
    if FAULTS.with(|f| f.borrow().iter().any(|(s, p)| *s == step && p == path)) {
        return Err(std::io::Error::other(format!("injected {step:?} fault")));
    }
    let _ = (step, path);
    Ok(())
}

/// When the entry of `meta` was last written, epoch milliseconds (0 when unknown).
fn modified_ms(meta: &fs::Metadata) -> u64 {
    meta.modified()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map(ms)
        .unwrap_or(0)
}

fn owner_json(owner: &Owner) -> Vec<u8> {
    // An `Owner` is strings and integers: serializing cannot fail.
    serde_json::to_vec(owner).unwrap_or_default()
}

/// An I/O error on `path`, with what to do about the common causes; those
/// of a wrong `--runner-dir` are the operator's input (`Rejected`: exit 2).
fn io_err(path: &Path, e: std::io::Error) -> BackendError {
    let hint = match e.kind() {
        ErrorKind::PermissionDenied => Some(
            "permission denied: this path is not readable or not writable by the user running \
             conductor (reservations need read, write and search permission on the runner \
             directory, reserved_names/ and reserved_ids/): fix their owner or mode, or point \
             --runner-dir at a directory this user owns",
        ),
        ErrorKind::ReadOnlyFilesystem => Some(
            "the reservation directory is not writable (a read-only filesystem): \
             point --runner-dir at a writable directory",
        ),
        ErrorKind::NotFound | ErrorKind::NotADirectory | ErrorKind::AlreadyExists => Some(
            "the reservation directory is missing or a path component is not a directory: \
             create it, or point --runner-dir at a writable directory",
        ),
        _ => None,
    };
    let err = BackendError::io(path, e);
    match hint {
        Some(h) => {
            let mut err = err.with_hint(h);
            err.kind = BackendErrorKind::Rejected;
            err
        }
        None => err,
    }
}

/// Removes the entry at `path`: a file, a symlink (never its target) or an
/// empty directory; `Ok(false)` leaves a directory that is not empty.
fn remove(path: &Path) -> Result<bool, BackendError> {
    let removed = match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => fs::remove_dir(path),
        _ => fs::remove_file(path),
    };
    match removed {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(true),
        Err(e) if e.kind() == ErrorKind::DirectoryNotEmpty => Ok(false),
        Err(e) => Err(io_err(path, e)),
    }
}

#[async_trait]
impl Reserver for FsReserver {
    async fn try_reserve(&self, keys: &[Key], owner: &Owner) -> Result<Lease, ReserveError> {
        let (keys, owner) = (keys.to_vec(), owner.clone());
        self.blocking(move |me| me.reserve_sync(&keys, &owner))
            .await?
    }

    async fn update(&self, lease: &Lease, expires: u64, phase: Phase) -> Result<(), ReserveError> {
        let lease = lease.clone();
        self.blocking(move |me| me.update_sync(&lease, expires, phase))
            .await?
    }

    async fn list(&self, env: Option<&Env>) -> Result<Vec<Reservation>, BackendError> {
        let env = env.cloned();
        self.blocking(move |me| me.list_sync(|k| env.as_ref().is_none_or(|e| k.in_env(e))))
            .await?
    }

    async fn prune(
        &self,
        now: u64,
        env: Option<&Env>,
        older_than: Option<Duration>,
    ) -> Result<Vec<Key>, BackendError> {
        let env = env.cloned();
        self.blocking(move |me| me.prune_sync(now, env.as_ref(), older_than))
            .await?
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpid::Cpid;

    /// Makes `step` fail on `path` for the rest of this thread's test.
    fn inject(step: Step, path: PathBuf) {
        FAULTS.with(|f| f.borrow_mut().push((step, path)));
    }

    fn reserver() -> (tempfile::TempDir, FsReserver) {
        let d = tempfile::tempdir().unwrap();
        let r = FsReserver::new(&Layout::new(d.path().join("etc"), d.path().join("runner")));
        (d, r)
    }

    fn owner() -> Owner {
        Owner::this_process(Cpid::generate(), Duration::from_secs(600))
    }

    fn key(kind: KeyKind, text: &str) -> Key {
        Key::new(kind, text).unwrap()
    }

    /// The keys of `keys` someone holds, as `list` reads them.
    fn held(r: &FsReserver, keys: &[Key]) -> Vec<Key> {
        let list = r.list_sync(|_| true).unwrap();
        keys.iter()
            .filter(|k| list.iter().any(|x| &x.key == *k))
            .cloned()
            .collect()
    }

    /// An error reading the holders after a conflict (to name every held
    /// key) leaves nothing of the request granted.
    #[test]
    fn an_error_after_a_grant_rolls_it_back() {
        let (_d, r) = reserver();
        let [a, b, c] = [
            "lab_a.example.org",
            "lab_b.example.org",
            "lab_c.example.org",
        ]
        .map(|t| key(KeyKind::Name, t));
        r.reserve_sync(std::slice::from_ref(&b), &owner()).unwrap();
        inject(Step::Read, r.path(&c));
        let me = owner();
        let e = r.reserve_sync(&[a.clone(), b.clone(), c.clone()], &me);
        assert!(matches!(e, Err(ReserveError::Backend(_))), "{e:?}");
        assert_eq!(held(&r, &[a.clone(), c]), [] as [Key; 0], "a rolled back");
        r.reserve_sync(&[a], &me)
            .expect("the run's retry does not conflict with itself");
    }

    /// A failed fsync of the directories after every key was granted
    /// leaves none of them granted.
    #[test]
    fn a_failed_directory_sync_rolls_the_grants_back() {
        let (_d, r) = reserver();
        let keys = [
            key(KeyKind::Id, "lab_web.cluster.id.1"),
            key(KeyKind::Name, "lab_web01.example.org"),
        ];
        inject(Step::SyncDir, r.dir(KeyKind::Name).to_path_buf());
        let e = r.reserve_sync(&keys, &owner());
        assert!(matches!(e, Err(ReserveError::Backend(_))), "{e:?}");
        assert_eq!(held(&r, &keys), [] as [Key; 0]);
    }

    /// A key whose rewrite fails does not keep the lease's other keys from
    /// being renewed; the failure is reported.
    #[test]
    fn a_failing_key_does_not_stop_the_others_update() {
        let (_d, r) = reserver();
        let keys = [
            "lab_a.example.org",
            "lab_b.example.org",
            "lab_c.example.org",
        ]
        .map(|t| key(KeyKind::Name, t));
        let lease = r.reserve_sync(&keys, &owner()).unwrap();
        inject(Step::Rewrite, r.path(&keys[0]));
        let until = now_ms() + 60_000;
        let e = r.update_sync(&lease, until, Phase::Launching);
        assert!(matches!(e, Err(ReserveError::Backend(_))), "{e:?}");
        let list = r.list_sync(|_| true).unwrap();
        assert_eq!(list.len(), 3);
        for x in list {
            let o = x.holder.owner().unwrap();
            let renewed = (o.expires, o.phase) == (until, Phase::Launching);
            assert_eq!(renewed, x.key != keys[0], "{}", x.key);
        }
    }
}
