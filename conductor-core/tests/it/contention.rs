//! Many runs that want the same names: every run succeeds in one attempt
//! (fairness), takes the lowest indexes still free, a lost key costs no
//! inventory read, and no run keeps a name the cloud showed as taken when it
//! reserved it.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use conductor_core::{Cpid, MemReserver, Observer, Step};
use conductor_testkit::fake_cloud::{Lag, Op};
use conductor_testkit::harness::{paused_runtime, Harness};
use conductor_testkit::{fixtures, FakeCloud, FaultReserver};
use tokio::time::Instant;

/// When each run reserved (its `Reserved` step).
#[derive(Debug, Default)]
struct ReservedAt(Mutex<BTreeMap<Cpid, Instant>>);

impl Observer for ReservedAt {
    fn step(&self, cpid: Cpid, step: Step) {
        if step == Step::Reserved {
            self.0.lock().unwrap().insert(cpid, Instant::now());
        }
    }
}

/// 32 runs of `role=activemq count=2` at once on a cloud answering every
/// call after 100 ms, with a visibility lag: every run succeeds, no name is
/// launched twice, none is launched by a run that reserved it after another
/// run's instance of that name existed; prints the attempts' distribution.
#[test]
fn thirty_two_runs_for_the_same_names_all_succeed_and_never_share_one() {
    paused_runtime().block_on(async {
        let cloud = Arc::new(
            FakeCloud::new()
                .with_latency(Duration::from_millis(100))
                .with_lag(Lag::UpTo(Duration::from_millis(800)))
                .with_consistency_spread(Duration::from_millis(400))
                .with_seed(3),
        );
        let reserved = Arc::new(ReservedAt::default());
        // Every call takes 20 ms, as a shared store's would: parallel runs read
        // the same reservations and then race to reserve.
        let reserver = Arc::new(FaultReserver::new(MemReserver::new()).with_latency(Duration::from_millis(20)));
        let h = Harness::new()
            .with_cloud(cloud.clone())
            .with_reserver(reserver.clone())
            .with_options(|o| {
                // The defaults of real runs, not the harness's quick ones.
                let d = conductor_core::Options::default();
                (o.max_attempts, o.backoff_base, o.backoff_max) =
                    (d.max_attempts, d.backoff_base, d.backoff_max);
                o.release_grace = Duration::from_secs(2);
            });
        let c = h.builder().observer(reserved.clone()).build().unwrap();
        let mut runs = tokio::task::JoinSet::new();
        for _ in 0..32 {
            let c = c.clone();
            runs.spawn(async move { c.create(&fixtures::role_request("activemq", None)).await });
        }
        let mut attempts: BTreeMap<u32, usize> = BTreeMap::new();
        let mut built: Vec<(Cpid, Vec<String>)> = Vec::new();
        while let Some(r) = runs.join_next().await {
            let report = r
                .unwrap()
                .expect("every run gets its names within its attempts");
            assert!(report.success(), "{report:?}");
            *attempts.entry(report.attempts).or_default() += 1;
            built.push((report.plan.cpid, report.launched.clone()));
        }
        eprintln!("attempts per run (attempts: runs): {attempts:?}");
        let launches = cloud.launches();
        let names: Vec<&String> = launches.iter().map(|(n, _)| n).collect();
        let unique: BTreeSet<&&String> = names.iter().collect();
        assert_eq!(
            unique.len(),
            names.len(),
            "a name launched twice: {names:?}"
        );
        assert_eq!(names.len(), 64);
        // Each run took the lowest free indexes it could get: no gaps.
        let expected: BTreeSet<String> = (1..=64)
            .map(|i| format!("devops-mq{i:02}.us-east-1a.test.foobar.com"))
            .collect();
        assert_eq!(
            unique
                .iter()
                .map(|n| n.to_string())
                .collect::<BTreeSet<_>>(),
            expected
        );
        // No run reserved a name after another run's instance of it existed.
        let first_launch: BTreeMap<&String, Instant> =
            launches.iter().map(|(n, t)| (n, *t)).collect();
        let at = reserved.0.lock().unwrap();
        for (cpid, launched) in &built {
            for name in launched {
                let ours = first_launch[name];
                let reserved_at = at[cpid];
                assert!(reserved_at <= ours, "{name} reserved after it launched");
            }
        }
        // A lost key costs neither an inventory read nor an attempt: the
        // runs contended (many more calls to reserve than runs), yet each
        // planned once (no run's instances were out when another read the
        // cloud, so no check after reserving found a clash).
        let reads = cloud.calls(Op::Inventory);
        let reserves = reserver.reserves();
        eprintln!("{reads} inventory reads (visibility polls included) and {reserves} calls to reserve for 32 runs");
        assert!(reserves > 32, "the runs did contend: {reserves} calls to reserve");
        assert_eq!(attempts, BTreeMap::from([(1, 32)]), "attempts: runs");
    });
}
