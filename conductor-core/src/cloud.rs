//! The cloud side: inventory of instances, launch and terminate (`CloudBackend`).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::backend::BackendError;
use crate::backoff::Backoff;
use crate::clock::CloudTime;
use crate::cpid::Cpid;
use crate::names::{Region, Zone};
use crate::settings::LaunchSettings;

/// Tag holding the instance name (and minion id).
pub const NAME_TAG: &str = "Name";
/// Prefix of every tag Conductor writes.
pub const TAG_PREFIX: &str = "conductor:";

/// The tag key Conductor writes for grain or field `name` (`conductor:<name>`).
pub fn conductor_tag(name: &str) -> String {
    format!("{TAG_PREFIX}{name}")
}

/// EC2 instance state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum InstanceState {
    /// Launching.
    Pending,
    /// Running.
    Running,
    /// Terminating.
    ShuttingDown,
    /// Stopping.
    Stopping,
    /// Stopped.
    Stopped,
    /// Gone; never counts as used.
    Terminated,
}

impl InstanceState {
    /// Every state but `Terminated`: the states whose names and ids are in use.
    pub const LIVE: [InstanceState; 5] = [
        InstanceState::Pending,
        InstanceState::Running,
        InstanceState::ShuttingDown,
        InstanceState::Stopping,
        InstanceState::Stopped,
    ];

    /// EC2's name for the state (`shutting-down`).
    pub fn as_str(&self) -> &'static str {
        match self {
            InstanceState::Pending => "pending",
            InstanceState::Running => "running",
            InstanceState::ShuttingDown => "shutting-down",
            InstanceState::Stopping => "stopping",
            InstanceState::Stopped => "stopped",
            InstanceState::Terminated => "terminated",
        }
    }

    /// Parses EC2's name for a state.
    pub fn parse(s: &str) -> Option<Self> {
        Self::LIVE
            .into_iter()
            .chain([InstanceState::Terminated])
            .find(|st| st.as_str() == s)
    }

    /// Whether the instance still holds its name and ids.
    pub fn is_live(&self) -> bool {
        *self != InstanceState::Terminated
    }
}

/// One instance as the inventory sees it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Instance {
    /// Instance id (`i-0abc...`).
    pub id: String,
    /// Region it runs in.
    pub region: Region,
    /// Availability zone.
    pub zone: String,
    /// State.
    pub state: InstanceState,
    /// Launch time, epoch seconds, when known.
    pub launch_time: Option<u64>,
    /// Instance type (`t3.small`), when the cloud says.
    #[serde(default)]
    pub instance_type: Option<String>,
    /// Private IPv4 address, when it has one.
    #[serde(default)]
    pub private_ip: Option<String>,
    /// All tags.
    pub tags: BTreeMap<String, String>,
}

impl Instance {
    /// The `Name` tag.
    pub fn name(&self) -> Option<&str> {
        self.tag(NAME_TAG)
    }

    /// A tag's value.
    pub fn tag(&self, key: &str) -> Option<&str> {
        self.tags.get(key).map(String::as_str)
    }

    /// A `conductor:<name>` tag's value.
    pub fn conductor_tag(&self, name: &str) -> Option<&str> {
        self.tags.get(&conductor_tag(name)).map(String::as_str)
    }

    /// The run that built it, from `conductor:cpid`.
    pub fn cpid(&self) -> Option<Cpid> {
        self.conductor_tag("cpid").and_then(|c| Cpid::parse(c).ok())
    }

    /// A reference for terminate.
    pub fn to_ref(&self) -> InstanceRef {
        InstanceRef {
            id: self.id.clone(),
            region: self.region.clone(),
            name: self.name().map(str::to_string),
        }
    }
}

/// Instances read from the cloud.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Inventory {
    /// The instances.
    pub instances: Vec<Instance>,
}

impl Inventory {
    /// Live instances only.
    pub fn live(&self) -> impl Iterator<Item = &Instance> {
        self.instances.iter().filter(|i| i.state.is_live())
    }

    /// Appends `other`, skipping instance ids already present.
    pub fn merge(&mut self, other: Inventory) {
        let seen: BTreeSet<String> = self.instances.iter().map(|i| i.id.clone()).collect();
        self.instances.extend(
            other
                .instances
                .into_iter()
                .filter(|i| !seen.contains(&i.id)),
        );
    }

    /// Names of live instances.
    pub fn live_names(&self) -> BTreeSet<&str> {
        self.live().filter_map(Instance::name).collect()
    }
}

/// One server-side filter of an inventory read.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Selector {
    /// `Name` tag starts with this text.
    NamePrefix(String),
    /// Carries this tag key, whatever its value.
    TagKey(String),
    /// Tag `key` equals `value`.
    Tag {
        /// Tag key.
        key: String,
        /// Tag value.
        value: String,
    },
}

