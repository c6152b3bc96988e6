//! `Holdings`: every reservation one run holds, as a guard.
//!
//! It renews the leases every `ttl / 3` while the run works, fences the
//! launch (the keys are marked [`Phase::Launching`] by a conditional update
//! right before every launch call, which fails if another run took them),
//! releases keys with a grace once their instances settled, and, when the
//! run ends, frees at once what was never launched. A lease that could not
//! be renewed before it expired, or that another run took over, is *lost*:
//! the next fence refuses to launch.
//!
//! Dropped without [`Holdings::finish`] (an early return through `?`, a
//! cancelled future), it stops renewing and spawns a best-effort release of
//! the keys still in [`Phase::Planning`]; keys that may have been launched
//! are left to expire. The TTL remains the backstop either way.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Mutex;
use tracing::{error, info_span, warn, Instrument};

use crate::error::Error;
use crate::reserve::{ms, now_ms, Key, Lease, Phase, ReserveError, Reserver};

/// How often a lease of `ttl` is renewed: a third of it (at least 100 ms).
pub(crate) fn renew_interval(ttl: Duration) -> Duration {
    (ttl / 3).max(Duration::from_millis(100))
}

#[derive(Debug, Default)]
struct State {
    /// Leases still held, each with the phase it is in.
    leases: Vec<(Lease, Phase)>,
    /// The keys the run no longer holds and why, once it lost any.
    lost: Option<(Vec<Key>, String)>,
}

impl State {
    /// Removes `keys` from the held leases; returns what was held of them, by phase.
    fn take(&mut self, keys: &[Key]) -> Vec<(Lease, Phase)> {
        let mut out = Vec::new();
        for (lease, phase) in &mut self.leases {
            let part = lease.subset(keys);
            if !part.keys.is_empty() {
                lease.keys.retain(|k| !keys.contains(k));
                out.push((part, *phase));
            }
        }
        self.leases.retain(|(l, _)| !l.keys.is_empty());
        out
    }

    fn lose(&mut self, keys: Vec<Key>, reason: &str) {
        error!(
            keys = keys.len(),
            "{reason}: another run may now choose these names and ids"
        );
        if self.lost.is_none() {
            self.lost = Some((keys, reason.into()));
        }
    }
}

/// The reservations of one run; see the module docs.
#[derive(Debug)]
pub(crate) struct Holdings {
    reserver: Arc<dyn Reserver>,
    ttl: Duration,
    state: Arc<Mutex<State>>,
    task: tokio::task::JoinHandle<()>,
    finished: bool,
}

impl Holdings {
    /// Starts holding (and renewing) `first`, in phase planning.
    pub(crate) fn start(reserver: Arc<dyn Reserver>, ttl: Duration, first: Lease) -> Self {
        let state = Arc::new(Mutex::new(State {
            leases: vec![(first, Phase::Planning)],
            lost: None,
        }));
        let task = tokio::spawn(renew(reserver.clone(), ttl, state.clone()));
        Self {
            reserver,
            ttl,
            state,
            task,
            finished: false,
        }
    }

    /// Holds (and renews) `lease` too, in phase planning.
    pub(crate) async fn hold(&self, lease: Lease) {
        self.state
            .lock()
            .await
            .leases
            .push((lease, Phase::Planning));
    }

    /// The error to stop with when the run has lost keys.
    pub(crate) async fn check(&self) -> Result<(), Error> {
        match &self.state.lock().await.lost {
            Some((keys, reason)) => Err(Error::LeaseLost {
                keys: keys.clone(),
                reason: reason.clone(),
            }),
            None => Ok(()),
        }
    }

    /// Fences a launch of what `keys` reserve: fails if the run lost any
    /// key, else marks them launching (conditionally: a key another run
    /// holds now fails it) with a fresh expiry. Call before every launch call.
    pub(crate) async fn fence(&self, keys: &[Key]) -> Result<(), Error> {
        self.check().await?;
        let mut state = self.state.lock().await;
        let expires = now_ms().saturating_add(ms(self.ttl));
        for (lease, phase) in &mut state.leases {
            let part = lease.subset(keys);
            if part.keys.is_empty() {
                continue;
            }
            let span = info_span!("reserver.fence", keys = part.keys.len());
            match self
                .reserver
                .update(&part, expires, Phase::Launching)
                .instrument(span)
                .await
            {
                Ok(()) => *phase = Phase::Launching,
                Err(ReserveError::Lost(lost)) => {
                    state.lose(lost, "reservations were taken over before the launch");
                    break;
                }
                Err(e) => {
                    return Err(Error::backend(
                        "checking the reservations before launching",
                        to_backend(e),
                    ))
                }
            }
        }
        drop(state);
        self.check().await
    }

