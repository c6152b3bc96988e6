//! The default provisioner on Salt's real parts: `conductor group create`
//! runs the real `salt-cloud` of Salt 3007.16 with its own EC2 driver,
//! which talks to moto through the testkit's `AwsFront` (TLS, AWS's list
//! numbering and element order; see docs/testing.md). The profile has
//! `deploy: False` (an image with a baked-in minion), the one configuration
//! testable without SSH targets: salt-cloud creates and tags the VMs and
//! reports each "not deployed".

use crate::support;

use conductor_testkit::aws_front::AwsFront;
use conductor_testkit::moto::{image_in, key_pair_in, subnet_in, MotoServer};
use conductor_testkit::salt_env::SaltEnv;
use serde_json::Value;
use support::{stderr, Lab};

/// moto, the front Salt's driver reaches it through, and a lab whose pillar
/// points the group's provider at the front.
struct RealLab {
    lab: Lab,
    front: AwsFront,
    moto: MotoServer,
    // Serves the front while the test blocks on processes.
    _rt: tokio::runtime::Runtime,
    _dir: tempfile::TempDir,
}

impl RealLab {
    /// The example pillar pointed at the front, changed by `edit`; moto
    /// refuses images it does not know, as EC2 does.
    fn start(edit: impl Fn(String) -> String) -> Self {
        let moto = MotoServer::start_with_env(&[("MOTO_ENABLE_AMI_VALIDATION", "true")]);
        let rt = tokio::runtime::Runtime::new().unwrap();
        let front = rt.block_on(AwsFront::start(moto.port()));
        let dir = tempfile::tempdir().unwrap();
        let subnet = subnet_in(&moto.endpoint(), &conductor_testkit::fixtures::zone());
        key_pair_in(&moto.endpoint(), "us-east-1", "conductor-test");
        let image = image_in(&moto.endpoint(), "us-east-1");
        let provider = format!(
            "provider: {{size: t3.small, ssh_interface: private_ips, subnet_id: {}, \
             endpoint: '{}', id: testing, key: testing, keyname: conductor-test}}",
            subnet.subnet_id,
            front.endpoint_host()
        );
        let mut lab = Lab::new(moto.endpoint(), dir.path(), |p| {
            edit(p).replace(
                "provider: {size: t3.small, ssh_interface: private_ips}",
                &provider,
            )
            .replace("      hooks: {pre_create: [orch.conductor_common], post_create: [orch.conductor_common]}\n", "")
            .replace("        startup_states: [devops.conductor]\n", "        deploy: False\n")
            .replace("image: ami-0abc", &format!("image: {image}"))
        });
        lab.env = vec![(
            "REQUESTS_CA_BUNDLE".into(),
            front.ca_bundle().display().to_string(),
        )];
        // salt-cloud's config: a root of its own for its cache and pki, and its log.
        let etc = lab.config_dir();
        std::fs::create_dir_all(&etc).unwrap();
        let root = dir.path().join("salt");
        std::fs::write(
            etc.join("master"),
            format!("root_dir: {}\n", root.display()),
        )
        .unwrap();
        std::fs::write(
            etc.join("cloud"),
            format!(
                "log_file: {}\nlog_level_logfile: info\n",
                root.join("cloud.log").display()
            ),
        )
        .unwrap();
        Self {
            lab,
            front,
            moto,
            _rt: rt,
            _dir: dir,
        }
    }

    /// `group <verb> group=devops <words> <flags>` on the default
    /// provisioner (the real salt-cloud of the Salt venv), as on a master
    /// off EC2: no `AWS_REGION`, the instance metadata service not disabled.
    fn group(&self, verb: &str, words: &[&str], flags: &[&str]) -> std::process::Output {
        let bin = SaltEnv::get().bin_dir().display().to_string();
        let etc = self.lab.config_dir().display().to_string();
        let mut args = conductor_testkit::bin_lab::group_args(verb, words);
        args.extend(["--salt-bin-dir", &bin, "--salt-config-dir", &etc]);
        args.extend(flags);
        let mut c = self.lab.command(&args, None);
        c.env_remove("AWS_REGION")
            .env_remove("AWS_DEFAULT_REGION")
            .env_remove("AWS_EC2_METADATA_DISABLED");
        c.output().unwrap()
    }