impl Selector {
    /// Whether `instance` matches.
    pub fn matches(&self, instance: &Instance) -> bool {
        match self {
            Selector::NamePrefix(p) => instance.name().is_some_and(|n| n.starts_with(p.as_str())),
            Selector::TagKey(k) => instance.tags.contains_key(k),
            Selector::Tag { key, value } => instance.tag(key) == Some(value.as_str()),
        }
    }
}

/// What one inventory read covers: live instances of `region` matching any
/// selector (every live instance when `select` is empty).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Scope {
    /// Region read.
    pub region: Region,
    /// Any-of filters.
    pub select: Vec<Selector>,
}

impl Scope {
    /// Every live instance of `region`.
    pub fn all(region: Region) -> Self {
        Self {
            region,
            select: Vec::new(),
        }
    }

    /// The reference semantics every backend implements: live, in the region,
    /// and matching a selector (or no selector given).
    pub fn matches(&self, instance: &Instance) -> bool {
        instance.state.is_live()
            && instance.region == self.region
            && (self.select.is_empty() || self.select.iter().any(|s| s.matches(instance)))
    }
}

/// Everything needed to launch one instance natively.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LaunchSpec {
    /// Fully qualified name (Name tag, minion id).
    pub name: String,
    /// Zone to launch in.
    pub zone: Zone,
    /// Idempotency token derived from cpid and name.
    pub client_token: String,
    /// Tags for the instance and its volumes.
    pub tags: BTreeMap<String, String>,
    /// Merged provider, profile and role settings, typed (checked while planning).
    pub settings: LaunchSettings,
    /// Cloud-init user data, when the provisioner bootstraps a minion.
    pub user_data: Option<String>,
}

/// A launched instance.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Launched {
    /// Fully qualified name.
    pub name: String,
    /// Instance id.
    pub instance_id: String,
    /// The backend's description of the instance, stored in the cloud_runs log.
    pub detail: serde_json::Value,
}

/// Why one launch failed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LaunchFailure {
    /// What went wrong, naming the input when it is at fault.
    pub message: String,
    /// True when the launch failed for sure: the instance does not exist, or
    /// (a salt-cloud error after its create call) it exists and shows in the
    /// inventory within the release grace. Its keys are then freed after the
    /// grace, like a visible instance's; false when it may still come up
    /// (keys are kept until their lease expires).
    pub definite: bool,
}

/// The outcome of launching one spec.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LaunchResult {
    /// The spec's name.
    pub name: String,
    /// Launched, or why not.
    pub outcome: Result<Launched, LaunchFailure>,
}

/// Identifies an instance to terminate.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceRef {
    /// Instance id.
    pub id: String,
    /// Its region.
    pub region: Region,
    /// Its name, for logs.
    pub name: Option<String>,
}

/// Tags to add to one instance ([`CloudBackend::tag_instances`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceTags {
    /// The instance.
    pub instance: InstanceRef,
    /// Tags to add (or overwrite).
    pub tags: BTreeMap<String, String>,
}

/// A cloud: reads instances, launches and terminates them.
///
/// The crate documentation implements one from scratch; here a wrapper
/// adds behaviour to any cloud (as the testkit's fault and lag wrappers do),
/// checked against [`MemCloud`](crate::MemCloud):
///
/// ```
/// use std::sync::atomic::{AtomicUsize, Ordering};
///
/// use async_trait::async_trait;
/// use conductor_core::{
///     BackendError, CloudBackend, InstanceRef, Inventory, LaunchResult, LaunchSpec, MemCloud,
///     Region, Scope, Zone,
/// };
///
/// /// Counts the inventory reads of the cloud inside.
/// #[derive(Debug)]
/// struct Counted<C> {
///     inner: C,
///     reads: AtomicUsize,
/// }
///
/// #[async_trait]
/// impl<C: CloudBackend> CloudBackend for Counted<C> {
///     async fn inventory(&self, scope: &Scope) -> Result<Inventory, BackendError> {
///         self.reads.fetch_add(1, Ordering::Relaxed);
///         self.inner.inventory(scope).await
///     }
///     async fn launch(&self, specs: &[LaunchSpec]) -> Result<Vec<LaunchResult>, BackendError> {
///         self.inner.launch(specs).await
///     }
///     async fn terminate(&self, instances: &[InstanceRef]) -> Result<(), BackendError> {
///         self.inner.terminate(instances).await
///     }
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let zone = Zone::new("us-east-1a")?;
/// let cloud = Counted { inner: MemCloud::new(), reads: AtomicUsize::new(0) };
/// cloud.inner.add_instance("web01.us-east-1a.lab.example.org", &zone, &[]);
///
/// // An empty scope selects every live instance of its region.
/// let everything = Scope { region: Region::new("us-east-1")?, select: vec![] };
/// let inventory = cloud.inventory(&everything).await?;
/// assert!(inventory.live_names().contains("web01.us-east-1a.lab.example.org"));
/// assert_eq!(cloud.reads.load(Ordering::Relaxed), 1);
/// # Ok(())
/// # }
/// ```
#[async_trait]
pub trait CloudBackend: Send + Sync + fmt::Debug {
    /// Live instances of `scope.region` matching the scope, all pages read.
    async fn inventory(&self, scope: &Scope) -> Result<Inventory, BackendError>;

