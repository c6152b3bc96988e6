//! `Conductor`: one create or plan run against the four backends; commands on
//! existing instances are in `query`, the Salt steps in `steps`.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use serde_json::json;
use tracing::{info, info_span, warn, Instrument};

use crate::cloud::{conductor_tag, CloudBackend, Inventory, LaunchResult, LaunchSpec, Scope};
use crate::cpid::Cpid;
use crate::error::{BackendErrorKind, Error, InputError, ReserveError};
use crate::layout::{log_rand, write_atomic, Layout};
use crate::names::Env;
use crate::pillar::{GroupSpec, Pillar};
use crate::plan::{inventory_scopes, plan as compute, Plan, PlanFiles};
use crate::render;
use crate::request::{resolve, CreateRequest};
use crate::reserve::{now_ms, Key, Lease, Owner, Reserver};
use crate::salt::{PillarSource, SaltExecutor, StateFailure};

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
    /// How long a native run waits for its minions' keys to be accepted and
    /// the minions to answer before it reports them as not ready.
    pub minion_timeout: Duration,
    /// Re-read the inventory after reserving (DESIGN step 5). Only tests that
    /// show why it exists turn it off.
    #[doc(hidden)]
    pub check_after_reserve: bool,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            provisioner: Provisioner::SaltCloud,
            release_grace: Duration::from_secs(120),
            lease_ttl: Duration::from_secs(600),
            max_attempts: 8,
            backoff_base: Duration::from_millis(200),
            backoff_max: Duration::from_secs(5),
            visible_timeout: Duration::from_secs(300),
            slot_wait: Duration::from_secs(3600),
            autosign_grains_dir: None,
            minion_timeout: Duration::from_secs(900),
            check_after_reserve: true,
        }
    }
}

/// Runs create, plan and destroy against its backends; cheap to clone.
#[derive(Clone, Debug)]
pub struct Conductor {
    cloud: Arc<dyn CloudBackend>,
    reserver: Arc<dyn Reserver>,
    pillar: Arc<dyn PillarSource>,
    salt: Option<Arc<dyn SaltExecutor>>,
    layout: Layout,
    opts: Options,
}

/// Builds a [`Conductor`]; cloud, reserver and pillar are required.
#[derive(Default)]
pub struct ConductorBuilder {
    cloud: Option<Arc<dyn CloudBackend>>,
    reserver: Option<Arc<dyn Reserver>>,
    pillar: Option<Arc<dyn PillarSource>>,
    salt: Option<Arc<dyn SaltExecutor>>,
    layout: Layout,
    opts: Options,
}

