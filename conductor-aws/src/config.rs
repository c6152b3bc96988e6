//! The shared AWS connection of the backends ([`AwsConfig`]): region,
//! endpoint, credentials chain (or static credentials for tests), standard
//! retries. `Ec2Backend::builder()`, `DynamoReserver::builder()` and the S3
//! upload all load their SDK configuration through it.

use aws_config::environment::EnvironmentVariableRegionProvider;
use aws_config::meta::region::RegionProviderChain;
use aws_config::profile::region::ProfileFileRegionProvider;
use aws_config::retry::RetryConfig;
use aws_config::sts::AssumeRoleProvider;
use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_sdk_ec2::config::SharedCredentialsProvider;
use conductor_core::AccountSpec;
use tracing::{info_span, Instrument};

/// Where the default region comes from when none is set.
#[derive(Clone, Copy, PartialEq, Eq)]
enum RegionFrom {
    /// The SDK's chain: environment, profile, instance metadata.
    Chain,
    /// Environment or profile, never the instance metadata service.
    EnvOrProfile,
}

/// Attempts per call unless set: the SDK's standard mode retries throttling and 5xx.
pub const DEFAULT_MAX_ATTEMPTS: u32 = 5;

/// How to reach AWS: one builder for every backend of this crate.
///
/// Standard retries, not adaptive: adaptive mode's client-side rate limiter
/// drops to 0.5 requests/s after one throttle in a new process, so a
/// short-lived CLI run slept about 20 s per throttled retry (measured
/// through a proxy that throttles 30% of calls: 118 s for one create).
/// Core's `RetryCloud` retries whole calls on top with its own jittered
/// backoff.
#[derive(Clone, PartialEq, Eq)]
pub struct AwsConfig {
    pub(crate) region: Option<String>,
    pub(crate) endpoint_url: Option<String>,
    pub(crate) credentials: Option<(String, String)>,
    pub(crate) max_attempts: u32,
    pub(crate) account: Option<AccountSpec>,
}

impl Default for AwsConfig {
    fn default() -> Self {
        Self {
            region: None,
            endpoint_url: None,
            credentials: None,
            max_attempts: DEFAULT_MAX_ATTEMPTS,
            account: None,
        }
    }
}

/// Never shows the secret key.
impl std::fmt::Debug for AwsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AwsConfig")
            .field("region", &self.region)
            .field("endpoint_url", &self.endpoint_url)
            .field("key_id", &self.credentials.as_ref().map(|(id, _)| id))
            .field("max_attempts", &self.max_attempts)
            .field("role_arn", &self.account.as_ref().map(|a| &a.role_arn))
            .field("profile", &self.account.as_ref().map(|a| &a.profile))
            .finish_non_exhaustive()
    }
}

/// The connection setters (`region`, `endpoint_url`, `static_credentials`,
/// `max_attempts`) of [`AwsConfig`] and of the backend builders, written
/// once: on [`AwsConfig`] itself, or, given the name of a builder's
/// `AwsConfig` field, on that field (with an `aws` setter of the whole
/// configuration). The first argument is the doc line of `region`, whose
/// meaning differs between backends.
macro_rules! aws_setters {
    ($region_doc:literal $(, $field:ident)?) => {
        $(
            /// The whole connection configuration at once (replaces what the
            /// connection setters called before set).
            pub fn aws(mut self, aws: $crate::config::AwsConfig) -> Self {
                self.$field = aws;
                self
            }
        )?

        #[doc = $region_doc]
        pub fn region(mut self, region: impl Into<String>) -> Self {
            self$(.$field)?.region = Some(region.into());
            self
        }

        /// An explicit endpoint (moto, LocalStack); otherwise `AWS_ENDPOINT_URL` or AWS.
        pub fn endpoint_url(mut self, url: impl Into<String>) -> Self {
            self$(.$field)?.endpoint_url = Some(url.into());
            self
        }

        /// Static credentials instead of the default chain (tests against moto).
        pub fn static_credentials(
            mut self,
            key_id: impl Into<String>,
            secret: impl Into<String>,
        ) -> Self {
            self$(.$field)?.credentials = Some((key_id.into(), secret.into()));
            self
        }

        /// Attempts per call in the SDK's standard retry mode (throttling and 5xx are retried).
        pub fn max_attempts(mut self, n: u32) -> Self {
            self$(.$field)?.max_attempts = n.max(1);
            self
        }

        /// The AWS account to work in (pillar `environments.<env>.aws`):
        /// the credentials of its `profile` (else of the chain or the static
        /// ones), with which its `role_arn` is assumed through STS
        /// (`external_id`, `session_name`, default `conductor-<host>`);
        /// assumed credentials are cached and renewed before they expire.
        pub fn account(mut self, account: &conductor_core::AccountSpec) -> Self {
            self$(.$field)?.account = Some(account.clone());
            self
        }
    };
}
pub(crate) use aws_setters;

impl AwsConfig {
    /// The default configuration: the SDK's region and credential chains,
    /// `AWS_ENDPOINT_URL` or AWS, [`DEFAULT_MAX_ATTEMPTS`].
    pub fn new() -> Self {
        Self::default()
    }

    aws_setters!(
        "The default region; given, the SDK's region chain (which may ask the instance metadata service) is not consulted."
    );

