//! Commands on existing instances, found through their EC2 tags: destroy,
//! update (re-apply startup states) and status.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::Serialize;
use serde_json::json;
use tracing::{info_span, warn, Instrument};

use super::{write_json_log, Conductor, Provisioner};
use crate::cloud::{
    conductor_tag, Instance, InstanceRef, InstanceState, Scope, Selector, NAME_TAG,
};
use crate::cpid::Cpid;
use crate::error::{Error, InputError};
use crate::layout::log_rand;
use crate::names::{Env, Group, Region, Role};
use crate::pillar::{GroupSpec, Pillar, RoleSpec};
use crate::salt::StateFailure;

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
                vec![tag(
                    conductor_tag(&format!("{}.{role}.cluster.id", self.group)),
                    id.to_string(),
                )]
            }
            Selection::System(id) => vec![tag(
                conductor_tag(&format!("{}.system.id", self.group)),
                id.to_string(),
            )],
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

/// What a destroy run did.
#[derive(Clone, Debug, Serialize)]
pub struct DestroyReport {
    /// The destroy run's own CPID.
    pub cpid: Cpid,
    /// Instances terminated (names, or ids when unnamed).
    pub destroyed: Vec<String>,
    /// Failures reported by the provisioner.
    pub failed: Vec<(String, String)>,
    /// Failed hook states.
    pub state_failures: Vec<StateFailure>,
    /// Steps skipped, and why.
    pub skipped: Vec<String>,
    /// Files written by the run.
    pub logs: Vec<PathBuf>,
}

impl DestroyReport {
    /// True when everything selected was destroyed and hooks succeeded.
    pub fn success(&self) -> bool {
        self.failed.is_empty() && self.state_failures.is_empty()
    }
}

/// What an update run did.
#[derive(Clone, Debug, Serialize)]
pub struct UpdateReport {
    /// The update run's own CPID.
    pub cpid: Cpid,
    /// Minions whose startup states were re-applied.
    pub targets: Vec<String>,
    /// Failed states.
    pub state_failures: Vec<StateFailure>,
    /// Steps skipped, and why.
    pub skipped: Vec<String>,
    /// Files written by the run.
    pub logs: Vec<PathBuf>,
}

impl UpdateReport {
    /// True when every state succeeded.
    pub fn success(&self) -> bool {
        self.state_failures.is_empty()
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
        let ids = |kind: &str| -> BTreeMap<String, String> {
            i.tags
                .iter()
                .filter_map(|(k, v)| {
                    let grain = k.strip_prefix(crate::cloud::TAG_PREFIX)?;
                    grain
                        .ends_with(kind)
                        .then(|| (grain.to_string(), v.clone()))
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
            cluster_ids: ids(".cluster.id"),
            system_ids: ids(".system.id"),
            launch_time: i.launch_time,
        }
    }
}

/// The pillar spec an existing instance was built from, from its role and member tags.
fn spec_of<'a>(group: &'a GroupSpec, i: &Instance) -> Option<&'a RoleSpec> {
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