impl ConductorBuilder {
    /// The cloud backend.
    pub fn cloud(mut self, cloud: Arc<dyn CloudBackend>) -> Self {
        self.cloud = Some(cloud);
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
    /// Checks that the required backends are set.
    pub fn build(self) -> Result<Conductor, Error> {
        let missing = |what: &str| {
            InputError::invalid("conductor", what, "is required: set it on the builder")
        };
        if self.opts.provisioner == Provisioner::SaltCloud && self.salt.is_none() {
            return Err(InputError::invalid(
                "provisioner",
                "salt-cloud",
                "needs a Salt executor; set one, or use the ec2 provisioner",
            )
            .into());
        }
        Ok(Conductor {
            cloud: self.cloud.ok_or_else(|| missing("cloud"))?,
            reserver: self.reserver.ok_or_else(|| missing("reserver"))?,
            pillar: self.pillar.ok_or_else(|| missing("pillar"))?,
            salt: self.salt,
            layout: self.layout,
            opts: self.opts,
        })
    }
}

/// What a create run did.
#[derive(Clone, Debug, Serialize)]
pub struct CreateReport {
    /// The plan that was reserved and built.
    pub plan: Plan,
    /// The provisioner used.
    pub provisioner: Provisioner,
    /// Plan-and-reserve attempts it took.
    pub attempts: u32,
    /// Instances created.
    pub launched: Vec<String>,
    /// Instances that failed to launch, with the reason.
    pub failed: Vec<(String, String)>,
    /// Instances launched but not yet visible when the wait ended; their keys
    /// stay reserved until the lease expires.
    pub not_visible: Vec<String>,
    /// Native launches whose minion was not accepted or did not answer in
    /// time, with the reason; the instances are kept, their states not run.
    pub minions_not_ready: Vec<(String, String)>,
    /// Failed states of hooks and startup states.
    pub state_failures: Vec<StateFailure>,
    /// Steps skipped, and why (e.g. no Salt executor).
    pub skipped: Vec<String>,
    /// Files written by the run.
    pub logs: Vec<PathBuf>,
}

impl CreateReport {
    /// True when every instance launched, its minion joined, and every state succeeded.
    pub fn success(&self) -> bool {
        self.failed.is_empty()
            && self.state_failures.is_empty()
            && self.not_visible.is_empty()
            && self.minions_not_ready.is_empty()
    }
}

pub mod autosign;
mod query;
mod renew;
mod steps;
mod throttle;

pub use query::{DestroyReport, InstanceQuery, InstanceStatus, Selection, UpdateReport};
pub use throttle::slot_key;

/// Attempts at drawing a CPID nobody else holds.
const CPID_DRAWS: u32 = 5;

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

    /// Computes what `create` would build now; reserves and writes nothing.
    pub async fn plan(&self, req: &CreateRequest) -> Result<Plan, Error> {
        let pillar = self.load_pillar(&req.pillarenv).await?;
        let cpid = req.cpid.unwrap_or_else(Cpid::generate);
        let scopes = self.scopes(&pillar, req)?;
        self.compute_plan(cpid, req, &pillar, &scopes, None).await
    }

    async fn load_pillar(&self, env: &Env) -> Result<Pillar, Error> {
        self.pillar
            .load(env)
            .instrument(info_span!("pillar.load", %env))
            .await
    }

    fn scopes(&self, pillar: &Pillar, req: &CreateRequest) -> Result<Vec<Scope>, Error> {
        let build = resolve(pillar, req)?;
        inventory_scopes(pillar, req, &build)
    }

    async fn compute_plan(
        &self,
        cpid: Cpid,
        req: &CreateRequest,
        pillar: &Pillar,
        scopes: &[Scope],
        own: Option<&Owner>,
    ) -> Result<Plan, Error> {
        let inventory = self.read_inventory(scopes).await?;
        let held: BTreeSet<Key> = self
            .reserver
            .held(now_ms(), own)
            .instrument(info_span!("reserver.list"))
            .await
            .map_err(|e| Error::backend("listing reservations", e))?
            .into_iter()
            .collect();
        let mut plan = compute(cpid, req, pillar, &inventory, &held)?;
        plan.files = Some(PlanFiles {
            provider: self.layout.provider_file(&req.group, cpid),
            profile: self.layout.profile_file(&req.group, cpid),
            map: self
                .layout
                .map_file(cpid, &req.group, &req.zone, &req.saltenv),
        });
        Ok(plan)
    }

    /// Reads every scope (in parallel) into one inventory.
    async fn read_inventory(&self, scopes: &[Scope]) -> Result<Inventory, Error> {
        let mut set = tokio::task::JoinSet::new();
        for scope in scopes.iter().cloned() {
            let cloud = self.cloud.clone();
            let span = info_span!("cloud.inventory", region = %scope.region, selectors = scope.select.len());
            set.spawn(async move { cloud.inventory(&scope).await }.instrument(span));
        }
        let mut inv = Inventory::default();
        while let Some(joined) = set.join_next().await {
            let part = joined
                .map_err(|e| Error::RunFailed(format!("inventory task failed: {e}")))?
                .map_err(|e| Error::backend("reading the inventory", e))?;
            inv.merge(part);
        }
        Ok(inv)
    }

