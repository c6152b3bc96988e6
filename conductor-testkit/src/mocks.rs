//! `mockall` mocks of the four backend traits, for unit tests of error paths.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use async_trait::async_trait;
use conductor_core::{BackendError, Error, ReserveError};
use conductor_core::{
    CachedGrains, CloudRunResult, CloudVm, MinionKeys, PillarSource, SaltExecutor, StateRunResult,
};
use conductor_core::{
    CloudBackend, InstanceRef, InstanceTags, Inventory, LaunchResult, LaunchSpec, Scope,
};
use conductor_core::{Env, Pillar, Region};
use conductor_core::{Key, Lease, Owner, Phase, Reservation, Reserver};

mockall::mock! {
    /// A mock [`CloudBackend`].
    pub Cloud {}
    #[async_trait]
    impl CloudBackend for Cloud {
        async fn inventory(&self, scope: &Scope) -> Result<Inventory, BackendError>;
        async fn launch(&self, specs: &[LaunchSpec]) -> Result<Vec<LaunchResult>, BackendError>;
        async fn terminate(&self, instances: &[InstanceRef]) -> Result<(), BackendError>;
        async fn tag_instances(&self, tags: &[InstanceTags]) -> Result<(), BackendError>;
        async fn wait_visible(&self, region: &Region, names: &[String], timeout: Duration) -> Result<BTreeSet<String>, BackendError>;
    }
}

/// The calls of a [`Reserver`] with the environment owned, the shape
/// `mockall` can mock (it cannot mock an `Option<&Env>` argument of an
/// async trait method); [`MockReserver`] implements [`Reserver`] through it.
///
/// ```
/// use conductor_core::{Env, Reserver};
/// use conductor_testkit::mocks::MockReserver;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let mut reserver = MockReserver::new();
/// reserver
///     .expect_list()
///     .withf(|env| env.as_ref().map(Env::as_str) == Some("test"))
///     .returning(|_| Ok(vec![]));
/// let test = Env::new("test").unwrap();
/// assert!(reserver.list(Some(&test)).await.unwrap().is_empty());
/// # }
/// ```
#[async_trait]
pub trait ReserverCalls {
    /// [`Reserver::try_reserve`].
    async fn try_reserve(&self, keys: &[Key], owner: &Owner) -> Result<Lease, ReserveError>;
    /// [`Reserver::update`].
    async fn update(&self, lease: &Lease, expires: u64, phase: Phase) -> Result<(), ReserveError>;
    /// [`Reserver::list`].
    async fn list(&self, env: Option<Env>) -> Result<Vec<Reservation>, BackendError>;
    /// [`Reserver::prune`].
    async fn prune(
        &self,
        now: u64,
        env: Option<Env>,
        older_than: Option<Duration>,
    ) -> Result<Vec<Key>, BackendError>;
}

mockall::mock! {
    /// A mock [`Reserver`] (expectations are set on its [`ReserverCalls`]).
    pub Reserver {}
    #[async_trait]
    impl ReserverCalls for Reserver {
        async fn try_reserve(&self, keys: &[Key], owner: &Owner) -> Result<Lease, ReserveError>;
        async fn update(&self, lease: &Lease, expires: u64, phase: Phase) -> Result<(), ReserveError>;
        async fn list(&self, env: Option<Env>) -> Result<Vec<Reservation>, BackendError>;
        async fn prune(&self, now: u64, env: Option<Env>, older_than: Option<Duration>) -> Result<Vec<Key>, BackendError>;
    }
}

#[async_trait]
impl Reserver for MockReserver {
    async fn try_reserve(&self, keys: &[Key], owner: &Owner) -> Result<Lease, ReserveError> {
        ReserverCalls::try_reserve(self, keys, owner).await
    }
    async fn update(&self, lease: &Lease, expires: u64, phase: Phase) -> Result<(), ReserveError> {
        ReserverCalls::update(self, lease, expires, phase).await
    }
    async fn list(&self, env: Option<&Env>) -> Result<Vec<Reservation>, BackendError> {
        ReserverCalls::list(self, env.cloned()).await
    }
    async fn prune(
        &self,
        now: u64,
        env: Option<&Env>,
        older_than: Option<Duration>,
    ) -> Result<Vec<Key>, BackendError> {
        ReserverCalls::prune(self, now, env.cloned(), older_than).await
    }
}

mockall::mock! {
    /// A mock [`PillarSource`].
    pub Pillar {}
    #[async_trait]
    impl PillarSource for Pillar {
        async fn load(&self, env: &Env) -> Result<Pillar, Error>;
    }
}

mockall::mock! {
    /// A mock [`SaltExecutor`].
    pub Salt {}
    #[async_trait]
    impl SaltExecutor for Salt {
        async fn cloud_map(&self, map: &Path) -> Result<CloudRunResult, BackendError>;
        async fn cloud_forget(&self, vms: &[CloudVm]) -> Result<(), BackendError>;
        async fn state_apply(&self, targets: &[String], sls: &[String], saltenv: &Env) -> Result<StateRunResult, BackendError>;
        async fn orchestrate(&self, sls: &str, saltenv: &Env, pillarenv: &Env) -> Result<StateRunResult, BackendError>;
        async fn minion_keys(&self) -> Result<MinionKeys, BackendError>;
        async fn ping(&self, targets: &[String]) -> Result<Vec<String>, BackendError>;
        async fn delete_keys(&self, names: &[String]) -> Result<(), BackendError>;
        async fn cached_grains(&self) -> Result<CachedGrains, BackendError>;
    }
}

macro_rules! debug_name {
    ($($t:ident),*) => {$(
        impl std::fmt::Debug for $t {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(stringify!($t))
            }
        }
    )*};
}
debug_name!(MockCloud, MockReserver, MockPillar, MockSalt);
