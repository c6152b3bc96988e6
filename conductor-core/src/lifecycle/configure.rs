//! The Salt steps of a run: the configure phase of create (new minions
//! join, startup states, `post_create` hooks), and the orchestration hooks
//! and startup states every action runs, each logged under the run's CPID.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::json;
use tracing::{info, info_span, warn, Instrument};

use super::autosign::Autosign;
use super::create::CreateReport;
use super::observe::Progress;
use super::run::Run;
use super::write_json_log;
use crate::backend::{BackendError, BackendErrorKind};
use crate::backoff::Backoff;
use crate::conductor::{Conductor, Provisioner};
use crate::cpid::Cpid;
use crate::error::Error;
use crate::layout::log_rand;
use crate::names::{Env, Group};
use crate::pillar::{GroupSpec, RoleSpec};
use crate::render;
use crate::salt::{StateFailure, StateRunResult};

/// Where a run's Salt steps record what they did: the run's CPID (it names
/// their logs), and its report's files, skipped steps and failed states.
pub(crate) struct Journal<'a> {
    /// The run's CPID.
    pub(crate) cpid: Cpid,
    /// Files written by the run.
    pub(crate) logs: &'a mut Vec<PathBuf>,
    /// Steps skipped, and why.
    pub(crate) skipped: &'a mut Vec<String>,
    /// Failed states.
    pub(crate) failures: &'a mut Vec<StateFailure>,
}

/// The targets grouped by the startup states they get: their role's, or the
/// group profile's; targets with none are left out.
fn startup_plan(
    group: &GroupSpec,
    targets: &[(String, &RoleSpec)],
) -> BTreeMap<Vec<String>, Vec<String>> {
    let default_sls: Vec<String> = group
        .profile
        .get("startup_states")
        .and_then(|v| serde_yaml::from_value(v.clone()).ok())
        .unwrap_or_default();
    let mut by_sls: BTreeMap<Vec<String>, Vec<String>> = BTreeMap::new();
    for (name, spec) in targets {
        let sls = spec
            .startup_states
            .clone()
            .unwrap_or_else(|| default_sls.clone());
        if !sls.is_empty() {
            by_sls.entry(sls).or_default().push(name.clone());
        }
    }
    by_sls
}

/// Time allowed on top of the waits for launching, in an autosign token's lifetime.
const LAUNCH_ALLOWANCE: Duration = Duration::from_secs(600);

impl Conductor {
    /// The configure phase of create: the new minions join (native
    /// minions always; any new minion before its startup states run), the
    /// autosign token is withdrawn, startup states and `post_create` hooks run.
    pub(super) async fn configure(
        &self,
        run: &Run,
        report: &mut CreateReport,
        group: &GroupSpec,
        visible: &BTreeSet<String>,
        autosign: Option<Autosign>,
    ) -> Result<(), Error> {
        // Minions whose deploy failed already are not waited for.
        let undeployed: BTreeSet<String> = report
            .minions_not_ready
            .iter()
            .map(|(n, _)| n.clone())
            .collect();
        let ready: Vec<(String, &RoleSpec)> = report
            .plan
            .instances
            .iter()
            .filter(|i| {
                visible.contains(&i.name)
                    && report.launched.contains(&i.name)
                    && !undeployed.contains(&i.name)
            })
            .map(|i| (i.name.clone(), render::role_spec(group, i)))
            .collect();
        // salt-cloud has deployed and keyed its minions itself.
        if self.opts.provisioner == Provisioner::Ec2 || !startup_plan(group, &ready).is_empty() {
            let names: Vec<String> = ready.iter().map(|(n, _)| n.clone()).collect();
            let wait = self.wait_minions(run.cpid, &names, &mut report.skipped);
            let late = run.step_in(wait).await??;
            report.minions_not_ready.extend(late);
        }
        if let Some(mut a) = autosign {
            // On failure `a` is dropped here, unclosed: the drop tries again.
            a.close().await?;
        }
        let late: BTreeSet<String> = report
            .minions_not_ready
            .iter()
            .map(|(n, _)| n.clone())
            .collect();
        let ready: Vec<_> = ready
            .into_iter()
            .filter(|(n, _)| !late.contains(n))
            .collect();
        let (plan_group, saltenv, env) = (
            report.plan.group.clone(),
            report.plan.saltenv.clone(),
            report.plan.env.clone(),
        );
        let states = self.startup_states(
            &plan_group,
            group,
            &ready,
            &saltenv,
            report.journal(run.cpid),
        );
        run.step_in(states).await??;
        let hooks = &group.hooks.post_create;
        let hooks = self.hooks(
            "post_create",
            hooks,
            &saltenv,
            &env,
            report.journal(run.cpid),
        );
        run.step_in(hooks).await??;
        Ok(())
    }

