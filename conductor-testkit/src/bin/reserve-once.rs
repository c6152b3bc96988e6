//! Test helper for the multi-process stress test of `FsReserver`: writes
//! `<start-file>.ready.<pid>` once it is ready, waits for the start file, tries to reserve the given keys once, holds a grant for a
//! while, releases it, and prints one line:
//! `granted <grant-done-ms> <release-start-ms> <keys...>` or `conflict <keys...>`.
//!
//! Usage: `reserve-once <runner-dir> <start-file> <hold-ms> <key>...`

use std::time::Duration;

use conductor_core::{now_ms, Key, KeyKind, Owner, Reserver};
use conductor_core::{Cpid, FsReserver, Layout, ReserveError};

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [runner, start, hold, keys @ ..] = args.as_slice() else {
        eprintln!("usage: reserve-once <runner-dir> <start-file> <hold-ms> <key>...");
        std::process::exit(2);
    };
    let hold: u64 = hold.parse().expect("hold-ms is a number");
    let keys: Vec<Key> = keys
        .iter()
        .map(|k| Key::new(KeyKind::Name, k.clone()).expect("valid key"))
        .collect();
    let r = FsReserver::new(&Layout::new(runner, runner));
    std::fs::write(format!("{start}.ready.{}", std::process::id()), "").expect("ready file");
    while !std::path::Path::new(start).exists() {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let owner = Owner::this_process(Cpid::generate(), Duration::from_secs(600));
    let text: Vec<&str> = keys.iter().map(Key::as_str).collect();
    match r.try_reserve(&keys, &owner).await {
        Ok(lease) => {
            let granted = now_ms();
            tokio::time::sleep(Duration::from_millis(hold)).await;
            let releasing = now_ms();
            r.release(&lease, Duration::ZERO).await.expect("release");
            println!("granted {granted} {releasing} {}", text.join(" "));
        }
        Err(ReserveError::Conflict(_)) => println!("conflict {}", text.join(" ")),
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(1);
        }
    }
}
