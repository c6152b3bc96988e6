//! The naming and indexing engine: (request, inventory, reservations) -> plan.
//!
//! A pure function: the same inputs give the same plan. `scopes` says what
//! to read from the cloud, `used` gathers the names and ids in use,
//! `planner` chooses the lowest free ones.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;
use serde_json::Value;

use crate::cloud::Inventory;
use crate::cpid::Cpid;
use crate::error::{Error, PlanError};
use crate::grains::{GrainId, GrainIds};
use crate::ids::IdScope;
use crate::names::{Env, Group, Region, Role, SystemName, Zone};
use crate::pillar::Pillar;
use crate::request::{resolve, BuildItem, CreateRequest};
use crate::reserve::Key;

pub(crate) mod limits;
mod planner;
mod scopes;
mod used;

use planner::Planner;
pub use scopes::inventory_scopes;
use used::Used;

/// Most instances one run may build.
pub const MAX_INSTANCES_PER_RUN: usize = 1000;

/// The ids of one new cluster.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ClusterIds {
    /// The cluster role.
    pub role: Role,
    /// `<group>.<role>.cluster.id` (also the `.clid-N` of member names).
    pub group_id: u32,
    /// `cloud.<role>.cluster.id`.
    pub cloud_id: u32,
}

/// The ids of a system run.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SystemIds {
    /// The system built.
    pub name: SystemName,
    /// `<group>.system.id`.
    pub group_id: u32,
    /// `cloud.system.id`.
    pub cloud_id: u32,
}

/// One instance the run will build.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PlannedInstance {
    /// Fully qualified name (Name tag and minion id).
    pub name: String,
    /// The pillar role (for a cluster member, the cluster role).
    pub role: Role,
    /// The cluster member, for cluster instances.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub member: Option<Role>,
    /// The index in the name.
    pub index: u32,
    /// The group-scoped cluster id (`.clid-N`), for cluster members.
    pub cluster_id: Option<u32>,
    /// Grains the minion gets.
    pub grains: BTreeMap<String, Value>,
    /// EC2 tags the instance gets.
    pub tags: BTreeMap<String, String>,
}

/// Keys a plan reserves.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct PlanKeys {
    /// Name keys.
    pub names: Vec<Key>,
    /// Id keys.
    pub ids: Vec<Key>,
}

impl PlanKeys {
    /// Names then ids.
    pub fn all(&self) -> Vec<Key> {
        self.names.iter().chain(&self.ids).cloned().collect()
    }
}

/// Files a run writes (set once the layout is known).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PlanFiles {
    /// Provider file.
    pub provider: std::path::PathBuf,
    /// Profile file.
    pub profile: std::path::PathBuf,
    /// Map file.
    pub map: std::path::PathBuf,
}

/// What one run builds: names, ids, grains and keys.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Plan {
    /// The run's CPID.
    pub cpid: Cpid,
    /// Product group.
    pub group: Group,
    /// Pillar environment.
    pub env: Env,
    /// Salt environment.
    pub saltenv: Env,
    /// Availability zone.
    pub zone: Zone,
    /// Region of the zone.
    pub region: Region,
    /// System ids, for a system run.
    pub system: Option<SystemIds>,
    /// New clusters.
    pub clusters: Vec<ClusterIds>,
    /// Instances to build.
    pub instances: Vec<PlannedInstance>,
    /// Keys to reserve.
    pub reservations: PlanKeys,
    /// Files the run writes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub files: Option<PlanFiles>,
    /// Ids in the scopes this plan takes ids in that were found used only
    /// through the master's grains cache (instances without Conductor's tags).
    pub ids_from_grains: Vec<GrainId>,
    /// This host's clock against the cloud's, when it is off by more than
    /// a quarter of the release grace (a warning; beyond the grace the run
    /// refuses).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub clock_skew: Option<crate::clock::ClockSkew>,
}

