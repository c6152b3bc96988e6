//! What one native launch asks EC2 for, as moto stored it: instance type,
//! subnet, security groups, key pair, tags on instance and volumes, the
//! user data (read back and parsed), and the detail kept in the run log.

use std::collections::BTreeMap;

use conductor_aws::ec2::{user_data, Ec2Backend};
use conductor_core::{CloudBackend, InstanceRef, LaunchSpec, Scope};
use conductor_testkit::fixtures;
use conductor_testkit::moto::{subnet_in_cidrs, MotoServer, ACCESS_KEY_ID, SECRET_ACCESS_KEY};
use serde_json::json;

fn decode_base64(s: &str) -> Vec<u8> {
    let val = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        _ => 63,
    };
    let clean: Vec<u8> = s
        .bytes()
        .filter(|c| !c.is_ascii_whitespace() && *c != b'=')
        .collect();
    let mut out = Vec::new();
    for chunk in clean.chunks(4) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, c)| n | u32::from(val(*c)) << (18 - 6 * i));
        out.extend_from_slice(&n.to_be_bytes()[1..chunk.len()]);
    }
    out
}

struct Net {
    subnet: String,
    sg: String,
}

/// A subnet in us-east-1a (addresses `10.1.2.x`), a security group of its
/// VPC and a key pair.
async fn network(moto: &MotoServer, ec2: &Ec2Backend) -> Net {
    let net = subnet_in_cidrs(
        &moto.endpoint(),
        &fixtures::zone(),
        "10.1.0.0/16",
        "10.1.2.0/24",
    );
    let c = ec2.client(&fixtures::zone().region());
    let sg = c
        .create_security_group()
        .group_name("conductor-test")
        .description("test")
        .vpc_id(&net.vpc_id)
        .send()
        .await
        .unwrap();
    c.create_key_pair().key_name("ops").send().await.unwrap();
    Net {
        subnet: net.subnet_id,
        sg: sg.group_id().unwrap().to_string(),
    }
}

fn spec(name: &str, settings: serde_json::Value) -> LaunchSpec {
    let fqdn = format!("{name}.us-east-1a.test.foobar.com");
    LaunchSpec {
        name: fqdn.clone(),
        zone: fixtures::zone(),
        client_token: format!("16833830331552303186-{name}"),
        tags: BTreeMap::from([
            ("Name".into(), fqdn),
            ("conductor:cpid".into(), "16833830331552303186".into()),
            ("conductor:env".into(), "test".into()),
            ("conductor:group".into(), "devops".into()),
            ("conductor:role".into(), "activemq".into()),
            ("conductor:devops.system.id".into(), "2".into()),
        ]),
        settings: conductor_core::LaunchSettings::parse(&settings).unwrap(),
        user_data: None,
    }
}

