//! The [`CloudAccounts`] conformance suite: accounts are opened apart (one
//! account's launches are not in another's inventory, nor in the default
//! cloud's), and opening an account again reaches the same instances.

use std::sync::Arc;

use conductor_core::{AccountSpec, CloudAccounts, CloudBackend, Scope};

use super::cloud::{specs, CloudFixture};

/// Runs every check of the suite with two distinct accounts `a` and `b`;
/// `default` is the cloud of no account (the conductor's own).
pub async fn run_all(
    accounts: &dyn CloudAccounts,
    (a, b): (&AccountSpec, &AccountSpec),
    default: &dyn CloudBackend,
    f: &CloudFixture,
) {
    accounts_are_apart(accounts, (a, b), default, f).await;
}

/// A launch through `a`'s cloud shows in `a`'s inventory, opened again,
/// and in neither `b`'s nor the default cloud's.
pub async fn accounts_are_apart(
    accounts: &dyn CloudAccounts,
    (a, b): (&AccountSpec, &AccountSpec),
    default: &dyn CloudBackend,
    f: &CloudFixture,
) {
    let prefix = format!("acct{}-", rand::random::<u32>());
    let launch = specs(f, &prefix, 1);
    let name = launch[0].name.clone();
    let in_a = accounts.open(a).await.expect("open account a");
    let results = in_a.launch(&launch).await.expect("launch in account a");
    assert!(
        results[0].outcome.is_ok(),
        "launch in account a: {results:?}"
    );
    let seen = in_a
        .wait_visible(
            &f.zone.region(),
            std::slice::from_ref(&name),
            f.visible_timeout,
        )
        .await
        .expect("wait_visible in account a");
    assert_eq!(seen.len(), 1, "{name} shows in account a");
    let again = accounts.open(a).await.expect("open account a again");
    assert_eq!(
        names(&again, f).await,
        [name.as_str()],
        "account a opened again"
    );
    let in_b = accounts.open(b).await.expect("open account b");
    assert!(
        names(&in_b, f).await.is_empty(),
        "{name} is not in account b"
    );
    let mut elsewhere = names_of(default, f).await;
    elsewhere.retain(|n| n.starts_with(&prefix));
    assert!(elsewhere.is_empty(), "{name} is not in the default cloud");
}

async fn names(cloud: &Arc<dyn CloudBackend>, f: &CloudFixture) -> Vec<String> {
    let mut all = names_of(cloud.as_ref(), f).await;
    all.retain(|n| n.starts_with("acct"));
    all
}

async fn names_of(cloud: &dyn CloudBackend, f: &CloudFixture) -> Vec<String> {
    let inv = cloud
        .inventory(&Scope::all(f.zone.region()))
        .await
        .expect("inventory");
    inv.live()
        .filter_map(|i| i.name().map(str::to_string))
        .collect()
}
