//! The binary on moto with a real Salt master cache: instances the Python
//! runner built (only a `Name` tag) whose minions' cached grains hold their
//! ids. `plan` skips those ids, `adopt` lists and writes the tags once,
//! plans then read them from tags with the cache cleared; conflicting
//! evidence is refused, and a master that cannot be asked is exit 4.

use std::path::Path;
use std::process::Command;

use conductor_testkit::moto::MotoServer;
use conductor_testkit::salt_env::SaltEnv;
use serde_json::{json, Value};

use crate::support::{stderr, Lab};

const CPID_A: &str = "16833830331552303186";
const CPID_B: &str = "27733830331552303186";
const MQ: &str = "devops-mq01.us-east-1a.test.foobar.com";
const NIFI: &str = "devops-nifi-01.clid-1.us-east-1a.test.foobar.com";
const MQ2: &str = "devops-mq02.us-east-1a.test.foobar.com";

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

/// A master config dir whose cache holds `minions` (id -> grains), written
/// with Salt's own cache API, each minion with an accepted key file.
fn master_cache(salt: &SaltEnv, d: &Path, minions: &Value) {
    let root = d.join("root");
    std::fs::create_dir_all(d.join("conf")).unwrap();
    std::fs::create_dir_all(root.join("pki/minions")).unwrap();
    std::fs::write(
        d.join("conf/master"),
        format!(
            "root_dir: {r}\ncachedir: {r}/cache\npki_dir: {r}/pki\nlog_file: {r}/master.log\n",
            r = root.display()
        ),
    )
    .unwrap();
    let script = format!(
        "import json, sys, salt.config, salt.cache\nopts = salt.config.master_config('{conf}')\n\
         c = salt.cache.Cache(opts)\nfor m, g in json.loads(sys.argv[1]).items():\n    \
         c.store('minions/' + m, 'data', {{'grains': dict(g, id=m)}})\n    open('{pki}/' + m, 'w').write('key')\n",
        conf = d.join("conf/master").display(),
        pki = root.join("pki/minions").display(),
    );
    let o = Command::new(salt.python())
        .args(["-c", &script, &minions.to_string()])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
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
fn plan_and_adopt_read_the_masters_grains_cache_on_moto() {
    let salt = SaltEnv::get();
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
    master_cache(salt, d, &json!({MQ: sys, NIFI: nifi}));
    let bin = salt.bin_dir().display().to_string();
    let conf = d.join("conf").display().to_string();
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
        assert_eq!(o.status.code(), Some(0), "{args:?}: {}", stderr(&o));
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

    // The master's cache cleared: the ids now come from the tags.
    std::fs::remove_dir_all(d.join("root/cache/minions")).unwrap();
    let plan = json_of(&plan_args);
    assert_eq!(ids(&plan), [2, 2, 2, 2], "{plan:#}");
    assert_eq!(plan["ids_from_grains"], json!([]));

    // Conflicting evidence: an untagged mq02 of another run claims cloud.system.id 1.
    by_hand(&moto.endpoint(), MQ2);
    master_cache(
        salt,
        d,
        &json!({MQ2: {"cpid": CPID_B, "cloud.system.id": 1}}),
    );
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