    /// The `autosign_grains_dir` a run lists its token in: set, with Salt,
    /// for the native provisioner only.
    fn autosign_dir(&self) -> Option<&Path> {
        match (
            &self.opts.autosign_grains_dir,
            &self.salt,
            self.opts.provisioner,
        ) {
            (Some(dir), Some(_), Provisioner::Ec2) => Some(dir),
            _ => None,
        }
    }

    /// Refuses a run whose `autosign_grains_dir` is not a directory, before
    /// it reserves anything or runs a hook.
    pub(super) async fn check_autosign(&self) -> Result<(), Error> {
        match self.autosign_dir() {
            Some(dir) => Autosign::check_dir(dir).await,
            None => Ok(()),
        }
    }

    /// Lists a fresh autosign token for a native run with Salt and an
    /// `autosign_grains_dir`; `None` otherwise.
    pub(super) async fn open_autosign(&self, cpid: Cpid) -> Result<Option<Autosign>, Error> {
        let Some(dir) = self.autosign_dir() else {
            return Ok(None);
        };
        // Listed for at most the longest the run can take to bootstrap.
        let ttl = self.opts.visible_timeout + self.opts.minion_timeout + LAUNCH_ALLOWANCE;
        let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
        Ok(Some(Autosign::open(dir, cpid, ttl_ms).await?))
    }

    /// Waits until every new minion answers `test.ping` (its key accepted and
    /// it connected), up to `minion_timeout`; returns the ones that did not,
    /// each with the reason the master's keys give.
    pub(super) async fn wait_minions(
        &self,
        cpid: Cpid,
        names: &[String],
        skipped: &mut Vec<String>,
    ) -> Result<Vec<(String, String)>, Error> {
        if names.is_empty() {
            return Ok(vec![]);
        }
        let Some(salt) = &self.salt else {
            skipped.push("waiting for the new minions: no Salt executor configured".into());
            return Ok(vec![]);
        };
        let timeout = self.opts.minion_timeout;
        let deadline = tokio::time::Instant::now() + timeout;
        let mut waiting: BTreeSet<String> = names.iter().cloned().collect();
        let backoff = Backoff::exact(Duration::from_millis(500), Duration::from_secs(5));
        let mut attempt = 0;
        info!(
            minions = names.len(),
            "waiting for the new minions to join the master"
        );
        loop {
            let targets: Vec<String> = waiting.iter().cloned().collect();
            let answered = salt
                .ping(&targets)
                .instrument(info_span!("salt.ping", targets = targets.len()))
                .await
                .map_err(|e| Error::backend("pinging the new minions", e))?;
            for a in &answered {
                waiting.remove(a);
            }
            self.progress(
                cpid,
                Progress::Minions {
                    answered: names.len() - waiting.len(),
                    total: names.len(),
                    waiting: waiting.iter().cloned().collect(),
                },
            );
            let now = tokio::time::Instant::now();
            if waiting.is_empty() || now >= deadline {
                break;
            }
            attempt += 1;
            tokio::time::sleep(backoff.delay(attempt).min(deadline - now)).await;
        }
        if waiting.is_empty() {
            return Ok(vec![]);
        }
        let keys = salt
            .minion_keys()
            .instrument(info_span!("salt.minion_keys"))
            .await
            .map_err(|e| Error::backend("listing the master's minion keys", e))?;
        let has = |list: &[String], n: &str| list.iter().any(|k| k == n);
        Ok(waiting
            .into_iter()
            .map(|n| {
                let why = if has(&keys.pending, &n) {
                    "its key is still pending: the master did not accept it (a wrong or expired autosign token, or no autosign_grains_dir on the master)"
                } else if has(&keys.rejected, &n) || has(&keys.denied, &n) {
                    "its key was rejected or denied by the master"
                } else if has(&keys.accepted, &n) {
                    "its key is accepted but it did not answer test.ping"
                } else {
                    "no key from it reached the master (the minion did not start, or cannot reach the master)"
                };
                warn!(minion = %n, "minion not ready: {why}");
                (n, format!("{why}; waited {}s", timeout.as_secs()))
            })
            .collect())
    }

