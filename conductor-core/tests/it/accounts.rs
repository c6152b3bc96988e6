//! Accounts per environment (pillar `environments.<env>.aws`): an
//! environment's instances are looked for, named and launched in its
//! account's cloud only; an environment without `aws` uses the default
//! cloud; a conductor that cannot open accounts refuses such an
//! environment; provisioning slots are per account; salt-cloud refuses what
//! its EC2 driver cannot assume.

use std::sync::Arc;
use std::time::Duration;

use conductor_core::{
    slot_key, AccountSpec, CloudAccounts, CloudBackend, Cpid, Env, ErrorClass, Group,
    InstanceQuery, MemAccounts, Owner, Pillar, Provisioner, Region, Reserver, Scope, Selection,
};
use conductor_testkit::fixtures;
use conductor_testkit::harness::Harness;

const A: &str = "arn:aws:iam::111111111111:role/conductor";
const B: &str = "arn:aws:iam::222222222222:role/conductor";

fn account(arn: &str) -> AccountSpec {
    AccountSpec {
        role_arn: Some(arn.into()),
        ..AccountSpec::default()
    }
}

/// The devops pillar with env `test` in account A, `prod` in account B and
/// `lab` in the default one; `extra` is appended under `conductor:`.
fn pillar(test_aws: &str, extra: &str) -> Pillar {
    let text = fixtures::DEVOPS_PILLAR.replace(
        "    test: {domain: foobar.com, regions: [us-east-1, us-west-2]}\n",
        &format!(
            "    test: {{domain: foobar.com, aws: {test_aws}}}\n    prod: {{domain: example.org, aws: {{role_arn: '{B}'}}}}\n    lab: {{domain: example.net}}\n"
        ),
    );
    Pillar::from_yaml_str(&format!("{text}{extra}")).unwrap()
}

fn in_env(env: &str) -> conductor_core::CreateRequest {
    let mut req = fixtures::role_request("activemq", None);
    req.saltenv = Env::new(env).unwrap();
    req.pillarenv = req.saltenv.clone();
    req
}

async fn names(cloud: &Arc<dyn CloudBackend>) -> Vec<String> {
    let scope = Scope::all(Region::new("us-east-1").unwrap());
    let mut names: Vec<String> = cloud
        .inventory(&scope)
        .await
        .unwrap()
        .instances
        .iter()
        .filter_map(|i| i.name().map(str::to_string))
        .collect();
    names.sort();
    names
}

#[tokio::test]
async fn each_environment_plans_and_launches_in_its_own_account() {
    let h = Harness::new().with_pillar(pillar(&format!("{{role_arn: '{A}'}}"), ""));
    // The default account already has test's first names: they are not
    // test's, whose account is A.
    let zone = fixtures::zone();
    for n in ["01", "02", "03"] {
        h.cloud.add_instance(
            &format!("devops-mq{n}.us-east-1a.test.foobar.com"),
            &zone,
            &[],
        );
    }
    let accounts = Arc::new(MemAccounts::new());
    let c = h.builder().accounts(accounts.clone()).build().unwrap();

    let plan = c.plan(&in_env("test")).await.unwrap();
    assert_eq!(
        plan.names(),
        [
            "devops-mq01.us-east-1a.test.foobar.com",
            "devops-mq02.us-east-1a.test.foobar.com"
        ],
        "account A's inventory, not the default one's"
    );
    let report = c.create(&in_env("test")).await.unwrap();
    assert!(report.success());
    let a = accounts.open(&account(A)).await.unwrap();
    let b = accounts.open(&account(B)).await.unwrap();
    assert_eq!(names(&a).await, report.launched);
    // Account A now has 01 and 02: the next plan of test goes on from there.
    let next = c.plan(&in_env("test")).await.unwrap();
    assert_eq!(
        next.instances[0].name,
        "devops-mq03.us-east-1a.test.foobar.com"
    );

    let prod = c.create(&in_env("prod")).await.unwrap();
    assert!(prod.success());
    assert_eq!(names(&b).await, prod.launched);
    assert_eq!(prod.launched[0], "devops-mq01.us-east-1a.prod.example.org");
    let lab = c.create(&in_env("lab")).await.unwrap();
    assert!(lab.success());
    assert_eq!(names(&a).await.len(), 2, "nothing else landed in A");
    assert_eq!(names(&b).await.len(), 2, "nor in B");
    assert_eq!(
        h.cloud.live_instances().len(),
        3 + 2,
        "lab's went to the default cloud"
    );

    // Status and destroy find test's instances in its account.
    let q = InstanceQuery {
        group: Group::new("devops").unwrap(),
        env: Env::new("test").unwrap(),
        region: Some(Region::new("us-east-1").unwrap()),
        selection: Selection::Names(vec!["devops-mq01.us-east-1a.test.foobar.com".into()]),
    };
    let destroyed = c.destroy(&q).await.unwrap();
    assert_eq!(
        destroyed.destroyed,
        ["devops-mq01.us-east-1a.test.foobar.com"]
    );
    assert_eq!(names(&a).await, ["devops-mq02.us-east-1a.test.foobar.com"]);
    assert_eq!(
        h.cloud.live_instances().len(),
        5,
        "the default account's 01 is untouched"
    );
}

