//! Existing instances of a group, found through their EC2 tags: the
//! selection destroy, update and status act on, and `status` itself.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::cloud::{conductor_tag, Instance, InstanceState, Scope, Selector, NAME_TAG};
use crate::conductor::Conductor;
use crate::cpid::Cpid;
use crate::error::Error;
use crate::ids::IdScope;
use crate::input::InputError;
use crate::names::{Env, Group, Region, Role};
use crate::pillar::{GroupSpec, Pillar, RoleSpec};

/// Which existing instances of a group a command acts on.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Selection {
    /// Every instance of the group in the environment.
    All,
    /// Every instance of one run.
    Cpid(Cpid),
    /// Instances by name.
    Names(Vec<String>),
    /// Members of one cluster of `role`, by group-scoped cluster id.
    Cluster {
        /// Cluster role.
        role: Role,
        /// `<group>.<role>.cluster.id`.
        id: u32,
    },
    /// Instances of one system, by `<group>.system.id`.
    System(u32),
}

/// Existing instances of a group in an environment.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct InstanceQuery {
    /// Product group.
    pub group: Group,
    /// Pillar (and salt) environment.
    pub env: Env,
    /// Region to search; default every region of the environment in pillar.
    pub region: Option<Region>,
    /// Which instances.
    pub selection: Selection,
}

impl InstanceQuery {
    /// Server-side selectors for the selection.
    fn selectors(&self) -> Vec<Selector> {
        let tag = |k: String, v: String| Selector::Tag { key: k, value: v };
        match &self.selection {
            Selection::All => vec![tag(conductor_tag("group"), self.group.to_string())],
            Selection::Cpid(c) => vec![tag(conductor_tag("cpid"), c.to_string())],
            Selection::Names(names) => names
                .iter()
                .map(|n| tag(NAME_TAG.into(), n.clone()))
                .collect(),
            Selection::Cluster { role, id } => {
                let scope = IdScope::GroupCluster {
                    group: self.group.clone(),
                    role: role.clone(),
                };
                vec![tag(scope.tag(), id.to_string())]
            }
            Selection::System(id) => {
                let scope = IdScope::GroupSystem {
                    group: self.group.clone(),
                };
                vec![tag(scope.tag(), id.to_string())]
            }
        }
    }

    /// Whether `i` is selected: by name for `Names`, else by tag within the group and env.
    fn matches(&self, i: &Instance) -> bool {
        if let Selection::Names(names) = &self.selection {
            return i.name().is_some_and(|n| names.iter().any(|m| m == n));
        }
        i.conductor_tag("env") == Some(self.env.as_str())
            && i.conductor_tag("group") == Some(self.group.as_str())
            && self.selectors().iter().any(|s| s.matches(i))
    }

    fn describe(&self) -> String {
        match &self.selection {
            Selection::All => "all".into(),
            Selection::Cpid(c) => format!("cpid={c}"),
            Selection::Names(n) => format!("names={}", n.join(",")),
            Selection::Cluster { role, id } => format!("role={role} cluster_id={id}"),
            Selection::System(id) => format!("system_id={id}"),
        }
    }
}

/// One instance as `status` shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct InstanceStatus {
    /// Name (minion id); the instance id when it has no Name tag.
    pub name: String,
    /// Instance id.
    pub id: String,
    /// `conductor:role`.
    pub role: Option<String>,
    /// `conductor:member`, for cluster members.
    pub member: Option<String>,
    /// EC2 state.
    pub state: InstanceState,
    /// Availability zone.
    pub zone: String,
    /// The run that built it.
    pub cpid: Option<String>,
    /// Cluster ids (`<group>.<role>.cluster.id`, `cloud.<role>.cluster.id`).
    pub cluster_ids: BTreeMap<String, String>,
    /// System ids (`<group>.system.id`, `cloud.system.id`).
    pub system_ids: BTreeMap<String, String>,
    /// Launch time, epoch seconds.
    pub launch_time: Option<u64>,
}

impl InstanceStatus {
    fn of(i: &Instance) -> Self {
        let ids = |cluster: bool| -> BTreeMap<String, String> {
            i.tags
                .iter()
                .filter_map(|(k, v)| {
                    let (scope, _) = IdScope::parse_tag(k, v)?;
                    let is_cluster = matches!(
                        scope,
                        IdScope::GroupCluster { .. } | IdScope::CloudCluster { .. }
                    );
                    (is_cluster == cluster).then(|| (scope.grain(), v.clone()))
                })
                .collect()
        };
        Self {
            name: i.name().unwrap_or(&i.id).to_string(),
            id: i.id.clone(),
            role: i.conductor_tag("role").map(str::to_string),
            member: i.conductor_tag("member").map(str::to_string),
            state: i.state,
            zone: i.zone.clone(),
            cpid: i.conductor_tag("cpid").map(str::to_string),
            cluster_ids: ids(true),
            system_ids: ids(false),
            launch_time: i.launch_time,
        }
    }
}

/// The pillar spec an existing instance was built from, from its role and member tags.
pub(super) fn spec_of<'a>(group: &'a GroupSpec, i: &Instance) -> Option<&'a RoleSpec> {
    let role = group
        .roles
        .iter()
        .find(|(r, _)| Some(r.as_str()) == i.conductor_tag("role"))?
        .1;
    match (i.conductor_tag("member"), &role.cluster) {
        (Some(m), Some(members)) => members
            .iter()
            .find(|(r, _)| r.as_str() == m)
            .map(|(_, s)| s),
        _ => Some(role),
    }
}

impl Conductor {
    /// Loads pillar and finds the selected live instances, in name order.
    pub async fn find(&self, q: &InstanceQuery) -> Result<(Pillar, Vec<Instance>), Error> {
        let pillar = self.load_pillar(&q.env).await?;
        let env = pillar.environment(&q.env)?;
        pillar.group(&q.group)?;
        let regions: Vec<Region> = match &q.region {
            Some(r) => vec![r.clone()],
            None if !env.regions.is_empty() => env.regions.clone(),
            None => return Err(InputError::invalid(
                "region",
                "",
                "is required: give region=<zone>, or list regions under the environment in pillar",
            )
            .into()),
        };
        let select = q.selectors();
        let scopes: Vec<Scope> = regions
            .iter()
            .map(|r| Scope {
                region: r.clone(),
                select: select.clone(),
            })
            .collect();
        let inventory = self.read_inventory(&scopes).await?;
        let mut found: Vec<Instance> = inventory.live().filter(|i| q.matches(i)).cloned().collect();
        found.sort_by(|a, b| a.name().cmp(&b.name()).then(a.id.cmp(&b.id)));
        Ok((pillar, found))
    }

    pub(super) async fn find_some(
        &self,
        q: &InstanceQuery,
    ) -> Result<(Pillar, Vec<Instance>), Error> {
        let (pillar, found) = self.find(q).await?;
        if found.is_empty() {
            return Err(InputError::invalid(
                "selection",
                &q.describe(),
                &format!(
                    "matches no live instance of group {} in env {}",
                    q.group, q.env
                ),
            )
            .into());
        }
        Ok((pillar, found))
    }

    /// The selected instances as `status` shows them.
    pub async fn status(&self, q: &InstanceQuery) -> Result<Vec<InstanceStatus>, Error> {
        Ok(self
            .find(q)
            .await?
            .1
            .iter()
            .map(InstanceStatus::of)
            .collect())
    }
}
