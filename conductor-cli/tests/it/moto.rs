//! The binary against a real `moto_server`: plans see existing instances,
//! create, destroy by cpid, and the DynamoDB reserver from the command line.

use std::process::Command;

use conductor_testkit::bin_lab::{create_args, group_args};
use conductor_testkit::moto::MotoServer;
use conductor_testkit::net::DeadPort;

use crate::support::{names, Lab};

/// moto, a lab on it (the example pillar without its placeholder subnet,
/// which moto checks), and the lab's temp dir.
struct Env {
    moto: MotoServer,
    lab: Lab,
    _dir: tempfile::TempDir,
}

impl Env {
    fn new() -> Self {
        let moto = MotoServer::start();
        let dir = tempfile::tempdir().unwrap();
        Self {
            lab: Lab::new(moto.endpoint(), dir.path(), |p| p),
            moto,
            _dir: dir,
        }
    }

    /// Runs `python3 -c <code>` with boto3 on moto: `sys.argv[1]` is moto's
    /// endpoint, `args` follow; returns its stdout (its stderr when it fails).
    fn boto3(&self, code: &str, args: &[&str]) -> String {
        let o = Command::new("python3")
            .args(["-c", &format!("import boto3,sys; {code}")])
            .arg(self.moto.endpoint())
            .args(args)
            .env("AWS_ACCESS_KEY_ID", "testing")
            .env("AWS_SECRET_ACCESS_KEY", "testing")
            .env("AWS_DEFAULT_REGION", "us-east-1")
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8(o.stdout).unwrap()
    }
}

#[test]
fn create_plan_and_destroy_on_moto() {
    let e = Env::new();
    let create = |extra: &[&str]| {
        let mut words = vec!["role=activemq"];
        words.extend(extra);
        e.lab.json(&create_args(&words))
    };
    let first = create(&[]);
    assert_eq!(first["result"]["success"], true);
    assert_eq!(
        names(&first),
        [
            "devops-mq01.us-east-1a.test.foobar.com",
            "devops-mq02.us-east-1a.test.foobar.com"
        ]
    );

    // A plan now starts after the existing instances; count= overrides nodes.
    let plan = e
        .lab
        .json(&group_args("plan", &["role=activemq", "count=3", "--json"]));
    assert_eq!(
        names(&plan),
        ["03", "04", "05"].map(|i| format!("devops-mq{i}.us-east-1a.test.foobar.com"))
    );

    let second = create(&["count=1"]);
    assert_eq!(names(&second), ["devops-mq03.us-east-1a.test.foobar.com"]);

    // status lists all three with their cpids.
    let status = e.lab.json(&group_args("status", &["--json"]));
    assert_eq!(status.as_array().unwrap().len(), 3);
    // With what EC2 says of each: type (activemq's t3.medium), private IP.
    for row in status.as_array().unwrap() {
        assert_eq!(row["instance_type"], "t3.medium", "{row}");
        assert!(
            row["private_ip"]
                .as_str()
                .is_some_and(|ip| ip.contains('.')),
            "{row}"
        );
        assert!(row.get("answers").is_none(), "not asked: {row}");
    }
    let o = e.lab.run(&group_args("status", &[]), None);
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(
        text.contains("PRIVATE-IP") && text.contains("t3.medium"),
        "{text}"
    );
    // --ping asks Salt; without it that is bad input.
    let o = e
        .lab
        .run(&group_args("status", &["--ping", "--no-salt"]), None);
    assert_eq!(o.status.code(), Some(2), "{}", crate::support::stderr(&o));

    // destroy by cpid removes exactly the first run's instances.
    let cpid = first["cpid"].as_str().unwrap();
    let word = format!("cpid={cpid}");
    let destroy = group_args("destroy", &[&word, "--provisioner", "ec2", "--no-salt"]);
    let d = e.lab.json(&[&destroy[..], &["--json"]].concat());
    assert_eq!(d["destroyed"].as_array().unwrap().len(), 2);
    let status = e.lab.json(&group_args("status", &["--json"]));
    let left: Vec<&str> = status
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert_eq!(left, ["devops-mq03.us-east-1a.test.foobar.com"]);
    // Destroying it again selects nothing: exit 2, naming the selection.
    let o = e.lab.run(&destroy, None);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains(cpid));
}

