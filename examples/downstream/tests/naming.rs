//! The testkit without its default features (no moto, no Salt, no Python):
//! two parallel runs on the harness never share a name.

use conductor_core::{CreateRequest, Env, Group, Role, Target, Zone};
use conductor_testkit::harness::Harness;

#[tokio::test]
async fn parallel_runs_never_share_a_name() {
    let conductor = Harness::new().conductor();
    let request = CreateRequest::new(
        Group::new("devops").unwrap(),
        Env::new("test").unwrap(),
        Zone::new("us-east-1a").unwrap(),
        Target::Role {
            role: Role::new("nifi").unwrap(),
            count: None,
        },
    );
    let (a, b) = tokio::join!(conductor.create(&request), conductor.create(&request));
    let (a, b) = (a.unwrap(), b.unwrap());
    assert!(a.success() && b.success());
    assert!(!a.launched.is_empty());
    assert!(a.launched.iter().all(|name| !b.launched.contains(name)));
}
