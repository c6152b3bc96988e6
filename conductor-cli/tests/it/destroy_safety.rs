//! The binary's destroy on moto: `names=` leaves alone what Conductor did
//! not build for the group and env (an untagged instance and one of another
//! env, both with the selected name), `--dry-run` lists exactly what a
//! destroy would do and changes nothing, a terminal is asked (a real
//! pseudo-terminal; Ctrl-C at the question ends the run at once), no
//! terminal is not; a signal once instances are terminated still deletes
//! their keys and prints the report; and `runs prune` removes what a
//! crashed run left.

use crate::support;

use std::collections::BTreeSet;
use std::process::Command;

use conductor_core::Step;
use conductor_testkit::moto::MotoServer;
use serde_json::Value;
use support::{stderr, Lab};

/// The name the foreign instances carry.
const TAKEN: &str = "devops-mq07.us-east-1a.test.foobar.com";
const MQ01: &str = "devops-mq01.us-east-1a.test.foobar.com";
const MQ02: &str = "devops-mq02.us-east-1a.test.foobar.com";

/// Runs a boto3 snippet against moto's EC2 in us-east-1 (`ec2` is the client;
/// `args` are `sys.argv[2:]`); returns what it prints.
fn boto(moto: &MotoServer, code: &str, args: &[&str]) -> String {
    let script = format!(
        "import boto3, json, sys\nec2 = boto3.client('ec2', endpoint_url=sys.argv[1], region_name='us-east-1')\n{code}\n"
    );
    let o = Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(moto.endpoint())
        .args(args)
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8(o.stdout).unwrap().trim().to_string()
}

/// Launches an instance named `name` with `tags` (JSON object) directly in moto.
fn launch(moto: &MotoServer, name: &str, tags: &str) -> String {
    boto(
        moto,
        "tags = json.loads(sys.argv[3]); tags['Name'] = sys.argv[2]\n\
         r = ec2.run_instances(ImageId='ami-0abc', MinCount=1, MaxCount=1, InstanceType='t3.small',\n\
             Placement={'AvailabilityZone': 'us-east-1a'},\n\
             TagSpecifications=[{'ResourceType': 'instance', 'Tags': [{'Key': k, 'Value': v} for k, v in tags.items()]}])\n\
         print(r['Instances'][0]['InstanceId'])",
        &[name, tags],
    )
}

/// (id, Name) of every live instance moto holds, sorted.
fn live(moto: &MotoServer) -> BTreeSet<(String, String)> {
    let out = boto(
        moto,
        "out = []\n\
         for r in ec2.describe_instances()['Reservations']:\n\
         \x20   for i in r['Instances']:\n\
         \x20       if i['State']['Name'] != 'terminated':\n\
         \x20           out.append([i['InstanceId'], {t['Key']: t['Value'] for t in i.get('Tags', [])}.get('Name', '')])\n\
         print(json.dumps(out))",
        &[],
    );
    let rows: Vec<(String, String)> = serde_json::from_str(&out).unwrap();
    rows.into_iter().collect()
}

fn destroy_args<'a>(words: &[&'a str], flags: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec![
        "group",
        "destroy",
        "group=devops",
        "pillarenv=test",
        "region=us-east-1a",
    ];
    args.extend(words);
    args.extend(["--provisioner", "ec2", "--no-salt"]);
    args.extend(flags);
    args
}

/// A lab on moto with mq01 and mq02 built by Conductor, and two instances
/// named [`TAKEN`] it did not build: one with a Name tag only (the issue's
/// report), one of another env. Returns (untagged id, other-env id).
fn world(moto: &MotoServer, dir: &std::path::Path) -> (Lab, String, String) {
    let lab = Lab::new(moto.endpoint(), dir, |p| p);
    let o = lab.create(&["role=activemq"], None);
    assert!(o.status.success(), "{}", stderr(&o));
    let untagged = launch(moto, TAKEN, "{}");
    let other_env = launch(
        moto,
        TAKEN,
        r#"{"conductor:env": "prod", "conductor:group": "devops", "conductor:cpid": "16833830331552303186"}"#,
    );
    (lab, untagged, other_env)
}

