//! The seed document's scenarios, end to end through `Conductor` with the
//! testkit's fakes and both reservers.

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::PermissionsExt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use conductor_core::MemReserver;
use conductor_core::Options;
use conductor_core::StaticPillar;
use conductor_core::{
    Conductor, Cpid, FsReserver, Observer, Progress, Provisioner, Reserver, Step,
};
use conductor_testkit::fake_salt::SaltCall;
use conductor_testkit::fixtures;
use conductor_testkit::harness::{master_layout, Harness};
use conductor_testkit::{FakeCloud, FakeSalt};

struct World {
    h: Harness,
    cloud: Arc<FakeCloud>,
    salt: Arc<FakeSalt>,
}

impl World {
    fn new() -> Self {
        let h = Harness::new().with_layout(master_layout).with_options(|o| {
            o.backoff_base = Duration::from_millis(5);
            o.backoff_max = Duration::from_millis(50);
            o.max_attempts = 30;
            o.visible_timeout = Duration::from_secs(5);
        });
        let salt = Arc::new(FakeSalt::with_cloud(h.cloud.clone(), fixtures::zone()));
        Self {
            cloud: h.cloud.clone(),
            salt: salt.clone(),
            h: h.with_salt(salt),
        }
    }

    fn conductor(
        &self,
        pillar: conductor_core::Pillar,
        reserver: Arc<dyn Reserver>,
        provisioner: Provisioner,
    ) -> Conductor {
        self.h
            .builder()
            .pillar(Arc::new(StaticPillar(pillar)))
            .reserver(reserver)
            .options(Options {
                provisioner,
                ..self.h.opts.clone()
            })
            .build()
            .unwrap()
    }

    fn fs(&self) -> Arc<dyn Reserver> {
        Arc::new(FsReserver::new(&self.h.layout))
    }

    fn names(&self) -> BTreeSet<String> {
        self.cloud
            .live_instances()
            .iter()
            .filter_map(|i| i.name().map(str::to_string))
            .collect()
    }

    fn reservation_files(&self) -> usize {
        [
            self.h.layout.reserved_names_dir(),
            self.h.layout.reserved_ids_dir(),
        ]
        .iter()
        .map(|d| std::fs::read_dir(d).map(|e| e.count()).unwrap_or(0))
        .sum()
    }
}

fn three_nodes() -> conductor_core::Pillar {
    conductor_core::Pillar::from_yaml_str(
        &fixtures::DEVOPS_PILLAR.replace("nodes: 2, size: t3.medium", "nodes: 3, size: t3.medium"),
    )
    .unwrap()
}

#[tokio::test]
async fn existing_mq01_mq02_and_three_nodes_give_mq03_to_mq05() {
    for provisioner in [Provisioner::Ec2, Provisioner::SaltCloud] {
        let w = World::new();
        for n in [
            "devops-mq01.us-east-1a.test.foobar.com",
            "devops-mq02.us-east-1a.test.foobar.com",
        ] {
            w.cloud.add_instance(n, &fixtures::zone(), &[]);
        }
        let c = w.conductor(three_nodes(), w.fs(), provisioner);
        let report = c
            .create(&fixtures::role_request("activemq", None))
            .await
            .unwrap();
        assert!(report.success(), "{report:?}");
        assert_eq!(
            report.launched,
            ["03", "04", "05"]
                .map(|i| format!("devops-mq{i}.us-east-1a.test.foobar.com"))
                .to_vec(),
            "{provisioner:?}"
        );
        let inst = w.cloud.live_instances();
        let mq03 = inst
            .iter()
            .find(|i| i.name() == Some("devops-mq03.us-east-1a.test.foobar.com"))
            .unwrap();
        let cpid = report.plan.cpid.to_string();
        for (k, v) in [
            ("conductor:cpid", cpid.as_str()),
            ("conductor:env", "test"),
            ("conductor:group", "devops"),
            ("conductor:role", "activemq"),
        ] {
            assert_eq!(mq03.tag(k), Some(v), "{k} on mq03 ({provisioner:?})");
        }
        assert_eq!(
            w.reservation_files(),
            0,
            "reservation directories are empty afterwards"
        );
    }
}

