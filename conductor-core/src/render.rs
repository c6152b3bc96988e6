//! The provider, profile and map documents of a run, as YAML values, and the
//! settings of native launches. Profile settings override the provider's; a
//! role's (map) settings override the profile's.

use serde_yaml::{Mapping, Value};

use crate::account::AccountSpec;
use crate::layout::Layout;
use crate::pillar::{GroupSpec, RoleSpec};
use crate::plan::{Plan, PlannedInstance};

/// Provider settings that only make sense in the provider file.
const DRIVER: &str = "ec2";

/// The first line of every map and profile Conductor writes: Salt's render
/// pipeline for that file is YAML alone, so a pillar value such as
/// `'{{ 7*7 }}'` reaches salt-cloud as that text, never through Jinja.
pub const YAML_ONLY: &str = "#!yaml";

fn s(v: &str) -> Value {
    Value::String(v.to_string())
}

fn one(key: String, value: Value) -> Value {
    let mut m = Mapping::new();
    m.insert(s(&key), value);
    Value::Mapping(m)
}

/// The provider document: `{<group>_<CPID>: {driver, location, availability_zone, ...}}`;
/// with the `role_arn` of the environment's `account` (which wins over the group's).
pub fn provider(plan: &Plan, group: &GroupSpec, account: Option<&AccountSpec>) -> Value {
    let mut m = Mapping::new();
    m.insert(s("driver"), s(DRIVER));
    m.insert(s("location"), s(plan.region.as_str()));
    m.insert(s("availability_zone"), s(plan.zone.as_str()));
    for (k, v) in &group.provider {
        m.insert(k.clone(), v.clone());
    }
    if let Some(arn) = account.and_then(|a| a.role_arn.as_deref()) {
        m.insert(s("role_arn"), s(arn));
    }
    one(Layout::cloud_id(&plan.group, plan.cpid), Value::Mapping(m))
}

/// The profile document: `{<group>_<CPID>: {provider, image, size, minion, ...}}`.
pub fn profile(plan: &Plan, group: &GroupSpec) -> Value {
    let id = Layout::cloud_id(&plan.group, plan.cpid);
    let mut m = Mapping::new();
    m.insert(s("provider"), s(&id));
    for (k, v) in &group.profile {
        if k.as_str() == Some("startup_states") {
            continue; // applied by Conductor itself after bootstrap, with its own log
        }
        if k.as_str() == Some("bootstrap") {
            continue; // the native provisioner's pinned bootstrap; salt-cloud deploys its own copy
        }
        m.insert(k.clone(), v.clone());
    }
    let mut minion = match m.remove(s("minion")) {
        Some(Value::Mapping(mm)) => mm,
        _ => Mapping::new(),
    };
    minion.insert(s("environment"), s(plan.saltenv.as_str()));
    m.insert(s("minion"), Value::Mapping(minion));
    one(id, Value::Mapping(m))
}

/// The role spec an instance was planned from.
pub fn role_spec<'a>(group: &'a GroupSpec, i: &PlannedInstance) -> &'a RoleSpec {
    let role = &group.roles[&i.role];
    match (&i.member, &role.cluster) {
        (Some(m), Some(c)) => &c[m],
        _ => role,
    }
}

/// A role's overrides: size, image, minion, volumes, interfaces.
fn role_overrides(spec: &RoleSpec) -> Mapping {
    let mut m = Mapping::new();
    if let Some(size) = &spec.size {
        m.insert(s("size"), s(size));
    }
    if let Some(image) = &spec.image {
        m.insert(s("image"), s(image));
    }
    if !spec.minion.is_empty() {
        m.insert(s("minion"), Value::Mapping(spec.minion.clone()));
    }
    if let Some(v) = &spec.volumes {
        m.insert(s("volumes"), v.clone());
    }
    if let Some(v) = &spec.network_interfaces {
        m.insert(s("network_interfaces"), v.clone());
    }
    m
}

/// Per-instance overrides: the role's, plus grains and tags.
fn vm_overrides(group: &GroupSpec, i: &PlannedInstance) -> Mapping {
    let mut m = role_overrides(role_spec(group, i));
    m.insert(
        s("grains"),
        serde_yaml::to_value(&i.grains).expect("grains serialize"),
    );
    m.insert(
        s("tag"),
        serde_yaml::to_value(&i.tags).expect("tags serialize"),
    );
    m
}