    /// Releases `keys` with `grace` (their instances settled, or surely
    /// never launched when `grace` is zero) and stops renewing them.
    pub(crate) async fn release(&self, keys: &[Key], grace: Duration) {
        let parts = self.state.lock().await.take(keys);
        for (lease, _) in parts {
            release(&*self.reserver, &lease, grace).await;
        }
    }

    /// Stops renewing `keys` without releasing them: instances may exist
    /// (launched but not yet visible, or cancelled mid-launch), so they stay
    /// held until their lease expires, whoever is alive.
    pub(crate) async fn keep(&self, keys: &[Key]) {
        let kept = self.state.lock().await.take(keys);
        let n: usize = kept.iter().map(|(l, _)| l.keys.len()).sum();
        if n > 0 {
            warn!(
                keys = n,
                "keeping reservations until they expire: their instances may exist"
            );
        }
    }

    /// Ends the run's holdings: keys still planning are freed at once, keys
    /// that may have been launched are kept until they expire.
    pub(crate) async fn finish(mut self) {
        self.finished = true;
        self.task.abort();
        let leases = std::mem::take(&mut self.state.lock().await.leases);
        finish_leases(&*self.reserver, leases).await;
    }
}

impl Drop for Holdings {
    fn drop(&mut self) {
        self.task.abort();
        if self.finished {
            return;
        }
        let (reserver, state) = (self.reserver.clone(), self.state.clone());
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => {
                warn!("a run ended without finishing: releasing its unlaunched reservations in the background");
                rt.spawn(async move {
                    let leases = std::mem::take(&mut state.lock().await.leases);
                    finish_leases(&*reserver, leases).await;
                });
            }
            Err(_) => warn!("a run ended without finishing and no runtime is left: its reservations expire with their leases"),
        }
    }
}

async fn finish_leases(reserver: &dyn Reserver, leases: Vec<(Lease, Phase)>) {
    for (lease, phase) in leases {
        match phase {
            Phase::Planning => release(reserver, &lease, Duration::ZERO).await,
            Phase::Launching | Phase::Released => {
                warn!(
                    keys = lease.keys.len(),
                    "keeping reservations until they expire: their instances may exist"
                )
            }
        }
    }
}

/// Releases `lease` with `grace`; a failure is logged (the lease's expiry
/// frees the keys anyway).
async fn release(reserver: &dyn Reserver, lease: &Lease, grace: Duration) {
    if lease.keys.is_empty() {
        return;
    }
    let span = info_span!("reserver.release", keys = lease.keys.len());
    if let Err(e) = reserver.release(lease, grace).instrument(span).await {
        warn!(error = %e, keys = lease.keys.len(), "releasing reservations failed; they free themselves at lease expiry");
    }
}

fn to_backend(e: ReserveError) -> crate::backend::BackendError {
    match e {
        ReserveError::Backend(b) => b,
        other => crate::backend::BackendError::new(
            crate::backend::BackendErrorKind::Failed,
            other.to_string(),
        ),
    }
}

/// The renewal task: every `ttl / 3`, moves the expiry of every held lease
/// forward; marks the holdings lost when a key was taken over, or when no
/// renewal succeeded before the last known expiry passed.
async fn renew(reserver: Arc<dyn Reserver>, ttl: Duration, state: Arc<Mutex<State>>) {
    let every = renew_interval(ttl);
    // Until when the keys are known held: the last successful renewal's expiry.
    let mut held_until = now_ms().saturating_add(ms(ttl));
    loop {
        tokio::time::sleep(every).await;
        // Holding the lock for the whole round: a release waits for it, so a
        // key is never renewed behind the release's back.
        let mut state = state.lock().await;
        let until = now_ms().saturating_add(ms(ttl));
        let mut ok = true;
        let mut lost = Vec::new();
        for (lease, phase) in &state.leases {
            let span = info_span!("reserver.renew", keys = lease.keys.len());
            match reserver.update(lease, until, *phase).instrument(span).await {
                Ok(()) => {}
                Err(ReserveError::Lost(keys)) => lost.extend(keys),
                Err(e) => {
                    ok = false;
                    warn!(error = %e, keys = lease.keys.len(), "renewing reservations failed; retrying at the next interval");
                }
            }
        }
        if !lost.is_empty() {
            state.lose(lost, "reservations were taken over by another run");
        } else if ok {
            held_until = until;
        } else if now_ms() >= held_until {
            let keys = state
                .leases
                .iter()
                .flat_map(|(l, _)| l.keys.clone())
                .collect();
            state.lose(
                keys,
                "reservations could not be renewed before they expired",
            );
        }
    }
}
