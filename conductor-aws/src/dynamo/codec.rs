//! The item codec: an [`Owner`] of a [`Key`] as a DynamoDB item and back,
//! and the condition and update expressions written on those attributes.
//!
//! Attributes: `pk` (the partition: prefix + the key's environment, see
//! [`partition`]), `sk` (the key text), `kind` (`name` or `id`), `cpid`,
//! `host`, `pid`, `started` and `pid_ns` (when known), `created`, `expires` (epoch ms),
//! `expires_at` ([`TTL_ATTRIBUTE`], epoch s) and `phase`.

use std::collections::HashMap;

use aws_sdk_dynamodb::types::AttributeValue;
use conductor_core::{Cpid, Holder, Key, KeyKind, Owner, Phase, Reservation};

use super::TTL_ATTRIBUTE;

/// A DynamoDB item (also the expression attribute values of a request).
pub(super) type Item = HashMap<String, AttributeValue>;

/// The update of a key's expiry, TTL attribute and phase (values of [`set_values`]).
pub(super) const SET_EXPIRY: &str = "SET expires = :e, #ttl = :t, phase = :ph";

/// The partition of the keys of environment `env` (`None`: keys of no
/// environment, such as `cpid.<CPID>`) under `prefix`: `<prefix>env/<env>`,
/// or `<prefix>global`. Environments are DNS labels, so no environment's
/// partition is another's.
pub(super) fn partition(prefix: &str, env: Option<&str>) -> String {
    match env {
        Some(env) => format!("{prefix}env/{env}"),
        None => format!("{prefix}global"),
    }
}

/// The primary key (`pk`, `sk`) of `key` under `prefix`.
pub(super) fn primary_key(prefix: &str, key: &Key) -> Item {
    HashMap::from([
        ("pk".to_string(), s(partition(prefix, key.env()))),
        ("sk".to_string(), s(key.as_str())),
    ])
}

/// A string attribute.
pub(super) fn s(v: impl Into<String>) -> AttributeValue {
    AttributeValue::S(v.into())
}

/// A number attribute.
pub(super) fn n(v: u64) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

fn get_s<'a>(item: &'a Item, k: &str) -> Option<&'a str> {
    item.get(k)?.as_s().ok().map(String::as_str)
}

fn get_n(item: &Item, k: &str) -> Option<u64> {
    item.get(k)?.as_n().ok()?.parse().ok()
}

fn phase_name(p: Phase) -> &'static str {
    match p {
        Phase::Planning => "planning",
        Phase::Launching => "launching",
        Phase::Released => "released",
    }
}

fn phase_of(s: &str) -> Option<Phase> {
    [Phase::Planning, Phase::Launching, Phase::Released]
        .into_iter()
        .find(|p| phase_name(*p) == s)
}

/// Epoch seconds for DynamoDB's TTL: the first second at or after `expires_ms`.
pub(super) fn ttl_seconds(expires_ms: u64) -> u64 {
    expires_ms.div_ceil(1000)
}

/// The owner stored in `item`, if it is well formed (no phase reads as the
/// default, [`Phase::Launching`]).
pub(super) fn owner_of(item: &Item) -> Option<Owner> {
    Some(Owner {
        cpid: Cpid::parse(get_s(item, "cpid")?).ok()?,
        host: get_s(item, "host")?.to_string(),
        pid: u32::try_from(get_n(item, "pid")?).ok()?,
        created: get_n(item, "created")?,
        expires: get_n(item, "expires")?,
        started: get_n(item, "started"),
        pid_ns: get_s(item, "pid_ns").map(str::to_string),
        phase: get_s(item, "phase").and_then(phase_of).unwrap_or_default(),
    })
}

/// The item of `key` under `prefix`, held by `owner`.
pub(super) fn item_of(prefix: &str, key: &Key, owner: &Owner) -> Item {
    let kind = if key.kind() == KeyKind::Name {
        "name"
    } else {
        "id"
    };
    let mut item = primary_key(prefix, key);
    item.extend([
        ("kind".to_string(), s(kind)),
        ("cpid".to_string(), s(owner.cpid.to_string())),
        ("host".to_string(), s(owner.host.clone())),
        ("pid".to_string(), n(u64::from(owner.pid))),
        ("created".to_string(), n(owner.created)),
        ("expires".to_string(), n(owner.expires)),
        (TTL_ATTRIBUTE.to_string(), n(ttl_seconds(owner.expires))),
        ("phase".to_string(), s(phase_name(owner.phase))),
    ]);
    if let Some(started) = owner.started {
        item.insert("started".to_string(), n(started));
    }
    if let Some(ns) = &owner.pid_ns {
        item.insert("pid_ns".to_string(), s(ns.clone()));
    }
    item
}

/// The reservation stored in `item`, if it is well formed and stored in its
/// key's partition under `prefix`.
pub(super) fn reservation_of(item: &Item, prefix: &str) -> Option<Reservation> {
    let kind = match get_s(item, "kind")? {
        "name" => KeyKind::Name,
        _ => KeyKind::Id,
    };
    let key = Key::new(kind, get_s(item, "sk")?).ok()?;
    if get_s(item, "pk")? != partition(prefix, key.env()) {
        return None;
    }
    Some(Reservation {
        key,
        kind,
        holder: Holder::Run(owner_of(item)?),
    })
}

