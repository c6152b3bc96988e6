//! [`FaultReserver`]: behaviour added to any [`Reserver`] by wrapping it, as
//! [`FaultCloud`](crate::FaultCloud) does for clouds: a latency on every
//! call (a shared store), updates that fail while told to (a store that
//! does not answer renewals, fences and releases), and fences (updates to
//! [`Phase::Launching`]) that take long. It counts the reserve and prune
//! calls.
#![deny(clippy::missing_trait_methods)]

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use conductor_core::{
    ms, now_ms, BackendError, BackendErrorKind, Env, Key, Lease, Owner, Phase, Reservation,
    ReserveError, Reserver,
};

/// A reserver with faults; see the module docs.
#[derive(Debug, Default)]
pub struct FaultReserver<R> {
    inner: R,
    latency: Duration,
    fence_delay: Duration,
    failing: AtomicBool,
    reserves: AtomicUsize,
    prunes: AtomicUsize,
}

impl<R: Reserver> FaultReserver<R> {
    /// Wraps `inner`, with no fault yet.
    pub fn new(inner: R) -> Self {
        Self {
            inner,
            latency: Duration::ZERO,
            fence_delay: Duration::ZERO,
            failing: AtomicBool::new(false),
            reserves: AtomicUsize::new(0),
            prunes: AtomicUsize::new(0),
        }
    }

    /// Every call waits `latency` first.
    pub fn with_latency(mut self, latency: Duration) -> Self {
        self.latency = latency;
        self
    }

    /// Every update to [`Phase::Launching`] (a fence) waits `delay` first.
    pub fn with_fence_delay(mut self, delay: Duration) -> Self {
        self.fence_delay = delay;
        self
    }

    /// While `yes`, every update (renewal, fence, release) fails as
    /// unreachable.
    pub fn fail_updates(&self, yes: bool) {
        self.failing.store(yes, Ordering::SeqCst);
    }

    /// Calls to `try_reserve` so far.
    pub fn reserves(&self) -> usize {
        self.reserves.load(Ordering::Relaxed)
    }

    /// Calls to `prune` so far.
    pub fn prunes(&self) -> usize {
        self.prunes.load(Ordering::Relaxed)
    }

    async fn pause(&self) {
        if !self.latency.is_zero() {
            tokio::time::sleep(self.latency).await;
        }
    }
}

#[async_trait]
impl<R: Reserver> Reserver for FaultReserver<R> {
    async fn try_reserve(&self, keys: &[Key], owner: &Owner) -> Result<Lease, ReserveError> {
        self.reserves.fetch_add(1, Ordering::Relaxed);
        self.pause().await;
        self.inner.try_reserve(keys, owner).await
    }

    async fn update(&self, lease: &Lease, expires: u64, phase: Phase) -> Result<(), ReserveError> {
        self.pause().await;
        if phase == Phase::Launching && !self.fence_delay.is_zero() {
            tokio::time::sleep(self.fence_delay).await;
        }
        if self.failing.load(Ordering::SeqCst) {
            let down = BackendError::new(
                BackendErrorKind::Unreachable,
                "the reserver does not answer",
            );
            return Err(down.into());
        }
        self.inner.update(lease, expires, phase).await
    }

    async fn list(&self, env: Option<&Env>) -> Result<Vec<Reservation>, BackendError> {
        self.pause().await;
        self.inner.list(env).await
    }

    async fn prune(
        &self,
        now: u64,
        env: Option<&Env>,
        older_than: Option<Duration>,
    ) -> Result<Vec<Key>, BackendError> {
        self.prunes.fetch_add(1, Ordering::Relaxed);
        self.pause().await;
        self.inner.prune(now, env, older_than).await
    }

    async fn release(&self, lease: &Lease, grace: Duration) -> Result<(), ReserveError> {
        // Through `update`, so its faults apply to releases too.
        let expires = now_ms().saturating_add(ms(grace));
        self.update(lease, expires, Phase::Released).await
    }

    async fn held(
        &self,
        now: u64,
        env: Option<&Env>,
        except: Option<&Owner>,
    ) -> Result<Vec<Key>, BackendError> {
        self.pause().await;
        self.inner.held(now, env, except).await
    }
}
