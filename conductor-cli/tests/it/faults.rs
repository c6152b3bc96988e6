//! Fault injection through the binary on moto (issue 7): EC2 answering 30%
//! of requests with `RequestLimitExceeded` (a throttling proxy in front of
//! moto), and salt-cloud failing one VM of a map (the testkit's stand-in with
//! `CONDUCTOR_STANDIN_FAIL`).

use crate::support;

use std::collections::BTreeSet;

use conductor_testkit::moto::MotoServer;
use conductor_testkit::proxy::{Ec2Throttle, SerialProxy};
use conductor_testkit::salt_env::stand_in_bin_dir;
use support::{assert_unique, stderr, Lab};

/// The names a create run's JSON reports launched, sorted.
fn launched(report: &serde_json::Value) -> Vec<String> {
    let mut names: Vec<String> = report["result"]["launched"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n.as_str().unwrap().to_string())
        .collect();
    names.sort();
    names
}

#[test]
fn parallel_runs_complete_through_a_proxy_that_throttles_30_percent() {
    let started = std::time::Instant::now();
    let moto = MotoServer::start();
    // The proxy serves from this runtime's threads while the test blocks on processes.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let proxy = rt.block_on(SerialProxy::start_throttling(
        moto.port(),
        Ec2Throttle::default(),
    ));
    let dir = tempfile::tempdir().unwrap();
    // One region: fewer reads, as each throttled one costs the SDK's adaptive
    // retry mode up to 20 s in a fresh process.
    let lab = Lab::new(proxy.endpoint(), dir.path(), |p| {
        p.replace("regions: [us-east-1, us-west-2]", "regions: [us-east-1]")
    });
    // Checks read moto directly.
    let mut direct = lab.clone();
    direct.endpoint = Some(moto.endpoint());

    let mut all = Vec::new();
    for o in lab.create_seed_in_parallel(None) {
        assert!(o.status.success(), "{}", stderr(&o));
        let report: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        let names = launched(&report);
        let mut planned: Vec<String> = report["instances"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["name"].as_str().unwrap().to_string())
            .collect();
        planned.sort();
        assert_eq!(names, planned, "every planned instance launched");
        // Each run's instances carry its cpid tag, and only they.
        let cpid = report["cpid"].as_str().unwrap().to_string();
        assert_eq!(direct.names_of_run(&cpid), names, "cpid={cpid}");
        all.extend(names);
    }
    assert_eq!(all.len(), 12);
    assert_unique(&all, "three throttled runs");
    let live: Vec<String> = direct.instances(&[]).into_iter().map(|(n, _)| n).collect();
    assert_eq!(
        live.iter().collect::<BTreeSet<_>>(),
        all.iter().collect::<BTreeSet<_>>(),
        "nothing but the planned instances exists, each once"
    );
    assert_eq!(live.len(), 12, "{live:?}");
    assert!(
        lab.reservation_files().is_empty(),
        "{:?}",
        lab.reservation_files()
    );
    assert!(
        proxy.throttled() > 0,
        "the proxy throttled ({} forwarded)",
        proxy.requests()
    );
    eprintln!(
        "throttling proxy: {} requests forwarded, {} answered RequestLimitExceeded, {:.1?}",
        proxy.requests(),
        proxy.throttled(),
        started.elapsed()
    );
}

const BAD_VM: &str = "devops-nifigr-01.clid-1.us-east-1a.test.foobar.com";

/// `group create group=devops system=small_test` on the stand-in
/// salt-cloud with `fault=value` set, with no master (no hooks or startup
/// states); the lab and its output.
fn small_test_with(
    moto: &MotoServer,
    dir: &std::path::Path,
    fault: (&str, &str),
) -> (Lab, std::process::Output) {
    let mut lab = Lab::new(moto.endpoint(), dir, |p| {
        p.replace("      hooks: {pre_create: [orch.conductor_common], post_create: [orch.conductor_common]}\n", "")
            .replace("        startup_states: [devops.conductor]\n", "")
    });
    lab.env = vec![
        ("AWS_ENDPOINT_URL".into(), moto.endpoint()),
        (fault.0.into(), fault.1.into()),
    ];
    let etc = dir.join("etc").display().to_string();
    let bin = stand_in_bin_dir().display().to_string();
    let o = lab.run(
        &[
            "group",
            "create",
            "group=devops",
            "system=small_test",
            "pillarenv=test",
            "region=us-east-1a",
            "--provisioner",
            "salt-cloud",
            "--salt-bin-dir",
            &bin,
            "--salt-config-dir",
            &etc,
            "--release-grace",
            "0",
            "--json",
        ],
        None,
    );
    (lab, o)
}