/// The condition of a grant: the key is absent or expired at `now`, or (for
/// a takeover) still holds exactly the record `replacing` that was found
/// free — same run and same expiry. Returns the condition and its values.
pub(super) fn grant_condition(now: u64, replacing: Option<&Owner>) -> (String, Item) {
    let mut values = HashMap::from([(":now".to_string(), n(now))]);
    let mut condition = "attribute_not_exists(pk) OR expires <= :now".to_string();
    if let Some(old) = replacing {
        condition
            .push_str(" OR (cpid = :ocpid AND host = :ohost AND pid = :opid AND expires = :oexp)");
        values.insert(":ocpid".into(), s(old.cpid.to_string()));
        values.insert(":ohost".into(), s(old.host.clone()));
        values.insert(":opid".into(), n(u64::from(old.pid)));
        values.insert(":oexp".into(), n(old.expires));
    }
    (condition, values)
}

/// The condition that `owner` (cpid, host, pid) holds the item and, with
/// `expires`, that its expiry is still that. Returns the condition and its values.
pub(super) fn owned_condition(owner: &Owner, expires: Option<u64>) -> (String, Item) {
    let mut values = HashMap::from([
        (":cpid".to_string(), s(owner.cpid.to_string())),
        (":host".to_string(), s(owner.host.clone())),
        (":pid".to_string(), n(u64::from(owner.pid))),
    ]);
    let mut condition = "cpid = :cpid AND host = :host AND pid = :pid".to_string();
    if let Some(e) = expires {
        condition.push_str(" AND expires = :old");
        values.insert(":old".into(), n(e));
    }
    (condition, values)
}

/// Adds the values of [`SET_EXPIRY`] for expiry `expires` and `phase` to `values`.
pub(super) fn set_values(values: &mut Item, expires: u64, phase: Phase) {
    values.insert(":e".into(), n(expires));
    values.insert(":t".into(), n(ttl_seconds(expires)));
    values.insert(":ph".into(), s(phase_name(phase)));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owner(started: Option<u64>, phase: Phase) -> Owner {
        Owner {
            cpid: Cpid::generate(),
            host: "master-1".into(),
            pid: 4242,
            created: 1_700_000_000_000,
            expires: 1_700_000_600_001,
            started,
            pid_ns: started.map(|t| format!("8090900f-8723-4390-bc91-1499649ef092/pid:[{t}]")),
            phase,
        }
    }

    #[test]
    fn owners_round_trip_under_a_prefix() {
        for (started, phase) in [
            (Some(99), Phase::Planning),
            (None, Phase::Launching),
            (Some(1), Phase::Released),
        ] {
            let o = owner(started, phase);
            let key = Key::new(KeyKind::Id, "lab_web.cluster.id.1").unwrap();
            let item = item_of("prod/", &key, &o);
            assert_eq!(item["pk"], s("prod/env/lab"));
            assert_eq!(item["sk"], s("lab_web.cluster.id.1"));
            assert_eq!(item.contains_key("started"), started.is_some());
            assert_eq!(item.contains_key("pid_ns"), started.is_some());
            let r = reservation_of(&item, "prod/").expect("decodes");
            assert_eq!((r.key, r.kind), (key, KeyKind::Id));
            assert_eq!(r.holder, Holder::Run(o));
            assert!(
                reservation_of(&item, "test/").is_none(),
                "another prefix's item"
            );
        }
    }

    #[test]
    fn this_process_round_trips_and_an_item_without_pid_ns_reads() {
        let me = Owner::this_process(Cpid::generate(), std::time::Duration::from_secs(60));
        assert!(me.pid_ns.is_some(), "/proc names this process's namespace");
        let key = Key::new(KeyKind::Name, "a.example.com").unwrap();
        let mut item = item_of("", &key, &me);
        assert_eq!(item["pid_ns"], s(me.pid_ns.clone().unwrap()));
        assert_eq!(owner_of(&item).as_ref(), Some(&me));
        // An item written by an older version names no namespace.
        item.remove("pid_ns");
        let old = owner_of(&item).expect("still an owner");
        assert_eq!((old.pid_ns, old.started), (None, me.started));
    }

    #[test]
    fn the_ttl_attribute_rounds_up_to_seconds() {
        let o = owner(None, Phase::Planning);
        let key = Key::new(KeyKind::Name, "a.example.com").unwrap();
        let item = item_of("", &key, &o);
        assert_eq!(item["pk"], s("global"), "a key of no environment");
        assert_eq!(item[TTL_ATTRIBUTE], n(1_700_000_601));
        assert_eq!(ttl_seconds(2_000), 2);
    }

    #[test]
    fn a_missing_phase_reads_as_launching_and_bad_items_as_nothing() {
        let o = owner(None, Phase::Planning);
        let key = Key::new(KeyKind::Name, "a.example.com").unwrap();
        let mut item = item_of("", &key, &o);
        item.remove("phase");
        assert_eq!(owner_of(&item).unwrap().phase, Phase::Launching);
        item.insert("pid".into(), s("not a number"));
        assert!(owner_of(&item).is_none());
        assert!(reservation_of(&item, "").is_none());
    }

    #[test]
    fn conditions_name_their_values() {
        let o = owner(None, Phase::Planning);
        let (c, v) = grant_condition(5, Some(&o));
        assert!(c.contains("expires = :oexp"), "{c}");
        assert_eq!(v[":oexp"], n(o.expires));
        let (c, v) = owned_condition(&o, Some(7));
        assert!(c.ends_with("AND expires = :old"), "{c}");
        assert_eq!(v.len(), 4);
        assert_eq!(owned_condition(&o, None).1.len(), 3);
    }
}