    async fn find_some(&self, q: &InstanceQuery) -> Result<(Pillar, Vec<Instance>), Error> {
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

    /// Runs one destroy: finds the instances through their tags and terminates them.
    pub async fn destroy(&self, q: &InstanceQuery) -> Result<DestroyReport, Error> {
        let (pillar, found) = self.find_some(q).await?;
        let group = pillar.group(&q.group)?;
        let targets: Vec<InstanceRef> = found.iter().map(Instance::to_ref).collect();
        let cpid_lease = self.claim_cpid(None).await?;
        let cpid = cpid_lease.owner.cpid;
        let result = self
            .destroy_targets(cpid, q, group, targets)
            .instrument(info_span!("destroy", %cpid, group = %q.group, env = %q.env))
            .await;
        self.release(&cpid_lease, Duration::ZERO).await;
        result
    }

    async fn destroy_targets(
        &self,
        cpid: Cpid,
        q: &InstanceQuery,
        group: &GroupSpec,
        targets: Vec<InstanceRef>,
    ) -> Result<DestroyReport, Error> {
        let mut report = DestroyReport {
            cpid,
            destroyed: vec![],
            failed: vec![],
            state_failures: vec![],
            skipped: vec![],
            logs: vec![],
        };
        report.state_failures = self
            .hooks(
                &group.hooks.pre_destroy,
                &q.env,
                &q.env,
                cpid,
                &mut report.logs,
                &mut report.skipped,
            )
            .await?;
        if !report.state_failures.is_empty() {
            return Ok(report);
        }
        let label = |t: &InstanceRef| t.name.clone().unwrap_or_else(|| t.id.clone());
        let raw = match (self.opts.provisioner, &self.salt) {
            (Provisioner::SaltCloud, Some(salt)) => {
                let names: Vec<String> = targets.iter().map(label).collect();
                let run = salt
                    .cloud_destroy(&names)
                    .instrument(info_span!("salt.cloud_destroy", instances = names.len()))
                    .await
                    .map_err(|e| Error::backend("running salt-cloud -d", e))?;
                report.destroyed = run.ok.clone();
                report.failed = run.failed.clone();
                run.raw
            }
            _ => {
                let mut by_region: BTreeMap<Region, Vec<InstanceRef>> = BTreeMap::new();
                for t in &targets {
                    by_region
                        .entry(t.region.clone())
                        .or_default()
                        .push(t.clone());
                }
                for refs in by_region.values() {
                    self.cloud
                        .terminate(refs)
                        .instrument(info_span!("cloud.terminate", instances = refs.len()))
                        .await
                        .map_err(|e| Error::backend("terminating instances", e))?;
                }
                report.destroyed = targets.iter().map(label).collect();
                // salt-cloud -d deletes the keys itself; here the run does.
                if let Some(salt) = &self.salt {
                    let names: Vec<String> =
                        targets.iter().filter_map(|t| t.name.clone()).collect();
                    if let Err(e) = salt
                        .delete_keys(&names)
                        .instrument(info_span!("salt.delete_keys", minions = names.len()))
                        .await
                    {
                        warn!(error = %e, "deleting the minion keys failed");
                        report.failed.extend(names.into_iter().map(|n| {
                            (
                                n,
                                format!("terminated, but its minion key was not deleted: {e}"),
                            )
                        }));
                    }
                }
                json!({ "terminated": targets })
            }
        };
        let path = self.layout.cloud_log(cpid, "destroy", log_rand());
        write_json_log(&path, &raw).await?;
        report.logs.push(path);
        let failures = self
            .hooks(
                &group.hooks.post_destroy,
                &q.env,
                &q.env,
                cpid,
                &mut report.logs,
                &mut report.skipped,
            )
            .await?;
        report.state_failures.extend(failures);
        Ok(report)
    }

    /// The minions an update would re-apply states to (what `--dry-run` lists).
    pub async fn update_targets(&self, q: &InstanceQuery) -> Result<Vec<String>, Error> {
        Ok(self
            .find_some(q)
            .await?
            .1
            .iter()
            .filter_map(|i| i.name().map(str::to_string))
            .collect())
    }

    /// Runs one update: `pre_update` hooks, the startup states of the selected
    /// instances again, `post_update` hooks, logged under a new CPID.
    pub async fn update(&self, q: &InstanceQuery) -> Result<UpdateReport, Error> {
        let (pillar, found) = self.find_some(q).await?;
        let group = pillar.group(&q.group)?;
        let cpid_lease = self.claim_cpid(None).await?;
        let cpid = cpid_lease.owner.cpid;
        let result = async {
            let mut report = UpdateReport {
                cpid,
                targets: vec![],
                state_failures: vec![],
                skipped: vec![],
                logs: vec![],
            };
            report.state_failures = self
                .hooks(
                    &group.hooks.pre_update,
                    &q.env,
                    &q.env,
                    cpid,
                    &mut report.logs,
                    &mut report.skipped,
                )
                .await?;
            if !report.state_failures.is_empty() {
                return Ok(report);
            }
            let default = RoleSpec::default();
            let targets: Vec<(String, &RoleSpec)> = found
                .iter()
                .filter_map(|i| {
                    Some((i.name()?.to_string(), spec_of(group, i).unwrap_or(&default)))
                })
                .collect();
            report.targets = targets.iter().map(|(n, _)| n.clone()).collect();
            let failures = self
                .startup_states(
                    cpid,
                    &q.group,
                    group,
                    &targets,
                    &q.env,
                    &mut report.logs,
                    &mut report.skipped,
                )
                .await?;
            report.state_failures.extend(failures);
            let failures = self
                .hooks(
                    &group.hooks.post_update,
                    &q.env,
                    &q.env,
                    cpid,
                    &mut report.logs,
                    &mut report.skipped,
                )
                .await?;
            report.state_failures.extend(failures);
            Ok(report)
        }
        .instrument(info_span!("update", %cpid, group = %q.group, env = %q.env))
        .await;
        self.release(&cpid_lease, Duration::ZERO).await;
        result
    }
}
