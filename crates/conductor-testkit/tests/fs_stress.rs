//! 64 OS processes race `FsReserver` for overlapping key sets: no key is ever
//! held by two processes at once, every loser gets a conflict, nothing is
//! left behind.

use std::collections::BTreeMap;
use std::process::{Command, Stdio};

#[test]
fn sixty_four_processes_race_for_overlapping_keys() {
    let dir = tempfile::tempdir().unwrap();
    let runner = dir.path().join("runner");
    let start = dir.path().join("go");
    let procs = 64;
    let keys: Vec<String> = (0..16)
        .map(|i| format!("test_k{i:02}.example.com"))
        .collect();
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
    std::thread::sleep(std::time::Duration::from_millis(300));
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
    for d in ["reserved_names", "reserved_ids"] {
        let left: Vec<_> = std::fs::read_dir(runner.join(d))
            .map(|e| e.flatten().map(|e| e.file_name()).collect())
            .unwrap_or_default();
        assert!(left.is_empty(), "{d} not empty: {left:?}");
    }
    eprintln!("64 processes: {granted} granted, {conflicts} conflicts");
}
