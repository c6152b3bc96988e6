//! `Conductor`: the four backends, the file layout and the tunables one
//! process runs its create, destroy, update and status commands with.
//! The commands themselves are in `lifecycle`.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tokio_util::sync::CancellationToken;
use tracing::{info_span, Instrument};

use crate::account::{AccountCache, CloudAccounts};
use crate::cloud::CloudBackend;
use crate::error::Error;
use crate::grains::GrainIds;
use crate::input::InputError;
use crate::layout::Layout;
use crate::lifecycle::Observer;
use crate::names::Env;
use crate::pillar::Pillar;
use crate::reserve::Reserver;
use crate::salt::{PillarSource, SaltExecutor};

/// How instances are created.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Provisioner {
    /// `salt-cloud -m <map>` (needs a Salt with the EC2 cloud driver, i.e. 3007.x).
    #[default]
    SaltCloud,
    /// Native EC2 RunInstances with a Salt-bootstrap user-data.
    Ec2,
}

/// Tunables of the lifecycle; the defaults suit real AWS.
#[derive(Clone, Debug)]
pub struct Options {
    /// How instances are created.
    pub provisioner: Provisioner,
    /// How long a released key stays held (EC2 reads are eventually consistent).
    pub release_grace: Duration,
    /// Lease lifetime; a live run renews its leases every third of it, so the
    /// keys of a run that died on another host free themselves at most this
    /// long after its last renewal.
    pub lease_ttl: Duration,
    /// Attempts to plan and reserve before giving up.
    pub max_attempts: u32,
    /// First backoff between attempts (doubles, jittered, capped by `backoff_max`).
    pub backoff_base: Duration,
    /// Largest backoff between attempts.
    pub backoff_max: Duration,
    /// How long to wait for launched instances to show in the inventory.
    pub visible_timeout: Duration,
    /// Longest wait for a provisioning slot (pillar `throttle.max_provisioning_runs`).
    pub slot_wait: Duration,
    /// The master's `autosign_grains_dir` (absolute). When set, native
    /// launches carry a per-run token grain that the run lists there while
    /// its minions bootstrap, so the master accepts exactly those keys.
    pub autosign_grains_dir: Option<PathBuf>,
    /// How long a run waits for its new minions' keys to be accepted and
    /// the minions to answer before it reports them as not ready.
    pub minion_timeout: Duration,
    /// Re-read the inventory after reserving (DESIGN step 5). Turning it off
    /// saves one inventory read per run and is safe only against a cloud
    /// whose reads are immediately consistent (moto, [`crate::MemCloud`]):
    /// against EC2 a run that read before another run's instances showed
    /// could then choose the same names.
    pub check_after_reserve: bool,
    /// Count the ids the master's grains cache shows for minions whose
    /// instances lack Conductor's tags (instances the Python runner built)
    /// when planning and adopting; needs a Salt executor. A cache that
    /// cannot be read is then an error ([`Error::GrainsUnreadable`]).
    pub read_grains: bool,
    /// The clock a run compares with the cloud's before it plans (see
    /// [`ClockSkew`](crate::ClockSkew)): the system's unless a test injects
    /// a skewed one.
    pub clock: crate::clock::Clock,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            provisioner: Provisioner::SaltCloud,
            release_grace: Duration::from_secs(120),
            lease_ttl: Duration::from_secs(600),
            max_attempts: 12,
            backoff_base: Duration::from_millis(200),
            backoff_max: Duration::from_secs(5),
            visible_timeout: Duration::from_secs(300),
            slot_wait: Duration::from_secs(3600),
            autosign_grains_dir: None,
            minion_timeout: Duration::from_secs(900),
            check_after_reserve: true,
            read_grains: true,
            clock: crate::clock::Clock::system(),
        }
    }
}

/// Runs create, plan, destroy, update and status against its backends;
/// cheap to clone.
///
/// Parallel creates never choose the same name, in one process (as here)
/// or many (with a [`FsReserver`](crate::FsReserver) or a shared reserver):
///
/// ```
/// use std::sync::Arc;
///
/// use conductor_core::{Conductor, Layout, MemCloud, MemReserver, Options, Provisioner, StaticPillar};
/// use conductor_testkit::fixtures::{devops_pillar, role_request};
///
/// # #[tokio::main]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let dir = tempfile::tempdir()?;
/// let conductor = Conductor::builder()
///     .cloud(Arc::new(MemCloud::new()))
///     .reserver(Arc::new(MemReserver::new()))
///     .pillar(Arc::new(StaticPillar(devops_pillar())))
///     .layout(Layout::new(dir.path().join("etc"), dir.path().join("runner")))
///     .options(Options { provisioner: Provisioner::Ec2, ..Options::default() })
///     .build()?;
///
/// let request = role_request("activemq", Some(3));
/// let (a, b) = tokio::join!(conductor.create(&request), conductor.create(&request));
/// let (a, b) = (a?, b?);
/// assert!(a.success() && b.success());
/// assert_eq!(a.launched.len() + b.launched.len(), 6);
/// assert!(a.launched.iter().all(|name| !b.launched.contains(name)));
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct Conductor {
    pub(crate) cloud: Arc<dyn CloudBackend>,
    pub(crate) accounts: Option<Arc<AccountCache>>,
    pub(crate) reserver: Arc<dyn Reserver>,
    pub(crate) pillar: Arc<dyn PillarSource>,
    pub(crate) salt: Option<Arc<dyn SaltExecutor>>,
    pub(crate) layout: Layout,
    pub(crate) opts: Options,
    pub(crate) observer: Option<Arc<dyn Observer>>,
    pub(crate) cancel: CancellationToken,
}

