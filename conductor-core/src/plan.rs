//! The naming and indexing engine: (request, inventory, reservations) -> plan.
//!
//! A pure function: the same inputs give the same plan.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;
use serde_json::{json, Value};

use crate::basename::Basename;
use crate::cloud::{conductor_tag, Instance, Inventory, Scope, Selector, NAME_TAG};
use crate::cpid::Cpid;
use crate::error::{Error, PlanError};
use crate::ids::IdScope;
use crate::names::{Env, Group, Region, Role, SystemName, Zone};
use crate::pillar::{GroupSpec, Pillar, RoleSpec};
use crate::request::{resolve, Build, BuildItem, CreateRequest};
use crate::reserve::Key;

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
}

impl Plan {
    /// The reservation key of one planned name (keyed by the env written
    /// into the name: the saltenv).
    pub fn name_key(&self, name: &str) -> Key {
        Key::name(&self.saltenv, name).expect("planned names are valid keys")
    }

    /// Names of the planned instances.
    pub fn names(&self) -> Vec<String> {
        self.instances.iter().map(|i| i.name.clone()).collect()
    }
}

/// The inventory reads a plan needs: in the run's region, instances whose
/// Name starts with a basename prefix or that carry an id tag in play; in
/// the other regions of the environment, instances carrying an id tag, and
/// those whose Name starts with the prefix of a basename without `REGION`
/// (its names are the same in every region, so every region must be free).
pub fn inventory_scopes(
    pillar: &Pillar,
    req: &CreateRequest,
    build: &Build,
) -> Result<Vec<Scope>, Error> {
    let group = pillar.group(&req.group)?;
    let env = pillar.environment(&req.pillarenv)?;
    let mut names = BTreeSet::new();
    let mut everywhere = BTreeSet::new();
    let mut tags = BTreeSet::new();
    let mut name = |b: &Basename| {
        names.insert(b.prefix().to_string());
        if !b.has_region() {
            everywhere.insert(b.prefix().to_string());
        }
    };
    for item in &build.items {
        match item {
            BuildItem::Single { role, .. } => name(basename_of(&group.roles[role])),
            BuildItem::Cluster { role, .. } => {
                for m in group.roles[role].cluster.iter().flat_map(|c| c.values()) {
                    name(basename_of(m));
                }
                tags.insert(
                    IdScope::GroupCluster {
                        group: req.group.clone(),
                        role: role.clone(),
                    }
                    .tag(),
                );
                tags.insert(IdScope::CloudCluster { role: role.clone() }.tag());
            }
        }
    }
    if build.system.is_some() {
        tags.insert(
            IdScope::GroupSystem {
                group: req.group.clone(),
            }
            .tag(),
        );
        tags.insert(IdScope::CloudSystem.tag());
    }
    let home = req.zone.region();
    let tag_selectors: Vec<Selector> = tags.into_iter().map(Selector::TagKey).collect();
    let elsewhere: Vec<Selector> = everywhere
        .into_iter()
        .map(Selector::NamePrefix)
        .chain(tag_selectors.iter().cloned())
        .collect();
    let mut scopes = vec![Scope {
        region: home.clone(),
        select: names
            .into_iter()
            .map(Selector::NamePrefix)
            .chain(tag_selectors)
            .collect(),
    }];
    if !elsewhere.is_empty() {
        for r in env.regions.iter().filter(|r| **r != home) {
            scopes.push(Scope {
                region: r.clone(),
                select: elsewhere.clone(),
            });
        }
    }
    Ok(scopes)
}

fn basename_of(spec: &RoleSpec) -> &Basename {
    spec.basename
        .as_ref()
        .expect("validated pillar: every buildable role has a basename")
}

/// Used indexes and ids, gathered once from inventory and reservations.
struct Used<'a> {
    req: &'a CreateRequest,
    domain: &'a str,
    /// Live names in AWS plus reserved names (without the `<env>_` prefix).
    names: BTreeSet<String>,
    /// Ids per scope, from tags and reservations.
    ids: BTreeMap<IdScope, BTreeSet<u32>>,
}

