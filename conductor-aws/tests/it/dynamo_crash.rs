//! Crash tests with the DynamoDB reserver: a real run (EC2 and DynamoDB on
//! moto, so the cloud and the table outlive the process) is SIGKILLed at each
//! lifecycle point (`CONDUCTOR_FAULT_POINT`). After each kill, `prune` frees
//! every key of the killed run and never a key of a live run (this test
//! process holds one the whole time), and the next run succeeds at once
//! without reusing a name.
//!
//! The killed runs are this test executable re-run with
//! `CONDUCTOR_CRASH_CHILD` set: the `crash_child` test then runs one create.

use std::collections::BTreeSet;
use std::os::unix::process::ExitStatusExt;
use std::sync::Arc;
use std::time::Duration;

use conductor_aws::dynamo::DynamoReserver;
use conductor_aws::ec2::Ec2Backend;
use conductor_core::conductor::Options;
use conductor_core::reserve::{now_ms, Key, Owner, Reserver};
use conductor_core::{Conductor, Cpid, Env, Layout, Provisioner};
use conductor_testkit::fixtures::{self, StaticPillar};
use conductor_testkit::moto::{MotoServer, ACCESS_KEY_ID, SECRET_ACCESS_KEY};

const CHILD: &str = "CONDUCTOR_CRASH_CHILD";
const ENDPOINT: &str = "CONDUCTOR_CRASH_ENDPOINT";
const RUNNER: &str = "CONDUCTOR_CRASH_RUNNER";
const TABLE: &str = "conductor-crash";

const POINTS: [&str; 6] = [
    "after_cpid",
    "after_reserve",
    "after_files",
    "after_launch",
    "after_visible",
    "after_release",
];

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

async fn conductor(endpoint: &str, runner: &str) -> Conductor {
    let ec2 = Ec2Backend::builder()
        .endpoint_url(endpoint)
        .static_credentials(ACCESS_KEY_ID, SECRET_ACCESS_KEY)
        .max_attempts(3)
        .build()
        .await;
    // moto launches into its default subnet.
    let pillar =
        fixtures::pillar_from_yaml(&fixtures::DEVOPS_PILLAR.replace(", subnet_id: subnet-1", ""))
            .unwrap();
    Conductor::builder()
        .cloud(Arc::new(ec2))
        .reserver(Arc::new(dynamo(endpoint).await))
        .pillar(Arc::new(StaticPillar(pillar)))
        .layout(Layout::new(
            format!("{runner}/etc"),
            format!("{runner}/runner"),
        ))
        .options(Options {
            provisioner: Provisioner::Ec2,
            release_grace: Duration::ZERO,
            visible_timeout: Duration::from_secs(10),
            ..Options::default()
        })
        .build()
        .unwrap()
}

/// The killed run (only when re-run by the parent test; a no-op otherwise).
#[tokio::test]
async fn crash_child() {
    if std::env::var(CHILD).is_err() {
        return;
    }
    let endpoint = std::env::var(ENDPOINT).unwrap();
    let runner = std::env::var(RUNNER).unwrap();
    let c = conductor(&endpoint, &runner).await;
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

    for point in POINTS {
        let before: BTreeSet<String> = instances(&ec2).await.into_iter().map(|i| i.1).collect();
        let status = tokio::process::Command::new(std::env::current_exe().unwrap())
            .args(["dynamo_crash::crash_child", "--exact", "--nocapture", "--test-threads=1"])
            .env(CHILD, "1")
            .env(ENDPOINT, moto.endpoint())
            .env(RUNNER, &runner)
            .env("CONDUCTOR_FAULT_POINT", point)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .await
            .unwrap();
        assert_eq!(status.signal(), Some(9), "{point}: killed ({status:?})");

        // The killed run's keys: its pid is dead on this host, so prune frees
        // them; the live run's key survives every prune.
        let left = table.list().await.unwrap();
        let killed: Vec<&Key> = left
            .iter()
            .filter(|r| r.owner.cpid != live.cpid)
            .map(|r| &r.key)
            .collect();
        assert!(
            point == "after_release" || !killed.is_empty(),
            "{point}: the killed run held keys"
        );
        let pruned = table.prune(now_ms(), None).await.unwrap();
        assert!(
            !pruned.contains(&held_name),
            "{point}: prune freed a live run's key"
        );
        let after: Vec<_> = table.list().await.unwrap();
        assert_eq!(
            after.iter().map(|r| &r.key).collect::<Vec<_>>(),
            vec![&held_name],
            "{point}: only the live run's key is left"
        );
        // Even `--older-than 0` keeps a live owner's key.
        table.prune(now_ms(), Some(Duration::ZERO)).await.unwrap();
        assert_eq!(table.list().await.unwrap().len(), 1, "{point}");

        // What the killed run launched carries its cpid and avoids the held name.
        let now = instances(&ec2).await;
        let new_cpids: BTreeSet<&String> = now
            .iter()
            .map(|i| &i.1)
            .filter(|c| !before.contains(*c))
            .collect();
        let launched = matches!(point, "after_launch" | "after_visible" | "after_release");
        assert_eq!(new_cpids.len(), usize::from(launched), "{point}: {now:?}");

        // The next run succeeds at once and never reuses a name.
        let report = conductor(&moto.endpoint(), &runner)
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
            table.list().await.unwrap().len(),
            1,
            "{point}: run left keys"
        );
    }
    table.release(&live_lease, Duration::ZERO).await.unwrap();
    assert!(table.list().await.unwrap().is_empty());
}
