//! The salt-cloud path's destroy touches one provider, proven with the real
//! Salt 3007.16 and moto: two providers in the master's `cloud.providers.d`
//! (the group's run's, us-east-1, and another account's, us-west-2) each
//! hold a VM of the same name, in moto and in salt-cloud's own cache.
//!
//! Salt's own lookup for `salt-cloud -d <name>` (`Map.get_running_by_names`,
//! what `-d` and `-m map -d` both end in) finds the name under **both**
//! providers. Conductor's destroy terminates through EC2 by the instance id
//! its tag-scoped inventory holds, deletes the minion key with the real
//! `salt-key`, and removes salt-cloud's cache entry under the group's
//! provider only: afterwards the other VM runs in moto and Salt's lookup
//! finds it, and only it.
//!
//! Salt's provider queries (`ec2.list_nodes`) are answered from salt-cloud's
//! cache of each provider rather than from EC2: the real ec2 driver cannot
//! talk to moto (it needs TLS and reads the second child of each XML
//! response, where moto puts `requestId`; see docs/salt.md).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use conductor_aws::ec2::Ec2Backend;
use conductor_core::{
    CloudBackend, Conductor, Env, FsReserver, Group, InstanceQuery, LaunchSettings, LaunchSpec,
    Layout, Options, Provisioner, Scope, Selection, StaticPillar, Zone,
};
use conductor_salt::SaltCli;
use conductor_testkit::fixtures;
use conductor_testkit::moto::{MotoServer, ACCESS_KEY_ID, SECRET_ACCESS_KEY};
use conductor_testkit::salt_env::SaltEnv;
use serde_json::Value;

/// The VM name both providers hold.
const NAME: &str = "devops-mq01.us-east-1a.test.foobar.com";
/// The run that built the group's VM: its provider is `devops_<CPID>`.
const CPID: &str = "16833830331552303186";
/// The other provider (another account's, another region).
const OTHER: &str = "other-account";

