//! `FakeCloud`: core's [`MemCloud`] inside the testkit's wrappers —
//! recording, faults, latency and lag — behind one handle with the knobs
//! tests turn. A launched instance exists at once (its name is taken) but
//! shows in `inventory` only after the visibility lag, and then, during the
//! consistency spread, only to some reads; client tokens are idempotent as
//! on EC2.

use std::collections::BTreeSet;
use std::time::Duration;

use async_trait::async_trait;
use conductor_core::CloudTime;
use conductor_core::{
    BackendError, BackendErrorKind, CloudBackend, Instance, InstanceRef, InstanceTags, Inventory,
    LaunchResult, LaunchSpec, MemCloud, Region, Scope, Zone,
};
use tokio::time::Instant;

use crate::wrappers::{FaultCloud, LagCloud, LatencyCloud, RecordingCloud};
pub use crate::wrappers::{Lag, LaunchCall, Op};

type Stack = RecordingCloud<FaultCloud<LatencyCloud<LagCloud<MemCloud>>>>;

/// An in-memory cloud with lag, latency, eventual consistency and faults;
/// see the module docs.
#[derive(Debug)]
pub struct FakeCloud {
    stack: Stack,
}

impl Default for FakeCloud {
    fn default() -> Self {
        Self::new()
    }
}

impl FakeCloud {
    /// An empty, immediately consistent cloud.
    pub fn new() -> Self {
        let lag = LagCloud::new(MemCloud::new(), Lag::Fixed(Duration::ZERO));
        Self {
            stack: RecordingCloud::new(FaultCloud::new(LatencyCloud::new(lag, Duration::ZERO))),
        }
    }

    fn faults(&self) -> &FaultCloud<LatencyCloud<LagCloud<MemCloud>>> {
        self.stack.inner()
    }

    fn latency(&self) -> &LatencyCloud<LagCloud<MemCloud>> {
        self.faults().inner()
    }

    fn lag(&self) -> &LagCloud<MemCloud> {
        self.latency().inner()
    }

    fn mem(&self) -> &MemCloud {
        self.lag().inner()
    }

    /// Sets the visibility lag of instances launched from now on.
    pub fn with_lag(self, lag: Lag) -> Self {
        self.lag().set_lag(lag);
        self
    }

    /// Makes every call take `latency`: reads see the state at the call's
    /// start, writes take effect at its end.
    pub fn with_latency(self, latency: Duration) -> Self {
        self.latency().set_latency(latency);
        self
    }

    /// Makes reads eventually consistent: for `spread` after an instance first
    /// shows, each read sees it or not at random, as EC2's replicas do.
    pub fn with_consistency_spread(self, spread: Duration) -> Self {
        self.lag().set_spread(spread);
        self
    }

    /// Seeds the RNGs used for random lag, stale reads and throttling.
    pub fn with_seed(self, seed: u64) -> Self {
        self.lag().set_seed(seed);
        self.faults().set_seed(seed ^ 0x5eed);
        self
    }

    /// Adds an existing, visible instance named `name` in `zone` with `tags`
    /// (the Name tag is added); returns its id.
    pub fn add_instance(&self, name: &str, zone: &Zone, tags: &[(&str, &str)]) -> String {
        self.mem().add_instance(name, zone, tags)
    }

    /// Makes the next `times` calls of `op` fail with `kind`.
    pub fn fail_next(&self, op: Op, times: usize, kind: BackendErrorKind) {
        self.faults().fail_next(op, times, kind);
    }

    /// Throttles this fraction (0.0..=1.0) of calls with `RequestLimitExceeded`.
    pub fn throttle(&self, rate: f64) {
        self.faults().throttle(rate);
    }

    /// Makes launches of `name` fail; `definite` says the instance surely does not exist.
    pub fn fail_launch_of(&self, name: &str, definite: bool) {
        self.faults().fail_launch_of(name, definite);
    }

    /// Every instance, visible or not, terminated included.
    pub fn all_instances(&self) -> Vec<Instance> {
        self.mem().all_instances()
    }

    /// Live instances, visible or not.
    pub fn live_instances(&self) -> Vec<Instance> {
        self.mem().live_instances()
    }

    /// How many times `op` was called.
    pub fn calls(&self, op: Op) -> usize {
        self.stack.calls(op)
    }

    /// Every successful `launch` call with its start and end (tokio) times.
    pub fn launch_calls(&self) -> Vec<LaunchCall> {
        self.stack.launch_calls()
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
        self.stack.launches()
    }
}

#[async_trait]
impl CloudBackend for FakeCloud {
    async fn inventory(&self, scope: &Scope) -> Result<Inventory, BackendError> {
        self.stack.inventory(scope).await
    }

    async fn launch(&self, specs: &[LaunchSpec]) -> Result<Vec<LaunchResult>, BackendError> {
        self.stack.launch(specs).await
    }

    async fn terminate(&self, instances: &[InstanceRef]) -> Result<(), BackendError> {
        self.stack.terminate(instances).await
    }

    async fn tag_instances(&self, tags: &[InstanceTags]) -> Result<(), BackendError> {
        self.stack.tag_instances(tags).await
    }

    async fn wait_visible(
        &self,
        region: &Region,
        names: &[String],
        timeout: Duration,
    ) -> Result<BTreeSet<String>, BackendError> {
        self.stack.wait_visible(region, names, timeout).await
    }
    fn clock(&self) -> Option<CloudTime> {
        self.stack.clock()
    }
}
