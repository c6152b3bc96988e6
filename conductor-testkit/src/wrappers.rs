//! Behaviour added to any [`CloudBackend`] by wrapping it (as object_store's
//! `ThrottledStore` wraps any store): visibility lag and eventually
//! consistent reads ([`LagCloud`]), per-call latency ([`LatencyCloud`]),
//! injected failures and throttling ([`FaultCloud`]), and a record of the
//! calls ([`RecordingCloud`]). Each implements every method of the trait, so
//! no default bypasses the wrapped backend; `wait_visible` polls through the
//! wrapper, so lag, latency, faults and counts apply to it too.
#![deny(clippy::missing_trait_methods)]

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use conductor_core::CloudTime;
use conductor_core::{
    poll_visible, BackendError, BackendErrorKind, CloudBackend, InstanceRef, InstanceTags,
    Inventory, LaunchFailure, LaunchResult, LaunchSpec, Region, Scope,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::time::Instant;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// How long launched instances stay invisible.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Lag {
    /// Always this long.
    Fixed(Duration),
    /// Uniformly random up to this long (from the wrapper's seeded RNG).
    UpTo(Duration),
}

#[derive(Debug)]
struct LagState {
    lag: Lag,
    spread: Duration,
    rng: StdRng,
    /// Per launched instance id: first read that may see it, first that surely does.
    shows: HashMap<String, (Instant, Instant)>,
}

/// Hides instances launched through it for a lag, then, during the
/// consistency spread, shows each to some reads only (one reader may see
/// it while the next does not), like EC2's eventually consistent replicas.
#[derive(Debug)]
pub struct LagCloud<C> {
    inner: C,
    state: Mutex<LagState>,
}

impl<C: CloudBackend> LagCloud<C> {
    /// Wraps `inner` with a `lag` and no spread.
    pub fn new(inner: C, lag: Lag) -> Self {
        Self {
            inner,
            state: Mutex::new(LagState {
                lag,
                spread: Duration::ZERO,
                rng: StdRng::seed_from_u64(0),
                shows: HashMap::new(),
            }),
        }
    }

    /// Sets the lag of instances launched from now on.
    pub fn set_lag(&self, lag: Lag) {
        lock(&self.state).lag = lag;
    }

    /// Sets the consistency spread.
    pub fn set_spread(&self, spread: Duration) {
        lock(&self.state).spread = spread;
    }

    /// Seeds the RNG of random lags and stale reads.
    pub fn set_seed(&self, seed: u64) {
        lock(&self.state).rng = StdRng::seed_from_u64(seed);
    }

    /// The wrapped backend.
    pub fn inner(&self) -> &C {
        &self.inner
    }
}

#[async_trait]
impl<C: CloudBackend> CloudBackend for LagCloud<C> {
    async fn inventory(&self, scope: &Scope) -> Result<Inventory, BackendError> {
        let now = Instant::now();
        let mut inv = self.inner.inventory(scope).await?;
        let mut state = lock(&self.state);
        let state = &mut *state;
        inv.instances.retain(|i| match state.shows.get(&i.id) {
            None => true,
            Some(&(visible_at, consistent_at)) => {
                visible_at <= now && (now >= consistent_at || state.rng.random_bool(0.5))
            }
        });
        Ok(inv)
    }

    async fn launch(&self, specs: &[LaunchSpec]) -> Result<Vec<LaunchResult>, BackendError> {
        let results = self.inner.launch(specs).await?;
        let now = Instant::now();
        let mut state = lock(&self.state);
        for r in &results {
            let Ok(l) = &r.outcome else { continue };
            if state.shows.contains_key(&l.instance_id) {
                continue; // a repeated client token: the instance launched earlier
            }
            let lag = match state.lag {
                Lag::Fixed(d) => d,
                Lag::UpTo(max) => max.mul_f64(state.rng.random::<f64>()),
            };
            let spread = state.spread;
            state
                .shows
                .insert(l.instance_id.clone(), (now + lag, now + lag + spread));
        }
        Ok(results)
    }

    async fn terminate(&self, instances: &[InstanceRef]) -> Result<(), BackendError> {
        self.inner.terminate(instances).await
    }

    async fn tag_instances(&self, tags: &[InstanceTags]) -> Result<(), BackendError> {
        self.inner.tag_instances(tags).await
    }

    async fn wait_visible(
        &self,
        region: &Region,
        names: &[String],
        timeout: Duration,
    ) -> Result<BTreeSet<String>, BackendError> {
        poll_visible(self, region, names, timeout).await
    }
    fn clock(&self) -> Option<CloudTime> {
        self.inner.clock()
    }
}

/// Makes every call take `latency`: reads see the state at the call's
/// start, writes take effect at its end.
#[derive(Debug)]
pub struct LatencyCloud<C> {
    inner: C,
    latency: Mutex<Duration>,
}