fn write(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

/// A master's config dir: `master`, `cloud` (salt-cloud's cache kept), both
/// providers; returns it.
fn salt_config(dir: &Path) -> PathBuf {
    let conf = dir.join("etc/salt");
    let root = dir.join("root");
    for d in ["pki/minions", "cache", "sock"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    write(
        &conf.join("master"),
        &format!(
            "root_dir: {r}\nlog_file: {r}/master.log\npki_dir: {r}/pki\ncachedir: {r}/cache\nsock_dir: {r}/sock\n",
            r = root.display()
        ),
    );
    write(
        &conf.join("cloud"),
        &format!(
            "cachedir: {0}/cloud-cache\nupdate_cachedir: True\nlog_file: {0}/cloud.log\n",
            dir.display()
        ),
    );
    let key = dir.join("conductor.pem");
    write(&key, "not a real key\n");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    let provider = |alias: &str, region: &str| {
        format!(
            "{alias}: {{driver: ec2, location: {region}, id: AKIDTEST, key: SECRETTEST, keyname: conductor, private_key: {}}}\n",
            key.display()
        )
    };
    write(
        &conf.join(format!("cloud.providers.d/devops_{CPID}.conf")),
        &provider(&format!("devops_{CPID}"), "us-east-1"),
    );
    write(
        &conf.join("cloud.providers.d/other.conf"),
        &provider(OTHER, "us-west-2"),
    );
    // The master knows the minion (one id, whichever VM answers to it).
    write(
        &root.join("pki/minions").join(NAME),
        "-----BEGIN PUBLIC KEY-----\n",
    );
    conf
}

/// Salt's own view, through its Python API on the config dir: `seed` caches
/// each (provider, instance id) as salt-cloud does after creating a VM;
/// `lookup` is `Map.get_running_by_names([NAME])`, the providers' queries
/// answered from salt-cloud's cache of each.
const SALT_VIEW: &str = r#"
import json, sys
import salt.config, salt.cloud, salt.utils.cloud
conf, what = sys.argv[1], sys.argv[2]
opts = salt.config.cloud_config(conf + "/cloud")
salt.utils.cloud.__opts__ = opts
if what == "seed":
    for pair in sys.argv[4:]:
        alias, iid = pair.split("=")
        salt.utils.cloud.cache_node({"name": sys.argv[3], "id": iid, "state": "running"}, alias + ":ec2", opts)
cache = salt.utils.cloud.list_cache_nodes_full(opts) or {}
m = salt.cloud.Map(opts)
def from_cache(query="list_nodes", cached=False):
    return {alias: {"ec2": nodes} for alias, nodes in cache.get("ec2", {}).items() if nodes}
m.map_providers_parallel = from_cache
found = m.get_running_by_names([sys.argv[3]])
print(json.dumps({
    "cachedir": opts["cachedir"],
    "providers": sorted(opts["providers"]),
    "cache": {alias: sorted(nodes) for alias, nodes in cache.get("ec2", {}).items()},
    "lookup": {alias: {d: {n: v.get("id") for n, v in vms.items()} for d, vms in drivers.items()}
               for alias, drivers in found.items()},
}))
"#;

fn salt_view(salt: &SaltEnv, dir: &Path, conf: &Path, args: &[String]) -> Value {
    let script = dir.join("salt_view.py");
    write(&script, SALT_VIEW);
    let mut all = vec![conf.as_os_str().to_owned()];
    all.extend(args.iter().map(|a| a.into()));
    salt.python_json(&script, &all)
}

async fn launch(ec2: &Ec2Backend, zone: &str, tags: &[(&str, &str)]) -> String {
    let mut all: std::collections::BTreeMap<String, String> = tags
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    all.insert("Name".into(), NAME.into());
    let spec = LaunchSpec {
        name: NAME.into(),
        zone: Zone::new(zone).unwrap(),
        client_token: format!("scope-{zone}"),
        tags: all,
        settings: LaunchSettings::with_image("ami-0abc"),
        user_data: None,
    };
    let r = ec2.launch(&[spec]).await.unwrap();
    r[0].outcome.as_ref().unwrap().instance_id.clone()
}

async fn live(ec2: &Ec2Backend, region: &str) -> BTreeSet<String> {
    ec2.inventory(&Scope::all(conductor_core::Region::new(region).unwrap()))
        .await
        .unwrap()
        .live()
        .map(|i| i.id.clone())
        .collect()
}

#[tokio::test]
async fn salt_cloud_destroy_touches_the_groups_provider_only() {
    let salt = SaltEnv::get();
    let moto = MotoServer::start();
    let dir = tempfile::tempdir().unwrap();
    let ec2 = Ec2Backend::builder()
        .endpoint_url(moto.endpoint())
        .static_credentials(ACCESS_KEY_ID, SECRET_ACCESS_KEY)
        .build()
        .await;
    // The group's VM (built by run CPID, tagged) and another account's VM
    // of the same name in another region (not Conductor's).
    let ours = launch(
        &ec2,
        "us-east-1a",
        &[
            ("conductor:cpid", CPID),
            ("conductor:env", "test"),
            ("conductor:group", "devops"),
            ("conductor:role", "activemq"),
        ],
    )
    .await;
    let theirs = launch(&ec2, "us-west-2a", &[]).await;
    let conf = salt_config(dir.path());
    let before = salt_view(
        salt,
        dir.path(),
        &conf,
        &[
            "seed".into(),
            NAME.into(),
            format!("devops_{CPID}={ours}"),
            format!("{OTHER}={theirs}"),
        ],
    );
    let group_provider = format!("devops_{CPID}");
    assert_eq!(
        before["providers"],
        serde_json::json!([group_provider, OTHER])
    );
    // What `salt-cloud -d NAME` would act on: the name under both providers.
    assert_eq!(
        before["lookup"][&group_provider]["ec2"][NAME],
        ours.as_str()
    );
    assert_eq!(
        before["lookup"][OTHER]["ec2"][NAME],
        theirs.as_str(),
        "{before}"
    );

    // Conductor's destroy on the salt-cloud path, with the real salt-key.
    let layout = Layout::new(dir.path().join("conductor-etc"), dir.path().join("runner"));
    let cli = SaltCli::new()
        .bin_dir(salt.bin_dir())
        .config_dir(&conf)
        .timeout(Duration::from_secs(120));
    assert_eq!(
        cli.cloud_cachedir_value().display().to_string(),
        before["cachedir"].as_str().unwrap(),
        "salt-cloud's cachedir as Salt computes it (under the master's root_dir)"
    );
    let yaml = fixtures::DEVOPS_PILLAR.replace(
        "      hooks: {pre_create: [orch.conductor_common], post_create: [orch.conductor_common]}\n",
        "",
    );
    let c = Conductor::builder()
        .cloud(Arc::new(ec2.clone()))
        .reserver(Arc::new(FsReserver::new(&layout)))
        .pillar(Arc::new(StaticPillar(
            conductor_core::Pillar::from_yaml_str(&yaml).unwrap(),
        )))
        .salt(Arc::new(cli.clone()))
        .layout(layout)
        .options(Options {
            provisioner: Provisioner::SaltCloud,
            release_grace: Duration::ZERO,
            ..Options::default()
        })
        .build()
        .unwrap();
    // No region: every region of the env (us-east-1, us-west-2) is searched.
    let q = InstanceQuery {
        group: Group::new("devops").unwrap(),
        env: Env::new("test").unwrap(),
        region: None,
        selection: Selection::Names(vec![NAME.into()]),
    };
    let d = c.destroy(&q).await.unwrap();
    assert!(d.success(), "{d:?}");
    assert_eq!(d.destroyed, [NAME]);
    assert_eq!(d.skipped_instances.len(), 1, "{d:?}");
    assert_eq!(d.skipped_instances[0].id.as_deref(), Some(theirs.as_str()));

    // EC2: ours terminated, theirs untouched.
    assert!(live(&ec2, "us-east-1").await.is_empty());
    assert_eq!(
        live(&ec2, "us-west-2").await,
        BTreeSet::from([theirs.clone()])
    );
    // Salt: the other provider's cache entry stays and is all `-d` finds now.
    let after = salt_view(salt, dir.path(), &conf, &["lookup".into(), NAME.into()]);
    assert_eq!(
        after["cache"][&group_provider],
        serde_json::json!([]),
        "{after}"
    );
    assert_eq!(after["cache"][OTHER], serde_json::json!([NAME]), "{after}");
    assert_eq!(
        after["lookup"],
        serde_json::json!({OTHER: {"ec2": {NAME: theirs}}}),
        "{after}"
    );
    // The minion key went with the instance (real salt-key -d).
    let keys = conductor_core::SaltExecutor::minion_keys(&cli)
        .await
        .unwrap();
    assert!(!keys.accepted.contains(&NAME.to_string()), "{keys:?}");
}