    /// Reserves `cpid.<CPID>` for the run, drawing again on a clash.
    async fn claim_cpid(&self, fixed: Option<Cpid>) -> Result<Lease, Error> {
        for _ in 0..CPID_DRAWS {
            let cpid = fixed.unwrap_or_else(Cpid::generate);
            let owner = Owner::this_process(cpid, self.opts.lease_ttl);
            match self.reserver.try_reserve(&[Key::cpid(cpid)], &owner).await {
                Ok(lease) => return Ok(lease),
                Err(ReserveError::Conflict(_)) if fixed.is_none() => continue,
                Err(ReserveError::Conflict(keys)) => {
                    return Err(Error::RetriesExhausted { attempts: 1, keys })
                }
                Err(ReserveError::Backend(e)) => {
                    return Err(Error::backend("reserving the cpid", e))
                }
            }
        }
        Err(Error::RetriesExhausted {
            attempts: CPID_DRAWS,
            keys: vec![],
        })
    }

    async fn release(&self, lease: &Lease, grace: Duration) {
        if lease.keys.is_empty() {
            return;
        }
        if let Err(e) = self
            .reserver
            .release(lease, grace)
            .instrument(info_span!("reserver.release"))
            .await
        {
            warn!(error = %e, keys = lease.keys.len(), "releasing reservations failed; they free themselves at lease expiry");
        }
    }

    /// Plans and reserves, with check-after-reserve and bounded, jittered retries.
    async fn reserve_plan(
        &self,
        cpid: Cpid,
        req: &CreateRequest,
        pillar: &Pillar,
        scopes: &[Scope],
    ) -> Result<(Plan, Lease, u32), Error> {
        let mut last = Vec::new();
        for attempt in 1..=self.opts.max_attempts {
            let owner = Owner::this_process(cpid, self.opts.lease_ttl);
            let plan = self
                .compute_plan(cpid, req, pillar, scopes, Some(&owner))
                .await?;
            let keys = plan.reservations.all();
            match self
                .reserver
                .try_reserve(&keys, &owner)
                .instrument(info_span!("reserver.reserve", keys = keys.len()))
                .await
            {
                Ok(lease) => {
                    if !self.opts.check_after_reserve {
                        return Ok((plan, lease, attempt));
                    }
                    let now = self.read_inventory(scopes).await?;
                    let clashes = taken_in(&plan, &now);
                    if clashes.is_empty() {
                        return Ok((plan, lease, attempt));
                    }
                    info!(
                        attempt,
                        clashes = clashes.len(),
                        "reserved keys are already used in the cloud; planning again"
                    );
                    self.release(&lease, Duration::ZERO).await;
                    last = clashes;
                }
                Err(ReserveError::Conflict(keys)) => {
                    info!(
                        attempt,
                        conflicts = keys.len(),
                        "reservation conflict; planning again"
                    );
                    last = keys;
                }
                Err(ReserveError::Backend(e)) => {
                    return Err(Error::backend("reserving names and ids", e))
                }
            }
            if attempt < self.opts.max_attempts {
                tokio::time::sleep(self.backoff(attempt)).await;
            }
        }
        Err(Error::RetriesExhausted {
            attempts: self.opts.max_attempts,
            keys: last,
        })
    }

    fn backoff(&self, attempt: u32) -> Duration {
        let exp = self
            .opts
            .backoff_base
            .saturating_mul(1 << attempt.min(16).saturating_sub(1));
        exp.min(self.opts.backoff_max)
            .mul_f64(0.5 + rand::random::<f64>() * 0.5)
    }

