//! `DynamoReserver` on a local `moto_server`: p50/p99 of reserving and
//! releasing 20 fresh keys, listing, and pairs per second from one and from
//! 8 concurrent clients — the same measurement `conductor-bench` makes of
//! `FsReserver`. moto is not safe under concurrent transactions (it
//! restores table snapshots, and answers some with HTTP 500), so requests
//! go through the testkit's `SerialProxy`, one at a time, as in the tests.
//! Prints one row of docs/performance.md's reservations table;
//! `scripts/bench` passes it to `conductor-bench --dynamo-row`.
//!
//! `cargo bench -p conductor-aws --bench dynamo_reserver [-- ROUNDS]`
//! (needs python3 with `moto[server]`).

use std::sync::Arc;

use conductor_aws::dynamo::DynamoReserver;
use conductor_testkit::moto::{MotoServer, ACCESS_KEY_ID, SECRET_ACCESS_KEY};
use conductor_testkit::proxy::SerialProxy;
use conductor_testkit::reserve_figures::{measure, HEADER};

fn main() {
    // `cargo bench` passes `--bench`; a number is the rounds to run.
    let rounds = std::env::args()
        .skip(1)
        .find_map(|a| a.parse::<usize>().ok())
        .unwrap_or(100);
    let moto = MotoServer::start();
    let rt = tokio::runtime::Runtime::new().expect("a tokio runtime");
    let figures = rt.block_on(async {
        let proxy = SerialProxy::start(moto.port()).await;
        let r = DynamoReserver::builder("conductor-bench")
            .endpoint_url(proxy.endpoint())
            .region("us-east-1")
            .static_credentials(ACCESS_KEY_ID, SECRET_ACCESS_KEY)
            .create_table_if_missing(true)
            .build()
            .await
            .expect("a DynamoReserver on moto");
        measure(Arc::new(r), rounds, 8).await
    });
    print!(
        "{HEADER}{}",
        figures.row("`DynamoReserver` on moto (one `moto_server` process on this machine, requests serialized)")
    );
}
