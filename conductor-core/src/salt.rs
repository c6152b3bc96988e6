//! The Salt side as the lifecycle sees it: pillar and command execution.

use std::fmt;
use std::path::Path;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::backend::BackendError;
use crate::error::Error;
use crate::names::Env;
use crate::pillar::Pillar;

/// Where pillar comes from (files, or Salt itself).
///
/// A source that keeps one YAML document per environment (as a key-value
/// store or a config service might):
///
/// ```
/// use std::collections::HashMap;
///
/// use async_trait::async_trait;
/// use conductor_core::{Env, Error, ErrorClass, InputError, Pillar, PillarSource};
///
/// #[derive(Debug)]
/// struct PerEnv(HashMap<String, String>);
///
/// #[async_trait]
/// impl PillarSource for PerEnv {
///     async fn load(&self, env: &Env) -> Result<Pillar, Error> {
///         let text = self.0.get(env.as_str()).ok_or_else(|| {
///             InputError::invalid("pillarenv", env.as_str(), "has no pillar here")
///         })?;
///         Ok(Pillar::from_yaml_str(text)?)
///     }
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let lab = "conductor: {environments: {lab: {domain: example.org}}, groups: {}}";
/// let source = PerEnv(HashMap::from([("lab".to_string(), lab.to_string())]));
/// let pillar = source.load(&Env::new("lab")?).await?;
/// assert_eq!(pillar.environment(&Env::new("lab")?)?.domain, "example.org");
///
/// let missing = source.load(&Env::new("prod")?).await.unwrap_err();
/// assert_eq!(missing.class(), ErrorClass::BadInput);
/// # Ok(())
/// # }
/// ```
#[async_trait]
pub trait PillarSource: Send + Sync + fmt::Debug {
    /// Loads and validates the `conductor:` pillar of `env`.
    async fn load(&self, env: &Env) -> Result<Pillar, Error>;
}

/// The outcome of a salt-cloud run (create from a map, or destroy).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CloudRunResult {
    /// salt-cloud's JSON return, stored in the cloud_runs log.
    pub raw: serde_json::Value,
    /// Instances created (or destroyed).
    pub ok: Vec<String>,
    /// Instances that failed, with salt-cloud's message.
    pub failed: Vec<(String, String)>,
    /// Instances of `ok` created without deploying Salt, as their profile
    /// asks (`deploy: False`: the image brings its minion).
    #[serde(default)]
    pub not_deployed: Vec<String>,
    /// Instances of `ok` created, on which salt-cloud failed to deploy Salt,
    /// with its message.
    #[serde(default)]
    pub deploy_failed: Vec<(String, String)>,
    /// Instances salt-cloud gave no answer for (its process died or timed
    /// out), with why: they may exist.
    #[serde(default)]
    pub lost: Vec<(String, String)>,
}

/// A VM salt-cloud created, as its cache knows it: the VM's name under
/// the provider alias of the run that created it (`<group>_<CPID>`).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct CloudVm {
    /// The VM's name (minion id), a valid instance name.
    pub name: String,
    /// The salt-cloud provider alias it was created with.
    pub provider: String,
}

/// One failed state of a state or orchestration run.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateFailure {
    /// Minion (or master, for orchestration) that ran it.
    pub minion: String,
    /// State id (`<mod>_|-<id>_|-<name>_|-<fun>`), or `<run>` when the run failed as a whole.
    pub state: String,
    /// Salt's comment.
    pub comment: String,
    /// The log file holding the run's whole output, once written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log: Option<std::path::PathBuf>,
}

/// The outcome of `state.apply` or `state.orchestrate`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct StateRunResult {
    /// Salt's JSON output, stored in the state_runs log.
    pub raw: serde_json::Value,
    /// Minions that answered.
    pub minions: Vec<String>,
    /// Failed states.
    pub failures: Vec<StateFailure>,
}

impl StateRunResult {
    /// True when no state failed.
    pub fn ok(&self) -> bool {
        self.failures.is_empty()
    }
}

/// The master's minion keys by state, as `salt-key -L` lists them.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MinionKeys {
    /// Accepted keys (`minions`).
    pub accepted: Vec<String>,
    /// Keys waiting for acceptance (`minions_pre`).
    pub pending: Vec<String>,
    /// Rejected keys (`minions_rejected`).
    pub rejected: Vec<String>,
    /// Denied keys (`minions_denied`).
    pub denied: Vec<String>,
}

