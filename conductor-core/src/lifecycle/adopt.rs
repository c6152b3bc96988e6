//! `adopt`: gives instances the Python runner built (a `Name` tag, their
//! ids as grains) the `conductor:*` tags Conductor would have written, so
//! EC2 alone holds their ids from then on.

use std::collections::BTreeMap;

use serde::Serialize;
use tracing::{info_span, Instrument};

use crate::adopt_error::AdoptError;
use crate::basename::Basename;
use crate::cloud::{conductor_tag, Instance, InstanceTags, Scope, Selector};
use crate::conductor::Conductor;
use crate::cpid::Cpid;
use crate::error::Error;
use crate::grains::{name_env, GrainIds, MinionIds, NameEnv};
use crate::ids::IdScope;
use crate::names::{Env, Group, Region, Role, Zone};
use crate::pillar::{GroupSpec, Pillar};

/// Which instances to adopt: those of a group and env without Conductor's tags.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct AdoptRequest {
    /// Product group.
    pub group: Group,
    /// Pillar environment (the `conductor:env` tag written).
    pub env: Env,
    /// Salt environment written into the names (usually `env`).
    pub saltenv: Env,
    /// Region to search; default every region of the environment in pillar.
    pub region: Option<Region>,
    /// Write the tags (CreateTags); without it, only list them.
    pub apply: bool,
}

/// One instance to adopt and the tags it gets.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Adoption {
    /// Its `Name`.
    pub name: String,
    /// Instance id.
    pub id: String,
    /// Its region.
    pub region: Region,
    /// The tags it gets (`conductor:*`).
    pub tags: BTreeMap<String, String>,
    /// The grains (from the master's cache) the tags were read from; none:
    /// its ids are unknown, and `apply` refuses.
    pub from_grains: Vec<String>,
}

/// What `adopt` found (and wrote, when applied).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct AdoptReport {
    /// Product group.
    pub group: Group,
    /// Pillar environment.
    pub env: Env,
    /// Whether the tags were written.
    pub applied: bool,
    /// The instances without Conductor's tags, with the tags they get.
    pub instances: Vec<Adoption>,
}

/// One instance's claim on an id.
struct Claim {
    name: String,
    cpid: Option<Cpid>,
    from: &'static str,
}

