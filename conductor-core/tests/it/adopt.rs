//! Instances the Python runner built (a `Name` tag only, their ids as
//! grains): plans count their grains, `adopt` gives them Conductor's tags,
//! and conflicting evidence is refused. MemCloud and FakeSalt.

use std::sync::Arc;

use conductor_core::{
    AdoptError, AdoptRequest, CreateRequest, Env, Error, ErrorClass, Group, Plan, Target, Zone,
};
use conductor_testkit::harness::Harness;
use conductor_testkit::FakeSalt;
use serde_json::json;

const CPID_A: &str = "16833830331552303186";
const CPID_B: &str = "27733830331552303186";
const MQ: &str = "devops-mq01.us-east-1a.test.foobar.com";
const NIFI: &str = "devops-nifi-01.clid-1.us-east-1a.test.foobar.com";

fn zone() -> Zone {
    Zone::new("us-east-1a").unwrap()
}

fn system_request() -> CreateRequest {
    CreateRequest::new(
        Group::new("devops").unwrap(),
        Env::new("test").unwrap(),
        zone(),
        Target::System(conductor_core::SystemName::new("small_test").unwrap()),
    )
}

fn adopt_request(apply: bool) -> AdoptRequest {
    AdoptRequest {
        group: Group::new("devops").unwrap(),
        env: Env::new("test").unwrap(),
        saltenv: Env::new("test").unwrap(),
        region: None,
        apply,
    }
}

/// A system the Python runner built: mq01 and one nifi cluster, system ids
/// 1 in both scopes; and another group's minion holding cloud.system.id 2.
fn python_built(h: &Harness) -> Arc<FakeSalt> {
    h.cloud.add_instance(MQ, &zone(), &[]);
    h.cloud.add_instance(NIFI, &zone(), &[]);
    let salt = Arc::new(FakeSalt::new());
    let sys = json!({"cpid": CPID_A, "cloud.system.id": 1, "devops.system.id": "1"});
    salt.set_grains(MQ, sys.clone());
    let mut nifi = sys;
    nifi["cloud.nifi.cluster.id"] = json!(1);
    nifi["devops.nifi.cluster.id"] = json!(1);
    salt.set_grains(NIFI, nifi);
    salt.set_grains(
        "other-db01.us-east-1a.test.foobar.com",
        json!({"cpid": CPID_B, "cloud.system.id": 2}),
    );
    salt
}

/// Ids are the pillarenv's: a run whose saltenv differs still counts the
/// id grains of minions named in its pillarenv.
#[tokio::test]
async fn a_plan_counts_the_grains_of_minions_named_in_its_pillarenv_when_the_saltenv_differs() {
    let two_envs = conductor_testkit::fixtures::DEVOPS_PILLAR.replace(
        "    test: {domain: foobar.com",
        "    prod: {domain: foobar.com}\n    test: {domain: foobar.com",
    );
    let h = Harness::new().with_pillar(conductor_core::Pillar::from_yaml_str(&two_envs).unwrap());
    h.cloud.add_instance(MQ, &zone(), &[]);
    let salt = Arc::new(FakeSalt::new());
    salt.set_grains(
        MQ,
        json!({"cpid": CPID_A, "cloud.system.id": 1, "devops.system.id": 1}),
    );
    let h = h.with_salt(salt);
    let mut req = system_request();
    req.saltenv = Env::new("prod").unwrap();
    let p = h.conductor().plan(&req).await.unwrap();
    let s = p.system.as_ref().unwrap();
    assert_eq!((s.cloud_id, s.group_id), (2, 2), "{p:#?}");
    assert_eq!(p.ids_from_grains.len(), 2, "each grain once: {p:#?}");
}

fn ids(p: &Plan) -> (u32, u32, u32, u32) {
    let s = p.system.as_ref().unwrap();
    let c = &p.clusters[0];
    (s.cloud_id, s.group_id, c.cloud_id, c.group_id)
}

