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

use std::collections::{BTreeMap, BTreeSet};
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
    /// The caller cancelled the run after it terminated instances: the
    /// report lists what was done; work not yet begun is in `skipped` or
    /// `failed`.
    pub interrupted: bool,
}

impl DestroyReport {
    /// True when everything selected was destroyed and hooks succeeded.
    pub fn success(&self) -> bool {
        self.failed.is_empty() && self.state_failures.is_empty() && !self.interrupted
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
        let result = self
            .destroy_run(&run, plan, group)
            .instrument(run.span.clone())
            .await;
        run.finish().await;
        result
    }

    /// `pre_destroy` hooks, terminate, bookkeeping, `post_destroy` hooks.
    /// Before anything is terminated a cancellation is
    /// [`Error::Interrupted`]; from the first terminated instance on, the run
    /// returns its report: the keys and cache entries of what was terminated
    /// are removed and the cloud log written even when cancelled, and only
    /// the work not yet begun (other regions, `post_destroy`) is left out.
    async fn destroy_run(
        &self,
        run: &Run,
        plan: &DestroyPlan,
        group: &GroupSpec,
    ) -> Result<DestroyReport, Error> {
        let q = &plan.query;
        let mut report = DestroyReport {
            cpid: run.cpid,
            destroyed: vec![],
            skipped_instances: plan.skipped_instances.clone(),
            failed: vec![],
            state_failures: vec![],
            skipped: vec![],
            logs: vec![],
            interrupted: false,
        };
        let hooks = &group.hooks.pre_destroy;
        let pre = self.hooks("pre_destroy", hooks, &q.env, &q.env, report.journal());
        if !run.step_in(pre).await?? {
            return Ok(report);
        }
        let terminated = self.terminate(plan, &mut report).await?;
        let raw = self.forget(plan, &terminated, &mut report).await;
        let path = self.layout.cloud_log(run.cpid, "destroy", log_rand());
        match write_json_log(&path, &raw).await {
            Ok(()) => report.logs.push(path),
            Err(e) => {
                warn!(error = %e, "writing the destroy's cloud log failed");
                report.failed.push(("cloud log".into(), e.to_string()));
            }
        }
        let hooks = &group.hooks.post_destroy;
        if report.interrupted || self.cancel.is_cancelled() {
            report.interrupted = true;
            if !hooks.is_empty() {
                report.skipped.push(format!(
                    "post_destroy orchestration hooks {}: interrupted",
                    hooks.join(", ")
                ));
            }
            return Ok(report);
        }
        let post = self.hooks("post_destroy", hooks, &q.env, &q.env, report.journal());
        match run.step_in(post).await {
            Ok(done) => {
                if let Err(e) = done {
                    warn!(error = %e, "the post_destroy hooks failed");
                    report.failed.push(("post_destroy".into(), e.to_string()));
                }
            }
            Err(_cancelled) => {
                report.interrupted = true;
                report.skipped.push(format!(
                    "post_destroy orchestration hooks {}: interrupted while they ran",
                    hooks.join(", ")
                ));
            }
        }
        Ok(report)
    }

    /// Terminates the plan's targets through the cloud by instance id,
    /// region by region; returns the ones terminated (also in the report's
    /// `destroyed`). A region that fails, or whose turn comes after a
    /// cancellation, puts its targets in `failed`; when no region was
    /// terminated at all, that is the run's error instead (nothing done).
    /// A terminate call in flight is never dropped: its outcome is known.
    async fn terminate(
        &self,
        plan: &DestroyPlan,
        report: &mut DestroyReport,
    ) -> Result<Vec<InstanceRef>, Error> {
        let mut by_region: BTreeMap<Region, Vec<InstanceRef>> = BTreeMap::new();
        for t in &plan.targets {
            by_region
                .entry(t.region.clone())
                .or_default()
                .push(t.clone());
        }
        let mut terminated: Vec<InstanceRef> = vec![];
        let mut first_error = None;
        for (region, refs) in by_region {
            if self.cancel.is_cancelled() {
                if terminated.is_empty() {
                    return Err(Error::Interrupted);
                }
                report.interrupted = true;
                let why = format!("not terminated: interrupted before its region {region}");
                report
                    .failed
                    .extend(refs.iter().map(|t| (label(t), why.clone())));
                continue;
            }
            let outcome = self
                .cloud
                .terminate(&refs)
                .instrument(info_span!("cloud.terminate", %region, instances = refs.len()))
                .await;
            match outcome {
                Ok(()) => terminated.extend(refs),
                Err(e) => {
                    let e = Error::backend(format!("terminating instances in {region}"), e);
                    warn!(error = %e, "terminating instances failed");
                    let why = format!("not terminated (it may still run): {e}");
                    report
                        .failed
                        .extend(refs.iter().map(|t| (label(t), why.clone())));
                    first_error.get_or_insert(e);
                }
            }
        }
        if let (true, Some(e)) = (terminated.is_empty(), first_error) {
            // Nothing was terminated: the run's error says so.
            return Err(e);
        }
        report.destroyed = terminated.iter().map(label).collect();
        Ok(terminated)
    }