impl<C: CloudBackend> LatencyCloud<C> {
    /// Wraps `inner`, each call taking `latency`.
    pub fn new(inner: C, latency: Duration) -> Self {
        Self {
            inner,
            latency: Mutex::new(latency),
        }
    }

    /// The wrapped backend.
    pub fn inner(&self) -> &C {
        &self.inner
    }

    /// Sets the latency of calls from now on.
    pub fn set_latency(&self, latency: Duration) {
        *lock(&self.latency) = latency;
    }

    async fn delay(&self) {
        let latency = *lock(&self.latency);
        if !latency.is_zero() {
            tokio::time::sleep(latency).await;
        }
    }
}

#[async_trait]
impl<C: CloudBackend> CloudBackend for LatencyCloud<C> {
    async fn inventory(&self, scope: &Scope) -> Result<Inventory, BackendError> {
        let inv = self.inner.inventory(scope).await;
        self.delay().await;
        inv
    }

    async fn launch(&self, specs: &[LaunchSpec]) -> Result<Vec<LaunchResult>, BackendError> {
        self.delay().await;
        self.inner.launch(specs).await
    }

    async fn terminate(&self, instances: &[InstanceRef]) -> Result<(), BackendError> {
        self.delay().await;
        self.inner.terminate(instances).await
    }

    async fn tag_instances(&self, tags: &[InstanceTags]) -> Result<(), BackendError> {
        self.delay().await;
        self.inner.tag_instances(tags).await
    }

    async fn wait_visible(
        &self,
        region: &Region,
        names: &[String],
        timeout: Duration,
    ) -> Result<BTreeSet<String>, BackendError> {
        poll_visible(self, region, names, timeout).await
    }
    fn clock(&self) -> Option<CloudTime> {
        self.inner.clock()
    }
}

/// An operation of the cloud, for fault injection and call counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Op {
    /// `inventory`.
    Inventory,
    /// `launch`.
    Launch,
    /// `terminate`.
    Terminate,
    /// `tag_instances`.
    Tag,
}

#[derive(Debug)]
struct Faults {
    fail_next: HashMap<Op, (usize, BackendErrorKind)>,
    throttle_rate: f64,
    failing_names: HashMap<String, bool>,
    rng: StdRng,
}

/// Injects failures: the next N calls of an operation fail, a fraction of
/// calls is throttled, or launches of given names fail.
#[derive(Debug)]
pub struct FaultCloud<C> {
    inner: C,
    faults: Mutex<Faults>,
}

impl<C: CloudBackend> FaultCloud<C> {
    /// Wraps `inner` with no faults yet.
    pub fn new(inner: C) -> Self {
        Self {
            inner,
            faults: Mutex::new(Faults {
                fail_next: HashMap::new(),
                throttle_rate: 0.0,
                failing_names: HashMap::new(),
                rng: StdRng::seed_from_u64(1),
            }),
        }
    }

    /// The wrapped backend.
    pub fn inner(&self) -> &C {
        &self.inner
    }

    /// Makes the next `times` calls of `op` fail with `kind`.
    pub fn fail_next(&self, op: Op, times: usize, kind: BackendErrorKind) {
        lock(&self.faults).fail_next.insert(op, (times, kind));
    }

    /// Throttles this fraction (0.0..=1.0) of calls with `RequestLimitExceeded`.
    pub fn throttle(&self, rate: f64) {
        lock(&self.faults).throttle_rate = rate;
    }

    /// Makes launches of `name` fail; `definite` says the instance surely does not exist.
    pub fn fail_launch_of(&self, name: &str, definite: bool) {
        lock(&self.faults)
            .failing_names
            .insert(name.into(), definite);
    }

    /// Seeds the RNG of throttling.
    pub fn set_seed(&self, seed: u64) {
        lock(&self.faults).rng = StdRng::seed_from_u64(seed);
    }

    fn enter(&self, op: Op) -> Result<(), BackendError> {
        let mut f = lock(&self.faults);
        if let Some((n, kind)) = f.fail_next.get_mut(&op) {
            if *n > 0 {
                *n -= 1;
                let kind = *kind;
                return Err(BackendError::new(
                    kind,
                    format!("injected failure of {op:?}"),
                ));
            }
        }
        let rate = f.throttle_rate;
        if rate > 0.0 && f.rng.random_bool(rate.clamp(0.0, 1.0)) {
            return Err(BackendError::new(
                BackendErrorKind::Throttled,
                "RequestLimitExceeded: Request limit exceeded.",
            ));
        }
        Ok(())
    }
}

#[async_trait]
impl<C: CloudBackend> CloudBackend for FaultCloud<C> {
    async fn inventory(&self, scope: &Scope) -> Result<Inventory, BackendError> {
        self.enter(Op::Inventory)?;
        self.inner.inventory(scope).await
    }