#[tokio::test]
async fn a_plan_skips_the_ids_in_the_grains_of_untagged_minions_and_says_so() {
    let h = Harness::new();
    let salt = python_built(&h);
    let h = h.with_salt(salt);
    let p = h.conductor().plan(&system_request()).await.unwrap();
    assert_eq!(ids(&p), (3, 2, 2, 2), "{p:#?}");
    let grains: Vec<(String, String, u32)> = p
        .ids_from_grains
        .iter()
        .map(|g| (g.minion.clone(), g.scope.grain(), g.id))
        .collect();
    assert!(
        grains.contains(&(MQ.into(), "cloud.system.id".into(), 1)),
        "{grains:?}"
    );
    assert!(grains.contains(&(
        "other-db01.us-east-1a.test.foobar.com".into(),
        "cloud.system.id".into(),
        2
    )));
    assert!(grains.contains(&(NIFI.into(), "cloud.nifi.cluster.id".into(), 1)));
    let v = serde_json::to_value(&p).unwrap();
    assert_eq!(v["ids_from_grains"].as_array().unwrap().len(), grains.len());

    // Without the grains, only the name's .clid-1 counts: the Python ids are handed out again.
    let h = h.with_options(|o| o.read_grains = false);
    let p = h.conductor().plan(&system_request()).await.unwrap();
    assert_eq!(ids(&p), (1, 1, 1, 2), "{p:#?}");
    assert!(p.ids_from_grains.is_empty());
}

#[tokio::test]
async fn a_cache_that_cannot_be_read_is_unreachable_and_names_the_switch() {
    let salt = Arc::new(FakeSalt::new());
    salt.grains_unreadable();
    let h = Harness::new().with_salt(salt);
    let e = h.conductor().plan(&system_request()).await.unwrap_err();
    assert_eq!(e.class(), ErrorClass::Unreachable, "{e}");
    assert!(e.to_string().contains("--no-grains"), "{e}");
    let e = h
        .conductor()
        .adopt(&adopt_request(false))
        .await
        .unwrap_err();
    assert!(matches!(e, Error::GrainsUnreadable { .. }), "{e}");
}

#[tokio::test]
async fn adopt_lists_then_writes_the_tags_once_and_plans_then_read_them_from_tags() {
    let h = Harness::new();
    let salt = python_built(&h);
    let h = h.with_salt(salt);
    let dry = h.conductor().adopt(&adopt_request(false)).await.unwrap();
    assert_eq!(dry.instances.len(), 2, "{dry:#?}");
    let nifi = dry.instances.iter().find(|a| a.name == NIFI).unwrap();
    let want = [
        ("conductor:env", "test"),
        ("conductor:group", "devops"),
        ("conductor:role", "nifi"),
        ("conductor:member", "nifi"),
        ("conductor:cpid", CPID_A),
        ("conductor:cloud.nifi.cluster.id", "1"),
        ("conductor:devops.nifi.cluster.id", "1"),
        ("conductor:cloud.system.id", "1"),
        ("conductor:devops.system.id", "1"),
    ];
    for (k, v) in want {
        assert_eq!(
            nifi.tags.get(k).map(String::as_str),
            Some(v),
            "{k}: {nifi:#?}"
        );
    }
    let mq = dry.instances.iter().find(|a| a.name == MQ).unwrap();
    assert_eq!(
        mq.tags.get("conductor:role").map(String::as_str),
        Some("activemq")
    );
    assert!(!mq.tags.contains_key("conductor:cloud.nifi.cluster.id"));
    assert!(nothing_tagged(&h), "a dry run writes nothing");

    let applied = h.conductor().adopt(&adopt_request(true)).await.unwrap();
    assert_eq!(applied.instances, dry.instances);
    for i in h.cloud.live_instances() {
        let a = dry
            .instances
            .iter()
            .find(|a| Some(a.name.as_str()) == i.name())
            .unwrap();
        for (k, v) in &a.tags {
            assert_eq!(i.tag(k), Some(v.as_str()), "{k} on {}", a.name);
        }
    }
    let again = h.conductor().adopt(&adopt_request(true)).await.unwrap();
    assert!(again.instances.is_empty(), "{again:#?}");

    // The master's cache cleared: the ids now come from the tags.
    let h = h.with_salt(Arc::new(FakeSalt::new()));
    let p = h.conductor().plan(&system_request()).await.unwrap();
    assert_eq!(ids(&p), (2, 2, 2, 2), "{p:#?}");
    assert!(p.ids_from_grains.is_empty());
}