#[tokio::test]
async fn the_seeds_three_simultaneous_runs() {
    for fs in [false, true] {
        let w = World::new();
        let reserver: Arc<dyn Reserver> = if fs {
            w.fs()
        } else {
            Arc::new(MemReserver::new())
        };
        let mut set = tokio::task::JoinSet::new();
        for req in fixtures::seed_requests() {
            let c = w.conductor(
                fixtures::devops_pillar(),
                reserver.clone(),
                Provisioner::Ec2,
            );
            set.spawn(async move { c.create(&req).await });
        }
        let mut reports = Vec::new();
        while let Some(r) = set.join_next().await {
            let r = r.unwrap().unwrap();
            assert!(r.success(), "{r:?}");
            reports.push(r);
        }
        let mut expected: BTreeSet<String> = (1..=4)
            .map(|i| format!("devops-mq{i:02}.us-east-1a.test.foobar.com"))
            .collect();
        for clid in [1, 2] {
            for m in ["nifi-01", "nifi-02", "nifigr-01", "nifi-dummy-01"] {
                expected.insert(format!("devops-{m}.clid-{clid}.us-east-1a.test.foobar.com"));
            }
        }
        assert_eq!(w.names(), expected, "reserver fs={fs}");

        // Each cluster's members share both cluster ids; the two clusters differ.
        let mut clusters: BTreeMap<String, BTreeSet<(String, String)>> = BTreeMap::new();
        for i in w.cloud.live_instances() {
            if let Some(g) = i.tag("conductor:devops.nifi.cluster.id") {
                let cloud = i
                    .tag("conductor:cloud.nifi.cluster.id")
                    .unwrap()
                    .to_string();
                clusters
                    .entry(i.tag("conductor:cpid").unwrap().to_string())
                    .or_default()
                    .insert((g.into(), cloud));
                assert!(i.name().unwrap().contains(&format!(".clid-{g}.")));
            }
        }
        let ids: BTreeSet<_> = clusters
            .values()
            .map(|s| {
                assert_eq!(s.len(), 1, "one cluster per run: {s:?}");
                s.iter().next().unwrap().clone()
            })
            .collect();
        assert_eq!(ids.len(), 2, "two distinct clusters: {ids:?}");
        let group_ids: BTreeSet<&str> = ids.iter().map(|(g, _)| g.as_str()).collect();
        assert_eq!(group_ids, BTreeSet::from(["1", "2"]));

        // Only the system run's instances carry system ids: 1 in both scopes.
        let system = reports.iter().find(|r| r.plan.system.is_some()).unwrap();
        assert_eq!(system.plan.instances.len(), 6);
        for i in w.cloud.live_instances() {
            let in_system = i.tag("conductor:cpid") == Some(system.plan.cpid.to_string().as_str());
            assert_eq!(
                i.tag("conductor:devops.system.id"),
                in_system.then_some("1"),
                "{:?}",
                i.name()
            );
            assert_eq!(i.tag("conductor:cloud.system.id"), in_system.then_some("1"));
        }
        if fs {
            assert_eq!(
                w.reservation_files(),
                0,
                "reservation directories are empty afterwards"
            );
        } else {
            assert!(reserver.list(None).await.unwrap().is_empty());
        }
    }
}

