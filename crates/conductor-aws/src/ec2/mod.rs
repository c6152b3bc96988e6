//! `Ec2Backend`: the [`CloudBackend`] on aws-sdk-ec2.
//!
//! Inventory reads filter on the server (`tag:Name` prefixes, `tag-key`,
//! `tag:<key>` values, the five live states), follow every page, and apply
//! [`Scope::matches`] on the client. Launches are one `RunInstances` per
//! instance with a client token, tags on instance and volumes, and a
//! cloud-init user-data that installs and configures the Salt minion; at most
//! `max_inflight` launches run at once.

mod convert;

pub mod user_data;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use aws_sdk_ec2::types::{Filter, ResourceType, Tag, TagSpecification};
use aws_sdk_ec2::Client;
use conductor_core::cloud::{
    CloudBackend, InstanceRef, InstanceState, Inventory, LaunchFailure, LaunchResult, LaunchSpec,
    Launched, Scope, Selector,
};
use conductor_core::error::BackendError;
use conductor_core::Region;
use serde_json::Value;
use tokio::sync::Semaphore;
use tracing::{info_span, Instrument};

pub use crate::errors::classify;

/// Most values EC2 takes in one filter.
const FILTER_VALUES: usize = 200;
/// Most instance ids in one TerminateInstances call.
const TERMINATE_BATCH: usize = 1000;

/// Builds an [`Ec2Backend`].
#[derive(Clone, Debug)]
pub struct Ec2BackendBuilder {
    endpoint_url: Option<String>,
    max_attempts: u32,
    max_inflight: usize,
    page_size: Option<i32>,
    credentials: Option<(String, String)>,
}

impl Default for Ec2BackendBuilder {
    fn default() -> Self {
        Self {
            endpoint_url: None,
            max_attempts: 5,
            max_inflight: 16,
            page_size: None,
            credentials: None,
        }
    }
}

impl Ec2BackendBuilder {
    /// An explicit endpoint (moto, LocalStack); otherwise `AWS_ENDPOINT_URL` or AWS.
    pub fn endpoint_url(mut self, url: impl Into<String>) -> Self {
        self.endpoint_url = Some(url.into());
        self
    }

    /// Attempts per call in the SDK's adaptive retry mode (throttling and 5xx are retried).
    pub fn max_attempts(mut self, n: u32) -> Self {
        self.max_attempts = n.max(1);
        self
    }

    /// Launch calls in flight at once.
    pub fn max_inflight(mut self, n: usize) -> Self {
        self.max_inflight = n.max(1);
        self
    }

    /// `MaxResults` of each DescribeInstances page (5..=1000).
    pub fn page_size(mut self, n: i32) -> Self {
        self.page_size = Some(n.clamp(5, 1000));
        self
    }

    /// Static credentials instead of the default chain (tests against moto).
    pub fn static_credentials(
        mut self,
        key_id: impl Into<String>,
        secret: impl Into<String>,
    ) -> Self {
        self.credentials = Some((key_id.into(), secret.into()));
        self
    }

    /// Loads the shared AWS configuration (credentials chain: environment,
    /// profile, SSO, instance role) and builds the backend.
    pub async fn build(self) -> Ec2Backend {
        let sdk = crate::config::load(
            self.endpoint_url.as_deref(),
            self.credentials.as_ref(),
            self.max_attempts,
        )
        .await;
        Ec2Backend {
            sdk,
            clients: Arc::new(Mutex::new(HashMap::new())),
            inflight: Arc::new(Semaphore::new(self.max_inflight)),
            page_size: self.page_size,
        }
    }
}

/// The EC2 [`CloudBackend`]; one client per region, created on first use.
#[derive(Clone)]
pub struct Ec2Backend {
    sdk: aws_config::SdkConfig,
    clients: Arc<Mutex<HashMap<Region, Client>>>,
    inflight: Arc<Semaphore>,
    page_size: Option<i32>,
}

impl std::fmt::Debug for Ec2Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ec2Backend")
            .field("endpoint", &self.sdk.endpoint_url())
            .finish_non_exhaustive()
    }
}

impl Ec2Backend {
    /// Starts a builder.
    pub fn builder() -> Ec2BackendBuilder {
        Ec2BackendBuilder::default()
    }

