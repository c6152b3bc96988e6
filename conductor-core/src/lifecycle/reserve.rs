//! Planning and reserving: read what the cloud and the reserver show,
//! compute the lowest free names and ids, reserve them all at once, check
//! the cloud again, retry with backoff on conflict (DESIGN §3, steps 3–5).

use std::collections::BTreeSet;

use tracing::{info, info_span, warn, Instrument};

use super::run::Run;
use crate::clock::{ClockSkew, SkewVerdict};
use crate::cloud::{Inventory, Scope};
use crate::conductor::{Conductor, Provisioner};
use crate::cpid::Cpid;
use crate::error::Error;
use crate::grains::GrainIds;
use crate::ids::IdScope;
use crate::input::PillarError;
use crate::pillar::{Pillar, RoleSpec};
use crate::plan::{inventory_scopes, plan_with_grains as compute, Plan, PlanFiles};
use crate::render;
use crate::request::{resolve, Build, BuildItem, CreateRequest};
use crate::reserve::{now_ms, Key, Owner, ReserveError};
use crate::settings::LaunchSettings;

impl Conductor {
    /// Computes what `create` would build now; reserves and writes nothing.
    pub async fn plan(&self, req: &CreateRequest) -> Result<Plan, Error> {
        let pillar = self.load_pillar(&req.pillarenv).await?;
        let cpid = req.cpid.unwrap_or_else(Cpid::generate);
        let scopes = self.scopes(&pillar, req)?;
        let this = self.in_env(&pillar, &req.pillarenv).await?;
        let inventory = this.read_inventory(&scopes).await?;
        let grains = this.grain_ids().await?;
        let plan = this
            .compute_plan(cpid, req, &pillar, (&inventory, &grains), None)
            .await?;
        this.warn_clock(&plan);
        Ok(plan)
    }

    /// The inventory reads `req` needs; validates the request against
    /// pillar, and the launch settings of every role it builds.
    pub(crate) fn scopes(&self, pillar: &Pillar, req: &CreateRequest) -> Result<Vec<Scope>, Error> {
        let build = resolve(pillar, req)?;
        check_launch_settings(pillar, req, &build)?;
        let account = pillar.environment(&req.pillarenv)?.aws.as_ref();
        if let (Some(account), Provisioner::SaltCloud) = (account, self.opts.provisioner) {
            account.check_salt_cloud().map_err(|(key, message)| {
                let env = &req.pillarenv;
                PillarError::new(format!("conductor.environments.{env}.aws.{key}"), message)
            })?;
        }
        inventory_scopes(pillar, req, &build)
    }

    async fn compute_plan(
        &self,
        cpid: Cpid,
        req: &CreateRequest,
        pillar: &Pillar,
        (inventory, grains): (&Inventory, &GrainIds),
        own: Option<&Owner>,
    ) -> Result<Plan, Error> {
        // Names are keyed by the saltenv, ids by the pillarenv: read those
        // environments' keys only (one read when they are the same).
        let mut held = BTreeSet::new();
        for env in req.envs() {
            let keys = self
                .reserver
                .held(now_ms(), Some(env), own)
                .instrument(info_span!("reserver.list", env = %env))
                .await
                .map_err(|e| Error::backend("listing reservations", e))?;
            held.extend(keys);
        }
        let mut plan = compute(cpid, req, pillar, inventory, &held, grains)?;
        plan.clock_skew = self.check_clock()?;
        self.check_launches(&plan, pillar.group(&req.group)?)?;
        plan.files = Some(PlanFiles {
            provider: self.layout.provider_file(&req.group, cpid),
            profile: self.layout.profile_file(&req.group, cpid),
            map: self
                .layout
                .map_file(cpid, &req.group, &req.zone, &req.saltenv),
        });
        Ok(plan)
    }

    /// Compares this run's clock with the cloud's latest answer (read after
    /// an inventory): `Some` past a quarter of the release grace (a
    /// warning), an error past the grace. Lease expiries are each host's
    /// epoch milliseconds, so a skewed host frees or holds keys by its skew.
    fn check_clock(&self) -> Result<Option<ClockSkew>, Error> {
        let Some(reading) = self.cloud.clock() else {
            return Ok(None);
        };
        let skew = ClockSkew::measure(&self.opts.clock, &reading);
        let grace = self.opts.release_grace;
        match skew.verdict(grace) {
            SkewVerdict::Fine => Ok(None),
            SkewVerdict::Warn => Ok(Some(skew)),
            SkewVerdict::Refuse => Err(Error::ClockSkew { skew, grace }),
        }
    }

    /// Warns of the clock skew `plan` found (once per run: the first plan).
    fn warn_clock(&self, plan: &Plan) {
        if let Some(skew) = &plan.clock_skew {
            warn!(
                "{skew}: more than a quarter of the release grace ({} s); keep this host's clock under NTP",
                self.opts.release_grace.as_secs()
            );
        }
    }

    /// Reads every scope (in parallel) into one inventory.
    pub(crate) async fn read_inventory(&self, scopes: &[Scope]) -> Result<Inventory, Error> {
        let mut set = tokio::task::JoinSet::new();
        for scope in scopes.iter().cloned() {
            let cloud = self.cloud.clone();
            let span = info_span!("cloud.inventory", region = %scope.region, selectors = scope.select.len());
            set.spawn(async move { cloud.inventory(&scope).await }.instrument(span));
        }
        let mut inv = Inventory::default();
        while let Some(joined) = set.join_next().await {
            let part = joined
                .map_err(|e| Error::task("reading the inventory", e))?
                .map_err(|e| Error::backend("reading the inventory", e))?;
            inv.merge(part);
        }
        Ok(inv)
    }

