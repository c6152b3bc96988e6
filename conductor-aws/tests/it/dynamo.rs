//! `DynamoReserver` on a real `moto_server`: the Reserver conformance suite,
//! 16-task races (for keys, and to take over expired and dead owners' keys),
//! transactions over the 100-item limit, key prefixes, the
//! TTL attribute, error mapping, whole runs through `Conductor`, and the
//! calls a run makes.

use std::sync::Arc;
use std::time::Duration;

use conductor_aws::dynamo::{DynamoReserver, DynamoReserverBuilder};
use conductor_core::{BackendErrorKind, ReserveError};
use conductor_core::{Key, KeyKind, Reserver};
use conductor_testkit::conformance::reserver::{self, fresh_keys, live_owner};
use conductor_testkit::moto::{MotoServer, ACCESS_KEY_ID, SECRET_ACCESS_KEY};
use conductor_testkit::proxy::SerialProxy;

/// A builder of `table` on `endpoint` with moto's credentials.
pub(crate) fn on(endpoint: impl Into<String>, table: &str) -> DynamoReserverBuilder {
    DynamoReserver::builder(table)
        .endpoint_url(endpoint)
        .region("us-east-1")
        .static_credentials(ACCESS_KEY_ID, SECRET_ACCESS_KEY)
}

async fn reserver(moto: &MotoServer, table: &str) -> DynamoReserver {
    on(moto.endpoint(), table)
        .create_table_if_missing(true)
        .build()
        .await
        .unwrap()
}

/// moto, a `SerialProxy` in front of it, and a reserver on `table` through
/// the proxy (keep the first two alive while the reserver is used).
async fn serialized(table: &str) -> (MotoServer, SerialProxy, Arc<dyn Reserver>) {
    let moto = MotoServer::start();
    let proxy = SerialProxy::start(moto.port()).await;
    let r = on(proxy.endpoint(), table)
        .create_table_if_missing(true)
        .build()
        .await
        .unwrap();
    (moto, proxy, Arc::new(r))
}

/// A key another run's transaction is writing refuses writes for a moment
/// (`TransactionConflictException`, which the SDK does not retry): a
/// renewal or fence of it is written again shortly, not failed as bad input.
#[tokio::test]
async fn a_write_on_a_key_busy_in_another_transaction_is_retried() {
    let (_moto, proxy, r) = serialized("conductor-busy").await;
    let owner = live_owner();
    let lease = r.try_reserve(&fresh_keys("busy", 1), &owner).await.unwrap();
    proxy.conflict_next("UpdateItem", 2);
    let expires = conductor_core::now_ms() + 60_000;
    r.update(&lease, expires, conductor_core::Phase::Launching)
        .await
        .expect("written once the other transaction ended");
    assert_eq!(proxy.conflicted(), 2, "both busy answers were seen");
    let held = r.list(None).await.unwrap();
    let owner = held[0].holder.owner().expect("the run's record");
    assert_eq!(
        (owner.expires, owner.phase),
        (expires, conductor_core::Phase::Launching)
    );
}

#[tokio::test]
async fn dynamo_reserver_conforms_on_moto() {
    let moto = MotoServer::start();
    reserver::run_all(&reserver(&moto, "conductor-conformance").await).await;
}

/// moto restores a whole-table snapshot when a transaction fails, so
/// concurrent requests can undo each other; DynamoDB serializes conflicting
/// transactions. The races run through `SerialProxy`, which gives moto that
/// isolation, so what is tested is the reserver's protocol.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sixteen_tasks_race_on_moto() {
    let (_moto, _proxy, r) = serialized("conductor-race").await;
    for _ in 0..5 {
        reserver::race(r.clone(), 16).await;
    }
}

/// Sixteen runs race to take over one expired key: one wins (through
/// `SerialProxy`, see above).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sixteen_tasks_race_to_take_over_on_moto() {
    let (_moto, _proxy, r) = serialized("conductor-takeover").await;
    for _ in 0..5 {
        reserver::race_takeover(r.clone(), 16).await;
    }
}

/// Sixteen runs race for a key of a dead planning owner that has not
/// expired: each finds it free and tries the second, takeover transaction
/// conditioned on that record; one wins (through `SerialProxy`, see above).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sixteen_tasks_race_to_take_over_a_dead_owner_on_moto() {
    let (_moto, _proxy, r) = serialized("conductor-dead-takeover").await;
    for _ in 0..5 {
        let dead = reserver::dead_owner(conductor_core::Phase::Planning);
        reserver::race_takeover_of(r.clone(), 16, dead).await;
    }
}

