//! `FakeSalt`: a [`SaltExecutor`] that records calls and answers like Salt.
//!
//! With a [`FakeCloud`] attached, `cloud_map` reads the generated map and
//! launches its instances there with the map's names and tags, like salt-cloud.
//! Faults: states failing on given minions or in given SLS, orchestrations
//! failing, and salt-cloud reporting an error for given VMs of a map.
//!
//! Minions: by default every minion id answers (as if each instance's minion
//! had joined), except the ones left pending. [`FakeSalt::with_minions`]
//! makes it a master that knows only the minions it is given (and those its
//! salt-cloud launched): others do not return, `minion_keys` lists the known
//! ones as accepted, and `delete_keys` forgets them, as a real master does
//! (the [`conformance::salt`](crate::conformance::salt) suite checks both).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use conductor_core::{BackendError, BackendErrorKind, CachedGrains};
use conductor_core::{CloudBackend, LaunchSettings, LaunchSpec};
use conductor_core::{
    CloudRunResult, CloudVm, MinionKeys, SaltExecutor, StateFailure, StateRunResult,
};
use conductor_core::{Env, Zone};
use serde_json::{json, Map, Value};

use crate::fake_cloud::FakeCloud;

/// One recorded call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SaltCall {
    /// `salt-cloud -m <map>`.
    CloudMap(PathBuf),
    /// Removal of salt-cloud's cache entries of destroyed VMs.
    CloudForget(Vec<CloudVm>),
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
    failing_sls: Mutex<BTreeSet<String>>,
    failing_orchestrations: Mutex<BTreeSet<String>>,
    /// Accepted minions it knows of (added, or launched by its salt-cloud).
    accepted: Mutex<BTreeSet<String>>,
    /// Only known minions answer (a master's view), not every id.
    known_only: bool,
    pending_minions: Mutex<BTreeSet<String>>,
    failing_vms: Mutex<BTreeMap<String, String>>,
    orchestration_delay: Mutex<std::time::Duration>,
    /// Grains of minions beyond `id`, as the master's cache holds them.
    grains: Mutex<BTreeMap<String, Map<String, Value>>>,
    /// The grains cache cannot be read (`cached_grains` fails as unreachable).
    grains_unreadable: Mutex<bool>,
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

    /// A master that knows only `minions` (accepted, answering) and those it
    /// launches or is told of later: any other id does not return.
    pub fn with_minions(minions: &[&str]) -> Self {
        Self {
            accepted: Mutex::new(minions.iter().map(|m| m.to_string()).collect()),
            known_only: true,
            ..Self::default()
        }
    }

    /// Accepts `minion`'s key: it answers and `minion_keys` lists it.
    pub fn add_minion(&self, minion: &str) {
        self.accepted.lock().unwrap().insert(minion.into());
    }

    /// Accepts `minion` and caches `grains` (an object) for it, as a master
    /// does once the minion has sent them: `cached_grains` lists them with
    /// `id`.
    pub fn set_grains(&self, minion: &str, grains: Value) {
        self.add_minion(minion);
        let map = match grains {
            Value::Object(m) => m,
            other => panic!("grains are an object, not {other}"),
        };
        self.grains.lock().unwrap().insert(minion.into(), map);
    }

    /// Makes `cached_grains` fail as a master that cannot be asked does.
    pub fn grains_unreadable(&self) {
        *self.grains_unreadable.lock().unwrap() = true;
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

    /// Makes the states of `sls` fail on every minion.
    pub fn fail_sls(&self, sls: &str) {
        self.failing_sls.lock().unwrap().insert(sls.into());
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

    /// Whether `minion` answers: not pending, and known unless every id is.
    fn answers(&self, minion: &str) -> bool {
        !self.pending_minions.lock().unwrap().contains(minion)
            && (!self.known_only || self.accepted.lock().unwrap().contains(minion))
    }
}

/// One state per SLS, as `test.succeed_without_changes` (or
/// `test.fail_without_changes` where `fails(sls)`) would return it.
fn state_result(
    minion: &str,
    sls: &[String],
    fails: impl Fn(&str) -> bool,
) -> (Value, Vec<StateFailure>) {
    let mut raw = Map::new();
    let mut failures = Vec::new();
    for (n, s) in sls.iter().enumerate() {
        let ok = !fails(s);
        let fun = if ok {
            "succeed_without_changes"
        } else {
            "fail_without_changes"
        };
        let id = format!("test_|-{s}_|-{s}_|-{fun}");
        let comment = if ok { "Success!" } else { "Failure!" };
        raw.insert(
            id.clone(),
            json!({"name": s, "result": ok, "comment": comment, "changes": {}, "__sls__": s, "__run_num__": n}),
        );
        if !ok {
            failures.push(StateFailure {
                minion: minion.into(),
                state: id,
                comment: comment.into(),
                log: None,
            });
        }
    }
    (Value::Object(raw), failures)
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
                    // salt-cloud deploys the minion and accepts its key.
                    self.add_minion(&r.name);
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

    async fn cloud_forget(&self, vms: &[CloudVm]) -> Result<(), BackendError> {
        self.record(SaltCall::CloudForget(vms.to_vec()));
        Ok(())
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
        let failing_sls = self.failing_sls.lock().unwrap().clone();
        let mut out = StateRunResult::default();
        let mut raw = Map::new();
        for t in targets {
            if !self.answers(t) {
                // As SaltCli reports a target missing from salt's return.
                out.failures.push(StateFailure {
                    minion: t.clone(),
                    state: "<return>".into(),
                    comment: "the minion did not return".into(),
                    log: None,
                });
                continue;
            }
            let (r, f) = state_result(t, sls, |s| failing.contains(t) || failing_sls.contains(s));
            raw.insert(t.clone(), r);
            out.minions.push(t.clone());
            out.failures.extend(f);
        }
        out.raw = Value::Object(raw);
        Ok(out)
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
        let failing = self.failing_orchestrations.lock().unwrap().contains(sls);
        let (r, failures) = state_result("master", &[sls.to_string()], |_| failing);
        Ok(StateRunResult {
            raw: json!({"data": {"master": r}, "outputter": "highstate", "retcode": i32::from(failing)}),
            minions: vec!["master".into()],
            failures,
        })
    }

    async fn minion_keys(&self) -> Result<MinionKeys, BackendError> {
        let pending = self.pending_minions.lock().unwrap().clone();
        let accepted = self.accepted.lock().unwrap().clone();
        Ok(MinionKeys {
            accepted: accepted.difference(&pending).cloned().collect(),
            pending: pending.into_iter().collect(),
            ..MinionKeys::default()
        })
    }

    async fn ping(&self, targets: &[String]) -> Result<Vec<String>, BackendError> {
        Ok(targets
            .iter()
            .filter(|t| self.answers(t))
            .cloned()
            .collect())
    }

    async fn delete_keys(&self, names: &[String]) -> Result<(), BackendError> {
        self.record(SaltCall::DeleteKeys(names.to_vec()));
        let mut accepted = self.accepted.lock().unwrap();
        let mut grains = self.grains.lock().unwrap();
        for n in names {
            accepted.remove(n);
            // A master drops the cached data of a minion whose key is gone.
            grains.remove(n);
        }
        Ok(())
    }

    async fn cached_grains(&self) -> Result<CachedGrains, BackendError> {
        if *self.grains_unreadable.lock().unwrap() {
            return Err(BackendError::new(
                BackendErrorKind::Unreachable,
                "salt-run cache.grains: the master's cache cannot be read (FakeSalt told so)",
            ));
        }
        let grains = self.grains.lock().unwrap();
        Ok(self
            .accepted
            .lock()
            .unwrap()
            .iter()
            .map(|m| {
                let mut g = grains.get(m).cloned().unwrap_or_default();
                g.insert("id".into(), json!(m));
                (m.clone(), Value::Object(g))
            })
            .collect())
    }
}
