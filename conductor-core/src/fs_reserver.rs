//! `FsReserver`: one file per key under `reserved_names/` and `reserved_ids/`.
//!
//! A key is granted by publishing a fully written, fsynced temp file with
//! `link(2)`, which, like `open(O_CREAT|O_EXCL)`, fails when the name exists:
//! readers never see a half-written owner, and the directory is fsynced before
//! the grant is reported. Taking over a free key (expired, or its owner ran on
//! this host and is gone: dead pid, or a pid reused by a process with another
//! start time), changing an expiry and pruning hold an exclusive `flock` on
//! `<runner-dir>/.reserved.lock` and re-read the owner under it, so two runs
//! cannot both take over the same key and `prune` never frees a key whose
//! owner is alive.
//!
//! **Scope.** This is sound on one host, or on a shared filesystem whose
//! `link` is atomic and whose `flock` is coherent between clients (not every
//! NFS setup). Liveness by pid only works for owners on this host; an owner
//! on another host is free only when its lease expires. Across Salt masters
//! or CI runners, use the DynamoDB reserver instead.
//!
//! An unreadable directory, a read-only filesystem or a runner directory
//! that is a file are reported as [`BackendErrorKind::Io`] errors naming the
//! path and the fix. Temp files left by a killed writer are removed by
//! `prune`.

use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::Duration;

use async_trait::async_trait;

use crate::error::{BackendError, BackendErrorKind, ReserveError};
use crate::layout::Layout;
use crate::reserve::{
    is_free, is_prunable, now_ms, Key, KeyKind, Lease, Owner, Reservation, Reserver,
};