    /// Plans and reserves for `run` (the lease joins its holdings), with
    /// check-after-reserve and bounded retries; returns the plan and the
    /// attempts it took.
    ///
    /// A conflict only says other runs took some keys first: the retry plans
    /// again at once against the inventory already read (when younger than
    /// [`INVENTORY_REUSE`]) and a fresh read of the reservations; after
    /// [`EAGER_RETRIES`] conflicts, runs still colliding spread their next
    /// attempts over a window of a few of their own plan-and-reserve cycles.
    /// The inventory is read again for the check after a successful
    /// reserve, which keeps the guarantee: no run keeps a name or id the
    /// cloud showed as taken when it reserved; a clash found there plans
    /// again at once on that fresh read.
    pub(crate) async fn plan_and_reserve(
        &self,
        run: &Run,
        req: &CreateRequest,
        pillar: &Pillar,
        scopes: &[Scope],
    ) -> Result<(Plan, u32), Error> {
        let mut last = Vec::new();
        let mut inventory: Option<(Inventory, tokio::time::Instant)> = None;
        let grains = self.grain_ids().await?;
        for attempt in 1..=self.opts.max_attempts {
            let cycle = tokio::time::Instant::now();
            let owner = run.owner();
            let fresh = |(_, at): &(Inventory, tokio::time::Instant)| {
                self.opts.check_after_reserve && at.elapsed() < INVENTORY_REUSE
            };
            let inv = match inventory.take().filter(fresh) {
                Some(kept) => kept,
                None => (
                    self.read_inventory(scopes).await?,
                    tokio::time::Instant::now(),
                ),
            };
            let plan = self
                .compute_plan(run.cpid, req, pillar, (&inv.0, &grains), Some(&owner))
                .await?;
            if attempt == 1 {
                self.warn_clock(&plan);
            }
            inventory = Some(inv);
            let keys = plan.reservations.all();
            match self
                .reserver
                .try_reserve(&keys, &owner)
                .instrument(info_span!("reserver.reserve", keys = keys.len()))
                .await
            {
                Ok(lease) => {
                    run.holdings.hold(lease).await;
                    if !self.opts.check_after_reserve {
                        return Ok((plan, attempt));
                    }
                    let now = self.read_inventory(scopes).await?;
                    let clashes = taken_in(&plan, &now);
                    if clashes.is_empty() {
                        return Ok((plan, attempt));
                    }
                    info!(
                        attempt,
                        clashes = clashes.len(),
                        "reserved keys are already used in the cloud; planning again"
                    );
                    run.holdings.release(&keys, std::time::Duration::ZERO).await;
                    inventory = Some((now, tokio::time::Instant::now()));
                    last = clashes;
                }
                Err(ReserveError::Conflict(keys)) => {
                    info!(
                        attempt,
                        conflicts = keys.len(),
                        "reservation conflict; planning again"
                    );
                    last = keys;
                    if attempt >= EAGER_RETRIES {
                        // Runs that keep colliding planned from the same view:
                        // spread their next attempts over a window that
                        // doubles with each conflict, in units of this run's
                        // own plan-and-reserve cycle, so they take turns.
                        let doublings = (attempt + 1 - EAGER_RETRIES).min(16);
                        let window = cycle.elapsed() * (1u32 << doublings);
                        let spread = window.min(self.opts.backoff_max);
                        tokio::time::sleep(spread.mul_f64(rand::random::<f64>())).await;
                    }
                    continue;
                }
                Err(e) => return Err(super::reserve_failed("reserving names and ids", e)),
            }
            // A clash after reserving means the plan's inventory was older
            // than the cloud (another run launched, and released its keys,
            // since it was read); the next attempt plans on the fresh read,
            // so it goes at once: sleeping would only lengthen the tail.
        }
        Err(Error::RetriesExhausted {
            attempts: self.opts.max_attempts,
            keys: last,
        })
    }
}

/// Attempts retried at once after a conflict, before spreading out.
const EAGER_RETRIES: u32 = 2;

/// How long an inventory read serves the retries of one run.
const INVENTORY_REUSE: std::time::Duration = std::time::Duration::from_secs(10);

/// The launch settings of every role (or cluster member) `build` makes,
/// merged from provider, profile and role, must read as [`LaunchSettings`]:
/// a missing image is bad input before anything is reserved or written.
fn check_launch_settings(pillar: &Pillar, req: &CreateRequest, build: &Build) -> Result<(), Error> {
    let group = pillar.group(&req.group)?;
    for item in &build.items {
        let (BuildItem::Single { role, .. } | BuildItem::Cluster { role, .. }) = item;
        let spec = &group.roles[role];
        let path = format!("conductor.groups.{}.roles.{role}", req.group);
        let specs: Vec<(String, &RoleSpec)> = match &spec.cluster {
            None => vec![(path, spec)],
            Some(members) => members
                .iter()
                .map(|(m, s)| (format!("{path}.cluster.{m}"), s))
                .collect(),
        };
        for (path, spec) in specs {
            LaunchSettings::parse(&render::role_settings(group, spec))
                .map_err(|e| PillarError::new(path, e))?;
        }
    }
    Ok(())
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
        let Some((scope, n)) = IdScope::parse_key(key, &plan.env) else {
            continue;
        };
        let tag = scope.tag();
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