/// Builds a [`Conductor`]; cloud, reserver and pillar are required.
///
/// `build` says what is missing, as a bad-input error:
///
/// ```
/// use std::sync::Arc;
///
/// use conductor_core::{
///     Conductor, ErrorClass, MemCloud, MemReserver, Options, Pillar, Provisioner, StaticPillar,
/// };
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let pillar = Pillar::from_yaml_str("conductor: {environments: {lab: {domain: example.org}}, groups: {}}")?;
/// let builder = Conductor::builder()
///     .cloud(Arc::new(MemCloud::new()))
///     .pillar(Arc::new(StaticPillar(pillar)))
///     .options(Options { provisioner: Provisioner::Ec2, ..Options::default() });
///
/// let no_reserver = builder.clone().build().unwrap_err();
/// assert_eq!(no_reserver.class(), ErrorClass::BadInput);
/// assert!(no_reserver.to_string().contains("reserver"), "{no_reserver}");
///
/// let conductor = builder.clone().reserver(Arc::new(MemReserver::new())).build()?;
/// assert_eq!(conductor.options().provisioner, Provisioner::Ec2);
///
/// // The salt-cloud provisioner (the default) needs a Salt executor.
/// let salt_cloud = builder.reserver(Arc::new(MemReserver::new())).options(Options::default());
/// assert!(salt_cloud.build().is_err());
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Default)]
pub struct ConductorBuilder {
    cloud: Option<Arc<dyn CloudBackend>>,
    accounts: Option<Arc<dyn CloudAccounts>>,
    reserver: Option<Arc<dyn Reserver>>,
    pillar: Option<Arc<dyn PillarSource>>,
    salt: Option<Arc<dyn SaltExecutor>>,
    layout: Layout,
    opts: Options,
    observer: Option<Arc<dyn Observer>>,
    cancel: Option<CancellationToken>,
}

impl ConductorBuilder {
    /// The cloud backend.
    pub fn cloud(mut self, cloud: Arc<dyn CloudBackend>) -> Self {
        self.cloud = Some(cloud);
        self
    }
    /// Opens the cloud of each environment whose pillar names an AWS
    /// account (`environments.<env>.aws`); without it, such an environment
    /// is refused (its instances are never looked for nor launched with
    /// the default [`cloud`](Self::cloud)).
    pub fn accounts(mut self, accounts: Arc<dyn CloudAccounts>) -> Self {
        self.accounts = Some(accounts);
        self
    }
    /// The reserver.
    pub fn reserver(mut self, reserver: Arc<dyn Reserver>) -> Self {
        self.reserver = Some(reserver);
        self
    }
    /// The pillar source.
    pub fn pillar(mut self, pillar: Arc<dyn PillarSource>) -> Self {
        self.pillar = Some(pillar);
        self
    }
    /// The Salt executor; without one, hooks and startup states are skipped
    /// (and reported as skipped), and only the `ec2` provisioner works.
    pub fn salt(mut self, salt: Arc<dyn SaltExecutor>) -> Self {
        self.salt = Some(salt);
        self
    }
    /// File roots.
    pub fn layout(mut self, layout: Layout) -> Self {
        self.layout = layout;
        self
    }
    /// Lifecycle tunables.
    pub fn options(mut self, opts: Options) -> Self {
        self.opts = opts;
        self
    }
    /// Told of each lifecycle step a run passes.
    pub fn observer(mut self, observer: Arc<dyn Observer>) -> Self {
        self.observer = Some(observer);
        self
    }
    /// Cancelling `token` stops every run of this conductor cleanly: no new
    /// work starts, Salt commands are killed with their process groups,
    /// reservations of what surely was not launched are freed, the rest are
    /// held until they expire, and the run returns what it did
    /// ([`Error::Interrupted`] before any instance was launched or
    /// terminated, else a report marked interrupted; a destroy still deletes
    /// the minion keys of what it terminated). Reads outside a run (`plan`,
    /// `status`, `select`, `plan_destroy`, `adopt`'s reads: pillar,
    /// inventory, cached grains) stop too, with [`Error::Interrupted`], and
    /// `adopt` writes no tag. The `conductor` binary cancels on SIGINT,
    /// SIGTERM and SIGHUP.
    pub fn cancel_on(mut self, token: CancellationToken) -> Self {
        self.cancel = Some(token);
        self
    }
    /// Checks that the required backends are set.
    pub fn build(self) -> Result<Conductor, Error> {
        let missing = |what: &str| {
            InputError::invalid("conductor", what, "is required: set it on the builder")
        };
        if self.opts.provisioner == Provisioner::SaltCloud && self.salt.is_none() {
            return Err(InputError::invalid(
                "provisioner",
                "salt-cloud",
                "needs Salt: give Salt (leave out --no-salt), or use the ec2 provisioner",
            )
            .into());
        }
        Ok(Conductor {
            cloud: self.cloud.ok_or_else(|| missing("cloud"))?,
            accounts: self.accounts.map(|a| Arc::new(AccountCache::new(a))),
            reserver: self.reserver.ok_or_else(|| missing("reserver"))?,
            pillar: self.pillar.ok_or_else(|| missing("pillar"))?,
            salt: self.salt,
            layout: self.layout,
            opts: self.opts,
            observer: self.observer,
            cancel: self.cancel.unwrap_or_default(),
        })
    }
}

