//! A run in another pid namespace of this host name (a container sharing the
//! host's UTS namespace, as with `--uts=host`) does not take a live run's
//! planning keys for a dead run's: `reserve-once`, started under `unshare
//! --pid --fork --mount-proc` (where this test's pid is no process, or
//! another), finds the key this test process holds and gets a conflict.
//!
//! Needs `unshare` (util-linux) and the right to create a pid namespace:
//! `CAP_SYS_ADMIN` (root on a VM, as CI runs), or else a user namespace of
//! its own (`--user --map-root-user`, where the kernel allows unprivileged
//! ones: a developer's account, root in a container without the
//! capability). Without either the test fails, it never skips.

use std::process::Command;
use std::time::Duration;

use conductor_core::{Cpid, FsReserver, Key, KeyKind, Layout, Owner, Phase, Reserver};

#[test]
fn a_run_in_another_pid_namespace_does_not_take_a_live_runs_keys() {
    let dir = tempfile::tempdir().unwrap();
    let runner = dir.path().join("runner");
    // reserve-once waits for this file before it tries: here at once.
    let start = dir.path().join("go");
    std::fs::write(&start, "go").unwrap();
    let r = FsReserver::new(&Layout::new(&runner, &runner));
    let key = Key::new(KeyKind::Name, "test_web01.example.com").unwrap();
    let owner = Owner::this_process(Cpid::generate(), Duration::from_secs(600));
    assert_eq!(owner.phase, Phase::Planning);
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    rt.block_on(r.try_reserve(std::slice::from_ref(&key), &owner))
        .unwrap();

    let mut unshare = Command::new("unshare");
    if !has_sys_admin() {
        unshare.args(["--user", "--map-root-user"]);
    }
    let out = unshare
        .args(["--pid", "--fork", "--mount-proc", "--"])
        .arg(env!("CARGO_BIN_EXE_reserve-once"))
        .arg(&runner)
        .arg(&start)
        .arg("0")
        .arg(key.as_str())
        .output()
        .expect("unshare (util-linux) runs");
    assert!(
        out.status.success(),
        "reserve-once in a new pid namespace: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        line.split_whitespace().next(),
        Some("conflict"),
        "the other namespace took a live run's planning key: {line}"
    );
    // The process really ran in another namespace: it wrote its ready file
    // under its pid there, 1 (the first process of a new namespace).
    assert!(dir.path().join("go.ready.1").exists());
    let list = rt.block_on(r.list(None)).unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].holder.owner(), Some(&owner), "still this run's");
}

/// Whether this process has `CAP_SYS_ADMIN` (bit 21 of `CapEff` in
/// `/proc/self/status`), which a new pid namespace needs without a user
/// namespace of its own.
fn has_sys_admin() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            let hex = s
                .lines()
                .find_map(|l| l.strip_prefix("CapEff:"))?
                .trim()
                .to_string();
            u64::from_str_radix(&hex, 16).ok()
        })
        .is_some_and(|caps| caps & (1 << 21) != 0)
}
