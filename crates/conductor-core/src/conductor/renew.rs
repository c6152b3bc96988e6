//! Lease renewal: while a run works, the expiry of the keys it still holds
//! moves forward, so a long run keeps them and a crashed one loses them one
//! TTL after its last renewal.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tracing::warn;

use crate::reserve::{now_ms, Key, Lease, Reserver};

/// Renews the leases given to it every `ttl / 3` until dropped.
pub(super) struct Renewer {
    leases: Arc<Mutex<Vec<Lease>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Renewer {
    /// Starts renewing `first` (and whatever is added later).
    pub(super) fn start(reserver: Arc<dyn Reserver>, ttl: Duration, first: Lease) -> Self {
        let leases = Arc::new(Mutex::new(vec![first]));
        let shared = leases.clone();
        let every = (ttl / 3).max(Duration::from_millis(100));
        let task = tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                let now: Vec<Lease> = shared.lock().unwrap_or_else(|p| p.into_inner()).clone();
                let until = now_ms().saturating_add(crate::reserve::ms(ttl));
                for lease in now.iter().filter(|l| !l.keys.is_empty()) {
                    if let Err(e) = reserver.set_expiry(lease, until).await {
                        warn!(error = %e, keys = lease.keys.len(), "renewing reservations failed; retrying at the next interval");
                    }
                }
            }
        });
        Self { leases, task }
    }

    /// Renews `lease` too.
    pub(super) fn add(&self, lease: Lease) {
        self.leases
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(lease);
    }

    /// Stops renewing `keys` (released, or left to expire).
    pub(super) fn forget(&self, keys: &[Key]) {
        for lease in self
            .leases
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter_mut()
        {
            lease.keys.retain(|k| !keys.contains(k));
        }
    }
}

impl Drop for Renewer {
    fn drop(&mut self) {
        self.task.abort();
    }
}
