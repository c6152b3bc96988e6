//! Crash tests with the DynamoDB reserver: a real run (EC2 and DynamoDB on
//! moto, so the cloud and the table outlive the process) is SIGKILLed at each
//! lifecycle step (an observer, `conductor_testkit::crash::KillAt`). After
//! each kill, `prune` frees the keys of a run killed while planning, holds
//! those of a run that may have launched until they expire, and never
//! frees a key of a live run (this test process holds one the whole time);
//! the next run succeeds at once without reusing a name.
//!
//! The killed runs are this test executable re-run with
//! `CONDUCTOR_CRASH_CHILD` set: the `crash_child` test then runs one create.

use std::collections::BTreeSet;
use std::os::unix::process::ExitStatusExt;
use std::sync::Arc;
use std::time::Duration;

use conductor_aws::dynamo::DynamoReserver;
use conductor_aws::ec2::Ec2Backend;
use conductor_core::Options;
use conductor_core::{now_ms, Key, Owner, Reserver};
use conductor_core::{Conductor, Cpid, Env, Layout, Provisioner, Step};
use conductor_testkit::crash::{KillAt, CRASH_AT_ENV};
use conductor_testkit::fixtures;
use conductor_testkit::harness::Harness;
use conductor_testkit::moto::{MotoServer, ACCESS_KEY_ID, SECRET_ACCESS_KEY};

const CHILD: &str = "CONDUCTOR_CRASH_CHILD";
const ENDPOINT: &str = "CONDUCTOR_CRASH_ENDPOINT";
const RUNNER: &str = "CONDUCTOR_CRASH_RUNNER";
const TABLE: &str = "conductor-crash";

async fn dynamo(endpoint: &str) -> DynamoReserver {
    DynamoReserver::builder(TABLE)
        .endpoint_url(endpoint)
        .region("us-east-1")
        .static_credentials(ACCESS_KEY_ID, SECRET_ACCESS_KEY)
        .create_table_if_missing(true)
        .build()
        .await
        .unwrap()
}

async fn conductor(endpoint: &str, runner: &str, kill: Option<KillAt>) -> Conductor {
    let ec2 = Ec2Backend::builder()
        .endpoint_url(endpoint)
        .static_credentials(ACCESS_KEY_ID, SECRET_ACCESS_KEY)
        .max_attempts(3)
        .build()
        .await;
    // moto launches into its default subnet.
    let pillar = conductor_core::Pillar::from_yaml_str(
        &fixtures::DEVOPS_PILLAR.replace(", subnet_id: subnet-1", ""),
    )
    .unwrap();
    // The files go under the parent's runner dir, which outlives this process.
    Harness::new()
        .with_pillar(pillar)
        .with_reserver(Arc::new(dynamo(endpoint).await))
        .with_layout(|_| Layout::new(format!("{runner}/etc"), format!("{runner}/runner")))
        .with_options(|o| {
            *o = Options {
                provisioner: Provisioner::Ec2,
                release_grace: Duration::ZERO,
                visible_timeout: Duration::from_secs(10),
                ..Options::default()
            }
        })
        .builder_on(Arc::new(ec2))
        .observer(Arc::new(KillAtOrNot(kill)))
        .build()
        .unwrap()
}

/// The child's observer: [`KillAt`] when the parent named a step.
#[derive(Debug)]
struct KillAtOrNot(Option<KillAt>);

impl conductor_core::Observer for KillAtOrNot {
    fn step(&self, cpid: Cpid, step: Step) {
        if let Some(k) = &self.0 {
            conductor_core::Observer::step(k, cpid, step);
        }
    }
}

/// The killed run (only when re-run by the parent test; a no-op otherwise).
#[tokio::test]
async fn crash_child() {
    if std::env::var(CHILD).is_err() {
        return;
    }
    let endpoint = std::env::var(ENDPOINT).unwrap();
    let runner = std::env::var(RUNNER).unwrap();
    let kill = KillAt::from_env().expect("the parent names the step");
    let c = conductor(&endpoint, &runner, Some(kill)).await;
    let r = c.create(&fixtures::role_request("activemq", None)).await;
    // Reached only when the fault point did not fire.
    panic!("the run was not killed: {r:?}");
}