    /// The client of `region`.
    pub fn client(&self, region: &Region) -> Client {
        let mut clients = self.clients.lock().unwrap_or_else(|p| p.into_inner());
        clients
            .entry(region.clone())
            .or_insert_with(|| {
                let conf = aws_sdk_ec2::config::Builder::from(&self.sdk)
                    .region(aws_sdk_ec2::config::Region::new(region.to_string()))
                    .build();
                Client::from_conf(conf)
            })
            .clone()
    }

    /// The server-side filter sets of a scope: one DescribeInstances per set.
    fn filter_sets(scope: &Scope) -> Vec<Vec<Filter>> {
        let live = Filter::builder()
            .name("instance-state-name")
            .set_values(Some(
                InstanceState::LIVE
                    .iter()
                    .map(|s| s.as_str().to_string())
                    .collect(),
            ))
            .build();
        let mut prefixes = Vec::new();
        let mut keys = Vec::new();
        let mut tags: BTreeMap<&str, Vec<String>> = BTreeMap::new();
        for s in &scope.select {
            match s {
                Selector::NamePrefix(p) => prefixes.push(format!("{}*", escape(p))),
                Selector::TagKey(k) => keys.push(k.clone()),
                Selector::Tag { key, value } => tags.entry(key).or_default().push(escape(value)),
            }
        }
        if scope.select.is_empty() {
            return vec![vec![live]];
        }
        let mut sets = Vec::new();
        let mut add = |name: String, values: Vec<String>| {
            for chunk in values.chunks(FILTER_VALUES) {
                sets.push(vec![
                    live.clone(),
                    Filter::builder()
                        .name(name.clone())
                        .set_values(Some(chunk.to_vec()))
                        .build(),
                ]);
            }
        };
        add("tag:Name".into(), prefixes);
        add("tag-key".into(), keys);
        for (k, v) in tags {
            add(format!("tag:{k}"), v);
        }
        sets
    }

    async fn describe(
        &self,
        client: &Client,
        filters: Vec<Filter>,
    ) -> Result<Vec<aws_sdk_ec2::types::Instance>, BackendError> {
        let mut req = client.describe_instances().set_filters(Some(filters));
        if let Some(n) = self.page_size {
            req = req.max_results(n);
        }
        let mut pages = req.into_paginator().send();
        let mut out = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| classify("DescribeInstances", "the inventory read", e))?;
            for r in page.reservations() {
                out.extend(r.instances().iter().cloned());
            }
        }
        Ok(out)
    }

    async fn launch_one(&self, client: Client, spec: LaunchSpec) -> LaunchResult {
        let _permit = self
            .inflight
            .acquire()
            .await
            .expect("the semaphore is never closed");
        let name = spec.name.clone();
        let outcome = self
            .run_instance(&client, &spec)
            .instrument(info_span!("ec2.run_instances", name = %spec.name))
            .await;
        LaunchResult { name, outcome }
    }

    async fn run_instance(
        &self,
        client: &Client,
        spec: &LaunchSpec,
    ) -> Result<Launched, LaunchFailure> {
        let s = &spec.settings;
        let image = str_setting(s, &["image"]).ok_or_else(|| LaunchFailure {
            message: format!(
                "{}: no image: set profile.image (or the role's image) in pillar",
                spec.name
            ),
            definite: true,
        })?;
        let size = str_setting(s, &["size", "instance_type"]).unwrap_or_else(|| "t3.small".into());
        let tags: Vec<Tag> = spec
            .tags
            .iter()
            .map(|(k, v)| Tag::builder().key(k).value(v).build())
            .collect();
        let tag_specs = [ResourceType::Instance, ResourceType::Volume]
            .into_iter()
            .map(|rt| {
                TagSpecification::builder()
                    .resource_type(rt)
                    .set_tags(Some(tags.clone()))
                    .build()
            })
            .collect();
        let user_data = spec
            .user_data
            .clone()
            .unwrap_or_else(|| user_data::render(spec));
        let mut req = client
            .run_instances()
            .image_id(&image)
            .instance_type(size.as_str().into())
            .min_count(1)
            .max_count(1)
            .client_token(&spec.client_token)
            .placement(
                aws_sdk_ec2::types::Placement::builder()
                    .availability_zone(spec.zone.as_str())
                    .build(),
            )
            .set_tag_specifications(Some(tag_specs))
            .user_data(convert::base64(user_data.as_bytes()));
        if let Some(subnet) = str_setting(s, &["subnet_id", "subnetid"]) {
            req = req.subnet_id(subnet);
        }
        let groups = list_setting(s, &["securitygroupid", "security_group_ids"]);
        if !groups.is_empty() {
            req = req.set_security_group_ids(Some(groups));
        }
        if let Some(key) = str_setting(s, &["keyname", "key_name"]) {
            req = req.key_name(key);
        }
        if let Some(profile) = str_setting(s, &["iam_profile", "iam_instance_profile"]) {
            let p = aws_sdk_ec2::types::IamInstanceProfileSpecification::builder();
            req = req.iam_instance_profile(
                if profile.starts_with("arn:") {
                    p.arn(profile)
                } else {
                    p.name(profile)
                }
                .build(),
            );
        }
        req = req.set_block_device_mappings(convert::block_devices(s.get("volumes")));
        let out = req.send().await.map_err(|e| {
            let err = classify(
                "RunInstances",
                &format!("launching {} (image {image}, size {size})", spec.name),
                e,
            );
            let definite = err.kind == conductor_core::BackendErrorKind::Rejected;
            LaunchFailure {
                message: err.message,
                definite,
            }
        })?;
        let instance = out.instances().first().ok_or_else(|| LaunchFailure {
            message: format!("RunInstances for {} returned no instance", spec.name),
            definite: false,
        })?;
        Ok(Launched {
            name: spec.name.clone(),
            instance_id: instance.instance_id().unwrap_or_default().to_string(),
            detail: convert::detail(instance),
        })
    }
}

