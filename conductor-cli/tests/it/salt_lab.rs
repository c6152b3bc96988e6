//! End to end with a real Salt master and real minions (no mocks on the Salt
//! side): the seed's three parallel runs on moto, every instance running a
//! real `salt-minion` configured from its user data (`MinionCloud`), keys
//! accepted by the runs' autosign tokens, startup states and orchestration
//! hooks run through the master, and the proof the seed ends with:
//! `salt '*' grains.item cpid cloud.nifi.cluster.id devops.nifi.cluster.id
//! cloud.system.id devops.system.id` on the master.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use conductor_aws::ec2::Ec2Backend;
use conductor_core::{
    CloudBackend, Conductor, CreateReport, Env, Group, InstanceQuery, Layout, Selection,
};
use conductor_core::{Options, Provisioner};
use conductor_salt::SaltCli;
use conductor_testkit::fixtures;
use conductor_testkit::harness::Harness;
use conductor_testkit::logs::{state_failures, tail, TAIL_BYTES};
use conductor_testkit::minion_cloud::MinionCloud;
use conductor_testkit::moto::{subnet_in, MotoServer, ACCESS_KEY_ID, SECRET_ACCESS_KEY};
use conductor_testkit::salt_lab::{processes_under, SaltLab};
use serde_json::{json, Value};

/// The grains the seed checks on the master.
const GRAINS: [&str; 5] = [
    "cpid",
    "cloud.nifi.cluster.id",
    "devops.nifi.cluster.id",
    "cloud.system.id",
    "devops.system.id",
];

/// moto, a Salt lab, and a harness with the devops pillar with a subnet
/// moto knows.
struct World {
    moto: MotoServer,
    ec2: Ec2Backend,
    lab: Arc<SaltLab>,
    cloud: Arc<MinionCloud>,
    h: Harness,
}

impl World {
    async fn start() -> World {
        let moto = MotoServer::start();
        let ec2 = Ec2Backend::builder()
            .region("us-east-1")
            .endpoint_url(moto.endpoint())
            .static_credentials(ACCESS_KEY_ID, SECRET_ACCESS_KEY)
            .max_attempts(3)
            .build()
            .await;
        let subnet = subnet_in(&moto.endpoint(), &fixtures::zone());
        let yaml = fixtures::DEVOPS_PILLAR.replace(
            "subnet_id: subnet-1",
            &format!("subnet_id: {}", subnet.subnet_id),
        );
        let pillar = conductor_core::Pillar::from_yaml_str(&yaml).unwrap();
        let lab = Arc::new(SaltLab::start(&SaltLab::fixture_file_roots()).await);
        let cloud = Arc::new(MinionCloud::new(Arc::new(ec2.clone()), lab.clone()));
        let h = Harness::new()
            .with_pillar(pillar)
            // Cloud files go to the master's config dir, where salt-cloud reads them.
            .with_layout(|d| Layout::new(lab.config_dir(), d.join("runner")))
            .with_fs_reserver()
            .with_options(|o| {
                o.backoff_base = Duration::from_millis(20);
                o.backoff_max = Duration::from_millis(500);
                o.max_attempts = 40;
                o.autosign_grains_dir = Some(lab.autosign_grains_dir());
            });
        World {
            moto,
            ec2,
            lab,
            cloud,
            h,
        }
    }

    fn conductor(&self, minion_timeout: Duration) -> Conductor {
        self.conductor_with(Provisioner::Ec2, minion_timeout)
    }

    fn conductor_with(&self, provisioner: Provisioner, minion_timeout: Duration) -> Conductor {
        // The stand-in salt-cloud launches in moto and starts minions in the lab.
        let salt = SaltCli::new()
            .bin_dir(self.lab.bin_dir())
            .config_dir(self.lab.config_dir())
            .timeout(Duration::from_secs(180))
            .env("AWS_ENDPOINT_URL", self.moto.endpoint())
            .env("AWS_ACCESS_KEY_ID", ACCESS_KEY_ID)
            .env("AWS_SECRET_ACCESS_KEY", SECRET_ACCESS_KEY)
            .env("AWS_DEFAULT_REGION", "us-east-1")
            .env(
                "CONDUCTOR_SALT_LAB",
                self.lab.info_file().display().to_string(),
            );
        self.h
            .builder_on(self.cloud.clone())
            .salt(Arc::new(salt))
            .options(Options {
                provisioner,
                minion_timeout,
                ..self.h.opts.clone()
            })
            .build()
            .unwrap()
    }

    /// The tokens listed in the master's autosign file now.
    fn listed_tokens(&self) -> Vec<String> {
        let path = self.lab.autosign_grains_dir().join("conductor_autosign");
        std::fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(str::to_string)
            .collect()
    }