/// Names of the live instances in moto, each with its cpid tag.
async fn instances(ec2: &Ec2Backend) -> Vec<(String, String)> {
    let out = ec2
        .client(&fixtures::zone().region())
        .describe_instances()
        .send()
        .await
        .unwrap();
    out.reservations()
        .iter()
        .flat_map(|r| r.instances())
        .filter(|i| i.state().and_then(|s| s.name()).map(|n| n.as_str()) != Some("terminated"))
        .filter_map(|i| {
            let tag = |k: &str| {
                i.tags()
                    .iter()
                    .find(|t| t.key() == Some(k))
                    .and_then(|t| t.value())
                    .map(str::to_string)
            };
            Some((tag("Name")?, tag("conductor:cpid").unwrap_or_default()))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_at_every_lifecycle_point_with_dynamodb() {
    if std::env::var(CHILD).is_ok() {
        return;
    }
    let moto = MotoServer::start();
    let dir = tempfile::tempdir().unwrap();
    let runner = dir.path().to_str().unwrap().to_string();
    let table = dynamo(&moto.endpoint()).await;
    let ec2 = Ec2Backend::builder()
        .endpoint_url(moto.endpoint())
        .static_credentials(ACCESS_KEY_ID, SECRET_ACCESS_KEY)
        .build()
        .await;

    // A live run (this process) holds a name the killed runs would choose first.
    let env = Env::new("test").unwrap();
    let held_name = Key::name(&env, "devops-mq01.us-east-1a.test.foobar.com").unwrap();
    let live = Owner::this_process(Cpid::generate(), Duration::from_secs(3600));
    let live_lease = table
        .try_reserve(std::slice::from_ref(&held_name), &live)
        .await
        .unwrap();

    for step in Step::ALL {
        let point = step.as_str();
        let before: BTreeSet<String> = instances(&ec2).await.into_iter().map(|i| i.1).collect();
        let out = tokio::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "dynamo_crash::crash_child",
                "--exact",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD, "1")
            .env(ENDPOINT, moto.endpoint())
            .env(RUNNER, &runner)
            .env(CRASH_AT_ENV, point)
            .output()
            .await
            .unwrap();
        assert_eq!(
            out.status.signal(),
            Some(9),
            "{point}: killed ({:?}); the child's stdout:\n{}\nstderr:\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );

        // The killed run's keys: its pid is dead on this host. While it was
        // planning, prune frees them; once it may have launched, they stay
        // held until they expire (released ones have a grace of 0 here).
        // The live run's key survives every prune.
        let left = table.list(None).await.unwrap();
        let killed: Vec<&Key> = left
            .iter()
            .filter(|r| r.holder.owner().is_some_and(|o| o.cpid != live.cpid))
            .map(|r| &r.key)
            .collect();
        assert!(!killed.is_empty(), "{point}: the killed run held keys");
        let pruned = table.prune(now_ms(), None, None).await.unwrap();
        assert!(
            !pruned.contains(&held_name),
            "{point}: prune freed a live run's key"
        );
        let after: Vec<Key> = table
            .list(None)
            .await
            .unwrap()
            .into_iter()
            .map(|r| r.key)
            .collect();
        let may_have_launched = matches!(step, Step::Launching | Step::Launched | Step::Visible);
        if may_have_launched {
            // Its two names (activemq, nodes 2), every one it held.
            let names: Vec<&Key> = killed
                .iter()
                .copied()
                .filter(|k| !k.as_str().starts_with("cpid."))
                .collect();
            assert_eq!(
                names.len(),
                2,
                "{point}: the killed run held its two names: {left:?}"
            );
            assert!(
                names.iter().all(|k| after.contains(k))
                    && after.iter().all(|k| !k.as_str().starts_with("cpid.")),
                "{point}: the killed run's names stay held ({names:?}), its cpid is freed: {after:?}"
            );
        } else {
            assert_eq!(
                after,
                vec![held_name.clone()],
                "{point}: only the live run's key is left"
            );
        }
        // `--older-than 0` frees a dead run's keys, and keeps a live owner's key.
        table
            .prune(now_ms(), None, Some(Duration::ZERO))
            .await
            .unwrap();
        assert_eq!(table.list(None).await.unwrap().len(), 1, "{point}");

        // What the killed run launched carries its cpid and avoids the held name.
        let now = instances(&ec2).await;
        let new_cpids: BTreeSet<&String> = now
            .iter()
            .map(|i| &i.1)
            .filter(|c| !before.contains(*c))
            .collect();
        let launched = matches!(step, Step::Launched | Step::Visible | Step::Released);
        assert_eq!(new_cpids.len(), usize::from(launched), "{point}: {now:?}");

        // The next run succeeds at once and never reuses a name.
        let report = conductor(&moto.endpoint(), &runner, None)
            .await
            .create(&fixtures::role_request("activemq", None))
            .await
            .unwrap();
        assert!(report.success(), "{point}: {report:?}");
        let names: Vec<String> = instances(&ec2).await.into_iter().map(|i| i.0).collect();
        let unique: BTreeSet<&String> = names.iter().collect();
        assert_eq!(
            unique.len(),
            names.len(),
            "{point}: a name used twice: {names:?}"
        );
        assert!(
            !names.iter().any(|n| n.starts_with("devops-mq01.")),
            "{point}: the held name was used: {names:?}"
        );
        assert_eq!(
            table.list(None).await.unwrap().len(),
            1,
            "{point}: run left keys"
        );
    }
    table.release(&live_lease, Duration::ZERO).await.unwrap();
    assert!(table.list(None).await.unwrap().is_empty());
}
