//! The no-duplicate guarantee under ordinary faults, on the fakes and a
//! paused clock: a lease not renewed in time or taken over stops the run
//! before it launches (fencing); a cancelled run frees what surely was not
//! launched and holds the rest; name keys carry the env written into the
//! name; a basename without REGION is free only if free in every region.

use std::sync::Arc;
use std::time::Duration;

use conductor_core::{
    CancellationToken, Env, Error, ErrorClass, Key, MemReserver, Owner, Phase, Reservation,
    Reserver,
};
use conductor_core::{Cpid, Pillar};
use conductor_testkit::fake_cloud::Op;
use conductor_testkit::harness::{paused_runtime, Harness};
use conductor_testkit::{fixtures, FakeSalt, FaultReserver};

/// A MemReserver whose updates (renewals, fences, releases) fail while told to.
fn flaky() -> Arc<FaultReserver<MemReserver>> {
    Arc::new(FaultReserver::new(MemReserver::new()))
}

/// A harness whose `pre_create` hook takes a minute (virtual time), with
/// a 3 s lease TTL: the run's leases need renewing during the hook.
fn slow_hook_harness(reserver: Arc<dyn Reserver>) -> Harness {
    let salt = FakeSalt::new();
    salt.slow_orchestration(Duration::from_secs(60));
    Harness::new()
        .with_reserver(reserver)
        .with_salt(Arc::new(salt))
        .with_options(|o| o.lease_ttl = Duration::from_secs(3))
}

fn mq01() -> Key {
    Key::name(
        &Env::new("test").unwrap(),
        "devops-mq01.us-east-1a.test.foobar.com",
    )
    .unwrap()
}

#[test]
fn a_lease_not_renewed_before_it_expired_stops_the_run_before_it_launches() {
    paused_runtime().block_on(async {
        let flaky = flaky();
        let h = slow_hook_harness(flaky.clone());
        let c = h.conductor();
        let run =
            tokio::spawn(async move { c.create(&fixtures::role_request("activemq", None)).await });
        // Renewals start failing once the run holds its keys, and never recover.
        tokio::time::sleep(Duration::from_millis(500)).await;
        flaky.fail_updates(true);
        let e = run.await.unwrap().unwrap_err();
        assert!(matches!(e, Error::LeaseLost { .. }), "{e}");
        assert_eq!(e.class(), ErrorClass::Exhausted, "exit 3: nothing launched");
        assert!(e.to_string().contains("could not be renewed"), "{e}");
        assert_eq!(h.cloud.calls(Op::Launch), 0, "fenced: no launch call");
        assert!(h.cloud.live_instances().is_empty());
    });
}

#[test]
fn a_key_taken_over_by_another_run_stops_the_run_before_it_launches() {
    paused_runtime().block_on(async {
        let flaky = flaky();
        let h = slow_hook_harness(flaky.clone());
        let c = h.conductor();
        let run =
            tokio::spawn(async move { c.create(&fixtures::role_request("activemq", None)).await });
        tokio::time::sleep(Duration::from_millis(500)).await;
        flaky.fail_updates(true);
        // The lease expires unrenewed; another run takes mq01 over, then the
        // reserver answers again and the next renewal finds the key gone.
        tokio::time::sleep(Duration::from_secs(5)).await;
        let other = Owner::this_process(Cpid::generate(), Duration::from_secs(600));
        flaky
            .try_reserve(&[mq01()], &other)
            .await
            .expect("the expired key is free");
        flaky.fail_updates(false);
        let e = run.await.unwrap().unwrap_err();
        match &e {
            Error::LeaseLost { keys, .. } => assert!(keys.contains(&mq01()), "{e}"),
            other => panic!("expected a lost lease, got {other}"),
        }
        assert_eq!(h.cloud.calls(Op::Launch), 0, "fenced: no launch call");
        let held = flaky.list(None).await.unwrap();
        let mq01_owner = held
            .iter()
            .find(|r| r.key == mq01())
            .and_then(|r| r.holder.owner().cloned());
        assert_eq!(
            mq01_owner.map(|o| o.cpid),
            Some(other.cpid),
            "the other run keeps its key"
        );
    });
}