#[tokio::test]
async fn a_run_writes_its_files_and_logs() {
    let w = World::new();
    let c = w.conductor(fixtures::devops_pillar(), w.fs(), Provisioner::SaltCloud);
    let report = c
        .create(&fixtures::system_request("small_test"))
        .await
        .unwrap();
    let files = report.plan.files.clone().unwrap();
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    // The run removed its provider file from the config dir when it ended;
    // the copy it keeps beside its map is as private.
    assert!(!files.provider.exists(), "removed when the run ended");
    let group = conductor_core::Group::new("devops").unwrap();
    assert_eq!(
        mode(&c.layout().provider_copy(&group, report.plan.cpid)),
        0o600,
        "provider may hold credentials"
    );
    let map: serde_yaml::Value =
        serde_yaml::from_str(&std::fs::read_to_string(&files.map).unwrap()).unwrap();
    let id = format!("devops_{}", report.plan.cpid);
    assert_eq!(map[id.as_str()].as_sequence().unwrap().len(), 6);
    let cpid = report.plan.cpid.to_string();
    let logs: Vec<String> = report
        .logs
        .iter()
        .map(|p| p.display().to_string())
        .collect();
    assert!(
        logs.iter().any(|l| l.contains(&format!(
            "cloud_runs/{cpid}/cloud_run-conductor._group-create_"
        ))),
        "{logs:?}"
    );
    assert!(
        logs.iter()
            .any(|l| l.contains(&format!("state_runs/{cpid}/state_run-DEVOPS_conductor._"))),
        "{logs:?}"
    );
    assert_eq!(
        logs.iter()
            .filter(|l| l.contains("orch_state_run-orch.conductor_common._"))
            .count(),
        2,
        "{logs:?}"
    );
    // Startup states ran on exactly the new minions.
    let applied: Vec<_> = w
        .salt
        .calls()
        .into_iter()
        .filter_map(|c| match c {
            SaltCall::StateApply { targets, sls, .. } => Some((targets, sls)),
            _ => None,
        })
        .collect();
    assert_eq!(applied.len(), 1);
    assert_eq!(
        applied[0].0.iter().collect::<BTreeSet<_>>(),
        report.launched.iter().collect::<BTreeSet<_>>()
    );
    assert_eq!(applied[0].1, vec!["devops.conductor".to_string()]);
}

/// The progress a run reports, in order.
#[derive(Debug, Default)]
struct Seen(Mutex<Vec<Progress>>);

impl Observer for Seen {
    fn step(&self, _cpid: Cpid, _step: Step) {}
    fn progress(&self, _cpid: Cpid, progress: &Progress) {
        self.0.lock().unwrap().push(progress.clone());
    }
}

#[tokio::test]
async fn a_run_reports_how_far_each_phase_came() {
    let w = World::new();
    let seen = Arc::new(Seen::default());
    let c =
        w.h.builder()
            .pillar(Arc::new(StaticPillar(fixtures::devops_pillar())))
            .reserver(w.fs())
            .observer(seen.clone())
            .build()
            .unwrap();
    let report = c
        .create(&fixtures::role_request("activemq", None))
        .await
        .unwrap();
    assert!(report.success(), "{report:?}");
    let hook = |which: &str| Progress::Hook {
        which: which.into(),
        sls: "orch.conductor_common".into(),
    };
    assert_eq!(
        *seen.0.lock().unwrap(),
        [
            Progress::Reserved {
                instances: 2,
                attempts: 1
            },
            hook("pre_create"),
            Progress::Launching { done: 0, total: 2 },
            Progress::Launching { done: 2, total: 2 },
            Progress::Visible { seen: 0, total: 2 },
            Progress::Visible { seen: 2, total: 2 },
            Progress::Minions {
                answered: 2,
                total: 2,
                waiting: vec![]
            },
            Progress::States { done: 0, total: 2 },
            Progress::States { done: 2, total: 2 },
            hook("post_create"),
        ]
    );
}