impl Plan {
    /// The reservation keys of one planned name: under the env written into
    /// the name (the saltenv), and under every other env of the pillar that
    /// could make the same name (a basename without `ENV`, a shared domain).
    pub fn name_keys<'p>(&'p self, name: &'p str) -> impl Iterator<Item = &'p Key> + 'p {
        self.reservations
            .names
            .iter()
            .filter(move |k| k.fqdn() == Some(name))
    }

    /// The keys a launch of the instances named by `pick` stands on: their
    /// names' keys and every id key one of them carries (what a batch must
    /// still hold when it launches).
    pub(crate) fn keys_used_by(&self, pick: impl Fn(&str) -> bool) -> Vec<Key> {
        let mut keys = self.name_keys_of(&pick);
        keys.extend(
            self.id_holders()
                .filter(|(_, holders)| holders.iter().any(|i| pick(&i.name)))
                .map(|(key, _)| key.clone()),
        );
        keys
    }

    /// The keys only the instances named by `pick` stand on: their names'
    /// keys and each id key all of whose holders they are (what can be
    /// released once those instances settled).
    pub(crate) fn keys_only_of(&self, pick: impl Fn(&str) -> bool) -> Vec<Key> {
        let mut keys = self.name_keys_of(&pick);
        keys.extend(
            self.id_holders()
                .filter(|(_, holders)| holders.iter().all(|i| pick(&i.name)))
                .map(|(key, _)| key.clone()),
        );
        keys
    }

    fn name_keys_of(&self, pick: &impl Fn(&str) -> bool) -> Vec<Key> {
        self.instances
            .iter()
            .filter(|i| pick(&i.name))
            .flat_map(|i| self.name_keys(&i.name).cloned())
            .collect()
    }

    /// Each id key of the plan with the planned instances carrying its id.
    fn id_holders(&self) -> impl Iterator<Item = (&Key, Vec<&PlannedInstance>)> + '_ {
        self.reservations.ids.iter().filter_map(|key| {
            let (scope, n) = IdScope::parse_key(key, &self.env)?;
            let grain = scope.grain();
            let holders = self
                .instances
                .iter()
                .filter(|i| i.grains.get(&grain).and_then(|v| v.as_u64()) == Some(u64::from(n)))
                .collect();
            Some((key, holders))
        })
    }

    /// Names of the planned instances.
    pub fn names(&self) -> Vec<String> {
        self.instances.iter().map(|i| i.name.clone()).collect()
    }
}

/// Computes the plan of `req` for `cpid` given what AWS shows and what other
/// runs hold (`reserved`: their keys; expired and own keys excluded by the caller).
pub fn plan(
    cpid: Cpid,
    req: &CreateRequest,
    pillar: &Pillar,
    inventory: &Inventory,
    reserved: &BTreeSet<Key>,
) -> Result<Plan, Error> {
    plan_with_grains(cpid, req, pillar, inventory, reserved, &GrainIds::default())
}

/// [`plan`], also counting the ids the master's grains cache shows for
/// minions whose instances lack Conductor's tags.
pub fn plan_with_grains(
    cpid: Cpid,
    req: &CreateRequest,
    pillar: &Pillar,
    inventory: &Inventory,
    reserved: &BTreeSet<Key>,
    grains: &GrainIds,
) -> Result<Plan, Error> {
    let build = resolve(pillar, req)?;
    let group = pillar.group(&req.group)?;
    let env_spec = pillar.environment(&req.pillarenv)?;
    let mut used = Used::gather(req, &env_spec.domain, inventory, reserved, grains, pillar);
    let mut planner = Planner {
        cpid,
        req,
        group,
        used: &mut used,
        instances: Vec::new(),
        keys: PlanKeys::default(),
    };

    let system = match &build.system {
        Some(name) => {
            let group_id = planner.take_id(&IdScope::GroupSystem {
                group: req.group.clone(),
            })?;
            let cloud_id = planner.take_id(&IdScope::CloudSystem)?;
            Some(SystemIds {
                name: name.clone(),
                group_id,
                cloud_id,
            })
        }
        None => None,
    };
    let mut clusters = Vec::new();
    for item in &build.items {
        match item {
            BuildItem::Single { role, count } => planner.singles(role, *count, system.as_ref())?,
            BuildItem::Cluster { role, clusters: n } => {
                for _ in 0..*n {
                    clusters.push(planner.cluster(role, system.as_ref())?);
                }
            }
        }
        if planner.instances.len() > MAX_INSTANCES_PER_RUN {
            return Err(PlanError::TooManyInstances {
                max: MAX_INSTANCES_PER_RUN,
            }
            .into());
        }
    }
    let Planner {
        instances, keys, ..
    } = planner;
    for i in &instances {
        limits::check_tags(&i.name, &i.tags)?;
    }
    let taken: BTreeSet<IdScope> = keys
        .ids
        .iter()
        .filter_map(|k| IdScope::parse_key(k, &req.pillarenv).map(|(s, _)| s))
        .collect();
    let ids_from_grains = std::mem::take(&mut used.from_grains)
        .into_iter()
        .filter(|g| taken.contains(&g.scope))
        .collect();
    Ok(Plan {
        cpid,
        group: req.group.clone(),
        env: req.pillarenv.clone(),
        saltenv: req.saltenv.clone(),
        zone: req.zone.clone(),
        region: req.zone.region(),
        system,
        clusters,
        instances,
        reservations: keys,
        files: None,
        ids_from_grains,
        clock_skew: None,
    })
}