#[test]
fn dynamodb_reserver_from_the_command_line() {
    let e = Env::new();
    let dyn_args = [
        "--reserver",
        "dynamodb",
        "--dynamodb-table",
        "conductor-cli",
        "--create-table",
    ];
    // As `create_args`, but with a 10-minute release grace.
    let mut args = group_args(
        "create",
        &[
            "role=activemq",
            "--provisioner",
            "ec2",
            "--no-salt",
            "--release-grace",
            "10m",
            "--json",
        ],
    );
    args.extend(dyn_args);
    let r = e.lab.json(&args);
    assert_eq!(r["result"]["success"], true);
    // Released with a 10-minute grace: the names are still listed, with their owner.
    let mut list = vec!["reservations", "list", "--json"];
    list.extend(dyn_args);
    let held = e.lab.json(&list);
    let keys: Vec<&str> = held
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["key"].as_str().unwrap())
        .collect();
    assert!(
        keys.contains(&"test_devops-mq01.us-east-1a.test.foobar.com"),
        "{keys:?}"
    );
    assert!(
        held.as_array()
            .unwrap()
            .iter()
            .all(|h| h["owner"]["cpid"] == r["cpid"]),
        "held by the run: {held}"
    );
    // Nothing was written to the file reservations.
    assert!(
        !e.lab.runner_dir().join("reserved_names").exists()
            || std::fs::read_dir(e.lab.runner_dir().join("reserved_names"))
                .unwrap()
                .count()
                == 0
    );
    // Released keys are held for their grace although the run's process has
    // ended (EC2's read lag outlives it): prune leaves them; an operator's
    // `--older-than` frees them (their owner is gone).
    let mut prune = vec!["reservations", "prune", "--json"];
    prune.extend(dyn_args);
    let pruned = e.lab.json(&prune);
    assert!(
        pruned["pruned"].as_array().unwrap().is_empty(),
        "released keys are held for the grace: {pruned}"
    );
    prune.extend(["--older-than", "0s"]);
    let pruned = e.lab.json(&prune);
    assert_eq!(
        pruned["pruned"].as_array().unwrap().len(),
        keys.len(),
        "the run's process is gone: --older-than frees its keys"
    );
    let held = e.lab.json(&list);
    assert!(held.as_array().unwrap().is_empty());
    // An unreachable endpoint is exit 4.
    let mut dead = e.lab.clone();
    let nowhere = DeadPort::new();
    dead.endpoint = Some(nowhere.url());
    dead.env.extend(
        [
            ("AWS_ACCESS_KEY_ID", "x"),
            ("AWS_SECRET_ACCESS_KEY", "x"),
            ("AWS_MAX_ATTEMPTS", "1"),
        ]
        .map(|(k, v)| (k.to_string(), v.to_string())),
    );
    let o = dead.run(&["reservations", "list", "--reserver", "dynamodb"], None);
    assert_eq!(
        o.status.code(),
        Some(4),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
}