impl<'a> Used<'a> {
    fn gather(
        req: &'a CreateRequest,
        domain: &'a str,
        inventory: &Inventory,
        reserved: &BTreeSet<Key>,
    ) -> Self {
        let env = req.pillarenv.as_str();
        let mut names = BTreeSet::new();
        let mut ids: BTreeMap<IdScope, BTreeSet<u32>> = BTreeMap::new();
        for i in inventory.live() {
            if let Some(n) = i.name() {
                names.insert(n.to_string());
            }
            if i.conductor_tag("env") == Some(env) {
                collect_id_tags(i, &mut ids);
            }
        }
        for k in reserved {
            if let Some(name) = k.name_in(&req.saltenv) {
                names.insert(name.to_string());
            } else if let Some((scope, n)) = IdScope::parse_key(k, &req.pillarenv) {
                ids.entry(scope).or_default().insert(n);
            }
        }
        Self {
            req,
            domain,
            names,
            ids,
        }
    }

    fn indexes(&self, b: &Basename) -> BTreeSet<u32> {
        let (z, e) = (&self.req.zone, &self.req.saltenv);
        self.names
            .iter()
            .filter(|n| n.starts_with(b.prefix()))
            .filter_map(|n| b.parse_name(n, z, e, self.domain))
            .filter(|m| m.clid.is_none())
            .map(|m| m.index)
            .collect()
    }

    fn clids(&self, b: &Basename) -> BTreeSet<u32> {
        let (z, e) = (&self.req.zone, &self.req.saltenv);
        self.names
            .iter()
            .filter(|n| n.starts_with(b.prefix()))
            .filter_map(|n| b.parse_name(n, z, e, self.domain))
            .filter_map(|m| m.clid)
            .collect()
    }

    fn ids(&mut self, scope: &IdScope) -> &mut BTreeSet<u32> {
        self.ids.entry(scope.clone()).or_default()
    }
}

fn collect_id_tags(i: &Instance, ids: &mut BTreeMap<IdScope, BTreeSet<u32>>) {
    for (k, v) in &i.tags {
        if let Some((scope, n)) = IdScope::parse_tag(k, v) {
            ids.entry(scope).or_default().insert(n);
        }
    }
}

/// The lowest positive integer not in `used` and at most `max`.
fn lowest_free(used: &BTreeSet<u32>, max: u32) -> Option<u32> {
    let mut n = 1;
    for &u in used.range(1..) {
        if u > n {
            break;
        }
        if u == n {
            n += 1;
        }
    }
    (n <= max).then_some(n)
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
    let build = resolve(pillar, req)?;
    let group = pillar.group(&req.group)?;
    let env_spec = pillar.environment(&req.pillarenv)?;
    let mut used = Used::gather(req, &env_spec.domain, inventory, reserved);
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
    })
}

struct Planner<'a, 'u> {
    cpid: Cpid,
    req: &'a CreateRequest,
    group: &'a GroupSpec,
    used: &'u mut Used<'a>,
    instances: Vec<PlannedInstance>,
    keys: PlanKeys,
}

impl Planner<'_, '_> {
    fn take_id(&mut self, scope: &IdScope) -> Result<u32, Error> {
        let ids = self.used.ids(scope);
        let n = lowest_free(ids, u32::MAX - 1).ok_or_else(|| PlanError::NoFreeId {
            scope: scope.clone(),
        })?;
        ids.insert(n);
        self.keys.ids.push(scope.key(&self.req.pillarenv, n));
        Ok(n)
    }

    fn singles(
        &mut self,
        role: &Role,
        count: u32,
        system: Option<&SystemIds>,
    ) -> Result<(), Error> {
        let spec = &self.group.roles[role];
        let b = basename_of(spec);
        let mut taken = self.used.indexes(b);
        for _ in 0..count {
            let index = lowest_free(&taken, b.max_index()).ok_or_else(|| exhausted(b, role))?;
            taken.insert(index);
            self.push(role, None, spec, b, index, None, system)?;
        }
        Ok(())
    }

    fn cluster(&mut self, role: &Role, system: Option<&SystemIds>) -> Result<ClusterIds, Error> {
        let members = self.group.roles[role]
            .cluster
            .as_ref()
            .expect("cluster role");
        let gscope = IdScope::GroupCluster {
            group: self.req.group.clone(),
            role: role.clone(),
        };
        // Names carrying `.clid-N` mark N as used even on instances without tags.
        let from_names: BTreeSet<u32> = members
            .values()
            .flat_map(|m| self.used.clids(basename_of(m)))
            .collect();
        self.used.ids(&gscope).extend(from_names);
        let group_id = self.take_id(&gscope)?;
        let cloud_id = self.take_id(&IdScope::CloudCluster { role: role.clone() })?;
        let ids = ClusterIds {
            role: role.clone(),
            group_id,
            cloud_id,
        };
        for (member, spec) in members {
            let b = basename_of(spec);
            if spec.nodes > b.max_index() {
                return Err(exhausted(b, member));
            }
            for index in 1..=spec.nodes {
                self.push(role, Some(member), spec, b, index, Some(&ids), system)?;
            }
        }
        Ok(ids)
    }