    /// Names of the live instances moto holds.
    async fn live_names(&self) -> BTreeSet<String> {
        let scope = conductor_core::Scope {
            region: fixtures::zone().region(),
            select: vec![],
        };
        self.ec2
            .inventory(&scope)
            .await
            .unwrap()
            .live()
            .filter_map(|i| i.name().map(str::to_string))
            .collect()
    }
}

/// A grain as text: strings as they are, numbers printed, absent as "".
fn text(v: Option<&Value>) -> String {
    match v {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Null) | None => String::new(),
        Some(other) => other.to_string(),
    }
}

/// The files of `report.logs` whose name starts with `prefix`.
fn logs<'a>(report: &'a CreateReport, prefix: &str) -> Vec<&'a Path> {
    report
        .logs
        .iter()
        .map(|p| p.as_path())
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with(prefix))
        })
        .collect()
}

/// The end of each of `paths`, for a failure message.
fn tails(paths: &[&Path]) -> String {
    conductor_testkit::logs::tails(paths.iter().copied(), TAIL_BYTES)
}

fn read_json(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// Peak resident memory of this test process and of the lab's Salt processes, in MB.
fn rss_mb(lab: &SaltLab) -> (u64, u64) {
    let status_kb = |pid: &str, key: &str| -> u64 {
        std::fs::read_to_string(format!("/proc/{pid}/status"))
            .unwrap_or_default()
            .lines()
            .find(|l| l.starts_with(key))
            .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
            .unwrap_or(0)
    };
    let me = status_kb("self", "VmHWM:");
    let salt: u64 = processes_under(lab.root())
        .iter()
        .map(|pid| status_kb(&pid.to_string(), "VmRSS:"))
        .sum();
    (me / 1024, salt / 1024)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_seeds_three_parallel_runs_join_a_real_master_and_destroy_removes_one() {
    let started = Instant::now();
    let w = World::start().await;

    // The seed's three commands, started at the same time.
    let mut set = tokio::task::JoinSet::new();
    for req in fixtures::seed_requests() {
        let c = w.conductor(Duration::from_secs(180));
        set.spawn(async move { c.create(&req).await });
    }
    let mut reports = Vec::new();
    while let Some(r) = set.join_next().await {
        let r = r.unwrap().unwrap();
        assert!(
            r.success(),
            "run failed: {:?} {:?}\n{}\nmaster log:\n{}",
            r.minions_not_ready,
            r.failed,
            state_failures(&r.state_failures),
            w.lab.log_tail("master.log")
        );
        reports.push(r);
    }
    let runs_done = started.elapsed();
    let names: Vec<String> = reports.iter().flat_map(|r| r.launched.clone()).collect();
    let unique: BTreeSet<&String> = names.iter().collect();
    assert_eq!(names.len(), 12, "{names:?}");
    assert_eq!(unique.len(), 12, "no two instances share a name");

    // Every new minion is accepted, and no run's token is still listed.
    let accepted: BTreeSet<String> = w.lab.accepted().await.into_iter().collect();
    for n in &names {
        assert!(accepted.contains(n), "{n} accepted: {accepted:?}");
    }
    assert!(w.lab.pending().await.is_empty());
    assert!(
        w.listed_tokens().is_empty(),
        "tokens removed after bootstrap"
    );

    for r in &reports {
        // The startup state ran on each minion of the run: Salt's JSON in its log.
        let state_logs = logs(r, "state_run-DEVOPS_conductor");
        assert_eq!(state_logs.len(), 1, "{:?}\n{}", r.logs, tails(&state_logs));
        let out = read_json(state_logs[0]);
        for n in &r.launched {
            let states = out[n].as_object().unwrap_or_else(|| panic!("{n} in {out}"));
            assert!(
                states
                    .values()
                    .all(|s| s["result"] == json!(true) && s["comment"].is_string()),
                "{n}: {states:?}"
            );
            assert!(states.keys().any(|k| k.contains("conductor_startup")));
        }
        // The orchestration hooks ran on the master (pre and post create).
        let orch = logs(r, "orch_state_run-orch.conductor_common");
        assert_eq!(orch.len(), 2, "{:?}\n{}", r.logs, tails(&orch));
        for o in orch {
            assert!(
                read_json(o).to_string().contains("conductor_common"),
                "{}",
                tail(o, TAIL_BYTES)
            );
        }
    }

    // The seed's proof, as the master reports it.
    let mut args = vec!["*", "grains.item"];
    args.extend(GRAINS);
    let table = w.lab.salt(&args).await;
    let table = table.as_object().expect("grains.item returns an object");
    assert_eq!(
        table.keys().collect::<BTreeSet<_>>(),
        unique,
        "exactly the new minions answer"
    );
    let mut clusters: BTreeMap<String, BTreeSet<(String, String)>> = BTreeMap::new();
    for r in &reports {
        let system_run = r.plan.system.is_some();
        for i in &r.plan.instances {
            let g = &table[&i.name];
            assert_eq!(text(g.get("cpid")), r.plan.cpid.to_string(), "{}", i.name);
            for grain in GRAINS {
                assert_eq!(
                    text(g.get(grain)),
                    text(i.grains.get(grain)),
                    "{} grain {grain}",
                    i.name
                );
            }
            let has_system = !text(g.get("devops.system.id")).is_empty()
                && !text(g.get("cloud.system.id")).is_empty();
            assert_eq!(
                has_system, system_run,
                "{}: system ids only on the system run",
                i.name
            );
            if i.role.as_str() == "nifi" {
                clusters
                    .entry(r.plan.cpid.to_string())
                    .or_default()
                    .insert((
                        text(g.get("cloud.nifi.cluster.id")),
                        text(g.get("devops.nifi.cluster.id")),
                    ));
            }
        }
    }
    assert_eq!(clusters.len(), 2, "two nifi clusters: {clusters:?}");
    let ids: Vec<&(String, String)> = clusters
        .values()
        .map(|members| {
            assert_eq!(members.len(), 1, "one cluster shares its ids: {members:?}");
            members.iter().next().unwrap()
        })
        .collect();
    assert!(!ids[0].0.is_empty() && !ids[0].1.is_empty());
    assert_ne!(ids[0].0, ids[1].0, "the clusters' cloud ids differ");
    assert_ne!(ids[0].1, ids[1].1, "the clusters' devops ids differ");

    // Memory with all twelve minions up (RSS summed over the lab's processes,
    // so pages shared between them count more than once).
    let (me, salt) = rss_mb(&w.lab);
    eprintln!(
        "salt_lab: three runs done in {runs_done:.1?}; peak RSS of the test process {me} MB; Salt master + {} minions {salt} MB",
        w.lab.minions().len()
    );

    // status --ping: every running instance's minion answers the real master.
    let all = InstanceQuery {
        group: Group::new("devops").unwrap(),
        env: Env::new("test").unwrap(),
        region: Some(fixtures::zone().region()),
        selection: Selection::All,
    };
    let rows = w
        .conductor(Duration::from_secs(60))
        .status_pinged(&all)
        .await
        .unwrap();
    assert_eq!(rows.len(), w.lab.minions().len(), "{rows:?}");
    for r in &rows {
        assert_eq!(r.answers, Some(true), "{} answers: {rows:?}", r.name);
    }

    // destroy by cpid: the run's instances go, their minions stop, their keys
    // are deleted; the other runs' minions still answer.
    let victim = reports
        .iter()
        .find(|r| r.plan.system.is_none() && !r.plan.clusters.is_empty())
        .expect("the role=nifi run");
    let q = InstanceQuery {
        group: Group::new("devops").unwrap(),
        env: Env::new("test").unwrap(),
        region: Some(fixtures::zone().region()),
        selection: Selection::Cpid(victim.plan.cpid),
    };
    let d = w
        .conductor(Duration::from_secs(60))
        .destroy(&q)
        .await
        .unwrap();
    assert!(
        d.success(),
        "{d:?}\n{}\n{}",
        state_failures(&d.state_failures),
        w.lab.log_tail("master.log")
    );
    let gone: BTreeSet<String> = victim.launched.iter().cloned().collect();
    assert_eq!(d.destroyed.iter().cloned().collect::<BTreeSet<_>>(), gone);
    let live = w.live_names().await;
    assert!(live.is_disjoint(&gone), "terminated in EC2: {live:?}");
    let running: BTreeSet<String> = w.lab.minions().into_iter().collect();
    assert!(running.is_disjoint(&gone), "minions stopped: {running:?}");
    let keys: BTreeSet<String> = w.lab.accepted().await.into_iter().collect();
    assert!(keys.is_disjoint(&gone), "keys deleted: {keys:?}");
    let others: BTreeSet<String> = names
        .iter()
        .filter(|n| !gone.contains(*n))
        .cloned()
        .collect();
    let pong = w.lab.salt(&["*", "test.ping"]).await;
    let answered: BTreeSet<String> = pong
        .as_object()
        .unwrap()
        .iter()
        .filter(|(_, v)| **v == json!(true))
        .map(|(k, _)| k.clone())
        .collect();
    assert_eq!(answered, others, "the other runs' minions still answer");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_wrong_token_stays_pending_and_a_failing_startup_state_fails_the_run() {
    let w = World::start().await;
    let c = w.conductor(Duration::from_secs(45));
    let plan = c
        .plan(&fixtures::role_request("activemq", Some(3)))
        .await
        .unwrap();
    let names: Vec<String> = plan.instances.iter().map(|i| i.name.clone()).collect();
    let (intruder, failing, fine) = (&names[0], &names[1], &names[2]);
    let grain = |k: &str, v: Value| {
        let mut m = serde_json::Map::new();
        m.insert(k.into(), v);
        m
    };
    w.cloud.override_grains(
        intruder,
        grain("conductor_autosign", json!("not-the-run-token")),
    );
    w.cloud
        .override_grains(failing, grain("lab_fail_startup", json!(true)));

    let r = c
        .create(&fixtures::role_request("activemq", Some(3)))
        .await
        .unwrap();
    assert_eq!(r.launched, names, "the plan did not change");
    assert!(!r.success(), "exit 1");

    // The intruder is named and stays unaccepted.
    assert_eq!(
        r.minions_not_ready
            .iter()
            .map(|(n, _)| n)
            .collect::<Vec<_>>(),
        [intruder]
    );
    assert!(
        r.minions_not_ready[0].1.contains("pending"),
        "{r:?}\n{}",
        state_failures(&r.state_failures)
    );
    assert_eq!(w.lab.pending().await, std::slice::from_ref(intruder));
    let accepted = w.lab.accepted().await;
    assert!(!accepted.contains(intruder));
    assert!(accepted.contains(failing) && accepted.contains(fine));
    assert!(w.listed_tokens().is_empty(), "the token is gone");

    // The failing startup state is named with its minion and log.
    assert!(
        !r.state_failures.is_empty(),
        "{r:?}\nmaster log:\n{}",
        w.lab.log_tail("master.log")
    );
    let shown = state_failures(&r.state_failures);
    for f in &r.state_failures {
        assert_eq!(&f.minion, failing, "{shown}");
        let log = f.log.as_ref().expect("the failure names its log");
        let out = read_json(log);
        assert!(
            out[failing].to_string().contains("lab_fail_startup"),
            "{shown}"
        );
        assert!(
            out[fine].is_object(),
            "the fine minion ran its state too: {shown}"
        );
    }
    // Every instance is kept.
    let live = w.live_names().await;
    for n in &names {
        assert!(live.contains(n), "{n} kept");
    }
    assert_eq!(w.lab.minions().len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_salt_cloud_path_starts_minions_and_destroy_removes_them() {
    let w = World::start().await;
    let c = w.conductor_with(Provisioner::SaltCloud, Duration::from_secs(90));
    let r = c
        .create(&fixtures::role_request("activemq", Some(2)))
        .await
        .unwrap();
    assert!(
        r.success(),
        "{r:?}\n{}\n{}",
        state_failures(&r.state_failures),
        w.lab.log_tail("master.log")
    );
    assert_eq!(r.launched.len(), 2);
    // salt-cloud put the keys on the master: no token was listed for them.
    let accepted = w.lab.accepted().await;
    for n in &r.launched {
        assert!(accepted.contains(n), "{n}: {accepted:?}");
    }
    let table = w.lab.salt(&["*", "grains.item", "cpid"]).await;
    for i in &r.plan.instances {
        assert_eq!(text(table[&i.name].get("cpid")), r.plan.cpid.to_string());
    }
    let state_logs = logs(&r, "state_run-DEVOPS_conductor");
    assert_eq!(state_logs.len(), 1, "{:?}\n{}", r.logs, tails(&state_logs));
    let out = read_json(state_logs[0]);
    for n in &r.launched {
        assert!(out[n].is_object(), "startup state ran on {n}: {out}");
    }

    let q = InstanceQuery {
        group: Group::new("devops").unwrap(),
        env: Env::new("test").unwrap(),
        region: Some(fixtures::zone().region()),
        selection: Selection::Cpid(r.plan.cpid),
    };
    let d = w
        .conductor_with(Provisioner::SaltCloud, Duration::from_secs(30))
        .destroy(&q)
        .await
        .unwrap();
    assert!(
        d.success(),
        "{d:?}\n{}\n{}",
        state_failures(&d.state_failures),
        w.lab.log_tail("master.log")
    );
    let gone: BTreeSet<String> = r.launched.iter().cloned().collect();
    assert!(w.live_names().await.is_disjoint(&gone));
    let keys: BTreeSet<String> = w.lab.accepted().await.into_iter().collect();
    assert!(keys.is_disjoint(&gone), "keys deleted: {keys:?}");
    assert!(
        w.lab.detached_minions().is_empty(),
        "the stand-in's minions stopped"
    );
}
