//! 64 OS processes race `FsReserver` for overlapping key sets: no key is ever
//! held by two processes at once, every loser gets a conflict, nothing is
//! left behind. Once on fresh keys (the `link(2)` path), once on keys left by
//! dead owners (the takeover path under `flock`).

use std::collections::BTreeMap;
use std::process::{Command, Stdio};

#[test]
fn sixty_four_processes_race_for_overlapping_keys() {
    race(false);
}

#[test]
fn sixty_four_processes_race_to_take_over_dead_owners_keys() {
    race(true);
}

fn race(dead_owners: bool) {
    let dir = tempfile::tempdir().unwrap();
    let runner = dir.path().join("runner");
    let start = dir.path().join("go");
    let procs = 64;
    let keys: Vec<String> = (0..16)
        .map(|i| format!("test_k{i:02}.example.com"))
        .collect();
    if dead_owners {
        // Every key is held by a run of this host whose process is gone
        // while it was still planning (nothing of it can exist).
        let names = runner.join("reserved_names");
        std::fs::create_dir_all(&names).unwrap();
        let host = conductor_core::this_host();
        for k in &keys {
            let owner = format!(
                r#"{{"cpid":"16833830331552303186","host":"{host}","pid":{},"created":1,"expires":99999999999999,"phase":"planning"}}"#,
                conductor_testkit::conformance::reserver::DEAD_PID
            );
            std::fs::write(names.join(k), owner).unwrap();
        }
    }
    let children: Vec<_> = (0..procs)
        .map(|p| {
            // Each process wants three keys of 16: neighbours overlap heavily.
            let set: std::collections::BTreeSet<&String> =
                [&keys[p % 16], &keys[(p + 1) % 16], &keys[(p * 7 + 3) % 16]].into();
            Command::new(env!("CARGO_BIN_EXE_reserve-once"))
                .arg(&runner)
                .arg(&start)
                .arg("150")
                .args(set)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    // Start them together: once every process is ready and waits.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    loop {
        let ready = std::fs::read_dir(dir.path())
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with("go.ready."))
            .count();
        if ready == procs {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "only {ready} of {procs} processes got ready"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    std::fs::write(&start, "go").unwrap();
    let mut holds: BTreeMap<String, Vec<(u64, u64, usize)>> = BTreeMap::new();
    let (mut granted, mut conflicts) = (0, 0);
    for (p, c) in children.into_iter().enumerate() {
        let out = c.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "process {p}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let line = String::from_utf8(out.stdout).unwrap();
        let mut words = line.split_whitespace();
        match words.next() {
            Some("granted") => {
                granted += 1;
                let from: u64 = words.next().unwrap().parse().unwrap();
                let to: u64 = words.next().unwrap().parse().unwrap();
                for k in words {
                    holds.entry(k.to_string()).or_default().push((from, to, p));
                }
            }
            Some("conflict") => conflicts += 1,
            other => panic!("process {p} printed {other:?}"),
        }
    }
    assert_eq!(granted + conflicts, procs);
    assert!(
        granted >= 1 && conflicts >= 1,
        "a real race: {granted} granted, {conflicts} conflicts"
    );
    for (key, mut spans) in holds {
        spans.sort();
        for w in spans.windows(2) {
            assert!(
                w[0].1 <= w[1].0,
                "{key} held by processes {} and {} at once: {:?} {:?}",
                w[0].2,
                w[1].2,
                w[0],
                w[1]
            );
        }
    }
    if dead_owners {
        // Keys no winner took still hold the dead owner (losers leave nothing
        // of theirs); prune frees them.
        let layout = conductor_core::Layout::new(&runner, &runner);
        let r = conductor_core::FsReserver::new(&layout);
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(async {
            use conductor_core::Reserver;
            for left in r.list(None).await.unwrap() {
                assert_eq!(
                    left.holder.owner().map(|o| o.pid),
                    Some(conductor_testkit::conformance::reserver::DEAD_PID),
                    "{}: only the dead owner may be left",
                    left.key
                );
            }
            r.prune(conductor_core::now_ms(), None, None).await.unwrap();
        });
    }
    for d in ["reserved_names", "reserved_ids"] {
        let left: Vec<_> = std::fs::read_dir(runner.join(d))
            .map(|e| e.flatten().map(|e| e.file_name()).collect())
            .unwrap_or_default();
        assert!(left.is_empty(), "{d} not empty: {left:?}");
    }
    eprintln!(
        "64 processes (dead owners: {dead_owners}): {granted} granted, {conflicts} conflicts"
    );
}
