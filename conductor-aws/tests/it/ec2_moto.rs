//! `Ec2Backend` against a real `moto_server`: the CloudBackend conformance
//! suite, the seed scenarios with the native provisioner, destroy by cpid.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use conductor_aws::ec2::Ec2Backend;
use conductor_core::{CloudBackend, Scope};
use conductor_core::{Conductor, Env, Group, InstanceQuery, Selection};
use conductor_testkit::conformance::cloud::{run_all, CloudFixture};
use conductor_testkit::fixtures;
use conductor_testkit::harness::Harness;
use conductor_testkit::moto::{subnet_in, MotoServer, ACCESS_KEY_ID, SECRET_ACCESS_KEY};

/// us-east-1 of `moto`, with its throwaway credentials.
fn builder(moto: &MotoServer) -> conductor_aws::ec2::Ec2BackendBuilder {
    Ec2Backend::builder()
        .region("us-east-1")
        .endpoint_url(moto.endpoint())
        .static_credentials(ACCESS_KEY_ID, SECRET_ACCESS_KEY)
        .max_attempts(3)
}

async fn backend(moto: &MotoServer) -> Ec2Backend {
    builder(moto).build().await
}

/// The conformance suites' launches: us-east-1a, a t3.small of any image.
fn conformance_fixture() -> CloudFixture {
    CloudFixture {
        zone: fixtures::zone(),
        settings: conductor_core::LaunchSettings::parse(
            &serde_json::json!({"image": "ami-0abc", "size": "t3.small"}),
        )
        .unwrap(),
        visible_timeout: Duration::from_secs(20),
    }
}

/// A subnet in us-east-1a, and the devops pillar using it.
fn pillar_with_subnet(moto: &MotoServer, nodes: u32) -> conductor_core::Pillar {
    let subnet = subnet_in(&moto.endpoint(), &fixtures::zone());
    let yaml = fixtures::DEVOPS_PILLAR
        .replace(
            "subnet_id: subnet-1",
            &format!("subnet_id: {}", subnet.subnet_id),
        )
        .replace(
            "nodes: 2, size: t3.medium",
            &format!("nodes: {nodes}, size: t3.medium"),
        );
    conductor_core::Pillar::from_yaml_str(&yaml).unwrap()
}

/// `pillar`, file reservations, and patient retries for moto's latency.
fn harness(pillar: conductor_core::Pillar) -> Harness {
    Harness::new()
        .with_pillar(pillar)
        .with_fs_reserver()
        .with_options(|o| {
            o.backoff_base = Duration::from_millis(20);
            o.backoff_max = Duration::from_millis(500);
            o.max_attempts = 40;
        })
}

fn conductor(ec2: &Ec2Backend, h: &Harness) -> Conductor {
    h.builder_on(Arc::new(ec2.clone())).build().unwrap()
}

/// Every live instance of us-east-1 as moto's own DescribeInstances reports
/// it: no filters, every page, terminated ones left out here.
async fn moto_instances(ec2: &Ec2Backend) -> Vec<conductor_core::Instance> {
    let region = fixtures::zone().region();
    let mut pages = ec2
        .client(&region)
        .describe_instances()
        .into_paginator()
        .send();
    let mut out = Vec::new();
    while let Some(page) = pages.next().await {
        for r in page.unwrap().reservations() {
            for i in r.instances() {
                let state = i.state().and_then(|s| s.name()).unwrap().as_str();
                if state == "terminated" {
                    continue;
                }
                out.push(conductor_core::Instance {
                    id: i.instance_id().unwrap().to_string(),
                    region: region.clone(),
                    zone: i
                        .placement()
                        .and_then(|p| p.availability_zone())
                        .unwrap()
                        .to_string(),
                    state: conductor_core::InstanceState::parse(state).unwrap(),
                    launch_time: None,
                    instance_type: None,
                    private_ip: None,
                    tags: i
                        .tags()
                        .iter()
                        .map(|t| (t.key().unwrap().to_string(), t.value().unwrap().to_string()))
                        .collect(),
                });
            }
        }
    }
    out
}

