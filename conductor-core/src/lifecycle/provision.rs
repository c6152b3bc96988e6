//! Provisioners: one small interface, two implementations — native EC2
//! RunInstances ([`Native`]) and `salt-cloud -m <map>` ([`SaltCloudMap`]).

use std::sync::Arc;

use async_trait::async_trait;
use serde_json::json;
use tracing::{info, info_span, Instrument};

use super::autosign;
use super::run::Run;
use crate::backend::{BackendError, BackendErrorKind};
use crate::cloud::{CloudBackend, LaunchFailure, LaunchResult, LaunchSpec, Launched};
use crate::conductor::{Conductor, Provisioner};
use crate::cpid::Cpid;
use crate::error::Error;
use crate::pillar::GroupSpec;
use crate::plan::{Plan, PlannedInstance};
use crate::render;
use crate::salt::SaltExecutor;
use crate::settings::LaunchSettings;

/// What one create asks its provisioner for.
pub(crate) struct Job<'a> {
    pub(crate) run: &'a Run,
    pub(crate) plan: &'a Plan,
    pub(crate) group: &'a GroupSpec,
    /// Launch calls one run keeps in flight (pillar `throttle.max_inflight_calls`).
    pub(crate) max_inflight: Option<u32>,
    /// The run's autosign token, for native minions.
    pub(crate) autosign_token: Option<&'a str>,
}

/// One result per planned instance, and the provisioner's own record of
/// the run (written to the `cloud_runs` log).
pub(crate) struct Provisioned {
    pub(crate) results: Vec<LaunchResult>,
    pub(crate) raw: serde_json::Value,
    /// Launched without Salt deployed, as the profile asks (salt-cloud).
    pub(crate) not_deployed: Vec<String>,
    /// Launched, but deploying Salt failed, with why (salt-cloud).
    pub(crate) deploy_failed: Vec<(String, String)>,
}

/// A provisioning call that failed as a whole.
pub(crate) struct ProvisionFailed {
    pub(crate) error: Error,
    /// False when nothing can have been launched (refused before it ran).
    pub(crate) maybe_launched: bool,
}

/// Creates a plan's instances.
#[async_trait]
pub(crate) trait Provision: Send + Sync {
    /// Launches `job.plan`'s instances. The caller fenced the keys (marked
    /// them launching); a provisioner that launches in several calls
    /// fences again before each further call.
    async fn provision(&self, job: &Job<'_>) -> Result<Provisioned, ProvisionFailed>;
}

impl Conductor {
    /// Checks what `plan`'s native launches would send against EC2's
    /// limits (the user data, rendered as the launch renders it; tags are
    /// checked by the planner), so a launch EC2 would refuse is refused
    /// before anything is reserved. salt-cloud renders its own launches.
    pub(crate) fn check_launches(&self, plan: &Plan, group: &GroupSpec) -> Result<(), Error> {
        if matches!(
            (self.opts.provisioner, &self.salt),
            (Provisioner::SaltCloud, Some(_))
        ) {
            return Ok(());
        }
        // A token as long as the run's own (see `open_autosign`).
        let token = (self.opts.autosign_grains_dir.is_some() && self.salt.is_some())
            .then(autosign::new_token);
        for i in &plan.instances {
            let spec = launch_spec(plan, group, i, token.as_deref())?;
            crate::plan::limits::check_user_data(&i.name, spec.user_data.as_deref().unwrap_or(""))?;
        }
        Ok(())
    }

