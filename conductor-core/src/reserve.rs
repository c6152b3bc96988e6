//! Reservation keys, leases and the `Reserver` trait.

use std::fmt;
use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::cpid::Cpid;
use crate::error::{BackendError, InputError, ReserveError};
use crate::names::Env;

/// Whether a key reserves an instance name or an id; decides where it is stored
/// (`reserved_names/` or `reserved_ids/`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyKind {
    /// An instance name: `<env>_<fqdn>`.
    Name,
    /// An id: `<env>_<scope>.<kind>.id.<N>`, `cpid.<CPID>`, or another counter.
    Id,
}

/// One reservable key; its text is safe as a file name (`[a-z0-9._-]`, no `..`).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Key {
    kind: KeyKind,
    text: String,
}

impl Key {
    /// Validates `text` as a key of `kind`.
    pub fn new(kind: KeyKind, text: impl Into<String>) -> Result<Self, InputError> {
        let text = text.into();
        let ok_chars = text.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-')
        });
        if text.is_empty()
            || text.len() > 255
            || !ok_chars
            || text.contains("..")
            || text.starts_with('.')
        {
            return Err(InputError::invalid(
                "reservation key",
                &text,
                "must be 1 to 255 characters of [a-z0-9._-], not starting with '.' nor holding '..'",
            ));
        }
        Ok(Self { kind, text })
    }

    /// The key of an instance name: `<env>_<fqdn>`.
    pub fn name(env: &Env, fqdn: &str) -> Result<Self, InputError> {
        Self::new(KeyKind::Name, format!("{env}_{fqdn}"))
    }

    /// The key of an id: `<env>_<scope>.id.<n>`, e.g. `test_devops.nifi.cluster.id.2`
    /// for scope `devops.nifi.cluster`.
    pub fn id(env: &Env, scope: &str, n: u32) -> Result<Self, InputError> {
        Self::new(KeyKind::Id, format!("{env}_{scope}.id.{n}"))
    }

    /// The key that keeps a CPID unique while its run lives: `cpid.<CPID>`.
    pub fn cpid(cpid: Cpid) -> Self {
        Self {
            kind: KeyKind::Id,
            text: format!("cpid.{cpid}"),
        }
    }

    /// Name or id.
    pub fn kind(&self) -> KeyKind {
        self.kind
    }

    /// The key text (also its file name).
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl Serialize for Key {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.text)
    }
}

/// Milliseconds since the Unix epoch, now: the clock of every lease.
///
/// Anchored once to the system clock and advanced by tokio's clock, so that a
/// test on a paused tokio clock sees leases expire in virtual time; outside a
/// paused runtime it follows the monotonic clock from the anchor.
pub fn now_ms() -> u64 {
    static ANCHOR: OnceLock<(u64, std::time::Instant)> = OnceLock::new();
    let (wall, mono) = ANCHOR.get_or_init(|| {
        let wall = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(ms)
            .unwrap_or(0);
        (wall, tokio::time::Instant::now().into_std())
    });
    let elapsed = tokio::time::Instant::now()
        .into_std()
        .saturating_duration_since(*mono);
    wall.saturating_add(ms(elapsed))
}

/// A duration in whole milliseconds.
pub fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Who holds a reservation and until when; stored as JSON with each key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Owner {
    /// The run's CPID.
    pub cpid: Cpid,
    /// Host name of the machine running the run.
    pub host: String,
    /// Process id of the run on `host`.
    pub pid: u32,
    /// Creation time, epoch milliseconds.
    pub created: u64,
    /// Expiry, epoch milliseconds; at or after it the key is free for anyone.
    pub expires: u64,
    /// Start time of the owner process (clock ticks after boot, from
    /// `/proc/<pid>/stat`), so a reused pid is not taken for the owner.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started: Option<u64>,
}

impl Owner {
    /// An owner for this process, created now, expiring after `ttl`.
    pub fn this_process(cpid: Cpid, ttl: Duration) -> Self {
        let now = now_ms();
        Self {
            cpid,
            host: this_host(),
            pid: std::process::id(),
            created: now,
            expires: now.saturating_add(ms(ttl)),
            started: process_start(std::process::id()),
        }
    }

    /// Whether the lease has expired at `now` (epoch milliseconds).
    pub fn is_expired(&self, now: u64) -> bool {
        self.expires <= now
    }

    /// Whether `other` is the same run (same CPID, host and pid).
    pub fn same_run(&self, other: &Owner) -> bool {
        self.cpid == other.cpid && self.host == other.host && self.pid == other.pid
    }
}

/// The host name of this machine (`/proc/sys/kernel/hostname`, `$HOSTNAME`, or `localhost`).
pub fn this_host() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "localhost".into())
}

/// Whether `owner` is known alive: `Some` when it runs on this host (checked by
/// its pid), `None` when it runs elsewhere and only its expiry can tell.
pub fn owner_alive(owner: &Owner) -> Option<bool> {
    if owner.host != this_host() {
        return None;
    }
    let Ok(pid) = i32::try_from(owner.pid) else {
        return Some(false);
    };
    // SAFETY: kill with signal 0 sends nothing; it only checks the pid.
    let r = unsafe { libc::kill(pid, 0) };
    let exists = r == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM);
    // A pid that exists but started at another time was reused by another process.
    let same = match (owner.started, process_start(owner.pid)) {
        (Some(recorded), Some(now)) => recorded == now,
        _ => true,
    };
    Some(exists && same)
}

