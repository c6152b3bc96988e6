//! Crash tests: runs SIGKILLed at each lifecycle point (env
//! `CONDUCTOR_FAULT_POINT`) against moto leave no key that blocks later runs
//! once pruned, no name is ever used twice, and every instance they launched
//! is found by its cpid tag.

use crate::support;

use std::collections::BTreeSet;
use std::os::unix::process::ExitStatusExt;
use std::time::Instant;

use conductor_testkit::moto::MotoServer;
use support::{assert_unique, stderr, Lab, SEED};

const POINTS: [&str; 6] = [
    "after_cpid",
    "after_reserve",
    "after_files",
    "after_launch",
    "after_visible",
    "after_release",
];

/// Whether a run killed at `point` has launched its instances.
fn launched_at(point: &str) -> bool {
    matches!(point, "after_launch" | "after_visible" | "after_release")
}

/// Prunes the killed runs' keys and checks none is left.
fn prune_all(lab: &Lab, point: &str) {
    lab.json(&["reservations", "prune", "--json"]);
    let left = lab.json(&["reservations", "list", "--json"]);
    assert!(
        left.as_array().unwrap().is_empty(),
        "{point}: keys left after prune: {left}"
    );
    assert!(
        lab.reservation_files().is_empty(),
        "{point}: {:?}",
        lab.reservation_files()
    );
}

/// The cpids of live instances now.
fn cpids(lab: &Lab) -> BTreeSet<String> {
    lab.by_cpid().into_keys().collect()
}

/// Whatever the runs killed at `point` launched is there, found by its cpid
/// tag: returns the instance count of each new run, sorted.
fn new_runs(lab: &Lab, before: &BTreeSet<String>, point: &str) -> Vec<usize> {
    let mut counts = Vec::new();
    for (cpid, mut names) in lab.by_cpid() {
        if before.contains(&cpid) {
            continue;
        }
        names.sort();
        assert_eq!(
            lab.names_of_run(&cpid),
            names,
            "{point}: status cpid={cpid} finds the run's instances"
        );
        counts.push(names.len());
    }
    counts.sort();
    counts
}

/// A new run succeeds at once and no name is used twice.
fn new_run_succeeds(lab: &Lab, words: &[&str], point: &str) {
    let o = lab.create(words, None);
    assert!(o.status.success(), "{point}: {}", stderr(&o));
    let names: Vec<String> = lab.instances(&[]).into_iter().map(|(n, _)| n).collect();
    assert_unique(&names, point);
}

#[test]
fn sigkill_at_every_lifecycle_point() {
    let moto = MotoServer::start();
    let dir = tempfile::tempdir().unwrap();
    let lab = Lab::new(moto.endpoint(), dir.path(), |p| p);
    let mut launched_by_killed = 0;
    for point in POINTS {
        let before = cpids(&lab);
        let o = lab.create(&["role=activemq"], Some(point));
        assert_eq!(
            o.status.signal(),
            Some(9),
            "{point}: the run was killed ({:?})",
            o.status
        );
        // Keys the killed run held are reported and pruned (its pid is gone).
        prune_all(&lab, point);
        let counts = new_runs(&lab, &before, point);
        let expected: Vec<usize> = if launched_at(point) { vec![2] } else { vec![] };
        assert_eq!(counts, expected, "{point}: instances of the killed run");
        launched_by_killed += counts.iter().sum::<usize>();
        new_run_succeeds(&lab, &["role=activemq"], point);
    }
    assert_eq!(launched_by_killed, 6);
}

/// The seed's three runs at once, all killed at the same point, for every
/// point; one moto and one runner directory throughout.
#[test]
fn three_parallel_runs_sigkilled_at_every_lifecycle_point() {
    let started = Instant::now();
    let moto = MotoServer::start();
    let dir = tempfile::tempdir().unwrap();
    let lab = Lab::new(moto.endpoint(), dir.path(), |p| p);
    let mut launched_by_killed = 0;
    for point in POINTS {
        let before = cpids(&lab);
        for (o, words) in lab.create_seed_in_parallel(Some(point)).iter().zip(SEED) {
            assert_eq!(
                o.status.signal(),
                Some(9),
                "{point} {words:?}: killed ({:?}): {}",
                o.status,
                stderr(o)
            );
        }
        prune_all(&lab, point);
        let counts = new_runs(&lab, &before, point);
        // role=activemq count=2, role=nifi (one cluster of 4), small_test (6).
        let expected: Vec<usize> = if launched_at(point) {
            vec![2, 4, 6]
        } else {
            vec![]
        };
        assert_eq!(counts, expected, "{point}: instances of the killed runs");
        launched_by_killed += counts.iter().sum::<usize>();
        new_run_succeeds(&lab, &["system=small_test"], point);
    }
    assert_eq!(launched_by_killed, 36);
    eprintln!(
        "crash matrix: 6 points x 3 parallel runs in {:.1?}",
        started.elapsed()
    );
}
