//! The salt-cloud provisioning path end to end on moto: Conductor writes the
//! provider, profile and map, runs `salt-cloud -m` (the testkit's stand-in,
//! which reads those files as salt-cloud does and launches in moto), and the
//! instances carry exactly the planned names and grains as tags.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use conductor_aws::ec2::Ec2Backend;
use conductor_core::Options;
use conductor_core::{CloudBackend, Scope};
use conductor_core::{Env, Group, InstanceQuery, Provisioner, Selection};
use conductor_salt::SaltCli;
use conductor_testkit::fixtures;
use conductor_testkit::harness::{master_layout, Harness};
use conductor_testkit::moto::{MotoServer, ACCESS_KEY_ID, SECRET_ACCESS_KEY};
use conductor_testkit::salt_env::stand_in_bin_dir;

#[tokio::test]
async fn salt_cloud_path_on_moto() {
    let moto = MotoServer::start();
    let ec2 = Ec2Backend::builder()
        .endpoint_url(moto.endpoint())
        .static_credentials(ACCESS_KEY_ID, SECRET_ACCESS_KEY)
        .build()
        .await;
    // No master here: no hooks or startup states in this pillar.
    let yaml = fixtures::DEVOPS_PILLAR
        .replace("      hooks: {pre_create: [orch.conductor_common], post_create: [orch.conductor_common]}\n", "")
        .replace("        startup_states: [devops.conductor]\n", "");
    let h = Harness::new()
        .with_layout(master_layout)
        .with_fs_reserver()
        .with_pillar(conductor_core::Pillar::from_yaml_str(&yaml).unwrap())
        .with_options(|o| {
            *o = Options {
                provisioner: Provisioner::SaltCloud,
                release_grace: Duration::ZERO,
                // No master, so no grains cache to read.
                read_grains: false,
                ..Options::default()
            }
        });
    let salt = SaltCli::new()
        .bin_dir(stand_in_bin_dir())
        .config_dir(&h.layout.config_dir)
        .env("AWS_ENDPOINT_URL", moto.endpoint())
        .env("AWS_ACCESS_KEY_ID", ACCESS_KEY_ID)
        .env("AWS_SECRET_ACCESS_KEY", SECRET_ACCESS_KEY);
    let h = h.with_salt(Arc::new(salt));
    let c = h.builder_on(Arc::new(ec2.clone())).build().unwrap();
    let report = c
        .create(&fixtures::system_request("small_test"))
        .await
        .unwrap();
    assert!(report.success(), "{report:?}");

    let inv = ec2
        .inventory(&Scope::all(fixtures::zone().region()))
        .await
        .unwrap();
    let by_name: BTreeMap<&str, _> = inv
        .instances
        .iter()
        .filter_map(|i| Some((i.name()?, i)))
        .collect();
    assert_eq!(by_name.len(), report.plan.instances.len());
    for p in &report.plan.instances {
        let i = by_name
            .get(p.name.as_str())
            .unwrap_or_else(|| panic!("{} not launched", p.name));
        assert_eq!(i.tags, p.tags, "tags of {}", p.name);
        for (grain, value) in &p.grains {
            let tag = format!("conductor:{grain}");
            let want = value
                .as_str()
                .map(str::to_string)
                .unwrap_or_else(|| value.to_string());
            assert_eq!(
                i.tag(&tag),
                Some(want.as_str()),
                "grain {grain} as tag on {}",
                p.name
            );
        }
    }
    // salt-cloud's return is the run's cloud_runs log.
    let log = report
        .logs
        .iter()
        .find(|l| {
            l.to_string_lossy()
                .contains("cloud_run-conductor._group-create_")
        })
        .unwrap();
    assert!(std::fs::read_to_string(log).unwrap().contains("instanceId"));

    // Destroy through salt-cloud -d.
    let q = InstanceQuery {
        group: Group::new("devops").unwrap(),
        env: Env::new("test").unwrap(),
        region: Some(fixtures::zone().region()),
        selection: Selection::Cpid(report.plan.cpid),
    };
    let d = c.destroy(&q).await.unwrap();
    assert_eq!(d.destroyed.len(), 6, "{d:?}");
    assert!(ec2
        .inventory(&Scope::all(fixtures::zone().region()))
        .await
        .unwrap()
        .instances
        .is_empty());
}