/// Start time of process `pid` in clock ticks after boot (field 22 of
/// `/proc/<pid>/stat`), where `/proc` exists.
pub fn process_start(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces; fields after it follow its ')'.
    stat.rsplit_once(')')?
        .1
        .split_whitespace()
        .nth(19)?
        .parse()
        .ok()
}

/// Whether a key held by `owner` is free for anyone at `now`: its lease
/// expired, or its owner ran on this host and is gone.
pub fn is_free(owner: &Owner, now: u64) -> bool {
    owner.is_expired(now) || owner_alive(owner) == Some(false)
}

/// Whether `prune` may remove a key held by `owner`: it is free, or it was
/// created more than `older_than` ago and its owner is not known alive.
pub fn is_prunable(owner: &Owner, now: u64, older_than: Option<Duration>) -> bool {
    is_free(owner, now)
        || (older_than.is_some_and(|d| owner.created.saturating_add(ms(d)) <= now)
            && owner_alive(owner) != Some(true))
}

/// Keys granted together to one owner.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Lease {
    /// The keys held.
    pub keys: Vec<Key>,
    /// Their owner.
    pub owner: Owner,
}

impl Lease {
    /// The part of this lease that holds `keys` (those not in the lease are ignored).
    pub fn subset<'a>(&self, keys: impl IntoIterator<Item = &'a Key>) -> Lease {
        let keys = keys
            .into_iter()
            .filter(|k| self.keys.contains(k))
            .cloned()
            .collect();
        Lease {
            keys,
            owner: self.owner.clone(),
        }
    }
}

/// One key as a reserver holds it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Reservation {
    /// The key.
    pub key: Key,
    /// Name or id (also given by the key; repeated for JSON readers).
    pub kind: KeyKind,
    /// Its owner.
    pub owner: Owner,
}

/// Reserves names and ids for runs, all-or-nothing, with expiring leases.
///
/// A key whose owner's `expires` has passed is free: `try_reserve` takes it over.
#[async_trait]
pub trait Reserver: Send + Sync + fmt::Debug {
    /// Reserves every key for `owner`, or none: on conflict returns
    /// [`ReserveError::Conflict`] naming the keys held by live owners.
    async fn try_reserve(&self, keys: &[Key], owner: &Owner) -> Result<Lease, ReserveError>;

    /// Sets the expiry of the lease's keys still held by its owner; an expiry at
    /// or before now removes them. Keys held by someone else are left alone.
    async fn set_expiry(&self, lease: &Lease, expires: u64) -> Result<(), BackendError>;

    /// Every key held, expired ones included.
    async fn list(&self) -> Result<Vec<Reservation>, BackendError>;

    /// Removes keys that are expired at `now`, and keys created more than
    /// `older_than` ago whose owner is not known to be alive; returns them.
    async fn prune(&self, now: u64, older_than: Option<Duration>)
        -> Result<Vec<Key>, BackendError>;

    /// Releases the lease: its keys stay held for `grace`, then are free.
    async fn release(&self, lease: &Lease, grace: Duration) -> Result<(), BackendError> {
        self.set_expiry(lease, now_ms().saturating_add(ms(grace)))
            .await
    }

    /// Keys held at `now` (not free by [`is_free`]), other than by `except`'s run.
    async fn held(&self, now: u64, except: Option<&Owner>) -> Result<Vec<Key>, BackendError> {
        Ok(self
            .list()
            .await?
            .into_iter()
            .filter(|r| !is_free(&r.owner, now) && !except.is_some_and(|o| o.same_run(&r.owner)))
            .map(|r| r.key)
            .collect())
    }
}

#[async_trait]
impl<T: Reserver + ?Sized> Reserver for std::sync::Arc<T> {
    async fn try_reserve(&self, keys: &[Key], owner: &Owner) -> Result<Lease, ReserveError> {
        (**self).try_reserve(keys, owner).await
    }
    async fn set_expiry(&self, lease: &Lease, expires: u64) -> Result<(), BackendError> {
        (**self).set_expiry(lease, expires).await
    }
    async fn list(&self) -> Result<Vec<Reservation>, BackendError> {
        (**self).list().await
    }
    async fn prune(
        &self,
        now: u64,
        older_than: Option<Duration>,
    ) -> Result<Vec<Key>, BackendError> {
        (**self).prune(now, older_than).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reused_pid_is_not_the_owner() {
        let me = Owner::this_process(Cpid::generate(), Duration::from_secs(60));
        assert!(
            me.started.is_some(),
            "/proc gives this process's start time"
        );
        assert_eq!(owner_alive(&me), Some(true));
        let reused = Owner {
            started: me.started.map(|s| s + 1),
            ..me.clone()
        };
        assert_eq!(
            owner_alive(&reused),
            Some(false),
            "same pid, other start time: another process"
        );
        let elsewhere = Owner {
            host: "other.invalid".into(),
            ..me
        };
        assert_eq!(owner_alive(&elsewhere), None);
    }

    #[test]
    fn key_shapes() {
        let env = Env::new("test").unwrap();
        assert_eq!(
            Key::name(&env, "devops-mq01.us-east-1a.test.foobar.com")
                .unwrap()
                .as_str(),
            "test_devops-mq01.us-east-1a.test.foobar.com"
        );
        assert_eq!(
            Key::id(&env, "devops.nifi.cluster", 2).unwrap().as_str(),
            "test_devops.nifi.cluster.id.2"
        );
        assert!(Key::new(KeyKind::Name, "../etc").is_err());
        assert!(Key::new(KeyKind::Name, "a/b").is_err());
        assert!(Key::new(KeyKind::Name, ".hidden").is_err());
    }
}
