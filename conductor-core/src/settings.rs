//! `LaunchSettings`: what a native launch needs, read from the merged
//! provider → profile → role settings of pillar and checked while planning
//! (a missing image is bad input before anything is reserved or written).
//! Keys take salt-cloud's spellings and their EC2 aliases.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Instance type when the settings give none.
pub const DEFAULT_SIZE: &str = "t3.small";

/// One EBS volume (salt-cloud's `volumes:` entry).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Volume {
    /// Device name (`/dev/sdf`).
    pub device: String,
    /// Size in GiB.
    pub size: Option<i32>,
    /// EBS volume type (`gp3`, ...).
    pub volume_type: Option<String>,
    /// Provisioned IOPS.
    pub iops: Option<i32>,
    /// Throughput in MiB/s (gp3).
    pub throughput: Option<i32>,
    /// Encrypt the volume.
    pub encrypted: Option<bool>,
    /// KMS key for the encryption.
    pub kms_key_id: Option<String>,
    /// Snapshot to create it from.
    pub snapshot: Option<String>,
    /// Delete it with the instance (default true).
    pub delete_on_termination: bool,
}

/// One network interface (salt-cloud's `network_interfaces:` entry).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkInterface {
    /// `DeviceIndex` (default: its position).
    pub device_index: i32,
    /// `SubnetId`.
    pub subnet_id: Option<String>,
    /// `SecurityGroupId(s)`.
    pub security_group_ids: Vec<String>,
    /// `AssociatePublicIpAddress`.
    pub associate_public_ip: Option<bool>,
    /// `PrivateIpAddress`.
    pub private_ip: Option<String>,
    /// `SecondaryPrivateIpAddressCount`.
    pub secondary_private_ip_count: Option<i32>,
    /// `Description`.
    pub description: Option<String>,
    /// `NetworkInterfaceId` (an existing interface).
    pub network_interface_id: Option<String>,
    /// `delete_interface_on_terminate` (default true).
    pub delete_on_termination: bool,
}

/// The settings of one native launch, typed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LaunchSettings {
    /// AMI (`image`, `image_id`): required.
    pub image: String,
    /// Instance type (`size`, `instance_type`), default [`DEFAULT_SIZE`].
    pub size: String,
    /// `subnet_id` / `subnetid`.
    pub subnet_id: Option<String>,
    /// `securitygroupid` / `security_group_ids` (one string or a list).
    pub security_group_ids: Vec<String>,
    /// `keyname` / `key_name`.
    pub key_name: Option<String>,
    /// `iam_profile` / `iam_instance_profile` (a name, or an ARN).
    pub iam_profile: Option<String>,
    /// `ebs_optimized`.
    pub ebs_optimized: Option<bool>,
    /// `volumes`: block devices.
    pub volumes: Vec<Volume>,
    /// `network_interfaces`.
    pub network_interfaces: Vec<NetworkInterface>,
    /// Every other setting (grains, minion, script_args, salt_version,
    /// bootstrap_url, startup_states, ...), as given: the user data reads them.
    pub other: Map<String, Value>,
}

/// Keys [`LaunchSettings`] reads into typed fields (the rest go to `other`).
const TYPED: &[&str] = &[
    "image",
    "image_id",
    "size",
    "instance_type",
    "subnet_id",
    "subnetid",
    "securitygroupid",
    "security_group_ids",
    "keyname",
    "key_name",
    "iam_profile",
    "iam_instance_profile",
    "ebs_optimized",
    "volumes",
    "network_interfaces",
];

impl LaunchSettings {
    /// Reads merged settings (a mapping); the error names the key and the fix.
    pub fn parse(s: &Value) -> Result<Self, String> {
        let map = match s {
            Value::Object(m) => m,
            Value::Null => return Err(no_image()),
            other => return Err(format!("launch settings must be a mapping, not {other}")),
        };
        let image = str_setting(s, &["image", "image_id"]).ok_or_else(no_image)?;
        Ok(Self {
            image,
            size: str_setting(s, &["size", "instance_type"]).unwrap_or_else(|| DEFAULT_SIZE.into()),
            subnet_id: str_setting(s, &["subnet_id", "subnetid"]),
            security_group_ids: list_setting(s, &["securitygroupid", "security_group_ids"]),
            key_name: str_setting(s, &["keyname", "key_name"]),
            iam_profile: str_setting(s, &["iam_profile", "iam_instance_profile"]),
            ebs_optimized: boolean(s, "ebs_optimized"),
            volumes: volumes(s.get("volumes"))?,
            network_interfaces: network_interfaces(s.get("network_interfaces"))?,
            other: map
                .iter()
                .filter(|(k, _)| !TYPED.contains(&k.as_str()))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        })
    }

    /// Settings for tests and examples: `image` and everything else defaulted.
    pub fn with_image(image: impl Into<String>) -> Self {
        Self {
            image: image.into(),
            size: DEFAULT_SIZE.into(),
            subnet_id: None,
            security_group_ids: vec![],
            key_name: None,
            iam_profile: None,
            ebs_optimized: None,
            volumes: vec![],
            network_interfaces: vec![],
            other: Map::new(),
        }
    }

    /// An untyped setting (`grains`, `minion`, `script_args`, ...).
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.other.get(key)
    }
}

fn no_image() -> String {
    "no image: set profile.image (or the role's image) in pillar".into()
}

