//! The [`Reserver`] conformance suite.
//!
//! Every function uses keys of its own (random suffix), so one store can serve
//! the whole suite; only [`prune_respects_live_owners`] assumes nothing else
//! prunes the store at the same time.

use std::sync::Arc;
use std::time::Duration;

use conductor_core::reserve::{now_ms, this_host, Key, KeyKind, Owner, Reserver};
use conductor_core::{Cpid, ReserveError};

/// A pid no process can have (above Linux's largest `pid_max`): an owner that is dead.
pub const DEAD_PID: u32 = 2_000_000_000;

/// Runs every sequential check of the suite.
pub async fn run_all(r: &dyn Reserver) {
    double_grant_refused(r).await;
    all_or_nothing(r).await;
    release_frees(r).await;
    release_with_grace_holds(r).await;
    expired_lease_is_free(r).await;
    dead_local_owner_is_free(r).await;
    reused_pid_owner_is_free(r).await;
    owner_round_trips(r).await;
    duplicate_keys_in_one_request(r).await;
    set_expiry_only_touches_own_keys(r).await;
    renew_extends(r).await;
    list_shows_kind_and_owner(r).await;
    prune_respects_live_owners(r).await;
}

/// `n` fresh keys (names and ids alternating) unique to this call.
pub fn fresh_keys(tag: &str, n: usize) -> Vec<Key> {
    let run = rand::random::<u32>();
    (0..n)
        .map(|i| {
            let kind = if i % 2 == 0 {
                KeyKind::Name
            } else {
                KeyKind::Id
            };
            Key::new(kind, format!("conf_{tag}-{run}-{i}.example.com")).unwrap()
        })
        .collect()
}

/// A live owner: this process, expiring in an hour.
pub fn live_owner() -> Owner {
    Owner::this_process(Cpid::generate(), Duration::from_secs(3600))
}

fn held_by(list: &[conductor_core::Reservation], key: &Key) -> Option<Cpid> {
    list.iter().find(|r| &r.key == key).map(|r| r.owner.cpid)
}

/// A key held by a live owner is refused to another, naming the key.
pub async fn double_grant_refused(r: &dyn Reserver) {
    let k = fresh_keys("double", 3);
    let (a, b) = (live_owner(), live_owner());
    r.try_reserve(&k[..2], &a).await.expect("first grant");
    match r.try_reserve(&k[1..], &b).await {
        Err(ReserveError::Conflict(keys)) => {
            assert_eq!(keys, vec![k[1].clone()], "conflict names the held key")
        }
        other => panic!("second grant of a held key must conflict, got {other:?}"),
    }
    match r.try_reserve(&k[1..2], &a).await {
        Err(ReserveError::Conflict(_)) => {}
        other => panic!("a held key is not granted twice, even to its owner: {other:?}"),
    }
}

/// A refused request reserves none of its keys.
pub async fn all_or_nothing(r: &dyn Reserver) {
    let k = fresh_keys("aon", 6);
    let (a, b) = (live_owner(), live_owner());
    r.try_reserve(&k[3..4], &a).await.expect("grant");
    assert!(matches!(
        r.try_reserve(&k, &b).await,
        Err(ReserveError::Conflict(_))
    ));
    let list = r.list().await.unwrap();
    for key in k.iter().filter(|key| **key != k[3]) {
        assert_eq!(
            held_by(&list, key),
            None,
            "{key} leaked from a refused request"
        );
    }
    // The free keys are still grantable as a set.
    let rest: Vec<Key> = k.iter().filter(|key| **key != k[3]).cloned().collect();
    r.try_reserve(&rest, &b)
        .await
        .expect("the other keys were left free");
}

/// Release with no grace frees the keys at once.
pub async fn release_frees(r: &dyn Reserver) {
    let k = fresh_keys("release", 4);
    let (a, b) = (live_owner(), live_owner());
    let lease = r.try_reserve(&k, &a).await.unwrap();
    r.release(&lease, Duration::ZERO).await.unwrap();
    let list = r.list().await.unwrap();
    assert!(
        k.iter().all(|key| held_by(&list, key).is_none()),
        "released keys are removed"
    );
    r.try_reserve(&k, &b).await.expect("released keys are free");
}

