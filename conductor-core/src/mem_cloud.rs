//! `MemCloud`: an in-memory [`CloudBackend`], immediately consistent, with
//! EC2's idempotent client tokens. For `--cloud fake`, examples, doctests
//! and embedders' tests; the testkit wraps it with lag, latency and faults.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use async_trait::async_trait;
use serde_json::json;

use crate::backend::{BackendError, BackendErrorKind};
use crate::clock::CloudTime;
use crate::cloud::{
    CloudBackend, Instance, InstanceRef, InstanceState, InstanceTags, Inventory, LaunchResult,
    LaunchSpec, Launched, Scope, NAME_TAG,
};
use crate::names::Zone;
use crate::reserve::now_ms;

#[derive(Debug, Default)]
struct State {
    instances: Vec<Instance>,
    next_id: u64,
    tokens: HashMap<String, String>,
}

/// Instances in memory: a launch shows in the next inventory read.
#[derive(Debug, Default)]
pub struct MemCloud {
    state: Mutex<State>,
}

impl MemCloud {
    /// An empty cloud.
    pub fn new() -> Self {
        Self::default()
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds a running instance named `name` in `zone` with `tags` (the Name
    /// tag is added); returns its id.
    pub fn add_instance(&self, name: &str, zone: &Zone, tags: &[(&str, &str)]) -> String {
        let mut all: BTreeMap<String, String> = tags
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        all.insert(NAME_TAG.into(), name.into());
        let mut state = self.state();
        let id = next_id(&mut state);
        state.instances.push(Instance {
            id: id.clone(),
            region: zone.region(),
            zone: zone.to_string(),
            state: InstanceState::Running,
            launch_time: Some(now_ms() / 1000),
            instance_type: None,
            private_ip: None,
            tags: all,
        });
        id
    }

    /// Every instance, terminated ones included, in launch order.
    pub fn all_instances(&self) -> Vec<Instance> {
        self.state().instances.clone()
    }

    /// Live instances.
    pub fn live_instances(&self) -> Vec<Instance> {
        self.all_instances()
            .into_iter()
            .filter(|i| i.state.is_live())
            .collect()
    }
}

/// A private address of the fake VPC 10.0.0.0/16, from the id's counter.
fn private_ip(id: &str) -> String {
    let n = u64::from_str_radix(id.trim_start_matches("i-"), 16).unwrap_or(0);
    format!("10.0.{}.{}", (n / 250) % 256, n % 250 + 4)
}

fn next_id(state: &mut State) -> String {
    state.next_id += 1;
    format!("i-{:017x}", state.next_id)
}

#[async_trait]
impl CloudBackend for MemCloud {
    async fn inventory(&self, scope: &Scope) -> Result<Inventory, BackendError> {
        let instances = self
            .state()
            .instances
            .iter()
            .filter(|i| scope.matches(i))
            .cloned()
            .collect();
        Ok(Inventory { instances })
    }

    async fn launch(&self, specs: &[LaunchSpec]) -> Result<Vec<LaunchResult>, BackendError> {
        let mut state = self.state();
        let mut out = Vec::with_capacity(specs.len());
        for spec in specs {
            // A repeated client token answers with the earlier instance, as on EC2.
            let id = match state.tokens.get(&spec.client_token) {
                Some(id) => id.clone(),
                None => {
                    let id = next_id(&mut state);
                    state.instances.push(Instance {
                        id: id.clone(),
                        region: spec.zone.region(),
                        zone: spec.zone.to_string(),
                        state: InstanceState::Pending,
                        launch_time: Some(now_ms() / 1000),
                        instance_type: Some(spec.settings.size.clone()),
                        private_ip: Some(private_ip(&id)),
                        tags: spec.tags.clone(),
                    });
                    state.tokens.insert(spec.client_token.clone(), id.clone());
                    id
                }
            };
            out.push(LaunchResult {
                name: spec.name.clone(),
                outcome: Ok(Launched {
                    name: spec.name.clone(),
                    instance_id: id.clone(),
                    detail: json!({"InstanceId": id, "Placement": {"AvailabilityZone": spec.zone}, "Tags": spec.tags}),
                }),
            });
        }
        Ok(out)
    }

    async fn tag_instances(&self, tags: &[InstanceTags]) -> Result<(), BackendError> {
        let mut state = self.state();
        // All or nothing, like one CreateTags call: every id known first.
        if let Some(t) = tags
            .iter()
            .find(|t| !state.instances.iter().any(|i| i.id == t.instance.id))
        {
            return Err(BackendError::new(
                BackendErrorKind::Rejected,
                format!("InvalidInstanceID.NotFound: {}", t.instance.id),
            ));
        }
        for t in tags {
            if let Some(i) = state.instances.iter_mut().find(|i| i.id == t.instance.id) {
                i.tags
                    .extend(t.tags.iter().map(|(k, v)| (k.clone(), v.clone())));
            }
        }
        Ok(())
    }

    async fn terminate(&self, instances: &[InstanceRef]) -> Result<(), BackendError> {
        let mut state = self.state();
        for r in instances {
            match state.instances.iter_mut().find(|i| i.id == r.id) {
                Some(i) => i.state = InstanceState::Terminated,
                None => {
                    return Err(BackendError::new(
                        BackendErrorKind::Rejected,
                        format!("InvalidInstanceID.NotFound: {}", r.id),
                    ))
                }
            }
        }
        Ok(())
    }

    /// The fake cloud's clock is this host's, as an HTTP `Date` gives it
    /// (whole seconds).
    fn clock(&self) -> Option<CloudTime> {
        Some(CloudTime::now(now_ms() / 1000 * 1000))
    }
}