#[test]
fn cancelled_before_the_launch_frees_every_key_and_launches_nothing() {
    paused_runtime().block_on(async {
        let h = slow_hook_harness(Arc::new(MemReserver::new()));
        let cancel = CancellationToken::new();
        let c = h.builder().cancel_on(cancel.clone()).build().unwrap();
        let run =
            tokio::spawn(async move { c.create(&fixtures::role_request("activemq", None)).await });
        tokio::time::sleep(Duration::from_secs(10)).await;
        cancel.cancel();
        let e = run.await.unwrap().unwrap_err();
        assert!(matches!(e, Error::Interrupted), "{e}");
        assert_eq!(e.class(), ErrorClass::Interrupted);
        assert_eq!(h.cloud.calls(Op::Launch), 0);
        assert!(
            h.reserver.list(None).await.unwrap().is_empty(),
            "nothing launched: every key freed"
        );
    });
}

/// A cancel that arrives while the fence runs (it is not cancelled midway)
/// is seen before the provisioner starts: nothing launched, so every key
/// is freed at once rather than held until it expires.
#[test]
fn cancelled_during_the_fence_frees_every_key_and_launches_nothing() {
    paused_runtime().block_on(async {
        let slow_fences =
            FaultReserver::new(MemReserver::new()).with_fence_delay(Duration::from_secs(5));
        let h = Harness::new().with_reserver(Arc::new(slow_fences));
        let cancel = CancellationToken::new();
        let c = h.builder().cancel_on(cancel.clone()).build().unwrap();
        let run =
            tokio::spawn(async move { c.create(&fixtures::role_request("activemq", None)).await });
        // Planning and reserving take no virtual time; the fence takes 5 s.
        tokio::time::sleep(Duration::from_secs(2)).await;
        cancel.cancel();
        let e = run.await.unwrap().unwrap_err();
        assert!(matches!(e, Error::Interrupted), "{e}");
        assert_eq!(h.cloud.calls(Op::Launch), 0);
        let held = h
            .reserver
            .held(conductor_core::now_ms(), None, None)
            .await
            .unwrap();
        assert!(
            held.is_empty(),
            "nothing launched: every key freed: {held:?}"
        );
    });
}

#[test]
fn cancelled_during_the_launch_keeps_its_names_held_and_reports() {
    paused_runtime().block_on(async {
        let h = Harness::new().with_cloud(Arc::new(
            conductor_testkit::FakeCloud::new().with_latency(Duration::from_secs(20)),
        ));
        let cancel = CancellationToken::new();
        let c = h.builder().cancel_on(cancel.clone()).build().unwrap();
        let run =
            tokio::spawn(async move { c.create(&fixtures::role_request("activemq", None)).await });
        // Reads take 20 s each: plan read, check-after-reserve read, then the launch.
        tokio::time::sleep(Duration::from_secs(50)).await;
        cancel.cancel();
        let report = run.await.unwrap().expect("a report once the launch began");
        assert!(report.interrupted && !report.success(), "{report:?}");
        assert_eq!(report.failed.len(), 2, "both may exist: {report:?}");
        let held: Vec<Reservation> = h.reserver.list(None).await.unwrap();
        let names: Vec<&Reservation> = held
            .iter()
            .filter(|r| r.key.as_str().starts_with("test_devops-mq"))
            .collect();
        assert_eq!(names.len(), 2, "{held:?}");
        assert!(names.iter().all(|r| r
            .holder
            .owner()
            .is_some_and(|o| o.phase == Phase::Launching)));
        // The next plan does not choose them.
        let plan = h
            .conductor()
            .plan(&fixtures::role_request("activemq", None))
            .await
            .unwrap();
        let got: Vec<u32> = plan.instances.iter().map(|i| i.index).collect();
        assert_eq!(got, [3, 4], "held names are not planned again");
    });
}

/// Cancels its token once a run launched (a signal right after the launch).
#[derive(Debug)]
struct CancelAtLaunched(CancellationToken);

