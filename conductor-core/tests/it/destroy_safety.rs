//! Destroy and update touch only what Conductor built for the request's
//! group and env, nothing read from EC2 reaches Salt unchecked, and a
//! destroy can be listed before it is done; an interrupted or partly
//! failed destroy reports what it terminated and deletes their keys (on
//! the fakes; the CLI's tests repeat the selection checks on moto).

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use conductor_core::{
    BackendError, BackendErrorKind, CachedGrains, CancellationToken, CloudBackend, CloudRunResult,
    CloudVm, Conductor, Env, ErrorClass, Group, InstanceQuery, InstanceRef, Inventory,
    LaunchResult, LaunchSpec, Layout, MemReserver, MinionKeys, Options, Provisioner, Region,
    Reserver, SaltExecutor, Scope, Selection, StateRunResult, StaticPillar,
};
use conductor_testkit::fake_salt::SaltCall;
use conductor_testkit::fixtures;
use conductor_testkit::harness::{paused_runtime, Harness};
use conductor_testkit::{FakeCloud, FakeSalt};

/// The name of the report: a Name tag and nothing else.
const FOREIGN: &str = "devops-mq07.us-east-1a.test.foobar.com";

struct World {
    cloud: Arc<FakeCloud>,
    salt: Arc<FakeSalt>,
    reserver: Arc<MemReserver>,
    dir: tempfile::TempDir,
}

