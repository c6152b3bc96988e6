//! Existing instances of a group, found through their EC2 tags: the
//! selection destroy, update and status act on, and `status` itself.

use std::collections::BTreeMap;
use std::fmt;

use serde::Serialize;
use tracing::{warn, Instrument};

use crate::cloud::{conductor_tag, Instance, InstanceState, Scope, Selector, NAME_TAG};
use crate::conductor::Conductor;
use crate::cpid::Cpid;
use crate::error::Error;
use crate::ids::IdScope;
use crate::input::InputError;
use crate::names::{check_instance_name, Env, Group, Region, Role};
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

    /// Whether `i` is Conductor's for this request: its `conductor:env` and
    /// `conductor:group` tags equal the request's.
    fn owns(&self, i: &Instance) -> bool {
        i.conductor_tag("env") == Some(self.env.as_str())
            && i.conductor_tag("group") == Some(self.group.as_str())
    }

    /// Whether `i` is selected: it matches the selector, and carries the
    /// request's env and group tags (for every selector, `Names` included).
    pub fn matches(&self, i: &Instance) -> bool {
        self.owns(i) && self.selectors().iter().any(|s| s.matches(i))
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

/// An instance a selection found but leaves alone, and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SkippedInstance {
    /// Its `Name` tag (quoted and escaped when it is not a valid instance
    /// name), or the requested name that matched nothing.
    pub name: String,
    /// Instance id, when an instance was found.
    pub id: Option<String>,
    /// Why it is left alone.
    pub reason: String,
}

impl fmt::Display for SkippedInstance {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.id {
            Some(id) => write!(f, "{} ({id}): {}", self.name, self.reason),
            None => write!(f, "{}: {}", self.name, self.reason),
        }
    }
}

/// A name read from EC2 as it may be shown: itself when it is a valid
/// instance name, else quoted with every unusual character escaped.
pub(crate) fn shown_name(name: &str) -> String {
    if check_instance_name("name", name).is_ok() {
        name.to_string()
    } else {
        format!("{name:?}")
    }
}

/// The instances a destroy, update or status acts on, and those it found
/// but leaves alone.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Selected {
    /// Live instances of the group and env that the selector matches and
    /// whose `Name` (when they have one) is a valid instance name, in name order.
    pub instances: Vec<Instance>,
    /// Instances (and requested names) left alone, with the reason: a name
    /// given in `names=` that belongs to something Conductor did not build
    /// for this group and env (or to nothing), or a `Name` tag that is not a
    /// valid instance name.
    pub skipped: Vec<SkippedInstance>,
}

