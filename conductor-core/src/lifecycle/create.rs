//! `create`: plan and reserve → prepare files and `pre_create` hooks →
//! provision → settle (wait until visible, release with the grace) →
//! configure (minions, startup states, `post_create` hooks).
//!
//! Before the launch, any failure ends the run with an error and frees
//! every key at once (nothing can exist). From the launch on, the run
//! always returns its report: a later failure is the report's `error`, a
//! cancellation its `interrupted` flag, and keys of instances that may
//! exist are held until they expire.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde::Serialize;
use tracing::{info, info_span, warn, Instrument};

use super::autosign::Autosign;
use super::configure::Journal;
use super::observe::{Progress, Step};
use super::provision::{Job, ProvisionFailed, Provisioned};
use super::run::Run;
use super::write_file;
use crate::account::AccountSpec;
use crate::cloud::Scope;
use crate::conductor::{Conductor, Provisioner};
use crate::cpid::Cpid;
use crate::error::{Error, ErrorClass};
use crate::pillar::{GroupSpec, Pillar};
use crate::plan::Plan;
use crate::render;
use crate::request::CreateRequest;
use crate::reserve::now_ms;
use crate::salt::StateFailure;

/// What a create run did.
#[derive(Clone, Debug, Serialize)]
pub struct CreateReport {
    /// The plan that was reserved and built.
    pub plan: Plan,
    /// The provisioner used.
    pub provisioner: Provisioner,
    /// Plan-and-reserve attempts it took: each a fresh read of the
    /// reservations (keys lost to other runs and claimed again within an
    /// attempt do not count).
    pub attempts: u32,
    /// Instances created.
    pub launched: Vec<String>,
    /// Instances that failed to launch, with the reason.
    pub failed: Vec<(String, String)>,
    /// Instances salt-cloud launched without deploying Salt, as their
    /// profile asks (`deploy: False`: the image brings its minion).
    pub not_deployed: Vec<String>,
    /// Instances launched but not yet visible when the wait ended; their keys
    /// stay reserved until the lease expires.
    pub not_visible: Vec<String>,
    /// New minions that were not accepted or did not answer in time, with
    /// the reason; the instances are kept, their states not run.
    pub minions_not_ready: Vec<(String, String)>,
    /// Failed states of hooks and startup states.
    pub state_failures: Vec<StateFailure>,
    /// Steps skipped, and why (e.g. no Salt executor).
    pub skipped: Vec<String>,
    /// Files written by the run.
    pub logs: Vec<PathBuf>,
    /// A failure after the launch (the last one: the run stopped there, or
    /// went on past a log it could not write; what it launched is above).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<ReportError>,
    /// The caller cancelled the run after the launch began.
    pub interrupted: bool,
}

/// A failure a report carries: the message and how it is classed.
#[derive(Clone, Debug, Serialize)]
pub struct ReportError {
    /// What failed, for the operator.
    pub message: String,
    /// Its class (exit code class of the same error before a launch).
    pub class: ErrorClass,
}

impl From<&Error> for ReportError {
    fn from(e: &Error) -> Self {
        Self {
            message: e.to_string(),
            class: e.class(),
        }
    }
}

impl CreateReport {
    fn new(plan: Plan, provisioner: Provisioner, attempts: u32) -> Self {
        Self {
            plan,
            provisioner,
            attempts,
            launched: vec![],
            failed: vec![],
            not_deployed: vec![],
            not_visible: vec![],
            minions_not_ready: vec![],
            state_failures: vec![],
            skipped: vec![],
            logs: vec![],
            error: None,
            interrupted: false,
        }
    }

    /// True when every instance launched, its minion joined, and every state succeeded.
    pub fn success(&self) -> bool {
        self.failed.is_empty()
            && self.state_failures.is_empty()
            && self.not_visible.is_empty()
            && self.minions_not_ready.is_empty()
            && self.error.is_none()
            && !self.interrupted
    }

    /// Marks every planned instance failed with `why`.
    fn fail_all(&mut self, why: &str) {
        self.failed = self
            .plan
            .names()
            .into_iter()
            .map(|n| (n, why.to_string()))
            .collect();
    }

    pub(super) fn journal(&mut self, cpid: Cpid) -> Journal<'_> {
        Journal {
            cpid,
            logs: &mut self.logs,
            skipped: &mut self.skipped,
            failures: &mut self.state_failures,
        }
    }
}

