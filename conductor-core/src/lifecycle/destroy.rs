//! `destroy`: `pre_destroy` hooks, terminate the selected instances (through
//! salt-cloud or EC2), delete their minion keys, `post_destroy` hooks, all
//! logged under the destroy run's own CPID.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Serialize;
use serde_json::json;
use tracing::{info_span, warn, Instrument};

use super::configure::Journal;
use super::run::Run;
use super::select::InstanceQuery;
use super::write_json_log;
use crate::cloud::{Instance, InstanceRef};
use crate::conductor::{Conductor, Provisioner};
use crate::cpid::Cpid;
use crate::error::Error;
use crate::layout::log_rand;
use crate::names::Region;
use crate::pillar::GroupSpec;
use crate::salt::StateFailure;

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

    fn journal(&mut self) -> Journal<'_> {
        Journal {
            cpid: self.cpid,
            logs: &mut self.logs,
            skipped: &mut self.skipped,
            failures: &mut self.state_failures,
        }
    }
}

impl Conductor {
    /// Runs one destroy: finds the instances through their tags and terminates them.
    pub async fn destroy(&self, q: &InstanceQuery) -> Result<DestroyReport, Error> {
        let (pillar, found) = self.find_some(q).await?;
        let group = pillar.group(&q.group)?;
        let targets: Vec<InstanceRef> = found.iter().map(Instance::to_ref).collect();
        let run = Run::start(
            self,
            None,
            |cpid| info_span!("destroy", %cpid, group = %q.group, env = %q.env),
        )
        .await?;
        let result = run
            .step_in(self.destroy_targets(run.cpid, q, group, targets))
            .await
            .map_err(Error::from)
            .and_then(|r| r);
        run.finish().await;
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
        let hooks = &group.hooks.pre_destroy;
        if !self
            .hooks("pre_destroy", hooks, &q.env, &q.env, report.journal())
            .await?
        {
            return Ok(report);
        }
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
            _ => self.terminate(&targets, &mut report).await?,
        };
        let path = self.layout.cloud_log(cpid, "destroy", log_rand());
        write_json_log(&path, &raw).await?;
        report.logs.push(path);
        let hooks = &group.hooks.post_destroy;
        self.hooks("post_destroy", hooks, &q.env, &q.env, report.journal())
            .await?;
        Ok(report)
    }

    /// Terminates `targets` through the cloud, region by region, and
    /// deletes their minion keys (salt-cloud -d does both itself); returns
    /// the record for the run's log.
    async fn terminate(
        &self,
        targets: &[InstanceRef],
        report: &mut DestroyReport,
    ) -> Result<serde_json::Value, Error> {
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
            let names: Vec<String> = targets.iter().filter_map(|t| t.name.clone()).collect();
            if let Err(e) = salt
                .delete_keys(&names)
                .instrument(info_span!("salt.delete_keys", minions = names.len()))
                .await
            {
                warn!(error = %e, "deleting the minion keys failed");
                report.failed.extend(names.into_iter().map(|n| {
                    let why = format!("terminated, but its minion key was not deleted: {e}");
                    (n, why)
                }));
            }
        }
        Ok(json!({ "terminated": targets }))
    }
}

/// How an instance is named in reports: its name, else its id.
fn label(t: &InstanceRef) -> String {
    t.name.clone().unwrap_or_else(|| t.id.clone())
}
