//! Conversions between EC2 types and Conductor's.

use aws_sdk_ec2::types::{BlockDeviceMapping, EbsBlockDevice, Instance as Ec2Instance};
use conductor_core::cloud::{Instance, InstanceState};
use conductor_core::Region;
use serde_json::{json, Value};

/// An EC2 instance as the core sees it; `None` without id or known state.
pub fn instance(i: &Ec2Instance, region: &Region) -> Option<Instance> {
    let state = InstanceState::parse(i.state()?.name()?.as_str())?;
    Some(Instance {
        id: i.instance_id()?.to_string(),
        region: region.clone(),
        zone: i
            .placement()
            .and_then(|p| p.availability_zone())
            .unwrap_or_default()
            .to_string(),
        state,
        launch_time: i.launch_time().map(|t| t.secs().max(0) as u64),
        tags: i
            .tags()
            .iter()
            .filter_map(|t| {
                Some((
                    t.key()?.to_string(),
                    t.value().unwrap_or_default().to_string(),
                ))
            })
            .collect(),
    })
}

/// The JSON detail of a launched instance, stored in the cloud_runs log.
pub fn detail(i: &Ec2Instance) -> Value {
    json!({
        "InstanceId": i.instance_id(),
        "InstanceType": i.instance_type().map(|t| t.as_str()),
        "ImageId": i.image_id(),
        "AvailabilityZone": i.placement().and_then(|p| p.availability_zone()),
        "PrivateIpAddress": i.private_ip_address(),
        "PublicIpAddress": i.public_ip_address(),
        "SubnetId": i.subnet_id(),
        "State": i.state().and_then(|s| s.name()).map(|n| n.as_str()),
        "LaunchTime": i.launch_time().map(|t| t.secs()),
        "Tags": i.tags().iter().filter_map(|t| Some((t.key()?.to_string(), t.value()?.to_string()))).collect::<std::collections::BTreeMap<_, _>>(),
    })
}

/// Block devices from salt-cloud style `volumes: [{device, size, type, iops, delete_on_termination}]`.
pub fn block_devices(volumes: Option<&Value>) -> Option<Vec<BlockDeviceMapping>> {
    let list = volumes?.as_array()?;
    let maps: Vec<BlockDeviceMapping> = list
        .iter()
        .filter_map(|v| {
            let device = v.get("device").and_then(Value::as_str)?;
            let mut ebs = EbsBlockDevice::builder().delete_on_termination(
                v.get("delete_on_termination")
                    .and_then(Value::as_bool)
                    .unwrap_or(true),
            );
            if let Some(size) = v.get("size").and_then(Value::as_i64) {
                ebs = ebs.volume_size(size as i32);
            }
            if let Some(t) = v.get("type").and_then(Value::as_str) {
                ebs = ebs.volume_type(t.into());
            }
            if let Some(iops) = v.get("iops").and_then(Value::as_i64) {
                ebs = ebs.iops(iops as i32);
            }
            Some(
                BlockDeviceMapping::builder()
                    .device_name(device)
                    .ebs(ebs.build())
                    .build(),
            )
        })
        .collect();
    (!maps.is_empty()).then_some(maps)
}

/// Standard base64 with padding (user data).
pub fn base64(bytes: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for c in bytes.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
            | u32::from(*c.get(2).unwrap_or(&0));
        for (i, shift) in [18, 12, 6, 0].into_iter().enumerate() {
            out.push(if i <= c.len() {
                T[(n >> shift) as usize & 63] as char
            } else {
                '='
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn base64_matches_rfc4648() {
        for (i, o) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(super::base64(i.as_bytes()), o);
        }
    }
}
