//! Native launches: one `RunInstances` per [`LaunchSpec`].

use std::sync::Arc;

use aws_sdk_ec2::operation::run_instances::builders::RunInstancesFluentBuilder;
use aws_sdk_ec2::types::{
    IamInstanceProfileSpecification, Placement, ResourceType, Tag, TagSpecification,
};
use aws_sdk_ec2::Client;
use conductor_core::BackendErrorKind;
use conductor_core::{LaunchFailure, LaunchResult, LaunchSpec, Launched};
use tokio::sync::Semaphore;
use tracing::{info_span, Instrument};

use super::{convert, user_data};
use crate::errors::classify;

/// Most bytes of user data EC2 takes (before base64).
pub const USER_DATA_LIMIT: usize = conductor_core::MAX_USER_DATA_BYTES;

/// Launches `spec` once a slot of `inflight` is free.
pub(super) async fn launch_one(
    client: Client,
    inflight: Arc<Semaphore>,
    spec: LaunchSpec,
) -> LaunchResult {
    let name = spec.name.clone();
    let outcome = match inflight.acquire().await {
        Ok(_permit) => {
            run_instance(&client, &spec)
                .instrument(info_span!("ec2.run_instances", name = %spec.name, zone = %spec.zone))
                .await
        }
        Err(_) => Err(LaunchFailure {
            message: format!("{name}: the launch limiter was closed; nothing was launched"),
            definite: true,
        }),
    };
    LaunchResult { name, outcome }
}

/// A failure for input Conductor refuses before calling AWS.
fn refused(spec: &LaunchSpec, why: String) -> LaunchFailure {
    LaunchFailure {
        message: format!("{}: {why}", spec.name),
        definite: true,
    }
}

/// The RunInstances request of `spec` (no call made); errors name the input.
pub(super) fn request(
    client: &Client,
    spec: &LaunchSpec,
) -> Result<RunInstancesFluentBuilder, LaunchFailure> {
    let s = &spec.settings;
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
    let user_data = match &spec.user_data {
        Some(u) => u.clone(),
        None => user_data::render(spec).map_err(|e| refused(spec, e.to_string()))?,
    };
    if user_data.len() > USER_DATA_LIMIT {
        return Err(refused(
            spec,
            format!(
                "user data is {} bytes, EC2 takes at most {USER_DATA_LIMIT}; trim the grains or minion settings",
                user_data.len()
            ),
        ));
    }
    let mut req = client
        .run_instances()
        .image_id(&s.image)
        .instance_type(s.size.as_str().into())
        .min_count(1)
        .max_count(1)
        .client_token(&spec.client_token)
        .placement(
            Placement::builder()
                .availability_zone(spec.zone.as_str())
                .build(),
        )
        .set_tag_specifications(Some(tag_specs))
        .user_data(convert::base64(user_data.as_bytes()));
    let nics = convert::network_interfaces(
        &s.network_interfaces,
        s.subnet_id.as_deref(),
        &s.security_group_ids,
    );
    match nics {
        // Subnet and groups belong to the interfaces then (EC2 refuses both).
        Some(nics) => req = req.set_network_interfaces(Some(nics)),
        None => {
            req = req
                .set_subnet_id(s.subnet_id.clone())
                .set_security_group_ids(
                    (!s.security_group_ids.is_empty()).then(|| s.security_group_ids.clone()),
                );
        }
    }
    if let Some(key) = &s.key_name {
        req = req.key_name(key);
    }
    if let Some(profile) = &s.iam_profile {
        let p = IamInstanceProfileSpecification::builder();
        req = req.iam_instance_profile(
            if profile.starts_with("arn:") {
                p.arn(profile)
            } else {
                p.name(profile)
            }
            .build(),
        );
    }
    let devices = convert::block_devices(&s.volumes);
    Ok(req
        .set_ebs_optimized(s.ebs_optimized)
        .set_block_device_mappings(devices))
}

/// Runs one instance. A failure is `definite` only when AWS refused the
/// request (a client error): after a timeout, a 5xx or throttling, an
/// earlier attempt with the same client token may have launched it.
async fn run_instance(client: &Client, spec: &LaunchSpec) -> Result<Launched, LaunchFailure> {
    let req = request(client, spec)?;
    let out = req.send().await.map_err(|e| {
        let s = &spec.settings;
        let (image, size) = (&s.image, &s.size);
        let subnet = s
            .subnet_id
            .as_ref()
            .map(|s| format!(", subnet {s}"))
            .unwrap_or_default();
        let err = classify(
            "RunInstances",
            &format!(
                "launching {} (image {image}, size {size}{subnet})",
                spec.name
            ),
            e,
        );
        tracing::warn!(name = %spec.name, error = %err.message, "launch failed");
        LaunchFailure {
            definite: err.kind == BackendErrorKind::Rejected,
            message: err.message,
        }
    })?;
    let instance = out.instances().first().ok_or_else(|| LaunchFailure {
        message: format!("RunInstances for {} returned no instance", spec.name),
        definite: false,
    })?;
    let instance_id = instance.instance_id().unwrap_or_default().to_string();
    if instance_id.is_empty() {
        return Err(LaunchFailure {
            message: format!(
                "RunInstances for {} returned an instance without id",
                spec.name
            ),
            definite: false,
        });
    }
    tracing::info!(name = %spec.name, %instance_id, "launched");
    Ok(Launched {
        name: spec.name.clone(),
        instance_id,
        detail: convert::detail(instance),
    })
}
