//! Property tests of the naming engine and of concurrent runs.
//!
//! Concurrent runs share one `FakeCloud` and one reserver, on a paused-clock
//! tokio runtime. The cloud has call latency (reads see the state at their
//! start), random visibility lag, and a consistency spread during which reads
//! see a new instance only at random; the release grace equals the spread, as
//! DESIGN section 3 step 8 requires. Setting `CONDUCTOR_RACES_NO_CHECK=1` turns
//! check-after-reserve off, which makes `concurrent_runs_never_collide` fail:
//! that is the evidence that the step is needed.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use conductor_core::{plan, Cpid, CreateRequest, Inventory};
use conductor_core::{Key, KeyKind};
use conductor_testkit::fake_cloud::Lag;
use conductor_testkit::fixtures;
use conductor_testkit::harness::{paused_runtime, Harness};
use conductor_testkit::FakeCloud;
use proptest::prelude::*;

/// Every cloud call takes this long; reads see the state at their start.
const LATENCY: Duration = Duration::from_millis(300);
/// New instances show to some reads only, for this long after they first show.
const SPREAD: Duration = Duration::from_millis(400);
/// Released keys stay held this long. A run's re-check reads the cloud at
/// least `LATENCY + GRACE` after the instance it races with first showed, so
/// `SPREAD <= LATENCY + GRACE` makes the re-check see it; without the re-check,
/// a read started in `[GRACE, SPREAD)` after that moment misses it.
const GRACE: Duration = Duration::from_millis(100);
const DOMAIN_TAIL: &str = ".us-east-1a.test.foobar.com";

fn request(kind: u8, count: u32) -> CreateRequest {
    match kind % 3 {
        0 => fixtures::role_request("activemq", Some(count)),
        1 => fixtures::role_request("nifi", None),
        _ => fixtures::system_request("small_test"),
    }
}

/// Adds existing instances: activemq indexes, and nifi clusters (tagged;
/// their cross-group ids are the lowest, 1, 2, …, so a new cluster that
/// did not count them would take one of them).
fn seed_cloud(cloud: &FakeCloud, mq: &BTreeSet<u32>, clusters: &BTreeSet<u32>) {
    let z = fixtures::zone();
    for i in mq {
        cloud.add_instance(&format!("devops-mq{i:02}{DOMAIN_TAIL}"), &z, &[]);
    }
    for (rank, c) in clusters.iter().enumerate() {
        let g = c.to_string();
        let cloud_id = (rank + 1).to_string();
        cloud.add_instance(
            &format!("devops-nifi-01.clid-{c}{DOMAIN_TAIL}"),
            &z,
            &[
                ("conductor:env", "test"),
                ("conductor:devops.nifi.cluster.id", &g),
                ("conductor:cloud.nifi.cluster.id", &cloud_id),
            ],
        );
    }
}

struct Case {
    mq: BTreeSet<u32>,
    clusters: BTreeSet<u32>,
    runs: Vec<(u8, u32, u64)>,
    lag: Lag,
    seed: u64,
    fs: bool,
    check: bool,
}

/// What the runs left in the cloud: live names (with repeats) and ids per scope.
struct Outcome {
    names: Vec<String>,
    ids: BTreeMap<(String, String), BTreeSet<String>>,
    leftover_keys: usize,
    failures: Vec<String>,
}