impl Conductor {
    /// Runs one create: plan, reserve, write files, hooks, provision, release,
    /// startup states. Instance failures, and any failure after the launch,
    /// are in the report; an error means nothing was launched.
    pub async fn create(&self, req: &CreateRequest) -> Result<CreateReport, Error> {
        let pillar = self.load_pillar(&req.pillarenv).await?;
        let scopes = self.scopes(&pillar, req)?;
        let group = pillar.group(&req.group)?;
        self.in_env(&pillar, &req.pillarenv)
            .await?
            .create_in_env(req, &pillar, group, &scopes)
            .await
    }

    async fn create_in_env(
        &self,
        req: &CreateRequest,
        pillar: &Pillar,
        group: &GroupSpec,
        scopes: &[Scope],
    ) -> Result<CreateReport, Error> {
        self.check_autosign().await?;
        let run = Run::start(self, req.cpid, |cpid| {
            info_span!("create", %cpid, group = %req.group, env = %req.pillarenv, zone = %req.zone)
        })
        .await?;
        let result = self
            .create_run(&run, req, pillar, group, scopes)
            .instrument(run.span.clone())
            .await;
        self.remove_cloud_files(&req.group, run.cpid)
            .instrument(run.span.clone())
            .await;
        run.finish().await;
        result
    }

    async fn create_run(
        &self,
        run: &Run,
        req: &CreateRequest,
        pillar: &Pillar,
        group: &GroupSpec,
        scopes: &[Scope],
    ) -> Result<CreateReport, Error> {
        let (plan, attempts) = run
            .step_in(self.plan_and_reserve(run, req, pillar, scopes))
            .await??;
        run.step(Step::Reserved);
        info!(instances = plan.instances.len(), attempts, "reserved");
        run.progress(Progress::Reserved {
            instances: plan.instances.len(),
            attempts,
        });
        let mut report = CreateReport::new(plan, self.opts.provisioner, attempts);
        let account = pillar.environment(&req.pillarenv)?.aws.as_ref();
        run.step_in(self.prepare(run, &mut report, group, account))
            .await??;
        let Some((provisioned, autosign)) = self
            .provision_phase(run, &mut report, pillar, group)
            .await?
        else {
            return Ok(report);
        };
        let after = async {
            let visible = self.settle(run, &mut report, provisioned).await?;
            self.configure(run, &mut report, group, &visible, autosign)
                .await
        };
        if let Err(e) = after.await {
            warn!(error = %e, "the run failed after launching");
            report.interrupted |= matches!(e, Error::Interrupted);
            if !matches!(e, Error::Interrupted) {
                report.error = Some((&e).into());
            }
        }
        // Expired leftovers of other runs in this run's environments (and
        // of no environment: cpids, slots) are removed here rather than
        // waiting for `prune`; other environments' keys are not read. An
        // interrupted run starts no such work: it only finishes.
        if report.interrupted || self.cancel.is_cancelled() {
            return Ok(report);
        }
        for env in req.envs() {
            if let Err(e) = self.reserver.prune(now_ms(), Some(env), None).await {
                warn!(error = %e, env = %env, "pruning expired reservations failed");
            }
        }
        Ok(report)
    }

    /// Writes the provider, profile and map files and runs the `pre_create`
    /// hooks; a failed hook ends the run (nothing launched).
    async fn prepare(
        &self,
        run: &Run,
        report: &mut CreateReport,
        group: &GroupSpec,
        account: Option<&AccountSpec>,
    ) -> Result<(), Error> {
        let written = self.write_files(&report.plan, group, account).await?;
        report.logs.extend(written);
        run.step(Step::FilesWritten);
        let (saltenv, env) = (report.plan.saltenv.clone(), report.plan.env.clone());
        let hooks = &group.hooks.pre_create;
        let journal = report.journal(run.cpid);
        if self
            .hooks("pre_create", hooks, &saltenv, &env, journal)
            .await?
        {
            return Ok(());
        }
        let log = report.state_failures.iter().find_map(|f| f.log.clone());
        Err(Error::HookFailed {
            hook: "pre_create".into(),
            log,
        })
    }

