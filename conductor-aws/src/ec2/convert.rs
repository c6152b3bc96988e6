//! Conversions between EC2 types and Conductor's.

use std::collections::BTreeMap;

use aws_sdk_ec2::primitives::DateTimeFormat;
use aws_sdk_ec2::types::{
    BlockDeviceMapping, EbsBlockDevice, Instance as Ec2Instance,
    InstanceNetworkInterfaceSpecification,
};
use conductor_core::Region;
use conductor_core::{Instance, InstanceState};
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
    let tags: BTreeMap<String, String> = i
        .tags()
        .iter()
        .filter_map(|t| {
            Some((
                t.key()?.to_string(),
                t.value().unwrap_or_default().to_string(),
            ))
        })
        .collect();
    json!({
        "Name": tags.get("Name"),
        "InstanceId": i.instance_id(),
        "InstanceType": i.instance_type().map(|t| t.as_str()),
        "ImageId": i.image_id(),
        "AvailabilityZone": i.placement().and_then(|p| p.availability_zone()),
        "PrivateIpAddress": i.private_ip_address(),
        "PublicIpAddress": i.public_ip_address(),
        "SubnetId": i.subnet_id(),
        "VpcId": i.vpc_id(),
        "State": i.state().and_then(|s| s.name()).map(|n| n.as_str()),
        "LaunchTime": i.launch_time().and_then(|t| t.fmt(DateTimeFormat::DateTime).ok()),
        "Tags": tags,
    })
}

/// A string setting: the first of `keys` present (numbers as text).
pub fn str_setting(s: &Value, keys: &[&str]) -> Option<String> {
    keys.iter().find_map(|k| match s.get(*k)? {
        Value::String(v) if !v.is_empty() => Some(v.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    })
}

/// A list setting given as one string or a list of strings.
pub fn list_setting(s: &Value, keys: &[&str]) -> Vec<String> {
    keys.iter()
        .find_map(|k| match s.get(*k)? {
            Value::String(v) if !v.is_empty() => Some(vec![v.clone()]),
            Value::Array(a) => Some(
                a.iter()
                    .filter_map(|v| v.as_str().map(str::to_string))
                    .collect(),
            ),
            _ => None,
        })
        .unwrap_or_default()
}

fn int(v: &Value, key: &str) -> Result<Option<i32>, String> {
    match v.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => n
            .as_i64()
            .and_then(|n| i32::try_from(n).ok())
            .map(Some)
            .ok_or_else(|| format!("{key} = {n} is not a whole number")),
        Some(Value::String(t)) => t
            .trim()
            .parse()
            .map(Some)
            .map_err(|_| format!("{key} = {t:?} is not a whole number")),
        Some(other) => Err(format!("{key} = {other} is not a whole number")),
    }
}

fn boolean(v: &Value, key: &str) -> Option<bool> {
    match v.get(key)? {
        Value::Bool(b) => Some(*b),
        Value::String(t) => match t.to_ascii_lowercase().as_str() {
            "true" | "yes" => Some(true),
            "false" | "no" => Some(false),
            _ => None,
        },
        _ => None,
    }
}

/// Block devices from salt-cloud style `volumes: [{device, size, type, iops,
/// throughput, encrypted, kmskeyid, snapshot, delete_on_termination}]`.
pub fn block_devices(volumes: Option<&Value>) -> Result<Option<Vec<BlockDeviceMapping>>, String> {
    let list = match volumes {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Array(a)) => a,
        Some(other) => return Err(format!("volumes must be a list, not {other}")),
    };
    let mut maps = Vec::new();
    for (n, v) in list.iter().enumerate() {
        let err = |e: String| format!("volumes[{n}]: {e}");
        let device = v
            .get("device")
            .and_then(Value::as_str)
            .ok_or_else(|| err("no device (e.g. device: /dev/sdf)".into()))?;
        let mut ebs = EbsBlockDevice::builder()
            .delete_on_termination(boolean(v, "delete_on_termination").unwrap_or(true))
            .set_volume_size(int(v, "size").map_err(err)?)
            .set_iops(int(v, "iops").map_err(err)?)
            .set_throughput(int(v, "throughput").map_err(err)?)
            .set_encrypted(boolean(v, "encrypted"));
        if let Some(t) = v.get("type").and_then(Value::as_str) {
            ebs = ebs.volume_type(t.into());
        }
        if let Some(k) = v.get("kmskeyid").and_then(Value::as_str) {
            ebs = ebs.kms_key_id(k);
        }
        if let Some(snap) = v.get("snapshot").and_then(Value::as_str) {
            ebs = ebs.snapshot_id(snap);
        }
        maps.push(
            BlockDeviceMapping::builder()
                .device_name(device)
                .ebs(ebs.build())
                .build(),
        );
    }
    Ok((!maps.is_empty()).then_some(maps))
}