/// Release with a grace period keeps the keys held until it passes.
pub async fn release_with_grace_holds(r: &dyn Reserver) {
    let k = fresh_keys("grace", 2);
    let (a, b) = (live_owner(), live_owner());
    let lease = r.try_reserve(&k, &a).await.unwrap();
    r.release(&lease, Duration::from_secs(600)).await.unwrap();
    assert!(
        matches!(r.try_reserve(&k, &b).await, Err(ReserveError::Conflict(_))),
        "still held during grace"
    );
    let list = r.list().await.unwrap();
    let e = list
        .iter()
        .find(|x| x.key == k[0])
        .expect("listed")
        .owner
        .expires;
    assert!(
        e > now_ms() && e <= now_ms() + 601_000,
        "expiry moved to now + grace, got {e}"
    );
}

/// A lease whose expiry has passed is free for anyone.
pub async fn expired_lease_is_free(r: &dyn Reserver) {
    let k = fresh_keys("expired", 2);
    let mut old = live_owner();
    old.created = now_ms() - 100_000;
    old.expires = now_ms() - 1_000;
    r.try_reserve(&k, &old).await.unwrap();
    let b = live_owner();
    r.try_reserve(&k, &b)
        .await
        .expect("expired keys are taken over");
    assert_eq!(held_by(&r.list().await.unwrap(), &k[0]), Some(b.cpid));
}

/// A key whose owner ran on this host and is gone is free.
pub async fn dead_local_owner_is_free(r: &dyn Reserver) {
    let k = fresh_keys("dead", 2);
    let mut dead = live_owner();
    dead.pid = DEAD_PID;
    r.try_reserve(&k, &dead).await.unwrap();
    let b = live_owner();
    r.try_reserve(&k, &b)
        .await
        .expect("keys of a dead local owner are taken over");
}

/// A key whose owner's pid now belongs to another process (same pid, other
/// start time) is free: pid reuse does not keep a dead run's keys.
pub async fn reused_pid_owner_is_free(r: &dyn Reserver) {
    let k = fresh_keys("reused", 2);
    let mut gone = live_owner();
    let Some(started) = gone.started else {
        return; // no /proc: start times are unknown here
    };
    gone.started = Some(started + 1);
    r.try_reserve(&k, &gone).await.unwrap();
    let b = live_owner();
    r.try_reserve(&k, &b)
        .await
        .expect("keys of an owner whose pid was reused are taken over");
}

/// `list` returns the owner as granted: cpid, host, pid, start time,
/// creation and expiry.
pub async fn owner_round_trips(r: &dyn Reserver) {
    let k = fresh_keys("roundtrip", 1);
    let a = live_owner();
    r.try_reserve(&k, &a).await.unwrap();
    let got = r
        .list()
        .await
        .unwrap()
        .into_iter()
        .find(|x| x.key == k[0])
        .expect("listed")
        .owner;
    assert_eq!(got, a, "the stored owner is the granted one");
}

/// A request naming a key twice is granted once, and released fully.
pub async fn duplicate_keys_in_one_request(r: &dyn Reserver) {
    let k = fresh_keys("dup", 2);
    let a = live_owner();
    let lease = r
        .try_reserve(&[k[0].clone(), k[1].clone(), k[0].clone()], &a)
        .await
        .expect("a repeated key is not a conflict with itself");
    r.release(&lease, Duration::ZERO).await.unwrap();
    let list = r.list().await.unwrap();
    assert!(k.iter().all(|key| held_by(&list, key).is_none()));
}

/// Changing the expiry of keys held by another run does nothing.
pub async fn set_expiry_only_touches_own_keys(r: &dyn Reserver) {
    let k = fresh_keys("own", 2);
    let (a, b) = (live_owner(), live_owner());
    let lease = r.try_reserve(&k, &a).await.unwrap();
    let forged = conductor_core::Lease {
        keys: lease.keys.clone(),
        owner: b.clone(),
    };
    r.release(&forged, Duration::ZERO).await.unwrap();
    let list = r.list().await.unwrap();
    assert_eq!(
        held_by(&list, &k[0]),
        Some(a.cpid),
        "another run's release must not free my keys"
    );
}