#[test]
fn runs_archive_to_moto_s3_holds_every_file_of_the_run() {
    let e = Env::new();
    let run = e.lab.json(&create_args(&["role=activemq"]));
    let cpid = run["cpid"].as_str().unwrap().to_string();
    // A bucket in moto's S3.
    e.boto3(
        "boto3.client('s3', endpoint_url=sys.argv[1]).create_bucket(Bucket='salt-runs')",
        &[],
    );
    let archive_to_s3 = || {
        e.lab.json(&[
            "runs",
            "archive",
            &cpid,
            "--to",
            "s3://salt-runs/conductor",
            "--json",
        ])
    };
    let out = archive_to_s3();
    let url = format!("s3://salt-runs/conductor/conductor-run-{cpid}.tar.gz");
    assert_eq!(out["archive"], url.as_str());
    // Fetch it back and list it: every file of the run, named by root.
    let list = || -> Vec<String> {
        e.boto3(
            "import tarfile,io; b=boto3.client('s3', endpoint_url=sys.argv[1]).get_object(Bucket='salt-runs', Key=sys.argv[2])['Body'].read(); print('\\n'.join(tarfile.open(fileobj=io.BytesIO(b)).getnames()))",
            &[&format!("conductor/conductor-run-{cpid}.tar.gz")],
        )
        .lines()
        .map(str::to_string)
        .collect()
    };
    let names = list();
    // The run's files as it reported them, and the record it wrote at its end.
    let files = run["result"]["logs"].as_array().unwrap();
    let record = format!("runner/cloud_runs/{cpid}/run.json");
    assert!(names.contains(&record), "{record} in {names:?}");
    assert_eq!(names.len(), files.len() + 1, "{names:?} vs {files:?}");
    // The run removed its provider and profile from the config dir when it
    // ended; the archive holds the copies it keeps beside its map.
    for kind in [
        format!("runner/maps/{cpid}/cloud.providers.d/"),
        format!("runner/maps/{cpid}/cloud.profiles.d/"),
        "runner/maps/".to_string(),
        "runner/cloud_runs/".to_string(),
    ] {
        assert!(
            names
                .iter()
                .any(|n| n.starts_with(&kind) && n.contains(&cpid)),
            "{kind}: {names:?}"
        );
    }
    assert!(
        !names.iter().any(|n| n.starts_with("config/")),
        "nothing left in the config dir: {names:?}"
    );
    // A file removed since (an `archive --remove` that stopped partway):
    // archiving again to the same place merges the object already there,
    // so its entry stays.
    let record_file = e
        .lab
        .runner_dir()
        .join(format!("cloud_runs/{cpid}/run.json"));
    std::fs::remove_file(&record_file).unwrap();
    archive_to_s3();
    let mut again = list();
    let mut before = names.clone();
    again.sort();
    before.sort();
    assert_eq!(again, before, "the union of both archives");
    // An object there that is no archive is not replaced, and nothing is
    // removed: the error names the object.
    e.boto3(
        "boto3.client('s3', endpoint_url=sys.argv[1]).put_object(Bucket='salt-runs', Key=sys.argv[2], Body=b'not a tarball')",
        &[&format!("broken/conductor-run-{cpid}.tar.gz")],
    );
    let o = e.lab.run(
        &[
            "runs",
            "archive",
            &cpid,
            "--to",
            "s3://salt-runs/broken",
            "--remove",
        ],
        None,
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert_ne!(o.status.code(), Some(0), "{err}");
    assert!(
        err.contains(&format!(
            "s3://salt-runs/broken/conductor-run-{cpid}.tar.gz"
        )),
        "{err}"
    );
    assert!(
        e.lab.runner_dir().join("maps").join(&cpid).exists(),
        "nothing removed"
    );
    // Encrypted at rest: AES256 by default, KMS when asked.
    let head = |key: &str| -> serde_json::Value {
        let h = e.boto3(
            "import json; h=boto3.client('s3', endpoint_url=sys.argv[1]).head_object(Bucket='salt-runs', Key=sys.argv[2]); print(json.dumps({'sse': h.get('ServerSideEncryption'), 'kms': h.get('SSEKMSKeyId')}))",
            &[key],
        );
        serde_json::from_str(&h).unwrap()
    };
    let key = format!("conductor/conductor-run-{cpid}.tar.gz");
    assert_eq!(head(&key)["sse"], "AES256", "the upload asked for SSE");
    let kms_key = e
        .boto3(
            "print(boto3.client('kms', endpoint_url=sys.argv[1]).create_key()['KeyMetadata']['KeyId'])",
            &[],
        )
        .trim()
        .to_string();
    e.lab.json(&[
        "runs",
        "archive",
        &cpid,
        "--to",
        "s3://salt-runs/kms",
        "--sse",
        "aws:kms",
        "--kms-key-id",
        &kms_key,
        "--json",
    ]);
    let h = head(&format!("kms/conductor-run-{cpid}.tar.gz"));
    assert_eq!(h["sse"], "aws:kms", "{h}");
    assert!(h["kms"].as_str().unwrap().contains(&kms_key), "{h}");
    // A KMS key without KMS is bad input.
    let o = e.lab.run(
        &[
            "runs",
            "archive",
            &cpid,
            "--to",
            "s3://salt-runs/x",
            "--kms-key-id",
            &kms_key,
        ],
        None,
    );
    assert_eq!(o.status.code(), Some(2));
    // A local archive: 0600 in a 0700 directory it created.
    let local = e.lab.json(&["runs", "archive", &cpid, "--json"]);
    let path = std::path::PathBuf::from(local["archive"].as_str().unwrap());
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&path), 0o600, "{}", path.display());
    assert_eq!(mode(path.parent().unwrap()), 0o700);
    // A bad destination is bad input.
    let o = e
        .lab
        .run(&["runs", "archive", &cpid, "--to", "s3://Bad_Bucket"], None);
    assert_eq!(o.status.code(), Some(2));
}

