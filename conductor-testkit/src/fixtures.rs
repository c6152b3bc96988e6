//! Pillar fixtures and request helpers: the devops example of DESIGN section 8.

use conductor_core::{CreateRequest, Env, Group, Pillar, Role, SystemName, Target, Zone};

/// The devops pillar of DESIGN section 8 (environment `test`, domain `foobar.com`).
pub const DEVOPS_PILLAR: &str = r#"conductor:
  environments:
    test: {domain: foobar.com, regions: [us-east-1, us-west-2]}
  groups:
    devops:
      provider: {size: t3.small, ssh_interface: private_ips, subnet_id: subnet-1}
      profile:
        image: ami-0abc
        script_args: -P stable 3007
        minion: {master: salt.foobar.com}
        startup_states: [devops.conductor]
      hooks: {pre_create: [orch.conductor_common], post_create: [orch.conductor_common]}
      roles:
        activemq: {basename: devops-mqXX.REGION.ENV, nodes: 2, size: t3.medium}
        nifi:
          cluster:
            nifi: {basename: devops-nifi-XX.REGION.ENV, nodes: 2}
            nifigr: {basename: devops-nifigr-XX.REGION.ENV, nodes: 1}
            nifi-dummy: {basename: devops-nifi-dummy-XX.REGION.ENV, nodes: 1}
      systems:
        small_test: [{role: nifi}, {role: activemq, count: 2}]
"#;

/// [`DEVOPS_PILLAR`] parsed.
pub fn devops_pillar() -> Pillar {
    Pillar::from_yaml_str(DEVOPS_PILLAR).expect("the fixture pillar is valid")
}

/// The seed's zone, `us-east-1a`.
pub fn zone() -> Zone {
    Zone::new("us-east-1a").unwrap()
}

/// `group=devops role=<role> [count=<n>] pillarenv=test region=us-east-1a`.
pub fn role_request(role: &str, count: Option<u32>) -> CreateRequest {
    CreateRequest::new(
        Group::new("devops").unwrap(),
        Env::new("test").unwrap(),
        zone(),
        Target::Role {
            role: Role::new(role).unwrap(),
            count,
        },
    )
}

/// `group=devops system=<system> pillarenv=test region=us-east-1a`.
pub fn system_request(system: &str) -> CreateRequest {
    CreateRequest::new(
        Group::new("devops").unwrap(),
        Env::new("test").unwrap(),
        zone(),
        Target::System(SystemName::new(system).unwrap()),
    )
}

/// The three commands the seed ran at the same time: `role=nifi`,
/// `role=activemq count=2`, `system=small_test`.
pub fn seed_requests() -> Vec<CreateRequest> {
    vec![
        role_request("nifi", None),
        role_request("activemq", Some(2)),
        system_request("small_test"),
    ]
}