/// The basename of a buildable role (validated pillar: every one has one).
fn basename_of(spec: &crate::pillar::RoleSpec) -> &crate::basename::Basename {
    spec.basename
        .as_ref()
        .expect("validated pillar: every buildable role has a basename")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::request::Target;

    /// A nifi cluster of two members (one cluster id pair) and one activemq.
    fn cluster_plan() -> Plan {
        let pillar = Pillar::from_yaml_str(
            r#"
conductor:
  environments:
    test: {domain: foobar.com}
  groups:
    devops:
      provider: {size: t3.small}
      profile: {image: ami-0abc}
      roles:
        activemq: {basename: devops-mqXX.REGION.ENV, nodes: 1}
        nifi:
          cluster:
            nifi: {basename: devops-nifi-XX.REGION.ENV, nodes: 2}
      systems:
        small: [{role: nifi}, {role: activemq}]
"#,
        )
        .unwrap();
        let req = CreateRequest::new(
            Group::new("devops").unwrap(),
            Env::new("test").unwrap(),
            Zone::new("us-east-1a").unwrap(),
            Target::System(SystemName::new("small").unwrap()),
        );
        plan(
            Cpid::from_parts(1, 2),
            &req,
            &pillar,
            &Inventory::default(),
            &BTreeSet::new(),
        )
        .unwrap()
    }

    fn names(keys: &[Key]) -> Vec<String> {
        let mut v: Vec<String> = keys.iter().map(|k| k.to_string()).collect();
        v.sort();
        v
    }

    /// A batch stands on every id one of its instances carries; an id is
    /// released only once all its holders settled.
    #[test]
    fn keys_used_by_a_batch_and_keys_only_of_settled_instances() {
        let plan = cluster_plan();
        let first = plan
            .instances
            .iter()
            .find(|i| i.name.starts_with("devops-nifi-01"))
            .unwrap();
        let used = names(&plan.keys_used_by(|n| n == first.name));
        assert!(
            used.iter().any(|k| k.contains(".nifi.cluster.id.")),
            "{used:?}"
        );
        assert!(used.iter().any(|k| k.contains("system.id.")), "{used:?}");
        assert!(used.iter().any(|k| k.ends_with(&first.name)), "{used:?}");
        assert!(
            !used.iter().any(|k| k.contains("devops-nifi-02")),
            "{used:?}"
        );
        let only = names(&plan.keys_only_of(|n| n == first.name));
        assert_eq!(
            only.len(),
            1,
            "only the name key of {}: {only:?}",
            first.name
        );
        let all = names(&plan.keys_only_of(|_| true));
        let every: Vec<String> = names(
            &plan
                .reservations
                .names
                .iter()
                .chain(&plan.reservations.ids)
                .cloned()
                .collect::<Vec<_>>(),
        );
        assert_eq!(all, every);
    }
}