impl Selected {
    /// The names (minion ids) of the selected instances that have one.
    pub fn names(&self) -> Vec<String> {
        self.instances
            .iter()
            .filter_map(|i| i.name().map(str::to_string))
            .collect()
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
    /// Instance type, when the cloud says.
    pub instance_type: Option<String>,
    /// Private IPv4 address, when it has one.
    pub private_ip: Option<String>,
    /// Whether its minion answered `test.ping` ([`Conductor::status_pinged`]);
    /// `None` when not asked (or not running).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub answers: Option<bool>,
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
            instance_type: i.instance_type.clone(),
            private_ip: i.private_ip.clone(),
            answers: None,
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
    /// Loads pillar and finds the selected live instances, in name order;
    /// what it leaves alone is in [`Selected::skipped`].
    pub(crate) async fn select_in(&self, q: &InstanceQuery) -> Result<(Pillar, Selected), Error> {
        let pillar = self.load_pillar(&q.env).await?;
        let env = pillar.environment(&q.env)?;
        pillar.group(&q.group)?;
        let regions = regions_to_search(q.region.as_ref(), &q.env, env)?;
        let select = q.selectors();
        let scopes: Vec<Scope> = regions
            .iter()
            .map(|r| Scope {
                region: r.clone(),
                select: select.clone(),
            })
            .collect();
        let inventory = self
            .in_env(&pillar, &q.env)
            .await?
            .read_inventory(&scopes)
            .await?;
        let mut out = Selected::default();
        let foreign = format!(
            "not built by Conductor for group {} in env {}",
            q.group, q.env
        );
        for i in inventory.live() {
            if !select.iter().any(|s| s.matches(i)) {
                continue;
            }
            if !q.owns(i) {
                // Only a name the operator gave is worth naming: other
                // selectors are Conductor's own tags, scoped by env and group.
                if let Selection::Names(_) = q.selection {
                    out.skipped.push(SkippedInstance {
                        name: shown_name(i.name().unwrap_or_default()),
                        id: Some(i.id.clone()),
                        reason: foreign.clone(),
                    });
                }
                continue;
            }
            if let Some(name) = i.name() {
                if let Err(e) = check_instance_name("Name tag", name) {
                    out.skipped.push(SkippedInstance {
                        name: shown_name(name),
                        id: Some(i.id.clone()),
                        reason: format!(
                            "its Name tag is not a valid instance name ({}); it is not passed to Salt",
                            e.reason
                        ),
                    });
                    continue;
                }
            }
            out.instances.push(i.clone());
        }
        if let Selection::Names(names) = &q.selection {
            for n in names {
                let seen = inventory.live().any(|i| i.name() == Some(n.as_str()));
                if !seen {
                    out.skipped.push(SkippedInstance {
                        name: shown_name(n),
                        id: None,
                        reason: "no live instance has this name".into(),
                    });
                }
            }
        }
        out.instances
            .sort_by(|a, b| a.name().cmp(&b.name()).then(a.id.cmp(&b.id)));
        out.skipped
            .sort_by(|a, b| (&a.name, &a.id).cmp(&(&b.name, &b.id)));
        Ok((pillar, out))
    }

    /// Loads pillar and finds the selected live instances, in name order
    /// (those left alone are logged; [`Conductor::select`] returns them).
    pub async fn find(&self, q: &InstanceQuery) -> Result<(Pillar, Vec<Instance>), Error> {
        let (pillar, selected) = self.select_in(q).await?;
        for s in &selected.skipped {
            warn!(instance = %s, "left alone");
        }
        Ok((pillar, selected.instances))
    }

    /// The instances a destroy or update of `q` acts on, and those it
    /// leaves alone. Selecting nothing is bad input, naming what was left
    /// alone.
    pub async fn select(&self, q: &InstanceQuery) -> Result<Selected, Error> {
        Ok(self.select_some(q).await?.1)
    }

    pub(super) async fn select_some(&self, q: &InstanceQuery) -> Result<(Pillar, Selected), Error> {
        let (pillar, selected) = self.select_in(q).await?;
        if selected.instances.is_empty() {
            let mut why = format!(
                "matches no live instance of group {} in env {}",
                q.group, q.env
            );
            if !selected.skipped.is_empty() {
                let left: Vec<String> = selected.skipped.iter().map(|s| s.to_string()).collect();
                why.push_str(&format!("; left alone: {}", left.join("; ")));
            }
            return Err(InputError::invalid("selection", &q.describe(), &why).into());
        }
        Ok((pillar, selected))
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

    /// [`status`](Self::status), with whether each running instance's
    /// minion answers `test.ping` (one ping of them all through Salt).
    /// Without a Salt executor it is bad input.
    pub async fn status_pinged(&self, q: &InstanceQuery) -> Result<Vec<InstanceStatus>, Error> {
        let Some(salt) = &self.salt else {
            return Err(InputError::invalid(
                "ping",
                "--ping",
                "asks the minions through Salt: leave out --no-salt",
            )
            .into());
        };
        let mut rows = self.status(q).await?;
        let running: Vec<String> = rows
            .iter()
            .filter(|r| r.state == InstanceState::Running)
            .map(|r| r.name.clone())
            .collect();
        if running.is_empty() {
            return Ok(rows);
        }
        let ping = async {
            salt.ping(&running)
                .instrument(tracing::info_span!("salt.ping", minions = running.len()))
                .await
                .map_err(|e| Error::backend("pinging the minions", e))
        };
        let answered = self.unless_cancelled(ping).await?;
        for r in rows.iter_mut().filter(|r| running.contains(&r.name)) {
            r.answers = Some(answered.contains(&r.name));
        }
        Ok(rows)
    }
}

/// The regions a search covers: `region`, else every region the
/// environment lists in pillar (one of them is required).
pub(crate) fn regions_to_search(
    region: Option<&Region>,
    env_name: &Env,
    env: &crate::pillar::EnvironmentSpec,
) -> Result<Vec<Region>, Error> {
    match region {
        Some(r) => {
            env.check_region(env_name, r.as_str(), r)?;
            Ok(vec![r.clone()])
        }
        None if !env.regions.is_empty() => Ok(env.regions.clone()),
        None => Err(InputError::invalid(
            "region",
            "",
            "is required: give region=<zone>, or list regions under the environment in pillar",
        )
        .into()),
    }
}
