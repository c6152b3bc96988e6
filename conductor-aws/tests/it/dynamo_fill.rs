//! Fills a reservation table with items a plan must not read: live keys of
//! other environments and expired keys of the plan's own, written in
//! Conductor's item layout with `BatchWriteItem` (25 a call), through a
//! plain client on moto ([`client`]). Shared by the tests and the
//! `dynamo_reserver` bench.

use std::collections::HashMap;

use aws_sdk_dynamodb::types::{AttributeValue, PutRequest, WriteRequest};
use aws_sdk_dynamodb::Client;

/// A DynamoDB client on `endpoint` with moto's credentials, no proxy, no
/// reserver: for writing and reading items directly.
pub async fn client(endpoint: &str) -> Client {
    use conductor_testkit::moto::{ACCESS_KEY_ID, SECRET_ACCESS_KEY};
    let creds = aws_sdk_dynamodb::config::Credentials::new(
        ACCESS_KEY_ID,
        SECRET_ACCESS_KEY,
        None,
        None,
        "test",
    );
    let conf = aws_sdk_dynamodb::config::Builder::new()
        .behavior_version(aws_sdk_dynamodb::config::BehaviorVersion::latest())
        .region(aws_sdk_dynamodb::config::Region::new("us-east-1"))
        .endpoint_url(endpoint)
        .credentials_provider(creds)
        .build();
    Client::from_conf(conf)
}

/// Writes `others` live keys of other environments (`other0` to `other6`)
/// and `expired` keys of `env` whose expiry is past (as a released run's
/// keys look until DynamoDB's TTL or a prune removes them) into `table`.
pub async fn fill(client: &Client, table: &str, env: &str, others: usize, expired: usize) {
    let s = |v: String| AttributeValue::S(v);
    let num = |v: u64| AttributeValue::N(v.to_string());
    let now = conductor_core::now_ms();
    let tag = rand_tag();
    let items: Vec<WriteRequest> = (0..others + expired)
        .map(|i| {
            let (e, expires) = if i < others {
                (format!("other{}", i % 7), now + 86_400_000)
            } else {
                (env.to_string(), now - 60_000)
            };
            let i = format!("{tag}x{i}");
            let item = HashMap::from([
                ("pk".to_string(), s(format!("env/{e}"))),
                (
                    "sk".to_string(),
                    s(format!("{e}_filler{i}.us-east-1a.{e}.example.com")),
                ),
                ("kind".to_string(), s("name".into())),
                ("cpid".to_string(), s("16833830331552303186".into())),
                ("host".to_string(), s("another-master.example.com".into())),
                ("pid".to_string(), num(4242)),
                ("created".to_string(), num(now - 120_000)),
                ("expires".to_string(), num(expires)),
                ("expires_at".to_string(), num(expires.div_ceil(1000))),
                ("phase".to_string(), s("released".into())),
            ]);
            WriteRequest::builder()
                .put_request(PutRequest::builder().set_item(Some(item)).build().unwrap())
                .build()
        })
        .collect();
    for batch in items.chunks(25) {
        let mut pending = Some(batch.to_vec());
        while let Some(requests) = pending.take().filter(|r| !r.is_empty()) {
            let out = client
                .batch_write_item()
                .request_items(table, requests)
                .send()
                .await
                .unwrap_or_else(|e| panic!("BatchWriteItem into {table}: {e:?}"));
            pending = out.unprocessed_items().and_then(|u| u.get(table)).cloned();
        }
    }
}

/// A tag that keeps two fills of one table apart.
fn rand_tag() -> String {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    format!("f{}", t.as_nanos() % 1_000_000_007)
}
