//! A downstream crate: plans a role against the in-memory cloud with
//! `conductor-core` alone (default features off, no AWS SDK in its tree).

use std::sync::Arc;

use conductor_core::{
    Conductor, CreateRequest, Env, Group, MemCloud, MemReserver, Options, Pillar, Provisioner,
    Role, StaticPillar, Target, Zone,
};

const PILLAR: &str = r#"
conductor:
  environments:
    lab: {domain: example.org}
  groups:
    web:
      provider: {size: small}
      profile: {image: vm-template-1}
      roles:
        frontend: {basename: web-feXX.REGION.ENV, nodes: 2}
"#;

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
    let request = CreateRequest::new(
        Group::new("web")?,
        Env::new("lab")?,
        Zone::new("eu-west-1b")?,
        Target::Role {
            role: Role::new("frontend")?,
            count: None,
        },
    );
    let plan = conductor.plan(&request).await?;
    for instance in &plan.instances {
        println!("{}", instance.name);
    }
    assert_eq!(plan.instances.len(), 2);
    Ok(())
}
