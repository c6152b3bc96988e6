//! `FakeSalt` passes the `SaltExecutor` conformance suite that `SaltCli`
//! passes against a real master (conductor-salt's `salt_conformance`), and
//! keeps its open default: every minion id answers unless left pending.

use conductor_core::{Env, SaltExecutor};
use conductor_testkit::conformance::salt::{run_all, SaltFixture};
use conductor_testkit::FakeSalt;

#[tokio::test]
async fn fake_salt_with_known_minions_conforms() {
    let f = SaltFixture::lab_states("m1.fake.example.com", vec![]);
    let salt = FakeSalt::with_minions(&[f.minion.as_str()]);
    salt.fail_orchestration(&f.failing_orchestration);
    salt.fail_sls(&f.failing_startup);
    let (grain, value) = &f.grain;
    salt.set_grains(&f.minion, serde_json::json!({ grain: value }));
    run_all(&salt, &f).await;
}

#[tokio::test]
async fn by_default_every_minion_answers_but_a_pending_one() {
    let salt = FakeSalt::new();
    salt.leave_pending("late.example.com");
    let targets = ["a.example.com".to_string(), "late.example.com".to_string()];
    assert_eq!(salt.ping(&targets).await.unwrap(), [targets[0].clone()]);
    let r = salt
        .state_apply(
            &targets,
            &["devops.conductor".into()],
            &Env::new("test").unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(r.minions, [targets[0].clone()]);
    assert_eq!(r.failures.len(), 1, "{r:?}");
    assert_eq!(r.failures[0].minion, "late.example.com");
    let keys = salt.minion_keys().await.unwrap();
    assert_eq!(keys.pending, ["late.example.com"]);
}
