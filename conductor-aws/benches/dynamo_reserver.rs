//! `DynamoReserver` on a local `moto_server`: p50/p99 of reserving and
//! releasing 20 fresh keys, listing, and pairs per second from one and from
//! 8 concurrent clients — the same measurement `conductor-bench` makes of
//! `FsReserver`. moto is not safe under concurrent transactions (it
//! restores table snapshots, and answers some with HTTP 500), so requests
//! go through the testkit's `SerialProxy`, one at a time, as in the tests.
//!
//! Then what a plan's reservation read costs on a table holding nothing
//! else and one holding 100,000 other items (other environments' live keys
//! and the plan's environment's expired ones): DynamoDB calls, items read
//! (`ScannedCount`) and latency, beside a whole-table `Scan` (what every
//! plan read before reservations were partitioned by environment).
//!
//! Prints one row of docs/performance.md's reservations table and the
//! `reserve-read` table; `scripts/bench` passes them to `conductor-bench
//! --dynamo-row`.
//!
//! `cargo bench -p conductor-aws --bench dynamo_reserver [-- ROUNDS [ITEMS]]`
//! (needs python3 with `moto[server]`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use conductor_aws::dynamo::DynamoReserver;
use conductor_core::{now_ms, Cpid, Env, Key, Owner, Reserver};
use conductor_testkit::moto::{MotoServer, ACCESS_KEY_ID, SECRET_ACCESS_KEY};
use conductor_testkit::proxy::SerialProxy;
use conductor_testkit::reserve_figures::{measure, ms, percentile, thousands, HEADER};

#[path = "../tests/it/dynamo_fill.rs"]
mod dynamo_fill;

/// Header of the `reserve-read` table.
const READ_HEADER: &str = "| the table holds besides | read | calls | items read | latency on moto (p50 of 5; the `Scan` once) |\n|---|---|---|---|---|\n";

/// Timed repetitions of the plan's read (the `Scan` is timed once: on
/// 100,000 items moto takes minutes for it).
const READS: usize = 5;

fn main() {
    // `cargo bench` passes `--bench`; numbers are the rounds, then the items.
    let mut numbers = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse::<usize>().ok());
    let rounds = numbers.next().unwrap_or(100);
    let items = numbers.next().unwrap_or(100_000);
    let moto = MotoServer::start();
    let rt = tokio::runtime::Runtime::new().expect("a tokio runtime");
    let (figures, reads) = rt.block_on(async {
        let proxy = SerialProxy::start(moto.port()).await;
        let r = DynamoReserver::builder("conductor-bench")
            .endpoint_url(proxy.endpoint())
            .region("us-east-1")
            .static_credentials(ACCESS_KEY_ID, SECRET_ACCESS_KEY)
            .create_table_if_missing(true)
            .build()
            .await
            .expect("a DynamoReserver on moto");
        let figures = measure(Arc::new(r.clone()), rounds, 8).await;
        (figures, plan_reads(&r, &moto, items).await)
    });
    print!(
        "{HEADER}{}",
        figures.row("`DynamoReserver` on moto (one `moto_server` process on this machine, requests serialized)")
    );
    print!("\n<!-- reserve-read -->\n{READ_HEADER}{reads}");
}

/// The `reserve-read` rows: the plan's read and a whole-table `Scan`, on
/// the table with one live key of the plan's environment, then with
/// `items` more (half other environments' live keys, half its expired ones).
async fn plan_reads(r: &DynamoReserver, moto: &MotoServer, items: usize) -> String {
    let env = Env::new("test").expect("an env");
    let owner = Owner::this_process(Cpid::generate(), Duration::from_secs(3600));
    let key = Key::name(&env, "devops-mq01.us-east-1a.test.foobar.com").expect("a key");
    r.try_reserve(&[key], &owner).await.expect("a live key");
    let mut rows = String::new();
    let mut plan_cost = Vec::new();
    for filled in [false, true] {
        let holds = if filled {
            let client = dynamo_fill::client(&moto.endpoint()).await;
            let t = Instant::now();
            dynamo_fill::fill(
                &client,
                "conductor-bench",
                "test",
                items / 2,
                items - items / 2,
            )
            .await;
            eprintln!(
                "bench: {items} items written in {:.1} s",
                t.elapsed().as_secs_f64()
            );
            format!(
                "{} items: {} other environments' live keys, {} expired keys of the plan's",
                thousands(items),
                thousands(items / 2),
                thousands(items - items / 2)
            )
        } else {
            "nothing (one live key of the plan's environment)".to_string()
        };
        let (plan, cost) = time(r, READS, || async {
            r.held(now_ms(), Some(&env), None).await.map(|k| k.len())
        })
        .await;
        plan_cost.push(cost);
        let (scan, _) = time(r, 1, || async { r.list(None).await.map(|k| k.len()) }).await;
        rows.push_str(&format!(
            "| {holds} | a plan's: `Query` of its environment's live keys (index `live`) | {} |\n| {holds} | whole table: `Scan` (every plan before partitions; now `reservations list`) | {} |\n",
            plan, scan
        ));
    }
    // The check the figure stands for: at any table size a plan's read
    // costs what it costs on a table holding only its one live key.
    assert_eq!(
        plan_cost[0], plan_cost[1],
        "a plan's reservation read (calls, items read) with {items} other items differs from an empty table's"
    );
    rows
}

/// Runs `read` `times` times; the calls and items of one, and the p50, as
/// table cells; and the calls and items alone.
async fn time<F, Fut>(r: &DynamoReserver, times: usize, read: F) -> (String, (usize, usize))
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<usize, conductor_core::BackendError>>,
{
    let mut took = Vec::new();
    let (mut calls, mut items) = (0, 0);
    for _ in 0..times {
        let (c, i) = (r.calls(), r.items_read());
        let t = Instant::now();
        read().await.expect("a read");
        took.push(t.elapsed());
        (calls, items) = (r.calls() - c, r.items_read() - i);
    }
    let cells = format!(
        "{calls} | {} | {}",
        thousands(items),
        ms(percentile(&took, 50.0))
    );
    (cells, (calls, items))
}
