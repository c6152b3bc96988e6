//! Error paths of `Conductor`: one backend (a `mockall` mock) fails at each
//! step; the others are fakes. Every failure must leave no leaked key and say
//! what failed.

use std::sync::Arc;
use std::time::Duration;

use conductor_core::MemReserver;
use conductor_core::Options;
use conductor_core::{BackendError, BackendErrorKind as K, ErrorClass, PillarError};
use conductor_core::{CloudBackend, Inventory, LaunchFailure, LaunchResult};
use conductor_core::{Conductor, Layout, Provisioner, Reserver};
use conductor_testkit::fixtures;
use conductor_testkit::harness::Harness;
use conductor_testkit::mocks::{MockCloud, MockPillar, MockReserver, MockSalt};
use conductor_testkit::{FakeCloud, FakeSalt};

/// Few, quick attempts.
fn quick(o: &mut Options) {
    o.backoff_base = Duration::from_millis(1);
    o.backoff_max = Duration::from_millis(2);
    o.max_attempts = 3;
    o.visible_timeout = Duration::from_secs(1);
}

/// The fakes with FakeSalt and few, quick attempts.
fn harness() -> Harness {
    Harness::new()
        .with_salt(Arc::new(FakeSalt::new()))
        .with_options(quick)
}

/// A conductor of `h` over `cloud` and `reserver` (one of them a mock).
fn conductor(cloud: Arc<dyn CloudBackend>, reserver: Arc<dyn Reserver>, h: &Harness) -> Conductor {
    h.builder_on(cloud).reserver(reserver).build().unwrap()
}

fn err(kind: K, msg: &str) -> BackendError {
    BackendError::new(kind, msg)
}

#[tokio::test]
async fn pillar_failure_reserves_nothing() {
    let mut pillar = MockPillar::new();
    pillar
        .expect_load()
        .returning(|_| Err(PillarError::new("conductor.groups", "broken").into()));
    let reserver = Arc::new(MockReserver::new()); // no expectations: any call panics
    let h = Harness::new()
        .with_reserver(reserver)
        .with_layout(|d| Layout::new(d, d))
        .with_options(quick);
    let c = h.builder().pillar(Arc::new(pillar)).build().unwrap();
    let e = c
        .create(&fixtures::role_request("activemq", None))
        .await
        .unwrap_err();
    assert_eq!(e.class(), ErrorClass::BadInput);
    assert!(e.to_string().contains("conductor.groups"), "{e}");
}

#[tokio::test]
async fn inventory_failure_is_unreachable_and_frees_the_cpid() {
    let h = harness();
    let mut cloud = MockCloud::new();
    cloud
        .expect_inventory()
        .returning(|_| Err(err(K::Unreachable, "connect to ec2.us-east-1 timed out")));
    let reserver = Arc::new(MemReserver::new());
    let e = conductor(Arc::new(cloud), reserver.clone(), &h)
        .create(&fixtures::role_request("activemq", None))
        .await
        .unwrap_err();
    assert_eq!(e.class(), ErrorClass::Unreachable);
    assert!(e.to_string().contains("reading the inventory"), "{e}");
    assert!(
        reserver.list(None).await.unwrap().is_empty(),
        "no key leaked"
    );
}

#[tokio::test]
async fn reserver_failure_is_reported() {
    let h = harness();
    let mut reserver = MockReserver::new();
    reserver
        .expect_try_reserve()
        .returning(|_, _| Err(err(K::Io, "/srv/runners/reserved_ids: read-only").into()));
    let e = conductor(Arc::new(FakeCloud::new()), Arc::new(reserver), &h)
        .create(&fixtures::role_request("activemq", None))
        .await
        .unwrap_err();
    assert!(
        e.to_string().contains("reserving the cpid") && e.to_string().contains("read-only"),
        "{e}"
    );
}

#[tokio::test]
async fn persistent_conflicts_exhaust_retries_with_exit_class_3() {
    let h = harness();
    let mut reserver = MockReserver::new();
    let mem = Arc::new(MemReserver::new());
    let m = mem.clone();
    // The cpid is granted; every plan conflicts.
    reserver.expect_try_reserve().returning(move |keys, owner| {
        if keys.len() == 1 && keys[0].as_str().starts_with("cpid.") {
            futures_lite_block(m.try_reserve(keys, owner))
        } else {
            Err(conductor_core::ReserveError::Conflict(keys.to_vec()))
        }
    });
    reserver.expect_list().returning(|_| Ok(vec![]));
    reserver.expect_update().returning(|_, _, _| Ok(()));
    let e = conductor(Arc::new(FakeCloud::new()), Arc::new(reserver), &h)
        .create(&fixtures::role_request("activemq", None))
        .await
        .unwrap_err();
    assert_eq!(e.class(), ErrorClass::Exhausted, "{e}");
    assert!(e.to_string().contains("after 3 attempts"), "{e}");
}