/// A [`Reserver`] on the local filesystem (see the module docs for guarantees).
#[derive(Clone, Debug)]
pub struct FsReserver {
    names: PathBuf,
    ids: PathBuf,
    lock: PathBuf,
}

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
            .map_err(|e| {
                BackendError::new(
                    BackendErrorKind::Io,
                    format!("reservation task failed: {e}"),
                )
            })
    }

    /// Holds the takeover lock until dropped.
    fn lock(&self) -> Result<LockGuard, BackendError> {
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
            // SAFETY: flock on an fd we own.
            if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) } == 0 {
                return Ok(LockGuard(f));
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

    fn read_owner(path: &Path) -> Result<Option<Owner>, BackendError> {
        match fs::read(path) {
            Ok(bytes) => Ok(serde_json::from_slice(&bytes).ok()),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_err(path, e)),
        }
    }

    /// Grants `key` to `owner`: fresh, or by taking over a free holder.
    fn grant(&self, key: &Key, owner: &Owner, now: u64) -> Result<bool, BackendError> {
        let path = self.path(key);
        if self.publish(&path, owner)? {
            return Ok(true);
        }
        if Self::read_owner(&path)?.is_some_and(|h| !is_free(&h, now)) {
            return Ok(false);
        }
        let _guard = self.lock()?;
        // Re-read under the lock: only a free holder may be replaced.
        match Self::read_owner(&path)? {
            Some(h) if is_free(&h, now) => {
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
        let keys = keys.as_slice();
        let now = now_ms();
        let mut granted: Vec<&Key> = Vec::new();
        let mut conflicts = Vec::new();
        for key in keys {
            if !conflicts.is_empty() {
                // Already failing: only find out which other keys are held.
                if Self::read_owner(&self.path(key))?.is_some_and(|h| !is_free(&h, now)) {
                    conflicts.push(key.clone());
                }
                continue;
            }
            match self.grant(key, owner, now) {
                Ok(true) => granted.push(key),
                Ok(false) => conflicts.push(key.clone()),
                Err(e) => {
                    self.rollback(&granted, owner);
                    return Err(e.into());
                }
            }
        }
        if !conflicts.is_empty() {
            self.rollback(&granted, owner);
            return Err(ReserveError::Conflict(conflicts));
        }
        for d in [&self.names, &self.ids] {
            File::open(d)
                .and_then(|f| f.sync_all())
                .map_err(|e| io_err(d, e))?;
        }
        Ok(Lease {
            keys: keys.to_vec(),
            owner: owner.clone(),
        })
    }

    fn rollback(&self, granted: &[&Key], owner: &Owner) {
        let lease = Lease {
            keys: granted.iter().map(|k| (*k).clone()).collect(),
            owner: owner.clone(),
        };
        if let Err(e) = self.set_expiry_sync(&lease, 0) {
            tracing::error!(error = %e, "rolling back a partial reservation failed; its keys expire with the lease");
        }
    }

    fn set_expiry_sync(&self, lease: &Lease, expires: u64) -> Result<(), BackendError> {
        let _guard = self.lock()?;
        let now = now_ms();
        for key in &lease.keys {
            let path = self.path(key);
            let Some(mut holder) = Self::read_owner(&path)? else {
                continue;
            };
            if !holder.same_run(&lease.owner) {
                continue;
            }
            if expires <= now {
                remove(&path)?;
            } else {
                holder.expires = expires;
                crate::layout::write_atomic(&path, &owner_json(&holder), 0o644)
                    .map_err(|e| io_err(&path, e))?;
            }
        }
        Ok(())
    }

    fn list_sync(&self) -> Result<Vec<Reservation>, BackendError> {
        let mut out = Vec::new();
        for kind in [KeyKind::Name, KeyKind::Id] {
            let dir = self.dir(kind);
            let entries = match fs::read_dir(dir) {
                Ok(e) => e,
                Err(e) if e.kind() == ErrorKind::NotFound => continue,
                Err(e) => return Err(io_err(dir, e)),
            };
            for entry in entries {
                let entry = entry.map_err(|e| io_err(dir, e))?;
                let Some(name) = entry.file_name().to_str().map(str::to_string) else {
                    continue;
                };
                let Ok(key) = Key::new(kind, name) else {
                    continue;
                };
                if let Some(owner) = Self::read_owner(&entry.path())? {
                    out.push(Reservation { key, kind, owner });
                }
            }
        }
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    fn prune_sync(&self, now: u64, older_than: Option<Duration>) -> Result<Vec<Key>, BackendError> {
        let _guard = self.lock()?;
        let mut pruned = Vec::new();
        for r in self.list_sync()? {
            if is_prunable(&r.owner, now, older_than) {
                remove(&self.path(&r.key))?;
                pruned.push(r.key);
            }
        }
        for kind in [KeyKind::Name, KeyKind::Id] {
            self.sweep(kind, older_than, &mut pruned)?;
        }
        Ok(pruned)
    }

    /// Removes temp files a killed writer left (older than [`TMP_STALE`]),
    /// and, with `older_than`, key files holding no readable owner that are
    /// older than that (they can only come from outside tampering or a
    /// damaged disk; a grant always publishes a complete owner).
    fn sweep(
        &self,
        kind: KeyKind,
        older_than: Option<Duration>,
        pruned: &mut Vec<Key>,
    ) -> Result<(), BackendError> {
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
            if name.starts_with('.') && name.contains(".tmp.") {
                if age >= TMP_STALE {
                    remove(&entry.path())?;
                }
                continue;
            }
            let Some(limit) = older_than else { continue };
            let Ok(key) = Key::new(kind, name) else {
                continue;
            };
            if age >= limit && Self::read_owner(&entry.path())?.is_none() && entry.path().exists() {
                tracing::warn!(key = %key, "removing a reservation file with no readable owner");
                remove(&entry.path())?;
                pruned.push(key);
            }
        }
        Ok(())
    }
}

/// Name prefix of the temp files a grant writes before linking them.
const TMP_PREFIX: &str = ".tmp.";

/// Age after which a temp file in a reservation directory is a leftover of
/// a killed writer (a live one keeps it for milliseconds).
const TMP_STALE: Duration = Duration::from_secs(60);

fn owner_json(owner: &Owner) -> Vec<u8> {
    // An `Owner` is strings and integers: serializing cannot fail.
    serde_json::to_vec(owner).unwrap_or_default()
}

/// An I/O error on `path`, with what to do about the common causes.
fn io_err(path: &Path, e: std::io::Error) -> BackendError {
    let hint = match e.kind() {
        ErrorKind::PermissionDenied | ErrorKind::ReadOnlyFilesystem => Some(
            "the reservation directory is not writable (permissions, or a read-only filesystem): \
             fix its permissions or point --runner-dir at a writable directory",
        ),
        ErrorKind::NotFound | ErrorKind::NotADirectory | ErrorKind::AlreadyExists => Some(
            "the reservation directory is missing or a path component is not a directory: \
             create it, or point --runner-dir at a writable directory",
        ),
        _ => None,
    };
    let err = BackendError::io(path, e);
    match hint {
        Some(h) => err.with_hint(h),
        None => err,
    }
}

struct LockGuard(#[allow(dead_code)] File);

fn remove(path: &Path) -> Result<(), BackendError> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
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

    async fn set_expiry(&self, lease: &Lease, expires: u64) -> Result<(), BackendError> {
        let lease = lease.clone();
        self.blocking(move |me| me.set_expiry_sync(&lease, expires))
            .await?
    }

    async fn list(&self) -> Result<Vec<Reservation>, BackendError> {
        self.blocking(|me| me.list_sync()).await?
    }

    async fn prune(
        &self,
        now: u64,
        older_than: Option<Duration>,
    ) -> Result<Vec<Key>, BackendError> {
        self.blocking(move |me| me.prune_sync(now, older_than))
            .await?
    }
}
