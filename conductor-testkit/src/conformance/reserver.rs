//! The [`Reserver`] conformance suite.
//!
//! Every function uses keys of its own (random suffix), so one store can serve
//! the whole suite; only [`prune_by_environment`] and
//! [`prune_respects_live_owners`] assume nothing else prunes the store at
//! the same time.

use std::sync::Arc;
use std::time::Duration;

use conductor_core::this_pid_ns;
use conductor_core::{now_ms, this_host, Key, KeyKind, Lease, Owner, Phase, Reservation, Reserver};
use conductor_core::{Cpid, Env, ReserveError};

/// A pid no process can have (above Linux's largest `pid_max`): an owner that is dead.
pub const DEAD_PID: u32 = 2_000_000_000;

/// Runs every sequential check of the suite.
pub async fn run_all(r: &dyn Reserver) {
    double_grant_refused(r).await;
    all_or_nothing(r).await;
    release_frees(r).await;
    release_with_grace_holds(r).await;
    expired_lease_is_free(r).await;
    dead_planning_owner_is_free(r).await;
    dead_launching_owner_holds_until_expiry(r).await;
    released_keys_hold_for_the_grace_whoever_is_alive(r).await;
    reused_pid_owner_is_free(r).await;
    owner_round_trips(r).await;
    duplicate_keys_in_one_request(r).await;
    update_only_touches_own_keys(r).await;
    renew_extends(r).await;
    update_sets_the_phase(r).await;
    a_renewed_expired_lease_is_kept(r).await;
    list_shows_kind_and_owner(r).await;
    listings_by_environment(r).await;
    long_keys_are_updated(r).await;
    remote_planning_owner_holds_until_expiry(r).await;
    other_pid_namespace_owner_holds_until_expiry(r).await;
    prune_by_environment(r).await;
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

fn held_by(list: &[Reservation], key: &Key) -> Option<Cpid> {
    list.iter()
        .find(|r| &r.key == key)
        .and_then(|r| r.holder.owner())
        .map(|o| o.cpid)
}

/// The owner record `r` lists for `key`.
fn owner_of(list: &[Reservation], key: &Key) -> Owner {
    list.iter()
        .find(|x| &x.key == key)
        .and_then(|x| x.holder.owner())
        .unwrap_or_else(|| panic!("{key} is listed with an owner record"))
        .clone()
}

/// An owner on this host that is gone (a pid no process can have).
pub fn dead_owner(phase: Phase) -> Owner {
    Owner {
        pid: DEAD_PID,
        phase,
        ..live_owner()
    }
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
    let list = r.list(None).await.unwrap();
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
    let list = r.list(None).await.unwrap();
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
    let got = owner_of(&r.list(None).await.unwrap(), &k[0]);
    assert!(
        got.expires > now_ms() && got.expires <= now_ms() + 601_000,
        "expiry moved to now + grace, got {}",
        got.expires
    );
    assert_eq!(got.phase, Phase::Released, "a released key says so");
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
    assert_eq!(held_by(&r.list(None).await.unwrap(), &k[0]), Some(b.cpid));
}

/// A key whose owner ran on this host, is gone, and was still planning
/// (nothing of its run can exist) is free.
pub async fn dead_planning_owner_is_free(r: &dyn Reserver) {
    let k = fresh_keys("dead", 2);
    r.try_reserve(&k, &dead_owner(Phase::Planning))
        .await
        .unwrap();
    let b = live_owner();
    r.try_reserve(&k, &b)
        .await
        .expect("keys of a dead local owner that was planning are taken over");
}

/// A key whose gone owner was launching (instances may exist) stays held
/// until its lease expires.
pub async fn dead_launching_owner_holds_until_expiry(r: &dyn Reserver) {
    let k = fresh_keys("deadlaunch", 2);
    r.try_reserve(&k, &dead_owner(Phase::Launching))
        .await
        .unwrap();
    assert!(
        matches!(
            r.try_reserve(&k, &live_owner()).await,
            Err(ReserveError::Conflict(_))
        ),
        "a launching owner's keys are held although it is gone"
    );
    let k2 = fresh_keys("deadlaunch-exp", 1);
    let expired = Owner {
        expires: now_ms() - 1_000,
        ..dead_owner(Phase::Launching)
    };
    r.try_reserve(&k2, &expired).await.unwrap();
    r.try_reserve(&k2, &live_owner())
        .await
        .expect("held until expiry, then free");
}

/// Released keys stay held for their grace even when their owner is gone.
pub async fn released_keys_hold_for_the_grace_whoever_is_alive(r: &dyn Reserver) {
    let k = fresh_keys("deadgrace", 2);
    let a = dead_owner(Phase::Released);
    r.try_reserve(&k, &a).await.unwrap();
    assert!(
        matches!(
            r.try_reserve(&k, &live_owner()).await,
            Err(ReserveError::Conflict(_))
        ),
        "released keys are held for the grace after the run exited"
    );
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
    let got = owner_of(&r.list(None).await.unwrap(), &k[0]);
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
    let list = r.list(None).await.unwrap();
    assert!(k.iter().all(|key| held_by(&list, key).is_none()));
}

/// Updating keys held by another run (or by nobody) changes nothing and
/// names them as lost; the run's own keys in the same call are updated.
pub async fn update_only_touches_own_keys(r: &dyn Reserver) {
    let k = fresh_keys("own", 3);
    let (a, b) = (live_owner(), live_owner());
    let lease = r.try_reserve(&k[..2], &a).await.unwrap();
    r.try_reserve(&k[2..], &b).await.unwrap();
    let forged = Lease {
        keys: lease.keys.clone(),
        owner: b.clone(),
    };
    match r.release(&forged, Duration::ZERO).await {
        Err(ReserveError::Lost(lost)) => assert_eq!(lost, lease.keys, "both keys named as lost"),
        other => panic!("updating another run's keys must report them lost, got {other:?}"),
    }
    let mixed = Lease {
        keys: k.clone(),
        owner: b.clone(),
    };
    match r
        .update(&mixed, now_ms() + 3_600_000, Phase::Launching)
        .await
    {
        Err(ReserveError::Lost(lost)) => assert_eq!(lost, k[..2].to_vec()),
        other => panic!("expected the two keys of the other run as lost, got {other:?}"),
    }
    let list = r.list(None).await.unwrap();
    assert_eq!(
        owner_of(&list, &k[2]).phase,
        Phase::Launching,
        "its own key was updated"
    );
    let gone = Lease {
        keys: fresh_keys("own-none", 1),
        owner: a.clone(),
    };
    assert!(
        matches!(
            r.update(&gone, now_ms() + 60_000, Phase::Planning).await,
            Err(ReserveError::Lost(_))
        ),
        "a key nobody holds is lost too"
    );
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
    r.update(&lease, now_ms() + 7_200_000, Phase::Planning)
        .await
        .unwrap();
    let e = owner_of(&r.list(None).await.unwrap(), &k[0]).expires;
    assert!(e >= now_ms() + 7_000_000, "renewed expiry, got {e}");
}

/// `update` records the phase with the expiry.
pub async fn update_sets_the_phase(r: &dyn Reserver) {
    let k = fresh_keys("phase", 2);
    let a = live_owner();
    let lease = r.try_reserve(&k, &a).await.unwrap();
    assert_eq!(
        owner_of(&r.list(None).await.unwrap(), &k[0]).phase,
        Phase::Planning
    );
    let until = now_ms() + 900_000;
    r.update(&lease, until, Phase::Launching).await.unwrap();
    let got = owner_of(&r.list(None).await.unwrap(), &k[1]);
    assert_eq!((got.phase, got.expires), (Phase::Launching, until));
}

/// A lease that expired but was renewed before anyone took it over is
/// held again: a takeover needs the expired record it saw.
pub async fn a_renewed_expired_lease_is_kept(r: &dyn Reserver) {
    let k = fresh_keys("renewexp", 1);
    let a = Owner {
        expires: now_ms() - 1_000,
        ..live_owner()
    };
    let lease = r.try_reserve(&k, &a).await.unwrap();
    r.update(&lease, now_ms() + 600_000, Phase::Launching)
        .await
        .expect("renewing an expired key nobody took is allowed");
    assert!(
        matches!(
            r.try_reserve(&k, &live_owner()).await,
            Err(ReserveError::Conflict(_))
        ),
        "renewed: held again"
    );
}

/// `list` shows each key with its kind and owner.
pub async fn list_shows_kind_and_owner(r: &dyn Reserver) {
    let k = fresh_keys("list", 2);
    let a = live_owner();
    r.try_reserve(&k, &a).await.unwrap();
    let list = r.list(None).await.unwrap();
    for key in &k {
        let e = list.iter().find(|x| &x.key == key).expect("listed");
        assert_eq!(e.kind, key.kind());
        let o = owner_of(&list, key);
        assert_eq!((o.cpid, o.host, o.pid), (a.cpid, a.host.clone(), a.pid));
    }
}

/// A listing of one environment holds its keys (`<env>_…`) and no other
/// environment's nor the keys of none (`cpid.<CPID>`); `held` of it leaves
/// out expired keys and the caller's own run.
pub async fn listings_by_environment(r: &dyn Reserver) {
    let run = rand::random::<u32>();
    let env = |x: &str| Env::new(format!("env{run}{x}")).unwrap();
    let (a, b) = (env("a"), env("b"));
    let key = |e: &Env, kind, what: &str| Key::new(kind, format!("{e}_{what}")).unwrap();
    let live_a = [
        key(&a, KeyKind::Name, "web01.example.com"),
        key(&a, KeyKind::Id, "web.cluster.id.1"),
    ];
    let expired_a = key(&a, KeyKind::Name, "web02.example.com");
    let in_b = key(&b, KeyKind::Name, "web01.example.com");
    let no_env = Key::cpid(Cpid::generate());
    let owner = live_owner();
    let mut expired = live_owner();
    expired.expires = now_ms() - 1_000;
    r.try_reserve(&live_a, &owner).await.unwrap();
    r.try_reserve(std::slice::from_ref(&expired_a), &expired)
        .await
        .unwrap();
    let other = r
        .try_reserve(&[in_b.clone(), no_env.clone()], &live_owner())
        .await
        .unwrap();

    let keys = |list: Vec<Reservation>| list.into_iter().map(|x| x.key).collect::<Vec<_>>();
    let mut all_a = vec![live_a[0].clone(), live_a[1].clone(), expired_a.clone()];
    all_a.sort();
    assert_eq!(
        keys(r.list(Some(&a)).await.unwrap()),
        all_a,
        "env {a}'s keys, expired included"
    );
    assert_eq!(
        keys(r.list(Some(&b)).await.unwrap()),
        std::slice::from_ref(&in_b)
    );
    let everything = keys(r.list(None).await.unwrap());
    for k in all_a.iter().chain([&in_b, &no_env]) {
        assert!(everything.contains(k), "{k} in the whole listing");
    }
    let mut held = r.held(now_ms(), Some(&a), None).await.unwrap();
    held.sort();
    let mut want = live_a.to_vec();
    want.sort();
    assert_eq!(held, want, "held: env {a}'s live keys only");
    assert!(
        r.held(now_ms(), Some(&a), Some(&owner))
            .await
            .unwrap()
            .is_empty(),
        "held leaves out the caller's own run"
    );
    r.release(
        &Lease {
            keys: live_a.to_vec(),
            owner,
        },
        Duration::ZERO,
    )
    .await
    .unwrap();
    r.release(&other, Duration::ZERO).await.unwrap();
}

/// Keys of the longest length a [`Key`] allows (255 bytes, a file name's
/// limit on most filesystems) are reserved, renewed, fenced and released
/// like any other.
pub async fn long_keys_are_updated(r: &dyn Reserver) {
    let head = format!("conf_long-{}-", rand::random::<u32>());
    let long = |kind, tail: &str| {
        let fill = "a".repeat(255 - head.len() - tail.len());
        Key::new(kind, format!("{head}{fill}{tail}")).unwrap()
    };
    let k = [
        long(KeyKind::Name, ".example.com"),
        long(KeyKind::Id, ".id.1"),
    ];
    assert!(k.iter().all(|key| key.as_str().len() == 255));
    let lease = r
        .try_reserve(&k, &live_owner())
        .await
        .expect("255-byte keys are reserved");
    let until = now_ms() + 60_000;
    r.update(&lease, until, Phase::Launching)
        .await
        .expect("255-byte keys are renewed and fenced");
    let list = r.list(None).await.unwrap();
    for key in &k {
        let got = owner_of(&list, key);
        assert_eq!((got.phase, got.expires), (Phase::Launching, until), "{key}");
    }
    r.release(&lease, Duration::ZERO)
        .await
        .expect("255-byte keys are released");
    let list = r.list(None).await.unwrap();
    assert!(k.iter().all(|key| held_by(&list, key).is_none()));
}

/// An owner on another host is only known by its expiry: its keys are held
/// until then even while it plans and its pid is dead here (that pid is
/// some other machine's), and freed once the lease expired.
pub async fn remote_planning_owner_holds_until_expiry(r: &dyn Reserver) {
    let k = fresh_keys("remoteplan", 2);
    let remote = Owner {
        host: format!("other-{}.invalid", rand::random::<u32>()),
        ..dead_owner(Phase::Planning)
    };
    r.try_reserve(&k[..1], &remote).await.unwrap();
    assert!(
        matches!(
            r.try_reserve(&k[..1], &live_owner()).await,
            Err(ReserveError::Conflict(_))
        ),
        "a planning owner on another host holds its key, whatever its pid is here"
    );
    assert!(
        r.held(now_ms(), None, None).await.unwrap().contains(&k[0]),
        "held lists it"
    );
    assert!(
        !r.prune(now_ms(), None, None).await.unwrap().contains(&k[0]),
        "prune keeps it"
    );
    let expired = Owner {
        expires: now_ms() - 1_000,
        ..remote
    };
    r.try_reserve(&k[1..], &expired).await.unwrap();
    r.try_reserve(&k[1..], &live_owner())
        .await
        .expect("held until expiry, then free");
}

/// An owner on this host name but in another pid namespace (another
/// container with `--uts=host`, another machine of the same name, this one
/// before a reboot) is only known by its expiry: its pid is dead here, yet its
/// planning keys are held until they expire, even by `prune --older-than`,
/// and freed once the lease expired.
pub async fn other_pid_namespace_owner_holds_until_expiry(r: &dyn Reserver) {
    let env = Env::new(format!("otherns{}", rand::random::<u32>())).unwrap();
    let k = [
        Key::new(KeyKind::Name, format!("{env}_web01.example.com")).unwrap(),
        Key::new(KeyKind::Id, format!("{env}_web.cluster.id.1")).unwrap(),
    ];
    let boot = this_pid_ns()
        .and_then(|ns| ns.split_once('/').map(|(boot, _)| boot.to_string()))
        .unwrap_or_else(|| "8090900f-8723-4390-bc91-1499649ef092".into());
    let other = Owner {
        // The init namespace's inode is never a container's; a pid namespace
        // inode of 1 is no one's at all.
        pid_ns: Some(format!("{boot}/pid:[1]")),
        created: now_ms() - 3 * 3_600_000,
        ..dead_owner(Phase::Planning)
    };
    assert_eq!(other.host, this_host());
    r.try_reserve(&k[..1], &other).await.unwrap();
    assert_eq!(
        owner_of(&r.list(None).await.unwrap(), &k[0]).pid_ns,
        other.pid_ns,
        "the namespace is stored"
    );
    assert!(
        matches!(
            r.try_reserve(&k[..1], &live_owner()).await,
            Err(ReserveError::Conflict(_))
        ),
        "a planning owner in another pid namespace holds its key, whatever its pid is here"
    );
    assert!(
        r.held(now_ms(), None, None).await.unwrap().contains(&k[0]),
        "held lists it"
    );
    assert!(
        !r.prune(now_ms(), Some(&env), Some(Duration::from_secs(3_600)))
            .await
            .unwrap()
            .contains(&k[0]),
        "prune keeps it, even with older_than"
    );
    let expired = Owner {
        expires: now_ms() - 1_000,
        ..other
    };
    r.try_reserve(&k[1..], &expired).await.unwrap();
    r.try_reserve(&k[1..], &live_owner())
        .await
        .expect("held until expiry, then free");
}

/// `prune` of one environment removes the free keys of that environment
/// and of none (`cpid.<CPID>`), and leaves other environments' keys alone,
/// free or not.
pub async fn prune_by_environment(r: &dyn Reserver) {
    let run = rand::random::<u32>();
    let env = |x: &str| Env::new(format!("prune{run}{x}")).unwrap();
    let (a, b) = (env("a"), env("b"));
    let key = |e: &Env, kind, what: &str| Key::new(kind, format!("{e}_{what}")).unwrap();
    let expired_a = key(&a, KeyKind::Name, "web01.example.com");
    let live_a = key(&a, KeyKind::Id, "web.cluster.id.1");
    let expired_b = key(&b, KeyKind::Name, "web01.example.com");
    let expired_none = Key::cpid(Cpid::generate());
    let expired = Owner {
        expires: now_ms() - 1_000,
        ..live_owner()
    };
    r.try_reserve(
        &[expired_a.clone(), expired_b.clone(), expired_none.clone()],
        &expired,
    )
    .await
    .unwrap();
    let live = r
        .try_reserve(std::slice::from_ref(&live_a), &live_owner())
        .await
        .unwrap();

    let pruned = r.prune(now_ms(), Some(&a), None).await.unwrap();
    assert!(
        pruned.contains(&expired_a),
        "env {a}'s expired key: {pruned:?}"
    );
    assert!(
        pruned.contains(&expired_none),
        "the expired key of no environment: {pruned:?}"
    );
    assert!(
        !pruned.contains(&expired_b),
        "env {b}'s key is out of scope: {pruned:?}"
    );
    assert!(!pruned.contains(&live_a), "a live key stays: {pruned:?}");
    let list = r.list(None).await.unwrap();
    for gone in [&expired_a, &expired_none] {
        assert_eq!(held_by(&list, gone), None, "{gone} removed");
    }
    assert_eq!(held_by(&list, &expired_b), Some(expired.cpid), "kept");
    assert!(held_by(&list, &live_a).is_some(), "kept");

    let pruned = r.prune(now_ms(), Some(&b), None).await.unwrap();
    assert!(pruned.contains(&expired_b), "env {b}'s turn: {pruned:?}");
    r.release(&live, Duration::ZERO).await.unwrap();
}

/// `prune` removes expired keys, dead planning owners' keys and, with
/// `older_than`, old keys of owners known dead (on this host, whatever their
/// phase) — never a live owner's, and never an owner's on another host
/// (its liveness is unknown) before its lease expires, however old.
pub async fn prune_respects_live_owners(r: &dyn Reserver) {
    let now = now_ms();
    let k = fresh_keys("prune", 7);
    let live = live_owner();
    let mut expired = live_owner();
    expired.expires = now - 1_000;
    let dead = dead_owner(Phase::Planning);
    let mut remote_old = live_owner();
    remote_old.host = format!("elsewhere-{}.invalid", rand::random::<u32>());
    remote_old.created = now - 3 * 3_600_000;
    let mut remote_young = remote_old.clone();
    remote_young.cpid = Cpid::generate();
    remote_young.created = now;
    let mut live_old = live.clone();
    live_old.created = now - 3 * 3_600_000;
    let dead_launching_old = Owner {
        created: now - 3 * 3_600_000,
        ..dead_owner(Phase::Launching)
    };
    // A run on another host that waited hours for a throttle slot and is
    // launching now: old keys, renewed, unexpired.
    let remote_launching = Owner {
        host: "other.invalid".into(),
        created: now - 3 * 3_600_000,
        expires: now + 600_000,
        phase: Phase::Launching,
        ..live_owner()
    };
    let owners = [
        &live_old,
        &expired,
        &dead,
        &dead_launching_old,
        &remote_old,
        &remote_young,
        &remote_launching,
    ];
    for (key, owner) in k.iter().zip(owners) {
        r.try_reserve(std::slice::from_ref(key), owner)
            .await
            .unwrap();
    }
    let pruned = r
        .prune(now, None, Some(Duration::from_secs(7_200)))
        .await
        .unwrap();
    for (i, key) in k.iter().enumerate() {
        let gone = pruned.contains(key);
        let expect_gone = matches!(i, 1..=3);
        assert_eq!(
            gone, expect_gone,
            "key {i} ({key}, owner {:?}) pruned={gone}",
            owners[i]
        );
    }
    let list = r.list(None).await.unwrap();
    assert_eq!(
        held_by(&list, &k[0]),
        Some(live.cpid),
        "a live owner's key survives prune"
    );
    assert_eq!(held_by(&list, &k[1]), None);
    for (i, owner) in owners.iter().enumerate().skip(4) {
        assert_eq!(
            held_by(&list, &k[i]),
            Some(owner.cpid),
            "the unexpired key of an owner on another host stays, however old"
        );
    }
    assert!(
        matches!(
            r.try_reserve(&k[6..], &live_owner()).await,
            Err(ReserveError::Conflict(_))
        ),
        "and stays held"
    );
    let again = r.prune(now, None, Some(Duration::ZERO)).await.unwrap();
    for i in [0, 4, 5, 6] {
        assert!(
            !again.contains(&k[i]),
            "key {i} ({}) pruned with older_than 0",
            k[i]
        );
    }
    assert_eq!(live.host, this_host());
    // Once its lease expired, the remote launching owner's key goes.
    let after = r.prune(now + 600_000, None, None).await.unwrap();
    assert!(after.contains(&k[6]), "{}: pruned at its expiry", k[6]);
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
    let list = r.list(None).await.unwrap();
    for (cpid, keys) in &winners {
        for key in keys {
            assert_eq!(held_by(&list, key), Some(*cpid));
        }
    }
    let held: Vec<_> = list.iter().filter(|x| k.contains(&x.key)).collect();
    assert_eq!(held.len(), 3, "losers leave nothing behind: {held:?}");
    winners.len()
}

/// `tasks` concurrent runs race to take over one expired key: exactly one
/// wins (a takeover is conditioned on the record it replaces).
pub async fn race_takeover(r: Arc<dyn Reserver>, tasks: usize) -> usize {
    let expired = Owner {
        expires: now_ms() - 1_000,
        ..live_owner()
    };
    race_takeover_of(r, tasks, expired).await
}

/// `tasks` concurrent runs race to take over a key held by `free` (an
/// owner whose keys are free: expired, or a dead local planner): exactly
/// one wins.
pub async fn race_takeover_of(r: Arc<dyn Reserver>, tasks: usize, free: Owner) -> usize {
    let k = fresh_keys("takeover", 1);
    r.try_reserve(&k, &free).await.unwrap();
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..tasks {
        let (r, k) = (r.clone(), k.clone());
        set.spawn(async move {
            let owner = live_owner();
            (owner.cpid, r.try_reserve(&k, &owner).await)
        });
    }
    let mut winners = Vec::new();
    while let Some(j) = set.join_next().await {
        match j.unwrap() {
            (cpid, Ok(_)) => winners.push(cpid),
            (_, Err(ReserveError::Conflict(_))) => {}
            (_, Err(e)) => panic!("backend error in takeover race: {e}"),
        }
    }
    assert_eq!(winners.len(), 1, "one takeover wins: {winners:?}");
    assert_eq!(
        held_by(&r.list(None).await.unwrap(), &k[0]),
        Some(winners[0])
    );
    winners.len()
}
