//! Embedding Conductor with a `CloudBackend` of your own.
//!
//! The cloud here is a list of machines kept in memory (think: a CMDB or an
//! on-premises VM API). Conductor brings the naming engine, the reservations
//! (`FsReserver` in a temporary directory) and the lifecycle; the pillar comes
//! from a YAML string (`Pillar::from_yaml_str`, served by `StaticPillar`).
//!
//! Run it: `cargo run -p conductor-core --example embed`

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use conductor_core::{
    BackendError, CloudBackend, Conductor, CreateRequest, Env, FsReserver, Group, Instance,
    InstanceRef, InstanceState, Inventory, LaunchResult, LaunchSpec, Launched, Layout, Options,
    Pillar, Provisioner, Role, Scope, StaticPillar, Target, Zone,
};

/// A cloud that keeps its machines in a vector.
#[derive(Debug, Default)]
struct ListCloud {
    machines: Mutex<Vec<Instance>>,
}

#[async_trait]
impl CloudBackend for ListCloud {
    async fn inventory(&self, scope: &Scope) -> Result<Inventory, BackendError> {
        let machines = self.machines.lock().unwrap();
        Ok(Inventory {
            instances: machines
                .iter()
                .filter(|i| scope.matches(i))
                .cloned()
                .collect(),
        })
    }

    async fn launch(&self, specs: &[LaunchSpec]) -> Result<Vec<LaunchResult>, BackendError> {
        let mut machines = self.machines.lock().unwrap();
        Ok(specs
            .iter()
            .map(|spec| {
                let id = format!("vm-{}", machines.len() + 1);
                machines.push(Instance {
                    id: id.clone(),
                    region: spec.zone.region(),
                    zone: spec.zone.to_string(),
                    state: InstanceState::Running,
                    launch_time: None,
                    instance_type: None,
                    private_ip: None,
                    tags: spec.tags.clone(),
                });
                let detail = serde_json::json!({ "id": id, "size": spec.settings.size });
                LaunchResult {
                    name: spec.name.clone(),
                    outcome: Ok(Launched {
                        name: spec.name.clone(),
                        instance_id: id,
                        detail,
                    }),
                }
            })
            .collect())
    }

    async fn terminate(&self, refs: &[InstanceRef]) -> Result<(), BackendError> {
        let mut machines = self.machines.lock().unwrap();
        machines.retain(|m| !refs.iter().any(|r| r.id == m.id));
        Ok(())
    }
}

const PILLAR: &str = r#"
conductor:
  environments:
    lab: {domain: example.org}
  groups:
    web:
      provider: {size: small}
      profile: {image: vm-template-1}
      roles:
        frontend: {basename: web-feXX.REGION.ENV, nodes: 3}
"#;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let layout = Layout::new(dir.path().join("etc"), dir.path().join("runner"));
    let cloud = Arc::new(ListCloud::default());
    let conductor = Conductor::builder()
        .cloud(cloud.clone())
        .reserver(Arc::new(FsReserver::new(&layout)))
        .pillar(Arc::new(StaticPillar(Pillar::from_yaml_str(PILLAR)?)))
        .layout(layout)
        .options(Options {
            provisioner: Provisioner::Ec2,
            release_grace: Duration::ZERO,
            ..Options::default()
        })
        .build()?;

    let request = CreateRequest::new(
        Group::new("web")?,
        Env::new("lab")?,
        Zone::new("eu-west-1b")?,
        Target::Role {
            role: Role::new("frontend")?,
            count: None,
        },
    );
    let first = conductor.create(&request).await?;
    let second = conductor.create(&request).await?;
    for name in first.launched.iter().chain(&second.launched) {
        println!("{name}");
    }
    assert_eq!(second.launched[0], "web-fe04.eu-west-1b.lab.example.org");
    Ok(())
}