#[tokio::test]
async fn a_failing_startup_state_is_reported_and_keeps_the_instances() {
    let w = World::new();
    w.salt
        .fail_states_on("devops-mq02.us-east-1a.test.foobar.com");
    let c = w.conductor(fixtures::devops_pillar(), w.fs(), Provisioner::Ec2);
    let report = c
        .create(&fixtures::role_request("activemq", None))
        .await
        .unwrap();
    assert!(!report.success());
    assert_eq!(report.state_failures.len(), 1);
    assert_eq!(
        report.state_failures[0].minion,
        "devops-mq02.us-east-1a.test.foobar.com"
    );
    let log = report.state_failures[0]
        .log
        .clone()
        .expect("the failure names its log");
    assert!(
        log.to_string_lossy()
            .contains("state_run-DEVOPS_conductor._")
            && log.exists(),
        "{log:?}"
    );
    assert_eq!(
        w.names().len(),
        2,
        "successful and failed-state instances are kept"
    );
    assert_eq!(w.reservation_files(), 0);
}

#[tokio::test]
async fn a_failed_launch_frees_its_name_only_when_definite() {
    let w = World::new();
    w.cloud
        .fail_launch_of("devops-mq01.us-east-1a.test.foobar.com", true);
    w.cloud
        .fail_launch_of("devops-mq02.us-east-1a.test.foobar.com", false);
    let reserver = w.fs();
    let c = w.conductor(
        fixtures::devops_pillar(),
        reserver.clone(),
        Provisioner::Ec2,
    );
    let report = c
        .create(&fixtures::role_request("activemq", Some(3)))
        .await
        .unwrap();
    assert_eq!(report.failed.len(), 2);
    assert_eq!(
        report.launched,
        vec!["devops-mq03.us-east-1a.test.foobar.com".to_string()]
    );
    let held: Vec<String> = reserver
        .list(None)
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.key.to_string())
        .collect();
    assert_eq!(
        held,
        vec!["test_devops-mq02.us-east-1a.test.foobar.com".to_string()],
        "an uncertain launch keeps its name until the lease expires"
    );
}

#[tokio::test]
async fn destroy_by_cpid_removes_exactly_that_run() {
    let w = World::new();
    let c = w.conductor(fixtures::devops_pillar(), w.fs(), Provisioner::Ec2);
    let a = c
        .create(&fixtures::role_request("activemq", None))
        .await
        .unwrap();
    let b = c
        .create(&fixtures::role_request("nifi", None))
        .await
        .unwrap();
    let req = conductor_core::InstanceQuery {
        group: conductor_core::Group::new("devops").unwrap(),
        env: conductor_core::Env::new("test").unwrap(),
        region: Some(fixtures::zone().region()),
        selection: conductor_core::Selection::Cpid(a.plan.cpid),
    };
    let d = c.destroy(&req).await.unwrap();
    assert_eq!(
        d.destroyed.iter().collect::<BTreeSet<_>>(),
        a.launched.iter().collect::<BTreeSet<_>>()
    );
    assert_eq!(
        w.names(),
        b.launched.iter().cloned().collect::<BTreeSet<_>>()
    );
    assert!(d.logs.iter().any(|l| l
        .display()
        .to_string()
        .contains("cloud_run-conductor._group-destroy_")));
    // Nothing left to destroy is an input error naming the selection.
    let e = c.destroy(&req).await.unwrap_err();
    assert_eq!(e.class(), conductor_core::ErrorClass::BadInput, "{e}");
}

#[tokio::test]
async fn client_tokens_make_launch_idempotent() {
    let cloud = FakeCloud::new();
    let f = conductor_testkit::conformance::cloud::CloudFixture {
        zone: fixtures::zone(),
        settings: conductor_core::LaunchSettings::with_image("ami-0abc"),
        visible_timeout: Duration::from_secs(1),
    };
    let specs = conductor_testkit::conformance::cloud::specs(&f, "idem", 3);
    use conductor_core::CloudBackend;
    let first = cloud.launch(&specs).await.unwrap();
    let again = cloud.launch(&specs).await.unwrap();
    assert_eq!(first, again, "a retried launch returns the same instances");
    assert_eq!(
        cloud.live_instances().len(),
        3,
        "and launches nothing twice"
    );
    let token = conductor_core::client_token(
        conductor_core::Cpid::from_parts(1, 1552303186),
        "a.example.com",
    );
    assert!(token.len() <= 64 && token.is_ascii());
}
