//! Conversions between EC2 types and Conductor's.

use std::collections::BTreeMap;

use aws_sdk_ec2::primitives::DateTimeFormat;
use aws_sdk_ec2::types::{
    BlockDeviceMapping, EbsBlockDevice, Instance as Ec2Instance,
    InstanceNetworkInterfaceSpecification,
};
use conductor_core::Region;
use conductor_core::{Instance, InstanceState, NetworkInterface, Volume};
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
        instance_type: i.instance_type().map(|t| t.as_str().to_string()),
        private_ip: i.private_ip_address().map(str::to_string),
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

/// The block device mappings of typed `volumes`; `None` when there are none.
pub fn block_devices(volumes: &[Volume]) -> Option<Vec<BlockDeviceMapping>> {
    let maps: Vec<BlockDeviceMapping> = volumes
        .iter()
        .map(|v| {
            let ebs = EbsBlockDevice::builder()
                .delete_on_termination(v.delete_on_termination)
                .set_volume_size(v.size)
                .set_iops(v.iops)
                .set_throughput(v.throughput)
                .set_encrypted(v.encrypted)
                .set_volume_type(v.volume_type.as_deref().map(Into::into))
                .set_kms_key_id(v.kms_key_id.clone())
                .set_snapshot_id(v.snapshot.clone());
            BlockDeviceMapping::builder()
                .device_name(&v.device)
                .ebs(ebs.build())
                .build()
        })
        .collect();
    (!maps.is_empty()).then_some(maps)
}

/// The interface specifications of typed `nics`; the first interface takes
/// the top-level `subnet` and `groups` when it names none (and is not an
/// existing interface). `None` when there are none.
pub fn network_interfaces(
    nics: &[NetworkInterface],
    subnet: Option<&str>,
    groups: &[String],
) -> Option<Vec<InstanceNetworkInterfaceSpecification>> {
    let out: Vec<_> = nics
        .iter()
        .map(|v| {
            let mut sgs = v.security_group_ids.clone();
            let mut nic_subnet = v.subnet_id.clone();
            if v.device_index == 0 && v.network_interface_id.is_none() {
                nic_subnet = nic_subnet.or(subnet.map(str::to_string));
                if sgs.is_empty() {
                    sgs = groups.to_vec();
                }
            }
            InstanceNetworkInterfaceSpecification::builder()
                .device_index(v.device_index)
                .set_subnet_id(nic_subnet)
                .set_groups((!sgs.is_empty()).then_some(sgs))
                .set_associate_public_ip_address(v.associate_public_ip)
                .set_private_ip_address(v.private_ip.clone())
                .set_secondary_private_ip_address_count(v.secondary_private_ip_count)
                .set_description(v.description.clone())
                .set_network_interface_id(v.network_interface_id.clone())
                .delete_on_termination(v.delete_on_termination)
                .build()
        })
        .collect();
    (!out.is_empty()).then_some(out)
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
        let s = conductor_core::LaunchSettings::parse(&json!({
            "image": "ami-1",
            "volumes": [{"device": "/dev/sdf", "size": "100", "type": "gp3", "encrypted": true}],
            "network_interfaces": [{"DeviceIndex": 0, "AssociatePublicIpAddress": false},
                                   {"DeviceIndex": 1, "SubnetId": "subnet-2", "SecurityGroupId": "sg-2"}],
        }))
        .unwrap();
        let d = super::block_devices(&s.volumes).unwrap();
        assert_eq!(d[0].device_name(), Some("/dev/sdf"));
        let ebs = d[0].ebs().unwrap();
        assert_eq!(ebs.volume_size(), Some(100));
        assert_eq!(ebs.encrypted(), Some(true));
        assert_eq!(ebs.delete_on_termination(), Some(true));
        assert_eq!(ebs.volume_type().map(|t| t.as_str()), Some("gp3"));
        let n =
            super::network_interfaces(&s.network_interfaces, Some("subnet-1"), &["sg-1".into()])
                .unwrap();
        assert_eq!(n[0].subnet_id(), Some("subnet-1"));
        assert_eq!(n[0].groups(), ["sg-1"]);
        assert_eq!(n[0].associate_public_ip_address(), Some(false));
        assert_eq!(n[1].subnet_id(), Some("subnet-2"));
        assert_eq!(n[1].groups(), ["sg-2"]);
        assert!(super::network_interfaces(&[], Some("subnet-1"), &[]).is_none());
        assert!(super::block_devices(&[]).is_none());
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
