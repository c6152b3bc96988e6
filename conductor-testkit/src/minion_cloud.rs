//! `MinionCloud`: a wrapper around any [`CloudBackend`] that does what an EC2
//! instance's cloud-init would: for every instance launched, it starts one
//! real `salt-minion` in a [`SaltLab`], configured from that instance's user
//! data (the document the native provisioner produced, parsed for its minion
//! config and grains), and stops it when the instance is terminated (as it
//! stops a minion the stand-in salt-cloud deployed for an instance).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use conductor_core::user_data;
use conductor_core::{BackendError, BackendErrorKind};
use conductor_core::{
    CloudBackend, InstanceRef, InstanceTags, Inventory, LaunchResult, LaunchSpec, Scope,
};
use conductor_core::{CloudTime, Region};
use serde_json::{Map, Value};

use crate::salt_lab::SaltLab;

/// A cloud whose launched instances run real minions in a [`SaltLab`].
#[derive(Debug)]
pub struct MinionCloud {
    inner: Arc<dyn CloudBackend>,
    lab: Arc<SaltLab>,
    /// Grains set over the user data's, by instance name (to make one
    /// minion misbehave in a test).
    overrides: Mutex<BTreeMap<String, Map<String, Value>>>,
    /// Instance id -> name of the instances this wrapper started minions for.
    started: Mutex<BTreeMap<String, String>>,
}

impl MinionCloud {
    /// Wraps `inner`; minions join `lab`'s master.
    pub fn new(inner: Arc<dyn CloudBackend>, lab: Arc<SaltLab>) -> Self {
        MinionCloud {
            inner,
            lab,
            overrides: Mutex::new(BTreeMap::new()),
            started: Mutex::new(BTreeMap::new()),
        }
    }

    /// Gives the minion of instance `name` these grains over the ones its
    /// user data sets (e.g. a wrong autosign token, or `lab_fail_startup`).
    pub fn override_grains(&self, name: &str, grains: Map<String, Value>) {
        self.overrides
            .lock()
            .unwrap()
            .insert(name.to_string(), grains);
    }

    /// The minion config of a launch, read back from its user data.
    fn minion_config(&self, spec: &LaunchSpec) -> Result<Map<String, Value>, BackendError> {
        let refused = |why: &str| {
            BackendError::new(
                BackendErrorKind::Rejected,
                format!("MinionCloud cannot start a minion for {}: {why}", spec.name),
            )
        };
        let text = spec
            .user_data
            .as_deref()
            .ok_or_else(|| refused("the launch carries no user data"))?;
        let mut config = user_data::parse(text)
            .ok_or_else(|| refused("its user data is not a Conductor cloud-init document"))?
            .minion;
        if let Some(extra) = self.overrides.lock().unwrap().get(&spec.name) {
            let grains = config
                .entry("grains")
                .or_insert_with(|| Value::Object(Map::new()));
            if let Value::Object(g) = grains {
                g.extend(extra.clone());
            }
        }
        Ok(config)
    }
}

#[async_trait]
impl CloudBackend for MinionCloud {
    async fn inventory(&self, scope: &Scope) -> Result<Inventory, BackendError> {
        self.inner.inventory(scope).await
    }

    async fn launch(&self, specs: &[LaunchSpec]) -> Result<Vec<LaunchResult>, BackendError> {
        // Refuse before anything is launched, as a cloud refuses bad input.
        let configs = specs
            .iter()
            .map(|s| self.minion_config(s))
            .collect::<Result<Vec<_>, _>>()?;
        let results = self.inner.launch(specs).await?;
        for (r, config) in results.iter().zip(configs) {
            if let Ok(launched) = &r.outcome {
                self.lab.start_minion(&config);
                self.started
                    .lock()
                    .unwrap()
                    .insert(launched.instance_id.clone(), r.name.clone());
            }
        }
        Ok(results)
    }

    async fn tag_instances(&self, tags: &[InstanceTags]) -> Result<(), BackendError> {
        self.inner.tag_instances(tags).await
    }

    async fn terminate(&self, instances: &[InstanceRef]) -> Result<(), BackendError> {
        self.inner.terminate(instances).await?;
        for i in instances {
            let known = self.started.lock().unwrap().remove(&i.id);
            if let Some(name) = known.or_else(|| i.name.clone()) {
                self.lab.stop_minion(&name);
                // A minion the stand-in salt-cloud deployed dies with its
                // instance too (Conductor terminates salt-cloud's VMs by id).
                self.lab.stop_detached_minion(&name);
            }
        }
        Ok(())
    }

    async fn wait_visible(
        &self,
        region: &Region,
        names: &[String],
        timeout: Duration,
    ) -> Result<BTreeSet<String>, BackendError> {
        self.inner.wait_visible(region, names, timeout).await
    }
    fn clock(&self) -> Option<CloudTime> {
        self.inner.clock()
    }
}