    /// `group create group=devops <words>`, JSON out; asserts the instance
    /// metadata service was not asked (the region is known from `region=`).
    fn create(&self, words: &[&str]) -> std::process::Output {
        let o = self.group("create", words, &["--release-grace", "0", "--json"]);
        assert!(
            !stderr(&o).contains("IMDS"),
            "a run whose region is known does not look for it: {}",
            stderr(&o)
        );
        o
    }

    /// The JSON report of a create run, after checking its exit code.
    fn report(&self, o: &std::process::Output, code: i32) -> Value {
        assert_eq!(
            o.status.code(),
            Some(code),
            "{}\nstdout: {}\n{}",
            stderr(o),
            String::from_utf8_lossy(&o.stdout),
            self.salt_log()
        );
        serde_json::from_slice(&o.stdout).unwrap()
    }

    /// `group status --json`: every live instance of the group, as read from EC2.
    fn status(&self) -> Vec<Value> {
        let args = conductor_testkit::bin_lab::group_args("status", &["--json"]);
        self.lab.json(&args).as_array().unwrap().clone()
    }

    /// salt-cloud's log, for failure messages.
    fn salt_log(&self) -> String {
        let path = self.lab.dir.join("salt/cloud.log");
        let _ = &self.moto;
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        let tail: String = text
            .chars()
            .rev()
            .take(6000)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        format!("{}:\n{tail}", path.display())
    }
}

