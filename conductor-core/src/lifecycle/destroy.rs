//! `destroy`: `pre_destroy` hooks, terminate the selected instances through
//! the cloud by instance id, delete their minion keys (and, on the
//! salt-cloud path, salt-cloud's cache entries of them), `post_destroy`
//! hooks, all logged under the destroy run's own CPID.
//!
//! What is destroyed is exactly what the tag-scoped selection found
//! ([`Conductor::plan_destroy`]): instances whose `conductor:env` and
//! `conductor:group` tags are the request's, with a valid `Name`. Nothing is
//! looked up by name again: `salt-cloud -d <names>` is never run, because
//! Salt 3007 looks those names up in every configured provider and would
//! destroy a same-named VM of another region or account as well.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Serialize;
use serde_json::json;
use tracing::{info_span, warn, Instrument};

use super::configure::Journal;
use super::run::Run;
use super::select::{InstanceQuery, SkippedInstance};
use super::write_json_log;
use crate::cloud::{Instance, InstanceRef};
use crate::conductor::{Conductor, Provisioner};
use crate::cpid::Cpid;
use crate::error::Error;
use crate::layout::{log_rand, Layout};
use crate::names::Region;
use crate::pillar::{GroupSpec, Pillar};
use crate::salt::{CloudVm, StateFailure};

/// What a destroy run did.
#[derive(Clone, Debug, Serialize)]
pub struct DestroyReport {
    /// The destroy run's own CPID.
    pub cpid: Cpid,
    /// Instances terminated (names, or ids when unnamed).
    pub destroyed: Vec<String>,
    /// Instances the selection found but left alone, and why.
    pub skipped_instances: Vec<SkippedInstance>,
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

    fn journal(&mut self) -> Journal<'_> {
        Journal {
            cpid: self.cpid,
            logs: &mut self.logs,
            skipped: &mut self.skipped,
            failures: &mut self.state_failures,
        }
    }
}

/// What a destroy would do, computed without changing anything (what
/// `destroy --dry-run` lists and the confirmation shows); hand it to
/// [`Conductor::destroy_planned`] to do exactly that.
#[derive(Clone, Debug, Serialize)]
pub struct DestroyPlan {
    /// The selection.
    pub query: InstanceQuery,
    /// The instances to terminate, in name order.
    pub targets: Vec<InstanceRef>,
    /// The minion keys to delete on the master (empty without Salt).
    pub keys: Vec<String>,
    /// salt-cloud's cache entries to remove (salt-cloud provisioner only).
    pub cloud_vms: Vec<CloudVm>,
    /// Instances the selection found but leaves alone, and why.
    pub skipped_instances: Vec<SkippedInstance>,
    #[serde(skip)]
    pillar: Pillar,
}

impl DestroyPlan {
    /// How each target is named: its name, else its instance id.
    pub fn labels(&self) -> Vec<String> {
        self.targets.iter().map(label).collect()
    }
}

impl Conductor {
    /// What a destroy of `q` would terminate (and whose keys it would
    /// delete); changes nothing. Selecting nothing is bad input.
    pub async fn plan_destroy(&self, q: &InstanceQuery) -> Result<DestroyPlan, Error> {
        let (pillar, selected) = self.select_some(q).await?;
        let targets: Vec<InstanceRef> = selected.instances.iter().map(Instance::to_ref).collect();
        let keys = match &self.salt {
            Some(_) => targets.iter().filter_map(|t| t.name.clone()).collect(),
            None => vec![],
        };
        let cloud_vms = match (self.opts.provisioner, &self.salt) {
            (Provisioner::SaltCloud, Some(_)) => selected
                .instances
                .iter()
                .filter_map(|i| {
                    Some(CloudVm {
                        name: i.name()?.to_string(),
                        provider: Layout::cloud_id(&q.group, i.cpid()?),
                    })
                })
                .collect(),
            _ => vec![],
        };
        Ok(DestroyPlan {
            query: q.clone(),
            targets,
            keys,
            cloud_vms,
            skipped_instances: selected.skipped,
            pillar,
        })
    }