/// Network interfaces from salt-cloud style `network_interfaces: [{DeviceIndex,
/// SubnetId, SecurityGroupId, AssociatePublicIpAddress, PrivateIpAddress,
/// SecondaryPrivateIpAddressCount, Description, NetworkInterfaceId,
/// delete_interface_on_terminate}]`; the first interface takes the top-level
/// `subnet` and `groups` when it names none.
pub fn network_interfaces(
    nics: Option<&Value>,
    subnet: Option<&str>,
    groups: &[String],
) -> Result<Option<Vec<InstanceNetworkInterfaceSpecification>>, String> {
    let list = match nics {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Array(a)) if a.is_empty() => return Ok(None),
        Some(Value::Array(a)) => a,
        Some(other) => return Err(format!("network_interfaces must be a list, not {other}")),
    };
    let mut out = Vec::new();
    for (n, v) in list.iter().enumerate() {
        if !v.is_object() {
            return Err(format!(
                "network_interfaces[{n}] must be a mapping, not {v}"
            ));
        }
        let err = |e: String| format!("network_interfaces[{n}]: {e}");
        let index = int(v, "DeviceIndex").map_err(err)?.unwrap_or(n as i32);
        let mut sgs = list_setting(v, &["SecurityGroupId", "SecurityGroupIds", "Groups"]);
        let mut nic_subnet = str_setting(v, &["SubnetId"]);
        if index == 0 && str_setting(v, &["NetworkInterfaceId"]).is_none() {
            nic_subnet = nic_subnet.or(subnet.map(str::to_string));
            if sgs.is_empty() {
                sgs = groups.to_vec();
            }
        }
        out.push(
            InstanceNetworkInterfaceSpecification::builder()
                .device_index(index)
                .set_subnet_id(nic_subnet)
                .set_groups((!sgs.is_empty()).then_some(sgs))
                .set_associate_public_ip_address(boolean(v, "AssociatePublicIpAddress"))
                .set_private_ip_address(str_setting(v, &["PrivateIpAddress"]))
                .set_secondary_private_ip_address_count(
                    int(v, "SecondaryPrivateIpAddressCount").map_err(err)?,
                )
                .set_description(str_setting(v, &["Description"]))
                .set_network_interface_id(str_setting(v, &["NetworkInterfaceId"]))
                .delete_on_termination(boolean(v, "delete_interface_on_terminate").unwrap_or(true))
                .build(),
        );
    }
    Ok(Some(out))
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
    use serde_json::json;

    #[test]
    fn volumes_and_interfaces_from_salt_cloud_settings() {
        let v = json!([{"device": "/dev/sdf", "size": "100", "type": "gp3", "encrypted": true}]);
        let d = super::block_devices(Some(&v)).unwrap().unwrap();
        assert_eq!(d[0].device_name(), Some("/dev/sdf"));
        let ebs = d[0].ebs().unwrap();
        assert_eq!(ebs.volume_size(), Some(100));
        assert_eq!(ebs.encrypted(), Some(true));
        assert_eq!(ebs.delete_on_termination(), Some(true));
        let e = super::block_devices(Some(&json!([{"size": 1}]))).unwrap_err();
        assert!(e.contains("volumes[0]") && e.contains("device"), "{e}");
        let e = super::block_devices(Some(&json!([{"device": "/dev/sdf", "size": "big"}])))
            .unwrap_err();
        assert!(e.contains("size"), "{e}");

        let nics = json!([{"DeviceIndex": 0, "AssociatePublicIpAddress": false},
                          {"DeviceIndex": 1, "SubnetId": "subnet-2", "SecurityGroupId": "sg-2"}]);
        let n = super::network_interfaces(Some(&nics), Some("subnet-1"), &["sg-1".into()])
            .unwrap()
            .unwrap();
        assert_eq!(n[0].subnet_id(), Some("subnet-1"));
        assert_eq!(n[0].groups(), ["sg-1"]);
        assert_eq!(n[0].associate_public_ip_address(), Some(false));
        assert_eq!(n[1].subnet_id(), Some("subnet-2"));
        assert_eq!(n[1].groups(), ["sg-2"]);
        assert!(super::network_interfaces(None, Some("subnet-1"), &[])
            .unwrap()
            .is_none());
    }

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
