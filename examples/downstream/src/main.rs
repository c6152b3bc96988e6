//! A downstream crate: plans a role against the in-memory cloud with
//! `conductor-core` alone (default features off, no AWS SDK in its tree).

use std::sync::Arc;

use conductor_core::{
    Conductor, CreateRequest, Env, Group, MemCloud, MemReserver, Options, Pillar, Provisioner,
    Role, StaticPillar, Target, Zone,
};

/// The pillar, as a file the crate ships.
const PILLAR: &str = include_str!("../pillar.yaml");

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let conductor = Conductor::builder()
        .cloud(Arc::new(MemCloud::new()))
        .reserver(Arc::new(MemReserver::new()))
        .pillar(Arc::new(StaticPillar(Pillar::from_yaml_str(PILLAR)?)))
        .options(Options {
            provisioner: Provisioner::Ec2,
            ..Options::default()
        })
        .build()?;
    let env = Env::new("lab")?;
    let request = CreateRequest {
        group: Group::new("web")?,
        saltenv: env.clone(),
        pillarenv: env,
        zone: Zone::new("eu-west-1b")?,
        target: Target::Role {
            role: Role::new("frontend")?,
            count: Some(2),
        },
        cpid: None,
    };
    let plan = conductor.plan(&request).await?;
    for instance in &plan.instances {
        println!("{}", instance.name);
    }
    assert_eq!(plan.instances.len(), 2);
    Ok(())
}
