//! `Ec2Backend` reads large inventories completely and correctly from the
//! testkit's EC2 replay endpoint (moto does not paginate and is slow at this scale).

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use conductor_aws::ec2::Ec2Backend;
use conductor_core::cloud::{CloudBackend, Scope, Selector};
use conductor_core::Region;
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

fn peak_rss_kb() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_fifty_thousand_instances_completely() {
    let all = ReplayInstance::generate(50_000);
    let expected: BTreeSet<String> = all.iter().map(|i| i.id.clone()).collect();
    let replay = Ec2Replay::start(all, 1000, Duration::ZERO).await;
    let ec2 = backend(&replay, None).await;
    let start = Instant::now();
    let inv = ec2.inventory(&Scope::all(region())).await.unwrap();
    let took = start.elapsed();
    let ids: BTreeSet<String> = inv.instances.iter().map(|i| i.id.clone()).collect();
    assert_eq!(inv.instances.len(), 50_000, "no instance read twice");
    assert_eq!(ids, expected, "every instance read");
    assert_eq!(replay.calls(), 50, "50 pages of 1000");
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
    eprintln!(
        "50,000 instances in {took:?} ({} pages), peak RSS {} MB",
        replay.calls(),
        peak_rss_kb() / 1024
    );
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