impl World {
    fn new() -> Self {
        Self {
            cloud: Arc::new(FakeCloud::new()),
            salt: Arc::new(FakeSalt::new()),
            reserver: Arc::new(MemReserver::new()),
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn conductor(&self, provisioner: Provisioner) -> Conductor {
        self.conductor_with(provisioner, self.salt.clone())
    }

    fn conductor_with(&self, provisioner: Provisioner, salt: Arc<FakeSalt>) -> Conductor {
        Conductor::builder()
            .cloud(self.cloud.clone())
            .reserver(self.reserver.clone())
            .pillar(Arc::new(StaticPillar(fixtures::devops_pillar())))
            .salt(salt)
            .layout(Layout::new(
                self.dir.path().join("etc"),
                self.dir.path().join("runner"),
            ))
            .options(Options {
                provisioner,
                release_grace: Duration::ZERO,
                ..Options::default()
            })
            .build()
            .unwrap()
    }

    /// A Conductor instance of group devops in env test (tags as a run writes them).
    fn ours(&self, name: &str, extra: &[(&str, &str)]) -> String {
        let mut tags = vec![
            ("conductor:cpid", "16833830331552303186"),
            ("conductor:env", "test"),
            ("conductor:group", "devops"),
            ("conductor:role", "activemq"),
        ];
        tags.extend_from_slice(extra);
        self.cloud.add_instance(name, &fixtures::zone(), &tags)
    }

    fn live_ids(&self) -> BTreeSet<String> {
        self.cloud
            .live_instances()
            .into_iter()
            .map(|i| i.id)
            .collect()
    }

    /// Every argument any Salt call got.
    fn salt_words(&self) -> Vec<String> {
        self.salt
            .calls()
            .into_iter()
            .flat_map(|c| match c {
                SaltCall::CloudMap(p) => vec![p.display().to_string()],
                SaltCall::CloudForget(vms) => {
                    vms.into_iter().flat_map(|v| [v.name, v.provider]).collect()
                }
                SaltCall::StateApply { targets, sls, .. } => {
                    targets.into_iter().chain(sls).collect()
                }
                SaltCall::DeleteKeys(names) => names,
                SaltCall::Orchestrate { sls, .. } => vec![sls],
            })
            .collect()
    }
}

fn query(selection: Selection) -> InstanceQuery {
    InstanceQuery {
        group: Group::new("devops").unwrap(),
        env: Env::new("test").unwrap(),
        region: Some(fixtures::zone().region()),
        selection,
    }
}

fn names(list: &[&str]) -> Selection {
    Selection::Names(list.iter().map(|n| n.to_string()).collect())
}

#[tokio::test]
async fn names_selects_only_the_groups_instances_and_names_the_rest() {
    let w = World::new();
    let c = w.conductor(Provisioner::Ec2);
    // The instance: a Name tag and no other tag.
    let untagged = w.cloud.add_instance(FOREIGN, &fixtures::zone(), &[]);
    // The same name in another env, and in another group.
    let other_env = w.cloud.add_instance(
        FOREIGN,
        &fixtures::zone(),
        &[("conductor:env", "prod"), ("conductor:group", "devops")],
    );
    let other_group = w.cloud.add_instance(
        FOREIGN,
        &fixtures::zone(),
        &[("conductor:env", "test"), ("conductor:group", "data")],
    );
    let mine = w.ours("devops-mq01.us-east-1a.test.foobar.com", &[]);

    // Only the foreign name: nothing is left to do, exit 2 naming why.
    let e = c.destroy(&query(names(&[FOREIGN]))).await.unwrap_err();
    assert_eq!(e.class(), ErrorClass::BadInput, "{e}");
    let text = e.to_string();
    assert!(
        text.contains(&format!(
            "{FOREIGN} ({untagged}): not built by Conductor for group devops in env test"
        )),
        "{text}"
    );
    assert!(
        text.contains(&other_env) && text.contains(&other_group),
        "{text}"
    );
    assert_eq!(w.live_ids().len(), 4, "nothing terminated");
    assert!(w.salt.calls().is_empty(), "{:?}", w.salt.calls());

    // With one of ours: exactly ours goes, the rest are named in the report.
    let r = c
        .destroy(&query(names(&[
            FOREIGN,
            "devops-mq01.us-east-1a.test.foobar.com",
            "devops-mq09.us-east-1a.test.foobar.com",
        ])))
        .await
        .unwrap();
    assert!(r.success(), "{r:?}");
    assert_eq!(r.destroyed, ["devops-mq01.us-east-1a.test.foobar.com"]);
    assert_eq!(
        w.live_ids(),
        BTreeSet::from([untagged.clone(), other_env.clone(), other_group.clone()])
    );
    assert!(!w.live_ids().contains(&mine));
    let skipped: BTreeSet<(Option<String>, String)> = r
        .skipped_instances
        .iter()
        .map(|s| (s.id.clone(), s.reason.clone()))
        .collect();
    let foreign = "not built by Conductor for group devops in env test".to_string();
    assert_eq!(
        skipped,
        BTreeSet::from([
            (Some(untagged), foreign.clone()),
            (Some(other_env), foreign.clone()),
            (Some(other_group), foreign),
            (None, "no live instance has this name".to_string()),
        ])
    );
    // Salt heard of ours only.
    assert_eq!(
        w.salt.calls(),
        [SaltCall::DeleteKeys(vec![
            "devops-mq01.us-east-1a.test.foobar.com".into()
        ])]
    );

    // Update and status select the same way.
    let e = c.update(&query(names(&[FOREIGN]))).await.unwrap_err();
    assert_eq!(e.class(), ErrorClass::BadInput, "{e}");
    assert!(c
        .status(&query(names(&[FOREIGN])))
        .await
        .unwrap()
        .is_empty());
}

#[tokio::test]
async fn every_selector_needs_the_env_and_group_tags() {
    let w = World::new();
    let c = w.conductor(Provisioner::Ec2);
    let sys = [("conductor:devops.system.id", "1")];
    let mine = w.ours("devops-mq01.us-east-1a.test.foobar.com", &sys);
    // Same system id and cpid, but another env; and no env tag at all.
    let prod = w.cloud.add_instance(
        "devops-mq01.us-east-1a.prod.foobar.com",
        &fixtures::zone(),
        &[
            ("conductor:env", "prod"),
            ("conductor:group", "devops"),
            ("conductor:cpid", "16833830331552303186"),
            ("conductor:devops.system.id", "1"),
        ],
    );
    let bare = w.cloud.add_instance(
        "devops-mq02.us-east-1a.test.foobar.com",
        &fixtures::zone(),
        &[
            ("conductor:cpid", "16833830331552303186"),
            ("conductor:devops.system.id", "1"),
        ],
    );
    for sel in [
        Selection::System(1),
        Selection::Cpid(conductor_core::Cpid::parse("16833830331552303186").unwrap()),
    ] {
        let plan = c.plan_destroy(&query(sel.clone())).await.unwrap();
        let ids: Vec<&str> = plan.targets.iter().map(|t| t.id.as_str()).collect();
        assert_eq!(ids, [mine.as_str()], "{sel:?}");
    }
    c.destroy(&query(Selection::System(1))).await.unwrap();
    assert_eq!(w.live_ids(), BTreeSet::from([prod, bare]));
}

#[tokio::test]
async fn dry_run_lists_the_right_set_and_changes_nothing() {
    let w = World::new();
    let c = w.conductor(Provisioner::SaltCloud);
    let a = w.ours("devops-mq01.us-east-1a.test.foobar.com", &[]);
    let b = w.ours("devops-mq02.us-east-1a.test.foobar.com", &[]);
    let untagged = w.cloud.add_instance(FOREIGN, &fixtures::zone(), &[]);
    let before = w.cloud.all_instances();
    let q = query(names(&[
        "devops-mq01.us-east-1a.test.foobar.com",
        "devops-mq02.us-east-1a.test.foobar.com",
        FOREIGN,
    ]));
    let plan = c.plan_destroy(&q).await.unwrap();
    assert_eq!(
        plan.labels(),
        [
            "devops-mq01.us-east-1a.test.foobar.com",
            "devops-mq02.us-east-1a.test.foobar.com"
        ]
    );
    let ids: Vec<&str> = plan.targets.iter().map(|t| t.id.as_str()).collect();
    assert_eq!(ids, [a.as_str(), b.as_str()]);
    assert_eq!(plan.keys, plan.labels(), "their minion keys");
    assert_eq!(
        plan.cloud_vms,
        plan.labels()
            .into_iter()
            .map(|name| CloudVm {
                name,
                provider: "devops_16833830331552303186".into()
            })
            .collect::<Vec<_>>(),
        "salt-cloud's cache entries under the provider of the run that built them"
    );
    assert_eq!(plan.skipped_instances.len(), 1);
    assert_eq!(
        plan.skipped_instances[0].id.as_deref(),
        Some(untagged.as_str())
    );
    // Nothing changed: the cloud, Salt, the reservations, the files.
    assert_eq!(w.cloud.all_instances(), before);
    assert!(w.salt.calls().is_empty());
    assert!(
        w.reserver.list(None).await.unwrap().is_empty(),
        "no CPID claimed"
    );
    assert!(!w.dir.path().join("runner").exists(), "no file written");

    // Doing the plan does exactly that.
    let r = c.destroy_planned(plan).await.unwrap();
    assert_eq!(
        r.destroyed,
        [
            "devops-mq01.us-east-1a.test.foobar.com",
            "devops-mq02.us-east-1a.test.foobar.com"
        ]
    );
    assert_eq!(w.live_ids(), BTreeSet::from([untagged]));
    let calls = w.salt.calls();
    assert!(
        calls
            .iter()
            .any(|c| matches!(c, SaltCall::CloudForget(v) if v.len() == 2)),
        "{calls:?}"
    );
}

#[tokio::test]
async fn names_from_ec2_never_reach_salt_unchecked() {
    const BAD: [&str; 3] = ["*", "a,b", "a b"];
    for provisioner in [Provisioner::Ec2, Provisioner::SaltCloud] {
        let w = World::new();
        let c = w.conductor(provisioner);
        let sys = [("conductor:devops.system.id", "1")];
        let good = "devops-mq01.us-east-1a.test.foobar.com";
        w.ours(good, &sys);
        let bad_ids: BTreeSet<String> = BAD.iter().map(|n| w.ours(n, &sys)).collect();

        let u = c.update(&query(Selection::System(1))).await.unwrap();
        assert_eq!(u.targets, [good]);
        let d = c.destroy(&query(Selection::System(1))).await.unwrap();
        assert_eq!(d.destroyed, [good]);
        for r in [&u.skipped_instances, &d.skipped_instances] {
            let ids: BTreeSet<String> = r.iter().filter_map(|s| s.id.clone()).collect();
            assert_eq!(ids, bad_ids, "{r:?}");
            for s in r.iter() {
                assert!(s.reason.contains("not a valid instance name"), "{s}");
                assert!(s.name.starts_with('"'), "shown quoted: {s}");
            }
        }
        assert_eq!(w.live_ids(), bad_ids, "left alone, not terminated");
        // The recording Salt never saw them, in any argument of any call.
        let words = w.salt_words();
        for bad in BAD {
            assert!(
                words.iter().all(|w| !w.contains(bad)),
                "{bad:?} reached Salt: {:?}",
                w.salt.calls()
            );
        }
        assert!(words.iter().any(|w| w == good), "{words:?}");
        // status does not list them either.
        let rows = c.status(&query(Selection::System(1))).await.unwrap();
        assert!(rows.is_empty(), "{rows:?}");
    }
}

#[tokio::test]
async fn create_leaves_no_provider_file_behind_and_keeps_a_copy() {
    let w = World::new();
    let salt_cloud = Arc::new(FakeSalt::with_cloud(w.cloud.clone(), fixtures::zone()));
    let c = w.conductor_with(Provisioner::SaltCloud, salt_cloud);
    let r = c
        .create(&fixtures::role_request("activemq", None))
        .await
        .unwrap();
    assert!(r.success(), "{r:?}");
    let layout = c.layout();
    let files = r.plan.files.clone().unwrap();
    assert!(
        !files.provider.exists(),
        "the run removed its provider file"
    );
    assert!(!files.profile.exists());
    for dir in ["cloud.providers.d", "cloud.profiles.d"] {
        let left = std::fs::read_dir(layout.config_dir.join(dir))
            .map(|d| d.count())
            .unwrap_or(0);
        assert_eq!(left, 0, "{dir} is empty after the run");
    }
    let group = Group::new("devops").unwrap();
    let copy = layout.provider_copy(&group, r.plan.cpid);
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&copy).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert!(r.logs.contains(&copy), "{:?}", r.logs);
    assert!(r.logs.contains(&layout.profile_copy(&group, r.plan.cpid)));
    assert!(layout.run_files(r.plan.cpid).contains(&copy));
    // Maps and profiles are YAML only for Salt's renderer.
    for f in [&files.map, &layout.profile_copy(&group, r.plan.cpid)] {
        let text = std::fs::read_to_string(f).unwrap();
        assert!(text.starts_with("#!yaml\n"), "{}: {text}", f.display());
    }
}

// A destroy that is interrupted or partly fails still reports what it
// terminated, and deletes those instances' minion keys: nothing would
// select them again once they are gone.

const MQ01: &str = "devops-mq01.us-east-1a.test.foobar.com";
const MQ02: &str = "devops-mq02.us-east-1a.test.foobar.com";
const WEST01: &str = "devops-mq01.us-west-2b.test.foobar.com";

/// The devops pillar with `pre_destroy` and `post_destroy` hooks.
fn hooked_pillar() -> conductor_core::Pillar {
    let yaml = fixtures::DEVOPS_PILLAR.replace(
        "hooks: {pre_create: [orch.conductor_common], post_create: [orch.conductor_common]}",
        "hooks: {pre_destroy: [orch.before], post_destroy: [orch.after]}",
    );
    conductor_core::Pillar::from_yaml_str(&yaml).unwrap()
}

/// Adds a Conductor instance of group devops in env test named `name` in `zone`.
fn add_ours(h: &Harness, name: &str, zone: &str) -> String {
    h.cloud.add_instance(
        name,
        &conductor_core::Zone::new(zone).unwrap(),
        &[
            ("conductor:cpid", "16833830331552303186"),
            ("conductor:env", "test"),
            ("conductor:group", "devops"),
            ("conductor:role", "activemq"),
        ],
    )
}

fn live_names(h: &Harness) -> BTreeSet<String> {
    h.cloud
        .live_instances()
        .iter()
        .filter_map(|i| i.name().map(str::to_string))
        .collect()
}

fn deleted_keys(salt: &FakeSalt) -> Vec<String> {
    salt.calls()
        .into_iter()
        .flat_map(|c| match c {
            SaltCall::DeleteKeys(names) => names,
            _ => vec![],
        })
        .collect()
}

fn orchestrated(salt: &FakeSalt) -> Vec<String> {
    salt.calls()
        .into_iter()
        .filter_map(|c| match c {
            SaltCall::Orchestrate { sls, .. } => Some(sls),
            _ => None,
        })
        .collect()
}

/// The run's cloud log is among its files and exists.
fn assert_cloud_log(r: &conductor_core::DestroyReport) {
    let log = r
        .logs
        .iter()
        .find(|p| p.display().to_string().contains("cloud_run-"))
        .unwrap_or_else(|| panic!("no cloud log: {r:?}"));
    let text = std::fs::read_to_string(log).unwrap();
    assert!(text.contains("terminated"), "{text}");
}

/// FakeSalt whose `delete_keys` takes `delay` before it starts.
#[derive(Debug)]
struct SlowKeys {
    inner: Arc<FakeSalt>,
    delay: Duration,
}

#[async_trait::async_trait]
impl SaltExecutor for SlowKeys {
    async fn cloud_map(&self, map: &std::path::Path) -> Result<CloudRunResult, BackendError> {
        self.inner.cloud_map(map).await
    }
    async fn cloud_forget(&self, vms: &[CloudVm]) -> Result<(), BackendError> {
        self.inner.cloud_forget(vms).await
    }
    async fn state_apply(
        &self,
        targets: &[String],
        sls: &[String],
        saltenv: &Env,
    ) -> Result<StateRunResult, BackendError> {
        self.inner.state_apply(targets, sls, saltenv).await
    }
    async fn orchestrate(
        &self,
        sls: &str,
        saltenv: &Env,
        pillarenv: &Env,
    ) -> Result<StateRunResult, BackendError> {
        self.inner.orchestrate(sls, saltenv, pillarenv).await
    }
    async fn minion_keys(&self) -> Result<MinionKeys, BackendError> {
        self.inner.minion_keys().await
    }
    async fn ping(&self, targets: &[String]) -> Result<Vec<String>, BackendError> {
        self.inner.ping(targets).await
    }
    async fn delete_keys(&self, names: &[String]) -> Result<(), BackendError> {
        tokio::time::sleep(self.delay).await;
        self.inner.delete_keys(names).await
    }
    async fn cached_grains(&self) -> Result<CachedGrains, BackendError> {
        self.inner.cached_grains().await
    }
}

/// FakeCloud whose `terminate` fails in `fail_in`, and which cancels
/// `cancel_after` once a terminate call succeeded.
#[derive(Debug)]
struct Terminating {
    inner: Arc<FakeCloud>,
    fail_in: Option<Region>,
    cancel_after: Option<CancellationToken>,
}

#[async_trait::async_trait]
impl CloudBackend for Terminating {
    async fn inventory(&self, scope: &Scope) -> Result<Inventory, BackendError> {
        self.inner.inventory(scope).await
    }
    async fn launch(&self, specs: &[LaunchSpec]) -> Result<Vec<LaunchResult>, BackendError> {
        self.inner.launch(specs).await
    }
    async fn terminate(&self, instances: &[InstanceRef]) -> Result<(), BackendError> {
        if let Some(region) = instances
            .iter()
            .map(|i| &i.region)
            .find(|r| Some(*r) == self.fail_in.as_ref())
        {
            return Err(BackendError::new(
                BackendErrorKind::Unreachable,
                format!("{region} does not answer"),
            ));
        }
        self.inner.terminate(instances).await?;
        if let Some(c) = &self.cancel_after {
            c.cancel();
        }
        Ok(())
    }
}

/// Destroys `names` on `h`'s conductor, cancelled `after` (virtual time).
async fn destroy_cancelled_after(
    h: &Harness,
    names_: &[&str],
    after: Duration,
) -> Result<conductor_core::DestroyReport, conductor_core::Error> {
    let cancel = CancellationToken::new();
    let c = h.builder().cancel_on(cancel.clone()).build().unwrap();
    let q = query(names(names_));
    let run = tokio::spawn(async move { c.destroy(&q).await });
    tokio::time::sleep(after).await;
    cancel.cancel();
    run.await.unwrap()
}

/// The hooked pillar, hooks that take a minute each, and MQ01.
fn slow_hooks() -> (Harness, Arc<FakeSalt>) {
    let salt = Arc::new(FakeSalt::new());
    salt.slow_orchestration(Duration::from_secs(60));
    let h = Harness::new()
        .with_pillar(hooked_pillar())
        .with_salt(salt.clone());
    add_ours(&h, MQ01, "us-east-1a");
    (h, salt)
}

#[test]
fn interrupted_while_deleting_keys_finishes_them_and_reports() {
    paused_runtime().block_on(async {
        let salt = Arc::new(FakeSalt::new());
        let slow = SlowKeys {
            inner: salt.clone(),
            delay: Duration::from_secs(30),
        };
        let h = Harness::new()
            .with_pillar(hooked_pillar())
            .with_salt(Arc::new(slow));
        add_ours(&h, MQ01, "us-east-1a");
        add_ours(&h, MQ02, "us-east-1a");
        let r = destroy_cancelled_after(&h, &[MQ01, MQ02], Duration::from_secs(10))
            .await
            .expect("instances were terminated: a report");
        assert!(r.interrupted && !r.success(), "{r:?}");
        assert_eq!(r.destroyed, [MQ01, MQ02]);
        assert!(live_names(&h).is_empty());
        assert_eq!(deleted_keys(&salt), [MQ01, MQ02], "their keys are deleted");
        assert_cloud_log(&r);
        assert_eq!(
            orchestrated(&salt),
            ["orch.before"],
            "post_destroy not started"
        );
        assert!(
            r.skipped.iter().any(|s| s.contains("post_destroy")
                && s.contains("orch.after")
                && s.contains("interrupted")),
            "{r:?}"
        );
        assert!(r.failed.is_empty(), "{r:?}");
    });
}

#[test]
fn interrupted_during_the_post_destroy_hook_reports_what_was_destroyed() {
    paused_runtime().block_on(async {
        let (h, salt) = slow_hooks();
        // pre_destroy takes 60 s; post_destroy starts right after it.
        let r = destroy_cancelled_after(&h, &[MQ01], Duration::from_secs(90))
            .await
            .expect("instances were terminated: a report");
        assert!(r.interrupted && !r.success(), "{r:?}");
        assert_eq!(r.destroyed, [MQ01]);
        assert_eq!(deleted_keys(&salt), [MQ01]);
        assert_cloud_log(&r);
        assert_eq!(orchestrated(&salt), ["orch.before", "orch.after"]);
        assert!(
            r.skipped
                .iter()
                .any(|s| s.contains("orch.after") && s.contains("interrupted")),
            "{r:?}"
        );
    });
}

#[test]
fn interrupted_before_terminating_changes_nothing_and_says_so() {
    paused_runtime().block_on(async {
        let (h, salt) = slow_hooks();
        let e = destroy_cancelled_after(&h, &[MQ01], Duration::from_secs(10))
            .await
            .unwrap_err();
        assert_eq!(e.class(), ErrorClass::Interrupted, "{e}");
        assert_eq!(
            e.to_string(),
            "interrupted before any instance was launched or terminated"
        );
        assert_eq!(live_names(&h), BTreeSet::from([MQ01.to_string()]));
        assert!(deleted_keys(&salt).is_empty());
    });
}

#[tokio::test]
async fn a_region_that_fails_to_terminate_leaves_the_others_reported_and_keyless() {
    let salt = Arc::new(FakeSalt::new());
    let h = Harness::new().with_salt(salt.clone());
    add_ours(&h, MQ01, "us-east-1a");
    add_ours(&h, WEST01, "us-west-2b");
    let cloud = Terminating {
        inner: h.cloud.clone(),
        fail_in: Some(Region::new("us-west-2").unwrap()),
        cancel_after: None,
    };
    let c = h.builder_on(Arc::new(cloud)).build().unwrap();
    let q = InstanceQuery {
        region: None,
        ..query(names(&[MQ01, WEST01]))
    };
    let r = c
        .destroy(&q)
        .await
        .expect("us-east-1 was terminated: a report");
    assert!(!r.success() && !r.interrupted, "{r:?}");
    assert_eq!(r.destroyed, [MQ01]);
    assert_eq!(r.failed.len(), 1, "{r:?}");
    assert_eq!(r.failed[0].0, WEST01);
    assert!(
        r.failed[0].1.contains("not terminated") && r.failed[0].1.contains("does not answer"),
        "{r:?}"
    );
    assert_eq!(live_names(&h), BTreeSet::from([WEST01.to_string()]));
    assert_eq!(deleted_keys(&salt), [MQ01], "only the terminated one's key");
    assert_cloud_log(&r);
}

#[tokio::test]
async fn interrupted_between_regions_starts_no_other_region() {
    let salt = Arc::new(FakeSalt::new());
    let h = Harness::new().with_salt(salt.clone());
    add_ours(&h, MQ01, "us-east-1a");
    add_ours(&h, WEST01, "us-west-2b");
    let cancel = CancellationToken::new();
    let cloud = Terminating {
        inner: h.cloud.clone(),
        fail_in: None,
        cancel_after: Some(cancel.clone()),
    };
    let c = h
        .builder_on(Arc::new(cloud))
        .cancel_on(cancel)
        .build()
        .unwrap();
    let q = InstanceQuery {
        region: None,
        ..query(names(&[MQ01, WEST01]))
    };
    let r = c
        .destroy(&q)
        .await
        .expect("us-east-1 was terminated: a report");
    assert!(r.interrupted && !r.success(), "{r:?}");
    assert_eq!(r.destroyed, [MQ01]);
    assert_eq!(r.failed.len(), 1, "{r:?}");
    assert_eq!(r.failed[0].0, WEST01);
    assert!(r.failed[0].1.contains("interrupted"), "{r:?}");
    assert_eq!(live_names(&h), BTreeSet::from([WEST01.to_string()]));
    assert_eq!(deleted_keys(&salt), [MQ01]);
    assert_cloud_log(&r);
}

#[tokio::test]
async fn without_salt_the_report_names_the_keys_left_on_the_master() {
    let h = Harness::new();
    add_ours(&h, MQ01, "us-east-1a");
    add_ours(&h, MQ02, "us-east-1a");
    let r = h
        .conductor()
        .destroy(&query(names(&[MQ01, MQ02])))
        .await
        .unwrap();
    assert_eq!(r.destroyed, [MQ01, MQ02]);
    let keys = r
        .skipped
        .iter()
        .find(|s| s.contains("minion keys"))
        .unwrap_or_else(|| panic!("the undeleted keys are named: {r:?}"));
    assert!(
        keys.contains(MQ01) && keys.contains(MQ02) && keys.contains("no Salt executor"),
        "{keys}"
    );
}