/// The map document: `{<group>_<CPID>: [{<fqdn>: {grains, tag, ...}}, ...]}`.
pub fn map(plan: &Plan, group: &GroupSpec) -> Value {
    let vms = plan
        .instances
        .iter()
        .map(|i| one(i.name.clone(), Value::Mapping(vm_overrides(group, i))))
        .collect();
    one(
        Layout::cloud_id(&plan.group, plan.cpid),
        Value::Sequence(vms),
    )
}

/// Provider, then profile, then `layer` settings merged.
fn merged(group: &GroupSpec, layer: &Mapping) -> Mapping {
    let mut m = Mapping::new();
    for l in [&group.provider, &group.profile, layer] {
        for (k, v) in l {
            m.insert(k.clone(), v.clone());
        }
    }
    m
}

/// Provider, then profile, then role settings merged for one native launch.
pub fn launch_settings(plan: &Plan, group: &GroupSpec, i: &PlannedInstance) -> serde_json::Value {
    let mut m = merged(group, &vm_overrides(group, i));
    m.insert(s("zone"), s(plan.zone.as_str()));
    serde_json::to_value(Value::Mapping(m)).unwrap_or(serde_json::Value::Null)
}

/// Provider, then profile, then the role's settings merged: what every
/// instance of `spec` launches with (checked while planning).
pub fn role_settings(group: &GroupSpec, spec: &RoleSpec) -> serde_json::Value {
    serde_json::to_value(Value::Mapping(merged(group, &role_overrides(spec))))
        .unwrap_or(serde_json::Value::Null)
}

/// Reads a salt-cloud map file into its VMs (see [`map_vms`]).
pub fn read_map_file(
    path: &std::path::Path,
) -> Result<Vec<(String, Value)>, crate::backend::BackendError> {
    use crate::backend::{BackendError, BackendErrorKind};
    let text = std::fs::read_to_string(path).map_err(|e| BackendError::io(path, e))?;
    let doc: Value = serde_yaml::from_str(&text).map_err(|e| {
        BackendError::new(
            BackendErrorKind::Failed,
            format!("{}: not a salt-cloud map: {e}", path.display()),
        )
    })?;
    Ok(map_vms(&doc))
}

/// The VMs of a salt-cloud map document (`{profile: [{name: overrides}, ...]}`),
/// as (name, overrides) in map order.
pub fn map_vms(doc: &Value) -> Vec<(String, Value)> {
    let mut vms = Vec::new();
    for list in doc.as_mapping().into_iter().flat_map(|m| m.values()) {
        for vm in list.as_sequence().into_iter().flatten() {
            for (k, v) in vm.as_mapping().into_iter().flatten() {
                if let Some(name) = k.as_str() {
                    vms.push((name.to_string(), v.clone()));
                }
            }
        }
    }
    vms
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;
    use crate::cloud::Inventory;
    use crate::cpid::Cpid;
    use crate::names::{Env, Group, Role, Zone};
    use crate::pillar::Pillar;
    use crate::request::{CreateRequest, Target};

    #[test]
    fn the_provider_carries_the_accounts_role_over_the_groups() {
        let pillar = Pillar::from_yaml_str(
            "conductor: {environments: {test: {domain: foobar.com}}, groups: {devops: {provider: {role_arn: 'arn:aws:iam::999999999999:role/old'}, profile: {image: ami-1}, roles: {mq: {basename: mq-XX.REGION.ENV}}}}}",
        )
        .unwrap();
        let req = CreateRequest::new(
            Group::new("devops").unwrap(),
            Env::new("test").unwrap(),
            Zone::new("us-east-1a").unwrap(),
            Target::Role {
                role: Role::new("mq").unwrap(),
                count: None,
            },
        );
        let (inventory, held) = (Inventory::default(), BTreeSet::new());
        let plan = crate::plan::plan(Cpid::generate(), &req, &pillar, &inventory, &held).unwrap();
        let group = pillar.group(&req.group).unwrap();
        let account = AccountSpec {
            role_arn: Some("arn:aws:iam::111111111111:role/conductor".into()),
            ..AccountSpec::default()
        };
        let text = |a| serde_yaml::to_string(&provider(&plan, group, a)).unwrap();
        let with = text(Some(&account));
        assert!(
            with.contains("role_arn: arn:aws:iam::111111111111:role/conductor"),
            "{with}"
        );
        assert!(!with.contains("999999999999"), "{with}");
        assert!(text(None).contains("999999999999"));
    }
}
