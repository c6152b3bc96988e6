//! `update`: `pre_update` hooks, the startup states of the selected
//! instances again, `post_update` hooks, logged under a new CPID.

use std::path::PathBuf;

use serde::Serialize;
use tracing::info_span;

use super::configure::Journal;
use super::run::Run;
use super::select::{shown_name, spec_of, InstanceQuery, SkippedInstance};
use crate::cloud::Instance;
use crate::conductor::Conductor;
use crate::cpid::Cpid;
use crate::error::Error;
use crate::pillar::{GroupSpec, RoleSpec};
use crate::salt::StateFailure;

/// What an update run did.
#[derive(Clone, Debug, Serialize)]
pub struct UpdateReport {
    /// The update run's own CPID.
    pub cpid: Cpid,
    /// Minions whose startup states were re-applied.
    pub targets: Vec<String>,
    /// Instances the selection found but left alone, and why (not built by
    /// Conductor for this group and env, a `Name` tag that is not a valid
    /// instance name, or no `Name` tag at all).
    pub skipped_instances: Vec<SkippedInstance>,
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
    /// The minions an update would re-apply states to (what `--dry-run` lists).
    pub async fn update_targets(&self, q: &InstanceQuery) -> Result<Vec<String>, Error> {
        Ok(self.select(q).await?.names())
    }

    /// Runs one update: `pre_update` hooks, the startup states of the selected
    /// instances again, `post_update` hooks, logged under a new CPID.
    pub async fn update(&self, q: &InstanceQuery) -> Result<UpdateReport, Error> {
        let (pillar, selected) = self.select_some(q).await?;
        let group = pillar.group(&q.group)?;
        let run = Run::start(
            self,
            None,
            |cpid| info_span!("update", %cpid, group = %q.group, env = %q.env),
        )
        .await?;
        let result = run
            .step_in(self.update_run(run.cpid, q, group, &selected.instances))
            .await
            .map_err(Error::from)
            .and_then(|r| r);
        run.finish().await;
        result.map(|mut r| {
            r.skipped_instances.extend(selected.skipped);
            r
        })
    }

    async fn update_run(
        &self,
        cpid: Cpid,
        q: &InstanceQuery,
        group: &GroupSpec,
        found: &[Instance],
    ) -> Result<UpdateReport, Error> {
        let mut report = UpdateReport {
            cpid,
            targets: vec![],
            skipped_instances: vec![],
            state_failures: vec![],
            skipped: vec![],
            logs: vec![],
        };
        let hooks = &group.hooks.pre_update;
        if !self
            .hooks("pre_update", hooks, &q.env, &q.env, report.journal())
            .await?
        {
            return Ok(report);
        }
        let default = RoleSpec::default();
        let targets: Vec<(String, &RoleSpec)> = found
            .iter()
            .filter_map(|i| Some((i.name()?.to_string(), spec_of(group, i).unwrap_or(&default))))
            .collect();
        for i in found.iter().filter(|i| i.name().is_none()) {
            report.skipped_instances.push(SkippedInstance {
                name: shown_name(""),
                id: Some(i.id.clone()),
                reason: "has no Name tag: there is no minion to target".into(),
            });
        }
        report.targets = targets.iter().map(|(n, _)| n.clone()).collect();
        self.startup_states(&q.group, group, &targets, &q.env, report.journal())
            .await?;
        let hooks = &group.hooks.post_update;
        self.hooks("post_update", hooks, &q.env, &q.env, report.journal())
            .await?;
        Ok(report)
    }
}