/// The seed's three runs at once through the real driver, then a failing
/// launch and a scoped destroy:
/// - `role=nifi`, `role=activemq count=2` and `system=small_test` started
///   together: each exits 0 with its VMs "launched, not deployed"; the 12
///   instances carry unique Names (the first tag of the driver's 0-based
///   list), their run's cpid, cluster and system ids as tags; no WARN at all
///   and no IMDS probe. salt-cloud runs once per VM, each in a cache
///   directory of its own: Salt's cloud index race (docs/salt.md) cannot hit;
/// - a system of an image EC2 does not know and one good VM: exit 1, the
///   bad VM is named and its key held until it expires (the driver's answer
///   cannot tell a refused launch from a later failure), the good one kept;
/// - `group destroy cpid=` of the `count=2` run (native terminate, then
///   salt-cloud's cache entries of exactly those VMs removed) terminates
///   exactly its two instances.
#[test]
fn the_seeds_runs_a_failing_launch_and_destroy_through_the_real_salt_cloud_driver() {
    let r = RealLab::start(|p| {
        p.replace(
            "      systems:",
            "        broken: {basename: devops-brokenXX.REGION.ENV, nodes: 1, image: ami-0badbadbadbad0000}\n      systems:",
        )
        .replace(
            "        small_test: [{role: nifi}, {role: activemq, count: 2}]\n",
            "        small_test: [{role: nifi}, {role: activemq, count: 2}]\n        mixed: [{role: broken}, {role: activemq, count: 1}]\n",
        )
    });
    let seeds: [&[&str]; 3] = [
        &["role=nifi"],
        &["role=activemq", "count=2"],
        &["system=small_test"],
    ];
    let outputs: Vec<(String, std::process::Output)> = std::thread::scope(|scope| {
        let runs: Vec<_> = seeds
            .iter()
            .map(|words| {
                let r = &r;
                scope.spawn(move || (words.join(" "), r.create(words)))
            })
            .collect();
        runs.into_iter().map(|run| run.join().unwrap()).collect()
    });
    let mut by_cpid = std::collections::BTreeMap::new();
    let mut launched = Vec::new();
    let mut count2_cpid = String::new();
    for (words, o) in outputs {
        let report = r.report(&o, 0);
        assert!(
            !stderr(&o).contains("WARN"),
            "{words}: a run that succeeds warns of nothing: {}",
            stderr(&o)
        );
        let names = strings(&report["result"]["launched"]);
        assert_eq!(
            strings(&report["result"]["not_deployed"]),
            names,
            "{report}"
        );
        let cpid = report["cpid"].as_str().unwrap().to_string();
        if words.contains("count=2") {
            count2_cpid = cpid.clone();
        }
        launched.extend(names.clone());
        by_cpid.insert(cpid, (words, names));
    }
    assert_eq!(by_cpid.len(), 3, "one cpid per run: {by_cpid:?}");
    // Each VM's salt-cloud ran in a cache dir of its own, removed after it;
    // the shared index was never written.
    let cache = r.lab.dir.join("salt/var/cache/salt/cloud");
    let private: Vec<_> = std::fs::read_dir(cache.join("conductor"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert!(private.is_empty(), "{private:?}");
    assert!(!cache.join("index.p").exists());
    assert!(cache.join("requested").is_dir() && cache.join("active").is_dir());
    let unique: std::collections::BTreeSet<&String> = launched.iter().collect();
    assert_eq!((launched.len(), unique.len()), (12, 12), "{launched:?}");

    let rows = r.status();
    assert_eq!(rows.len(), 12, "{rows:?}");
    let mut clusters = std::collections::BTreeSet::new();
    for row in &rows {
        let cpid = row["cpid"].as_str().unwrap_or_else(|| panic!("{row}"));
        let (words, names) = &by_cpid[cpid];
        assert!(
            names.contains(&row["name"].as_str().unwrap().to_string()),
            "{row} in {names:?}"
        );
        let systems = row["system_ids"].as_object().unwrap();
        assert_eq!(
            !systems.is_empty(),
            words.starts_with("system="),
            "{words}: {row}"
        );
        let cluster = row["cluster_ids"].as_object().unwrap();
        assert_eq!(!cluster.is_empty(), row["role"] == "nifi", "{row}");
        if let Some(id) = cluster.values().next() {
            clusters.insert((cpid.to_string(), id.to_string()));
        }
    }
    let ids: std::collections::BTreeSet<_> = clusters.iter().map(|(_, id)| id).collect();
    assert_eq!(
        (clusters.len(), ids.len()),
        (2, 2),
        "a cluster id per nifi cluster: {clusters:?}"
    );
    assert!(r.front.requests() > 0);

    let report = r.report(&r.create(&["system=mixed"]), 1);
    let broken = "devops-broken01.us-east-1a.test.foobar.com";
    let failed = report["result"]["failed"].as_array().unwrap();
    assert_eq!(failed.len(), 1, "{report}");
    assert_eq!(failed[0]["name"], broken);
    assert!(
        failed[0]["error"].as_str().unwrap().contains("may exist"),
        "{report}"
    );
    let kept = strings(&report["result"]["launched"]);
    assert_eq!(kept.len(), 1, "the good VM is launched and kept: {report}");
    // Held: the name of the VM that may exist, and the system id it shares
    // with the good VM (whose instance carries it visibly); not the good
    // VM's name.
    let held: Vec<String> = r
        .lab
        .reservation_files()
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    let system = |scope: &str| {
        held.iter()
            .any(|f| f.starts_with(&format!("test_{scope}.system.id.")))
    };
    assert!(held.contains(&format!("test_{broken}")), "{held:?}");
    assert!(system("devops") && system("cloud"), "{held:?}");
    assert_eq!(held.len(), 3, "{held:?}");
    assert_eq!(r.status().len(), 13);

    let word = format!("cpid={count2_cpid}");
    let o = r.group("destroy", &[&word], &["--yes", "--json"]);
    assert_eq!(o.status.code(), Some(0), "{}\n{}", stderr(&o), r.salt_log());
    let d: Value = serde_json::from_slice(&o.stdout).unwrap();
    let mut gone = strings(&d["destroyed"]);
    gone.sort();
    let mut want = by_cpid[&count2_cpid].1.clone();
    want.sort();
    assert_eq!(gone, want, "{d}");
    let left: Vec<String> = r
        .status()
        .iter()
        .map(|row| row["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(left.len(), 11, "{left:?}");
    assert!(want.iter().all(|n| !left.contains(n)), "{left:?}");
}

/// The strings of a JSON array.
fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap_or_else(|| panic!("not an array: {v}"))
        .iter()
        .map(|n| n.as_str().unwrap().to_string())
        .collect()
}
