//! `salt-run conduct.group ...` through `salt/runners/conduct.py`, with the
//! real `salt-run` of the test virtualenv, returns what the binary returns.

use std::process::Command;

use conductor_testkit::salt_env::SaltEnv;

use crate::support::{repo, write_master_config, Lab, RUNNER_PLAN_WORDS};

#[test]
fn salt_run_conduct_group_returns_the_binarys_json() {
    let salt = SaltEnv::get();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let lab = Lab::example(&d.join("conductor"));
    // The lab's roots and `--cloud fake`, for every call of the runner, and
    // the documented `conductor_args: [--provisioner, ec2]`.
    let conf = write_master_config(
        d,
        &[repo().join("salt/runners")],
        &lab.bin,
        &lab.runner_args(),
    );

    let via_salt = Command::new(salt.bin("salt-run"))
        .arg("-c")
        .arg(&conf)
        .args(["conduct.group", "plan"])
        .args(RUNNER_PLAN_WORDS)
        .args(["--out=json", "--log-level=quiet"])
        .output()
        .unwrap();
    assert!(
        via_salt.status.success(),
        "salt-run: {}",
        String::from_utf8_lossy(&via_salt.stderr)
    );
    let from_salt: serde_json::Value =
        serde_json::from_slice(&via_salt.stdout).unwrap_or_else(|e| {
            panic!(
                "salt-run printed no JSON ({e}): {}",
                String::from_utf8_lossy(&via_salt.stdout)
            )
        });

    let from_binary = lab.runner_plan();
    assert_eq!(
        from_salt, from_binary,
        "salt-run returns the binary's document"
    );
    assert_eq!(from_salt["cpid"], "16833830331552303186");

    // status, update and adopt take the same conductor_args.
    for action in [&["status"][..], &["update", "dry_run=True"], &["adopt"]] {
        let o = Command::new(salt.bin("salt-run"))
            .arg("-c")
            .arg(&conf)
            .args(["conduct.group", action[0]])
            .args(["group=devops", "pillarenv=test", "region=us-east-1a"])
            .args(&action[1..])
            .args(if action[0] == "update" {
                &["system_id=1"][..]
            } else {
                &[]
            })
            .args(["--out=json", "--log-level=quiet"])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&o.stdout);
        assert!(
            !text.contains("unexpected argument"),
            "salt-run conduct.group {action:?}: {text}"
        );
    }

    // A bad word: conductor's message and exit code come back through salt-run.
    let bad = Command::new(salt.bin("salt-run"))
        .arg("-c")
        .arg(&conf)
        .args([
            "conduct.group",
            "plan",
            "group=devops",
            "role=nope",
            "pillarenv=test",
            "region=us-east-1a",
            "--out=json",
            "--log-level=quiet",
        ])
        .output()
        .unwrap();
    let ret: serde_json::Value = serde_json::from_slice(&bad.stdout).unwrap();
    assert_eq!(ret["retcode"], 2, "{ret}");
    assert!(ret["error"].as_str().unwrap().contains("nope"), "{ret}");
    assert_ne!(
        bad.status.code(),
        Some(0),
        "salt-run exits non-zero from retcode"
    );
}

/// The runner has no terminal to confirm on: `destroy` gets `--yes` (and
/// `dry_run=True` becomes `--dry-run`); other actions do not get `--yes`.
#[test]
fn salt_run_destroy_passes_yes() {
    let salt = SaltEnv::get();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // A stand-in binary that records its arguments.
    let bin = d.join("conductor");
    let log = d.join("args");
    std::fs::write(
        &bin,
        format!(
            "#!/bin/sh\nprintf '%s\\n' \"$@\" > '{}'\necho '{{}}'\n",
            log.display()
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
    let conf = write_master_config(d, &[repo().join("salt/runners")], &bin, &[]);
    let args_of = |action: &str, extra: &[&str]| -> Vec<String> {
        let o = Command::new(salt.bin("salt-run"))
            .arg("-c")
            .arg(&conf)
            .args(["conduct.group", action])
            .args([
                "group=devops",
                "pillarenv=test",
                "cpid=16833830331552303186",
            ])
            .args(extra)
            .args(["--out=json", "--log-level=quiet"])
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        std::fs::read_to_string(&log)
            .unwrap()
            .lines()
            .map(str::to_string)
            .collect()
    };
    let destroy = args_of("destroy", &[]);
    assert_eq!(&destroy[..2], ["group", "destroy"], "{destroy:?}");
    assert!(destroy.contains(&"--yes".to_string()), "{destroy:?}");
    let dry = args_of("destroy", &["dry_run=True"]);
    assert!(
        dry.contains(&"--dry-run".to_string()) && dry.contains(&"--yes".to_string()),
        "{dry:?}"
    );
    let status = args_of("status", &[]);
    assert!(!status.contains(&"--yes".to_string()), "{status:?}");
}
