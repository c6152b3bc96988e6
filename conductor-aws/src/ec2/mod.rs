//! `Ec2Backend`: the [`CloudBackend`] on aws-sdk-ec2.
//!
//! Inventory reads filter on the server (`tag:Name` prefixes, `tag-key`,
//! `tag:<key>` values, the five live states), follow every page, and apply
//! [`Scope::matches`] on the client ([`inventory`]). Launches are one
//! `RunInstances` per instance with a client token, tags on instance and
//! volumes, and a cloud-init user-data that installs and configures the Salt
//! minion ([`user_data`]); at most `max_inflight` launches run at once.

mod convert;
mod date;
pub mod inventory;
mod launch;
pub use conductor_core::user_data;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use aws_sdk_ec2::config::retry::RetryPartition;
use aws_sdk_ec2::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_ec2::Client;
use conductor_core::Region;
use conductor_core::{AccountSpec, CloudAccounts};
use conductor_core::{BackendError, BackendErrorKind};
use conductor_core::{
    CloudBackend, CloudTime, InstanceRef, InstanceTags, Inventory, LaunchResult, LaunchSpec, Scope,
};
use tokio::sync::Semaphore;
use tracing::{info_span, Instrument};

use crate::config::AwsConfig;
pub use crate::errors::classify;

/// Most instance ids in one TerminateInstances call.
const TERMINATE_BATCH: usize = 1000;

pub use crate::config::DEFAULT_MAX_ATTEMPTS;
/// RunInstances calls in flight at once unless set.
pub const DEFAULT_MAX_INFLIGHT: usize = 16;

/// Builds an [`Ec2Backend`].
///
/// ```
/// use conductor_aws::ec2::Ec2Backend;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// // Loads the configuration only: nothing is called before the first inventory.
/// let ec2 = Ec2Backend::builder()
///     .region("eu-west-1")
///     .endpoint_url("http://127.0.0.1:5000") // moto or LocalStack; leave out for AWS
///     .static_credentials("test", "test")
///     .max_inflight(4)
///     .page_size(500)
///     .build()
///     .await;
/// assert_eq!(ec2.default_region().as_deref(), Some("eu-west-1"));
/// assert_eq!(ec2.endpoint_url(), Some("http://127.0.0.1:5000"));
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct Ec2BackendBuilder {
    aws: AwsConfig,
    max_inflight: usize,
    page_size: Option<i32>,
    retry_partition: Option<String>,
}

impl Default for Ec2BackendBuilder {
    fn default() -> Self {
        Self {
            aws: AwsConfig::new(),
            max_inflight: DEFAULT_MAX_INFLIGHT,
            page_size: None,
            retry_partition: None,
        }
    }
}

impl Ec2BackendBuilder {
    crate::config::aws_setters!(
        "The default region (else `AWS_REGION`, the profile, or instance metadata). Each call still goes to the region of its scope or zone.",
        aws
    );

    /// RunInstances calls in flight at once, across every `launch` of this backend.
    pub fn max_inflight(mut self, n: usize) -> Self {
        self.max_inflight = n.max(1);
        self
    }

    /// `MaxResults` of each DescribeInstances page (clamped to EC2's 5..=1000).
    pub fn page_size(mut self, n: i32) -> Self {
        self.page_size = Some(n.clamp(5, 1000));
        self
    }

    /// Names the retry partition: the retry quota (tokens spent by
    /// retries) is shared by every client of one partition in the process. Default: the SDK's, one per region (`ec2-<region>`).
    pub fn retry_partition(mut self, name: impl Into<String>) -> Self {
        self.retry_partition = Some(name.into());
        self
    }

    /// Loads the shared AWS configuration (credentials chain: environment,
    /// profile, SSO, process, instance role) and builds the backend.
    pub async fn build(self) -> Ec2Backend {
        // Every call names its region: the default one never comes from IMDS.
        let sdk = self.aws.load_without_imds_region().await;
        Ec2Backend {
            sdk,
            clients: Arc::new(Mutex::new(HashMap::new())),
            inflight: Arc::new(Semaphore::new(self.max_inflight)),
            max_inflight: self.max_inflight,
            page_size: self.page_size,
            retry_partition: self.retry_partition,
            last_date: date::LastDate::default(),
        }
    }
}

/// The EC2 [`CloudBackend`]; one client per region, created on first use.
/// Clones share clients and the in-flight limit.
#[derive(Clone)]
pub struct Ec2Backend {
    sdk: aws_config::SdkConfig,
    clients: Arc<Mutex<HashMap<Region, Client>>>,
    inflight: Arc<Semaphore>,
    max_inflight: usize,
    page_size: Option<i32>,
    retry_partition: Option<String>,
    last_date: date::LastDate,
}

