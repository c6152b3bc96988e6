//! `Ec2Backend` reads large inventories completely and correctly from the
//! testkit's EC2 replay endpoint (moto does not paginate and is slow at this scale).

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use conductor_aws::ec2::Ec2Backend;
use conductor_core::Region;
use conductor_core::{CloudBackend, Scope, Selector};
use conductor_testkit::ec2_replay::{Ec2Replay, ReplayInstance};

async fn backend(replay: &Ec2Replay, page: Option<i32>) -> Ec2Backend {
    let mut b = Ec2Backend::builder()
        .endpoint_url(replay.endpoint())
        .static_credentials("replay", "replay")
        .max_attempts(1);
    if let Some(p) = page {
        b = b.page_size(p);
    }
    b.build().await
}

fn region() -> Region {
    Region::new("us-east-1").unwrap()
}

fn status_kb(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// Resident set now, after resetting the peak (Linux `clear_refs` 5), in KB.
fn reset_peak_rss_kb() -> u64 {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
    status_kb("VmRSS:")
}

/// Peak resident set since the last reset, in KB.
fn peak_rss_kb() -> u64 {
    status_kb("VmHWM:")
}

/// Every instance read once, with its name, state, zone and tags as served.
fn assert_complete(inv: &conductor_core::Inventory, all: &[ReplayInstance]) {
    assert_eq!(
        inv.instances.len(),
        all.len(),
        "no instance missing or read twice"
    );
    let by_id: BTreeMap<&str, &ReplayInstance> = all.iter().map(|i| (i.id.as_str(), i)).collect();
    let ids: BTreeSet<&str> = inv.instances.iter().map(|i| i.id.as_str()).collect();
    assert_eq!(ids.len(), all.len(), "ids are unique");
    for i in &inv.instances {
        let want = by_id
            .get(i.id.as_str())
            .unwrap_or_else(|| panic!("{} was not served", i.id));
        assert_eq!(i.tags, want.tags, "tags of {}", i.id);
        assert_eq!(i.zone, want.zone);
        assert_eq!(i.state.as_str(), want.state);
        assert_eq!(i.region, region());
        assert!(i.launch_time.is_some());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_fifty_thousand_instances_completely() {
    let all = ReplayInstance::generate(50_000);
    let replay = Ec2Replay::start(all.clone(), 1000, Duration::ZERO).await;
    let ec2 = backend(&replay, None).await;
    let before = reset_peak_rss_kb();
    let start = Instant::now();
    let inv = ec2.inventory(&Scope::all(region())).await.unwrap();
    let took = start.elapsed();
    let peak = peak_rss_kb();
    assert_eq!(replay.calls(), 50, "50 pages of 1000");
    assert_complete(&inv, &all);
    let i = inv
        .instances
        .iter()
        .find(|i| i.id == format!("i-{:017x}", 12_340))
        .unwrap();
    assert_eq!(
        i.name(),
        Some("svc340-node012340.us-east-1a.test.example.com")
    );
    assert_eq!(i.conductor_tag("group"), Some("svc340"));
    // The process also holds the endpoint's 50,000 instances and the
    // expected copy; run alone (`--exact`) for figures of the read itself.
    eprintln!(
        "50,000 instances in {took:?} ({} pages of 1000; endpoint busy {:?}); RSS {} MB before the read, peak {} MB during it",
        replay.calls(),
        replay.busy(),
        before / 1024,
        peak / 1024
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_fifty_thousand_instances_in_pages_of_one_hundred() {
    let all = ReplayInstance::generate(50_000);
    let replay = Ec2Replay::start(all.clone(), 1000, Duration::ZERO).await;
    let ec2 = backend(&replay, Some(100)).await;
    let start = Instant::now();
    let inv = ec2.inventory(&Scope::all(region())).await.unwrap();
    let took = start.elapsed();
    assert_eq!(replay.calls(), 500, "500 pages of 100");
    assert_complete(&inv, &all);
    eprintln!("50,000 instances in pages of 100: {took:?}");
}

/// A plan's read follows the instances that match, not the account: the
/// same plan against the same 7 matching instances, among 1,000 or 50,000
/// others, costs the same calls and the same instances on the wire.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plan_read_costs_what_matches_not_the_account() {
    let scope = Scope {
        region: region(),
        select: vec![
            Selector::NamePrefix("devops-mq".into()),
            Selector::NamePrefix("devops-nifi-".into()),
            Selector::TagKey("conductor:devops.nifi.cluster.id".into()),
            Selector::TagKey("conductor:cloud.nifi.cluster.id".into()),
            Selector::Tag {
                key: "conductor:cpid".into(),
                value: "16833830331552303186".into(),
            },
        ],
    };
    let planted = |n: usize| {
        let mut v = ReplayInstance::generate(n);
        for (k, name) in [
            "devops-mq01",
            "devops-mq02",
            "devops-nifi-01.clid-1",
            "devops-nifi-02.clid-1",
        ]
        .into_iter()
        .enumerate()
        {
            let mut tags = BTreeMap::from([(
                "Name".to_string(),
                format!("{name}.us-east-1a.test.foobar.com"),
            )]);
            if name.contains("nifi") {
                tags.insert("conductor:devops.nifi.cluster.id".into(), "1".into());
            }
            v.push(ReplayInstance {
                id: format!("i-planted{k}"),
                zone: "us-east-1a".into(),
                state: "running".into(),
                tags,
            });
        }
        // Stopped still counts; terminated does not.
        v.last_mut().unwrap().state = "stopped".into();
        v[n].state = "terminated".into();
        v.push(ReplayInstance {
            id: "i-planted-cpid".into(),
            zone: "us-east-1a".into(),
            state: "pending".into(),
            tags: BTreeMap::from([
                ("Name".into(), "other.example.com".into()),
                ("conductor:cpid".into(), "16833830331552303186".into()),
            ]),
        });
        v
    };
    let mut figures = Vec::new();
    for n in [1_000usize, 50_000] {
        let replay = Ec2Replay::start(planted(n), 1000, Duration::ZERO).await;
        let ec2 = backend(&replay, None).await;
        let start = Instant::now();
        let inv = ec2.inventory(&scope).await.unwrap();
        let took = start.elapsed();
        let mut got: Vec<&str> = inv.instances.iter().map(|i| i.id.as_str()).collect();
        got.sort();
        assert_eq!(
            got,
            ["i-planted-cpid", "i-planted1", "i-planted2", "i-planted3"],
            "at {n}"
        );
        // tag:Name (both prefixes), tag-key (both keys), tag:conductor:cpid:
        // three filters, one page each, however large the account.
        assert_eq!(replay.calls_of("DescribeInstances"), 3, "at {n}");
        // mq02 and nifi-02 match two filters each: 4 + 2 sent, 4 kept.
        assert_eq!(replay.instances_served(), 6, "at {n}");
        figures.push((n, took, replay.busy()));
    }
    eprintln!("plan reads (account size, client wall time, of which the endpoint's filtering): {figures:?}");
}

#[tokio::test]
async fn small_pages_and_filters_are_followed_to_the_end() {
    let all = ReplayInstance::generate(2_000);
    let replay = Ec2Replay::start(all.clone(), 1000, Duration::ZERO).await;
    let ec2 = backend(&replay, Some(9)).await;
    let inv = ec2.inventory(&Scope::all(region())).await.unwrap();
    assert_eq!(inv.instances.len(), 2_000);
    assert_eq!(replay.calls(), 2_000_usize.div_ceil(9));

    // A name prefix and a tag value: exactly the matching instances, any-of.
    let scope = Scope {
        region: region(),
        select: vec![
            Selector::NamePrefix("svc007-".into()),
            Selector::Tag {
                key: "conductor:group".into(),
                value: "svc010".into(),
            },
        ],
    };
    let got: BTreeSet<String> = ec2
        .inventory(&scope)
        .await
        .unwrap()
        .instances
        .into_iter()
        .map(|i| i.id)
        .collect();
    let want: BTreeSet<String> = all
        .iter()
        .filter(|i| {
            i.tags["Name"].starts_with("svc007-")
                || i.tags.get("conductor:group").map(String::as_str) == Some("svc010")
        })
        .map(|i| i.id.clone())
        .collect();
    assert_eq!(got, want);
    assert_eq!(
        got.len(),
        4 + 4,
        "svc007 names and the svc010 group, 4 each in 2,000"
    );
}

/// The endpoint as a simulated cloud: `Ec2Backend` passes the CloudBackend
/// conformance suite on it (launch with tags, filters, regions, terminate).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn launches_and_terminates_pass_the_conformance_suite() {
    let replay = Ec2Replay::start_cloud(ReplayInstance::generate(100), 1000, Duration::ZERO).await;
    let ec2 = backend(&replay, None).await;
    let f = conductor_testkit::conformance::cloud::CloudFixture {
        zone: conductor_testkit::fixtures::zone(),
        settings: conductor_core::LaunchSettings::parse(
            &serde_json::json!({"image": "ami-0abc", "size": "t3.medium"}),
        )
        .unwrap(),
        visible_timeout: Duration::from_secs(2),
    };
    conductor_testkit::conformance::cloud::run_all(&ec2, &f).await;
    // Launched (2 + 3 + 1 + 2) with their tags, one terminated; two more
    // launched and re-tagged `conductor:env=conformance-adopted` by CreateTags.
    let launched: Vec<ReplayInstance> = replay
        .instances()
        .into_iter()
        .filter(|i| i.tags.contains_key("conductor:env"))
        .filter(|i| i.tags["conductor:env"] == "conformance")
        .collect();
    assert_eq!(launched.len(), 8);
    assert_eq!(
        launched.iter().filter(|i| i.state == "terminated").count(),
        1
    );
    assert_eq!(replay.calls_of("RunInstances"), 10);
    assert_eq!(replay.calls_of("TerminateInstances"), 1);
    // One CreateTags per instance, each tagging done twice.
    assert_eq!(replay.calls_of("CreateTags"), 4);
    let adopted = replay
        .instances()
        .into_iter()
        .filter(|i| i.tags.get("conductor:env").map(String::as_str) == Some("conformance-adopted"))
        .count();
    assert_eq!(adopted, 2);
}

/// A client token launches once; unknown ids are dropped from a terminate.
#[tokio::test]
async fn client_tokens_are_idempotent_and_unknown_ids_are_dropped() {
    let replay = Ec2Replay::start_cloud(vec![], 1000, Duration::ZERO).await;
    let ec2 = backend(&replay, None).await;
    let f = conductor_testkit::conformance::cloud::CloudFixture {
        zone: conductor_testkit::fixtures::zone(),
        settings: conductor_core::LaunchSettings::parse(&serde_json::json!({"image": "ami-0abc"}))
            .unwrap(),
        visible_timeout: Duration::from_secs(1),
    };
    let specs = conductor_testkit::conformance::cloud::specs(&f, "tok", 2);
    let first = ec2.launch(&specs).await.unwrap();
    let again = ec2.launch(&specs).await.unwrap();
    let ids = |r: &[conductor_core::LaunchResult]| -> Vec<String> {
        r.iter()
            .map(|l| l.outcome.as_ref().unwrap().instance_id.clone())
            .collect()
    };
    assert_eq!(ids(&first), ids(&again), "same token, same instances");
    assert_eq!(replay.instances().len(), 2);
    let detail = &first[0].outcome.as_ref().unwrap().detail;
    assert_eq!(detail["ImageId"], "ami-0abc");
    assert_eq!(detail["Tags"]["Name"], specs[0].name.as_str());

    let refs: Vec<conductor_core::InstanceRef> = ids(&first)
        .into_iter()
        .chain(["i-0000000000000dead".to_string()])
        .map(|id| conductor_core::InstanceRef {
            id,
            region: region(),
            name: None,
        })
        .collect();
    ec2.terminate(&refs).await.unwrap();
    assert_eq!(
        replay.calls_of("TerminateInstances"),
        2,
        "refused, then the rest"
    );
    assert!(replay.instances().iter().all(|i| i.state == "terminated"));
    let live = ec2.inventory(&Scope::all(region())).await.unwrap();
    assert_eq!(live.instances.len(), 0);
}
