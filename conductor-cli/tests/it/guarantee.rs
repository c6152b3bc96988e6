//! The no-duplicate guarantee through the binary, with real processes and
//! real files: the release grace outlives the run's process; a foreign
//! reservation file (the Python runner's) is honoured; SIGINT and SIGTERM
//! stop a create cleanly (its salt-cloud killed, exit 130/143, its names
//! held); a Salt failure after the launch still prints the full report.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use conductor_testkit::moto::MotoServer;
use serde_json::Value;

use crate::support::{names, stderr, Lab};

const ACTIVEMQ: &[&str] = &[
    "group=devops",
    "role=activemq",
    "pillarenv=test",
    "region=us-east-1a",
];

fn words<'a>(cmd: &[&'a str], extra: &[&'a str]) -> Vec<&'a str> {
    let mut v = cmd.to_vec();
    v.extend(ACTIVEMQ);
    v.extend(extra);
    v
}

fn no_hooks_no_states(p: String) -> String {
    p.replace(
        "      hooks: {pre_create: [orch.conductor_common], post_create: [orch.conductor_common]}\n",
        "",
    )
    .replace("        startup_states: [devops.conductor]\n", "")
}

#[test]
fn names_stay_held_for_the_grace_after_the_run_exited() {
    let dir = tempfile::tempdir().unwrap();
    let lab = Lab::fake(dir.path(), |p| p);
    let created = lab.json(&words(
        &["group", "create"],
        &["--provisioner", "ec2", "--no-salt", "--json"],
    ));
    let built = names(&created);
    assert_eq!(built.len(), 2);
    // The run has exited; its released names are held for the grace (120 s
    // by default) although nothing in this process's cloud shows them.
    let plan = lab.json(&words(&["group", "plan"], &["--json"]));
    let planned = names(&plan);
    assert!(
        planned.iter().all(|n| !built.contains(n)),
        "a plan right after the run reuses its names: {planned:?} vs {built:?}"
    );
    let listed = lab.json(&["reservations", "list", "--json"]);
    let released: Vec<&Value> = listed
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["kind"] == "name")
        .collect();
    assert_eq!(released.len(), 2, "{listed}");
    assert!(
        released.iter().all(|r| r["owner"]["phase"] == "released"),
        "{listed}"
    );
}

#[test]
fn a_foreign_reservation_file_is_held_listed_and_pruned_only_by_age() {
    let dir = tempfile::tempdir().unwrap();
    let lab = Lab::fake(dir.path(), |p| p);
    // What the Python conduct.group runner leaves: same key name, its own content.
    let names_dir = lab.runner_dir().join("reserved_names");
    std::fs::create_dir_all(&names_dir).unwrap();
    let foreign = names_dir.join("test_devops-mq01.us-east-1a.test.foobar.com");
    std::fs::write(&foreign, "1\n").unwrap();
    let plan = lab.json(&words(&["group", "plan"], &["--json"]));
    assert_eq!(
        names(&plan),
        [
            "devops-mq02.us-east-1a.test.foobar.com",
            "devops-mq03.us-east-1a.test.foobar.com"
        ],
        "the foreign file holds mq01"
    );
    let listed = lab.json(&["reservations", "list", "--json"]);
    let entry = &listed.as_array().unwrap()[0];
    assert!(
        entry["foreign"]["modified"].as_u64().unwrap() > 0,
        "{listed}"
    );
    let text = lab.run(&["reservations", "list"], None);
    assert!(
        String::from_utf8_lossy(&text.stdout).contains("foreign"),
        "{}",
        stderr(&text)
    );
    lab.json(&["reservations", "prune", "--json"]);
    assert!(
        foreign.exists(),
        "prune without an age keeps a foreign file"
    );
    lab.json(&["reservations", "prune", "--older-than", "0s", "--json"]);
    assert!(!foreign.exists(), "prune --older-than removes it");
}

/// A lab on moto whose Salt is the stand-in salt-cloud only, hanging
/// `sleep` seconds after it launched the map's instances.
fn hanging_salt_cloud_lab(moto: &MotoServer, dir: &Path, sleep: u32) -> Lab {
    let mut lab = Lab::new(moto.endpoint(), dir, no_hooks_no_states);
    let bin = conductor_testkit::salt_env::stand_in_bin_dir();
    lab.env.extend([
        ("AWS_ENDPOINT_URL".to_string(), moto.endpoint()),
        ("CONDUCTOR_STANDIN_SLEEP".to_string(), sleep.to_string()),
        (
            "CONDUCTOR_SALT_BIN_DIR".to_string(),
            bin.display().to_string(),
        ),
    ]);
    lab
}

/// Live salt-cloud processes working under `root` (their map is there).
fn salt_clouds_under(root: &Path) -> Vec<u32> {
    conductor_testkit::salt_lab::processes_under(root)
        .into_iter()
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| String::from_utf8_lossy(&c).contains("salt-cloud"))
        })
        .collect()
}

