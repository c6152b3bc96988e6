//! The native provisioner's bootstrap command, run for real with `sh`,
//! `curl` and `sha256sum` as cloud-init would run it: the script runs only
//! when its sha256 is the one given, and nothing in it is shell text built
//! from pillar values.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use conductor_core::user_data::{self, BOOTSTRAP_PATH};
use conductor_core::{LaunchSettings, LaunchSpec, Zone};
use serde_json::json;

fn spec(settings: serde_json::Value) -> LaunchSpec {
    LaunchSpec {
        name: "devops-mq01.us-east-1a.test.foobar.com".into(),
        zone: Zone::new("us-east-1a").unwrap(),
        client_token: "t".into(),
        tags: BTreeMap::new(),
        settings: LaunchSettings::parse(&settings).unwrap(),
        user_data: None,
    }
}

fn sha256(path: &Path) -> String {
    let out = Command::new("sha256sum").arg(path).output().unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap()[..64].to_string()
}

/// The user data's one command, with the download path moved into `dir`.
fn command(ud: &str, dir: &Path) -> Vec<String> {
    let doc: serde_yaml::Value =
        serde_yaml::from_str(ud.strip_prefix("#cloud-config\n").unwrap()).unwrap();
    let cmds: Vec<Vec<String>> = serde_yaml::from_value(doc["runcmd"].clone()).unwrap();
    assert_eq!(cmds.len(), 1, "{cmds:?}");
    let mut c = cmds[0].clone();
    assert_eq!(c[6], BOOTSTRAP_PATH);
    c[6] = dir.join("bootstrap-salt.sh").display().to_string();
    c
}

#[test]
fn the_script_runs_only_with_the_right_sha256() {
    let dir = tempfile::tempdir().unwrap();
    let ran = dir.path().join("ran");
    let script = dir.path().join("published.sh");
    std::fs::write(&script, format!("echo \"$@\" > '{}'\n", ran.display())).unwrap();
    let url = format!("file://{}", script.display());
    let good = sha256(&script);

    // A checksum that does not match: the download is refused, nothing runs.
    let wrong = "0".repeat(64);
    let ud = user_data::render(&spec(json!({
        "image": "ami-1",
        "salt_version": "3007.16",
        "bootstrap": {"url": url, "sha256": wrong},
    })))
    .unwrap();
    let c = command(&ud, dir.path());
    let out = Command::new(&c[0]).args(&c[1..]).output().unwrap();
    assert!(
        !out.status.success(),
        "a bad checksum must fail the command"
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("FAILED")
            || String::from_utf8_lossy(&out.stdout).contains("FAILED"),
        "sha256sum says why: {out:?}"
    );
    assert!(!ran.exists(), "the script ran despite its checksum");

    // The right one: it runs, with the bootstrap arguments as arguments.
    let ud = user_data::render(&spec(json!({
        "image": "ami-1",
        "salt_version": "3007.16",
        "bootstrap": {"url": url, "sha256": good},
    })))
    .unwrap();
    let c = command(&ud, dir.path());
    let out = Command::new(&c[0]).args(&c[1..]).output().unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        std::fs::read_to_string(&ran).unwrap(),
        "-P stable 3007.16\n"
    );

    // Shell text in a pillar value stays one argument.
    std::fs::remove_file(&ran).unwrap();
    let ud = user_data::render(&spec(json!({
        "image": "ami-1",
        "script_args": "-P stable $(touch pwned);3007",
        "bootstrap": {"url": url, "sha256": good},
    })))
    .unwrap();
    let c = command(&ud, dir.path());
    let out = Command::new(&c[0])
        .args(&c[1..])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(!dir.path().join("pwned").exists());
    assert_eq!(
        std::fs::read_to_string(&ran).unwrap(),
        "-P stable $(touch pwned);3007\n"
    );
}
