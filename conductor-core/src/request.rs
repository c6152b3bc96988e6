//! What a run is asked to build, and its resolution against pillar.

use serde::Serialize;

use crate::cpid::Cpid;
use crate::error::Error;
use crate::input::InputError;
use crate::names::{Env, Group, Role, SystemName, Zone};
use crate::pillar::{check_count, keys, Pillar, RoleSpec};
use crate::suggest::suggestion;

/// What to build: a system (set of roles) or one role.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Target {
    /// `system=<name>`.
    System(SystemName),
    /// `role=<name>` with an optional `count=`.
    Role {
        /// The role.
        role: Role,
        /// Instances (or clusters, for a cluster role), overriding pillar's `nodes`.
        count: Option<u32>,
    },
}

/// A `create` (or `plan`) request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CreateRequest {
    /// The product group.
    pub group: Group,
    /// Pillar environment.
    pub pillarenv: Env,
    /// Salt environment (names, minion environment); usually equal to `pillarenv`.
    pub saltenv: Env,
    /// Availability zone (the runner's `region=`).
    pub zone: Zone,
    /// What to build.
    pub target: Target,
    /// A fixed CPID instead of a fresh one (tests, reproducible plans).
    pub cpid: Option<Cpid>,
}

impl CreateRequest {
    /// A request with `saltenv` = `pillarenv` and a fresh CPID.
    pub fn new(group: Group, env: Env, zone: Zone, target: Target) -> Self {
        Self {
            group,
            saltenv: env.clone(),
            pillarenv: env,
            zone,
            target,
            cpid: None,
        }
    }

    /// The environments whose reservations the run touches: names are
    /// keyed by the saltenv, ids by the pillarenv (one when they are equal).
    pub fn envs(&self) -> std::collections::BTreeSet<&Env> {
        std::collections::BTreeSet::from([&self.saltenv, &self.pillarenv])
    }
}

/// One thing to build, resolved from pillar.
#[derive(Clone, Debug, PartialEq)]
pub enum BuildItem {
    /// `count` single instances of `role`.
    Single {
        /// The role.
        role: Role,
        /// How many.
        count: u32,
    },
    /// `clusters` new clusters of the cluster role `role`.
    Cluster {
        /// The cluster role.
        role: Role,
        /// How many clusters.
        clusters: u32,
    },
}

/// A request resolved against pillar.
#[derive(Clone, Debug, PartialEq)]
pub struct Build {
    /// The system, for a system run (its instances get system ids).
    pub system: Option<SystemName>,
    /// Items in pillar order.
    pub items: Vec<BuildItem>,
}

/// Resolves `system=` / `role=` / `count=` into what to build.
pub fn resolve(pillar: &Pillar, req: &CreateRequest) -> Result<Build, Error> {
    pillar.environment(&req.pillarenv)?;
    let group = pillar.group(&req.group)?;
    let role_spec = |role: &Role| -> Result<&RoleSpec, Error> {
        group.roles.get(role).ok_or_else(|| {
            InputError::invalid(
                "role",
                role.as_str(),
                &format!(
                    "group {} has no such role; it has: {}{}",
                    req.group,
                    keys(&group.roles),
                    suggestion(role.as_str(), group.roles.keys().map(Role::as_str))
                ),
            )
            .into()
        })
    };
    let item = |role: &Role, count: Option<u32>| -> Result<BuildItem, Error> {
        let spec = role_spec(role)?;
        if let Some(c) = count {
            check_count(c).map_err(|m| InputError::invalid("count", &c.to_string(), &m))?;
        }
        Ok(match spec.cluster {
            Some(_) => BuildItem::Cluster {
                role: role.clone(),
                clusters: count.unwrap_or(1),
            },
            None => BuildItem::Single {
                role: role.clone(),
                count: count.unwrap_or(spec.nodes),
            },
        })
    };
    match &req.target {
        Target::Role { role, count } => Ok(Build {
            system: None,
            items: vec![item(role, *count)?],
        }),
        Target::System(name) => {
            let entries = group.systems.get(name).ok_or_else(|| {
                InputError::invalid(
                    "system",
                    name.as_str(),
                    &format!(
                        "group {} has no such system; it has: {}{}",
                        req.group,
                        keys(&group.systems),
                        suggestion(name.as_str(), group.systems.keys().map(SystemName::as_str))
                    ),
                )
            })?;
            let items = entries
                .iter()
                .map(|e| item(&e.role, e.count))
                .collect::<Result<_, _>>()?;
            Ok(Build {
                system: Some(name.clone()),
                items,
            })
        }
    }
}