#[test]
fn status_after_the_seeds_three_parallel_runs_shows_every_id() {
    let e = Env::new();
    let targets: [&[&str]; 3] = [
        &["role=nifi"],
        &["role=activemq", "count=2"],
        &["system=small_test"],
    ];
    let children: Vec<_> = targets
        .iter()
        .map(|t| {
            e.lab
                .command(&create_args(t), None)
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let runs: Vec<serde_json::Value> = children
        .into_iter()
        .map(|c| {
            let o = c.wait_with_output().unwrap();
            assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
            serde_json::from_slice(&o.stdout).unwrap()
        })
        .collect();
    let status = e.lab.json(&group_args("status", &["--json"]));
    let rows = status.as_array().unwrap();
    assert_eq!(rows.len(), 12);
    let system_cpid = runs[2]["cpid"].as_str().unwrap();
    let mut clusters = std::collections::BTreeMap::new();
    for r in rows {
        let name = r["name"].as_str().unwrap();
        let planned = runs
            .iter()
            .flat_map(|run| run["instances"].as_array().unwrap())
            .find(|i| i["name"] == name)
            .expect("planned");
        // Every id grain of the plan shows in status with the same value.
        for (grain, v) in planned["grains"].as_object().unwrap() {
            if grain.ends_with(".cluster.id") {
                assert_eq!(
                    r["cluster_ids"][grain],
                    v.to_string().as_str(),
                    "{name} {grain}"
                );
            } else if grain.ends_with(".system.id") {
                assert_eq!(
                    r["system_ids"][grain],
                    v.to_string().as_str(),
                    "{name} {grain}"
                );
            }
        }
        assert_eq!(
            r["system_ids"].as_object().unwrap().is_empty(),
            r["cpid"] != system_cpid,
            "{r}"
        );
        if let Some(id) = r["cluster_ids"]["devops.nifi.cluster.id"].as_str() {
            clusters
                .entry(id.to_string())
                .or_insert_with(std::collections::BTreeSet::new)
                .insert(r["cpid"].as_str().unwrap().to_string());
        }
    }
    assert_eq!(clusters.len(), 2);
    assert!(clusters.values().all(|c| c.len() == 1), "{clusters:?}");
}

/// A pillar whose launches EC2 would refuse (too many tags, a key too long,
/// an `aws:` key, user data over 16 KiB) is refused by `plan` and by
/// `create` with exit 2 naming the tag or the size, before anything is
/// reserved or launched. moto itself accepts all of these.
#[test]
fn launches_beyond_ec2_limits_are_refused_before_anything_is_reserved() {
    let moto = MotoServer::start();
    let activemq = "activemq: {basename: devops-mqXX.REGION.ENV, nodes: 2, size: t3.medium}";
    let many: String = (0..46).map(|i| format!("t{i}: v, ")).collect();
    let cases = [
        (format!("tags: {{{many}}}"), "51 tags, EC2 allows 50"),
        (
            format!("tags: {{{}: v}}", "k".repeat(129)),
            "129 characters",
        ),
        ("tags: {'aws:owner': me}".to_string(), "\"aws:owner\""),
        (
            format!("grains: {{blob: {}}}", "x".repeat(17_000)),
            "user data",
        ),
    ];
    for (extra, expect) in cases {
        let dir = tempfile::tempdir().unwrap();
        let role = activemq.replace("size: t3.medium}", &format!("size: t3.medium, {extra}}}"));
        let lab = Lab::new(moto.endpoint(), dir.path(), |p| p.replace(activemq, &role));
        let plan = group_args(
            "plan",
            &["role=activemq", "--provisioner", "ec2", "--no-salt"],
        );
        for args in [plan, create_args(&["role=activemq"])] {
            let o = lab.run(&args, None);
            let err = String::from_utf8_lossy(&o.stderr);
            assert_eq!(o.status.code(), Some(2), "{args:?} with {expect}: {err}");
            assert!(
                err.contains(expect)
                    && err.contains("devops-mq01")
                    && err.contains("EC2 would refuse"),
                "{args:?}: {err}"
            );
            assert!(
                lab.reservation_files().is_empty(),
                "{expect}: nothing reserved"
            );
        }
        let status = lab.json(&group_args("status", &["--json"]));
        assert_eq!(status, serde_json::json!([]), "{expect}: nothing launched");
    }
}

/// Two environments in two AWS accounts (pillar `environments.<env>.aws`;
/// moto's STS hands out credentials of the role's account, and keeps
/// accounts apart by them): each env's instances land in its account, its
/// names are planned from that account's inventory alone, and one DynamoDB
/// table (in the default account) holds both envs' reservations.
#[test]
fn two_environments_in_two_accounts_share_one_reservation_table() {
    const A: &str = "111111111111";
    const B: &str = "222222222222";
    let mut e = Env::new();
    let endpoint = e.moto.endpoint();
    let live = |account: Option<&str>| {
        conductor_testkit::moto::live_names_in(&endpoint, "us-east-1", account)
    };
    let dyn_args = [
        "--reserver",
        "dynamodb",
        "--dynamodb-table",
        "conductor-accounts",
        "--dynamodb-region",
        "eu-west-1",
        "--create-table",
    ];
    // A create of activemq in `env`, its keys held `grace` after the run.
    let create = |lab: &Lab, env: &str, grace: &str| {
        let word = format!("pillarenv={env}");
        let mut args = vec![
            "group",
            "create",
            "group=devops",
            &word,
            "region=us-east-1a",
            "role=activemq",
            "--provisioner",
            "ec2",
            "--no-salt",
            "--release-grace",
            grace,
            "--json",
        ];
        args.extend(dyn_args);
        lab.json(&args)
    };
    // Without `aws`, env test builds in the default account.
    let default = create(&e.lab, "test", "0");
    assert_eq!(names(&default).len(), 2);
    assert_eq!(live(None), names(&default));

    let example = std::fs::read_to_string(e.lab.pillar.join("test/conductor.sls")).unwrap();
    let env_line = "    test: {domain: foobar.com, regions: [us-east-1, us-west-2]}\n";
    assert!(example.contains(env_line));
    let pillar = example.replace(
        env_line,
        &format!(
            "    test: {{domain: foobar.com, regions: [us-east-1], aws: {{role_arn: 'arn:aws:iam::{A}:role/conductor'}}}}\n    prod: {{domain: foobar.com, regions: [us-east-1], aws: {{role_arn: 'arn:aws:iam::{B}:role/conductor', external_id: ext-7, session_name: ci-master}}}}\n"
        ),
    );
    e.lab.write_pillar(&pillar);
    std::fs::create_dir_all(e.lab.pillar.join("prod")).unwrap();
    std::fs::write(e.lab.pillar.join("prod/conductor.sls"), &pillar).unwrap();

    // Account A has none of test's instances: the plan starts at 01 again.
    let in_a = create(&e.lab, "test", "0");
    assert_eq!(
        names(&in_a),
        names(&default),
        "A's inventory, not the default's"
    );
    assert_eq!(live(Some(A)), names(&in_a));
    let in_a2 = create(&e.lab, "test", "10m");
    assert_eq!(
        names(&in_a2),
        ["03", "04"].map(|i| format!("devops-mq{i}.us-east-1a.test.foobar.com"))
    );
    let in_b = create(&e.lab, "prod", "10m");
    assert_eq!(
        names(&in_b),
        ["01", "02"].map(|i| format!("devops-mq{i}.us-east-1a.prod.foobar.com"))
    );
    assert_eq!(live(Some(B)), names(&in_b));
    assert_eq!(live(Some(A)).len(), 4, "prod's run left A alone");
    assert_eq!(live(None), names(&default), "and the default account");

    // One table holds both envs' reservations (the last two runs', held
    // for their 10-minute grace).
    let held = reservation_keys(&e.lab, &dyn_args);
    let keys: Vec<&str> = held.iter().map(String::as_str).collect();
    for key in [
        "test_devops-mq03.us-east-1a.test.foobar.com",
        "prod_devops-mq01.us-east-1a.prod.foobar.com",
    ] {
        assert!(keys.contains(&key), "{key} in {keys:?}");
    }
    // Status and destroy of prod act in B only.
    let status = e.lab.json(&[
        "group",
        "status",
        "group=devops",
        "pillarenv=prod",
        "region=us-east-1a",
        "--json",
    ]);
    assert_eq!(status.as_array().unwrap().len(), 2, "{status}");
    let cpid = format!("cpid={}", in_b["cpid"].as_str().unwrap());
    let d = e.lab.json(&[
        "group",
        "destroy",
        "group=devops",
        "pillarenv=prod",
        "region=us-east-1a",
        &cpid,
        "--provisioner",
        "ec2",
        "--no-salt",
        "--json",
    ]);
    assert_eq!(d["destroyed"].as_array().unwrap().len(), 2);
    assert!(live(Some(B)).is_empty());
    assert_eq!(live(Some(A)).len(), 4);
}

/// `conductor doctor` on moto with the real Salt: every check of a sound
/// set-up passes (Salt's versions, EC2 with the default credentials and
/// with an environment's assumed role, the clock, a DynamoDB table); a
/// missing table and a missing runner dir fail with exit 2 and their fixes;
/// an unreachable endpoint with exit 4.
#[test]
fn doctor_checks_the_set_up_and_names_the_fix() {
    let mut e = Env::new();
    let example = std::fs::read_to_string(e.lab.pillar.join("test/conductor.sls")).unwrap();
    e.lab.write_pillar(example.replace(
        "regions: [us-east-1, us-west-2]}",
        "regions: [us-east-1], aws: {role_arn: 'arn:aws:iam::111111111111:role/conductor'}}",
    ));
    let salt = conductor_testkit::salt_env::SaltEnv::get().bin_dir();
    let autosign = e.lab.dir.join("autosign");
    std::fs::create_dir_all(&autosign).unwrap();
    let doctor = |lab: &Lab, extra: &[&str]| {
        let mut args = vec![
            "doctor",
            "--env",
            "test",
            "--region",
            "us-east-1",
            "--salt-bin-dir",
            salt.to_str().unwrap(),
            "--autosign-grains-dir",
            autosign.to_str().unwrap(),
            "--json",
        ];
        args.extend(extra);
        let o = lab.run(&args, None);
        let report: serde_json::Value = serde_json::from_slice(&o.stdout)
            .unwrap_or_else(|err| panic!("{args:?}: {err}: {}", crate::support::stderr(&o)));
        (o.status.code(), report)
    };
    let status_of = |report: &serde_json::Value, check: &str| {
        report["checks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["check"] == check)
            .unwrap_or_else(|| panic!("no {check} in {report}"))
            .clone()
    };
    let table = ["--reserver", "dynamodb", "--dynamodb-table", "doctor-t"];
    let (code, missing) = doctor(&e.lab, &table);
    assert_eq!(code, Some(2), "{missing}");
    let reserver = status_of(&missing, "reserver");
    assert_eq!(reserver["status"], "fail", "{missing}");
    assert!(
        reserver["fix"].as_str().unwrap().contains("--create-table"),
        "{reserver}"
    );

    let (code, sound) = doctor(&e.lab, &[&table[..], &["--create-table"]].concat());
    assert_eq!(code, Some(0), "{sound}");
    for check in [
        "config dir",
        "runner dir",
        "salt-run",
        "salt-cloud",
        "autosign dir",
        "ec2",
        "pillar",
        "account",
        "clock",
        "reserver",
    ] {
        assert_eq!(status_of(&sound, check)["status"], "ok", "{check}: {sound}");
    }
    assert!(status_of(&sound, "salt-run")["detail"]
        .as_str()
        .unwrap()
        .contains("3007.16"));
    assert!(status_of(&sound, "account")["detail"]
        .as_str()
        .unwrap()
        .contains("111111111111"));

    // A runner dir under a file cannot be created.
    let mut no_runner = e.lab.clone();
    no_runner.dir = e.lab.pillar.join("test/conductor.sls");
    let (code, report) = doctor(&no_runner, &[]);
    assert_eq!(code, Some(2), "{report}");
    let runner = status_of(&report, "runner dir");
    assert_eq!(runner["status"], "fail", "{report}");
    assert!(
        runner["detail"]
            .as_str()
            .unwrap()
            .contains("is not a directory"),
        "{runner}"
    );

    let mut dead = e.lab.clone();
    let nowhere = DeadPort::new();
    dead.endpoint = Some(nowhere.url());
    dead.env.push(("AWS_MAX_ATTEMPTS".into(), "1".into()));
    let (code, report) = doctor(&dead, &[]);
    assert_eq!(code, Some(4), "{report}");
    assert_eq!(status_of(&report, "ec2")["status"], "fail");
    assert_eq!(status_of(&report, "clock")["status"], "skipped");
    // The human report names each check and the fix under a failure.
    let o = dead.run(&["doctor", "--region", "us-east-1", "--no-salt"], None);
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(text.contains("FAIL  ec2"), "{text}");
    assert!(
        text.contains("fix: check the default credentials"),
        "{text}"
    );
}

/// The keys `reservations list --json` shows, with the reserver `flags`.
fn reservation_keys(lab: &Lab, flags: &[&str]) -> Vec<String> {
    let mut list = vec!["reservations", "list", "--json"];
    list.extend(flags);
    let held = lab.json(&list);
    held.as_array()
        .unwrap()
        .iter()
        .map(|r| r["key"].as_str().unwrap().to_string())
        .collect()
}
