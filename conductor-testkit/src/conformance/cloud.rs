//! The [`CloudBackend`] conformance suite.

use std::collections::BTreeMap;
use std::time::Duration;

use conductor_core::{
    conductor_tag, CloudBackend, InstanceTags, Inventory, LaunchSpec, Scope, Selector, NAME_TAG,
};
use conductor_core::{LaunchSettings, Region, Zone};

/// What a backend needs to launch test instances.
#[derive(Clone, Debug)]
pub struct CloudFixture {
    /// Zone to launch in.
    pub zone: Zone,
    /// Launch settings the backend accepts (image, size, ...).
    pub settings: LaunchSettings,
    /// How long launched instances may take to show.
    pub visible_timeout: Duration,
}

/// Runs every check of the suite.
pub async fn run_all(c: &dyn CloudBackend, f: &CloudFixture) {
    launch_then_visible_with_tags(c, f).await;
    selectors_filter(c, f).await;
    other_regions_are_separate(c, f).await;
    tag_instances_adds_and_keeps_tags(c, f).await;
    terminate_removes(c, f).await;
    clock_is_the_clouds_time(c, f).await;
}

/// Specs for `n` instances named `<prefix>NN.<zone>.conformance.example.com`.
pub fn specs(f: &CloudFixture, prefix: &str, n: usize) -> Vec<LaunchSpec> {
    (1..=n)
        .map(|i| {
            let name = format!("{prefix}{i:02}.{}.conformance.example.com", f.zone);
            let mut tags = BTreeMap::new();
            tags.insert(NAME_TAG.to_string(), name.clone());
            tags.insert(conductor_tag("env"), "conformance".into());
            tags.insert(conductor_tag(&format!("{prefix}.only{i}")), i.to_string());
            LaunchSpec {
                name: name.clone(),
                zone: f.zone.clone(),
                client_token: format!("conf-{prefix}-{i}"),
                tags,
                settings: f.settings.clone(),
                user_data: None,
            }
        })
        .collect()
}

fn unique(tag: &str) -> String {
    format!("conf{tag}{}-", rand::random::<u32>())
}

async fn launch_visible(c: &dyn CloudBackend, f: &CloudFixture, specs: &[LaunchSpec]) {
    let results = c.launch(specs).await.expect("launch");
    assert_eq!(results.len(), specs.len(), "one result per spec");
    for (r, s) in results.iter().zip(specs) {
        assert_eq!(r.name, s.name, "results in spec order");
        let l = r
            .outcome
            .as_ref()
            .unwrap_or_else(|e| panic!("launch of {} failed: {e:?}", s.name));
        assert!(!l.instance_id.is_empty());
    }
    let names: Vec<String> = specs.iter().map(|s| s.name.clone()).collect();
    let seen = c
        .wait_visible(&f.zone.region(), &names, f.visible_timeout)
        .await
        .expect("wait_visible");
    assert_eq!(
        seen.len(),
        names.len(),
        "all launched instances become visible: {seen:?}"
    );
}

fn names(inv: &Inventory) -> Vec<String> {
    let mut v: Vec<String> = inv
        .live()
        .filter_map(|i| i.name().map(str::to_string))
        .collect();
    v.sort();
    v
}

/// Launched instances show in the inventory with their tags, zone and a live state.
pub async fn launch_then_visible_with_tags(c: &dyn CloudBackend, f: &CloudFixture) {
    let p = unique("tags");
    let s = specs(f, &p, 2);
    launch_visible(c, f, &s).await;
    let inv = c.inventory(&Scope::all(f.zone.region())).await.unwrap();
    for spec in &s {
        let i = inv
            .live()
            .find(|i| i.name() == Some(spec.name.as_str()))
            .expect("listed");
        assert!(i.state.is_live());
        assert_eq!(i.zone, f.zone.as_str());
        assert_eq!(i.region, f.zone.region());
        for (k, v) in &spec.tags {
            assert_eq!(i.tag(k), Some(v.as_str()), "tag {k} of {}", spec.name);
        }
    }
}

/// Name prefixes, tag keys and tag values select exactly the matching instances.
pub async fn selectors_filter(c: &dyn CloudBackend, f: &CloudFixture) {
    let p = unique("sel");
    let s = specs(f, &p, 3);
    launch_visible(c, f, &s).await;
    let region = f.zone.region();
    let read = |select: Vec<Selector>| {
        let scope = Scope {
            region: region.clone(),
            select,
        };
        async move { names(&c.inventory(&scope).await.unwrap()) }
    };
    let all: Vec<String> = s.iter().map(|x| x.name.clone()).collect();
    assert_eq!(read(vec![Selector::NamePrefix(p.clone())]).await, all);
    assert_eq!(
        read(vec![Selector::TagKey(conductor_tag(&format!("{p}.only2")))]).await,
        vec![all[1].clone()]
    );
    assert_eq!(
        read(vec![Selector::Tag {
            key: NAME_TAG.into(),
            value: all[2].clone()
        }])
        .await,
        vec![all[2].clone()]
    );
    assert_eq!(
        read(vec![
            Selector::Tag {
                key: NAME_TAG.into(),
                value: all[0].clone()
            },
            Selector::TagKey(conductor_tag(&format!("{p}.only3"))),
        ])
        .await,
        vec![all[0].clone(), all[2].clone()],
        "selectors are any-of"
    );
    assert!(read(vec![Selector::NamePrefix(format!("{p}x"))])
        .await
        .is_empty());
    assert!(read(vec![Selector::Tag {
        key: NAME_TAG.into(),
        value: format!("{p}nothing")
    }])
    .await
    .is_empty());
}