/// Escapes EC2 filter wildcards in a literal.
fn escape(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('*', "\\*")
        .replace('?', "\\?")
}

fn str_setting(s: &Value, keys: &[&str]) -> Option<String> {
    keys.iter().find_map(|k| match s.get(*k)? {
        Value::String(v) if !v.is_empty() => Some(v.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    })
}

fn list_setting(s: &Value, keys: &[&str]) -> Vec<String> {
    keys.iter()
        .find_map(|k| match s.get(*k)? {
            Value::String(v) => Some(vec![v.clone()]),
            Value::Array(a) => Some(
                a.iter()
                    .filter_map(|v| v.as_str().map(str::to_string))
                    .collect(),
            ),
            _ => None,
        })
        .unwrap_or_default()
}

#[async_trait]
impl CloudBackend for Ec2Backend {
    async fn inventory(&self, scope: &Scope) -> Result<Inventory, BackendError> {
        let client = self.client(&scope.region);
        let mut seen = BTreeSet::new();
        let mut instances = Vec::new();
        for filters in Self::filter_sets(scope) {
            let found = self
                .describe(&client, filters)
                .instrument(info_span!("ec2.describe_instances", region = %scope.region))
                .await?;
            for i in found {
                let Some(inst) = convert::instance(&i, &scope.region) else {
                    continue;
                };
                if seen.insert(inst.id.clone()) && scope.matches(&inst) {
                    instances.push(inst);
                }
            }
        }
        Ok(Inventory { instances })
    }

    async fn launch(&self, specs: &[LaunchSpec]) -> Result<Vec<LaunchResult>, BackendError> {
        let mut set = tokio::task::JoinSet::new();
        for (i, spec) in specs.iter().cloned().enumerate() {
            let me = self.clone();
            let client = self.client(&spec.zone.region());
            set.spawn(async move { (i, me.launch_one(client, spec).await) });
        }
        let mut results: Vec<Option<LaunchResult>> = vec![None; specs.len()];
        while let Some(joined) = set.join_next().await {
            let (i, r) = joined.map_err(|e| {
                BackendError::new(
                    conductor_core::BackendErrorKind::Failed,
                    format!("launch task failed: {e}"),
                )
            })?;
            results[i] = Some(r);
        }
        Ok(results.into_iter().flatten().collect())
    }

    async fn terminate(&self, instances: &[InstanceRef]) -> Result<(), BackendError> {
        let mut by_region: BTreeMap<&Region, Vec<String>> = BTreeMap::new();
        for r in instances {
            by_region.entry(&r.region).or_default().push(r.id.clone());
        }
        for (region, ids) in by_region {
            let client = self.client(region);
            for chunk in ids.chunks(TERMINATE_BATCH) {
                client
                    .terminate_instances()
                    .set_instance_ids(Some(chunk.to_vec()))
                    .send()
                    .instrument(
                        info_span!("ec2.terminate_instances", %region, instances = chunk.len()),
                    )
                    .await
                    .map_err(|e| {
                        classify(
                            "TerminateInstances",
                            &format!("terminating {}", chunk.join(", ")),
                            e,
                        )
                    })?;
            }
        }
        Ok(())
    }
}