    /// Runs one create: plan, reserve, write files, hooks, provision, release,
    /// startup states. Instance failures are in the report, not the error.
    pub async fn create(&self, req: &CreateRequest) -> Result<CreateReport, Error> {
        let pillar = self.load_pillar(&req.pillarenv).await?;
        let scopes = self.scopes(&pillar, req)?;
        let cpid_lease = self.claim_cpid(req.cpid).await?;
        let cpid = cpid_lease.owner.cpid;
        fault_point("after_cpid");
        let span =
            info_span!("create", %cpid, group = %req.group, env = %req.pillarenv, zone = %req.zone);
        let renewer = renew::Renewer::start(
            self.reserver.clone(),
            self.opts.lease_ttl,
            cpid_lease.clone(),
        );
        let result = self
            .create_reserved(cpid, req, &pillar, &scopes, &renewer)
            .instrument(span)
            .await;
        drop(renewer);
        self.release(&cpid_lease, Duration::ZERO).await;
        result
    }

    async fn create_reserved(
        &self,
        cpid: Cpid,
        req: &CreateRequest,
        pillar: &Pillar,
        scopes: &[Scope],
        renewer: &renew::Renewer,
    ) -> Result<CreateReport, Error> {
        let (plan, lease, attempts) = self.reserve_plan(cpid, req, pillar, scopes).await?;
        renewer.add(lease.clone()).await;
        fault_point("after_reserve");
        info!(instances = plan.instances.len(), attempts, "reserved");
        let group = pillar.group(&req.group)?;
        let mut report = CreateReport {
            plan,
            provisioner: self.opts.provisioner,
            attempts,
            launched: vec![],
            failed: vec![],
            not_visible: vec![],
            minions_not_ready: vec![],
            state_failures: vec![],
            skipped: vec![],
            logs: vec![],
        };
        // Nothing is launched yet: any failure here frees every key at once.
        let prepared = async {
            report
                .logs
                .extend(self.write_files(&report.plan, group).await?);
            fault_point("after_files");
            self.hooks(
                &group.hooks.pre_create,
                &report.plan.saltenv,
                &report.plan.env,
                cpid,
                &mut report.logs,
                &mut report.skipped,
            )
            .await
        }
        .await;
        match prepared {
            Ok(failures) if failures.is_empty() => {}
            Ok(failures) => {
                self.release(&lease, Duration::ZERO).await;
                report.state_failures = failures;
                return Err(Error::RunFailed(format!(
                    "a pre_create hook failed; nothing was launched. See {}",
                    report
                        .logs
                        .last()
                        .map(|p| p.display().to_string())
                        .unwrap_or_default()
                )));
            }
            Err(e) => {
                self.release(&lease, Duration::ZERO).await;
                return Err(e);
            }
        }

        let slot = match pillar.throttle.max_provisioning_runs {
            Some(k) => match self.take_slot(cpid, &report.plan.region, k).await {
                Ok(slot) => {
                    renewer.add(slot.clone()).await;
                    Some(slot)
                }
                Err(e) => {
                    self.release(&lease, Duration::ZERO).await;
                    return Err(e);
                }
            },
            None => None,
        };
        // Native minions join by a per-run token listed only while they bootstrap.
        let autosign = match self.open_autosign(cpid).await {
            Ok(a) => a,
            Err(e) => {
                self.release(&lease, Duration::ZERO).await;
                return Err(e);
            }
        };
        let provisioned = self
            .provision(
                &report.plan,
                group,
                pillar.throttle.max_inflight_calls,
                autosign.as_ref().map(|a| a.token.as_str()),
                &mut report.logs,
            )
            .await;
        if let Some(slot) = slot {
            renewer.forget(&slot.keys).await;
            self.release(&slot, Duration::ZERO).await;
        }
        let results = match provisioned {
            Ok(r) => r,
            Err(e) => {
                // A whole-call failure: free the keys only if nothing can exist.
                if let Error::Backend { source, .. } = &e {
                    if source.kind == BackendErrorKind::Rejected {
                        self.release(&lease, Duration::ZERO).await;
                    }
                }
                return Err(e);
            }
        };
        fault_point("after_launch");
        for r in &results {
            match &r.outcome {
                Ok(_) => report.launched.push(r.name.clone()),
                Err(f) => report.failed.push((r.name.clone(), f.message.clone())),
            }
        }
        let visible = if report.launched.is_empty() {
            BTreeSet::new()
        } else {
            info!(
                instances = report.launched.len(),
                "waiting for the instances to show in the inventory"
            );
            self.cloud
                .wait_visible(
                    &report.plan.region,
                    &report.launched,
                    self.opts.visible_timeout,
                )
                .instrument(info_span!(
                    "cloud.wait_visible",
                    names = report.launched.len()
                ))
                .await
                .map_err(|e| Error::backend("waiting for instances to show", e))?
        };
        report.not_visible = report
            .launched
            .iter()
            .filter(|n| !visible.contains(*n))
            .cloned()
            .collect();
        fault_point("after_visible");
        let definitely_failed: BTreeSet<&str> = results
            .iter()
            .filter(|r| r.outcome.as_ref().err().is_some_and(|f| f.definite))
            .map(|r| r.name.as_str())
            .collect();
        let settled = |name: &str| visible.contains(name) || definitely_failed.contains(name);
        let done: Vec<Key> = releasable(&report.plan, settled);
        renewer.forget(&done).await;
        self.release(&lease.subset(&done), self.opts.release_grace)
            .await;
        fault_point("after_release");

        let ready: Vec<(String, &crate::pillar::RoleSpec)> = report
            .plan
            .instances
            .iter()
            .filter(|i| visible.contains(&i.name) && report.launched.contains(&i.name))
            .map(|i| (i.name.clone(), render::role_spec(group, i)))
            .collect();
        // Native minions must join the master (their token is listed only
        // until then); any new minion must answer before its states run.
        // salt-cloud has deployed and keyed its minions itself.
        if self.opts.provisioner == Provisioner::Ec2
            || !steps::startup_plan(group, &ready).is_empty()
        {
            let names: Vec<String> = ready.iter().map(|(n, _)| n.clone()).collect();
            report.minions_not_ready = self.wait_minions(&names, &mut report.skipped).await?;
        }
        if let Some(a) = autosign {
            a.close().await?;
        }
        let late: BTreeSet<&str> = report
            .minions_not_ready
            .iter()
            .map(|(n, _)| n.as_str())
            .collect();
        let ready: Vec<_> = ready
            .into_iter()
            .filter(|(n, _)| !late.contains(n.as_str()))
            .collect();
        let (plan_group, saltenv) = (report.plan.group.clone(), report.plan.saltenv.clone());
        let failures = self
            .startup_states(
                cpid,
                &plan_group,
                group,
                &ready,
                &saltenv,
                &mut report.logs,
                &mut report.skipped,
            )
            .await?;
        report.state_failures.extend(failures);
        let failures = self
            .hooks(
                &group.hooks.post_create,
                &report.plan.saltenv,
                &report.plan.env,
                cpid,
                &mut report.logs,
                &mut report.skipped,
            )
            .await?;
        report.state_failures.extend(failures);
        // Expired leftovers of other runs are removed here rather than waiting for `prune`.
        if let Err(e) = self.reserver.prune(now_ms(), None).await {
            warn!(error = %e, "pruning expired reservations failed");
        }
        Ok(report)
    }