impl Conductor {
    /// Lists (and with `apply`, tags) the live instances of the group and
    /// env that lack Conductor's tags: role and index from their `Name`
    /// through the pillar's basenames, the group cluster id from
    /// `.clid-N`, `cpid` and the ids from the master's cached grains.
    /// Refuses, naming both, when two instances of different runs claim
    /// one id in one scope, and when a name matches no basename. `apply`
    /// also refuses without the grains cache (no Salt, or
    /// [`Options::read_grains`](crate::Options::read_grains) off) and
    /// for instances whose minion's cached grains give no `cpid` or id:
    /// tags without their ids would hide those ids from planning. Nothing
    /// is written when it refuses, nor once the conductor's cancellation
    /// fired ([`Error::Interrupted`]: the reads stop at once).
    pub async fn adopt(&self, req: &AdoptRequest) -> Result<AdoptReport, Error> {
        let pillar = self.load_pillar(&req.env).await?;
        let env = pillar.environment(&req.env)?;
        let group = pillar.group(&req.group)?;
        let regions = super::select::regions_to_search(req.region.as_ref(), &req.env, env)?;
        let grains_read = self.salt.is_some() && self.opts.read_grains;
        if req.apply && !grains_read {
            let why = if self.salt.is_none() {
                "Salt is off (--no-salt)"
            } else {
                "reading grains is off (--no-grains)"
            };
            return Err(AdoptError::GrainsNotRead { why: why.into() }.into());
        }
        let patterns = basenames(group);
        let select: Vec<Selector> = patterns
            .iter()
            .map(|(_, _, b)| Selector::NamePrefix(b.prefix().to_string()))
            .chain(
                id_scopes(&req.group, group)
                    .iter()
                    .map(|s| Selector::TagKey(s.tag())),
            )
            .collect();
        let scopes: Vec<Scope> = regions
            .into_iter()
            .map(|region| Scope {
                region,
                select: select.clone(),
            })
            .collect();
        let this = self.in_env(&pillar, &req.env).await?;
        let inventory = this.read_inventory(&scopes).await?;
        let grains = self.grain_ids().await?;
        let no_grains = MinionIds::default();

        let mut claims: BTreeMap<(IdScope, u32), Vec<Claim>> = BTreeMap::new();
        let mut instances = Vec::new();
        let untagged = |i: &&Instance| i.conductor_tag("env").is_none();
        for i in inventory.live() {
            let Some(name) = i.name() else { continue };
            if untagged(&i) {
                match name_env(name, req.saltenv.as_str(), &env.domain, &pillar) {
                    NameEnv::Other => continue, // another env's instance
                    NameEnv::Unlabeled => refuse_unlabeled(&pillar, &env.domain, name, i)?,
                    NameEnv::Labeled => {}
                }
                let m = grains.minion(name).unwrap_or(&no_grains);
                let a = derive(req, &patterns, &env.domain, i, m)?;
                for (k, v) in &a.tags {
                    if let Some((scope, n)) = IdScope::parse_tag(k, v) {
                        claims.entry((scope, n)).or_default().push(Claim {
                            name: name.into(),
                            cpid: m.cpid,
                            from: "its name and grains",
                        });
                    }
                }
                instances.push(a);
            } else if i.conductor_tag("env") == Some(req.env.as_str()) {
                for (k, v) in &i.tags {
                    if let Some(key) = IdScope::parse_tag(k, v) {
                        claims.entry(key).or_default().push(Claim {
                            name: name.into(),
                            cpid: i.cpid(),
                            from: "its conductor tags",
                        });
                    }
                }
            }
        }
        claim_other_minions(&mut claims, &grains, req, &env.domain, &pillar, &instances);
        check_claims(&claims)?;
        let uncached: Vec<String> = instances
            .iter()
            .filter(|a| a.from_grains.is_empty())
            .map(|a| format!("{} ({})", a.name, a.id))
            .collect();
        if req.apply && !uncached.is_empty() {
            return Err(AdoptError::NoCachedGrains {
                instances: uncached.join(", "),
            }
            .into());
        }
        if req.apply && !instances.is_empty() {
            // A signal during the reads above: nothing is written.
            if self.cancel.is_cancelled() {
                return Err(Error::Interrupted);
            }
            let tags: Vec<InstanceTags> = instances
                .iter()
                .map(|a| InstanceTags {
                    instance: crate::cloud::InstanceRef {
                        id: a.id.clone(),
                        region: a.region.clone(),
                        name: Some(a.name.clone()),
                    },
                    tags: a.tags.clone(),
                })
                .collect();
            this.cloud
                .tag_instances(&tags)
                .instrument(info_span!("cloud.tag_instances", instances = tags.len()))
                .await
                .map_err(|e| Error::backend("writing the tags of adopted instances", e))?;
        }
        Ok(AdoptReport {
            group: req.group.clone(),
            env: req.env.clone(),
            applied: req.apply,
            instances,
        })
    }
}

/// The basename of every role and cluster member of `group`, with the role
/// (the cluster role for a member) and the member.
fn basenames(group: &GroupSpec) -> Vec<(Role, Option<Role>, &Basename)> {
    let mut out = Vec::new();
    for (role, spec) in &group.roles {
        if let Some(b) = &spec.basename {
            out.push((role.clone(), None, b));
        }
        for (member, m) in spec.cluster.iter().flatten() {
            if let Some(b) = &m.basename {
                out.push((role.clone(), Some(member.clone()), b));
            }
        }
    }
    // Longest prefix first: `devops-nifi-dummy-` before `devops-nifi-`.
    out.sort_by_key(|(_, _, b)| std::cmp::Reverse(b.prefix().len()));
    out
}

/// The id scopes of `group`: both system scopes and both of each cluster role.
fn id_scopes(g: &Group, group: &GroupSpec) -> Vec<IdScope> {
    let mut out = vec![
        IdScope::GroupSystem { group: g.clone() },
        IdScope::CloudSystem,
    ];
    for (role, spec) in &group.roles {
        if spec.cluster.is_some() {
            out.push(IdScope::GroupCluster {
                group: g.clone(),
                role: role.clone(),
            });
            out.push(IdScope::CloudCluster { role: role.clone() });
        }
    }
    out
}

/// An instance whose name carries no environment label is the env's only
/// when no other environment of the pillar shares its domain; otherwise
/// adopt cannot tell whose it is and refuses, naming it.
fn refuse_unlabeled(pillar: &Pillar, domain: &str, name: &str, i: &Instance) -> Result<(), Error> {
    let envs: Vec<&str> = pillar
        .environments
        .iter()
        .filter(|(_, spec)| spec.domain == domain)
        .map(|(e, _)| e.as_str())
        .collect();
    if envs.len() > 1 {
        return Err(AdoptError::UnknownEnv {
            name: name.into(),
            id: i.id.clone(),
            envs: envs.join(", "),
        }
        .into());
    }
    Ok(())
}