impl std::fmt::Debug for Ec2Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ec2Backend")
            .field("endpoint", &self.sdk.endpoint_url())
            .field("region", &self.sdk.region())
            .field("max_inflight", &self.max_inflight)
            .field("page_size", &self.page_size)
            .finish_non_exhaustive()
    }
}

impl Ec2Backend {
    /// Starts a builder.
    pub fn builder() -> Ec2BackendBuilder {
        Ec2BackendBuilder::default()
    }

    /// The default region of the configuration, if any.
    pub fn default_region(&self) -> Option<String> {
        self.sdk.region().map(|r| r.to_string())
    }

    /// The endpoint every call goes to, when not AWS's own.
    pub fn endpoint_url(&self) -> Option<&str> {
        self.sdk.endpoint_url()
    }

    /// One cheap call (DescribeAvailabilityZones) in `region`: whether EC2
    /// answers with these credentials (an assumed role's included); the
    /// names of the region's zones. Its answer's `Date` is then
    /// [`clock`](CloudBackend::clock).
    pub async fn probe(&self, region: &Region) -> Result<Vec<String>, BackendError> {
        use aws_sdk_ec2::config::ProvideCredentials;
        let Some(creds) = self.sdk.credentials_provider() else {
            return Err(BackendError::new(
                BackendErrorKind::Rejected,
                "no AWS credentials provider is configured",
            ));
        };
        creds
            .provide_credentials()
            .instrument(info_span!("aws.credentials"))
            .await
            .map_err(|e| {
                BackendError::new(
                    BackendErrorKind::Rejected,
                    format!("no AWS credentials: {}", chain(&e)),
                )
            })?;
        let out = self
            .client(region)
            .describe_availability_zones()
            .send()
            .instrument(info_span!("ec2.probe", %region))
            .await
            .map_err(|e| classify("DescribeAvailabilityZones", &format!("in {region}"), e))?;
        Ok(out
            .availability_zones()
            .iter()
            .filter_map(|z| z.zone_name().map(str::to_string))
            .collect())
    }

    /// The client of `region`.
    pub fn client(&self, region: &Region) -> Client {
        let mut clients = self.clients.lock().unwrap_or_else(|p| p.into_inner());
        clients
            .entry(region.clone())
            .or_insert_with(|| {
                let mut conf = aws_sdk_ec2::config::Builder::from(&self.sdk)
                    .region(aws_sdk_ec2::config::Region::new(region.to_string()));
                conf = conf.interceptor(self.last_date.clone());
                if let Some(p) = &self.retry_partition {
                    conf = conf.retry_partition(RetryPartition::new(format!("{p}-{region}")));
                }
                Client::from_conf(conf.build())
            })
            .clone()
    }
}

/// `e` and its sources' messages (Display only), joined by `: `.
fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let more = s.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        source = s.source();
    }
    text
}

/// The [`CloudAccounts`] of EC2: an [`Ec2Backend`] per account, from one
/// builder (endpoint, default region, limits) given each account's
/// credentials ([`Ec2BackendBuilder::account`]), optionally wrapped (in
/// `RetryCloud`, say).
///
/// ```
/// use std::sync::Arc;
///
/// use conductor_aws::ec2::{Ec2Accounts, Ec2Backend};
/// use conductor_core::{AccountSpec, CloudAccounts, RetryCloud};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let accounts = Ec2Accounts::new(Ec2Backend::builder().region("eu-west-1"))
///     .wrap(|ec2| Arc::new(RetryCloud::new(ec2)));
/// let prod = AccountSpec {
///     role_arn: Some("arn:aws:iam::222222222222:role/conductor".into()),
///     ..AccountSpec::default()
/// };
/// // Nothing is called yet: the role is assumed at the first EC2 call.
/// let _cloud = accounts.open(&prod).await?;
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct Ec2Accounts {
    builder: Ec2BackendBuilder,
    wrap: Arc<dyn Fn(Ec2Backend) -> Arc<dyn CloudBackend> + Send + Sync>,
}

impl Ec2Accounts {
    /// The backend of `account`, unwrapped (for [`Ec2Backend::probe`]).
    pub async fn backend(&self, account: &AccountSpec) -> Ec2Backend {
        self.builder.clone().account(account).build().await
    }

    /// Accounts opened from `builder`, each cloud an unwrapped [`Ec2Backend`].
    pub fn new(builder: Ec2BackendBuilder) -> Self {
        Self {
            builder,
            wrap: Arc::new(|ec2| Arc::new(ec2)),
        }
    }

    /// Wraps each account's backend (in `RetryCloud`, say) before use.
    pub fn wrap(
        mut self,
        wrap: impl Fn(Ec2Backend) -> Arc<dyn CloudBackend> + Send + Sync + 'static,
    ) -> Self {
        self.wrap = Arc::new(wrap);
        self
    }
}