    async fn write_files(&self, plan: &Plan, group: &GroupSpec) -> Result<Vec<PathBuf>, Error> {
        let files = plan
            .files
            .clone()
            .expect("plans made by Conductor name their files");
        let docs = [
            (files.provider, render::provider(plan, group), 0o600),
            (files.profile, render::profile(plan, group), 0o644),
            (files.map, render::map(plan, group), 0o644),
        ];
        let mut written = Vec::new();
        for (path, doc, mode) in docs {
            let text = serde_yaml::to_string(&doc).expect("yaml values serialize");
            write_file(path.clone(), text.into_bytes(), mode).await?;
            written.push(path);
        }
        Ok(written)
    }

    async fn provision(
        &self,
        plan: &Plan,
        group: &GroupSpec,
        max_inflight: Option<u32>,
        autosign_token: Option<&str>,
        logs: &mut Vec<PathBuf>,
    ) -> Result<Vec<LaunchResult>, Error> {
        let (results, raw) = match self.opts.provisioner {
            Provisioner::Ec2 => {
                let specs = plan
                    .instances
                    .iter()
                    .map(|i| {
                        let mut spec = LaunchSpec {
                            name: i.name.clone(),
                            zone: plan.zone.clone(),
                            client_token: client_token(plan.cpid, &i.name),
                            tags: i.tags.clone(),
                            settings: render::launch_settings(plan, group, i),
                            user_data: None,
                        };
                        if let Some(token) = autosign_token {
                            autosign::add_to_settings(&mut spec.settings, token);
                        }
                        spec.user_data = Some(crate::user_data::render(&spec).map_err(|e| {
                            Error::backend(
                                "rendering the user data",
                                crate::error::BackendError::new(
                                    BackendErrorKind::Rejected,
                                    format!("{}: {e}; fix it in the group's pillar", i.name),
                                ),
                            )
                        })?);
                        Ok(spec)
                    })
                    .collect::<Result<Vec<LaunchSpec>, Error>>()?;
                info!(instances = specs.len(), "launching with EC2 RunInstances");
                let chunk = max_inflight.map_or(specs.len(), |m| m as usize).max(1);
                let mut results = Vec::with_capacity(specs.len());
                for batch in specs.chunks(chunk) {
                    match self
                        .cloud
                        .launch(batch)
                        .instrument(info_span!("cloud.launch", instances = batch.len()))
                        .await
                    {
                        Ok(r) => results.extend(r),
                        // Nothing launched yet: the whole run fails with the cloud's error.
                        Err(e) if results.is_empty() => {
                            return Err(Error::backend("launching instances", e))
                        }
                        // Some instances exist: the rest of this batch failed, maybe for sure.
                        Err(e) => results.extend(batch.iter().map(|spec| LaunchResult {
                            name: spec.name.clone(),
                            outcome: Err(crate::cloud::LaunchFailure {
                                message: e.to_string(),
                                definite: e.kind == BackendErrorKind::Rejected,
                            }),
                        })),
                    }
                }
                let raw = json!(results);
                (results, raw)
            }
            Provisioner::SaltCloud => {
                let salt = self.salt.as_ref().expect("checked by the builder");
                let map = plan.files.as_ref().expect("files are set").map.clone();
                info!(map = %map.display(), "provisioning with salt-cloud");
                let run = salt
                    .cloud_map(&map)
                    .instrument(info_span!("salt.cloud_map", map = %map.display()))
                    .await
                    .map_err(|e| Error::backend("running salt-cloud", e))?;
                let mut results: Vec<LaunchResult> = Vec::new();
                for name in plan.names() {
                    let outcome = if run.ok.contains(&name) {
                        Ok(crate::cloud::Launched {
                            name: name.clone(),
                            instance_id: String::new(),
                            detail: json!(null),
                        })
                    } else {
                        // salt-cloud's error for a VM is definite: it either
                        // never created it, or created it before a later step
                        // failed, and then it shows within the release grace.
                        // A VM missing from its return may still come up.
                        let reported = run.failed.iter().find(|(n, _)| *n == name);
                        Err(crate::cloud::LaunchFailure {
                            message: reported.map_or_else(
                                || "salt-cloud did not report this instance".into(),
                                |(_, m)| m.clone(),
                            ),
                            definite: reported.is_some(),
                        })
                    };
                    results.push(LaunchResult { name, outcome });
                }
                (results, run.raw)
            }
        };
        let path = self.layout.cloud_log(plan.cpid, "create", log_rand());
        write_json_log(&path, &raw).await?;
        logs.push(path);
        Ok(results)
    }
}

