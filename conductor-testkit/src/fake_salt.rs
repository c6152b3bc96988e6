//! `FakeSalt`: a [`SaltExecutor`] that records calls and answers like Salt.
//!
//! With a [`FakeCloud`] attached, `cloud_map` reads the generated map and
//! launches its instances there with the map's names and tags, like salt-cloud.
//! Faults: states failing on given minions, orchestrations failing, and
//! salt-cloud reporting an error for given VMs of a map.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use conductor_core::BackendError;
use conductor_core::{
    CloudBackend, InstanceRef, LaunchSettings, LaunchSpec, Scope, Selector, NAME_TAG,
};
use conductor_core::{CloudRunResult, MinionKeys, SaltExecutor, StateFailure, StateRunResult};
use conductor_core::{Env, Zone};
use serde_json::{json, Map, Value};

use crate::fake_cloud::FakeCloud;

/// One recorded call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SaltCall {
    /// `salt-cloud -m <map>`.
    CloudMap(PathBuf),
    /// `salt-cloud -d <names>`.
    CloudDestroy(Vec<String>),
    /// `salt -L <targets> state.apply <sls>`.
    StateApply {
        /// Minions targeted.
        targets: Vec<String>,
        /// SLS applied.
        sls: Vec<String>,
        /// saltenv.
        saltenv: String,
    },
    /// `salt-key -d <names>`.
    DeleteKeys(Vec<String>),
    /// `salt-run state.orchestrate <sls>`.
    Orchestrate {
        /// SLS run.
        sls: String,
        /// saltenv.
        saltenv: String,
    },
}

/// Records calls; fails what it is told to fail.
#[derive(Debug, Default)]
pub struct FakeSalt {
    calls: Mutex<Vec<SaltCall>>,
    failing_minions: Mutex<BTreeSet<String>>,
    failing_orchestrations: Mutex<BTreeSet<String>>,
    pending_minions: Mutex<BTreeSet<String>>,
    failing_vms: Mutex<BTreeMap<String, String>>,
    orchestration_delay: Mutex<std::time::Duration>,
    cloud: Option<(Arc<FakeCloud>, Zone)>,
}

impl FakeSalt {
    /// A Salt whose states all succeed and whose salt-cloud launches nothing.
    pub fn new() -> Self {
        Self::default()
    }

    /// A Salt whose salt-cloud launches map instances into `cloud` in `zone`.
    pub fn with_cloud(cloud: Arc<FakeCloud>, zone: Zone) -> Self {
        Self {
            cloud: Some((cloud, zone)),
            ..Self::default()
        }
    }

    /// Makes each orchestration take `d` (a slow hook, for schedules on a
    /// paused clock).
    pub fn slow_orchestration(&self, d: std::time::Duration) {
        *self.orchestration_delay.lock().unwrap() = d;
    }

    /// Makes every state on `minion` fail.
    pub fn fail_states_on(&self, minion: &str) {
        self.failing_minions.lock().unwrap().insert(minion.into());
    }

    /// Leaves `minion`'s key pending: it never answers a ping.
    pub fn leave_pending(&self, minion: &str) {
        self.pending_minions.lock().unwrap().insert(minion.into());
    }

    /// Makes orchestration of `sls` fail.
    pub fn fail_orchestration(&self, sls: &str) {
        self.failing_orchestrations
            .lock()
            .unwrap()
            .insert(sls.into());
    }

    /// Makes salt-cloud report `message` as the error of VM `name` in every
    /// map, without launching it.
    pub fn fail_vm(&self, name: &str, message: &str) {
        self.failing_vms
            .lock()
            .unwrap()
            .insert(name.into(), message.into());
    }

    /// The calls so far, in order.
    pub fn calls(&self) -> Vec<SaltCall> {
        self.calls.lock().unwrap().clone()
    }

    fn record(&self, call: SaltCall) {
        self.calls.lock().unwrap().push(call);
    }
}

fn state_result(minion: &str, sls: &str, ok: bool) -> (Value, Option<StateFailure>) {
    let id = format!("test_|-{sls}_|-{sls}_|-succeed_without_changes");
    let comment = if ok { "Success!" } else { "Failure!" };
    let raw =
        json!({ id.clone(): {"result": ok, "comment": comment, "changes": {}, "__run_num__": 0} });
    let failure = (!ok).then(|| StateFailure {
        minion: minion.into(),
        state: id,
        comment: comment.into(),
        log: None,
    });
    (raw, failure)
}

fn read_map(path: &Path) -> Result<Vec<(String, Value)>, BackendError> {
    Ok(conductor_core::read_map_file(path)?
        .into_iter()
        .map(|(name, overrides)| (name, serde_json::to_value(overrides).unwrap_or(Value::Null)))
        .collect())
}