impl conductor_core::Observer for CancelAtLaunched {
    fn step(&self, _cpid: Cpid, step: conductor_core::Step) {
        if step == conductor_core::Step::Launched {
            self.0.cancel();
        }
    }
}

/// An interrupted create only finishes: it starts no prune of other runs'
/// expired reservations (an uninterrupted one does).
#[test]
fn cancelled_after_the_launch_prunes_nothing() {
    paused_runtime().block_on(async {
        let reserver = Arc::new(FaultReserver::new(MemReserver::new()));
        let h = Harness::new().with_reserver(reserver.clone());
        let cancel = CancellationToken::new();
        let c = h
            .builder()
            .cancel_on(cancel.clone())
            .observer(Arc::new(CancelAtLaunched(cancel)))
            .build()
            .unwrap();
        let report = c
            .create(&fixtures::role_request("activemq", None))
            .await
            .expect("a report once the launch began");
        assert!(report.interrupted, "{report:?}");
        assert_eq!(reserver.prunes(), 0, "an interrupted run prunes nothing");
        let report = h
            .conductor()
            .create(&fixtures::role_request("activemq", Some(1)))
            .await
            .unwrap();
        assert!(report.success(), "{report:?}");
        assert!(reserver.prunes() > 0, "a finished run prunes");
    });
}

#[test]
fn name_keys_carry_the_saltenv_written_into_the_name() {
    paused_runtime().block_on(async {
        let yaml = fixtures::DEVOPS_PILLAR.replace(
            "test: {domain: foobar.com, regions: [us-east-1, us-west-2]}",
            "test: {domain: foobar.com, regions: [us-east-1, us-west-2]}\n    prod: {domain: foobar.com}",
        );
        let h = Harness::new().with_pillar(Pillar::from_yaml_str(&yaml).unwrap());
        let prod = Env::new("prod").unwrap();
        let held = Key::name(&prod, "devops-mq01.us-east-1a.prod.foobar.com").unwrap();
        let other = Owner::this_process(Cpid::generate(), Duration::from_secs(600));
        h.reserver.try_reserve(&[held], &other).await.unwrap();
        let mut req = fixtures::role_request("activemq", Some(1));
        req.saltenv = prod.clone();
        let plan = h.conductor().plan(&req).await.unwrap();
        assert_eq!(plan.instances[0].name, "devops-mq02.us-east-1a.prod.foobar.com");
        assert_eq!(
            plan.reservations.names[0].as_str(),
            "prod_devops-mq02.us-east-1a.prod.foobar.com",
            "keyed by the env in the name"
        );
    });
}

/// Basenames without `ENV` make the same names in every env of a domain:
/// two runs of two such envs at once (launches take 30 s, so both plan
/// before either launches) never launch one name twice, and a name's keys
/// stand in both envs.
#[test]
fn runs_of_two_envs_sharing_a_domain_and_env_less_basenames_never_share_a_name() {
    paused_runtime().block_on(async {
        let yaml = fixtures::DEVOPS_PILLAR
            .replace(
                "test: {domain: foobar.com, regions: [us-east-1, us-west-2]}",
                "test: {domain: foobar.com}\n    prod: {domain: foobar.com}",
            )
            .replace("devops-mqXX.REGION.ENV", "devops-mqXX.REGION");
        let pillar = Pillar::from_yaml_str(&yaml).unwrap();
        let h = Harness::new()
            .with_pillar(pillar.clone())
            .with_cloud(Arc::new(
                conductor_testkit::FakeCloud::new().with_latency(Duration::from_secs(30)),
            ));
        let request = |env: &str| {
            let mut req = fixtures::role_request("activemq", Some(2));
            req.pillarenv = Env::new(env).unwrap();
            req.saltenv = req.pillarenv.clone();
            req
        };
        let plan = h.conductor().plan(&request("test")).await.unwrap();
        let keys: Vec<&str> = plan
            .name_keys(&plan.instances[0].name)
            .map(Key::as_str)
            .collect();
        assert_eq!(
            keys,
            [
                "prod_devops-mq01.us-east-1a.foobar.com",
                "test_devops-mq01.us-east-1a.foobar.com"
            ]
        );
        let runs = ["test", "prod"].map(|env| {
            let (c, req) = (h.conductor(), request(env));
            tokio::spawn(async move { c.create(&req).await })
        });
        for run in runs {
            let report = run.await.unwrap().unwrap();
            assert!(report.success(), "{report:?}");
        }
        let mut names: Vec<String> = h
            .cloud
            .live_instances()
            .iter()
            .filter_map(|i| i.name().map(str::to_string))
            .collect();
        names.sort();
        assert_eq!(
            names,
            (1..=4)
                .map(|i| format!("devops-mq0{i}.us-east-1a.foobar.com"))
                .collect::<Vec<_>>(),
            "one name per instance across the two envs"
        );
    });
}

