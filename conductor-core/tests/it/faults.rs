//! Fault injection on the testkit's fakes (issue 7): a cloud that throttles
//! 30% of its calls, and salt-cloud and a startup state failing for one
//! instance each of a map.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use conductor_core::now_ms;
use conductor_core::BackendErrorKind;
use conductor_core::CloudBackend;
use conductor_core::Options;
use conductor_core::{
    Conductor, CreateReport, Error, ErrorClass, Provisioner, Reserver, RetryCloud,
};
use conductor_testkit::fake_cloud::Op;
use conductor_testkit::fake_salt::SaltCall;
use conductor_testkit::fixtures;
use conductor_testkit::harness::{master_layout, Harness};
use conductor_testkit::{FakeCloud, FakeSalt};

const LEASE_TTL: Duration = Duration::from_secs(60);

struct World {
    h: Harness,
    cloud: Arc<FakeCloud>,
    reserver: Arc<dyn Reserver>,
}

impl World {
    fn new(cloud: FakeCloud) -> Self {
        let h = Harness::new()
            .with_cloud(Arc::new(cloud))
            .with_layout(master_layout)
            .with_options(|o| {
                o.lease_ttl = LEASE_TTL;
                o.backoff_base = Duration::from_millis(5);
                o.backoff_max = Duration::from_millis(50);
                o.max_attempts = 30;
                o.visible_timeout = Duration::from_secs(5);
            });
        Self {
            cloud: h.cloud.clone(),
            reserver: h.reserver.clone(),
            h,
        }
    }

    fn conductor(
        &self,
        cloud: Arc<dyn CloudBackend>,
        salt: Arc<FakeSalt>,
        provisioner: Provisioner,
    ) -> Conductor {
        self.h
            .builder_on(cloud)
            .salt(salt)
            .options(Options {
                provisioner,
                ..self.h.opts.clone()
            })
            .build()
            .unwrap()
    }

    /// The seed's three commands, at the same time, through `cloud`.
    async fn seed_runs(&self, cloud: Arc<dyn CloudBackend>) -> Vec<Result<CreateReport, Error>> {
        let mut set = tokio::task::JoinSet::new();
        for req in fixtures::seed_requests() {
            let c = self.conductor(cloud.clone(), Arc::new(FakeSalt::new()), Provisioner::Ec2);
            set.spawn(async move { c.create(&req).await });
        }
        set.join_all().await
    }

    /// Names of the cloud's live instances, one entry per instance.
    fn live_names(&self) -> Vec<String> {
        self.cloud
            .live_instances()
            .iter()
            .filter_map(|i| i.name().map(str::to_string))
            .collect()
    }
}

/// A cloud that throttles 30% of calls and certainly the first two launches.
fn throttling_cloud(seed: u64) -> FakeCloud {
    let cloud = FakeCloud::new().with_seed(seed);
    cloud.throttle(0.3);
    cloud.fail_next(Op::Launch, 2, BackendErrorKind::Throttled);
    cloud
}

#[tokio::test]
async fn three_parallel_runs_complete_on_a_cloud_that_throttles_30_percent() {
    for seed in [1, 2, 3, 4] {
        let w = World::new(throttling_cloud(seed));
        let retrying = Arc::new(
            RetryCloud::new(w.cloud.clone())
                .max_attempts(20)
                .backoff(Duration::from_millis(1), Duration::from_millis(20)),
        );
        let mut planned = Vec::new();
        for r in w.seed_runs(retrying).await {
            let report = r.unwrap_or_else(|e| panic!("seed {seed}: {e}"));
            assert!(report.success(), "seed {seed}: {report:?}");
            planned.extend(report.plan.instances.iter().map(|i| i.name.clone()));
        }
        assert_eq!(planned.len(), 12, "seed {seed}");

        // Each planned name launched exactly once, and nothing else.
        let mut launched: Vec<String> = w.cloud.launches().into_iter().map(|(n, _)| n).collect();
        launched.sort();
        planned.sort();
        assert_eq!(launched, planned, "seed {seed}: launches");
        let mut live = w.live_names();
        live.sort();
        assert_eq!(live, planned, "seed {seed}: live instances");
        assert_eq!(
            planned.iter().collect::<BTreeSet<_>>().len(),
            12,
            "seed {seed}: names unique"
        );
        // The throttled launches were retried: 2 refused + 3 that launched.
        assert_eq!(w.cloud.launch_calls().len(), 3, "seed {seed}");
        assert!(w.cloud.calls(Op::Launch) >= 5, "seed {seed}");
        let left = w.reserver.list(None).await.unwrap();
        assert!(left.is_empty(), "seed {seed}: keys left: {left:?}");
    }
}

/// The control: the same cloud without `RetryCloud` fails runs, so the test
/// above measures the retries.
#[tokio::test]
async fn without_retries_a_throttled_cloud_fails_runs_as_unreachable() {
    let cloud = throttling_cloud(1);
    cloud.fail_next(Op::Inventory, 3, BackendErrorKind::Throttled);
    let w = World::new(cloud);
    let errors: Vec<Error> = w
        .seed_runs(w.cloud.clone())
        .await
        .into_iter()
        .filter_map(Result::err)
        .collect();
    assert!(!errors.is_empty(), "a throttled first read fails its run");
    for e in &errors {
        assert_eq!(e.class(), ErrorClass::Unreachable, "{e}");
    }
    let launched: Vec<String> = w.cloud.launches().into_iter().map(|(n, _)| n).collect();
    let unique: BTreeSet<&String> = launched.iter().collect();
    assert_eq!(unique.len(), launched.len(), "{launched:?}");
}