#[tokio::test]
async fn an_environment_with_an_account_needs_a_conductor_that_opens_accounts() {
    let h = Harness::new().with_pillar(pillar(&format!("{{role_arn: '{A}'}}"), ""));
    let c = h.conductor(); // no `accounts`
    for e in [
        c.plan(&in_env("test")).await.unwrap_err(),
        c.create(&in_env("test")).await.unwrap_err(),
    ] {
        assert_eq!(e.class(), ErrorClass::BadInput, "{e}");
        assert!(
            e.to_string().contains("conductor.environments.test.aws"),
            "{e}"
        );
    }
    assert!(
        h.cloud.live_instances().is_empty(),
        "nothing in the default account"
    );
    assert!(
        h.reserver.list(None).await.unwrap().is_empty(),
        "nothing reserved"
    );
}

#[tokio::test]
async fn provisioning_slots_are_per_account_and_region() {
    let h = Harness::new()
        .with_pillar(pillar(
            &format!("{{role_arn: '{A}'}}"),
            "  throttle: {max_provisioning_runs: 1}\n",
        ))
        .with_options(|o| o.slot_wait = Duration::from_millis(300));
    let c = h
        .builder()
        .accounts(Arc::new(MemAccounts::new()))
        .build()
        .unwrap();
    let region = fixtures::zone().region();
    // Another live run holds the default account's only slot of the region.
    let other = Owner::this_process(Cpid::generate(), Duration::from_secs(600));
    h.reserver
        .try_reserve(&[slot_key(None, &region, 1)], &other)
        .await
        .unwrap();
    let report = c.create(&in_env("test")).await.unwrap();
    assert!(report.success(), "account A's slot was free");
    // And account A's slot, held, makes test's next run wait (and give up).
    let a_slot = slot_key(Some(&account(A)), &region, 1);
    assert_eq!(a_slot.as_str(), "slot.111111111111.us-east-1.1");
    h.reserver.try_reserve(&[a_slot], &other).await.unwrap();
    let e = c.create(&in_env("test")).await.unwrap_err();
    assert!(
        e.to_string().contains("slot.111111111111.us-east-1.1"),
        "{e}"
    );
}

#[tokio::test]
async fn salt_cloud_refuses_what_its_ec2_driver_cannot_assume() {
    for (aws, key) in [
        (
            format!("{{role_arn: '{A}', external_id: ext-123}}"),
            "external_id",
        ),
        (
            format!("{{role_arn: '{A}', session_name: me}}"),
            "session_name",
        ),
        ("{profile: prod}".to_string(), "profile"),
    ] {
        let h = Harness::new()
            .with_pillar(pillar(&aws, ""))
            .with_salt(Arc::new(conductor_testkit::FakeSalt::new()))
            .with_options(|o| o.provisioner = Provisioner::SaltCloud);
        let c = h
            .builder()
            .accounts(Arc::new(MemAccounts::new()))
            .build()
            .unwrap();
        let e = c.plan(&in_env("test")).await.unwrap_err();
        assert_eq!(e.class(), ErrorClass::BadInput, "{e}");
        let text = e.to_string();
        assert!(
            text.contains(&format!("conductor.environments.test.aws.{key}")),
            "{text}"
        );
        assert!(text.contains("--provisioner ec2"), "{text}");
    }
}

#[test]
fn bad_account_settings_are_refused_with_their_pillar_path() {
    for (aws, path) in [
        ("{role_arn: 'arn:aws:iam::42:role/x'}", "aws.role_arn"),
        ("{external_id: abc, profile: p}", "aws.external_id"),
        ("{}", "conductor.environments.test.aws"),
        ("{role_arn: x, rolearn: y}", "aws"),
    ] {
        let text = fixtures::DEVOPS_PILLAR
            .replace("regions: [us-east-1, us-west-2]}", &format!("aws: {aws}}}"));
        let e = Pillar::from_yaml_str(&text).unwrap_err();
        assert!(e.to_string().contains(path), "{aws}: {e}");
    }
}