/// Another region does not list this region's instances.
pub async fn other_regions_are_separate(c: &dyn CloudBackend, f: &CloudFixture) {
    let p = unique("reg");
    let s = specs(f, &p, 1);
    launch_visible(c, f, &s).await;
    let other = if f.zone.region().as_str() == "us-west-2" {
        "eu-west-1"
    } else {
        "us-west-2"
    };
    let scope = Scope {
        region: Region::new(other).unwrap(),
        select: vec![Selector::NamePrefix(p)],
    };
    assert!(names(&c.inventory(&scope).await.unwrap()).is_empty());
}

/// After an inventory read, a backend that reports the cloud's clock
/// reports a time within a few seconds of this host's (the cloud and the
/// test run on one machine, or NTP-synchronized ones), in whole seconds.
pub async fn clock_is_the_clouds_time(c: &dyn CloudBackend, f: &CloudFixture) {
    c.inventory(&Scope::all(f.zone.region())).await.unwrap();
    let Some(reading) = c.clock() else {
        return;
    };
    assert_eq!(reading.date_ms % 1000, 0, "an HTTP date: whole seconds");
    let skew = conductor_core::ClockSkew::measure(&conductor_core::Clock::system(), &reading);
    assert_eq!(
        skew.verdict(Duration::ZERO),
        conductor_core::SkewVerdict::Fine,
        "{skew}"
    );
}

/// Terminated instances leave the inventory.
pub async fn terminate_removes(c: &dyn CloudBackend, f: &CloudFixture) {
    let p = unique("term");
    let s = specs(f, &p, 2);
    launch_visible(c, f, &s).await;
    let scope = Scope {
        region: f.zone.region(),
        select: vec![Selector::NamePrefix(p)],
    };
    let inv = c.inventory(&scope).await.unwrap();
    let victim = inv
        .live()
        .find(|i| i.name() == Some(s[0].name.as_str()))
        .unwrap()
        .to_ref();
    c.terminate(&[victim]).await.expect("terminate");
    let deadline = tokio::time::Instant::now() + f.visible_timeout;
    loop {
        let left = names(&c.inventory(&scope).await.unwrap());
        if left == vec![s[1].name.clone()] {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "terminated instance still listed: {left:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `tag_instances` gives each instance its own tags: new keys are added, a
/// key it has takes the new value, its other tags stay; the tags select it
/// in later reads (adopt relies on this), and tagging again changes nothing.
pub async fn tag_instances_adds_and_keeps_tags(c: &dyn CloudBackend, f: &CloudFixture) {
    let p = unique("tag");
    let s = specs(f, &p, 2);
    launch_visible(c, f, &s).await;
    let scope = Scope {
        region: f.zone.region(),
        select: vec![Selector::NamePrefix(p.clone())],
    };
    let inv = c.inventory(&scope).await.unwrap();
    let refs: Vec<_> = s
        .iter()
        .map(|spec| {
            inv.live()
                .find(|i| i.name() == Some(spec.name.as_str()))
                .expect("launched instance listed")
                .to_ref()
        })
        .collect();
    let role = conductor_tag(&format!("{p}.role"));
    let tags: Vec<InstanceTags> = refs
        .iter()
        .enumerate()
        .map(|(k, r)| InstanceTags {
            instance: r.clone(),
            tags: [
                (role.clone(), format!("role{k}")),
                (conductor_tag("env"), "conformance-adopted".to_string()),
            ]
            .into_iter()
            .collect(),
        })
        .collect();
    for _ in 0..2 {
        c.tag_instances(&tags).await.expect("tag_instances");
    }
    let by_tag = Scope {
        region: f.zone.region(),
        select: vec![Selector::TagKey(role.clone())],
    };
    let deadline = tokio::time::Instant::now() + f.visible_timeout;
    loop {
        let inv = c.inventory(&by_tag).await.unwrap();
        let seen: Vec<(String, String, String, String)> = inv
            .live()
            .map(|i| {
                let t = |k: &str| i.tag(k).unwrap_or_default().to_string();
                (
                    t(NAME_TAG),
                    t(&role),
                    t(&conductor_tag("env")),
                    t(&conductor_tag(&format!(
                        "{p}.only{}",
                        if t(&role) == "role0" { 1 } else { 2 }
                    ))),
                )
            })
            .collect();
        let want: Vec<(String, String, String, String)> = s
            .iter()
            .enumerate()
            .map(|(k, spec)| {
                (
                    spec.name.clone(),
                    format!("role{k}"),
                    "conformance-adopted".into(),
                    (k + 1).to_string(),
                )
            })
            .collect();
        let mut sorted = seen.clone();
        sorted.sort();
        if sorted == want {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "tags after tag_instances: {seen:?}, wanted {want:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