/// Runs Salt: salt-cloud maps (and its cache of destroyed VMs), state runs and orchestration,
/// and the master's minion keys.
///
/// A stand-in for a master whose minions are all up and whose states all
/// succeed (the testkit's `FakeSalt` is a complete one that records calls):
///
/// ```
/// use std::path::Path;
///
/// use async_trait::async_trait;
/// use conductor_core::{
///     BackendError, CachedGrains, CloudRunResult, CloudVm, Env, MinionKeys, SaltExecutor,
///     StateRunResult,
/// };
///
/// #[derive(Debug)]
/// struct AllGood;
///
/// #[async_trait]
/// impl SaltExecutor for AllGood {
///     async fn cloud_map(&self, _map: &Path) -> Result<CloudRunResult, BackendError> {
///         Ok(CloudRunResult::default())
///     }
///     async fn cloud_forget(&self, _vms: &[CloudVm]) -> Result<(), BackendError> {
///         Ok(())
///     }
///     async fn state_apply(
///         &self,
///         targets: &[String],
///         _sls: &[String],
///         _saltenv: &Env,
///     ) -> Result<StateRunResult, BackendError> {
///         Ok(StateRunResult { minions: targets.to_vec(), ..StateRunResult::default() })
///     }
///     async fn orchestrate(
///         &self,
///         _sls: &str,
///         _saltenv: &Env,
///         _pillarenv: &Env,
///     ) -> Result<StateRunResult, BackendError> {
///         Ok(StateRunResult::default())
///     }
///     async fn minion_keys(&self) -> Result<MinionKeys, BackendError> {
///         Ok(MinionKeys::default())
///     }
///     async fn ping(&self, targets: &[String]) -> Result<Vec<String>, BackendError> {
///         Ok(targets.to_vec())
///     }
///     async fn delete_keys(&self, _names: &[String]) -> Result<(), BackendError> {
///         Ok(())
///     }
///     async fn cached_grains(&self) -> Result<CachedGrains, BackendError> {
///         Ok(CachedGrains::new())
///     }
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let salt = AllGood;
/// let targets = vec!["web01.example.org".to_string()];
/// assert_eq!(salt.ping(&targets).await?, targets);
/// let run = salt.state_apply(&targets, &["web.base".into()], &Env::new("lab")?).await?;
/// assert!(run.ok());
/// # Ok(())
/// # }
/// ```
#[async_trait]
pub trait SaltExecutor: Send + Sync + fmt::Debug {
    /// `salt-cloud -m <map>`: creates the map's instances (how is the
    /// executor's: `SaltCli` runs one salt-cloud process per VM).
    async fn cloud_map(&self, map: &Path) -> Result<CloudRunResult, BackendError>;
    /// Forgets VMs that Conductor terminated through the cloud by instance
    /// id: removes salt-cloud's cache entries of each VM under its own
    /// provider only (`<cachedir>/{requested,active}/ec2/<provider>/<name>.p`,
    /// what `salt-cloud -d` removes for the VMs it destroys). Conductor
    /// never runs `salt-cloud -d`: Salt 3007 looks its names up in every
    /// configured provider, so a same-named VM of another provider would go
    /// too. Names and providers are checked by the caller; an entry that
    /// does not exist is not an error.
    async fn cloud_forget(&self, vms: &[CloudVm]) -> Result<(), BackendError>;
    /// `salt -L <targets> state.apply <sls> saltenv=<env>`.
    async fn state_apply(
        &self,
        targets: &[String],
        sls: &[String],
        saltenv: &Env,
    ) -> Result<StateRunResult, BackendError>;
    /// `salt-run state.orchestrate <sls> saltenv=<env> pillarenv=<env>`.
    async fn orchestrate(
        &self,
        sls: &str,
        saltenv: &Env,
        pillarenv: &Env,
    ) -> Result<StateRunResult, BackendError>;
    /// `salt-key -L`: the master's minion keys by state.
    async fn minion_keys(&self) -> Result<MinionKeys, BackendError>;
    /// `salt -L <targets> test.ping`: the targets that answered.
    async fn ping(&self, targets: &[String]) -> Result<Vec<String>, BackendError>;
    /// `salt-key -y -d <name>` for each name: the master forgets those minions.
    async fn delete_keys(&self, names: &[String]) -> Result<(), BackendError>;
    /// The grains the master has cached for its minions (`salt-run
    /// cache.grains tgt='*'`): minion id -> its grains object, without
    /// asking any minion. A minion whose key was deleted is not in it. A
    /// master whose cache cannot be read is an error, never an empty map.
    async fn cached_grains(&self) -> Result<CachedGrains, BackendError>;
    /// Returns once every command this executor killed (a call dropped by a
    /// cancelled run, a command past its timeout) has exited, or after a
    /// bound of the executor's: a run awaits it before it ends, so that
    /// nothing it started still runs when it returns. Executors that start
    /// no processes keep the default, which returns at once.
    async fn settle(&self) {}
}

/// The master's cached grains: minion id -> grains (a JSON object).
pub type CachedGrains = std::collections::BTreeMap<String, serde_json::Value>;

/// A [`PillarSource`] holding one pillar for every environment it defines
/// (embedders, examples and tests: `StaticPillar(Pillar::from_yaml_str(..)?)`).
#[derive(Clone, Debug)]
pub struct StaticPillar(pub Pillar);

#[async_trait]
impl PillarSource for StaticPillar {
    async fn load(&self, env: &Env) -> Result<Pillar, Error> {
        self.0.environment(env)?;
        Ok(self.0.clone())
    }
}