    /// Runs one destroy: finds the instances through their tags and terminates them.
    pub async fn destroy(&self, q: &InstanceQuery) -> Result<DestroyReport, Error> {
        let plan = self.plan_destroy(q).await?;
        self.destroy_planned(plan).await
    }

    /// Runs the destroy `plan` (from [`Conductor::plan_destroy`]): exactly
    /// its targets are terminated, whatever the cloud shows meanwhile.
    pub async fn destroy_planned(&self, plan: DestroyPlan) -> Result<DestroyReport, Error> {
        let q = &plan.query;
        self.in_env(&plan.pillar, &q.env)
            .await?
            .destroy_in_env(&plan)
            .await
    }

    async fn destroy_in_env(&self, plan: &DestroyPlan) -> Result<DestroyReport, Error> {
        let q = &plan.query;
        let group = plan.pillar.group(&q.group)?;
        let run = Run::start(
            self,
            None,
            |cpid| info_span!("destroy", %cpid, group = %q.group, env = %q.env),
        )
        .await?;
        let result = run
            .step_in(self.destroy_targets(run.cpid, plan, group))
            .await
            .map_err(Error::from)
            .and_then(|r| r);
        run.finish().await;
        result
    }

    async fn destroy_targets(
        &self,
        cpid: Cpid,
        plan: &DestroyPlan,
        group: &GroupSpec,
    ) -> Result<DestroyReport, Error> {
        let q = &plan.query;
        let mut report = DestroyReport {
            cpid,
            destroyed: vec![],
            skipped_instances: plan.skipped_instances.clone(),
            failed: vec![],
            state_failures: vec![],
            skipped: vec![],
            logs: vec![],
        };
        let hooks = &group.hooks.pre_destroy;
        if !self
            .hooks("pre_destroy", hooks, &q.env, &q.env, report.journal())
            .await?
        {
            return Ok(report);
        }
        let raw = self.terminate(plan, &mut report).await?;
        let path = self.layout.cloud_log(cpid, "destroy", log_rand());
        write_json_log(&path, &raw).await?;
        report.logs.push(path);
        let hooks = &group.hooks.post_destroy;
        self.hooks("post_destroy", hooks, &q.env, &q.env, report.journal())
            .await?;
        Ok(report)
    }

    /// Terminates the plan's targets through the cloud by instance id,
    /// region by region, then deletes their minion keys and (salt-cloud
    /// provisioner) salt-cloud's cache entries of them; returns the record
    /// for the run's log.
    async fn terminate(
        &self,
        plan: &DestroyPlan,
        report: &mut DestroyReport,
    ) -> Result<serde_json::Value, Error> {
        let targets = &plan.targets;
        let mut by_region: BTreeMap<Region, Vec<InstanceRef>> = BTreeMap::new();
        for t in targets {
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
        if let Some(salt) = &self.salt {
            if !plan.keys.is_empty() {
                if let Err(e) = salt
                    .delete_keys(&plan.keys)
                    .instrument(info_span!("salt.delete_keys", minions = plan.keys.len()))
                    .await
                {
                    warn!(error = %e, "deleting the minion keys failed");
                    report.failed.extend(plan.keys.iter().map(|n| {
                        let why = format!("terminated, but its minion key was not deleted: {e}");
                        (n.clone(), why)
                    }));
                }
            }
            if !plan.cloud_vms.is_empty() {
                if let Err(e) = salt
                    .cloud_forget(&plan.cloud_vms)
                    .instrument(info_span!("salt.cloud_forget", vms = plan.cloud_vms.len()))
                    .await
                {
                    warn!(error = %e, "removing salt-cloud's cache entries failed");
                    report.failed.extend(plan.cloud_vms.iter().map(|v| {
                        let why = format!(
                            "terminated, but salt-cloud's cache entry under {} was not removed: {e}",
                            v.provider
                        );
                        (v.name.clone(), why)
                    }));
                }
            }
        }
        Ok(json!({
            "terminated": targets,
            "minion_keys_deleted": plan.keys,
            "salt_cloud_cache_removed": plan.cloud_vms,
        }))
    }
}

/// How an instance is named in reports: its name, else its id.
fn label(t: &InstanceRef) -> String {
    t.name.clone().unwrap_or_else(|| t.id.clone())
}