    /// Deletes the minion keys of the `terminated` instances and (salt-cloud
    /// provisioner) salt-cloud's cache entries of them, run to the end even
    /// when the run is cancelled (they are short, and nothing would find
    /// these instances again); returns the record for the run's cloud log.
    async fn forget(
        &self,
        plan: &DestroyPlan,
        terminated: &[InstanceRef],
        report: &mut DestroyReport,
    ) -> serde_json::Value {
        let gone: BTreeSet<&str> = terminated
            .iter()
            .filter_map(|t| t.name.as_deref())
            .collect();
        let keys: Vec<String> = plan
            .keys
            .iter()
            .filter(|k| gone.contains(k.as_str()))
            .cloned()
            .collect();
        let vms: Vec<CloudVm> = plan
            .cloud_vms
            .iter()
            .filter(|v| gone.contains(v.name.as_str()))
            .cloned()
            .collect();
        let mut keys_deleted: &[String] = &[];
        let mut vms_removed: &[CloudVm] = &[];
        match &self.salt {
            None if !gone.is_empty() => {
                let names: Vec<&str> = gone.iter().copied().collect();
                report.skipped.push(format!(
                    "deleting the minion keys of the {} terminated instance(s){}: no Salt executor configured (delete them on the master: salt-key -y -d <name>): {}",
                    names.len(),
                    if self.opts.provisioner == Provisioner::SaltCloud {
                        " and salt-cloud's cache entries of them"
                    } else {
                        ""
                    },
                    names.join(", ")
                ));
            }
            None => {}
            Some(salt) => {
                if !keys.is_empty() {
                    match salt
                        .delete_keys(&keys)
                        .instrument(info_span!("salt.delete_keys", minions = keys.len()))
                        .await
                    {
                        Ok(()) => keys_deleted = &keys,
                        Err(e) => {
                            warn!(error = %e, "deleting the minion keys failed");
                            report.failed.extend(keys.iter().map(|n| {
                                let why =
                                    format!("terminated, but its minion key was not deleted: {e}");
                                (n.clone(), why)
                            }));
                        }
                    }
                }
                if !vms.is_empty() {
                    match salt
                        .cloud_forget(&vms)
                        .instrument(info_span!("salt.cloud_forget", vms = vms.len()))
                        .await
                    {
                        Ok(()) => vms_removed = &vms,
                        Err(e) => {
                            warn!(error = %e, "removing salt-cloud's cache entries failed");
                            report.failed.extend(vms.iter().map(|v| {
                                let why = format!(
                                    "terminated, but salt-cloud's cache entry under {} was not removed: {e}",
                                    v.provider
                                );
                                (v.name.clone(), why)
                            }));
                        }
                    }
                }
            }
        }
        json!({
            "terminated": terminated,
            "minion_keys_deleted": keys_deleted,
            "salt_cloud_cache_removed": vms_removed,
            "failed": report.failed,
            "interrupted": report.interrupted,
        })
    }
}

/// How an instance is named in reports: its name, else its id.
fn label(t: &InstanceRef) -> String {
    t.name.clone().unwrap_or_else(|| t.id.clone())
}
