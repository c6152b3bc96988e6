//! The clock check before reserving: a run whose clock is off from the
//! cloud's (an injected clock, not the system's) plans and builds with a
//! warning past a quarter of the release grace, and refuses with exit class
//! 2, naming both clocks and reserving nothing, past the grace.

use std::time::Duration;

use conductor_core::{Clock, ErrorClass, Reserver};
use conductor_testkit::fixtures;
use conductor_testkit::harness::Harness;

/// A harness whose runs read time from a clock `skew_s` seconds off the
/// cloud's (the fake cloud answers with the system's time), grace 120 s.
fn skewed(skew_s: i64) -> Harness {
    Harness::new().with_options(|o| {
        o.release_grace = Duration::from_secs(120);
        o.clock = Clock::skewed(skew_s * 1000);
    })
}

#[tokio::test]
async fn a_small_skew_passes_unremarked() {
    let h = skewed(10);
    let plan = h
        .conductor()
        .plan(&fixtures::role_request("activemq", None))
        .await
        .unwrap();
    assert_eq!(plan.clock_skew, None);
}

#[tokio::test]
async fn a_skew_past_a_quarter_of_the_grace_warns_and_the_run_goes_on() {
    for skew_s in [40, -40] {
        let h = skewed(skew_s);
        let req = fixtures::role_request("activemq", None);
        let plan = h.conductor().plan(&req).await.unwrap();
        let skew = plan.clock_skew.expect("the plan carries the skew");
        assert!(
            (skew.skew_ms - skew_s * 1000).abs() <= 1_500,
            "{skew:?} for {skew_s} s"
        );
        let report = h.conductor().create(&req).await.unwrap();
        assert!(report.success());
        assert!(report.plan.clock_skew.is_some());
    }
}

#[tokio::test]
async fn a_skew_past_the_grace_is_refused_before_anything_is_reserved() {
    for (skew_s, way) in [(200, "ahead of"), (-200, "behind")] {
        let h = skewed(skew_s);
        let req = fixtures::role_request("activemq", None);
        let e = h.conductor().plan(&req).await.unwrap_err();
        assert_eq!(e.class(), ErrorClass::BadInput, "{e}");
        let text = e.to_string();
        for part in [
            way,
            "the cloud's",
            "release grace (120 s)",
            "NTP",
            "--release-grace",
        ] {
            assert!(text.contains(part), "{part:?} in: {text}");
        }
        let e = h.conductor().create(&req).await.unwrap_err();
        assert_eq!(e.class(), ErrorClass::BadInput, "{e}");
        assert!(h.cloud.live_instances().is_empty(), "nothing launched");
        assert!(
            h.reserver.list(None).await.unwrap().is_empty(),
            "nothing left reserved"
        );
    }
}
