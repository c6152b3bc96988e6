//! The Salt steps of a run: orchestration hooks and startup states, each
//! logged under the run's CPID.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde_json::json;
use tracing::{info, info_span, warn, Instrument};

use super::{write_json_log, Conductor};
use crate::cpid::Cpid;
use crate::error::{BackendError, BackendErrorKind, Error};
use crate::layout::log_rand;
use crate::names::{Env, Group};
use crate::pillar::{GroupSpec, RoleSpec};
use crate::salt::{StateFailure, StateRunResult};

impl Conductor {
    /// Applies each target's startup states (its role's, or the group
    /// profile's), one `state.apply` per distinct list, logged per call.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn startup_states(
        &self,
        cpid: Cpid,
        group_name: &Group,
        group: &GroupSpec,
        targets: &[(String, &RoleSpec)],
        saltenv: &Env,
        logs: &mut Vec<PathBuf>,
        skipped: &mut Vec<String>,
    ) -> Result<Vec<StateFailure>, Error> {
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
        if by_sls.is_empty() {
            return Ok(vec![]);
        }
        let Some(salt) = &self.salt else {
            skipped.push("startup states: no Salt executor configured".into());
            return Ok(vec![]);
        };
        let mut failures = Vec::new();
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
        }
        Ok(failures)
    }

    /// Runs orchestration hooks in order, stopping at the first failure.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn hooks(
        &self,
        hooks: &[String],
        saltenv: &Env,
        pillarenv: &Env,
        cpid: Cpid,
        logs: &mut Vec<PathBuf>,
        skipped: &mut Vec<String>,
    ) -> Result<Vec<StateFailure>, Error> {
        if hooks.is_empty() {
            return Ok(vec![]);
        }
        let Some(salt) = &self.salt else {
            skipped.push(format!(
                "orchestration hooks {}: no Salt executor configured",
                hooks.join(", ")
            ));
            return Ok(vec![]);
        };
        let mut failures = Vec::new();
        for sls in hooks {
            info!(%sls, "running orchestration hook");
            let run = salt
                .orchestrate(sls, saltenv, pillarenv)
                .instrument(info_span!("salt.orchestrate", %sls))
                .await;
            let path = self.layout.orch_log(cpid, sls, log_rand());
            failures.extend(
                self.log_state_run(run, path, logs, &format!("orchestration {sls}"))
                    .await?,
            );
            if !failures.is_empty() {
                break;
            }
        }
        Ok(failures)
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
