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
use crate::reserve::{now_ms, Key, KeyKind, Owner, ReserveError};
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
        let held = this.unless_cancelled(this.held_keys(req, None)).await?;
        let plan = this.compute_plan(cpid, req, &pillar, (&inventory, &grains), &held)?;
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

    /// The keys held in the environments `req` plans in (names are keyed
    /// by the saltenv, ids by the pillarenv: one read when they are the
    /// same), other than by `own`'s run.
    async fn held_keys(
        &self,
        req: &CreateRequest,
        own: Option<&Owner>,
    ) -> Result<BTreeSet<Key>, Error> {
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
        Ok(held)
    }

    fn compute_plan(
        &self,
        cpid: Cpid,
        req: &CreateRequest,
        pillar: &Pillar,
        (inventory, grains): (&Inventory, &GrainIds),
        held: &BTreeSet<Key>,
    ) -> Result<Plan, Error> {
        let mut plan = compute(cpid, req, pillar, inventory, held, grains)?;
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
        self.unless_cancelled(self.read_inventory_now(scopes)).await
    }

    /// [`Conductor::read_inventory`] whatever the cancellation (dropped, the
    /// reads of the regions still running are aborted).
    async fn read_inventory_now(&self, scopes: &[Scope]) -> Result<Inventory, Error> {
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

    /// Plans and reserves for `run` (its leases join its holdings), with
    /// check-after-reserve and bounded retries; returns the plan and the
    /// attempts it took (an attempt is one fresh read of the reservations).
    ///
    /// Within an attempt, a conflict does not start over: the run
    /// [claims](Conductor::claim) the lowest free keys one at a time,
    /// planning again on what it learned, so runs that want the same names
    /// all settle in one pass instead of one winner per round. The
    /// inventory already read serves the next attempts while younger than
    /// [`INVENTORY_REUSE`]; it is read again for the check after every
    /// successful claim, which keeps the guarantee: no run keeps a name or
    /// id the cloud showed as taken when it reserved; a clash found there
    /// plans again at once on that fresh read. An attempt that gives up
    /// claiming (after [`CLAIM_STEPS`] steps) waits a jittered window of a
    /// few of its own cycles, doubling, before the next.
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
            let held = self.held_keys(req, Some(&owner)).await?;
            let claim = Claim {
                run,
                owner: &owner,
                req,
                pillar,
                seen: (&inv.0, &grains),
                attempt,
            };
            let claimed = self.claim(claim, held).await;
            inventory = Some(inv);
            let plan = match claimed? {
                Ok(plan) => plan,
                Err(lost) => {
                    info!(
                        attempt,
                        conflicts = lost.len(),
                        "reservations still conflicting; trying again from a fresh read"
                    );
                    last = lost;
                    // Spread the next attempts of runs that keep colliding
                    // over a window that doubles each time, in units of this
                    // run's own cycle, so they take turns.
                    let doublings = attempt.min(16);
                    let window = cycle.elapsed() * (1u32 << doublings);
                    let spread = window.min(self.opts.backoff_max);
                    tokio::time::sleep(spread.mul_f64(rand::random::<f64>())).await;
                    continue;
                }
            };
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
            run.holdings
                .release(&plan.reservations.all(), std::time::Duration::ZERO)
                .await;
            // The plan's inventory was older than the cloud (another run
            // launched, and released its keys, since it was read); the next
            // attempt plans on the fresh read, so it goes at once: sleeping
            // would only lengthen the tail.
            inventory = Some((now, tokio::time::Instant::now()));
            last = clashes;
        }
        Err(Error::RetriesExhausted {
            attempts: self.opts.max_attempts,
            keys: last,
        })
    }

    /// Reserves the keys of a plan, lowest free first: returns the plan
    /// once the run holds every key of it, or the keys it lost last when
    /// [`CLAIM_STEPS`] steps did not settle it or no plan was left beside
    /// the keys found taken (the run then holds none of them).
    ///
    /// The first step reserves the whole plan at once (one call: the common
    /// case of no contention). After a conflict, each step plans again with
    /// the keys found held added to `held`, keeps the keys it already won
    /// that the plan still wants (freeing the others), and reserves each
    /// missing key alone, ids first and names in index order, stopping at a
    /// lost id since the names of a cluster carry it. Every key then goes
    /// to the first run that asks, and a run that loses one asks for the
    /// next free one at once: the lowest free index is still what each run
    /// takes, and runs wanting the same names settle in one pass.
    async fn claim(
        &self,
        claim: Claim<'_>,
        mut held: BTreeSet<Key>,
    ) -> Result<Result<Plan, Vec<Key>>, Error> {
        let Claim {
            run,
            owner,
            req,
            pillar,
            seen,
            attempt,
        } = claim;
        let mut mine: BTreeSet<Key> = BTreeSet::new();
        let mut lost = Vec::new();
        for step in 0..CLAIM_STEPS {
            let plan = match self.compute_plan(run.cpid, req, pillar, seen, &held) {
                Ok(plan) => plan,
                // The first step plans on what was read: its error stands.
                // A later step fails only on the keys it found taken since
                // (every index left held, say): those may be freed soon, so
                // the attempt gives up and the next starts from a fresh read.
                Err(e) if step > 0 => {
                    info!(
                        attempt,
                        step, "no plan left beside the keys found taken: {e}"
                    );
                    break;
                }
                Err(e) => return Err(e),
            };
            if attempt == 1 && step == 0 {
                self.warn_clock(&plan);
            }
            let mut want = plan.reservations.ids.clone();
            want.extend(plan.reservations.names.iter().cloned());
            let unwanted: Vec<Key> = mine.iter().filter(|k| !want.contains(k)).cloned().collect();
            if !unwanted.is_empty() {
                run.holdings
                    .release(&unwanted, std::time::Duration::ZERO)
                    .await;
                mine.retain(|k| !unwanted.contains(k));
            }
            let missing: Vec<Key> = want.into_iter().filter(|k| !mine.contains(k)).collect();
            if missing.is_empty() {
                return Ok(Ok(plan));
            }
            let batches: Vec<&[Key]> = if step == 0 {
                vec![&missing]
            } else {
                missing.chunks(1).collect()
            };
            lost.clear();
            for keys in batches {
                match self
                    .reserver
                    .try_reserve(keys, owner)
                    .instrument(info_span!("reserver.reserve", keys = keys.len(), step))
                    .await
                {
                    Ok(lease) => {
                        mine.extend(lease.keys.iter().cloned());
                        run.holdings.hold(lease).await;
                    }
                    Err(ReserveError::Conflict(taken)) => {
                        let id = taken.iter().any(|k| k.kind() == KeyKind::Id);
                        held.extend(taken.iter().cloned());
                        lost.extend(taken);
                        if id {
                            break;
                        }
                    }
                    Err(e) => return Err(super::reserve_failed("reserving names and ids", e)),
                }
            }
            if lost.is_empty() {
                return Ok(Ok(plan));
            }
            info!(
                attempt,
                step,
                lost = lost.len(),
                "keys taken by another run; claiming the next free ones"
            );
        }
        let mine: Vec<Key> = mine.into_iter().collect();
        run.holdings.release(&mine, std::time::Duration::ZERO).await;
        Ok(Err(lost))
    }
}

/// What one [`Conductor::claim`] works from.
struct Claim<'a> {
    run: &'a Run,
    /// The run's owner record for this attempt (its reads left its keys out).
    owner: &'a Owner,
    req: &'a CreateRequest,
    pillar: &'a Pillar,
    /// The inventory and grain ids read.
    seen: (&'a Inventory, &'a GrainIds),
    /// Which attempt of the run this is (the first warns of clock skew).
    attempt: u32,
}

/// Steps of one claim before the attempt gives up and waits: each step
/// loses at least one key to another run, so this bounds the runs that can
/// take keys from under one run in one attempt.
const CLAIM_STEPS: u32 = 256;

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
        .flat_map(|i| plan.name_keys(&i.name).cloned())
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