#[tokio::test]
async fn adopt_refuses_two_runs_claiming_one_id_and_names_matching_no_basename() {
    let h = Harness::new();
    let salt = python_built(&h);
    let mq2 = "devops-mq02.us-east-1a.test.foobar.com";
    h.cloud.add_instance(mq2, &zone(), &[]);
    salt.set_grains(mq2, json!({"cpid": CPID_B, "cloud.system.id": 1}));
    let h = h.with_salt(salt);
    let e = h.conductor().adopt(&adopt_request(true)).await.unwrap_err();
    assert_eq!(e.class(), ErrorClass::BadInput, "{e}");
    let text = e.to_string();
    assert!(
        matches!(&e, Error::Adopt(a) if matches!(**a, AdoptError::Conflict { .. })),
        "{text}"
    );
    assert!(
        text.contains(mq2) && text.contains("cloud.system.id 1"),
        "{text}"
    );
    assert!(
        text.contains(MQ) || text.contains(NIFI),
        "names both: {text}"
    );
    assert!(nothing_tagged(&h), "nothing written");

    // A tagged instance of another run holding the id conflicts too.
    let h2 = Harness::new();
    let salt2 = python_built(&h2);
    h2.cloud.add_instance(
        "devops-mq05.us-east-1a.test.foobar.com",
        &zone(),
        &[
            ("conductor:env", "test"),
            ("conductor:cpid", CPID_B),
            ("conductor:cloud.system.id", "1"),
        ],
    );
    let e = h2
        .with_salt(salt2)
        .conductor()
        .adopt(&adopt_request(false))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("devops-mq05"), "{e}");

    let h3 = Harness::new();
    let salt3 = python_built(&h3);
    h3.cloud
        .add_instance("devops-mq-old.us-east-1a.test.foobar.com", &zone(), &[]);
    let e = h3
        .with_salt(salt3)
        .conductor()
        .adopt(&adopt_request(false))
        .await
        .unwrap_err();
    assert!(
        matches!(&e, Error::Adopt(a) if matches!(**a, AdoptError::NoBasename { .. })),
        "{e}"
    );
    assert!(
        e.to_string()
            .contains("devops-mq-old.us-east-1a.test.foobar.com"),
        "{e}"
    );
}

/// Basenames without `ENV` (`devops-mqXX.REGION`) and two environments on
/// one domain: a minion's name says nothing of its env, so plans of either
/// env skip its ids (the safe side) and adopt refuses to guess; with one
/// env on the domain, adopt takes it.
#[tokio::test]
async fn names_without_an_env_label_count_in_every_env_of_their_domain() {
    let unlabeled = conductor_testkit::fixtures::DEVOPS_PILLAR.replace(".REGION.ENV", ".REGION");
    let mq = "devops-mq01.us-east-1a.foobar.com";
    let setup = |pillar: &str| {
        let h = Harness::new().with_pillar(conductor_core::Pillar::from_yaml_str(pillar).unwrap());
        h.cloud.add_instance(mq, &zone(), &[]);
        let salt = Arc::new(FakeSalt::new());
        salt.set_grains(
            mq,
            json!({"cpid": CPID_A, "cloud.system.id": 1, "devops.system.id": 1}),
        );
        h.with_salt(salt)
    };
    let shared = unlabeled.replace(
        "    test: {domain: foobar.com",
        "    prod: {domain: foobar.com, regions: [us-east-1]}\n    test: {domain: foobar.com",
    );
    assert_ne!(shared, unlabeled, "the fixture's environments line moved");
    let h = setup(&shared);
    for env in ["test", "prod"] {
        let mut req = system_request();
        req.pillarenv = Env::new(env).unwrap();
        req.saltenv = req.pillarenv.clone();
        let p = h.conductor().plan(&req).await.unwrap();
        let s = p.system.as_ref().unwrap();
        assert_eq!((s.cloud_id, s.group_id), (2, 2), "{env}: {p:#?}");
    }
    let e = h.conductor().adopt(&adopt_request(true)).await.unwrap_err();
    assert!(
        matches!(&e, Error::Adopt(a) if matches!(**a, AdoptError::UnknownEnv { .. })),
        "{e}"
    );
    assert!(
        e.to_string().contains(mq) && e.to_string().contains("prod, test"),
        "{e}"
    );

    let h = setup(&unlabeled);
    let r = h.conductor().adopt(&adopt_request(true)).await.unwrap();
    assert_eq!(r.instances.len(), 1, "{r:#?}");
    assert_eq!(r.instances[0].tags["conductor:cloud.system.id"], "1");
}

fn nothing_tagged(h: &Harness) -> bool {
    h.cloud
        .live_instances()
        .iter()
        .all(|i| i.conductor_tag("env").is_none())
}