#[test]
fn destroy_names_leaves_alone_what_conductor_did_not_build() {
    let moto = MotoServer::start();
    let dir = tempfile::tempdir().unwrap();
    let (lab, untagged, other_env) = world(&moto, dir.path());
    let before = live(&moto);
    assert_eq!(before.len(), 4);

    // Only the foreign name: exit 2, each instance named with the reason.
    let word = format!("names={TAKEN}");
    let o = lab.run(&destroy_args(&[&word], &[]), None);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let err = stderr(&o);
    for id in [&untagged, &other_env] {
        assert!(
            err.contains(&format!(
                "{TAKEN} ({id}): not built by Conductor for group devops in env test"
            )),
            "{err}"
        );
    }
    assert_eq!(live(&moto), before, "nothing terminated");

    // With one of ours (no --yes: stdin is no terminal, so no question).
    let word = format!("names={TAKEN},{MQ01}");
    let d = lab.json(&destroy_args(&[&word], &["--json"]));
    assert_eq!(d["destroyed"], serde_json::json!([MQ01]), "{d}");
    // --no-salt: the keys left on the master are named.
    let keys_left = d["skipped"].as_array().unwrap().iter().any(|s| {
        let s = s.as_str().unwrap();
        s.contains("minion keys") && s.contains(MQ01)
    });
    assert!(keys_left, "{d}");
    let skipped: BTreeSet<&str> = d["skipped_instances"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        skipped,
        BTreeSet::from([untagged.as_str(), other_env.as_str()])
    );
    let names: BTreeSet<String> = live(&moto).into_iter().map(|(_, n)| n).collect();
    assert_eq!(
        names,
        BTreeSet::from([MQ02.to_string(), TAKEN.to_string()]),
        "both foreign instances survive"
    );
    assert_eq!(live(&moto).len(), 3);

    // The human summary names them too. --no-salt alone (no --provisioner
    // ec2) destroys, as plan and status run, with the ec2 provisioner.
    let word = format!("names={TAKEN},{MQ02}");
    let args: Vec<&str> = destroy_args(&[&word], &[])
        .into_iter()
        .filter(|a| !matches!(*a, "--provisioner" | "ec2"))
        .collect();
    let o = lab.run(&args, None);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains(&format!("destroyed {MQ02}")), "{out}");
    assert!(
        out.contains(&format!(
            "left alone: {TAKEN} ({untagged}): not built by Conductor"
        )),
        "{out}"
    );
}

