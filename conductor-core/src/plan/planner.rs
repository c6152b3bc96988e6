//! The planner: the lowest free indexes and ids, the names, grains, tags
//! and keys of each instance.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{json, Value};

use super::used::{lowest_free, Used};
use super::{basename_of, ClusterIds, PlanKeys, PlannedInstance, SystemIds};
use crate::basename::Basename;
use crate::cloud::{conductor_tag, NAME_TAG};
use crate::cpid::Cpid;
use crate::error::{Error, PlanError};
use crate::ids::IdScope;
use crate::names::Role;
use crate::pillar::{GroupSpec, RoleSpec};
use crate::request::CreateRequest;

pub(super) struct Planner<'a, 'u> {
    pub(super) cpid: Cpid,
    pub(super) req: &'a CreateRequest,
    pub(super) group: &'a GroupSpec,
    pub(super) used: &'u mut Used<'a>,
    pub(super) instances: Vec<PlannedInstance>,
    pub(super) keys: PlanKeys,
}

impl Planner<'_, '_> {
    pub(super) fn take_id(&mut self, scope: &IdScope) -> Result<u32, Error> {
        let ids = self.used.ids(scope);
        let n = lowest_free(ids, u32::MAX - 1).ok_or_else(|| PlanError::NoFreeId {
            scope: scope.clone(),
        })?;
        ids.insert(n);
        self.keys.ids.push(scope.key(&self.req.pillarenv, n));
        Ok(n)
    }

    pub(super) fn singles(
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

    pub(super) fn cluster(
        &mut self,
        role: &Role,
        system: Option<&SystemIds>,
    ) -> Result<ClusterIds, Error> {
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
        self.keys.names.extend(self.used.name_keys(&name)?);

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
