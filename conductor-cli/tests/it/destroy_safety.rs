//! The binary's destroy on moto: `names=` leaves alone what Conductor did
//! not build for the group and env (an untagged instance and one of another
//! env, both with the selected name), `--dry-run` lists exactly what a
//! destroy would do and changes nothing, a terminal is asked (a real
//! pseudo-terminal), no terminal is not; and `runs prune` removes what a
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

    // The human summary names them too.
    let word = format!("names={TAKEN},{MQ02}");
    let o = lab.run(&destroy_args(&[&word], &[]), None);
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
