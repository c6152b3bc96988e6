//! Reservations partitioned by environment on a real `moto_server`: a
//! plan's reservation read costs the same calls and items beside thousands
//! of other environments' and expired items as on an empty table; a prune
//! of a run's environment does not read the others; a table of the layout
//! before partitions is refused with the way to migrate.

use std::sync::Arc;

use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, KeySchemaElement, KeyType, ScalarAttributeType,
};
use conductor_aws::dynamo::DynamoReserver;
use conductor_core::{BackendErrorKind, Cpid, Env, Key, Owner, Reserver};
use conductor_testkit::fixtures;
use conductor_testkit::harness::Harness;
use conductor_testkit::moto::MotoServer;

use crate::dynamo::{on, raw_client};
use crate::dynamo_fill::fill;

/// Items the table holds beside the plan's: `scripts/bench` measures
/// 100,000 (docs/performance.md); moto takes seconds per thousand items.
const OTHERS: usize = 5_000;

/// What one plan's reservation reads cost: (calls, items read).
async fn plan_read(h: &Harness, dynamo: &DynamoReserver) -> ((usize, usize), Vec<String>) {
    let (calls, items) = (dynamo.calls(), dynamo.items_read());
    let plan = h
        .conductor()
        .plan(&fixtures::role_request("activemq", None))
        .await
        .unwrap();
    let names = plan.instances.iter().map(|i| i.name.clone()).collect();
    ((dynamo.calls() - calls, dynamo.items_read() - items), names)
}

#[tokio::test]
async fn a_plans_reservation_read_costs_the_same_beside_other_envs_and_expired_items() {
    let moto = MotoServer::start();
    let dynamo = on(moto.endpoint(), "conductor-partitions")
        .create_table_if_missing(true)
        .build()
        .await
        .unwrap();
    let h = Harness::new().with_reserver(Arc::new(dynamo.clone()));

    // Another run holds the first name the plan wants: the read is real.
    let (_, first) = plan_read(&h, &dynamo).await;
    let env = Env::new("test").unwrap();
    let other = Owner::this_process(Cpid::generate(), std::time::Duration::from_secs(3600));
    dynamo
        .try_reserve(&[Key::name(&env, &first[0]).unwrap()], &other)
        .await
        .unwrap();
    let (empty, names) = plan_read(&h, &dynamo).await;
    assert!(
        !names.contains(&first[0]),
        "{names:?} skip the held {}",
        first[0]
    );
    assert_eq!(empty, (1, 1), "one Query reading the one live key");

    // Other environments' keys, and three expired keys of this one: a run's
    // closing prune reads its environment (the expired keys, which it
    // removes, and the live one) and the keys of none, not the others.
    let client = raw_client(&moto).await;
    fill(&client, "conductor-partitions", "test", OTHERS, 3).await;
    let (calls, items) = (dynamo.calls(), dynamo.items_read());
    let pruned = dynamo
        .prune(conductor_core::now_ms(), Some(&env), None)
        .await
        .unwrap();
    assert_eq!(pruned.len(), 3, "the env's expired keys: {pruned:?}");
    assert!(pruned.iter().all(|k| k.in_env(&env)));
    assert_eq!(
        dynamo.items_read() - items,
        3 + 1,
        "the env's items, not the others'"
    );
    assert_eq!(
        dynamo.calls() - calls,
        3,
        "two Queries, one transaction of deletes"
    );
    assert_eq!(dynamo.list(None).await.unwrap().len(), OTHERS + 1);

    // Expired keys of this environment by the thousand: the plan does not
    // read them either. (Not pruned here: moto copies the whole table for
    // each transaction, which takes seconds per 100 deletes at this size.)
    fill(&client, "conductor-partitions", "test", 0, OTHERS / 2).await;
    let (full, again) = plan_read(&h, &dynamo).await;
    assert_eq!(
        full,
        empty,
        "(calls, items read) of a plan beside {OTHERS} other envs' and {} expired items",
        OTHERS / 2
    );
    assert_eq!(again, names);
}

/// A table with the keys of Conductor 0.1 (hash key `pk` only) is refused
/// at start, naming the table, what it found and the migration.
#[tokio::test]
async fn a_table_of_the_old_layout_is_refused_with_the_migration() {
    let moto = MotoServer::start();
    raw_client(&moto)
        .await
        .create_table()
        .table_name("conductor-v1")
        .billing_mode(BillingMode::PayPerRequest)
        .attribute_definitions(
            AttributeDefinition::builder()
                .attribute_name("pk")
                .attribute_type(ScalarAttributeType::S)
                .build()
                .unwrap(),
        )
        .key_schema(
            KeySchemaElement::builder()
                .attribute_name("pk")
                .key_type(KeyType::Hash)
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
    for create in [false, true] {
        let e = on(moto.endpoint(), "conductor-v1")
            .create_table_if_missing(create)
            .build()
            .await
            .unwrap_err();
        assert_eq!(e.kind, BackendErrorKind::Rejected, "{e}");
        let text = e.to_string();
        for part in [
            "\"conductor-v1\"",
            "the first layout",
            "pk (HASH)",
            "--dynamodb-table",
            "Migrating the DynamoDB table",
        ] {
            assert!(text.contains(part), "{part:?} in: {text}");
        }
    }
}