/// A string setting: the first of `keys` present (numbers as text).
fn str_setting(s: &Value, keys: &[&str]) -> Option<String> {
    keys.iter().find_map(|k| match s.get(*k)? {
        Value::String(v) if !v.is_empty() => Some(v.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    })
}

/// A list setting given as one string or a list of strings.
fn list_setting(s: &Value, keys: &[&str]) -> Vec<String> {
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

/// The entries of a list setting named `what`, each a mapping.
fn entries<'a>(v: Option<&'a Value>, what: &str) -> Result<&'a [Value], String> {
    match v {
        None | Some(Value::Null) => Ok(&[]),
        Some(Value::Array(a)) => {
            if let Some((n, bad)) = a.iter().enumerate().find(|(_, e)| !e.is_object()) {
                return Err(format!("{what}[{n}] must be a mapping, not {bad}"));
            }
            Ok(a)
        }
        Some(other) => Err(format!("{what} must be a list, not {other}")),
    }
}

/// Block devices from salt-cloud style `volumes: [{device, size, type, iops,
/// throughput, encrypted, kmskeyid, snapshot, delete_on_termination}]`.
fn volumes(v: Option<&Value>) -> Result<Vec<Volume>, String> {
    let text = |v: &Value, k: &str| v.get(k).and_then(Value::as_str).map(str::to_string);
    entries(v, "volumes")?
        .iter()
        .enumerate()
        .map(|(n, v)| {
            let err = |e: String| format!("volumes[{n}]: {e}");
            Ok(Volume {
                device: text(v, "device")
                    .ok_or_else(|| err("no device (e.g. device: /dev/sdf)".into()))?,
                size: int(v, "size").map_err(err)?,
                volume_type: text(v, "type"),
                iops: int(v, "iops").map_err(err)?,
                throughput: int(v, "throughput").map_err(err)?,
                encrypted: boolean(v, "encrypted"),
                kms_key_id: text(v, "kmskeyid"),
                snapshot: text(v, "snapshot"),
                delete_on_termination: boolean(v, "delete_on_termination").unwrap_or(true),
            })
        })
        .collect()
}

/// Network interfaces from salt-cloud style `network_interfaces: [{DeviceIndex,
/// SubnetId, SecurityGroupId, AssociatePublicIpAddress, PrivateIpAddress,
/// SecondaryPrivateIpAddressCount, Description, NetworkInterfaceId,
/// delete_interface_on_terminate}]`.
fn network_interfaces(v: Option<&Value>) -> Result<Vec<NetworkInterface>, String> {
    entries(v, "network_interfaces")?
        .iter()
        .enumerate()
        .map(|(n, v)| {
            let err = |e: String| format!("network_interfaces[{n}]: {e}");
            Ok(NetworkInterface {
                device_index: int(v, "DeviceIndex").map_err(err)?.unwrap_or(n as i32),
                subnet_id: str_setting(v, &["SubnetId"]),
                security_group_ids: list_setting(
                    v,
                    &["SecurityGroupId", "SecurityGroupIds", "Groups"],
                ),
                associate_public_ip: boolean(v, "AssociatePublicIpAddress"),
                private_ip: str_setting(v, &["PrivateIpAddress"]),
                secondary_private_ip_count: int(v, "SecondaryPrivateIpAddressCount")
                    .map_err(err)?,
                description: str_setting(v, &["Description"]),
                network_interface_id: str_setting(v, &["NetworkInterfaceId"]),
                delete_on_termination: boolean(v, "delete_interface_on_terminate").unwrap_or(true),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reads_salt_cloud_spellings_and_keeps_the_rest() {
        let s = LaunchSettings::parse(&json!({
            "image_id": "ami-1", "instance_type": "m5.large", "subnetid": "subnet-1",
            "securitygroupid": "sg-1", "keyname": "ops", "iam_profile": "arn:aws:iam::1:instance-profile/x",
            "volumes": [{"device": "/dev/sdf", "size": "20", "type": "gp3", "encrypted": "yes"}],
            "network_interfaces": [{"SubnetId": "subnet-2", "SecurityGroupId": ["sg-2", "sg-3"]}],
            "grains": {"team": "a"}, "script_args": "-P stable 3007"
        }))
        .unwrap();
        assert_eq!((s.image.as_str(), s.size.as_str()), ("ami-1", "m5.large"));
        assert_eq!(s.subnet_id.as_deref(), Some("subnet-1"));
        assert_eq!(s.security_group_ids, ["sg-1"]);
        assert_eq!(s.volumes[0].size, Some(20));
        assert_eq!(s.volumes[0].encrypted, Some(true));
        assert_eq!(s.network_interfaces[0].security_group_ids, ["sg-2", "sg-3"]);
        assert_eq!(s.get("grains"), Some(&json!({"team": "a"})));
        assert!(s.get("image_id").is_none(), "typed keys are not in `other`");
    }

    #[test]
    fn errors_name_the_setting() {
        assert!(LaunchSettings::parse(&json!({"size": "t3.small"}))
            .unwrap_err()
            .contains("no image"));
        let e =
            LaunchSettings::parse(&json!({"image": "a", "volumes": [{"size": 1}]})).unwrap_err();
        assert!(e.contains("volumes[0]") && e.contains("device"), "{e}");
        let e = LaunchSettings::parse(&json!({"image": "a", "volumes": "x"})).unwrap_err();
        assert!(e.contains("volumes must be a list"), "{e}");
        let e = LaunchSettings::parse(
            &json!({"image": "a", "network_interfaces": [{"DeviceIndex": "x"}]}),
        )
        .unwrap_err();
        assert!(e.contains("network_interfaces[0]"), "{e}");
    }
}
