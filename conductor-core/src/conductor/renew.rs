//! Lease renewal: while a run works, the expiry of the keys it still holds
//! moves forward, so a long run keeps them and a crashed one loses them one
//! TTL after its last renewal.
//!
//! One background task per run renews every `ttl / 3`. It stops when the
//! [`Renewer`] is dropped — at the end of the run, and also when the run's
//! future is cancelled — so no renewal outlives its run. [`Renewer::forget`]
//! waits for a renewal round in flight, so a key the run releases right after
//! is never renewed behind the release's back (which would hold it for a
//! whole TTL instead of the grace period).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Mutex;
use tracing::{error, info_span, warn, Instrument};

use crate::reserve::{ms, now_ms, Key, Lease, Reserver};

/// Renews the leases given to it every `ttl / 3` until dropped.
pub(super) struct Renewer {
    leases: Arc<Mutex<Vec<Lease>>>,
    task: tokio::task::JoinHandle<()>,
}

/// How often a lease of `ttl` is renewed: a third of it (at least 100 ms).
pub(super) fn interval(ttl: Duration) -> Duration {
    (ttl / 3).max(Duration::from_millis(100))
}

impl Renewer {
    /// Starts renewing `first` (and whatever is added later).
    pub(super) fn start(reserver: Arc<dyn Reserver>, ttl: Duration, first: Lease) -> Self {
        let leases = Arc::new(Mutex::new(vec![first]));
        let shared = leases.clone();
        let every = interval(ttl);
        let task = tokio::spawn(async move {
            // Until when the keys are known held: the last successful renewal's expiry.
            let mut held_until = now_ms().saturating_add(ms(ttl));
            loop {
                tokio::time::sleep(every).await;
                let leases = shared.lock().await;
                let until = now_ms().saturating_add(ms(ttl));
                let mut ok = true;
                for lease in leases.iter().filter(|l| !l.keys.is_empty()) {
                    let span = info_span!("reserver.renew", keys = lease.keys.len());
                    if let Err(e) = reserver.set_expiry(lease, until).instrument(span).await {
                        ok = false;
                        warn!(error = %e, keys = lease.keys.len(), "renewing reservations failed; retrying at the next interval");
                    }
                }
                if ok {
                    held_until = until;
                } else if now_ms() >= held_until {
                    error!(
                        cpid = %leases.first().map(|l| l.owner.cpid.to_string()).unwrap_or_default(),
                        "reservations could not be renewed before they expired: another run may now choose these names and ids"
                    );
                }
            }
        });
        Self { leases, task }
    }

    /// Renews `lease` too.
    pub(super) async fn add(&self, lease: Lease) {
        self.leases.lock().await.push(lease);
    }

    /// Stops renewing `keys` (released, or left to expire); waits for a
    /// renewal round in flight to finish first.
    pub(super) async fn forget(&self, keys: &[Key]) {
        for lease in self.leases.lock().await.iter_mut() {
            lease.keys.retain(|k| !keys.contains(k));
        }
    }
}

impl Drop for Renewer {
    fn drop(&mut self) {
        self.task.abort();
    }
}
