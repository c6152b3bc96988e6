//! Reservations: keys, leases, the [`Reserver`] trait and its error, and
//! the two reservers core ships ([`FsReserver`], [`MemReserver`]).

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use serde::Serialize;
use thiserror::Error;

use crate::backend::BackendError;
use crate::names::Env;

mod fs;
mod key;
mod mem;
mod owner;

pub use fs::FsReserver;
pub(crate) use key::keys_text;
pub use key::{Key, KeyKind};
pub use mem::MemReserver;
pub use owner::{ms, now_ms, this_host, this_pid_ns, Owner, Phase};

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

/// Who holds a key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub enum Holder {
    /// A Conductor run, by its owner record.
    #[serde(rename = "owner")]
    Run(Owner),
    /// Something that is not Conductor's owner record, such as the file the
    /// Python `conduct.group` runner writes under the same key name: held by
    /// an unknown owner, never free; only `prune` with an age removes it.
    #[serde(rename = "foreign")]
    Foreign {
        /// When it was last written, epoch milliseconds.
        modified: u64,
    },
}

impl Holder {
    /// Whether the key is free for anyone at `now` (see [`Owner::is_free`]).
    pub fn is_free(&self, now: u64) -> bool {
        match self {
            Holder::Run(o) => o.is_free(now),
            Holder::Foreign { .. } => false,
        }
    }

    /// Whether `prune` may remove it (see [`Owner::is_prunable`]); a foreign
    /// holder only when `older_than` is given and it is that old.
    pub fn is_prunable(&self, now: u64, older_than: Option<Duration>) -> bool {
        match self {
            Holder::Run(o) => o.is_prunable(now, older_than),
            Holder::Foreign { modified } => {
                older_than.is_some_and(|d| modified.saturating_add(ms(d)) <= now)
            }
        }
    }