#[tokio::test]
async fn ec2_backend_conforms_on_moto() {
    let moto = MotoServer::start();
    let ec2 = backend(&moto).await;
    run_all(&ec2, &conformance_fixture()).await;
    // The answers' `Date` (moto's, through the strict front) is the
    // cloud's clock a run checks its own against.
    assert!(ec2.clock().is_some(), "EC2's answers carry a Date");
}

#[tokio::test]
async fn seed_mq01_mq02_then_three_nodes_launch_mq03_to_mq05_with_all_tags() {
    let moto = MotoServer::start();
    let ec2 = backend(&moto).await;
    let h = harness(pillar_with_subnet(&moto, 3));
    let c = conductor(&ec2, &h);
    // The two existing instances carry only a Name tag, as if built by hand.
    let f = CloudFixture {
        zone: fixtures::zone(),
        settings: conductor_core::LaunchSettings::parse(&serde_json::json!({"image": "ami-0abc"}))
            .unwrap(),
        visible_timeout: Duration::from_secs(5),
    };
    let mut existing = conductor_testkit::conformance::cloud::specs(&f, "devops-mq", 2);
    for s in &mut existing {
        s.name = s
            .name
            .replace(".conformance.example.com", ".test.foobar.com");
        s.tags = BTreeMap::from([("Name".to_string(), s.name.clone())]);
    }
    assert!(ec2
        .launch(&existing)
        .await
        .unwrap()
        .iter()
        .all(|r| r.outcome.is_ok()));

    let report = c
        .create(&fixtures::role_request("activemq", None))
        .await
        .unwrap();
    assert!(report.success(), "{report:?}");
    let expected: Vec<String> = ["03", "04", "05"]
        .iter()
        .map(|i| format!("devops-mq{i}.us-east-1a.test.foobar.com"))
        .collect();
    assert_eq!(report.launched, expected);
    let all = moto_instances(&ec2).await;
    assert_eq!(all.len(), 5);
    let cpid = report.plan.cpid.to_string();
    for name in &expected {
        let i = all
            .iter()
            .find(|i| i.name() == Some(name))
            .expect("in moto");
        assert_eq!(i.zone, "us-east-1a");
        for (k, v) in [
            ("conductor:cpid", cpid.as_str()),
            ("conductor:env", "test"),
            ("conductor:group", "devops"),
            ("conductor:role", "activemq"),
        ] {
            assert_eq!(i.tag(k), Some(v), "{k} on {name}");
        }
    }
    // The run's cloud_runs log holds the JSON return of the launches.
    let log = report
        .logs
        .iter()
        .find(|l| {
            l.to_string_lossy()
                .contains("cloud_run-conductor._group-create_")
        })
        .unwrap();
    let text = std::fs::read_to_string(log).unwrap();
    assert!(
        text.contains("InstanceId") && text.contains("devops-mq04.us-east-1a.test.foobar.com"),
        "{text}"
    );
}

