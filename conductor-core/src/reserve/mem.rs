//! `MemReserver`: an in-memory [`Reserver`] for one process (tests,
//! `--cloud fake`, embedders that run every run in one process).

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;

use super::{now_ms, Holder, Key, Lease, Owner, Phase, Reservation, ReserveError, Reserver};
use crate::backend::BackendError;
use crate::names::Env;

/// Keys in a mutex-guarded map; all-or-nothing by holding the lock.
#[derive(Debug, Default)]
pub struct MemReserver {
    keys: Mutex<BTreeMap<Key, Owner>>,
}

impl MemReserver {
    /// An empty reserver.
    pub fn new() -> Self {
        Self::default()
    }

    fn map(&self) -> std::sync::MutexGuard<'_, BTreeMap<Key, Owner>> {
        self.keys.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[async_trait]
impl Reserver for MemReserver {
    async fn try_reserve(&self, keys: &[Key], owner: &Owner) -> Result<Lease, ReserveError> {
        let mut unique = std::collections::BTreeSet::new();
        let keys: Vec<Key> = keys.iter().filter(|k| unique.insert(*k)).cloned().collect();
        let now = now_ms();
        let mut map = self.map();
        let conflicts: Vec<Key> = keys
            .iter()
            .filter(|k| map.get(*k).is_some_and(|h| !h.is_free(now)))
            .cloned()
            .collect();
        if !conflicts.is_empty() {
            return Err(ReserveError::Conflict(conflicts));
        }
        for k in &keys {
            map.insert(k.clone(), owner.clone());
        }
        Ok(Lease {
            keys,
            owner: owner.clone(),
        })
    }

    async fn update(&self, lease: &Lease, expires: u64, phase: Phase) -> Result<(), ReserveError> {
        let now = now_ms();
        let mut map = self.map();
        let mut lost = Vec::new();
        for k in &lease.keys {
            match map.get_mut(k) {
                Some(h) if h.same_run(&lease.owner) => {
                    if expires <= now {
                        map.remove(k);
                    } else {
                        h.expires = expires;
                        h.phase = phase;
                    }
                }
                _ => lost.push(k.clone()),
            }
        }
        if lost.is_empty() {
            Ok(())
        } else {
            Err(ReserveError::Lost(lost))
        }
    }

    async fn list(&self, env: Option<&Env>) -> Result<Vec<Reservation>, BackendError> {
        Ok(self
            .map()
            .iter()
            .filter(|(k, _)| env.is_none_or(|e| k.in_env(e)))
            .map(|(k, o)| Reservation {
                key: k.clone(),
                kind: k.kind(),
                holder: Holder::Run(o.clone()),
            })
            .collect())
    }

    async fn prune(
        &self,
        now: u64,
        env: Option<&Env>,
        older_than: Option<Duration>,
    ) -> Result<Vec<Key>, BackendError> {
        let mut map = self.map();
        let gone: Vec<Key> = map
            .iter()
            .filter(|(k, o)| k.in_prune_scope(env) && o.is_prunable(now, older_than))
            .map(|(k, _)| k.clone())
            .collect();
        for k in &gone {
            map.remove(k);
        }
        Ok(gone)
    }
}
