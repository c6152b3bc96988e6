//! `FakeCloud`: an in-memory [`CloudBackend`] with eventual consistency and
//! fault injection.
//!
//! A launched instance exists at once (its name is taken) but shows in
//! `inventory` only after the configured visibility lag, and then, during the
//! consistency spread, only to some reads, like EC2's eventually consistent
//! reads. Client tokens are idempotent as on EC2. Faults: the next N
//! calls of an operation fail, a fraction of calls is throttled, or launches of
//! given names fail.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use conductor_core::cloud::{
    CloudBackend, Instance, InstanceRef, InstanceState, Inventory, LaunchFailure, LaunchResult,
    LaunchSpec, Launched, Scope,
};
use conductor_core::error::{BackendError, BackendErrorKind};
use conductor_core::reserve::now_ms;
use conductor_core::Zone;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::json;
use tokio::time::Instant;

/// An operation of the cloud, for fault injection and call counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Op {
    /// `inventory`.
    Inventory,
    /// `launch`.
    Launch,
    /// `terminate`.
    Terminate,
}

/// How long launched instances stay invisible.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Lag {
    /// Always this long.
    Fixed(Duration),
    /// Uniformly random up to this long (from the cloud's seeded RNG).
    UpTo(Duration),
}

#[derive(Debug)]
struct Entry {
    instance: Instance,
    /// First read that may see it.
    visible_at: Instant,
    /// First read that surely sees it.
    consistent_at: Instant,
}

#[derive(Debug)]
struct Inner {
    entries: Vec<Entry>,
    next_id: u64,
    tokens: HashMap<String, String>,
    lag: Lag,
    rng: StdRng,
    fail_next: HashMap<Op, (usize, BackendErrorKind)>,
    throttle_rate: f64,
    failing_names: HashMap<String, bool>,
    calls: BTreeMap<Op, usize>,
    launches: Vec<(String, Instant)>,
    latency: Duration,
    spread: Duration,
    launch_calls: Vec<LaunchCall>,
}

/// One `launch` call as the cloud saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LaunchCall {
    /// When the call started.
    pub start: Instant,
    /// When it returned.
    pub end: Instant,
    /// The `conductor:cpid` tags of its specs.
    pub cpids: Vec<String>,
}

/// An in-memory cloud; see the module docs.
#[derive(Debug)]
pub struct FakeCloud {
    inner: Mutex<Inner>,
}

impl Default for FakeCloud {
    fn default() -> Self {
        Self::new()
    }
}

impl FakeCloud {
    /// An empty, immediately consistent cloud.
    pub fn new() -> Self {
        Self {
            inner: Mutex::new(Inner {
                entries: Vec::new(),
                next_id: 1,
                tokens: HashMap::new(),
                lag: Lag::Fixed(Duration::ZERO),
                rng: StdRng::seed_from_u64(0),
                fail_next: HashMap::new(),
                throttle_rate: 0.0,
                failing_names: HashMap::new(),
                calls: BTreeMap::new(),
                launches: Vec::new(),
                latency: Duration::ZERO,
                spread: Duration::ZERO,
                launch_calls: Vec::new(),
            }),
        }
    }