    /// Writes the provider, profile and map files, and the run's copies of
    /// the provider and profile beside its map (what stays once the run
    /// ended and removed the ones salt-cloud reads); returns the files that
    /// stay. Maps and profiles start with `#!yaml`: Salt renders a map (and
    /// would render a profile) through Jinja unless told otherwise, and
    /// pillar values must reach salt-cloud as data, never as templates.
    async fn write_files(
        &self,
        plan: &Plan,
        group: &GroupSpec,
        account: Option<&AccountSpec>,
    ) -> Result<Vec<PathBuf>, Error> {
        let files = plan
            .files
            .clone()
            .expect("plans made by Conductor name their files");
        let yaml = |doc: &serde_yaml::Value, render_line: bool| {
            let text = serde_yaml::to_string(doc).expect("yaml values serialize");
            if render_line {
                format!("{}\n{text}", render::YAML_ONLY)
            } else {
                text
            }
        };
        let provider = yaml(&render::provider(plan, group, account), false);
        let profile = yaml(&render::profile(plan, group), true);
        let map = yaml(&render::map(plan, group), true);
        let docs = [
            (files.provider, provider.clone(), 0o600, false),
            (files.profile, profile.clone(), 0o644, false),
            (files.map, map, 0o644, true),
            (
                self.layout.provider_copy(&plan.group, plan.cpid),
                provider,
                0o600,
                true,
            ),
            (
                self.layout.profile_copy(&plan.group, plan.cpid),
                profile,
                0o644,
                true,
            ),
        ];
        let mut kept = Vec::new();
        for (path, text, mode, stays) in docs {
            write_file(path.clone(), text.into_bytes(), mode)
                .await
                .map_err(|e| config_dir_refused(e, &self.layout.config_dir))?;
            if stays {
                kept.push(path);
            }
        }
        Ok(kept)
    }

    /// Removes the run's provider and profile files from `<config-dir>`
    /// (their copies stay beside the run's map, for `runs archive`), so
    /// `cloud.providers.d` does not grow by one credentials file per run.
    async fn remove_cloud_files(&self, group: &crate::names::Group, cpid: Cpid) {
        let paths = [
            self.layout.provider_file(group, cpid),
            self.layout.profile_file(group, cpid),
        ];
        let removed = tokio::task::spawn_blocking(move || {
            paths
                .into_iter()
                .filter_map(|p| match std::fs::remove_file(&p) {
                    Ok(()) => None,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
                    Err(e) => Some(format!("{}: {e}", p.display())),
                })
                .collect::<Vec<_>>()
        })
        .await;
        match removed {
            Ok(errors) => {
                for e in errors {
                    warn!(error = %e, "removing the run's cloud file failed; `conductor runs prune` removes it later");
                }
            }
            Err(e) => warn!(error = %e, "removing the run's cloud files failed"),
        }
    }

    /// Takes a provisioning slot, lists the autosign token, fences the keys
    /// and provisions. `Ok(None)`: the launch was cancelled, or failed as a
    /// whole after it may have created instances (every key kept, the
    /// report says which).
    async fn provision_phase(
        &self,
        run: &Run,
        report: &mut CreateReport,
        pillar: &Pillar,
        group: &GroupSpec,
    ) -> Result<Option<(Provisioned, Option<Autosign>)>, Error> {
        let account = pillar.environment(&report.plan.env)?.aws.as_ref();
        let slot = match pillar.throttle.max_provisioning_runs {
            Some(k) => Some(
                run.step_in(self.take_slot(run, (account, &report.plan.region), k))
                    .await??,
            ),
            None => None,
        };
        // Native minions join by a per-run token listed only while they bootstrap.
        let autosign = self.open_autosign(run.cpid).await?;
        let keys = report.plan.reservations.all();
        run.holdings.fence(&keys).await?;
        run.step(Step::Launching);
        run.progress(Progress::Launching {
            done: 0,
            total: report.plan.instances.len(),
        });
        let job = Job {
            run,
            plan: &report.plan,
            group,
            max_inflight: pillar.throttle.max_inflight_calls,
            autosign_token: autosign.as_ref().map(|a| a.token.as_str()),
        };
        let provisioner = self.provisioner();
        // Whether the provisioner ran at all: a cancel seen first (during
        // the fence, say) leaves nothing that may exist.
        let started = AtomicBool::new(false);
        let outcome = run
            .step_in(async {
                started.store(true, Ordering::Relaxed);
                provisioner.provision(&job).await
            })
            .await;
        if let Some(slot) = slot {
            run.holdings.release(&slot, Duration::ZERO).await;
        }
        let provisioned = match outcome {
            Err(_cancelled) if !started.load(Ordering::Relaxed) => {
                run.holdings.release(&keys, Duration::ZERO).await;
                return Err(Error::Interrupted);
            }
            Err(_cancelled) => {
                run.holdings.keep(&keys).await;
                report.interrupted = true;
                report.fail_all("interrupted during the launch; it may exist");
                return Ok(None);
            }
            Ok(Err(ProvisionFailed {
                error,
                maybe_launched: false,
            })) => {
                // Refused before anything ran: nothing can exist.
                run.holdings.release(&keys, Duration::ZERO).await;
                return Err(error);
            }
            Ok(Err(ProvisionFailed {
                error,
                maybe_launched: true,
            })) => {
                run.holdings.keep(&keys).await;
                report.fail_all(&format!(
                    "the launch failed as a whole and may have created it: {error}"
                ));
                report.error = Some((&error).into());
                return Ok(None);
            }
            Ok(Ok(p)) => p,
        };
        run.step(Step::Launched);
        run.progress(Progress::Launching {
            done: provisioned.results.len(),
            total: report.plan.instances.len(),
        });
        let path = self
            .layout
            .cloud_log(run.cpid, "create", crate::layout::log_rand());
        // Instances may exist now: a log that cannot be written is a
        // failure the report carries, not the end of the run.
        match super::write_json_log(&path, &provisioned.raw).await {
            Ok(()) => report.logs.push(path),
            Err(e) => {
                warn!(error = %e, "writing the cloud run's log failed");
                report.error = Some((&e).into());
            }
        }
        Ok(Some((provisioned, autosign)))
    }
}

