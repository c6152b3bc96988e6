//! Error mapping, retries and the launch in-flight limit of `Ec2Backend`,
//! against the testkit's EC2 replay endpoint (which can inject AWS errors and
//! counts the calls it serves at once).

use std::time::Duration;

use conductor_aws::ec2::Ec2Backend;
use conductor_core::{BackendErrorKind, Region};
use conductor_core::{CloudBackend, Scope};
use conductor_testkit::conformance::cloud::{specs, CloudFixture};
use conductor_testkit::ec2_replay::{Ec2Replay, ReplayInstance};
use conductor_testkit::fixtures;

/// Each backend gets its own retry partition: the adaptive rate limiter of a
/// partition is process-wide, and throttling one test must not slow another.
async fn backend(replay: &Ec2Replay, attempts: u32, inflight: usize) -> Ec2Backend {
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    Ec2Backend::builder()
        .retry_partition(format!("ec2-errors-test-{n}"))
        .region("us-east-1")
        .endpoint_url(replay.endpoint())
        .static_credentials("replay", "replay")
        .max_attempts(attempts)
        .max_inflight(inflight)
        .build()
        .await
}

fn all() -> Scope {
    Scope::all(Region::new("us-east-1").unwrap())
}

fn fixture(settings: serde_json::Value) -> CloudFixture {
    CloudFixture {
        zone: fixtures::zone(),
        settings: conductor_core::LaunchSettings::parse(&settings).unwrap(),
        visible_timeout: Duration::from_secs(1),
    }
}

#[tokio::test]
async fn throttling_is_retried_then_reported_as_throttled() {
    let replay = Ec2Replay::start(ReplayInstance::generate(30), 1000, Duration::ZERO).await;
    let ec2 = backend(&replay, 4, 4).await;
    // One throttled attempt, then the adaptive mode's retry (which waits for
    // its client-side rate limiter: seconds, by design).
    replay.inject(503, "RequestLimitExceeded", 1);
    let t = std::time::Instant::now();
    let inv = ec2.inventory(&all()).await.unwrap();
    eprintln!("read after one throttled attempt in {:?}", t.elapsed());
    assert_eq!(inv.instances.len(), 30, "read after a throttled attempt");
    assert_eq!(replay.calls_of("DescribeInstances"), 2);

    let once = backend(&replay, 1, 4).await;
    replay.inject(503, "RequestLimitExceeded", 1);
    let e = once.inventory(&all()).await.unwrap_err();
    assert_eq!(e.kind, BackendErrorKind::Throttled, "{e}");
    assert!(e.message.contains("DescribeInstances"), "{e}");
}

#[tokio::test]
async fn server_errors_are_retried_then_unreachable_and_client_errors_rejected() {
    let replay = Ec2Replay::start(ReplayInstance::generate(3), 1000, Duration::ZERO).await;
    let retrying = backend(&replay, 3, 4).await;
    replay.inject(500, "InternalError", 2);
    let t = std::time::Instant::now();
    assert_eq!(retrying.inventory(&all()).await.unwrap().instances.len(), 3);
    eprintln!("read after two 500s in {:?}", t.elapsed());
    assert_eq!(replay.calls_of("DescribeInstances"), 3);

    let ec2 = backend(&replay, 1, 4).await;
    replay.inject(500, "InternalError", 1);
    let e = ec2.inventory(&all()).await.unwrap_err();
    assert_eq!(e.kind, BackendErrorKind::Unreachable, "{e}");

    replay.inject(403, "UnauthorizedOperation", 1);
    let e = ec2.inventory(&all()).await.unwrap_err();
    assert_eq!(e.kind, BackendErrorKind::Rejected, "{e}");
    assert!(
        e.message.contains("UnauthorizedOperation") && e.message.contains("us-east-1"),
        "{e}"
    );
}

#[tokio::test]
async fn launches_respect_the_inflight_limit_and_refusals_are_definite() {
    // The endpoint refuses RunInstances (400 InvalidAction) after 50 ms.
    let replay = Ec2Replay::start(vec![], 1000, Duration::from_millis(50)).await;
    let ec2 = backend(&replay, 1, 3).await;
    let f = fixture(serde_json::json!({"image": "ami-0abc", "size": "t3.small"}));
    let s = specs(&f, "limit", 12);
    let results = ec2.launch(&s).await.unwrap();
    assert_eq!(replay.calls_of("RunInstances"), 12);
    assert!(
        replay.peak_concurrency() <= 3,
        "at most 3 launches at once, saw {}",
        replay.peak_concurrency()
    );
    for (r, spec) in results.iter().zip(&s) {
        assert_eq!(r.name, spec.name, "results in spec order");
        let fail = r.outcome.as_ref().unwrap_err();
        assert!(fail.definite, "AWS refused the request: {}", fail.message);
        assert!(
            fail.message.contains(&spec.name) && fail.message.contains("ami-0abc"),
            "{}",
            fail.message
        );
    }

    // Throttled after the last attempt: an earlier attempt may have launched it.
    replay.inject(503, "RequestLimitExceeded", 1);
    let r = ec2.launch(&s[..1]).await.unwrap();
    let fail = r[0].outcome.as_ref().unwrap_err();
    assert!(!fail.definite, "{}", fail.message);
}

#[tokio::test]
async fn bad_settings_fail_for_sure_before_any_call() {
    let replay = Ec2Replay::start(vec![], 1000, Duration::ZERO).await;
    let ec2 = backend(&replay, 1, 4).await;
    for (settings, needle) in [
        (serde_json::json!({"size": "t3.small"}), "no image"),
        (
            serde_json::json!({"image": "ami-1", "volumes": [{"size": 10}]}),
            "volumes[0]",
        ),
        (
            serde_json::json!({"image": "ami-1", "volumes": [{"device": "/dev/sdf", "size": "ten"}]}),
            "size",
        ),
        (
            serde_json::json!({"image": "ami-1", "network_interfaces": "eth0"}),
            "network_interfaces",
        ),
        (
            serde_json::json!({"image": "ami-1", "salt_version": "3007 && reboot"}),
            "salt_version",
        ),
        (
            serde_json::json!({"image": "ami-1", "grains": {"big": "x".repeat(20_000)}}),
            "user data",
        ),
    ] {
        // Settings that do not read as typed launch settings are refused
        // while planning, before a spec exists; the rest by the backend.
        let typed = match conductor_core::LaunchSettings::parse(&settings) {
            Ok(t) => t,
            Err(e) => {
                assert!(e.contains(needle), "{needle}: {e}");
                continue;
            }
        };
        let f = CloudFixture {
            zone: fixtures::zone(),
            settings: typed,
            visible_timeout: Duration::from_secs(1),
        };
        let s = specs(&f, "bad", 1);
        let r = ec2.launch(&s).await.unwrap();
        let fail = r[0].outcome.as_ref().unwrap_err();
        assert!(fail.definite, "{}", fail.message);
        assert!(
            fail.message.contains(needle) && fail.message.contains(&s[0].name),
            "{needle}: {}",
            fail.message
        );
    }
    assert_eq!(replay.calls(), 0, "nothing was sent");
}