    fn inner(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Sets the visibility lag of instances launched from now on.
    pub fn with_lag(self, lag: Lag) -> Self {
        self.inner().lag = lag;
        self
    }

    /// Makes every call take `latency`: reads see the state at the call's
    /// start, writes take effect at its end.
    pub fn with_latency(self, latency: Duration) -> Self {
        self.inner().latency = latency;
        self
    }

    /// Makes reads eventually consistent: for `spread` after an instance first
    /// shows, each read sees it or not at random (one reader may see it while
    /// the next does not), as EC2's replicas do.
    pub fn with_consistency_spread(self, spread: Duration) -> Self {
        self.inner().spread = spread;
        self
    }

    /// Seeds the RNG used for random lag, stale reads and throttling.
    pub fn with_seed(self, seed: u64) -> Self {
        self.inner().rng = StdRng::seed_from_u64(seed);
        self
    }

    /// Adds an existing, visible instance named `name` in `zone` with `tags`
    /// (the Name tag is added); returns its id.
    pub fn add_instance(&self, name: &str, zone: &Zone, tags: &[(&str, &str)]) -> String {
        let mut all: BTreeMap<String, String> = tags
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        all.insert("Name".into(), name.into());
        let mut inner = self.inner();
        let id = format!("i-{:017x}", inner.next_id);
        inner.next_id += 1;
        inner.entries.push(Entry {
            instance: Instance {
                id: id.clone(),
                region: zone.region(),
                zone: zone.to_string(),
                state: InstanceState::Running,
                launch_time: Some(now_ms() / 1000),
                tags: all,
            },
            visible_at: Instant::now(),
            consistent_at: Instant::now(),
        });
        id
    }

    /// Makes the next `times` calls of `op` fail with `kind`.
    pub fn fail_next(&self, op: Op, times: usize, kind: BackendErrorKind) {
        self.inner().fail_next.insert(op, (times, kind));
    }

    /// Throttles this fraction (0.0..=1.0) of calls with `RequestLimitExceeded`.
    pub fn throttle(&self, rate: f64) {
        self.inner().throttle_rate = rate;
    }

    /// Makes launches of `name` fail; `definite` says the instance surely does not exist.
    pub fn fail_launch_of(&self, name: &str, definite: bool) {
        self.inner().failing_names.insert(name.into(), definite);
    }

    /// Every instance, visible or not, terminated included.
    pub fn all_instances(&self) -> Vec<Instance> {
        self.inner()
            .entries
            .iter()
            .map(|e| e.instance.clone())
            .collect()
    }

    /// Live instances, visible or not.
    pub fn live_instances(&self) -> Vec<Instance> {
        self.all_instances()
            .into_iter()
            .filter(|i| i.state.is_live())
            .collect()
    }

    /// How many times `op` was called.
    pub fn calls(&self, op: Op) -> usize {
        self.inner().calls.get(&op).copied().unwrap_or(0)
    }

    /// Every successful `launch` call with its start and end (tokio) times.
    pub fn launch_calls(&self) -> Vec<LaunchCall> {
        self.inner().launch_calls.clone()
    }

    /// The largest number of distinct runs (cpids) whose launch calls overlapped in time.
    pub fn max_concurrent_launching_runs(&self) -> usize {
        let calls = self.launch_calls();
        calls
            .iter()
            .map(|c| {
                let mut at: Vec<&String> = calls
                    .iter()
                    .filter(|o| o.start <= c.start && c.start < o.end)
                    .flat_map(|o| &o.cpids)
                    .collect();
                at.sort();
                at.dedup();
                at.len()
            })
            .max()
            .unwrap_or(0)
    }

    /// Names launched, with the (tokio) time of launch, in order.
    pub fn launches(&self) -> Vec<(String, Instant)> {
        self.inner().launches.clone()
    }

    /// Waits the configured latency.
    async fn delay(&self) {
        let latency = self.inner().latency;
        if !latency.is_zero() {
            tokio::time::sleep(latency).await;
        }
    }

    /// Counts the call and applies injected faults.
    fn enter(&self, op: Op) -> Result<(), BackendError> {
        let mut inner = self.inner();
        *inner.calls.entry(op).or_default() += 1;
        if let Some((n, kind)) = inner.fail_next.get_mut(&op) {
            if *n > 0 {
                *n -= 1;
                let kind = *kind;
                return Err(BackendError::new(
                    kind,
                    format!("injected failure of {op:?}"),
                ));
            }
        }
        let rate = inner.throttle_rate;
        if rate > 0.0 && inner.rng.random_bool(rate.clamp(0.0, 1.0)) {
            return Err(BackendError::new(
                BackendErrorKind::Throttled,
                "RequestLimitExceeded: Request limit exceeded.",
            ));
        }
        Ok(())
    }
}

#[async_trait]
impl CloudBackend for FakeCloud {
    async fn inventory(&self, scope: &Scope) -> Result<Inventory, BackendError> {
        self.enter(Op::Inventory)?;
        let now = Instant::now();
        let instances = {
            let mut guard = self.inner();
            let inner = &mut *guard;
            let rng = &mut inner.rng;
            inner
                .entries
                .iter()
                .filter(|e| e.visible_at <= now && scope.matches(&e.instance))
                .filter(|e| now >= e.consistent_at || rng.random_bool(0.5))
                .map(|e| e.instance.clone())
                .collect()
        };
        self.delay().await;
        Ok(Inventory { instances })
    }

    async fn launch(&self, specs: &[LaunchSpec]) -> Result<Vec<LaunchResult>, BackendError> {
        self.enter(Op::Launch)?;
        let start = Instant::now();
        self.delay().await;
        let now = Instant::now();
        let mut inner = self.inner();
        let mut out = Vec::new();
        for spec in specs {
            if let Some(definite) = inner.failing_names.get(&spec.name).copied() {
                out.push(LaunchResult {
                    name: spec.name.clone(),
                    outcome: Err(LaunchFailure {
                        message: "injected launch failure".into(),
                        definite,
                    }),
                });
                continue;
            }
            let id = match inner.tokens.get(&spec.client_token) {
                Some(id) => id.clone(),
                None => {
                    let id = format!("i-{:017x}", inner.next_id);
                    inner.next_id += 1;
                    let lag = match inner.lag {
                        Lag::Fixed(d) => d,
                        Lag::UpTo(max) => max.mul_f64(inner.rng.random::<f64>()),
                    };
                    let instance = Instance {
                        id: id.clone(),
                        region: spec.zone.region(),
                        zone: spec.zone.to_string(),
                        state: InstanceState::Pending,
                        launch_time: Some(now_ms() / 1000),
                        tags: spec.tags.clone(),
                    };
                    let spread = inner.spread;
                    inner.entries.push(Entry {
                        instance,
                        visible_at: now + lag,
                        consistent_at: now + lag + spread,
                    });
                    inner.tokens.insert(spec.client_token.clone(), id.clone());
                    inner.launches.push((spec.name.clone(), now));
                    id
                }
            };
            out.push(LaunchResult {
                name: spec.name.clone(),
                outcome: Ok(Launched {
                    name: spec.name.clone(),
                    instance_id: id.clone(),
                    detail: json!({"InstanceId": id, "Placement": {"AvailabilityZone": spec.zone}, "Tags": spec.tags}),
                }),
            });
        }
        inner.launch_calls.push(LaunchCall {
            start,
            end: now,
            cpids: specs
                .iter()
                .filter_map(|s| s.tags.get("conductor:cpid").cloned())
                .collect(),
        });
        Ok(out)
    }

    async fn terminate(&self, instances: &[InstanceRef]) -> Result<(), BackendError> {
        self.enter(Op::Terminate)?;
        self.delay().await;
        let mut inner = self.inner();
        for r in instances {
            match inner.entries.iter_mut().find(|e| e.instance.id == r.id) {
                Some(e) => e.instance.state = InstanceState::Terminated,
                None => {
                    return Err(BackendError::new(
                        BackendErrorKind::Rejected,
                        format!("InvalidInstanceID.NotFound: {}", r.id),
                    ))
                }
            }
        }
        Ok(())
    }
}