#[test]
fn destroy_dry_run_lists_exactly_what_it_would_do_and_changes_nothing() {
    let moto = MotoServer::start();
    let dir = tempfile::tempdir().unwrap();
    let (lab, untagged, other_env) = world(&moto, dir.path());
    let before = live(&moto);
    let runs_before = lab.json(&["runs", "list", "--json"]);
    let word = format!("names={MQ01},{MQ02},{TAKEN}");
    let plan = lab.json(&destroy_args(&[&word], &["--dry-run", "--json"]));
    assert_eq!(plan["dry_run"], true);
    let ids: BTreeSet<(String, String)> = plan["destroy"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["id"].as_str().unwrap().to_string(),
                t["name"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let ours: BTreeSet<(String, String)> = before
        .iter()
        .filter(|(_, n)| n == MQ01 || n == MQ02)
        .cloned()
        .collect();
    assert_eq!(ids, ours, "{plan}");
    assert_eq!(
        plan["delete_minion_keys"],
        serde_json::json!([]),
        "--no-salt: no keys"
    );
    let skipped: BTreeSet<&str> = plan["skipped_instances"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        skipped,
        BTreeSet::from([untagged.as_str(), other_env.as_str()])
    );
    // Nothing changed: instances, runs (no destroy run), reservations.
    assert_eq!(live(&moto), before);
    assert_eq!(lab.json(&["runs", "list", "--json"]), runs_before);
    assert!(lab.reservation_files().is_empty());
    // The human form, with Salt: the keys it would delete.
    let o = lab.run(
        &[
            "group",
            "destroy",
            "group=devops",
            "pillarenv=test",
            "region=us-east-1a",
            &word,
            "--provisioner",
            "ec2",
            "--dry-run",
        ],
        None,
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    for n in [MQ01, MQ02] {
        assert!(out.contains(&format!("would destroy {n} (i-")), "{out}");
        assert!(
            out.contains(&format!("would delete the minion key of {n}")),
            "{out}"
        );
    }
    assert!(
        out.contains(&format!("left alone: {TAKEN} ({untagged})")),
        "{out}"
    );
    assert_eq!(live(&moto), before);
}

/// Runs `conductor <args>` with stdin and stderr on a pseudo-terminal;
/// answers `answer` when the terminal shows `[y/N]` (never, if `None`).
/// Returns (exit code, what the terminal showed, stdout).
fn on_terminal(lab: &Lab, args: &[&str], answer: Option<&str>) -> (Option<i32>, String, String) {
    let out = conductor_testkit::pty::on_terminal(
        &mut lab.command(args, None),
        answer.map(|a| ("[y/N]", a)),
    )
    .unwrap();
    (
        out.status.code(),
        out.shown(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[test]
fn destroy_asks_on_a_terminal_unless_yes() {
    let moto = MotoServer::start();
    let dir = tempfile::tempdir().unwrap();
    let lab = Lab::new(moto.endpoint(), dir.path(), |p| p);
    let run: Value = {
        let o = lab.create(&["role=activemq"], None);
        assert!(o.status.success(), "{}", stderr(&o));
        serde_json::from_slice(&o.stdout).unwrap()
    };
    let word = format!("cpid={}", run["cpid"].as_str().unwrap());
    let args = destroy_args(&[&word], &[]);

    // "n": nothing changes, exit 2.
    let (code, shown, _) = on_terminal(&lab, &args, Some("n\n"));
    assert!(
        shown.contains(&format!("destroy 2 instances: {MQ01}, {MQ02}? [y/N]")),
        "{shown:?}"
    );
    assert_eq!(code, Some(2), "{shown}");
    assert!(
        shown.contains("not confirmed; nothing was changed"),
        "{shown}"
    );
    assert_eq!(live(&moto).len(), 2);

    // Ctrl-C at the question, the terminal left open: exit 130 at once,
    // nothing changed (the read of the answer does not hold the process).
    let mut t = conductor_testkit::pty::Terminal::spawn(&mut lab.command(&args, None)).unwrap();
    t.wait_for("[y/N]", std::time::Duration::from_secs(120))
        .unwrap();
    t.signal(libc::SIGINT).unwrap();
    let out = t
        .wait_within(std::time::Duration::from_secs(60))
        .unwrap_or_else(|e| panic!("SIGINT at the question did not end the run: {e}"));
    let shown = out.shown();
    assert_eq!(out.status.code(), Some(130), "{shown}");
    assert!(
        shown.contains("interrupted at the confirmation; nothing was changed"),
        "{shown}"
    );
    assert_eq!(live(&moto).len(), 2);

    // "y": destroyed.
    let (code, shown, out) = on_terminal(&lab, &args, Some("y\n"));
    assert_eq!(code, Some(0), "{shown}\n{out}");
    assert!(out.contains(&format!("destroyed {MQ01}")), "{out}");
    assert!(live(&moto).is_empty());

    // --yes on a terminal: no question.
    let o = lab.create(&["role=activemq", "count=1"], None);
    assert!(o.status.success(), "{}", stderr(&o));
    let word = format!("names={MQ01}");
    let (code, shown, out) = on_terminal(&lab, &destroy_args(&[&word], &["--yes"]), None);
    assert_eq!(code, Some(0), "{shown}\n{out}");
    assert!(!shown.contains("[y/N]"), "{shown}");
    assert!(live(&moto).is_empty());
}

#[test]
fn runs_prune_removes_what_a_crashed_run_left() {
    let dir = tempfile::tempdir().unwrap();
    let lab = Lab::fake(dir.path(), |p| p);
    let etc = dir.path().join("etc");
    let conf_files = || -> Vec<String> {
        ["cloud.providers.d", "cloud.profiles.d"]
            .iter()
            .flat_map(|d| std::fs::read_dir(etc.join(d)).into_iter().flatten())
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect()
    };
    // A finished run leaves nothing in the config dir.
    let o = lab.create(&["role=activemq"], None);
    assert!(o.status.success(), "{}", stderr(&o));
    let done: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(conf_files().is_empty(), "{:?}", conf_files());
    // A run killed once its files are written leaves its provider and profile.
    let o = lab.create(&["role=nifi"], Some(Step::FilesWritten));
    assert!(!o.status.success());
    let left = conf_files();
    assert_eq!(left.len(), 2, "{left:?}");
    let crashed = left[0]
        .trim_end_matches(".conf")
        .rsplit_once('_')
        .unwrap()
        .1
        .to_string();
    // Too young for --older-than 1h: nothing goes.
    let p = lab.json(&["runs", "prune", "--older-than", "1h", "--json"]);
    assert_eq!(p["removed"], serde_json::json!([]), "{p}");
    assert_eq!(conf_files().len(), 2);
    // --older-than 0s: the crashed run's files and both runs' directories.
    let p = lab.json(&["runs", "prune", "--older-than", "0s", "--json"]);
    let removed: Vec<&str> = p["removed"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap())
        .collect();
    assert!(conf_files().is_empty(), "{:?}", conf_files());
    for cpid in [done["cpid"].as_str().unwrap(), crashed.as_str()] {
        assert!(
            removed.iter().any(|r| r.ends_with(&format!("maps/{cpid}"))),
            "{cpid}: {removed:?}"
        );
        let o = lab.run(&["runs", "show", cpid], None);
        assert_eq!(o.status.code(), Some(2), "no files of {cpid} left");
    }
}

/// A `salt-key` that appends its arguments to `<dir>/salt-key.log`, and a
/// `salt-run` that creates `<dir>/salt-run.started` and hangs (a long
/// `post_destroy` hook); returns their directory.
fn hanging_hook_salt(dir: &std::path::Path) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let scripts = [
        (
            "salt-key",
            format!(
                "#!/bin/sh\necho \"$@\" >> {}\n",
                dir.join("salt-key.log").display()
            ),
        ),
        (
            "salt-run",
            format!(
                "#!/bin/sh\ntouch {}\nexec sleep 120\n",
                dir.join("salt-run.started").display()
            ),
        ),
    ];
    for (name, text) in scripts {
        let path = bin.join(name);
        std::fs::write(&path, text).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    bin
}

#[test]
fn sigterm_during_post_destroy_deletes_the_keys_and_prints_the_report() {
    let moto = MotoServer::start();
    let dir = tempfile::tempdir().unwrap();
    let lab = Lab::new(moto.endpoint(), dir.path(), |p| {
        p.replace(
            "hooks: {pre_create: [orch.conductor_common], post_create: [orch.conductor_common]}",
            "hooks: {post_destroy: [orch.after]}",
        )
    });
    let o = lab.create(&["role=activemq"], None);
    assert!(o.status.success(), "{}", stderr(&o));
    let bin = hanging_hook_salt(dir.path());
    let word = format!("names={MQ01},{MQ02}");
    let mut args = vec![
        "group",
        "destroy",
        "group=devops",
        "pillarenv=test",
        "region=us-east-1a",
        word.as_str(),
    ];
    args.extend(["--provisioner", "ec2", "--yes", "--json", "--salt-bin-dir"]);
    args.push(bin.to_str().unwrap());
    let mut child = lab
        .command(&args, None)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let started = dir.path().join("salt-run.started");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !started.exists() {
        if std::time::Instant::now() > deadline || child.try_wait().unwrap().is_some() {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!("the post_destroy hook did not start: {}", stderr(&out));
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    // SAFETY: signals the child this test spawned.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGTERM);
    }
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(143), "{}", stderr(&out));
    let report: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("the report is printed ({e}): {}", stderr(&out)));
    assert_eq!(report["interrupted"], true, "{report}");
    assert_eq!(
        report["destroyed"],
        serde_json::json!([MQ01, MQ02]),
        "{report}"
    );
    assert!(
        report["skipped"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s.as_str().unwrap().contains("orch.after")),
        "{report}"
    );
    assert!(
        report["logs"]
            .as_array()
            .unwrap()
            .iter()
            .any(|l| l.as_str().unwrap().contains("cloud_run-")),
        "{report}"
    );
    let keys = std::fs::read_to_string(dir.path().join("salt-key.log")).unwrap();
    assert!(keys.contains(MQ01) && keys.contains(MQ02), "{keys}");
    assert!(live(&moto).is_empty(), "{:?}", live(&moto));
}
