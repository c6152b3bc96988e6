//! The binary on moto beside a real Salt master (the testkit's `SaltLab`)
//! and real minions: instances the Python runner built (only a `Name` tag)
//! whose minions' grains hold their ids. `plan` skips those ids (the master
//! caches the grains its minions send), `adopt` lists and writes the tags
//! once, plans then read them from tags after `salt-run cache.clear_grains`;
//! `--apply` without the grains, or for a minion the master has not cached,
//! is refused; conflicting evidence is refused, and a master that cannot be
//! asked is exit 4.

use std::process::Command;
use std::time::{Duration, Instant};

use conductor_testkit::logs;
use conductor_testkit::moto::MotoServer;
use conductor_testkit::salt_lab::SaltLab;
use serde_json::{json, Map, Value};

use crate::support::{stderr, Lab};

const CPID_A: &str = "16833830331552303186";
const CPID_B: &str = "27733830331552303186";
const MQ: &str = "devops-mq01.us-east-1a.test.foobar.com";
const NIFI: &str = "devops-nifi-01.clid-1.us-east-1a.test.foobar.com";
const MQ2: &str = "devops-mq02.us-east-1a.test.foobar.com";
/// The autosign grain's value the lab's master accepts.
const TOKEN: &str = "adopt-token";

/// Launches an instance with only a `Name` tag, as the Python runner left them.
fn by_hand(endpoint: &str, name: &str) {
    let script = format!(
        "import boto3\nec2 = boto3.client('ec2', endpoint_url='{endpoint}', region_name='us-east-1', aws_access_key_id='testing', aws_secret_access_key='testing')\n\
         img = ec2.describe_images(Owners=['amazon'])['Images'][0]['ImageId']\n\
         ec2.run_instances(ImageId=img, MinCount=1, MaxCount=1, Placement={{'AvailabilityZone': 'us-east-1a'}}, \
         TagSpecifications=[{{'ResourceType': 'instance', 'Tags': [{{'Key': 'Name', 'Value': '{name}'}}]}}])\n"
    );
    let o = Command::new("python3")
        .args(["-c", &script])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

/// Starts a real minion `id` whose grains are `grains` (plus the autosign
/// grain) and waits until the master has accepted it and cached its grains
/// (a minion sends them when it first compiles its pillar).
async fn minion_with_grains(lab: &SaltLab, id: &str, grains: &Value) {
    let mut g = grains.as_object().unwrap().clone();
    g.insert("conductor_autosign".into(), json!(TOKEN));
    let config: Map<String, Value> = json!({
        "id": id,
        "autosign_grains": ["conductor_autosign"],
        "grains": g,
    })
    .as_object()
    .unwrap()
    .clone();
    let log = lab.start_minion(&config);
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let cached = lab.salt_run(&["cache.grains", &format!("tgt={id}")]).await;
        if cached[id]["cpid"] == grains["cpid"] {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the master never cached {id}'s grains (cache.grains: {cached})\n{}",
            logs::tails(
                [lab.master_log().as_path(), log.as_path()],
                logs::TAIL_BYTES
            )
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

fn ids(plan: &Value) -> Vec<u64> {
    vec![
        plan["system"]["cloud_id"].as_u64().unwrap(),
        plan["system"]["group_id"].as_u64().unwrap(),
        plan["clusters"][0]["cloud_id"].as_u64().unwrap(),
        plan["clusters"][0]["group_id"].as_u64().unwrap(),
    ]
}

#[test]
fn plan_and_adopt_read_a_live_masters_grains_on_moto() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let salt = rt.block_on(SaltLab::start(&SaltLab::fixture_file_roots()));
    std::fs::write(
        salt.autosign_grains_dir().join("conductor_autosign"),
        format!("{TOKEN}\n"),
    )
    .unwrap();
    let moto = MotoServer::start();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mut lab = Lab::new(moto.endpoint(), &d.join("c"), |p| p);
    lab.grains = true;
    by_hand(&moto.endpoint(), MQ);
    by_hand(&moto.endpoint(), NIFI);
    let sys = json!({"cpid": CPID_A, "cloud.system.id": 1, "devops.system.id": 1});
    let mut nifi = sys.clone();
    nifi["cloud.nifi.cluster.id"] = json!(1);
    nifi["devops.nifi.cluster.id"] = json!(1);
    rt.block_on(async {
        tokio::join!(
            minion_with_grains(&salt, MQ, &sys),
            minion_with_grains(&salt, NIFI, &nifi)
        )
    });
    let bin = salt.bin_dir().display().to_string();
    let conf = salt.config_dir().display().to_string();
    let salt_flags = ["--salt-bin-dir", &bin, "--salt-config-dir", &conf];
    let group = |verb: &'static str, more: &[&str]| -> Vec<String> {
        let mut a: Vec<String> = ["group", verb, "group=devops", "pillarenv=test"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        a.extend(more.iter().map(|s| s.to_string()));
        a.extend(salt_flags.iter().map(|s| s.to_string()));
        a.push("--json".into());
        a
    };
    let run = |args: &[String]| {
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        lab.run(&refs, None)
    };
    let json_of = |args: &[String]| -> Value {
        let o = run(args);
        assert_eq!(
            o.status.code(),
            Some(0),
            "{args:?}: {}\nthe master's log:\n{}",
            stderr(&o),
            salt.log_tail("master.log")
        );
        serde_json::from_slice(&o.stdout).unwrap()
    };
    let plan_args = group("plan", &["system=small_test", "region=us-east-1a"]);

    let plan = json_of(&plan_args);
    assert_eq!(ids(&plan), [2, 2, 2, 2], "{plan:#}");
    let from: Vec<String> = plan["ids_from_grains"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| format!("{} {} {}", g["minion"], g["scope"], g["id"]))
        .collect();
    assert!(
        from.iter()
            .any(|f| f.contains(MQ) && f.contains("cloud.system")),
        "{from:?}"
    );

    let dry = json_of(&group("adopt", &[]));
    assert_eq!(dry["applied"], false);
    let listed = dry["instances"].as_array().unwrap();
    assert_eq!(listed.len(), 2, "{dry:#}");
    let n = listed.iter().find(|a| a["name"] == NIFI).unwrap();
    assert_eq!(n["tags"]["conductor:cloud.nifi.cluster.id"], "1");
    assert_eq!(n["tags"]["conductor:devops.nifi.cluster.id"], "1");
    assert_eq!(n["tags"]["conductor:cpid"], CPID_A);
    assert_eq!(n["tags"]["conductor:role"], "nifi");
    let applied = json_of(&group("adopt", &["--apply"]));
    assert_eq!(applied["instances"], dry["instances"]);
    let again = json_of(&group("adopt", &["--apply"]));
    assert_eq!(again["instances"], json!([]), "{again:#}");
    let status = lab.json(&[
        "group",
        "status",
        "group=devops",
        "pillarenv=test",
        "--json",
    ]);
    assert_eq!(
        status.as_array().unwrap().len(),
        2,
        "adopted instances are the group's: {status:#}"
    );

    // The master's grains cache cleared (minions stopped first, so none
    // sends its grains again): the ids now come from the tags.
    salt.stop_minion(MQ);
    salt.stop_minion(NIFI);
    rt.block_on(salt.salt_run(&["cache.clear_grains", "tgt=*"]));
    let cached = rt.block_on(salt.salt_run(&["cache.grains", "tgt=*"]));
    assert!(
        cached
            .as_object()
            .is_none_or(|m| m.values().all(|g| g.get("cpid").is_none())),
        "cleared: {cached}"
    );
    let plan = json_of(&plan_args);
    assert_eq!(ids(&plan), [2, 2, 2, 2], "{plan:#}");
    assert_eq!(plan["ids_from_grains"], json!([]));

    // An untagged mq02 whose minion the master has not cached: its ids are
    // unknown, so --apply refuses, naming it; without the grains it refuses
    // whatever the cache holds. Nothing is written either time.
    by_hand(&moto.endpoint(), MQ2);
    let o = run(&group("adopt", &["--apply"]));
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains(MQ2) && stderr(&o).contains("salt-key -a"),
        "{}",
        stderr(&o)
    );
    let o = run(&group("adopt", &["--apply", "--no-grains"]));
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("needs the Salt master's grains cache"),
        "{}",
        stderr(&o)
    );
    let dry = json_of(&group("adopt", &[]));
    assert_eq!(dry["instances"].as_array().unwrap().len(), 1, "{dry:#}");
    assert_eq!(dry["instances"][0]["name"], MQ2, "still untagged: {dry:#}");
    assert_eq!(dry["instances"][0]["from_grains"], json!([]), "{dry:#}");

    // Conflicting evidence: mq02, of another run, claims cloud.system.id 1.
    rt.block_on(minion_with_grains(
        &salt,
        MQ2,
        &json!({"cpid": CPID_B, "cloud.system.id": 1}),
    ));
    let o = run(&group("adopt", &["--apply"]));
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let e = stderr(&o);
    assert!(
        e.contains(MQ2) && (e.contains(MQ) || e.contains(NIFI)),
        "names both: {e}"
    );

    // A master that cannot be asked: exit 4, naming the switch.
    let empty = d.join("no-master");
    std::fs::create_dir_all(&empty).unwrap();
    let mut args = plan_args.clone();
    let at = args.iter().position(|a| a == &conf).unwrap();
    args[at] = empty.display().to_string();
    let o = run(&args);
    assert_eq!(o.status.code(), Some(4), "{}", stderr(&o));
    assert!(stderr(&o).contains("--no-grains"), "{}", stderr(&o));
}