    /// Applies each target's startup states (its role's, or the group
    /// profile's), one `state.apply` per distinct list, logged per call.
    pub(super) async fn startup_states(
        &self,
        group_name: &Group,
        group: &GroupSpec,
        targets: &[(String, &RoleSpec)],
        saltenv: &Env,
        journal: Journal<'_>,
    ) -> Result<(), Error> {
        let Journal {
            cpid,
            logs,
            skipped,
            failures,
        } = journal;
        let by_sls = startup_plan(group, targets);
        if by_sls.is_empty() {
            return Ok(());
        }
        let Some(salt) = &self.salt else {
            skipped.push("startup states: no Salt executor configured".into());
            return Ok(());
        };
        let total = by_sls.values().map(Vec::len).sum();
        let mut done = 0;
        self.progress(cpid, Progress::States { done, total });
        for (sls, targets) in by_sls {
            info!(minions = targets.len(), sls = %sls.join(","), "applying startup states");
            let run = salt
                .state_apply(&targets, &sls, saltenv)
                .instrument(info_span!("salt.state_apply", targets = targets.len()))
                .await;
            let path = self.layout.state_log(cpid, group_name, log_rand());
            failures.extend(
                self.log_state_run(
                    run,
                    path,
                    logs,
                    &format!("startup states {}", sls.join(",")),
                )
                .await?,
            );
            done += targets.len();
            self.progress(cpid, Progress::States { done, total });
        }
        Ok(())
    }

    /// Runs the orchestration hooks of `which` (`pre_create`, ...) in
    /// order, stopping at the first failure; true when none failed.
    pub(super) async fn hooks(
        &self,
        which: &str,
        hooks: &[String],
        saltenv: &Env,
        pillarenv: &Env,
        journal: Journal<'_>,
    ) -> Result<bool, Error> {
        let Journal {
            cpid,
            logs,
            skipped,
            failures,
        } = journal;
        if hooks.is_empty() {
            return Ok(true);
        }
        let Some(salt) = &self.salt else {
            skipped.push(format!(
                "{which} orchestration hooks {}: no Salt executor configured",
                hooks.join(", ")
            ));
            return Ok(true);
        };
        for sls in hooks {
            info!(%sls, which, "running orchestration hook");
            self.progress(
                cpid,
                Progress::Hook {
                    which: which.to_string(),
                    sls: sls.clone(),
                },
            );
            let run = salt
                .orchestrate(sls, saltenv, pillarenv)
                .instrument(info_span!("salt.orchestrate", %sls))
                .await;
            let path = self.layout.orch_log(cpid, sls, log_rand());
            let failed = self
                .log_state_run(run, path, logs, &format!("{which} orchestration {sls}"))
                .await?;
            if !failed.is_empty() {
                failures.extend(failed);
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Writes a state run's JSON to `path`; a run that could not happen at all
    /// becomes one failure naming the log.
    pub(super) async fn log_state_run(
        &self,
        run: Result<StateRunResult, BackendError>,
        path: PathBuf,
        logs: &mut Vec<PathBuf>,
        what: &str,
    ) -> Result<Vec<StateFailure>, Error> {
        let (raw, mut failures) = match run {
            Ok(r) => (r.raw, r.failures),
            Err(e) if matches!(e.kind, BackendErrorKind::Unreachable) => {
                return Err(Error::backend(what.to_string(), e));
            }
            Err(e) => (
                json!({"error": e.to_string()}),
                vec![StateFailure {
                    minion: "<master>".into(),
                    state: "<run>".into(),
                    comment: e.to_string(),
                    log: None,
                }],
            ),
        };
        write_json_log(&path, &raw).await?;
        for f in &mut failures {
            warn!(minion = %f.minion, state = %f.state, log = %path.display(), "{what} failed: {}", f.comment);
            f.log = Some(path.clone());
        }
        logs.push(path);
        Ok(failures)
    }
}
