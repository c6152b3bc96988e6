//! AWS API calls of one create as a function of its instance count, counted
//! by the replay endpoint per action.

use std::time::Duration;

use conductor_testkit::ec2_replay::{Ec2Replay, ReplayInstance};

use crate::util::{run, Conductor};

/// One row per count: the calls of one `create role=activemq count=N`
/// against a fresh endpoint holding `background` other instances.
pub fn section(
    rt: &tokio::runtime::Runtime,
    conductor: &Conductor,
    counts: &[usize],
    background: usize,
) -> String {
    let _guard = rt.enter();
    let mut out = String::from("| instances created | DescribeInstances | RunInstances | TerminateInstances | other | all calls |\n|---|---|---|---|---|---|\n");
    for &n in counts {
        let replay = rt.block_on(Ec2Replay::start_cloud(
            ReplayInstance::generate(background),
            1000,
            Duration::ZERO,
        ));
        let root = tempfile::tempdir().expect("tempdir");
        let count = format!("count={n}");
        let f =
            run(&mut conductor.create(&["role=activemq", &count], &replay.endpoint(), root.path()));
        let report: serde_json::Value = serde_json::from_str(&f.stdout).expect("create JSON");
        assert_eq!(
            report["instances"].as_array().map(Vec::len),
            Some(n),
            "the create planned {n} instances"
        );
        let by = replay.calls_by_action();
        let of = |a: &str| by.get(a).copied().unwrap_or(0);
        let known = ["DescribeInstances", "RunInstances", "TerminateInstances"];
        let other: usize = by
            .iter()
            .filter(|(a, _)| !known.contains(&a.as_str()))
            .map(|(_, c)| c)
            .sum();
        out.push_str(&format!(
            "| {n} | {} | {} | {} | {other} | {} |\n",
            of(known[0]),
            of(known[1]),
            of(known[2]),
            replay.calls(),
        ));
    }
    out
}