#[async_trait]
impl SaltExecutor for FakeSalt {
    async fn cloud_map(&self, map: &Path) -> Result<CloudRunResult, BackendError> {
        self.record(SaltCall::CloudMap(map.to_path_buf()));
        let failing = self.failing_vms.lock().unwrap().clone();
        let (refused, vms): (Vec<_>, Vec<_>) = read_map(map)?
            .into_iter()
            .partition(|(name, _)| failing.contains_key(name));
        let mut raw = Map::new();
        let mut out = CloudRunResult::default();
        for (name, _) in refused {
            let message = failing[&name].clone();
            raw.insert(name.clone(), json!({ "Error": message }));
            out.failed.push((name, message));
        }
        let Some((cloud, zone)) = &self.cloud else {
            out.raw = Value::Object(raw);
            return Ok(out);
        };
        let specs: Vec<LaunchSpec> = vms
            .iter()
            .map(|(name, o)| LaunchSpec {
                name: name.clone(),
                zone: zone.clone(),
                client_token: format!("salt-cloud-{name}"),
                tags: serde_json::from_value(o.get("tag").cloned().unwrap_or(json!({})))
                    .unwrap_or_default(),
                // The map's overrides; salt-cloud takes the image from the
                // profile, which this fake does not read.
                settings: LaunchSettings::parse(o)
                    .unwrap_or_else(|_| LaunchSettings::with_image("ami-fake")),
                user_data: None,
            })
            .collect();
        let results = cloud.launch(&specs).await?;
        for r in results {
            match r.outcome {
                Ok(l) => {
                    raw.insert(r.name.clone(), l.detail);
                    out.ok.push(r.name);
                }
                Err(f) => {
                    raw.insert(r.name.clone(), json!({"Error": f.message}));
                    out.failed.push((r.name, f.message));
                }
            }
        }
        out.raw = Value::Object(raw);
        Ok(out)
    }

    async fn cloud_destroy(&self, names: &[String]) -> Result<CloudRunResult, BackendError> {
        self.record(SaltCall::CloudDestroy(names.to_vec()));
        let mut out = CloudRunResult {
            raw: json!({}),
            ok: vec![],
            failed: vec![],
        };
        if let Some((cloud, zone)) = &self.cloud {
            let scope = Scope {
                region: zone.region(),
                select: names
                    .iter()
                    .map(|n| Selector::Tag {
                        key: NAME_TAG.into(),
                        value: n.clone(),
                    })
                    .collect(),
            };
            let refs: Vec<InstanceRef> = cloud
                .inventory(&scope)
                .await?
                .live()
                .map(|i| i.to_ref())
                .collect();
            cloud.terminate(&refs).await?;
            out.ok = refs.iter().filter_map(|r| r.name.clone()).collect();
        } else {
            out.ok = names.to_vec();
        }
        out.raw = json!({"destroyed": out.ok});
        Ok(out)
    }

    async fn state_apply(
        &self,
        targets: &[String],
        sls: &[String],
        saltenv: &Env,
    ) -> Result<StateRunResult, BackendError> {
        self.record(SaltCall::StateApply {
            targets: targets.to_vec(),
            sls: sls.to_vec(),
            saltenv: saltenv.to_string(),
        });
        let failing = self.failing_minions.lock().unwrap().clone();
        let mut raw = Map::new();
        let mut failures = Vec::new();
        for t in targets {
            let (r, f) = state_result(t, &sls.join(","), !failing.contains(t));
            raw.insert(t.clone(), r);
            failures.extend(f);
        }
        Ok(StateRunResult {
            raw: Value::Object(raw),
            minions: targets.to_vec(),
            failures,
        })
    }

    async fn orchestrate(
        &self,
        sls: &str,
        saltenv: &Env,
        _pillarenv: &Env,
    ) -> Result<StateRunResult, BackendError> {
        self.record(SaltCall::Orchestrate {
            sls: sls.into(),
            saltenv: saltenv.to_string(),
        });
        let delay = *self.orchestration_delay.lock().unwrap();
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        let ok = !self.failing_orchestrations.lock().unwrap().contains(sls);
        let (r, f) = state_result("master", sls, ok);
        Ok(StateRunResult {
            raw: json!({"data": {"master": r}}),
            minions: vec!["master".into()],
            failures: f.into_iter().collect(),
        })
    }

    async fn minion_keys(&self) -> Result<MinionKeys, BackendError> {
        Ok(MinionKeys {
            pending: self
                .pending_minions
                .lock()
                .unwrap()
                .iter()
                .cloned()
                .collect(),
            ..MinionKeys::default()
        })
    }

    async fn ping(&self, targets: &[String]) -> Result<Vec<String>, BackendError> {
        let pending = self.pending_minions.lock().unwrap().clone();
        Ok(targets
            .iter()
            .filter(|t| !pending.contains(*t))
            .cloned()
            .collect())
    }

    async fn delete_keys(&self, names: &[String]) -> Result<(), BackendError> {
        self.record(SaltCall::DeleteKeys(names.to_vec()));
        Ok(())
    }
}