    /// The region set with [`AwsConfig::region`], if any.
    pub fn region_name(&self) -> Option<&str> {
        self.region.as_deref()
    }

    /// The endpoint set with [`AwsConfig::endpoint_url`], if any.
    pub fn endpoint(&self) -> Option<&str> {
        self.endpoint_url.as_deref()
    }

    /// Loads the SDK configuration: the default credential chain (environment,
    /// profile, SSO, process, instance role) unless static credentials are
    /// given, standard retries, and the endpoint and region if set.
    pub async fn load(&self) -> SdkConfig {
        self.load_with(RegionFrom::Chain).await
    }

    /// Loads the SDK configuration, with the default region (when none is
    /// set) from the environment or profile only (`AWS_REGION`, `region` of
    /// the profile): for backends that name the region of every call, to
    /// which the instance metadata service adds nothing but a probe (and
    /// three WARN blocks off EC2).
    pub(crate) async fn load_without_imds_region(&self) -> SdkConfig {
        self.load_with(RegionFrom::EnvOrProfile).await
    }

    async fn load_with(&self, from: RegionFrom) -> SdkConfig {
        let mut loader = aws_config::defaults(BehaviorVersion::latest())
            .http_client(crate::http::LazyTls::default())
            .retry_config(RetryConfig::standard().with_max_attempts(self.max_attempts.max(1)));
        if let Some(r) = &self.region {
            loader = loader.region(Region::new(r.clone()));
        } else if from == RegionFrom::EnvOrProfile {
            loader = loader.region(
                RegionProviderChain::first_try(EnvironmentVariableRegionProvider::new())
                    .or_else(ProfileFileRegionProvider::new()),
            );
        }
        if let Some(url) = &self.endpoint_url {
            loader = loader.endpoint_url(url);
        }
        let account = self.account.as_ref();
        if let Some(profile) = account.and_then(|a| a.profile.as_ref()) {
            loader = loader.profile_name(profile);
        }
        if let Some((id, secret)) = &self.credentials {
            loader = loader.credentials_provider(aws_sdk_ec2::config::Credentials::new(
                id.clone(),
                secret.clone(),
                None,
                None,
                "conductor-static",
            ));
        }
        let sdk = loader
            .load()
            .instrument(info_span!(
                "aws.config.load",
                endpoint = self.endpoint().unwrap_or("")
            ))
            .await;
        match account {
            Some(a) if a.role_arn.is_some() => assume_role(sdk, a).await,
            _ => sdk,
        }
    }
}

/// `sdk` with the credentials of `account.role_arn`, assumed with `sdk`'s
/// own (its endpoint and region serve STS too). The SDK config's identity
/// cache keeps them and asks STS again shortly before they expire.
async fn assume_role(sdk: SdkConfig, account: &AccountSpec) -> SdkConfig {
    let Some(arn) = &account.role_arn else {
        return sdk;
    };
    let session = account
        .session_name
        .clone()
        .unwrap_or_else(|| default_session_name(&conductor_core::this_host()));
    let mut role = AssumeRoleProvider::builder(arn)
        .session_name(session)
        .configure(&sdk);
    if let Some(id) = &account.external_id {
        role = role.external_id(id);
    }
    if sdk.region().is_none() {
        // STS needs a region; with none configured, the global endpoint's.
        role = role.region(Region::from_static("us-east-1"));
    }
    let provider = role.build().await;
    sdk.into_builder()
        .credentials_provider(SharedCredentialsProvider::new(provider))
        .build()
}

/// `conductor-<host>` in the characters and length STS allows in a role
/// session name (letters, digits, `+=,.@-`, at most 64).
fn default_session_name(host: &str) -> String {
    let clean: String = host
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "+=,.@-".contains(c) {
                c
            } else {
                '-'
            }
        })
        .collect();
    let mut name = format!("conductor-{clean}");
    name.truncate(64);
    name
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn setters_record_the_connection() {
        let c = AwsConfig::new()
            .region("eu-west-1")
            .endpoint_url("http://127.0.0.1:5000")
            .static_credentials("id", "secret")
            .max_attempts(0);
        assert_eq!(c.region_name(), Some("eu-west-1"));
        assert_eq!(c.endpoint(), Some("http://127.0.0.1:5000"));
        assert_eq!(c.credentials, Some(("id".into(), "secret".into())));
        assert_eq!(c.max_attempts, 1, "at least one attempt");
        assert_eq!(AwsConfig::new().max_attempts, DEFAULT_MAX_ATTEMPTS);
        assert!(!format!("{c:?}").contains("secret"), "{c:?}");
    }

    #[tokio::test]
    async fn load_applies_region_and_endpoint() {
        let sdk = AwsConfig::new()
            .region("eu-west-1")
            .endpoint_url("http://127.0.0.1:1")
            .static_credentials("id", "secret")
            .load()
            .await;
        assert_eq!(sdk.region().map(|r| r.as_ref()), Some("eu-west-1"));
        assert_eq!(sdk.endpoint_url(), Some("http://127.0.0.1:1"));
    }

    #[test]
    fn session_names_fit_sts() {
        assert_eq!(
            default_session_name("salt-master_01"),
            "conductor-salt-master-01"
        );
        let long = default_session_name(&"h".repeat(100));
        assert_eq!(long.len(), 64);
    }
}