fn interrupt_create(signal: i32, expected: i32) {
    let moto = MotoServer::start();
    let dir = tempfile::tempdir().unwrap();
    let lab = hanging_salt_cloud_lab(&moto, dir.path(), 120);
    // salt-cloud reads the provider and profile Conductor writes (--config-dir).
    let etc = dir.path().join("etc");
    let args = words(
        &["group", "create"],
        &[
            "--provisioner",
            "salt-cloud",
            "--release-grace",
            "0s",
            "--json",
            "--salt-config-dir",
            etc.to_str().unwrap(),
        ],
    );
    let mut child = lab
        .command(&args, None)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until the stand-in has launched both instances and hangs.
    let deadline = Instant::now() + Duration::from_secs(60);
    while lab.instances(&[]).len() < 2 {
        if Instant::now() > deadline || child.try_wait().unwrap().is_some() {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "salt-cloud did not launch ({:?}); stdout: {}\nstderr: {}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                stderr(&out)
            );
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    assert!(!salt_clouds_under(dir.path()).is_empty(), "salt-cloud runs");
    // SAFETY: signals the child this test spawned.
    unsafe {
        libc::kill(child.id() as i32, signal);
    }
    // The stand-in hangs: the run ends only by killing it (a run that
    // waited for it would hang here until nextest's timeout).
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(expected), "{}", stderr(&out));
    assert!(
        salt_clouds_under(dir.path()).is_empty(),
        "salt-cloud and its workers are gone: {:?}",
        salt_clouds_under(dir.path())
    );
    let report: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("the report is printed ({e}): {}", stderr(&out)));
    assert_eq!(report["result"]["interrupted"], true, "{report}");
    let built = names(&report);
    assert_eq!(built.len(), 2, "the report names both instances: {report}");
    // Its names stay held: instances may exist (they do, in moto).
    let plan = lab.json(&words(&["group", "plan"], &["--json"]));
    let planned = names(&plan);
    assert!(
        planned.iter().all(|n| !built.contains(n)),
        "the next plan reuses the interrupted run's names: {planned:?}"
    );
    let log =
        std::fs::read_to_string(lab.runner_dir().join("logs/conductor/conductor.log")).unwrap();
    assert!(log.contains("interrupted"), "{log}");
}

#[test]
fn sigint_stops_a_create_and_kills_its_salt_cloud() {
    interrupt_create(libc::SIGINT, 130);
}

#[test]
fn sigterm_stops_a_create_and_kills_its_salt_cloud() {
    interrupt_create(libc::SIGTERM, 143);
}

/// A `salt` whose master never answers.
fn unreachable_salt(dir: &Path) -> std::path::PathBuf {
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    for p in ["salt", "salt-key", "salt-run"] {
        let path = bin.join(p);
        std::fs::write(
            &path,
            "#!/bin/sh\necho '[ERROR   ] Salt request timed out. The master is not responding.' >&2\nexit 1\n",
        )
        .unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    bin
}

#[test]
fn a_salt_failure_after_the_launch_prints_the_report_and_exits_1() {
    let moto = MotoServer::start();
    let dir = tempfile::tempdir().unwrap();
    let lab = Lab::new(moto.endpoint(), dir.path(), |p| {
        p.replace(
            "      hooks: {pre_create: [orch.conductor_common], post_create: [orch.conductor_common]}\n",
            "",
        )
    });
    let bin = unreachable_salt(dir.path());
    let autosign = dir.path().join("autosign");
    std::fs::create_dir_all(&autosign).unwrap();
    let args = words(
        &["group", "create"],
        &[
            "--provisioner",
            "ec2",
            "--release-grace",
            "0s",
            "--minion-timeout",
            "5s",
            "--json",
            "--salt-bin-dir",
            bin.to_str().unwrap(),
            "--autosign-grains-dir",
            autosign.to_str().unwrap(),
        ],
    );
    let out = lab.run(&args, None);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let launched = report["result"]["launched"].as_array().unwrap();
    assert_eq!(launched.len(), 2, "{report}");
    assert_eq!(
        report["result"]["error"]["class"], "unreachable",
        "{report}"
    );
    assert_eq!(lab.instances(&[]).len(), 2);
}

#[test]
fn a_missing_image_is_bad_input_before_anything_is_reserved_or_written() {
    let dir = tempfile::tempdir().unwrap();
    let lab = Lab::fake(dir.path(), |p| p.replace("        image: ami-0abc\n", ""));
    let out = lab.run(
        &words(&["group", "create"], &["--provisioner", "ec2", "--no-salt"]),
        None,
    );
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("conductor.groups.devops.roles.activemq") && err.contains("no image"),
        "{err}"
    );
    assert!(lab.reservation_files().is_empty());
    assert!(!dir.path().join("etc").exists(), "no file written");
}