const BAD_VM: &str = "devops-nifigr-01.clid-1.us-east-1a.test.foobar.com";
const BAD_STATE: &str = "devops-mq01.us-east-1a.test.foobar.com";
const CAPACITY: &str =
    "An error occurred (InsufficientInstanceCapacity) when calling the RunInstances operation";

fn read_json(path: &std::path::Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// salt-cloud reports an error for one VM of the system's map and the
/// startup state fails on another: the run reports both (not a success: exit
/// 1 in the CLI), the logs hold salt's output, the other instances are kept
/// and reported, and every key is released (the failed VM's too: salt-cloud
/// answered for it).
#[tokio::test]
async fn a_salt_cloud_error_and_a_failed_state_are_reported_and_logged() {
    let w = World::new(FakeCloud::new());
    let salt = Arc::new(FakeSalt::with_cloud(w.cloud.clone(), fixtures::zone()));
    salt.fail_vm(BAD_VM, CAPACITY);
    salt.fail_states_on(BAD_STATE);
    let c = w.conductor(w.cloud.clone(), salt.clone(), Provisioner::SaltCloud);
    let report = c
        .create(&fixtures::system_request("small_test"))
        .await
        .unwrap();
    assert!(!report.success());
    assert_eq!(
        report.failed,
        vec![(BAD_VM.to_string(), CAPACITY.to_string())]
    );
    let planned: BTreeSet<String> = report.plan.names().into_iter().collect();
    let good: BTreeSet<String> = planned.iter().filter(|n| *n != BAD_VM).cloned().collect();
    assert_eq!(good.len(), 5);
    assert_eq!(
        report.launched.iter().cloned().collect::<BTreeSet<_>>(),
        good,
        "the successful instances are reported"
    );
    assert_eq!(
        w.live_names().into_iter().collect::<BTreeSet<_>>(),
        good,
        "and kept, the one whose state failed included"
    );

    // The cloud log holds salt-cloud's return: the error and the others' details.
    let cpid = report.plan.cpid.to_string();
    let cloud_log = report
        .logs
        .iter()
        .find(|p| {
            p.to_string_lossy().contains(&format!(
                "cloud_runs/{cpid}/cloud_run-conductor._group-create_"
            ))
        })
        .expect("a cloud_runs log");
    let raw = read_json(cloud_log);
    assert_eq!(raw[BAD_VM]["Error"], CAPACITY, "{raw}");
    for n in &good {
        assert!(raw[n.as_str()]["InstanceId"].is_string(), "{n}: {raw}");
    }

    // The state log holds the failed state of exactly that minion.
    assert_eq!(
        report.state_failures.len(),
        1,
        "{:?}",
        report.state_failures
    );
    let failure = &report.state_failures[0];
    assert_eq!(failure.minion, BAD_STATE);
    let log = failure.log.clone().expect("the failure names its log");
    assert!(
        log.to_string_lossy()
            .contains(&format!("state_runs/{cpid}/state_run-DEVOPS_conductor._")),
        "{log:?}"
    );
    let states = read_json(&log);
    let results: Vec<&serde_json::Value> =
        states[BAD_STATE].as_object().unwrap().values().collect();
    assert!(results.iter().any(|r| r["result"] == false), "{states}");
    assert!(states[BAD_VM].is_null(), "no state ran on the failed VM");
    let applied: BTreeSet<String> = salt
        .calls()
        .into_iter()
        .filter_map(|c| match c {
            SaltCall::StateApply { targets, .. } => Some(targets),
            _ => None,
        })
        .flatten()
        .collect();
    assert_eq!(
        applied, good,
        "startup states ran on every launched instance"
    );

    // salt-cloud answered with an error for the failed VM, so its keys are
    // released with the grace (0 here) like those of the visible instances.
    let held = w.reserver.list(None).await.unwrap();
    let now = now_ms();
    assert!(
        held.iter()
            .all(|r| r.holder.owner().is_some_and(|o| o.expires <= now)),
        "every key released: {held:?}"
    );
    w.reserver.prune(now, None, None).await.unwrap();
    assert!(w.reserver.list(None).await.unwrap().is_empty());

    // A new run afterwards succeeds and uses no name twice.
    let c = w.conductor(
        w.cloud.clone(),
        Arc::new(FakeSalt::with_cloud(w.cloud.clone(), fixtures::zone())),
        Provisioner::SaltCloud,
    );
    let again = c
        .create(&fixtures::system_request("small_test"))
        .await
        .unwrap();
    assert!(again.success(), "{again:?}");
    let live = w.live_names();
    assert_eq!(live.len(), 11);
    assert_eq!(live.iter().collect::<BTreeSet<_>>().len(), 11, "{live:?}");
}
