//! The shared AWS configuration of the backends: credentials chain (or
//! static credentials for tests), standard retries, optional endpoint.

use aws_config::retry::RetryConfig;
use aws_config::{BehaviorVersion, Region, SdkConfig};
use tracing::{info_span, Instrument};

/// Loads the AWS configuration: the default credential chain unless
/// `credentials` (key id, secret) are given, the SDK's standard retry mode
/// with `max_attempts`, and `endpoint` (else `AWS_ENDPOINT_URL`, else AWS).
///
/// Standard, not adaptive: adaptive mode's client-side rate limiter drops to
/// 0.5 requests/s after one throttle in a new process, so a short-lived CLI
/// run slept about 20 s per throttled retry (measured through a proxy that
/// throttles 30% of calls: 118 s for one create). Core's `RetryCloud` retries
/// whole calls on top with its own jittered backoff.
pub async fn load(
    endpoint: Option<&str>,
    credentials: Option<&(String, String)>,
    max_attempts: u32,
) -> SdkConfig {
    load_in(None, endpoint, credentials, max_attempts).await
}

/// [`load`] with a default `region`; given, the SDK's region chain (which
/// may ask the instance metadata service) is not consulted.
pub async fn load_in(
    region: Option<&str>,
    endpoint: Option<&str>,
    credentials: Option<&(String, String)>,
    max_attempts: u32,
) -> SdkConfig {
    let mut loader = aws_config::defaults(BehaviorVersion::latest())
        .retry_config(RetryConfig::standard().with_max_attempts(max_attempts.max(1)));
    if let Some(r) = region {
        loader = loader.region(Region::new(r.to_string()));
    }
    if let Some(url) = endpoint {
        loader = loader.endpoint_url(url);
    }
    if let Some((id, secret)) = credentials {
        loader = loader.credentials_provider(aws_sdk_ec2::config::Credentials::new(
            id.clone(),
            secret.clone(),
            None,
            None,
            "conductor-static",
        ));
    }
    loader
        .load()
        .instrument(info_span!(
            "aws.config.load",
            endpoint = endpoint.unwrap_or("")
        ))
        .await
}
