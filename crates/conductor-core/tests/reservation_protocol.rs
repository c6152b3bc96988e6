//! The reservation protocol: the race the seed's protocol loses and ours
//! does not, and lease renewal during long runs. Paused tokio clock.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use conductor_core::cloud::{
    CloudBackend, InstanceRef, Inventory, LaunchResult, LaunchSpec, Scope,
};
use conductor_core::conductor::Options;
use conductor_core::error::BackendError;
use conductor_core::reserve::now_ms;
use conductor_core::{Conductor, Layout, Provisioner, Region, Reserver};
use conductor_testkit::fake_cloud::Lag;
use conductor_testkit::fixtures::{self, StaticPillar};
use conductor_testkit::{FakeCloud, MemReserver};

/// The seed's cloud handling: a launched instance counts as done at once
/// (no wait for it to show in the inventory).
#[derive(Debug)]
struct NoWait(Arc<FakeCloud>);

#[async_trait]
impl CloudBackend for NoWait {
    async fn inventory(&self, scope: &Scope) -> Result<Inventory, BackendError> {
        self.0.inventory(scope).await
    }
    async fn launch(&self, specs: &[LaunchSpec]) -> Result<Vec<LaunchResult>, BackendError> {
        self.0.launch(specs).await
    }
    async fn terminate(&self, refs: &[InstanceRef]) -> Result<(), BackendError> {
        self.0.terminate(refs).await
    }
    async fn wait_visible(
        &self,
        _: &Region,
        names: &[String],
        _: Duration,
    ) -> Result<BTreeSet<String>, BackendError> {
        Ok(names.iter().cloned().collect())
    }
}

/// Two runs of `role=activemq`: A launches at once; its instances show in
/// EC2 two seconds later. B starts after A has finished. Returns the names.
fn two_runs(seed_protocol: bool) -> Vec<String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .unwrap();
    rt.block_on(async {
        let fake = Arc::new(FakeCloud::new().with_lag(Lag::Fixed(Duration::from_secs(2))));
        let cloud: Arc<dyn CloudBackend> = if seed_protocol {
            Arc::new(NoWait(fake.clone()))
        } else {
            fake.clone()
        };
        let reserver: Arc<dyn Reserver> = Arc::new(MemReserver::new());
        let opts = Options {
            provisioner: Provisioner::Ec2,
            release_grace: if seed_protocol {
                Duration::ZERO
            } else {
                Duration::from_secs(5)
            },
            check_after_reserve: !seed_protocol,
            backoff_base: Duration::from_millis(50),
            visible_timeout: Duration::from_secs(60),
            ..Options::default()
        };
        // Runs write files: give them a real directory.
        let dir = tempfile::tempdir().unwrap();
        let mk = || {
            Conductor::builder()
                .cloud(cloud.clone())
                .reserver(reserver.clone())
                .pillar(Arc::new(StaticPillar(fixtures::devops_pillar())))
                .layout(Layout::new(
                    dir.path().join("etc"),
                    dir.path().join("runner"),
                ))
                .options(opts.clone())
                .build()
                .unwrap()
        };
        let a = mk()
            .create(&fixtures::role_request("activemq", None))
            .await
            .unwrap();
        assert!(a.success());
        let b = mk()
            .create(&fixtures::role_request("activemq", None))
            .await
            .unwrap();
        assert!(b.success());
        fake.live_instances()
            .iter()
            .filter_map(|i| i.name().map(str::to_string))
            .collect()
    })
}

fn duplicates(names: &[String]) -> Vec<String> {
    let mut seen = BTreeSet::new();
    names
        .iter()
        .filter(|n| !seen.insert(n.as_str()))
        .cloned()
        .collect()
}

#[test]
fn the_seed_protocol_hands_out_a_name_twice_and_ours_does_not() {
    let seed = two_runs(true);
    assert_eq!(
        duplicates(&seed),
        [
            "devops-mq01.us-east-1a.test.foobar.com",
            "devops-mq02.us-east-1a.test.foobar.com"
        ],
        "release right after launch, no re-check: the second run reuses the first run's names"
    );
    let ours = two_runs(false);
    assert!(duplicates(&ours).is_empty(), "{ours:?}");
    assert_eq!(ours.len(), 4);
}

/// A run whose launch takes far longer than the lease TTL keeps its keys:
/// they are renewed while it works.
#[test]
fn leases_are_renewed_while_a_run_works() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .unwrap();
    rt.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let fake = Arc::new(FakeCloud::new().with_latency(Duration::from_secs(30)));
        let reserver: Arc<dyn Reserver> = Arc::new(MemReserver::new());
        let opts = Options {
            provisioner: Provisioner::Ec2,
            release_grace: Duration::ZERO,
            lease_ttl: Duration::from_secs(3),
            visible_timeout: Duration::from_secs(120),
            ..Options::default()
        };
        let c = Conductor::builder()
            .cloud(fake.clone())
            .reserver(reserver.clone())
            .pillar(Arc::new(StaticPillar(fixtures::devops_pillar())))
            .layout(Layout::new(
                dir.path().join("etc"),
                dir.path().join("runner"),
            ))
            .options(opts)
            .build()
            .unwrap();
        let run =
            tokio::spawn(async move { c.create(&fixtures::role_request("activemq", None)).await });
        // Well past the TTL, during the 30 s launch: the names are still held.
        tokio::time::sleep(Duration::from_secs(75)).await;
        let held = reserver.held(now_ms(), None).await.unwrap();
        let names: Vec<&str> = held
            .iter()
            .map(|k| k.as_str())
            .filter(|k| k.starts_with("test_devops-mq"))
            .collect();
        assert_eq!(
            names.len(),
            2,
            "renewed keys are held after 25 TTLs: {held:?}"
        );
        assert!(run.await.unwrap().unwrap().success());
        assert!(
            reserver.list().await.unwrap().is_empty(),
            "released at the end"
        );
    });
}
