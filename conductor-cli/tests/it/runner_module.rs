//! `salt-run conduct.group ...` through `salt/runners/conduct.py`, with the
//! real `salt-run` of the test virtualenv, returns what the binary returns.

use std::path::{Path, PathBuf};
use std::process::Command;

use conductor_testkit::salt_env::SaltEnv;

use crate::support::Lab;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .canonicalize()
        .unwrap()
}

const WORDS: [&str; 5] = [
    "group=devops",
    "system=small_test",
    "pillarenv=test",
    "region=us-east-1a",
    "cpid=16833830331552303186",
];

#[test]
fn salt_run_conduct_group_returns_the_binarys_json() {
    let salt = SaltEnv::get();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let lab = Lab::example(&d.join("conductor"));
    // The lab's roots and `--cloud fake`, for every call of the runner, and
    // the documented `conductor_args: [--provisioner, ec2]`, which every
    // action accepts.
    let mut extra: Vec<String> = lab
        .args::<&str>(&[])
        .into_iter()
        .map(|a| a.into_string().unwrap())
        .collect();
    extra.extend(["--provisioner".into(), "ec2".into()]);
    let master = format!(
        "root_dir: {root}\nrunner_dirs: [{runners}]\ncachedir: {root}/cache\nlog_file: {root}/master.log\n\
         conductor_binary: {bin}\nconductor_args: [{args}]\n",
        root = d.join("root").display(),
        runners = repo().join("salt/runners").display(),
        bin = lab.bin.display(),
        args = extra.iter().map(|a| format!("'{a}'")).collect::<Vec<_>>().join(", "),
    );
    std::fs::create_dir_all(d.join("conf")).unwrap();
    std::fs::create_dir_all(d.join("root/cache/proc")).unwrap();
    std::fs::write(d.join("conf/master"), master).unwrap();

    let via_salt = Command::new(salt.bin("salt-run"))
        .arg("-c")
        .arg(d.join("conf"))
        .args(["conduct.group", "plan"])
        .args(WORDS)
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

    let mut plan = vec!["group", "plan"];
    plan.extend(WORDS);
    plan.push("--json");
    let direct = lab.run(&plan, None);
    assert!(direct.status.success());
    let from_binary: serde_json::Value = serde_json::from_slice(&direct.stdout).unwrap();
    assert_eq!(
        from_salt, from_binary,
        "salt-run returns the binary's document"
    );
    assert_eq!(from_salt["cpid"], "16833830331552303186");

    // status and update take the same conductor_args.
    for action in [&["status"][..], &["update", "dry_run=True"]] {
        let o = Command::new(salt.bin("salt-run"))
            .arg("-c")
            .arg(d.join("conf"))
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
        .arg(d.join("conf"))
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
    let master = format!(
        "root_dir: {root}\nrunner_dirs: [{runners}]\ncachedir: {root}/cache\nlog_file: {root}/master.log\nconductor_binary: {bin}\n",
        root = d.join("root").display(),
        runners = repo().join("salt/runners").display(),
        bin = bin.display(),
    );
    std::fs::create_dir_all(d.join("conf")).unwrap();
    std::fs::create_dir_all(d.join("root/cache/proc")).unwrap();
    std::fs::write(d.join("conf/master"), master).unwrap();
    let args_of = |action: &str, extra: &[&str]| -> Vec<String> {
        let o = Command::new(salt.bin("salt-run"))
            .arg("-c")
            .arg(d.join("conf"))
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