    /// The provisioner the options name.
    pub(crate) fn provisioner(&self) -> Box<dyn Provision> {
        match (self.opts.provisioner, &self.salt) {
            (Provisioner::SaltCloud, Some(salt)) => Box::new(SaltCloudMap { salt: salt.clone() }),
            _ => Box::new(Native {
                cloud: self.cloud.clone(),
            }),
        }
    }
}

/// The idempotency token of one launch: at most 64 ASCII characters, stable
/// for a (cpid, name) pair.
pub fn client_token(cpid: Cpid, name: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in name.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("{cpid}-{h:016x}")
}

/// Native EC2 launches with a Salt-bootstrap user data.
struct Native {
    cloud: Arc<dyn CloudBackend>,
}

/// The native launch of one planned instance, its user data rendered
/// (with the run's autosign token, if any).
pub(crate) fn launch_spec(
    plan: &Plan,
    group: &GroupSpec,
    i: &PlannedInstance,
    autosign_token: Option<&str>,
) -> Result<LaunchSpec, Error> {
    let settings = render::launch_settings(plan, group, i);
    let settings = LaunchSettings::parse(&settings)
        .map_err(|e| rejected("reading the launch settings", &i.name, &e))?;
    let mut spec = LaunchSpec {
        name: i.name.clone(),
        zone: plan.zone.clone(),
        client_token: client_token(plan.cpid, &i.name),
        tags: i.tags.clone(),
        settings,
        user_data: None,
    };
    if let Some(token) = autosign_token {
        autosign::add_to_settings(&mut spec.settings, token);
    }
    let user_data = crate::user_data::render(&spec)
        .map_err(|e| rejected("rendering the user data", &i.name, &e.to_string()))?;
    spec.user_data = Some(user_data);
    Ok(spec)
}

impl Native {
    fn specs(job: &Job<'_>) -> Result<Vec<LaunchSpec>, Error> {
        job.plan
            .instances
            .iter()
            .map(|i| launch_spec(job.plan, job.group, i, job.autosign_token))
            .collect()
    }
}

#[async_trait]
impl Provision for Native {
    async fn provision(&self, job: &Job<'_>) -> Result<Provisioned, ProvisionFailed> {
        let specs = Self::specs(job).map_err(|error| ProvisionFailed {
            error,
            maybe_launched: false,
        })?;
        info!(instances = specs.len(), "launching with EC2 RunInstances");
        let chunk = job.max_inflight.map_or(specs.len(), |m| m as usize).max(1);
        let mut results: Vec<LaunchResult> = Vec::with_capacity(specs.len());
        for batch in specs.chunks(chunk) {
            if !results.is_empty() {
                // The batch's names and the ids it carries: an id key
                // lost since the last fence must stop the batch too.
                let keys = job.plan.keys_used_by(|n| batch.iter().any(|s| s.name == n));
                if let Err(e) = job.run.holdings.fence(&keys).await {
                    results.extend(batch.iter().map(|s| not_launched(&s.name, &e)));
                    continue;
                }
            }
            match self
                .cloud
                .launch(batch)
                .instrument(info_span!("cloud.launch", instances = batch.len()))
                .await
            {
                Ok(r) => results.extend(r),
                // Nothing launched yet: the whole run fails with the cloud's error.
                Err(e) if results.is_empty() => {
                    let maybe_launched = !matches!(
                        e.kind,
                        BackendErrorKind::Rejected | BackendErrorKind::Throttled
                    );
                    return Err(ProvisionFailed {
                        error: Error::backend("launching instances", e),
                        maybe_launched,
                    });
                }
                // Some instances exist: the rest of this batch failed, maybe for sure.
                Err(e) => results.extend(batch.iter().map(|spec| LaunchResult {
                    name: spec.name.clone(),
                    outcome: Err(LaunchFailure {
                        message: e.to_string(),
                        definite: e.kind == BackendErrorKind::Rejected,
                    }),
                })),
            }
            // The last batch is told by the run, with every provisioner's.
            if results.len() < specs.len() {
                job.run.progress(super::Progress::Launching {
                    done: results.len(),
                    total: specs.len(),
                });
            }
        }
        let raw = json!(results);
        Ok(Provisioned {
            results,
            raw,
            not_deployed: vec![],
            deploy_failed: vec![],
        })
    }
}

/// Settings of `name` the pillar got wrong (checked while planning, so
/// only an embedder's own provisioning path can meet it here).
fn rejected(during: &str, name: &str, why: &str) -> Error {
    let e = BackendError::new(
        BackendErrorKind::Rejected,
        format!("{name}: {why}; fix it in the group's pillar"),
    );
    Error::backend(during, e)
}

/// A launch that was not attempted because the run lost its keys.
fn not_launched(name: &str, e: &Error) -> LaunchResult {
    LaunchResult {
        name: name.to_string(),
        outcome: Err(LaunchFailure {
            message: format!("not launched: {e}"),
            definite: true,
        }),
    }
}

/// `salt-cloud -m <map>`, which creates (and deploys) every VM of the map.
struct SaltCloudMap {
    salt: Arc<dyn SaltExecutor>,
}

#[async_trait]
impl Provision for SaltCloudMap {
    async fn provision(&self, job: &Job<'_>) -> Result<Provisioned, ProvisionFailed> {
        let plan = job.plan;
        let map = plan
            .files
            .as_ref()
            .expect("plans made by Conductor name their files")
            .map
            .clone();
        info!(map = %map.display(), "provisioning with salt-cloud");
        let run = self
            .salt
            .cloud_map(&map)
            .instrument(info_span!("salt.cloud_map", map = %map.display()))
            .await
            .map_err(|e| ProvisionFailed {
                // Refused, or not started at all (salt-cloud missing): nothing ran.
                maybe_launched: !matches!(
                    e.kind,
                    BackendErrorKind::Rejected
                        | BackendErrorKind::Unreachable
                        | BackendErrorKind::Throttled
                ),
                error: Error::backend("running salt-cloud", e),
            })?;
        let results = plan
            .names()
            .into_iter()
            .map(|name| {
                let outcome = if run.ok.contains(&name) {
                    Ok(Launched {
                        name: name.clone(),
                        instance_id: String::new(),
                        detail: json!(null),
                    })
                } else {
                    // salt-cloud's error for a VM is definite: it either
                    // never created it, or created it before a later step
                    // failed, and then it shows within the release grace.
                    // A VM missing from its return may still come up.
                    let find = |list: &[(String, String)]| {
                        list.iter().find(|(n, _)| *n == name).map(|(_, m)| m.clone())
                    };
                    let reported = find(&run.failed);
                    Err(LaunchFailure {
                        definite: reported.is_some(),
                        message: reported.or_else(|| find(&run.lost)).unwrap_or_else(|| {
                            "salt-cloud reported no instance for it (its log says why); it may exist".into()
                        }),
                    })
                };
                LaunchResult { name, outcome }
            })
            .collect();
        Ok(Provisioned {
            results,
            raw: run.raw,
            not_deployed: run.not_deployed,
            deploy_failed: run.deploy_failed,
        })
    }
}