/// Runs a ready future to completion (MemReserver never waits).
fn futures_lite_block<F: std::future::Future>(f: F) -> F::Output {
    let waker = std::task::Waker::noop();
    let mut cx = std::task::Context::from_waker(waker);
    let mut f = std::pin::pin!(f);
    match f.as_mut().poll(&mut cx) {
        std::task::Poll::Ready(v) => v,
        std::task::Poll::Pending => panic!("MemReserver does not wait"),
    }
}

#[tokio::test]
async fn launch_unreachable_keeps_keys_until_expiry() {
    let h = harness();
    let fake = Arc::new(FakeCloud::new());
    let mut cloud = MockCloud::new();
    let f = fake.clone();
    cloud
        .expect_inventory()
        .returning(move |s| futures_lite_block(f.inventory(s)));
    cloud
        .expect_launch()
        .returning(|_| Err(err(K::Unreachable, "RunInstances timed out")));
    let reserver = Arc::new(MemReserver::new());
    // The launch may have created instances: the run reports what it knows
    // (exit 1), it does not claim that nothing was launched (exit 4).
    let report = conductor(Arc::new(cloud), reserver.clone(), &h)
        .create(&fixtures::role_request("activemq", None))
        .await
        .expect("a report once the launch may have happened");
    let error = report.error.as_ref().expect("the launch failure");
    assert_eq!(error.class, ErrorClass::Unreachable);
    assert!(
        error.message.contains("RunInstances timed out"),
        "{report:?}"
    );
    assert_eq!(report.failed.len(), 2, "{report:?}");
    assert!(!report.success());
    let held: Vec<String> = reserver
        .list(None)
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.key.to_string())
        .collect();
    assert_eq!(
        held.len(),
        2,
        "instances may exist: their names stay reserved until expiry: {held:?}"
    );
    assert!(held.iter().all(|k| k.starts_with("test_devops-mq0")));
}

/// Writing the cloud run's log fails after the launch (a file stands where
/// `cloud_runs/` should be): the run still waits for its instances, joins
/// them, releases the keys and reports everything, with the error.
#[tokio::test]
async fn a_log_that_cannot_be_written_after_the_launch_does_not_lose_the_report() {
    let h = harness();
    std::fs::create_dir_all(&h.layout.runner_dir).unwrap();
    std::fs::write(h.layout.runner_dir.join("cloud_runs"), "not a directory").unwrap();
    let report = h
        .conductor()
        .create(&fixtures::role_request("activemq", None))
        .await
        .expect("a run that launched returns its report");
    assert_eq!(report.launched.len(), 2, "{report:#?}");
    assert!(
        report.failed.is_empty() && report.not_visible.is_empty(),
        "{report:#?}"
    );
    let error = report.error.as_ref().expect("the failed write is reported");
    assert!(error.message.contains("cloud_runs"), "{}", error.message);
    assert!(!report.success());
    assert_eq!(h.cloud.live_instances().len(), 2);
    let held = h
        .reserver
        .held(conductor_core::now_ms(), None, None)
        .await
        .unwrap();
    assert!(held.is_empty(), "keys released: {held:?}");
}

#[tokio::test]
async fn launch_rejected_frees_every_key() {
    let h = harness();
    let mut cloud = MockCloud::new();
    cloud
        .expect_inventory()
        .returning(|_| Ok(Inventory::default()));
    cloud.expect_launch().returning(|_| {
        Err(err(
            K::Rejected,
            "InvalidAMIID.NotFound: ami-0abc (profile.image)",
        ))
    });
    let reserver = Arc::new(MemReserver::new());
    let e = conductor(Arc::new(cloud), reserver.clone(), &h)
        .create(&fixtures::role_request("activemq", None))
        .await
        .unwrap_err();
    assert_eq!(e.class(), ErrorClass::BadInput);
    assert!(e.to_string().contains("ami-0abc"), "{e}");
    assert!(reserver.list(None).await.unwrap().is_empty());
}

#[tokio::test]
async fn uncertain_launch_failures_keep_their_names() {
    let h = harness();
    let mut cloud = MockCloud::new();
    cloud
        .expect_inventory()
        .returning(|_| Ok(Inventory::default()));
    cloud.expect_launch().returning(|specs| {
        Ok(specs
            .iter()
            .map(|s| LaunchResult {
                name: s.name.clone(),
                outcome: Err(LaunchFailure {
                    message: "capacity".into(),
                    definite: false,
                }),
            })
            .collect())
    });
    let reserver = Arc::new(MemReserver::new());
    let report = conductor(Arc::new(cloud), reserver.clone(), &h)
        .create(&fixtures::role_request("activemq", None))
        .await
        .unwrap();
    assert!(!report.success());
    assert_eq!(report.failed.len(), 2);
    assert_eq!(
        reserver.list(None).await.unwrap().len(),
        2,
        "uncertain launches keep their names"
    );
}