#[tokio::test]
async fn over_one_hundred_keys_are_all_or_nothing() {
    let moto = MotoServer::start();
    let r = reserver(&moto, "conductor-chunks").await;
    let keys: Vec<Key> = (0..250)
        .map(|i| Key::new(KeyKind::Name, format!("test_big-{i:03}.example.com")).unwrap())
        .collect();
    // Another run holds a key of the last chunk: nothing of the 250 may stay.
    let other = live_owner();
    r.try_reserve(&keys[240..241], &other).await.unwrap();
    match r.try_reserve(&keys, &live_owner()).await {
        Err(ReserveError::Conflict(k)) => assert_eq!(k, vec![keys[240].clone()]),
        other => panic!("expected a conflict, got {other:?}"),
    }
    let held = r.list(None).await.unwrap();
    assert_eq!(held.len(), 1, "earlier chunks were rolled back");
    // Free, the 250 keys are granted together.
    r.prune(u64::MAX, None, None).await.unwrap();
    assert!(r.list(None).await.unwrap().is_empty());
    let lease = r.try_reserve(&keys, &live_owner()).await.unwrap();
    assert_eq!(r.list(None).await.unwrap().len(), 250);
    r.release(&lease, Duration::ZERO).await.unwrap();
    assert!(r.list(None).await.unwrap().is_empty());
}

#[tokio::test]
async fn a_missing_table_is_a_clear_error() {
    let moto = MotoServer::start();
    let e = on(moto.endpoint(), "nope").build().await.unwrap_err();
    assert!(
        e.to_string().contains("\"nope\"") && e.to_string().contains("--create-table"),
        "{e}"
    );
}

/// A 20-key run costs one DynamoDB call to reserve, one to renew and one to
/// release, whatever the key count.
#[tokio::test]
async fn a_twenty_key_run_makes_three_calls() {
    let moto = MotoServer::start();
    let r = reserver(&moto, "conductor-calls").await;
    let rounds = 5;
    let before = r.calls();
    for _ in 0..rounds {
        let lease = r
            .try_reserve(&fresh_keys("calls", 20), &live_owner())
            .await
            .unwrap();
        let until = conductor_core::now_ms() + 600_000;
        r.update(&lease, until, conductor_core::Phase::Planning)
            .await
            .unwrap();
        r.release(&lease, Duration::ZERO).await.unwrap();
    }
    // 1 TransactWriteItems to reserve, 1 to renew, 1 to release; the
    // latencies are measured by `cargo bench --bench dynamo_reserver`.
    assert_eq!((r.calls() - before) / rounds, 3);
    assert!(r.list(None).await.unwrap().is_empty());
}

/// Two installations share one table under different key prefixes: each
/// sees and prunes only its own keys, and the same key is free in both.
#[tokio::test]
async fn key_prefixes_partition_one_table() {
    let moto = MotoServer::start();
    let mk = |prefix: &'static str| {
        on(moto.endpoint(), "conductor-shared")
            .create_table_if_missing(true)
            .key_prefix(prefix)
            .build()
    };
    let prod = mk("prod/").await.unwrap();
    let test = mk("test/").await.unwrap();
    let keys = fresh_keys("prefix", 3);
    let a = prod.try_reserve(&keys, &live_owner()).await.unwrap();
    let b = test.try_reserve(&keys, &live_owner()).await.unwrap();
    assert!(matches!(
        prod.try_reserve(&keys, &live_owner()).await,
        Err(ReserveError::Conflict(_))
    ));
    let listed: Vec<Key> = prod
        .list(None)
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.key)
        .collect();
    assert_eq!(listed, {
        let mut k = keys.clone();
        k.sort();
        k
    });
    prod.release(&a, Duration::ZERO).await.unwrap();
    assert!(prod.list(None).await.unwrap().is_empty());
    assert_eq!(
        test.list(None).await.unwrap().len(),
        3,
        "the other prefix keeps its keys"
    );
    test.release(&b, Duration::ZERO).await.unwrap();
    assert!(
        mk("bad\nprefix").await.is_err(),
        "a prefix with a control character is refused"
    );
}

/// Each item carries `expires_at` (epoch seconds) and the table's TTL is
/// enabled on it; renewal moves both expiries.
#[tokio::test]
async fn items_carry_the_ttl_attribute() {
    let moto = MotoServer::start();
    let r = reserver(&moto, "conductor-ttl").await;
    let client = raw_client(&moto).await;
    let ttl = client
        .describe_time_to_live()
        .table_name("conductor-ttl")
        .send()
        .await
        .unwrap();
    let desc = ttl.time_to_live_description().unwrap();
    assert_eq!(
        desc.attribute_name(),
        Some(conductor_aws::dynamo::TTL_ATTRIBUTE)
    );
    let keys = fresh_keys("ttl", 1);
    let owner = live_owner();
    let lease = r.try_reserve(&keys, &owner).await.unwrap();
    // Items live in their environment's partition (`env/conf` for the
    // suite's `conf_…` keys), sorted by key text.
    let item = |client: aws_sdk_dynamodb::Client, sk: String| async move {
        client
            .get_item()
            .table_name("conductor-ttl")
            .key(
                "pk",
                aws_sdk_dynamodb::types::AttributeValue::S("env/conf".into()),
            )
            .key("sk", aws_sdk_dynamodb::types::AttributeValue::S(sk))
            .consistent_read(true)
            .send()
            .await
            .unwrap()
            .item()
            .cloned()
            .unwrap()
    };
    let num = |i: &std::collections::HashMap<String, aws_sdk_dynamodb::types::AttributeValue>,
               k: &str|
     -> u64 { i[k].as_n().unwrap().parse().unwrap() };
    let i = item(client.clone(), keys[0].to_string()).await;
    assert_eq!(num(&i, "expires"), owner.expires);
    assert_eq!(num(&i, "expires_at"), owner.expires.div_ceil(1000));
    assert_eq!(num(&i, "started"), owner.started.unwrap());
    let later = owner.expires + 3_600_000;
    r.update(&lease, later, conductor_core::Phase::Launching)
        .await
        .unwrap();
    let i = item(client.clone(), keys[0].to_string()).await;
    assert_eq!(num(&i, "expires"), later);
    assert_eq!(num(&i, "expires_at"), later.div_ceil(1000));
    assert_eq!(i["phase"].as_s().unwrap(), "launching");
}