#[tokio::test]
async fn the_seeds_three_parallel_runs_on_moto_and_destroy_by_cpid() {
    let moto = MotoServer::start();
    let ec2 = backend(&moto).await;
    let h = harness(pillar_with_subnet(&moto, 2));
    let mut set = tokio::task::JoinSet::new();
    for req in fixtures::seed_requests() {
        let c = conductor(&ec2, &h);
        set.spawn(async move { c.create(&req).await });
    }
    let mut reports = Vec::new();
    while let Some(r) = set.join_next().await {
        let r = r.unwrap().unwrap();
        assert!(r.success(), "{r:?}");
        reports.push(r);
    }
    let all = moto_instances(&ec2).await;
    let names: Vec<&str> = all.iter().filter_map(|i| i.name()).collect();
    let unique: BTreeSet<&str> = names.iter().copied().collect();
    assert_eq!(names.len(), 12);
    assert_eq!(unique.len(), 12, "no name twice: {names:?}");
    // Every id (cluster ids of both scopes, system ids) belongs to one run.
    let mut id_owner: BTreeMap<(String, String), BTreeSet<String>> = BTreeMap::new();
    for i in &all {
        for (k, v) in &i.tags {
            if k.ends_with(".cluster.id") || k.ends_with(".system.id") {
                id_owner
                    .entry((k.clone(), v.clone()))
                    .or_default()
                    .insert(i.tag("conductor:cpid").unwrap().to_string());
            }
        }
    }
    assert!(
        id_owner.values().all(|c| c.len() == 1),
        "each id belongs to one run: {id_owner:?}"
    );
    let clusters = |key: &str| {
        id_owner
            .keys()
            .filter(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .collect::<Vec<_>>()
    };
    assert_eq!(clusters("conductor:devops.nifi.cluster.id"), ["1", "2"]);
    assert_eq!(clusters("conductor:cloud.nifi.cluster.id"), ["1", "2"]);
    let ids: BTreeSet<&str> = all.iter().map(|i| i.id.as_str()).collect();
    assert_eq!(ids.len(), all.len(), "instance ids unique");
    let system_tagged = all
        .iter()
        .filter(|i| i.tag("conductor:devops.system.id") == Some("1"))
        .count();
    assert_eq!(system_tagged, 6);
    for d in [h.layout.reserved_names_dir(), h.layout.reserved_ids_dir()] {
        assert_eq!(std::fs::read_dir(d).unwrap().count(), 0);
    }

    // Destroy by cpid removes exactly that run's instances.
    let victim = &reports[0];
    let c = conductor(&ec2, &h);
    let q = InstanceQuery {
        group: Group::new("devops").unwrap(),
        env: Env::new("test").unwrap(),
        region: Some(fixtures::zone().region()),
        selection: Selection::Cpid(victim.plan.cpid),
    };
    let d = c.destroy(&q).await.unwrap();
    assert_eq!(
        d.destroyed.iter().collect::<BTreeSet<_>>(),
        victim.launched.iter().collect::<BTreeSet<_>>()
    );
    let left: BTreeSet<String> = moto_instances(&ec2)
        .await
        .iter()
        .filter_map(|i| i.name().map(str::to_string))
        .collect();
    let expected: BTreeSet<String> = reports[1..]
        .iter()
        .flat_map(|r| r.launched.clone())
        .collect();
    assert_eq!(left, expected);
}

#[tokio::test]
async fn client_errors_name_the_input() {
    let moto = MotoServer::start();
    let ec2 = backend(&moto).await;
    let f = CloudFixture {
        zone: fixtures::zone(),
        settings: conductor_core::LaunchSettings::parse(
            &serde_json::json!({"image": "ami-0abc", "subnet_id": "subnet-nope"}),
        )
        .unwrap(),
        visible_timeout: Duration::from_secs(5),
    };
    let specs = conductor_testkit::conformance::cloud::specs(&f, "bad", 1);
    let r = ec2.launch(&specs).await.unwrap();
    let failure = r[0].outcome.as_ref().unwrap_err();
    assert!(failure.definite, "a rejected request launched nothing");
    assert!(
        failure.message.contains("subnet-nope") || failure.message.contains("InvalidSubnetID"),
        "{}",
        failure.message
    );

    // An endpoint that does not answer is Unreachable.
    let nowhere = conductor_testkit::net::DeadPort::new();
    let dead = Ec2Backend::builder()
        .endpoint_url(nowhere.url())
        .static_credentials("a", "b")
        .max_attempts(1)
        .build()
        .await;
    let e = dead
        .inventory(&Scope::all(fixtures::zone().region()))
        .await
        .unwrap_err();
    assert_eq!(e.kind, conductor_core::BackendErrorKind::Unreachable, "{e}");
}

/// A basename without `REGION` makes the same names in every region: a name
/// used in another region of the env (us-west-2, on moto) is not planned in
/// this one.
#[tokio::test]
async fn a_regionless_name_used_in_another_region_is_not_planned_again() {
    let moto = MotoServer::start();
    let ec2 = backend(&moto).await;
    let west = conductor_core::Zone::new("us-west-2b").unwrap();
    let spec = conductor_core::LaunchSpec {
        name: "devops-nr01.test.foobar.com".into(),
        zone: west.clone(),
        client_token: "nr01-west".into(),
        tags: BTreeMap::from([(
            "Name".to_string(),
            "devops-nr01.test.foobar.com".to_string(),
        )]),
        settings: conductor_core::LaunchSettings::with_image("ami-0abc"),
        user_data: None,
    };
    let launched = ec2.launch(&[spec]).await.unwrap();
    assert!(launched[0].outcome.is_ok(), "{launched:?}");
    let yaml = fixtures::DEVOPS_PILLAR.replace(
        "        activemq: {basename: devops-mqXX.REGION.ENV, nodes: 2, size: t3.medium}",
        "        activemq: {basename: devops-mqXX.REGION.ENV, nodes: 2, size: t3.medium}\n        nr: {basename: devops-nrXX.ENV, nodes: 1}",
    );
    let h = harness(conductor_core::Pillar::from_yaml_str(&yaml).unwrap());
    let plan = conductor(&ec2, &h)
        .plan(&fixtures::role_request("nr", None))
        .await
        .unwrap();
    assert_eq!(
        plan.instances[0].name, "devops-nr02.test.foobar.com",
        "nr01 runs in us-west-2"
    );
}

/// The testkit's strict front before moto refuses what EC2 refuses and moto
/// takes: a 51st tag (`TagLimitExceeded`), a tag key of 129 characters and
/// user data of 17 KiB (`InvalidParameterValue`), each before moto sees it;
/// 50 tags pass. (Conductor's plan refuses such launches first: conductor-cli
/// `moto::launches_beyond_ec2_limits_are_refused_before_anything_is_reserved`.)
#[tokio::test]
async fn the_strict_front_refuses_launches_beyond_ec2_limits_with_ec2_codes() {
    use aws_sdk_ec2::error::ProvideErrorMetadata;
    use aws_sdk_ec2::types::{ResourceType, Tag, TagSpecification};
    let moto = MotoServer::start();
    let ec2 = backend(&moto).await;
    let image = conductor_testkit::moto::image_in(&moto.endpoint(), "us-east-1");
    let client = ec2.client(&fixtures::zone().region());
    let tags = |n: usize, key_len: usize| {
        let spec = (0..n).fold(
            TagSpecification::builder().resource_type(ResourceType::Instance),
            |s, i| {
                s.tags(
                    Tag::builder()
                        .key(format!("{i:0>key_len$}"))
                        .value("v")
                        .build(),
                )
            },
        );
        spec.build()
    };
    let launch = |spec: TagSpecification, user_data: usize| {
        client
            .run_instances()
            .image_id(&image)
            .min_count(1)
            .max_count(1)
            .tag_specifications(spec)
            .user_data("A".repeat(user_data / 3 * 4))
            .send()
    };
    let code = |r: Result<_, aws_sdk_ec2::error::SdkError<_>>| match r {
        Ok(_) => None,
        Err(e) => Some(e.code().unwrap_or("<none>").to_string()),
    };
    assert_eq!(
        code(launch(tags(50, 128), 1024).await),
        None,
        "50 tags, 128-character keys"
    );
    assert_eq!(
        code(launch(tags(51, 3), 1024).await).as_deref(),
        Some("TagLimitExceeded")
    );
    assert_eq!(
        code(launch(tags(1, 129), 1024).await).as_deref(),
        Some("InvalidParameterValue")
    );
    assert_eq!(
        code(launch(tags(1, 3), 17 * 1024).await).as_deref(),
        Some("InvalidParameterValue")
    );
    assert_eq!(moto.refused(), 3, "refused by the front, not by moto");
}

/// `Ec2Accounts` on moto, whose STS hands out credentials of the role's
/// account: the CloudAccounts conformance suite, accounts A and B by role,
/// the default account by the static credentials.
#[tokio::test]
async fn ec2_accounts_conform_on_moto() {
    let moto = MotoServer::start();
    let builder = builder(&moto);
    let role = |account: &str, external_id: Option<&str>| conductor_core::AccountSpec {
        role_arn: Some(format!("arn:aws:iam::{account}:role/conductor")),
        external_id: external_id.map(str::to_string),
        session_name: Some("conformance".into()),
        profile: None,
    };
    let fixture = conformance_fixture();
    let accounts = conductor_aws::ec2::Ec2Accounts::new(builder.clone());
    let default = builder.build().await;
    conductor_testkit::conformance::accounts::run_all(
        &accounts,
        (
            &role("111111111111", None),
            &role("222222222222", Some("ext-1")),
        ),
        &default,
        &fixture,
    )
    .await;
    assert_eq!(
        conductor_testkit::moto::live_names_in(&moto.endpoint(), "us-east-1", Some("111111111111"))
            .len(),
        1,
        "the launch is in account 111111111111 as moto keeps it"
    );
}
