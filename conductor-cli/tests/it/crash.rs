//! Crash tests: runs SIGKILLed at each lifecycle step (an observer, see
//! `support::crash_child`) against moto. A run killed while planning leaves
//! nothing `reservations prune` does not free; one killed once it may have
//! launched keeps its names and ids held (until they expire, or an operator
//! prunes them by age), so no later run reuses them. No name is ever used
//! twice, and every instance the killed runs launched is found by its cpid.

use crate::support;

use std::collections::BTreeSet;
use std::os::unix::process::ExitStatusExt;
use std::time::Instant;

use conductor_core::Step;
use conductor_testkit::moto::MotoServer;
use support::{assert_unique, stderr, Lab, SEED};

/// Whether a run killed at `step` has launched its instances.
fn launched_at(step: Step) -> bool {
    matches!(step, Step::Launched | Step::Visible | Step::Released)
}

/// Whether a run killed at `step` may have launched (its keys are launching).
fn may_have_launched(step: Step) -> bool {
    matches!(step, Step::Launching | Step::Launched | Step::Visible)
}

/// `reservations prune` frees what the killed runs held while planning and
/// keeps what they held once they may have launched; `prune --older-than 0s`
/// then frees those too (their owners are gone). Leaves no key behind.
fn prune_all(lab: &Lab, step: Step) {
    lab.json(&["reservations", "prune", "--json"]);
    let left = lab.json(&["reservations", "list", "--json"]);
    let left = left.as_array().unwrap();
    if may_have_launched(step) {
        assert!(
            !left.is_empty() && left.iter().all(|r| r["owner"]["phase"] == "launching"),
            "{step}: the killed runs' names and ids stay held: {left:?}"
        );
    } else {
        assert!(left.is_empty(), "{step}: keys left after prune: {left:?}");
    }
    lab.json(&["reservations", "prune", "--older-than", "0s", "--json"]);
    assert!(
        lab.reservation_files().is_empty(),
        "{step}: {:?}",
        lab.reservation_files()
    );
}

/// The cpids of live instances now.
fn cpids(lab: &Lab) -> BTreeSet<String> {
    lab.by_cpid().into_keys().collect()
}

/// Whatever the runs killed at `point` launched is there, found by its cpid
/// tag: returns the instance count of each new run, sorted.
fn new_runs(lab: &Lab, before: &BTreeSet<String>, point: Step) -> Vec<usize> {
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
fn new_run_succeeds(lab: &Lab, words: &[&str], point: Step) {
    let o = lab.create(words, None);
    assert!(o.status.success(), "{point}: {}", stderr(&o));
    let names: Vec<String> = lab.instances(&[]).into_iter().map(|(n, _)| n).collect();
    assert_unique(&names, point.as_str());
}

#[test]
fn sigkill_at_every_lifecycle_point() {
    let moto = MotoServer::start();
    let dir = tempfile::tempdir().unwrap();
    let lab = Lab::new(moto.endpoint(), dir.path(), |p| p);
    let mut launched_by_killed = 0;
    for point in Step::ALL {
        let before = cpids(&lab);
        let o = lab.create(&["role=activemq"], Some(point));
        assert_eq!(
            o.status.signal(),
            Some(9),
            "{point}: the run was killed ({:?})",
            o.status
        );
        let counts = new_runs(&lab, &before, point);
        let expected: Vec<usize> = if launched_at(point) { vec![2] } else { vec![] };
        assert_eq!(counts, expected, "{point}: instances of the killed run");
        // A new run while the killed run's keys are held never reuses them.
        if may_have_launched(point) {
            new_run_succeeds(&lab, &["role=activemq"], point);
        }
        prune_all(&lab, point);
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
    for point in Step::ALL {
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
        let counts = new_runs(&lab, &before, point);
        prune_all(&lab, point);
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
        "crash matrix: {} steps x 3 parallel runs in {:.1?}",
        Step::ALL.len(),
        started.elapsed()
    );
}