/// Environment variable naming a lifecycle point at which the process kills
/// itself with SIGKILL: `after_cpid`, `after_reserve`, `after_files`,
/// `after_launch`, `after_visible`, `after_release`. For crash tests only.
pub const FAULT_POINT_ENV: &str = "CONDUCTOR_FAULT_POINT";

/// Kills this process with SIGKILL if [`FAULT_POINT_ENV`] names `point`.
fn fault_point(point: &str) {
    if std::env::var(FAULT_POINT_ENV).is_ok_and(|p| p == point) {
        warn!(point, "fault point reached: killing this process");
        // SAFETY: sends SIGKILL to this process; nothing runs after it.
        unsafe {
            libc::kill(libc::getpid(), libc::SIGKILL);
        }
    }
}

/// The idempotency token of one launch: at most 64 ASCII characters, stable for
/// a (cpid, name) pair.
pub fn client_token(cpid: Cpid, name: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in name.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("{cpid}-{h:016x}")
}

/// Keys of `plan` that are in use in `inventory` (checked after reserving).
fn taken_in(plan: &Plan, inventory: &Inventory) -> Vec<Key> {
    let names = inventory.live_names();
    let mut clashes: Vec<Key> = plan
        .instances
        .iter()
        .filter(|i| names.contains(i.name.as_str()))
        .map(|i| plan.name_key(&i.name))
        .collect();
    for key in &plan.reservations.ids {
        let Some((grain, n)) = id_grain(plan, key) else {
            continue;
        };
        let tag = conductor_tag(&grain);
        let used = inventory.live().any(|i| {
            i.conductor_tag("env") == Some(plan.env.as_str())
                && i.tag(&tag).and_then(|v| v.trim().parse().ok()) == Some(n)
        });
        if used {
            clashes.push(key.clone());
        }
    }
    clashes
}