fn run_case(case: &Case) -> Outcome {
    paused_runtime().block_on(async {
        let cloud = Arc::new(
            FakeCloud::new()
                .with_lag(case.lag)
                .with_latency(LATENCY)
                .with_consistency_spread(SPREAD)
                .with_seed(case.seed),
        );
        seed_cloud(&cloud, &case.mq, &case.clusters);
        let h = Harness::new().with_cloud(cloud.clone()).with_options(|o| {
            o.release_grace = GRACE;
            o.backoff_max = Duration::from_millis(200);
            o.max_attempts = 200;
            o.visible_timeout = Duration::from_secs(60);
            o.check_after_reserve = case.check;
        });
        let h = if case.fs { h.with_fs_reserver() } else { h };
        let reserver = h.reserver.clone();
        let mut set = tokio::task::JoinSet::new();
        for (kind, count, delay) in &case.runs {
            let c = h.conductor();
            let req = request(*kind, *count);
            let delay = Duration::from_millis(*delay);
            set.spawn(async move {
                tokio::time::sleep(delay).await;
                c.create(&req).await
            });
        }
        let mut failures = Vec::new();
        while let Some(r) = set.join_next().await {
            match r.unwrap() {
                Ok(rep) if rep.success() => {}
                Ok(rep) => failures.push(format!("{rep:?}")),
                Err(e) => failures.push(e.to_string()),
            }
        }
        let mut names = Vec::new();
        let mut ids: BTreeMap<(String, String), BTreeSet<String>> = BTreeMap::new();
        for i in cloud.live_instances() {
            names.push(i.name().unwrap().to_string());
            // Seeded instances count too: a run must not take their ids.
            let cpid = i.tag("conductor:cpid").unwrap_or("seeded");
            for (k, v) in &i.tags {
                if k.ends_with(".id") {
                    ids.entry((k.clone(), v.clone()))
                        .or_default()
                        .insert(cpid.to_string());
                }
            }
        }
        // Released keys expire after the grace; then prune empties the store.
        tokio::time::sleep(GRACE + Duration::from_millis(1)).await;
        reserver
            .prune(conductor_core::now_ms(), None, None)
            .await
            .unwrap();
        let leftover_keys = reserver.list(None).await.unwrap().len();
        Outcome {
            names,
            ids,
            leftover_keys,
            failures,
        }
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

/// Cases per property: `CONDUCTOR_RACES_CASES`, default 24.
fn cases() -> u32 {
    std::env::var("CONDUCTOR_RACES_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(24)
}

fn check_after_reserve() -> bool {
    std::env::var_os("CONDUCTOR_RACES_NO_CHECK").is_none()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), ..ProptestConfig::default() })]

    #[test]
    fn concurrent_runs_never_collide(
        mq in prop::collection::btree_set(1u32..12, 0..6),
        clusters in prop::collection::btree_set(1u32..5, 0..3),
        runs in prop::collection::vec((0u8..3, 1u32..4, 0u64..2000), 2..=16),
        lag_ms in 0u64..1500,
        seed in any::<u64>(),
        fs in any::<bool>(),
    ) {
        let lag = Lag::UpTo(Duration::from_millis(lag_ms));
        let case = Case { mq, clusters, runs, lag, seed, fs, check: check_after_reserve() };
        let out = run_case(&case);
        prop_assert!(out.failures.is_empty(), "runs failed: {:?}", out.failures);
        prop_assert!(duplicates(&out.names).is_empty(), "duplicate names: {:?}", duplicates(&out.names));
        for ((tag, value), cpids) in &out.ids {
            prop_assert!(cpids.len() == 1, "{tag}={value} used by runs {cpids:?}");
        }
        prop_assert_eq!(out.leftover_keys, 0, "reservations left behind");
    }

    #[test]
    fn plan_picks_the_lowest_free_indexes_and_is_deterministic(
        used in prop::collection::btree_set(1u32..30, 0..20),
        reserved in prop::collection::btree_set(1u32..30, 0..10),
        count in 1u32..6,
        other_env in prop::collection::btree_set(1u32..30, 0..5),
    ) {
        let cloud = FakeCloud::new();
        let z = fixtures::zone();
        for i in &used {
            cloud.add_instance(&format!("devops-mq{i:02}{DOMAIN_TAIL}"), &z, &[]);
        }
        for i in &other_env {
            cloud.add_instance(&format!("devops-mq{i:02}.us-east-1a.prod.foobar.com"), &z, &[]);
        }
        let inv = Inventory { instances: cloud.all_instances() };
        let keys: BTreeSet<Key> = reserved
            .iter()
            .map(|i| Key::new(KeyKind::Name, format!("test_devops-mq{i:02}{DOMAIN_TAIL}")).unwrap())
            .collect();
        let req = fixtures::role_request("activemq", Some(count));
        let pillar = fixtures::devops_pillar();
        let cpid = Cpid::from_parts(42, 1_700_000_000);
        let p = plan(cpid, &req, &pillar, &inv, &keys).unwrap();
        let expected: Vec<u32> = (1..).filter(|i| !used.contains(i) && !reserved.contains(i)).take(count as usize).collect();
        let got: Vec<u32> = p.instances.iter().map(|i| i.index).collect();
        prop_assert_eq!(got, expected);
        prop_assert_eq!(plan(cpid, &req, &pillar, &inv, &keys).unwrap(), p);
    }
}

/// The same property with check-after-reserve off must fail. Two runs of
/// `role=activemq count=2`: the first launches at 600 ms (one call of latency
/// for its inventory, one for the launch); its instances first show at 950 ms
/// and to every read from 1350 ms; its wait sees both at the 1000 ms read on
/// some seeds and releases at 1300 ms with 100 ms grace. A second run started
/// in [1100, 1350) ms then reads a stale inventory and finds the keys free.
/// The same schedules with the re-check on never collide.
#[test]
fn without_check_after_reserve_runs_collide() {
    let case = |delay: u64, seed: u64, check: bool| Case {
        mq: BTreeSet::new(),
        clusters: BTreeSet::new(),
        runs: vec![(0, 2, 0), (0, 2, delay)],
        lag: Lag::Fixed(Duration::from_millis(350)),
        seed,
        fs: false,
        check,
    };
    let mut collided = Vec::new();
    for seed in 0..12u64 {
        for delay in (1000..1400).step_by(25) {
            let out = run_case(&case(delay, seed, false));
            if !duplicates(&out.names).is_empty() {
                collided.push((delay, seed));
            }
        }
    }
    assert!(
        !collided.is_empty(),
        "with check-after-reserve off, some schedule must hand out a name twice"
    );
    eprintln!("schedules (delay ms, seed) that collide without check-after-reserve: {collided:?}");
    for (delay, seed) in collided {
        let out = run_case(&case(delay, seed, true));
        assert!(
            duplicates(&out.names).is_empty(),
            "delay {delay} seed {seed} collides even with the re-check"
        );
        assert!(out.failures.is_empty(), "{:?}", out.failures);
    }
}