/// salt-cloud reports an error for one VM of the system's map: exit 1, the
/// JSON names the VM and salt-cloud's message, the cloud_runs log holds
/// salt-cloud's return, the other five instances are kept and reported, and
/// no key of theirs is held.
#[test]
fn a_salt_cloud_error_for_one_vm_exits_1_and_keeps_the_others() {
    let moto = MotoServer::start();
    let dir = tempfile::tempdir().unwrap();
    let (lab, o) = small_test_with(&moto, dir.path(), ("CONDUCTOR_STANDIN_FAIL", BAD_VM));
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let report: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let failed = report["result"]["failed"].as_array().unwrap();
    assert_eq!(failed.len(), 1, "{report}");
    assert_eq!(failed[0]["name"], BAD_VM);
    assert!(
        failed[0]["error"]
            .as_str()
            .unwrap()
            .contains("CONDUCTOR_STANDIN_FAIL"),
        "salt-cloud's message is reported: {}",
        failed[0]
    );
    let names = launched(&report);
    assert_eq!(names.len(), 5, "{names:?}");
    assert!(!names.contains(&BAD_VM.to_string()));

    // The cloud_runs log holds salt-cloud's return, the error included
    // (beside it, the run's record, `run.json`).
    let cpid = report["cpid"].as_str().unwrap();
    let logs: Vec<_> = std::fs::read_dir(lab.runner_dir().join("cloud_runs").join(cpid))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().is_some_and(|n| n != "run.json"))
        .collect();
    assert_eq!(logs.len(), 1, "{logs:?}");
    let raw = std::fs::read_to_string(&logs[0]).unwrap();
    assert!(
        raw.contains(BAD_VM) && raw.contains("injected failure"),
        "{raw}"
    );
    for n in &names {
        assert!(raw.contains(n.as_str()), "{n} in {raw}");
    }

    // The successful instances are kept, found by the run's cpid.
    assert_eq!(lab.names_of_run(cpid), names);
    // Only the failed VM's keys can be left (salt-cloud cannot say whether
    // it exists); its process is gone, so prune frees them.
    let held = lab.json(&["reservations", "list", "--json"]);
    for r in held.as_array().unwrap() {
        let text = r.to_string();
        assert!(
            !names.iter().any(|n| text.contains(n.as_str())),
            "a kept instance's key is held: {text}"
        );
    }
    lab.json(&["reservations", "prune", "--json"]);
    assert!(lab.reservation_files().is_empty());
}

/// The salt-cloud process of one VM dies after launching it, with no answer
/// (as one that loses Salt's cloud index race does): the run exits 1 and
/// names that VM with salt-cloud's last words and "may exist", the other
/// five (each run by a process of its own) are launched and kept, and the
/// lost VM's name stays held until its lease ends.
#[test]
fn a_salt_cloud_process_that_dies_names_the_vm_it_lost() {
    let moto = MotoServer::start();
    let dir = tempfile::tempdir().unwrap();
    let (lab, o) = small_test_with(&moto, dir.path(), ("CONDUCTOR_STANDIN_CRASH", BAD_VM));
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let report: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let failed = report["result"]["failed"].as_array().unwrap();
    assert_eq!(failed.len(), 1, "{report}");
    assert_eq!(failed[0]["name"], BAD_VM);
    let error = failed[0]["error"].as_str().unwrap();
    assert!(
        error.contains("CONDUCTOR_STANDIN_CRASH") && error.contains("may exist"),
        "the VM is named with salt-cloud's last words: {error}"
    );
    let names = launched(&report);
    assert_eq!(names.len(), 5, "{names:?}");
    // The lost VM does exist (the process died after its launch): holding
    // its name was the safe side.
    let mut in_ec2 = names.clone();
    in_ec2.push(BAD_VM.to_string());
    in_ec2.sort();
    assert_eq!(lab.names_of_run(report["cpid"].as_str().unwrap()), in_ec2);
    let held: Vec<String> = lab
        .reservation_files()
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert!(held.contains(&format!("test_{BAD_VM}")), "{held:?}");
    assert!(
        !names.iter().any(|n| held.contains(&format!("test_{n}"))),
        "no kept instance's name is held: {held:?}"
    );
}