    /// The owner record, for a Conductor holder.
    pub fn owner(&self) -> Option<&Owner> {
        match self {
            Holder::Run(o) => Some(o),
            Holder::Foreign { .. } => None,
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
    /// Its holder.
    #[serde(flatten)]
    pub holder: Holder,
}

impl Reservation {
    /// Whether the key is held at `now` (not free) by someone other than
    /// `except`'s run: what [`Reserver::held`] returns.
    pub fn is_held(&self, now: u64, except: Option<&Owner>) -> bool {
        !self.holder.is_free(now)
            && !matches!((except, self.holder.owner()), (Some(me), Some(o)) if me.same_run(o))
    }
}

/// The error of a [`Reserver`].
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum ReserveError {
    /// Some keys are held by another owner; nothing was reserved.
    #[error("keys already reserved by another run: {}", keys_text(.0))]
    Conflict(Vec<Key>),
    /// Keys of the lease are no longer held by its run (expired and taken
    /// over, or removed); the others were updated.
    #[error("reservations no longer held by this run: {}", keys_text(.0))]
    Lost(Vec<Key>),
    /// The reserver itself failed.
    #[error(transparent)]
    Backend(#[from] BackendError),
}

/// Reserves names and ids for runs, all-or-nothing, with expiring leases.
///
/// A key is free when [`Holder::is_free`] says so: `try_reserve` then takes
/// it over, conditioned on the exact owner record it found (a holder that
/// renewed meanwhile keeps it). Every method must be safe to call from
/// parallel processes (and, for shared backends, hosts).
///
/// The contract, shown on [`MemReserver`](crate::MemReserver) (the
/// testkit's `conformance::reserver::run_all` checks all of it on yours):
///
/// ```
/// use std::time::Duration;
///
/// use conductor_core::{Cpid, Env, Key, KeyKind, MemReserver, Owner, ReserveError, Reserver};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let reserver = MemReserver::new();
/// let ttl = Duration::from_secs(60);
/// let (a, b) = (Owner::this_process(Cpid::generate(), ttl), Owner::this_process(Cpid::generate(), ttl));
/// let name = Key::new(KeyKind::Name, "lab_web01.example.org")?;
/// let id = Key::new(KeyKind::Id, "lab_web.cluster.id.1")?;
///
/// // All or nothing: b gets neither key while a holds one of them.
/// let lease = reserver.try_reserve(&[name.clone()], &a).await?;
/// match reserver.try_reserve(&[id.clone(), name.clone()], &b).await {
///     Err(ReserveError::Conflict(keys)) => assert_eq!(keys, [name.clone()]),
///     other => panic!("expected a conflict, got {other:?}"),
/// }
/// assert!(reserver.try_reserve(&[id], &b).await.is_ok());
///
/// // Released without a grace, the name is free again.
/// reserver.release(&lease, Duration::ZERO).await?;
/// assert!(reserver.try_reserve(&[name.clone()], &b).await.is_ok());
///
/// // Listings of one environment see only its keys (`lab_…` here).
/// let (lab, prod): (Env, Env) = ("lab".parse()?, "prod".parse()?);
/// assert_eq!(reserver.list(Some(&lab)).await?.len(), 2);
/// assert!(reserver.list(Some(&prod)).await?.is_empty());
/// # Ok(())
/// # }
/// ```
#[async_trait]
pub trait Reserver: Send + Sync + fmt::Debug {
    /// Reserves every key for `owner`, or none: on conflict returns
    /// [`ReserveError::Conflict`] naming the keys held by others.
    async fn try_reserve(&self, keys: &[Key], owner: &Owner) -> Result<Lease, ReserveError>;

    /// Sets the expiry and phase of the lease's keys still held by its run;
    /// an expiry at or before now removes them. Keys held by someone else,
    /// or by nobody, are left alone and returned as [`ReserveError::Lost`].
    async fn update(&self, lease: &Lease, expires: u64, phase: Phase) -> Result<(), ReserveError>;

    /// Every key held, expired ones and foreign holders included; with
    /// `env`, only that environment's keys (`<env>_…`, see [`Key::env`]),
    /// which a backend should read without reading the others (a plan
    /// lists its environment's keys on every attempt).
    async fn list(&self, env: Option<&Env>) -> Result<Vec<Reservation>, BackendError>;

    /// Removes keys that are free at `now`, keys created more than
    /// `older_than` ago whose owner is known dead (it ran on this host, in
    /// this pid namespace, and is gone, even while launching), and foreign
    /// holders older than `older_than`; returns them. A key whose owner's
    /// liveness is unknown (another host, or another pid namespace) is kept until its lease expires, however old (see
    /// [`Owner::is_prunable`]). With `env`, only
    /// among that environment's keys and the keys of no environment
    /// (`cpid.<CPID>`, throttle slots): what a run cleans up after itself
    /// without reading other environments' keys.
    async fn prune(
        &self,
        now: u64,
        env: Option<&Env>,
        older_than: Option<Duration>,
    ) -> Result<Vec<Key>, BackendError>;

    /// Releases the lease: its keys stay held for `grace` (phase
    /// [`Phase::Released`]), then are free.
    async fn release(&self, lease: &Lease, grace: Duration) -> Result<(), ReserveError> {
        let expires = now_ms().saturating_add(ms(grace));
        self.update(lease, expires, Phase::Released).await
    }

    /// Keys held at `now` (not free), other than by `except`'s run; with
    /// `env`, only that environment's. The default filters [`list`](Reserver::list);
    /// a backend that can skip expired keys when reading overrides it.
    async fn held(
        &self,
        now: u64,
        env: Option<&Env>,
        except: Option<&Owner>,
    ) -> Result<Vec<Key>, BackendError> {
        Ok(self
            .list(env)
            .await?
            .into_iter()
            .filter(|r| r.is_held(now, except))
            .map(|r| r.key)
            .collect())
    }
}

#[async_trait]
impl<T: Reserver + ?Sized> Reserver for std::sync::Arc<T> {
    async fn try_reserve(&self, keys: &[Key], owner: &Owner) -> Result<Lease, ReserveError> {
        (**self).try_reserve(keys, owner).await
    }
    async fn update(&self, lease: &Lease, expires: u64, phase: Phase) -> Result<(), ReserveError> {
        (**self).update(lease, expires, phase).await
    }
    async fn list(&self, env: Option<&Env>) -> Result<Vec<Reservation>, BackendError> {
        (**self).list(env).await
    }
    async fn prune(
        &self,
        now: u64,
        env: Option<&Env>,
        older_than: Option<Duration>,
    ) -> Result<Vec<Key>, BackendError> {
        (**self).prune(now, env, older_than).await
    }
    async fn release(&self, lease: &Lease, grace: Duration) -> Result<(), ReserveError> {
        (**self).release(lease, grace).await
    }
    async fn held(
        &self,
        now: u64,
        env: Option<&Env>,
        except: Option<&Owner>,
    ) -> Result<Vec<Key>, BackendError> {
        (**self).held(now, env, except).await
    }
}