impl std::fmt::Debug for Ec2Accounts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ec2Accounts")
            .field("builder", &self.builder)
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl CloudAccounts for Ec2Accounts {
    async fn open(&self, account: &AccountSpec) -> Result<Arc<dyn CloudBackend>, BackendError> {
        Ok((self.wrap)(self.backend(account).await))
    }
}

#[async_trait]
impl CloudBackend for Ec2Backend {
    async fn inventory(&self, scope: &Scope) -> Result<Inventory, BackendError> {
        inventory::read(self.client(&scope.region), scope, self.page_size)
            .instrument(
                info_span!("ec2.inventory", region = %scope.region, selectors = scope.select.len()),
            )
            .await
    }

    async fn launch(&self, specs: &[LaunchSpec]) -> Result<Vec<LaunchResult>, BackendError> {
        let mut set = tokio::task::JoinSet::new();
        for (i, spec) in specs.iter().cloned().enumerate() {
            let client = self.client(&spec.zone.region());
            let inflight = self.inflight.clone();
            set.spawn(
                async move { (i, launch::launch_one(client, inflight, spec).await) }
                    .in_current_span(),
            );
        }
        let mut results: Vec<Option<LaunchResult>> = vec![None; specs.len()];
        while let Some(joined) = set.join_next().await {
            let (i, r) = joined.map_err(|e| {
                BackendError::new(BackendErrorKind::Failed, format!("launch task failed: {e}"))
            })?;
            results[i] = Some(r);
        }
        // Every index was filled: each task returns its own index once.
        Ok(results.into_iter().flatten().collect())
    }

    /// One CreateTags call per instance (each gets its own tags); the
    /// calls set values, so repeating them is harmless.
    async fn tag_instances(&self, tags: &[InstanceTags]) -> Result<(), BackendError> {
        for t in tags {
            let region = &t.instance.region;
            let id = &t.instance.id;
            let ec2_tags: Vec<aws_sdk_ec2::types::Tag> = t
                .tags
                .iter()
                .map(|(k, v)| aws_sdk_ec2::types::Tag::builder().key(k).value(v).build())
                .collect();
            self.client(region)
                .create_tags()
                .resources(id)
                .set_tags(Some(ec2_tags))
                .send()
                .instrument(
                    info_span!("ec2.create_tags", %region, instance = %id, tags = t.tags.len()),
                )
                .await
                .map_err(|e| classify("CreateTags", &format!("tagging {id} in {region}"), e))?;
        }
        Ok(())
    }

    /// Terminates by id, region by region, in batches of 1,000. Ids EC2 no
    /// longer knows (`InvalidInstanceID.NotFound`) are already gone: they are
    /// dropped and the rest of the batch terminated, so destroy is idempotent.
    async fn terminate(&self, instances: &[InstanceRef]) -> Result<(), BackendError> {
        let mut by_region: BTreeMap<&Region, Vec<String>> = BTreeMap::new();
        for r in instances {
            by_region.entry(&r.region).or_default().push(r.id.clone());
        }
        for (region, ids) in by_region {
            let client = self.client(region);
            for chunk in ids.chunks(TERMINATE_BATCH) {
                let mut left = chunk.to_vec();
                // Each retry drops at least one id, so this ends.
                while !left.is_empty() {
                    let sent = client
                        .terminate_instances()
                        .set_instance_ids(Some(left.clone()))
                        .send()
                        .instrument(
                            info_span!("ec2.terminate_instances", %region, instances = left.len()),
                        )
                        .await;
                    let Err(e) = sent else { break };
                    let gone = not_found_ids(&e, &left);
                    if gone.is_empty() {
                        return Err(classify(
                            "TerminateInstances",
                            &format!("terminating {} in {region}", left.join(", ")),
                            e,
                        ));
                    }
                    tracing::info!(%region, ids = %gone.join(", "), "already gone");
                    left.retain(|id| !gone.contains(id));
                }
            }
        }
        Ok(())
    }

    /// The `Date` of the latest EC2 answer, any region.
    fn clock(&self) -> Option<CloudTime> {
        self.last_date.get()
    }
}

/// The ids of `sent` an `InvalidInstanceID.NotFound` error names.
fn not_found_ids<E: ProvideErrorMetadata>(e: &SdkError<E>, sent: &[String]) -> Vec<String> {
    if e.code() != Some("InvalidInstanceID.NotFound") {
        return Vec::new();
    }
    let message = e.message().unwrap_or_default();
    sent.iter()
        .filter(|id| message.contains(id.as_str()))
        .cloned()
        .collect()
}