/// The grain and value an id key stands for (`test_devops.system.id.3` -> (`devops.system.id`, 3)).
fn id_grain(plan: &Plan, key: &Key) -> Option<(String, u32)> {
    let rest = key.as_str().strip_prefix(&format!("{}_", plan.env))?;
    let (scope, n) = rest.rsplit_once(".id.")?;
    Some((format!("{scope}.id"), n.parse().ok()?))
}

/// Keys whose instances have all settled (visible, or certainly not launched).
fn releasable(plan: &Plan, settled: impl Fn(&str) -> bool) -> Vec<Key> {
    let mut keys: Vec<Key> = plan
        .instances
        .iter()
        .filter(|i| settled(&i.name))
        .map(|i| plan.name_key(&i.name))
        .collect();
    for key in &plan.reservations.ids {
        let Some((grain, n)) = id_grain(plan, key) else {
            continue;
        };
        let holders = plan
            .instances
            .iter()
            .filter(|i| i.grains.get(&grain).and_then(|v| v.as_u64()) == Some(u64::from(n)));
        if holders.clone().all(|i| settled(&i.name)) {
            keys.push(key.clone());
        }
    }
    keys
}

/// Writes `value` as pretty JSON to the log `path` (atomically, mode 0644).
async fn write_json_log(path: &std::path::Path, value: &serde_json::Value) -> Result<(), Error> {
    write_file(
        path.to_path_buf(),
        serde_json::to_vec_pretty(value).expect("json serializes"),
        0o644,
    )
    .await
}

async fn write_file(path: PathBuf, bytes: Vec<u8>, mode: u32) -> Result<(), Error> {
    tokio::task::spawn_blocking(move || {
        write_atomic(&path, &bytes, mode).map_err(|e| Error::io(path, e))
    })
    .await
    .map_err(|e| Error::RunFailed(format!("file task failed: {e}")))?
}