/// The tags of one untagged instance, from its name and its minion's grains.
fn derive(
    req: &AdoptRequest,
    patterns: &[(Role, Option<Role>, &Basename)],
    domain: &str,
    i: &Instance,
    m: &MinionIds,
) -> Result<Adoption, Error> {
    let name = i.name().unwrap_or_default();
    let no_basename = || AdoptError::NoBasename {
        name: name.into(),
        id: i.id.clone(),
        group: req.group.clone(),
    };
    let zone = Zone::new(&i.zone).map_err(|_| no_basename())?;
    let (role, member, found) = patterns
        .iter()
        .find_map(|(r, mem, b)| Some((r, mem, b.parse_name(name, &zone, &req.saltenv, domain)?)))
        .ok_or_else(no_basename)?;
    let mut tags = BTreeMap::new();
    let mut from_grains = Vec::new();
    tags.insert(conductor_tag("env"), req.env.to_string());
    tags.insert(conductor_tag("group"), req.group.to_string());
    tags.insert(conductor_tag("role"), role.to_string());
    if let Some(mem) = member {
        tags.insert(conductor_tag("member"), mem.to_string());
    }
    if let Some(c) = m.cpid {
        tags.insert(conductor_tag("cpid"), c.to_string());
        from_grains.push("cpid".to_string());
    }
    let group_cluster = IdScope::GroupCluster {
        group: req.group.clone(),
        role: role.clone(),
    };
    let mine = |s: &IdScope| match s {
        IdScope::GroupCluster { group, role: r } => {
            member.is_some() && *group == req.group && r == role
        }
        IdScope::CloudCluster { role: r } => member.is_some() && r == role,
        IdScope::GroupSystem { group } => *group == req.group,
        IdScope::CloudSystem => true,
    };
    for (scope, n) in m.ids.iter().filter(|(s, _)| mine(s)) {
        if *scope == group_cluster && found.clid.is_some_and(|c| c != *n) {
            return Err(AdoptError::Conflict {
                scope: scope.clone(),
                n: *n,
                first: name.into(),
                first_from: "its grain".into(),
                second: name.into(),
                second_from: format!("its name's .clid-{}", found.clid.unwrap_or_default()),
            }
            .into());
        }
        tags.insert(scope.tag(), n.to_string());
        from_grains.push(scope.grain());
    }
    if let (Some(c), Some(_)) = (found.clid, member) {
        tags.insert(group_cluster.tag(), c.to_string());
    }
    Ok(Adoption {
        name: name.into(),
        id: i.id.clone(),
        region: i.region.clone(),
        tags,
        from_grains,
    })
}

/// Claims of cached minions of the env that are neither adopted now nor
/// tagged (another group's, or not in the inventory read).
fn claim_other_minions(
    claims: &mut BTreeMap<(IdScope, u32), Vec<Claim>>,
    grains: &GrainIds,
    req: &AdoptRequest,
    domain: &str,
    pillar: &Pillar,
    adopted: &[Adoption],
) {
    for g in grains.in_env(req.saltenv.as_str(), domain, pillar) {
        let key = (g.scope.clone(), g.id);
        let entry = claims.entry(key).or_default();
        if adopted.iter().any(|a| a.name == g.minion) || entry.iter().any(|c| c.name == g.minion) {
            continue;
        }
        entry.push(Claim {
            cpid: grains.minion(&g.minion).and_then(|m| m.cpid),
            name: g.minion,
            from: "its cached grains",
        });
    }
}

/// Refuses the first id claimed by instances of two different runs.
fn check_claims(claims: &BTreeMap<(IdScope, u32), Vec<Claim>>) -> Result<(), Error> {
    for ((scope, n), list) in claims {
        for (k, a) in list.iter().enumerate() {
            if let Some(b) = list[k + 1..].iter().find(|b| {
                b.name != a.name && b.cpid != a.cpid && (a.cpid.is_some() || b.cpid.is_some())
            }) {
                return Err(AdoptError::Conflict {
                    scope: scope.clone(),
                    n: *n,
                    first: a.name.clone(),
                    first_from: a.from.into(),
                    second: b.name.clone(),
                    second_from: b.from.into(),
                }
                .into());
            }
        }
    }
    Ok(())
}