    /// Launches each spec; one result per spec, in order.
    async fn launch(&self, specs: &[LaunchSpec]) -> Result<Vec<LaunchResult>, BackendError>;

    /// Terminates the instances.
    async fn terminate(&self, instances: &[InstanceRef]) -> Result<(), BackendError>;

    /// Adds tags to existing instances (EC2 CreateTags): each instance gets
    /// its own map; a key it already has takes the new value, its other
    /// tags stay. An instance the cloud does not know is a `Rejected`
    /// error. The default refuses: a backend that cannot write tags cannot
    /// adopt instances.
    async fn tag_instances(&self, tags: &[InstanceTags]) -> Result<(), BackendError> {
        let names: Vec<&str> = tags.iter().map(|t| t.instance.id.as_str()).collect();
        Err(BackendError::new(
            crate::backend::BackendErrorKind::Rejected,
            format!(
                "this cloud backend cannot write tags (asked to tag {})",
                names.join(", ")
            ),
        ))
    }

    /// The cloud's clock as its latest answer told it (its `Date`), which
    /// a run compares with its own before it plans (see
    /// [`ClockSkew`](crate::ClockSkew)); `None` when the backend has no such
    /// reading, and then nothing is checked. Wrappers forward it.
    fn clock(&self) -> Option<CloudTime> {
        None
    }

    /// Polls until every name is visible in the inventory or `timeout` passes;
    /// returns the names seen.
    async fn wait_visible(
        &self,
        region: &Region,
        names: &[String],
        timeout: Duration,
    ) -> Result<BTreeSet<String>, BackendError> {
        poll_visible(self, region, names, timeout).await
    }
}

/// The default `wait_visible`: inventory reads by exact `Name` with backoff
/// from 100 ms up to 2 s between reads.
pub async fn poll_visible<C: CloudBackend + ?Sized>(
    cloud: &C,
    region: &Region,
    names: &[String],
    timeout: Duration,
) -> Result<BTreeSet<String>, BackendError> {
    let deadline = tokio::time::Instant::now() + timeout;
    let backoff = Backoff::exact(Duration::from_millis(100), Duration::from_secs(2));
    let mut attempt = 0;
    let wanted: BTreeSet<String> = names.iter().cloned().collect();
    loop {
        let scope = Scope {
            region: region.clone(),
            select: names
                .iter()
                .map(|n| Selector::Tag {
                    key: NAME_TAG.into(),
                    value: n.clone(),
                })
                .collect(),
        };
        let inv = cloud.inventory(&scope).await?;
        let seen: BTreeSet<String> = inv
            .live_names()
            .into_iter()
            .filter(|n| wanted.contains(*n))
            .map(str::to_string)
            .collect();
        if seen.len() == wanted.len() || tokio::time::Instant::now() >= deadline {
            return Ok(seen);
        }
        attempt += 1;
        tokio::time::sleep(
            backoff
                .delay(attempt)
                .min(deadline - tokio::time::Instant::now()),
        )
        .await;
    }
}

#[async_trait]
impl<T: CloudBackend + ?Sized> CloudBackend for std::sync::Arc<T> {
    async fn inventory(&self, scope: &Scope) -> Result<Inventory, BackendError> {
        (**self).inventory(scope).await
    }
    async fn launch(&self, specs: &[LaunchSpec]) -> Result<Vec<LaunchResult>, BackendError> {
        (**self).launch(specs).await
    }
    async fn terminate(&self, instances: &[InstanceRef]) -> Result<(), BackendError> {
        (**self).terminate(instances).await
    }
    async fn tag_instances(&self, tags: &[InstanceTags]) -> Result<(), BackendError> {
        (**self).tag_instances(tags).await
    }
    async fn wait_visible(
        &self,
        region: &Region,
        names: &[String],
        timeout: Duration,
    ) -> Result<BTreeSet<String>, BackendError> {
        (**self).wait_visible(region, names, timeout).await
    }
    fn clock(&self) -> Option<CloudTime> {
        (**self).clock()
    }
}
