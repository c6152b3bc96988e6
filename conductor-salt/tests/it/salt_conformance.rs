//! `SaltCli` passes the `SaltExecutor` conformance suite against a real Salt
//! master and one real minion (a `SaltLab` on loopback), the suite `FakeSalt`
//! passes too (conductor-testkit's `fake_salt` tests).

use std::path::Path;
use std::time::{Duration, Instant};

use conductor_salt::SaltCli;
use conductor_testkit::conformance::salt::{run_all, SaltFixture};
use conductor_testkit::logs;
use conductor_testkit::salt_lab::SaltLab;
use serde_json::{json, Value};

const MINION: &str = "conformance-m1.example.com";
const GRAIN: &str = "conductor_autosign";

/// Waits until `ready` holds, polling; panics after `limit` with `what` and
/// the logs' ends.
async fn wait_for<F, Fut>(what: &str, limit: Duration, logs: &[&Path], mut ready: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    while !ready().await {
        assert!(
            Instant::now() < deadline,
            "{what} within {limit:?}\n{}",
            logs::tails(logs.iter().copied(), logs::TAIL_BYTES)
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn salt_cli_conforms_against_a_real_master_and_minion() {
    let started = Instant::now();
    let lab = SaltLab::start(&SaltLab::fixture_file_roots()).await;
    let autosign = lab.autosign_grains_dir().join(GRAIN);
    std::fs::write(&autosign, "conformance-token\n").unwrap();
    let config = json!({
        "id": MINION,
        "autosign_grains": [GRAIN],
        "grains": {GRAIN: "conformance-token", "cloud.system.id": 7},
    });
    let minion_log = lab.start_minion(config.as_object().unwrap());
    let master_log = lab.master_log();
    let logs = [master_log.as_path(), minion_log.as_path()];
    wait_for(
        "the minion's key accepted",
        Duration::from_secs(90),
        &logs,
        || async { lab.accepted().await.iter().any(|m| m == MINION) },
    )
    .await;
    // As Conductor does after bootstrap: a deleted key is not accepted again.
    std::fs::write(&autosign, "").unwrap();
    wait_for(
        "the minion answers test.ping",
        Duration::from_secs(90),
        &logs,
        || async { lab.salt(&[MINION, "test.ping"]).await[MINION] == Value::Bool(true) },
    )
    .await;
    let ready = started.elapsed();

    let cli = SaltCli::new()
        .bin_dir(lab.bin_dir())
        .config_dir(lab.config_dir())
        .timeout(Duration::from_secs(180));
    let f = SaltFixture::lab_states(MINION, vec![master_log.clone(), minion_log.clone()]);
    run_all(&cli, &f).await;
    eprintln!(
        "salt_conformance: lab ready in {ready:.1?}, suite done in {:.1?}",
        started.elapsed() - ready
    );
}