impl Conductor {
    /// Starts a builder.
    pub fn builder() -> ConductorBuilder {
        ConductorBuilder::default()
    }

    /// The file layout.
    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// The reserver (for `reservations list|prune`).
    pub fn reserver(&self) -> &Arc<dyn Reserver> {
        &self.reserver
    }

    /// The lifecycle tunables.
    pub fn options(&self) -> &Options {
        &self.opts
    }

    /// Tells the observer, if any, how far run `cpid` came.
    pub(crate) fn progress(&self, cpid: crate::cpid::Cpid, progress: crate::lifecycle::Progress) {
        if let Some(o) = &self.observer {
            o.progress(cpid, &progress);
        }
    }

    /// The id grains of the master's cached minions; none without Salt or
    /// with [`Options::read_grains`] off.
    pub(crate) async fn grain_ids(&self) -> Result<GrainIds, Error> {
        let Some(salt) = self.salt.as_ref().filter(|_| self.opts.read_grains) else {
            return Ok(GrainIds::default());
        };
        let read = async {
            salt.cached_grains()
                .instrument(info_span!("salt.cached_grains"))
                .await
                .map_err(|source| Error::GrainsUnreadable { source })
        };
        let cache = self.unless_cancelled(read).await?;
        Ok(GrainIds::from_cache(&cache))
    }

    /// This conductor as it runs in environment `env` of `pillar`: with the
    /// cloud of the environment's AWS account when pillar names one.
    pub(crate) async fn in_env(&self, pillar: &Pillar, env: &Env) -> Result<Conductor, Error> {
        let Some(account) = pillar.environment(env)?.aws.as_ref() else {
            return Ok(self.clone());
        };
        let Some(accounts) = &self.accounts else {
            return Err(InputError::invalid(
                "environment",
                env.as_str(),
                &format!(
                    "names an AWS account (conductor.environments.{env}.aws) but this conductor cannot open accounts: give the builder `accounts` (the conductor binary does)"
                ),
            )
            .into());
        };
        let open = async {
            accounts
                .cloud(account)
                .instrument(info_span!("cloud.account", account = %account.label()))
                .await
                .map_err(|e| Error::backend("opening the environment's AWS account", e))
        };
        let cloud = self.unless_cancelled(open).await?;
        Ok(Conductor {
            cloud,
            ..self.clone()
        })
    }

    /// Loads the pillar of `env`, unless the caller cancels first.
    pub(crate) async fn load_pillar(&self, env: &Env) -> Result<Pillar, Error> {
        self.unless_cancelled(
            self.pillar
                .load(env)
                .instrument(info_span!("pillar.load", %env)),
        )
        .await
    }

    /// Runs the read `read` unless the caller cancels first (or already
    /// did), as [`Error::Interrupted`]: for the reads outside a run
    /// (pillar, inventory, grains, reservations); a run's own steps go
    /// through `Run::step_in`.
    pub(crate) async fn unless_cancelled<T>(
        &self,
        read: impl std::future::Future<Output = Result<T, Error>>,
    ) -> Result<T, Error> {
        self.cancellable(read).await?
    }

    /// Runs `f` unless the caller cancels first (or already did: the
    /// cancellation is polled first); a cancelled `f` is dropped, which
    /// kills the Salt commands it runs, with their process groups.
    pub(crate) async fn cancellable<F: std::future::Future>(
        &self,
        f: F,
    ) -> Result<F::Output, crate::lifecycle::Cancelled> {
        tokio::select! {
            biased;
            _ = self.cancel.cancelled() => Err(crate::lifecycle::Cancelled),
            out = f => Ok(out),
        }
    }
}