#[tokio::test]
async fn pre_create_hook_failure_launches_nothing_and_frees_keys() {
    let mut salt = MockSalt::new();
    // The plan reads the master's grains cache once, before any hook.
    salt.expect_cached_grains()
        .times(1)
        .returning(|| Ok(Default::default()));
    salt.expect_orchestrate().returning(|_, _, _| {
        Err(err(
            K::Failed,
            "orch.conductor_common: Rendering SLS failed",
        ))
    });
    let h = harness().with_salt(Arc::new(salt));
    let e = h
        .conductor()
        .create(&fixtures::role_request("activemq", None))
        .await
        .unwrap_err();
    assert_eq!(e.class(), ErrorClass::Failed);
    assert!(
        e.to_string()
            .contains("orch_state_run-orch.conductor_common"),
        "names the log: {e}"
    );
    assert!(h.cloud.live_instances().is_empty());
    assert!(h.reserver.list(None).await.unwrap().is_empty());
}

#[tokio::test]
async fn a_missing_autosign_dir_is_refused_before_anything_is_reserved_or_run() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("autosign_grains");
    // No expectation: any Salt call (the grains cache, a hook) would fail the test.
    let h = harness()
        .with_salt(Arc::new(MockSalt::new()))
        .with_options(|o| {
            o.provisioner = Provisioner::Ec2;
            o.autosign_grains_dir = Some(missing.clone());
        });
    let e = h
        .conductor()
        .create(&fixtures::role_request("activemq", None))
        .await
        .unwrap_err();
    assert_eq!(e.class(), ErrorClass::BadInput, "{e}");
    assert!(
        e.to_string().contains("autosign_grains_dir")
            && e.to_string().contains("is not a directory"),
        "names the setting and the fix: {e}"
    );
    assert!(h.cloud.live_instances().is_empty());
    assert!(
        h.reserver.list(None).await.unwrap().is_empty(),
        "no key and no cpid was reserved"
    );
    assert!(!missing.exists(), "nothing was created in its place");
}

#[tokio::test]
async fn salt_cloud_without_salt_is_refused_at_build() {
    let e = Harness::new()
        .with_options(|o| {
            *o = Options {
                provisioner: Provisioner::SaltCloud,
                ..Options::default()
            }
        })
        .builder()
        .build()
        .unwrap_err();
    assert!(e.to_string().contains("salt-cloud"), "{e}");
}

#[tokio::test]
async fn wait_visible_failure_is_reported_and_keeps_keys() {
    let h = harness();
    let fake = Arc::new(FakeCloud::new());
    let mut cloud = MockCloud::new();
    let (f1, f2) = (fake.clone(), fake.clone());
    cloud
        .expect_inventory()
        .returning(move |s| futures_lite_block(f1.inventory(s)));
    cloud
        .expect_launch()
        .returning(move |specs| futures_lite_block(f2.launch(specs)));
    cloud
        .expect_wait_visible()
        .returning(|_, _, _| Err(err(K::Throttled, "RequestLimitExceeded")));
    let reserver = Arc::new(MemReserver::new());
    let report = conductor(Arc::new(cloud), reserver.clone(), &h)
        .create(&fixtures::role_request("activemq", None))
        .await
        .expect("instances were launched: the run reports them");
    let error = report.error.as_ref().expect("the wait's failure");
    assert!(
        error.message.contains("waiting for instances to show"),
        "{report:?}"
    );
    assert_eq!(report.launched.len(), 2, "{report:?}");
    assert_eq!(
        fake.live_instances().len(),
        2,
        "launched instances are not touched"
    );
    assert_eq!(
        reserver.list(None).await.unwrap().len(),
        2,
        "their names stay reserved until they show or expire"
    );
}

/// A `--config-dir` that cannot hold the provider file (here a plain file
/// where the directory should be, which refuses root too) is bad input
/// naming the flag: exit 2, nothing launched, every key freed.
#[tokio::test]
async fn an_unwritable_config_dir_is_bad_input_and_frees_the_keys() {
    let h = Harness::new()
        .with_layout(|d| {
            std::fs::write(d.join("etc"), "not a directory").unwrap();
            Layout::new(d.join("etc"), d.join("runner"))
        })
        .with_fs_reserver()
        .with_options(quick);
    let e = h
        .conductor()
        .create(&fixtures::role_request("activemq", None))
        .await
        .unwrap_err();
    assert_eq!(e.class(), ErrorClass::BadInput, "{e}");
    assert!(e.to_string().contains("--config-dir"), "{e}");
    assert!(h.cloud.live_instances().is_empty(), "nothing launched");
    let left = h.reserver.list(None).await.unwrap();
    assert!(left.is_empty(), "keys left: {left:?}");
}