/// Cluster members of another zone and of another region of the env,
/// untagged and with no grains to read (the Python runner's,
/// `--no-grains`): their `.clid-N` still hold N in the group's scope, which
/// spans every zone and region of the env.
#[test]
fn a_members_cluster_id_in_another_zone_or_region_is_not_handed_out_again() {
    paused_runtime().block_on(async {
        let h = Harness::new();
        for (name, zone) in [
            (
                "devops-nifi-01.clid-1.us-east-1b.test.foobar.com",
                "us-east-1b",
            ),
            (
                "devops-nifi-01.clid-2.us-west-2a.test.foobar.com",
                "us-west-2a",
            ),
        ] {
            let zone = conductor_core::Zone::new(zone).unwrap();
            h.cloud.add_instance(name, &zone, &[]);
        }
        let plan = h
            .conductor()
            .plan(&fixtures::role_request("nifi", None))
            .await
            .unwrap();
        assert_eq!(plan.clusters[0].group_id, 3, "{plan:#?}");
    });
}

#[test]
fn a_basename_without_region_is_checked_in_every_region_of_the_env() {
    paused_runtime().block_on(async {
        let yaml = fixtures::DEVOPS_PILLAR.replace(
            "        activemq: {basename: devops-mqXX.REGION.ENV, nodes: 2, size: t3.medium}",
            "        activemq: {basename: devops-mqXX.REGION.ENV, nodes: 2, size: t3.medium}\n        nr: {basename: devops-nrXX.ENV, nodes: 1}",
        );
        let h = Harness::new().with_pillar(Pillar::from_yaml_str(&yaml).unwrap());
        let west = conductor_core::Zone::new("us-west-2b").unwrap();
        h.cloud.add_instance("devops-nr01.test.foobar.com", &west, &[]);
        let plan = h.conductor().plan(&fixtures::role_request("nr", None)).await.unwrap();
        assert_eq!(plan.instances[0].name, "devops-nr02.test.foobar.com", "nr01 is used in us-west-2");
    });
}

#[test]
fn cancelled_while_minions_join_withdraws_the_token_and_releases_what_showed() {
    paused_runtime().block_on(async {
        let salt = FakeSalt::new();
        salt.leave_pending("devops-mq01.us-east-1a.test.foobar.com");
        let autosign = tempfile::tempdir().unwrap();
        let h = Harness::new()
            .with_salt(Arc::new(salt))
            .with_options(|o| o.autosign_grains_dir = Some(autosign.path().to_path_buf()));
        let cancel = CancellationToken::new();
        let c = h.builder().cancel_on(cancel.clone()).build().unwrap();
        let run =
            tokio::spawn(async move { c.create(&fixtures::role_request("activemq", None)).await });
        // mq01 never joins: the run waits for it (15 minutes by default).
        tokio::time::sleep(Duration::from_secs(120)).await;
        cancel.cancel();
        let report = run.await.unwrap().expect("launched: a report");
        assert!(report.interrupted, "{report:?}");
        assert_eq!(report.launched.len(), 2, "{report:?}");
        let file = std::fs::read_to_string(autosign.path().join("conductor_autosign")).unwrap();
        assert!(
            file.lines()
                .all(|l| l.trim().is_empty() || l.starts_with('#')),
            "the run's token is withdrawn: {file}"
        );
        assert!(
            h.reserver.list(None).await.unwrap().is_empty(),
            "visible instances' keys are released (grace 0 here)"
        );
    });
}
