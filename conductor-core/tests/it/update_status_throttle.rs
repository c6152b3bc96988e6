//! `update`, `status` and the shared provisioning throttle, on the fakes.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use conductor_core::slot_key;
use conductor_core::{now_ms, Owner};
use conductor_core::{Cpid, Env, Group, InstanceQuery, Selection};
use conductor_testkit::fake_salt::SaltCall;
use conductor_testkit::fixtures;
use conductor_testkit::harness::{paused_runtime, Harness};
use conductor_testkit::{FakeCloud, FakeSalt};

fn pillar(extra: &str) -> conductor_core::Pillar {
    let yaml = fixtures::DEVOPS_PILLAR.replace(
        "hooks: {pre_create: [orch.conductor_common], post_create: [orch.conductor_common]}",
        "hooks: {pre_create: [orch.conductor_common], post_create: [orch.conductor_common], pre_update: [orch.pre_update], post_update: [orch.post_update]}",
    );
    conductor_core::Pillar::from_yaml_str(&format!("{yaml}{extra}")).unwrap()
}

/// The fakes over `cloud`, with a FakeSalt (returned too) and the pillar
/// of [`pillar`]`(extra)`.
fn harness(cloud: FakeCloud, extra: &str) -> (Harness, Arc<FakeSalt>) {
    let salt = Arc::new(FakeSalt::new());
    let h = Harness::new()
        .with_cloud(Arc::new(cloud))
        .with_salt(salt.clone())
        .with_pillar(pillar(extra));
    (h, salt)
}

fn query(selection: Selection) -> InstanceQuery {
    InstanceQuery {
        group: Group::new("devops").unwrap(),
        env: Env::new("test").unwrap(),
        region: Some(fixtures::zone().region()),
        selection,
    }
}

#[tokio::test]
async fn update_reapplies_states_only_to_the_selection_and_status_shows_ids() {
    let (h, salt) = harness(FakeCloud::new(), "");
    let c = h.conductor();
    let mut reports = Vec::new();
    for req in fixtures::seed_requests() {
        reports.push(c.create(&req).await.unwrap());
    }
    let system = &reports[2];
    let before = salt.calls().len();

    let targets = c
        .update_targets(&query(Selection::System(1)))
        .await
        .unwrap();
    let expected: BTreeSet<String> = system.launched.iter().cloned().collect();
    assert_eq!(targets.iter().cloned().collect::<BTreeSet<_>>(), expected);
    assert_eq!(salt.calls().len(), before, "--dry-run changes nothing");

    let report = c.update(&query(Selection::System(1))).await.unwrap();
    assert!(report.success());
    let calls = &salt.calls()[before..];
    let applied: BTreeSet<String> = calls
        .iter()
        .filter_map(|c| match c {
            SaltCall::StateApply { targets, sls, .. } => {
                assert_eq!(sls, &vec!["devops.conductor".to_string()]);
                Some(targets.clone())
            }
            _ => None,
        })
        .flatten()
        .collect();
    assert_eq!(
        applied, expected,
        "states re-applied to exactly the system's instances"
    );
    let orch: Vec<&SaltCall> = calls
        .iter()
        .filter(|c| matches!(c, SaltCall::Orchestrate { .. }))
        .collect();
    assert_eq!(orch.len(), 2, "pre_update and post_update hooks: {orch:?}");
    assert_ne!(
        report.cpid, system.plan.cpid,
        "an update logs under its own cpid"
    );
    assert!(report
        .logs
        .iter()
        .any(|l| l.to_string_lossy().contains(&format!(
            "state_runs/{}/state_run-DEVOPS_conductor",
            report.cpid
        ))));

    // Update of one cluster reaches only its members.
    let nifi_cluster = reports[0].plan.clusters[0].group_id;
    let members = c
        .update_targets(&query(Selection::Cluster {
            role: "nifi".parse().unwrap(),
            id: nifi_cluster,
        }))
        .await
        .unwrap();
    assert_eq!(members.len(), 4);
    assert!(members
        .iter()
        .all(|m| m.contains(&format!(".clid-{nifi_cluster}."))));

    // Status: every instance with its ids.
    let rows = c.status(&query(Selection::All)).await.unwrap();
    assert_eq!(rows.len(), 12);
    for r in &rows {
        let in_system = r.cpid.as_deref() == Some(system.plan.cpid.to_string().as_str());
        assert_eq!(
            r.system_ids.get("devops.system.id").map(String::as_str),
            in_system.then_some("1"),
            "{r:?}"
        );
        if r.name.contains(".clid-") {
            assert_eq!(r.role.as_deref(), Some("nifi"));
            let clid = r
                .name
                .split(".clid-")
                .nth(1)
                .unwrap()
                .split('.')
                .next()
                .unwrap();
            assert_eq!(
                r.cluster_ids
                    .get("devops.nifi.cluster.id")
                    .map(String::as_str),
                Some(clid)
            );
            assert!(r.member.is_some());
        } else {
            assert_eq!(r.role.as_deref(), Some("activemq"));
            assert!(r.cluster_ids.is_empty());
        }
    }
    // A selection that matches nothing is refused by name.
    let e = c.update(&query(Selection::System(9))).await.unwrap_err();
    assert!(e.to_string().contains("system_id=9"), "{e}");
}

/// Six parallel runs, two slots: never more than two runs launch at once, all
/// finish, and the slots are free afterwards.
#[test]
fn two_slots_bound_six_parallel_runs() {
    paused_runtime().block_on(async {
        let (h, _salt) = harness(
            FakeCloud::new().with_latency(Duration::from_millis(500)),
            "  throttle: {max_provisioning_runs: 2, max_inflight_calls: 1}\n",
        );
        let (cloud, reserver) = (&h.cloud, &h.reserver);
        let mut set = tokio::task::JoinSet::new();
        for _ in 0..6 {
            let c = h.conductor();
            set.spawn(async move { c.create(&fixtures::role_request("activemq", Some(2))).await });
        }
        while let Some(r) = set.join_next().await {
            assert!(r.unwrap().unwrap().success());
        }
        assert_eq!(cloud.live_instances().len(), 12);
        let calls = cloud.launch_calls();
        assert_eq!(
            calls.len(),
            12,
            "max_inflight_calls: 1 launches one instance per call"
        );
        let most = cloud.max_concurrent_launching_runs();
        assert!(most <= 2, "at most two runs launch at once, saw {most}");
        assert_eq!(most, 2, "the two slots are used in parallel");
        assert!(
            reserver.list(None).await.unwrap().is_empty(),
            "slots released"
        );
    });
}

/// A slot held by a run that died elsewhere blocks nobody past its lease expiry.
#[test]
fn a_dead_runs_slot_frees_at_expiry() {
    paused_runtime().block_on(async {
        let (h, _salt) = harness(
            FakeCloud::new().with_latency(Duration::from_millis(100)),
            "  throttle: {max_provisioning_runs: 1}\n",
        );
        let mut dead = Owner::this_process(Cpid::generate(), Duration::from_secs(20));
        dead.host = "other-master.invalid".into();
        let expires = dead.expires;
        h.reserver
            .try_reserve(&[slot_key(None, &fixtures::zone().region(), 1)], &dead)
            .await
            .unwrap();
        let c = h.conductor();
        let report = c
            .create(&fixtures::role_request("activemq", None))
            .await
            .unwrap();
        assert!(report.success());
        assert!(
            now_ms() >= expires,
            "the run waited for the dead holder's lease to expire"
        );
        assert!(now_ms() < expires + 10_000, "and not much longer");
    });
}
