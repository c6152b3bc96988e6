//! The shared AWS configuration of the backends: credentials chain (or
//! static credentials for tests), adaptive retries, optional endpoint.

use aws_config::retry::RetryConfig;
use aws_config::{BehaviorVersion, SdkConfig};

/// Loads the AWS configuration: the default credential chain unless
/// `credentials` (key id, secret) are given, the SDK's adaptive retry mode
/// with `max_attempts`, and `endpoint` (else `AWS_ENDPOINT_URL`, else AWS).
pub async fn load(
    endpoint: Option<&str>,
    credentials: Option<&(String, String)>,
    max_attempts: u32,
) -> SdkConfig {
    let mut loader = aws_config::defaults(BehaviorVersion::latest())
        .retry_config(RetryConfig::adaptive().with_max_attempts(max_attempts.max(1)));
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
    loader.load().await
}