impl Conductor {
    /// Records what launched, waits until it shows in the inventory,
    /// releases the keys of settled instances with the grace (visible, or
    /// surely not launched) and keeps the rest; returns the visible names.
    async fn settle(
        &self,
        run: &Run,
        report: &mut CreateReport,
        provisioned: Provisioned,
    ) -> Result<BTreeSet<String>, Error> {
        let results = provisioned.results;
        for r in &results {
            match &r.outcome {
                Ok(_) => report.launched.push(r.name.clone()),
                Err(f) => report.failed.push((r.name.clone(), f.message.clone())),
            }
        }
        report.not_deployed = report
            .launched
            .iter()
            .filter(|n| provisioned.not_deployed.contains(n))
            .cloned()
            .collect();
        report.minions_not_ready = provisioned
            .deploy_failed
            .into_iter()
            .map(|(n, why)| {
                (
                    n,
                    format!("salt-cloud launched it but did not deploy Salt: {why}"),
                )
            })
            .collect();
        if !report.launched.is_empty() {
            run.progress(Progress::Visible {
                seen: 0,
                total: report.launched.len(),
            });
        }
        let wait = self.wait_visible(report);
        let visible = match run.step_in(wait).await {
            Ok(v) => v?,
            Err(cancelled) => {
                run.holdings.keep(&report.plan.reservations.all()).await;
                return Err(cancelled.into());
            }
        };
        report.not_visible = report
            .launched
            .iter()
            .filter(|n| !visible.contains(*n))
            .cloned()
            .collect();
        run.step(Step::Visible);
        if !report.launched.is_empty() {
            run.progress(Progress::Visible {
                seen: report.launched.len() - report.not_visible.len(),
                total: report.launched.len(),
            });
        }
        let definitely_failed: BTreeSet<&str> = results
            .iter()
            .filter(|r| r.outcome.as_ref().err().is_some_and(|f| f.definite))
            .map(|r| r.name.as_str())
            .collect();
        let settled = |name: &str| visible.contains(name) || definitely_failed.contains(name);
        // Keys whose instances have all settled.
        let done = report.plan.keys_only_of(settled);
        // The rest stay held (renewed while the run lives, then until they
        // expire): their instances may still come up.
        run.holdings.release(&done, self.opts.release_grace).await;
        run.step(Step::Released);
        Ok(visible)
    }

    async fn wait_visible(&self, report: &CreateReport) -> Result<BTreeSet<String>, Error> {
        if report.launched.is_empty() {
            return Ok(BTreeSet::new());
        }
        info!(
            instances = report.launched.len(),
            "waiting for the instances to show in the inventory"
        );
        self.cloud
            .wait_visible(
                &report.plan.region,
                &report.launched,
                self.opts.visible_timeout,
            )
            .instrument(info_span!(
                "cloud.wait_visible",
                names = report.launched.len()
            ))
            .await
            .map_err(|e| Error::backend("waiting for instances to show", e))
    }
}

/// A file under `--config-dir` that cannot be written because of the path
/// itself (a file where a directory should be, no permission, a read-only
/// file system) is the operator's input (exit 2, nothing launched), named
/// with its fix; other I/O errors stay failures.
fn config_dir_refused(e: Error, config_dir: &std::path::Path) -> Error {
    use std::io::ErrorKind::{NotADirectory, PermissionDenied, ReadOnlyFilesystem};
    match &e {
        Error::Io { path, source }
            if path.starts_with(config_dir)
                && matches!(source.kind(), NotADirectory | PermissionDenied | ReadOnlyFilesystem) =>
        {
            crate::input::InputError::invalid(
                "--config-dir",
                &config_dir.display().to_string(),
                &format!(
                    "cannot write {}: {source}; give the Salt master's config directory, where salt-cloud reads cloud.providers.d and cloud.profiles.d, writable by this user",
                    path.display()
                ),
            )
            .into()
        }
        _ => e,
    }
}
