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

/// The top file of [`write_jinja_pillar`]: each of pillarenvs `test` and
/// `prod` assigns its own sls to every minion id (`'*'`).
pub const JINJA_PILLAR_TOP: &str =
    "test:\n  '*':\n    - conductor.test\nprod:\n  '*':\n    - conductor.prod\n";

/// The Jinja pillar of one env: `{% set %}` values and a loop over the roles.
fn jinja_pillar(env: &str, domain: &str, roles: &str) -> String {
    format!(
        r#"{{% set domain = '{domain}' %}}
{{% set roles = {roles} %}}
conductor:
  environments:
    {env}: {{domain: {{{{ domain }}}}, regions: [us-east-1]}}
  groups:
    devops:
      provider: {{size: t3.small, ssh_interface: private_ips}}
      profile:
        image: ami-0abc
        minion: {{master: salt.{{{{ domain }}}}}}
      roles:
{{% for role, nodes in roles %}}
        {{{{ role }}}}: {{basename: devops-{{{{ role }}}}XX.REGION.ENV, nodes: {{{{ nodes }}}}, size: t3.medium}}
{{% endfor %}}
"#
    )
}

/// Writes a Jinja pillar for pillarenvs `test` (domain `foobar.com`, roles
/// `mq` and `kafka`) and `prod` (domain `example.org`, role `mq` only)
/// under the pillar root `root`, served as both envs (e.g.
/// `SaltLab::pillar_dir`): [`JINJA_PILLAR_TOP`], `conductor/test.sls`,
/// `conductor/prod.sls`. [`jinja_pillar_rendered`] is what each renders to.
pub fn write_jinja_pillar(root: &std::path::Path) {
    let dir = root.join("conductor");
    std::fs::create_dir_all(&dir).expect("pillar dir");
    std::fs::write(root.join("top.sls"), JINJA_PILLAR_TOP).expect("top.sls");
    let test = jinja_pillar("test", "foobar.com", "[('mq', 2), ('kafka', 3)]");
    let prod = jinja_pillar("prod", "example.org", "[('mq', 1)]");
    std::fs::write(dir.join("test.sls"), test).expect("test.sls");
    std::fs::write(dir.join("prod.sls"), prod).expect("prod.sls");
}

/// What the pillar [`write_jinja_pillar`] wrote for `env` (`test` or `prod`)
/// renders to, as plain YAML.
pub fn jinja_pillar_rendered(env: &str) -> String {
    let (domain, roles) = match env {
        "test" => (
            "foobar.com",
            "        mq: {basename: devops-mqXX.REGION.ENV, nodes: 2, size: t3.medium}\n        kafka: {basename: devops-kafkaXX.REGION.ENV, nodes: 3, size: t3.medium}\n",
        ),
        "prod" => (
            "example.org",
            "        mq: {basename: devops-mqXX.REGION.ENV, nodes: 1, size: t3.medium}\n",
        ),
        other => panic!("the Jinja pillar has envs test and prod, not {other}"),
    };
    format!(
        "conductor:\n  environments:\n    {env}: {{domain: {domain}, regions: [us-east-1]}}\n  groups:\n    devops:\n      provider: {{size: t3.small, ssh_interface: private_ips}}\n      profile:\n        image: ami-0abc\n        minion: {{master: salt.{domain}}}\n      roles:\n{roles}"
    )
}
