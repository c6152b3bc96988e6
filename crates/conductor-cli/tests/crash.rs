//! Crash tests: a run SIGKILLed at each lifecycle point (env
//! `CONDUCTOR_FAULT_POINT`) against moto leaves no key that blocks later runs
//! once pruned, no name is ever used twice, and every instance it launched is
//! found by its cpid tag.

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Command, Output};

use conductor_testkit::moto::MotoServer;

const POINTS: [&str; 6] = [
    "after_cpid",
    "after_reserve",
    "after_files",
    "after_launch",
    "after_visible",
    "after_release",
];

fn conductor(moto: &MotoServer, dir: &Path, args: &[&str], fault: Option<&str>) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_conductor"));
    c.args(args)
        .arg("--pillar-dir")
        .arg(dir.join("pillar"))
        .arg("--config-dir")
        .arg(dir.join("etc"))
        .arg("--runner-dir")
        .arg(dir.join("runner"))
        .args(["--endpoint-url", &moto.endpoint()])
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_REGION", "us-east-1")
        .env_remove("CONDUCTOR_FAULT_POINT");
    if let Some(f) = fault {
        c.env("CONDUCTOR_FAULT_POINT", f);
    }
    c.output().unwrap()
}

fn create_args() -> Vec<&'static str> {
    vec![
        "group",
        "create",
        "group=devops",
        "role=activemq",
        "pillarenv=test",
        "region=us-east-1a",
        "--provisioner",
        "ec2",
        "--no-salt",
        "--release-grace",
        "0",
    ]
}

/// name -> cpid tag of every live instance, as `group status` reports them.
fn instances(moto: &MotoServer, dir: &Path) -> Vec<(String, String)> {
    let o = conductor(
        moto,
        dir,
        &[
            "group",
            "status",
            "group=devops",
            "pillarenv=test",
            "region=us-east-1a",
            "--json",
        ],
        None,
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["name"].as_str().unwrap().to_string(),
                r["cpid"].as_str().unwrap_or("-").to_string(),
            )
        })
        .collect()
}

#[test]
fn sigkill_at_every_lifecycle_point() {
    let moto = MotoServer::start();
    let dir = tempfile::tempdir().unwrap();
    let pillar = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/pillar/test/conductor.sls"),
    )
    .unwrap()
    .replace(", subnet_id: subnet-1", "");
    std::fs::create_dir_all(dir.path().join("pillar/test")).unwrap();
    std::fs::write(dir.path().join("pillar/test/conductor.sls"), pillar).unwrap();

    let mut launched_by_killed = 0;
    for point in POINTS {
        let before: BTreeSet<String> = instances(&moto, dir.path())
            .into_iter()
            .map(|(_, c)| c)
            .collect();
        let o = conductor(&moto, dir.path(), &create_args(), Some(point));
        assert_eq!(
            o.status.signal(),
            Some(9),
            "{point}: the run was killed ({:?})",
            o.status
        );

        // Keys the killed run held are reported and pruned (its pid is gone).
        let o = conductor(
            &moto,
            dir.path(),
            &["reservations", "prune", "--json"],
            None,
        );
        assert!(
            o.status.success(),
            "{point}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        let o = conductor(&moto, dir.path(), &["reservations", "list", "--json"], None);
        let left: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        assert!(
            left.as_array().unwrap().is_empty(),
            "{point}: keys left after prune: {left}"
        );

        // Whatever the killed run launched is there, found by its cpid tag.
        let now = instances(&moto, dir.path());
        let mut by_cpid: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (name, cpid) in &now {
            by_cpid.entry(cpid.clone()).or_default().push(name.clone());
        }
        let new: Vec<&String> = by_cpid.keys().filter(|c| !before.contains(*c)).collect();
        assert!(new.len() <= 1, "{point}: one killed run, {new:?}");
        let expect_launch = matches!(point, "after_launch" | "after_visible" | "after_release");
        assert_eq!(
            new.len(),
            usize::from(expect_launch),
            "{point}: instances of the killed run: {by_cpid:?}"
        );
        if let Some(cpid) = new.first() {
            assert_eq!(
                by_cpid[*cpid].len(),
                2,
                "{point}: both instances carry the killed run's cpid"
            );
            launched_by_killed += 2;
            let word = format!("cpid={cpid}");
            let o = conductor(
                &moto,
                dir.path(),
                &[
                    "group",
                    "status",
                    "group=devops",
                    "pillarenv=test",
                    "region=us-east-1a",
                    &word,
                    "--json",
                ],
                None,
            );
            let found: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
            assert_eq!(
                found.as_array().unwrap().len(),
                2,
                "{point}: status cpid= finds them"
            );
        }

        // A new run succeeds at once and never reuses a name.
        let o = conductor(&moto, dir.path(), &create_args(), None);
        assert!(
            o.status.success(),
            "{point}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        let names: Vec<String> = instances(&moto, dir.path())
            .into_iter()
            .map(|(n, _)| n)
            .collect();
        let unique: BTreeSet<&String> = names.iter().collect();
        assert_eq!(
            unique.len(),
            names.len(),
            "{point}: a name was used twice: {names:?}"
        );
    }
    assert_eq!(launched_by_killed, 6);
}