/// An endpoint nothing listens on is `Unreachable`; a bad table name is
/// `Rejected` and names the table.
#[tokio::test]
async fn errors_are_classified() {
    let nowhere = conductor_testkit::net::DeadPort::new();
    let e = on(nowhere.url(), "conductor-nowhere")
        .build()
        .await
        .unwrap_err();
    assert_eq!(e.kind, BackendErrorKind::Unreachable, "{e}");
    assert!(e.to_string().contains("conductor-nowhere"), "{e}");
    let e = DynamoReserver::builder("no spaces/allowed")
        .build()
        .await
        .unwrap_err();
    assert_eq!(e.kind, BackendErrorKind::Rejected);
    assert!(e.to_string().contains("no spaces/allowed"), "{e}");
}

/// Whole runs through `Conductor` with a DynamoDB reserver: three parallel
/// runs choose distinct names, leave the table empty, and the DynamoDB calls
/// of one run are counted (a figure for the docs).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallel_runs_through_conductor() {
    use conductor_core::Options;
    use conductor_testkit::fixtures;
    use conductor_testkit::harness::Harness;

    let moto = MotoServer::start();
    let proxy = SerialProxy::start(moto.port()).await;
    let dynamo = on(proxy.endpoint(), "conductor-runs")
        .create_table_if_missing(true)
        .build()
        .await
        .unwrap();
    let h = Harness::new()
        .with_reserver(Arc::new(dynamo.clone()))
        .with_options(|o| {
            o.backoff_base = Duration::from_millis(20);
            o.backoff_max = Options::default().backoff_max;
            o.max_attempts = 30;
            o.visible_timeout = Duration::from_secs(10);
        });
    // One run alone: its DynamoDB calls.
    let before = dynamo.calls();
    let report = h
        .conductor()
        .create(&fixtures::role_request("activemq", None))
        .await
        .unwrap();
    assert!(report.success());
    let one_run = dynamo.calls() - before;
    eprintln!(
        "one role=activemq run (2 names): {one_run} DynamoDB calls \
         (cpid put, a Query to plan, reserve, the fence before the launch, release, \
         two Queries to prune (its env and the keys of none), cpid delete; \
         renewals add 2 per TTL/3)"
    );
    assert!(one_run <= 8, "{one_run} calls");
    // Three at once.
    let runs: Vec<_> = (0..3)
        .map(|_| {
            let c = h.conductor();
            tokio::spawn(async move { c.create(&fixtures::role_request("activemq", None)).await })
        })
        .collect();
    for r in runs {
        assert!(r.await.unwrap().unwrap().success());
    }
    let names: Vec<String> = h
        .cloud
        .live_instances()
        .iter()
        .filter_map(|i| i.name().map(str::to_string))
        .collect();
    let unique: std::collections::BTreeSet<&String> = names.iter().collect();
    assert_eq!(names.len(), 8);
    assert_eq!(unique.len(), names.len(), "{names:?}");
    assert!(
        dynamo.list(None).await.unwrap().is_empty(),
        "nothing left behind"
    );
}

pub(crate) async fn raw_client(moto: &MotoServer) -> aws_sdk_dynamodb::Client {
    crate::dynamo_fill::client(&moto.endpoint()).await
}

/// The failed condition returns the holder, so a conflict costs one call and
/// a takeover of a dead local owner's keys two, whatever the number of keys.
#[tokio::test]
async fn conflicts_and_takeovers_cost_one_or_two_calls() {
    let moto = MotoServer::start();
    let r = reserver(&moto, "conductor-calls").await;
    let keys = fresh_keys("calls", 20);
    r.try_reserve(&keys[5..6], &live_owner()).await.unwrap();
    let before = r.calls();
    assert!(matches!(
        r.try_reserve(&keys, &live_owner()).await,
        Err(ReserveError::Conflict(k)) if k == vec![keys[5].clone()]
    ));
    assert_eq!(r.calls() - before, 1, "a conflict: one TransactWriteItems");
    r.prune(u64::MAX, None, None).await.unwrap();
    let mut dead = live_owner();
    dead.pid = reserver::DEAD_PID;
    r.try_reserve(&keys[..10], &dead).await.unwrap();
    let before = r.calls();
    r.try_reserve(&keys, &live_owner()).await.unwrap();
    assert_eq!(
        r.calls() - before,
        2,
        "a takeover: the refused transaction, then the conditioned one"
    );
}
