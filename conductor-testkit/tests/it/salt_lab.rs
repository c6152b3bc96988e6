//! The Salt lab: a real master on loopback accepts a minion by its autosign
//! grain and leaves one with a wrong grain pending; every process it started
//! is gone after drop, also when the test panics.

use std::path::Path;
use std::time::{Duration, Instant};

use conductor_testkit::logs;
use conductor_testkit::salt_lab::{processes_under, SaltLab};
use serde_json::{json, Map, Value};

fn minion(id: &str, token: &str) -> Map<String, Value> {
    json!({
        "id": id,
        "autosign_grains": ["conductor_autosign"],
        "grains": {"conductor_autosign": token, "cpid": "42"},
    })
    .as_object()
    .unwrap()
    .clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_minion_with_the_listed_grain_is_accepted_and_all_processes_stop_on_drop() {
    let lab = SaltLab::start(&SaltLab::fixture_file_roots()).await;
    std::fs::write(
        lab.autosign_grains_dir().join("conductor_autosign"),
        "right-token\n",
    )
    .unwrap();
    let good_log = lab.start_minion(&minion("good.example", "right-token"));
    let bad_log = lab.start_minion(&minion("bad.example", "wrong-token"));
    let master_log = lab.master_log();
    // The master's log and the minion's, for a failure message.
    let logs_of =
        |minion_log: &Path| logs::tails([master_log.as_path(), minion_log], logs::TAIL_BYTES);
    let deadline = Instant::now() + Duration::from_secs(60);
    while !lab.accepted().await.contains(&"good.example".to_string()) {
        assert!(
            Instant::now() < deadline,
            "good.example not accepted\n{}",
            logs_of(&good_log)
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    while !lab.pending().await.contains(&"bad.example".to_string()) {
        assert!(
            Instant::now() < deadline,
            "bad.example never asked\n{}",
            logs_of(&bad_log)
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(!lab.accepted().await.contains(&"bad.example".to_string()));
    let root = lab.root().to_path_buf();
    assert!(
        processes_under(&root).len() >= 3,
        "master and two minions run"
    );
    drop(lab);
    assert_eq!(processes_under(&root), Vec::<u32>::new(), "all stopped");
    assert!(!root.exists(), "root removed");
}

#[test]
fn the_lab_stops_when_the_test_panics() {
    let (tx, rx) = std::sync::mpsc::channel();
    let r = std::thread::spawn(move || {
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(async {
            let lab = SaltLab::start(&SaltLab::fixture_file_roots()).await;
            lab.start_minion(&minion("m.example", "t"));
            tx.send(lab.root().to_path_buf()).unwrap();
            panic!("a failing test");
        })
    })
    .join();
    assert!(r.is_err());
    let root = rx.recv().unwrap();
    assert_eq!(processes_under(&root), Vec::<u32>::new());
}
