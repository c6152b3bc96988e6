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
        // The leases this fence moves out of planning, to move back if it fails.
        let mut promoted = Vec::new();
        let mut failed = None;
        for (i, (lease, phase)) in state.leases.iter_mut().enumerate() {
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
                Ok(()) if *phase == Phase::Planning => {
                    *phase = Phase::Launching;
                    promoted.push(i);
                }
                Ok(()) => {}
                Err(e) => {
                    failed = Some(e);
                    break;
                }
            }
        }
        let Some(e) = failed else {
            drop(state);
            return self.check().await;
        };
        // Nothing launches after a failed fence: the leases it marked
        // launching go back to planning, so that the run's end (or the
        // dead-owner rule) frees them at once rather than at their expiry.
        for i in promoted {
            let (lease, phase) = &mut state.leases[i];
            let part = lease.subset(keys);
            let span = info_span!("reserver.unfence", keys = part.keys.len());
            let back = self.reserver.update(&part, expires, Phase::Planning);
            match back.instrument(span).await {
                Ok(()) => *phase = Phase::Planning,
                Err(e) => {
                    warn!(error = %e, keys = lease.keys.len(), "moving reservations back to planning failed; they are held until they expire")
                }
            }
        }
        match e {
            ReserveError::Lost(lost) => {
                state.lose(lost, "reservations were taken over before the launch");
                drop(state);
                self.check().await
            }
            e => Err(Error::backend(
                "checking the reservations before launching",
                to_backend(e),
            )),
        }
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

#[cfg(test)]
mod tests {
    use async_trait::async_trait;

    use super::*;
    use crate::backend::{BackendError, BackendErrorKind};
    use crate::cpid::Cpid;
    use crate::names::Env;
    use crate::reserve::{Holder, KeyKind, MemReserver, Owner, Reservation};

    /// A MemReserver whose fences (updates to launching) of `bad` fail.
    #[derive(Debug)]
    struct FenceFails {
        inner: MemReserver,
        bad: Key,
    }

    #[async_trait]
    impl Reserver for FenceFails {
        async fn try_reserve(&self, keys: &[Key], owner: &Owner) -> Result<Lease, ReserveError> {
            self.inner.try_reserve(keys, owner).await
        }
        async fn update(
            &self,
            lease: &Lease,
            expires: u64,
            phase: Phase,
        ) -> Result<(), ReserveError> {
            if phase == Phase::Launching && lease.keys.contains(&self.bad) {
                let down = BackendError::new(BackendErrorKind::Unreachable, "down");
                return Err(ReserveError::Backend(down));
            }
            self.inner.update(lease, expires, phase).await
        }
        async fn list(&self, env: Option<&Env>) -> Result<Vec<Reservation>, BackendError> {
            self.inner.list(env).await
        }
        async fn prune(
            &self,
            now: u64,
            env: Option<&Env>,
            older_than: Option<Duration>,
        ) -> Result<Vec<Key>, BackendError> {
            self.inner.prune(now, env, older_than).await
        }
    }

    /// A fence that fails on its second lease moves the first back to
    /// planning: nothing launched, so nothing is held for the TTL.
    #[tokio::test]
    async fn a_fence_that_fails_partway_leaves_no_key_launching() {
        let key = |k: &str| Key::new(KeyKind::Name, k).unwrap();
        let (a, b) = (key("test_a.example.com"), key("test_b.example.com"));
        let reserver = Arc::new(FenceFails {
            inner: MemReserver::new(),
            bad: b.clone(),
        });
        let ttl = Duration::from_secs(600);
        let owner = Owner::this_process(Cpid::generate(), ttl);
        let first = reserver
            .try_reserve(std::slice::from_ref(&a), &owner)
            .await
            .unwrap();
        let second = reserver
            .try_reserve(std::slice::from_ref(&b), &owner)
            .await
            .unwrap();
        let holdings = Holdings::start(reserver.clone(), ttl, first);
        holdings.hold(second).await;
        let e = holdings.fence(&[a, b]).await.unwrap_err();
        assert!(e.to_string().contains("before launching"), "{e}");
        for r in reserver.list(None).await.unwrap() {
            let Holder::Run(owner) = &r.holder else {
                panic!("{r:?}")
            };
            assert_eq!(owner.phase, Phase::Planning, "{r:?}");
        }
        holdings.finish().await;
        assert!(reserver
            .held(now_ms(), None, None)
            .await
            .unwrap()
            .is_empty());
    }
}