#[tokio::test]
async fn native_launch_as_moto_stored_it() {
    let moto = MotoServer::start();
    let ec2 = Ec2Backend::builder()
        .region("us-east-1")
        .endpoint_url(moto.endpoint())
        .static_credentials(ACCESS_KEY_ID, SECRET_ACCESS_KEY)
        .build()
        .await;
    let net = network(&moto, &ec2).await;
    let plain = spec(
        "devops-mq07",
        json!({
            "image": "ami-0abc", "size": "t3.medium", "subnet_id": net.subnet,
            "securitygroupid": [net.sg], "keyname": "ops",
            "volumes": [{"device": "/dev/sdf", "size": 20, "type": "gp3"}],
            "minion": {"master": "salt.foobar.com"},
            "grains": {"cpid": "16833830331552303186", "devops.system.id": 2},
            "script_args": "-P stable 3007.16",
            "startup_states": ["devops.conductor"],
        }),
    );
    let nic = spec(
        "devops-mq08",
        json!({
            "image": "ami-0abc", "subnet_id": net.subnet, "securitygroupid": net.sg,
            "network_interfaces": [{"DeviceIndex": 0, "AssociatePublicIpAddress": false}],
        }),
    );
    let results = ec2.launch(&[plain.clone(), nic.clone()]).await.unwrap();
    let launched: Vec<_> = results
        .iter()
        .map(|r| {
            r.outcome
                .clone()
                .unwrap_or_else(|f| panic!("{}: {}", r.name, f.message))
        })
        .collect();

    let c = ec2.client(&fixtures::zone().region());
    for (l, s) in launched.iter().zip([&plain, &nic]) {
        let out = c
            .describe_instances()
            .instance_ids(&l.instance_id)
            .send()
            .await
            .unwrap();
        let i = &out.reservations()[0].instances()[0];
        assert_eq!(i.subnet_id(), Some(net.subnet.as_str()), "{}", s.name);
        let groups: Vec<&str> = i
            .security_groups()
            .iter()
            .filter_map(|g| g.group_id())
            .chain(
                i.network_interfaces()
                    .iter()
                    .flat_map(|n| n.groups())
                    .filter_map(|g| g.group_id()),
            )
            .collect();
        assert!(groups.contains(&net.sg.as_str()), "{}: {groups:?}", s.name);
        assert_eq!(
            i.placement().and_then(|p| p.availability_zone()),
            Some("us-east-1a")
        );
        let tags: BTreeMap<&str, &str> = i
            .tags()
            .iter()
            .map(|t| (t.key().unwrap(), t.value().unwrap()))
            .collect();
        for (k, v) in &s.tags {
            assert_eq!(tags.get(k.as_str()), Some(&v.as_str()), "{k} on {}", s.name);
        }
        // The detail the cloud_runs log keeps.
        assert_eq!(l.detail["InstanceId"], l.instance_id.as_str());
        assert_eq!(l.detail["Name"], s.name.as_str());
        assert_eq!(l.detail["AvailabilityZone"], "us-east-1a");
        assert!(l.detail["PrivateIpAddress"]
            .as_str()
            .is_some_and(|ip| ip.starts_with("10.1.2.")));
        assert!(l.detail["LaunchTime"].as_str().is_some());
        assert_eq!(l.detail["Tags"]["conductor:cpid"], "16833830331552303186");
    }
    let first = &launched[0].instance_id;
    let out = c
        .describe_instances()
        .instance_ids(first)
        .send()
        .await
        .unwrap();
    let i = &out.reservations()[0].instances()[0];
    assert_eq!(i.instance_type().map(|t| t.as_str()), Some("t3.medium"));
    assert_eq!(i.key_name(), Some("ops"));

    // Volumes carry the instance's tags too.
    let vols = c
        .describe_volumes()
        .filters(
            aws_sdk_ec2::types::Filter::builder()
                .name("attachment.instance-id")
                .values(first)
                .build(),
        )
        .send()
        .await
        .unwrap();
    assert!(!vols.volumes().is_empty());
    for v in vols.volumes() {
        let name = v.tags().iter().find(|t| t.key() == Some("Name"));
        assert_eq!(name.and_then(|t| t.value()), Some(plain.name.as_str()));
    }
    assert!(
        vols.volumes().iter().any(|v| v.size() == Some(20)),
        "the 20 GiB data volume"
    );

    // The user data EC2 holds is the cloud-init document, parsed back.
    let attr = c
        .describe_instance_attribute()
        .instance_id(first)
        .attribute(aws_sdk_ec2::types::InstanceAttributeName::UserData)
        .send()
        .await
        .unwrap();
    let raw = attr.user_data().and_then(|u| u.value()).unwrap();
    let text = String::from_utf8(decode_base64(raw)).unwrap();
    assert_eq!(text, user_data::render(&plain).unwrap());
    let parsed = user_data::parse(&text).unwrap();
    assert_eq!(parsed.minion["id"], plain.name.as_str());
    assert_eq!(parsed.minion["master"], "salt.foobar.com");
    assert_eq!(parsed.minion["environment"], "test");
    assert_eq!(parsed.minion["grains"]["devops.system.id"], 2);
    assert_eq!(parsed.salt_version(), Some("3007.16"));
    assert_eq!(parsed.startup_states(), ["devops.conductor"]);

    // Destroy is idempotent: an id EC2 does not know is already gone, the
    // rest of the batch is terminated; terminating twice is fine.
    let refs: Vec<InstanceRef> = [first.as_str(), "i-0123456789abcdef0"]
        .iter()
        .map(|id| InstanceRef {
            id: id.to_string(),
            region: fixtures::zone().region(),
            name: None,
        })
        .collect();
    ec2.terminate(&refs).await.unwrap();
    ec2.terminate(&refs[..1]).await.unwrap();
    let out = c
        .describe_instances()
        .instance_ids(first)
        .send()
        .await
        .unwrap();
    let state = out.reservations()[0].instances()[0]
        .state()
        .unwrap()
        .name()
        .unwrap()
        .as_str()
        .to_string();
    assert!(state == "terminated" || state == "shutting-down", "{state}");
    let left: Vec<String> = ec2
        .inventory(&Scope::all(fixtures::zone().region()))
        .await
        .unwrap()
        .instances
        .into_iter()
        .map(|i| i.id)
        .collect();
    assert_eq!(left, [launched[1].instance_id.clone()]);
}