    #[allow(clippy::too_many_arguments)]
    fn push(
        &mut self,
        role: &Role,
        member: Option<&Role>,
        spec: &RoleSpec,
        b: &Basename,
        index: u32,
        cluster: Option<&ClusterIds>,
        system: Option<&SystemIds>,
    ) -> Result<(), Error> {
        let req = self.req;
        let name = b.render(
            index,
            cluster.map(|c| c.group_id),
            &req.zone,
            &req.saltenv,
            self.used.domain,
        );
        if self.used.names.contains(&name) {
            return Err(PlanError::NameInUse { name }.into());
        }
        self.used.names.insert(name.clone());
        self.keys.names.push(Key::name(&req.saltenv, &name)?);

        let mut grains: BTreeMap<String, Value> = BTreeMap::new();
        for (k, v) in &spec.grains {
            if let Some(k) = k.as_str() {
                grains.insert(
                    k.to_string(),
                    serde_json::to_value(v).unwrap_or(Value::Null),
                );
            }
        }
        let mut tags: BTreeMap<String, String> = BTreeMap::new();
        for (k, v) in &spec.tags {
            if let (Some(k), Some(v)) = (k.as_str(), yaml_scalar(v)) {
                tags.insert(k.to_string(), v);
            }
        }
        grains.insert("cpid".into(), json!(self.cpid.to_string()));
        let mut id_grains: Vec<(IdScope, u32)> = Vec::new();
        if let Some(c) = cluster {
            id_grains.push((IdScope::CloudCluster { role: role.clone() }, c.cloud_id));
            id_grains.push((
                IdScope::GroupCluster {
                    group: req.group.clone(),
                    role: role.clone(),
                },
                c.group_id,
            ));
        }
        if let Some(s) = system {
            id_grains.push((IdScope::CloudSystem, s.cloud_id));
            id_grains.push((
                IdScope::GroupSystem {
                    group: req.group.clone(),
                },
                s.group_id,
            ));
        }
        tags.insert(NAME_TAG.into(), name.clone());
        tags.insert(conductor_tag("cpid"), self.cpid.to_string());
        tags.insert(conductor_tag("env"), req.pillarenv.to_string());
        tags.insert(conductor_tag("group"), req.group.to_string());
        tags.insert(conductor_tag("role"), role.to_string());
        if let Some(m) = member {
            tags.insert(conductor_tag("member"), m.to_string());
        }
        for (scope, n) in id_grains {
            grains.insert(scope.grain(), json!(n));
            tags.insert(scope.tag(), n.to_string());
        }
        self.instances.push(PlannedInstance {
            name,
            role: role.clone(),
            member: member.cloned(),
            index,
            cluster_id: cluster.map(|c| c.group_id),
            grains,
            tags,
        });
        Ok(())
    }
}

fn yaml_scalar(v: &serde_yaml::Value) -> Option<String> {
    match v {
        serde_yaml::Value::String(s) => Some(s.clone()),
        serde_yaml::Value::Number(n) => Some(n.to_string()),
        serde_yaml::Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn exhausted(b: &Basename, role: &Role) -> Error {
    PlanError::NoFreeIndex {
        role: role.clone(),
        basename: b.to_string(),
        max: b.max_index(),
    }
    .into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lowest_free_fills_gaps() {
        let s = |v: &[u32]| v.iter().copied().collect::<BTreeSet<u32>>();
        assert_eq!(lowest_free(&s(&[]), 99), Some(1));
        assert_eq!(lowest_free(&s(&[1, 2]), 99), Some(3));
        assert_eq!(lowest_free(&s(&[1, 3]), 99), Some(2));
        assert_eq!(lowest_free(&s(&[0, 2]), 99), Some(1));
        assert_eq!(lowest_free(&s(&[1, 2]), 2), None);
    }
}