/// Setting a later expiry keeps the keys held.
pub async fn renew_extends(r: &dyn Reserver) {
    let k = fresh_keys("renew", 1);
    let mut a = live_owner();
    a.expires = now_ms() + 30_000;
    let lease = r.try_reserve(&k, &a).await.unwrap();
    r.set_expiry(&lease, now_ms() + 7_200_000).await.unwrap();
    let e = r
        .list()
        .await
        .unwrap()
        .into_iter()
        .find(|x| x.key == k[0])
        .unwrap()
        .owner
        .expires;
    assert!(e >= now_ms() + 7_000_000, "renewed expiry, got {e}");
}

/// `list` shows each key with its kind and owner.
pub async fn list_shows_kind_and_owner(r: &dyn Reserver) {
    let k = fresh_keys("list", 2);
    let a = live_owner();
    r.try_reserve(&k, &a).await.unwrap();
    let list = r.list().await.unwrap();
    for key in &k {
        let e = list.iter().find(|x| &x.key == key).expect("listed");
        assert_eq!(e.kind, key.kind());
        assert_eq!(e.owner.cpid, a.cpid);
        assert_eq!(e.owner.host, a.host);
        assert_eq!(e.owner.pid, a.pid);
    }
}

/// `prune` removes expired keys, dead owners' keys and, with `older_than`, old
/// keys of owners not known alive — never a live owner's.
pub async fn prune_respects_live_owners(r: &dyn Reserver) {
    let now = now_ms();
    let k = fresh_keys("prune", 5);
    let live = live_owner();
    let mut expired = live_owner();
    expired.expires = now - 1_000;
    let mut dead = live_owner();
    dead.pid = DEAD_PID;
    let mut remote_old = live_owner();
    remote_old.host = format!("elsewhere-{}.invalid", rand::random::<u32>());
    remote_old.created = now - 1_000_000;
    let mut remote_young = remote_old.clone();
    remote_young.cpid = Cpid::generate();
    remote_young.created = now;
    let mut live_old = live.clone();
    live_old.created = now - 1_000_000;
    for (key, owner) in k
        .iter()
        .zip([&live_old, &expired, &dead, &remote_old, &remote_young])
    {
        r.try_reserve(std::slice::from_ref(key), owner)
            .await
            .unwrap();
    }
    let pruned = r.prune(now, Some(Duration::from_secs(500))).await.unwrap();
    for (i, key) in k.iter().enumerate() {
        let gone = pruned.contains(key);
        let expect_gone = matches!(i, 1..=3);
        assert_eq!(gone, expect_gone, "key {i} ({key}) pruned={gone}");
    }
    let list = r.list().await.unwrap();
    assert_eq!(
        held_by(&list, &k[0]),
        Some(live.cpid),
        "a live owner's key survives prune"
    );
    assert_eq!(held_by(&list, &k[4]), Some(remote_young.cpid));
    assert_eq!(held_by(&list, &k[1]), None);
    assert!(r
        .prune(now, Some(Duration::ZERO))
        .await
        .unwrap()
        .iter()
        .all(|p| *p != k[0]));
    assert_eq!(live.host, this_host());
}

/// `tasks` concurrent runs race for overlapping key sets; asserts no key is
/// granted twice and every loser got a conflict. Returns the winners' count.
pub async fn race(r: Arc<dyn Reserver>, tasks: usize) -> usize {
    let k = fresh_keys("race", tasks + 2);
    let mut set = tokio::task::JoinSet::new();
    for t in 0..tasks {
        let r = r.clone();
        let keys = vec![k[t + 1].clone(), k[t + 2].clone(), k[0].clone()];
        set.spawn(async move {
            let owner = live_owner();
            (owner.cpid, keys.clone(), r.try_reserve(&keys, &owner).await)
        });
    }
    let mut winners = Vec::new();
    while let Some(j) = set.join_next().await {
        let (cpid, keys, res) = j.unwrap();
        match res {
            Ok(_) => winners.push((cpid, keys)),
            Err(ReserveError::Conflict(_)) => {}
            Err(e) => panic!("backend error in race: {e}"),
        }
    }
    assert_eq!(winners.len(), 1, "every set holds k[0]: exactly one winner");
    let list = r.list().await.unwrap();
    for (cpid, keys) in &winners {
        for key in keys {
            assert_eq!(held_by(&list, key), Some(*cpid));
        }
    }
    let held: Vec<_> = list.iter().filter(|x| k.contains(&x.key)).collect();
    assert_eq!(held.len(), 3, "losers leave nothing behind: {held:?}");
    winners.len()
}