/// Tags without the ids would hide the grains' ids from every later plan:
/// without the grains (reading them off, or no Salt) adopt lists but
/// `apply` refuses, writes nothing, and plans still skip the ids.
#[tokio::test]
async fn adopt_apply_without_the_grains_is_refused_and_plans_still_count_their_ids() {
    let h = Harness::new();
    let salt = python_built(&h);
    let mut h = h.with_salt(salt);
    h.opts.read_grains = false;
    let dry = h.conductor().adopt(&adopt_request(false)).await.unwrap();
    assert_eq!(dry.instances.len(), 2, "{dry:#?}");
    assert!(
        dry.instances.iter().all(|a| a.from_grains.is_empty()),
        "ids unknown: {dry:#?}"
    );

    let e = h.conductor().adopt(&adopt_request(true)).await.unwrap_err();
    assert_eq!(e.class(), ErrorClass::BadInput, "{e}");
    assert!(
        matches!(&e, Error::Adopt(a) if matches!(**a, AdoptError::GrainsNotRead { .. })),
        "{e}"
    );
    let text = e.to_string();
    assert!(
        text.contains("--no-grains") && text.contains("hide the ids from planning"),
        "{text}"
    );
    assert!(nothing_tagged(&h), "nothing written");

    let salt = h.salt.take();
    let e = h.conductor().adopt(&adopt_request(true)).await.unwrap_err();
    assert!(
        matches!(&e, Error::Adopt(a) if matches!(**a, AdoptError::GrainsNotRead { .. })),
        "{e}"
    );
    assert!(e.to_string().contains("--no-salt"), "{e}");
    assert!(nothing_tagged(&h), "nothing written");

    // With the grains read again, a plan still skips the runner's ids.
    h.salt = salt;
    h.opts.read_grains = true;
    let p = h.conductor().plan(&system_request()).await.unwrap();
    assert_eq!(ids(&p), (3, 2, 2, 2), "{p:#?}");
}

/// An untagged instance whose minion the master's cache does not hold (key
/// not accepted, cache cleared): adopt lists it with its ids unknown,
/// `apply` refuses, naming it, writes nothing, and plans still count the
/// other instances' grains.
#[tokio::test]
async fn adopt_apply_refuses_an_instance_whose_minion_has_no_cached_grains() {
    let h = Harness::new();
    let salt = python_built(&h);
    let mq2 = "devops-mq02.us-east-1a.test.foobar.com";
    h.cloud.add_instance(mq2, &zone(), &[]);
    let h = h.with_salt(salt);
    let dry = h.conductor().adopt(&adopt_request(false)).await.unwrap();
    assert_eq!(dry.instances.len(), 3, "{dry:#?}");
    for a in &dry.instances {
        assert_eq!(a.from_grains.is_empty(), a.name == mq2, "{a:#?}");
    }

    let e = h.conductor().adopt(&adopt_request(true)).await.unwrap_err();
    assert_eq!(e.class(), ErrorClass::BadInput, "{e}");
    assert!(
        matches!(&e, Error::Adopt(a) if matches!(**a, AdoptError::NoCachedGrains { .. })),
        "{e}"
    );
    let text = e.to_string();
    assert!(
        text.contains(mq2) && !text.contains(MQ) && text.contains("salt-key -a"),
        "{text}"
    );
    assert!(nothing_tagged(&h), "nothing written");
    let p = h.conductor().plan(&system_request()).await.unwrap();
    assert_eq!(ids(&p), (3, 2, 2, 2), "{p:#?}");
}

/// A pillar source during whose read the caller cancels (a signal while
/// Salt compiles the pillar); the read itself still answers.
#[derive(Debug)]
struct CancelledWhileRead {
    pillar: conductor_core::Pillar,
    cancel: conductor_core::CancellationToken,
}

#[async_trait::async_trait]
impl conductor_core::PillarSource for CancelledWhileRead {
    async fn load(&self, _env: &Env) -> Result<conductor_core::Pillar, Error> {
        self.cancel.cancel();
        Ok(self.pillar.clone())
    }
}

#[tokio::test]
async fn adopt_cancelled_during_its_reads_writes_no_tag() {
    let h = Harness::new();
    let salt = python_built(&h);
    let h = h.with_salt(salt);
    let cancel = conductor_core::CancellationToken::new();
    let c = h
        .builder()
        .pillar(Arc::new(CancelledWhileRead {
            pillar: h.pillar.clone(),
            cancel: cancel.clone(),
        }))
        .cancel_on(cancel)
        .build()
        .unwrap();
    let e = c.adopt(&adopt_request(true)).await.unwrap_err();
    assert!(matches!(e, Error::Interrupted), "{e}");
    assert_eq!(e.class(), ErrorClass::Interrupted);
    assert!(nothing_tagged(&h), "nothing written");
    // Not cancelled, the same adopt writes them (the test can fail).
    h.conductor().adopt(&adopt_request(true)).await.unwrap();
    assert!(h
        .cloud
        .live_instances()
        .iter()
        .all(|i| i.conductor_tag("env") == Some("test")));
}