    async fn launch(&self, specs: &[LaunchSpec]) -> Result<Vec<LaunchResult>, BackendError> {
        self.enter(Op::Launch)?;
        let failing = lock(&self.faults).failing_names.clone();
        let ok: Vec<LaunchSpec> = specs
            .iter()
            .filter(|s| !failing.contains_key(&s.name))
            .cloned()
            .collect();
        let mut launched = if ok.is_empty() {
            Vec::new()
        } else {
            self.inner.launch(&ok).await?
        }
        .into_iter();
        Ok(specs
            .iter()
            .map(|s| match failing.get(&s.name) {
                Some(&definite) => LaunchResult {
                    name: s.name.clone(),
                    outcome: Err(LaunchFailure {
                        message: "injected launch failure".into(),
                        definite,
                    }),
                },
                None => launched.next().expect("one result per spec"),
            })
            .collect())
    }

    async fn terminate(&self, instances: &[InstanceRef]) -> Result<(), BackendError> {
        self.enter(Op::Terminate)?;
        self.inner.terminate(instances).await
    }

    async fn tag_instances(&self, tags: &[InstanceTags]) -> Result<(), BackendError> {
        self.enter(Op::Tag)?;
        self.inner.tag_instances(tags).await
    }

    async fn wait_visible(
        &self,
        region: &Region,
        names: &[String],
        timeout: Duration,
    ) -> Result<BTreeSet<String>, BackendError> {
        poll_visible(self, region, names, timeout).await
    }
    fn clock(&self) -> Option<CloudTime> {
        self.inner.clock()
    }
}

/// One `launch` call as a [`RecordingCloud`] saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LaunchCall {
    /// When the call started.
    pub start: Instant,
    /// When it returned.
    pub end: Instant,
    /// The `conductor:cpid` tags of its specs.
    pub cpids: Vec<String>,
}

#[derive(Debug, Default)]
struct Record {
    calls: BTreeMap<Op, usize>,
    launches: Vec<(String, Instant)>,
    launch_calls: Vec<LaunchCall>,
    tokens: HashSet<String>,
}

/// Counts calls (failed ones included) and records every successful
/// launch call with its times, and each name launched for the first time.
#[derive(Debug)]
pub struct RecordingCloud<C> {
    inner: C,
    record: Mutex<Record>,
}

impl<C: CloudBackend> RecordingCloud<C> {
    /// Wraps `inner`.
    pub fn new(inner: C) -> Self {
        Self {
            inner,
            record: Mutex::new(Record::default()),
        }
    }

    /// The wrapped backend.
    pub fn inner(&self) -> &C {
        &self.inner
    }

    /// How many times `op` was called.
    pub fn calls(&self, op: Op) -> usize {
        lock(&self.record).calls.get(&op).copied().unwrap_or(0)
    }

    /// Every successful `launch` call with its start and end (tokio) times.
    pub fn launch_calls(&self) -> Vec<LaunchCall> {
        lock(&self.record).launch_calls.clone()
    }

    /// Names launched (a repeated client token not counted), with the
    /// (tokio) time the launch call returned, in order.
    pub fn launches(&self) -> Vec<(String, Instant)> {
        lock(&self.record).launches.clone()
    }

    fn count(&self, op: Op) {
        *lock(&self.record).calls.entry(op).or_default() += 1;
    }
}

#[async_trait]
impl<C: CloudBackend> CloudBackend for RecordingCloud<C> {
    async fn inventory(&self, scope: &Scope) -> Result<Inventory, BackendError> {
        self.count(Op::Inventory);
        self.inner.inventory(scope).await
    }

    async fn launch(&self, specs: &[LaunchSpec]) -> Result<Vec<LaunchResult>, BackendError> {
        self.count(Op::Launch);
        let start = Instant::now();
        let results = self.inner.launch(specs).await?;
        let end = Instant::now();
        let mut rec = lock(&self.record);
        for (spec, r) in specs.iter().zip(&results) {
            if r.outcome.is_ok() && rec.tokens.insert(spec.client_token.clone()) {
                rec.launches.push((spec.name.clone(), end));
            }
        }
        rec.launch_calls.push(LaunchCall {
            start,
            end,
            cpids: specs
                .iter()
                .filter_map(|s| s.tags.get("conductor:cpid").cloned())
                .collect(),
        });
        Ok(results)
    }

    async fn terminate(&self, instances: &[InstanceRef]) -> Result<(), BackendError> {
        self.count(Op::Terminate);
        self.inner.terminate(instances).await
    }

    async fn tag_instances(&self, tags: &[InstanceTags]) -> Result<(), BackendError> {
        self.count(Op::Tag);
        self.inner.tag_instances(tags).await
    }

    async fn wait_visible(
        &self,
        region: &Region,
        names: &[String],
        timeout: Duration,
    ) -> Result<BTreeSet<String>, BackendError> {
        poll_visible(self, region, names, timeout).await
    }
    fn clock(&self) -> Option<CloudTime> {
        self.inner.clock()
    }
}
