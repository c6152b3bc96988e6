//! The shared conformance suites run against the core and testkit backends.

use std::sync::Arc;
use std::time::Duration;

use conductor_core::{FsReserver, Layout, MemCloud, MemReserver, Reserver, RetryCloud, Zone};
use conductor_testkit::conformance::{cloud, reserver};
use conductor_testkit::fake_cloud::Lag;
use conductor_testkit::{
    FakeCloud, FaultCloud, FaultReserver, LagCloud, LatencyCloud, RecordingCloud,
};

#[tokio::test]
async fn mem_reserver_conforms() {
    reserver::run_all(&MemReserver::new()).await;
}

/// Every reserver wrapper passes the suite around any reserver, as the
/// cloud wrappers do around any cloud.
#[tokio::test]
async fn wrapped_reservers_conform() {
    reserver::run_all(&FaultReserver::new(MemReserver::new())).await;
    reserver::run_all(&Arc::new(MemReserver::new())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn mem_reserver_races() {
    let r: Arc<dyn Reserver> = Arc::new(MemReserver::new());
    for _ in 0..20 {
        reserver::race(r.clone(), 16).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn mem_reserver_takeovers_race() {
    let r: Arc<dyn Reserver> = Arc::new(MemReserver::new());
    for _ in 0..20 {
        reserver::race_takeover(r.clone(), 16).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fs_reserver_takeovers_race() {
    let d = tempfile::tempdir().unwrap();
    let r: Arc<dyn Reserver> = Arc::new(FsReserver::new(&Layout::new(d.path(), d.path())));
    for _ in 0..20 {
        reserver::race_takeover(r.clone(), 16).await;
    }
}

#[tokio::test]
async fn fs_reserver_conforms() {
    let d = tempfile::tempdir().unwrap();
    reserver::run_all(&FsReserver::new(&Layout::new(
        d.path().join("etc"),
        d.path().join("runner"),
    )))
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fs_reserver_races() {
    let d = tempfile::tempdir().unwrap();
    let r: Arc<dyn Reserver> = Arc::new(FsReserver::new(&Layout::new(d.path(), d.path())));
    for _ in 0..20 {
        reserver::race(r.clone(), 16).await;
    }
}

#[tokio::test]
async fn fs_reserver_reports_an_unwritable_root() {
    let d = tempfile::tempdir().unwrap();
    let file = d.path().join("not-a-dir");
    std::fs::write(&file, "x").unwrap();
    let r = FsReserver::new(&Layout::new(d.path(), &file));
    let keys = reserver::fresh_keys("ro", 1);
    let e = r
        .try_reserve(&keys, &reserver::live_owner())
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("not-a-dir") && e.contains("--runner-dir"), "{e}");
}

fn fixture() -> cloud::CloudFixture {
    cloud::CloudFixture {
        zone: Zone::new("us-east-1a").unwrap(),
        settings: conductor_core::LaunchSettings::parse(
            &serde_json::json!({"image": "ami-0abc", "size": "t3.small"}),
        )
        .unwrap(),
        visible_timeout: Duration::from_secs(5),
    }
}

#[tokio::test]
async fn fake_cloud_conforms() {
    cloud::run_all(&FakeCloud::new(), &fixture()).await;
}

#[tokio::test]
async fn mem_cloud_conforms() {
    cloud::run_all(&MemCloud::new(), &fixture()).await;
}

/// Every wrapper passes the suite around any cloud, as object_store's
/// wrappers do around any store.
#[tokio::test]
async fn wrapped_clouds_conform() {
    cloud::run_all(&RetryCloud::new(FakeCloud::new()), &fixture()).await;
    cloud::run_all(&RecordingCloud::new(MemCloud::new()), &fixture()).await;
    cloud::run_all(&FaultCloud::new(MemCloud::new()), &fixture()).await;
    cloud::run_all(
        &LatencyCloud::new(MemCloud::new(), Duration::from_millis(5)),
        &fixture(),
    )
    .await;
    cloud::run_all(
        &LagCloud::new(MemCloud::new(), Lag::Fixed(Duration::from_millis(200))),
        &fixture(),
    )
    .await;
}

#[tokio::test]
async fn fake_cloud_with_lag_conforms() {
    let c = FakeCloud::new()
        .with_lag(Lag::UpTo(Duration::from_millis(300)))
        .with_seed(7);
    cloud::run_all(&c, &fixture()).await;
}

/// Prints reserve+release latency of a 20-key run on FsReserver (a figure for
/// the docs; it asserts only that every round succeeds and leaves nothing).
#[tokio::test]
async fn fs_reserver_twenty_key_figures() {
    let d = tempfile::tempdir().unwrap();
    let r = FsReserver::new(&Layout::new(d.path(), d.path()));
    let rounds = 50;
    let start = std::time::Instant::now();
    for _ in 0..rounds {
        let lease = r
            .try_reserve(&reserver::fresh_keys("fig", 20), &reserver::live_owner())
            .await
            .unwrap();
        r.release(&lease, Duration::ZERO).await.unwrap();
    }
    eprintln!(
        "FsReserver: 20-key reserve+release {:?} per run",
        start.elapsed() / rounds
    );
    assert!(r.list(None).await.unwrap().is_empty());
}

#[tokio::test]
async fn static_pillar_conforms() {
    let p = conductor_core::StaticPillar(conductor_testkit::fixtures::devops_pillar());
    conductor_testkit::conformance::pillar::run_all(&p).await;
}

#[tokio::test]
async fn mem_accounts_conform() {
    let a = conductor_core::AccountSpec {
        role_arn: Some("arn:aws:iam::111111111111:role/a".into()),
        ..Default::default()
    };
    let b = conductor_core::AccountSpec {
        profile: Some("b".into()),
        ..Default::default()
    };
    let f = cloud::CloudFixture {
        zone: Zone::new("us-east-1a").unwrap(),
        settings: conductor_core::LaunchSettings::parse(&serde_json::json!({"image": "ami-0abc"}))
            .unwrap(),
        visible_timeout: Duration::from_secs(5),
    };
    let accounts = conductor_core::MemAccounts::new();
    conductor_testkit::conformance::accounts::run_all(&accounts, (&a, &b), &MemCloud::new(), &f)
        .await;
}
