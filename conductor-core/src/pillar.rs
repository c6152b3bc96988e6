//! The pillar schema under the `conductor:` key, with errors naming the key path.

use indexmap::IndexMap;
use serde::{Deserialize, Serialize};

use crate::account::AccountSpec;
use crate::basename::Basename;
use crate::input::{InputError, PillarError, MAX_PILLAR_ERRORS};
use crate::names::{check_domain, Env, Group, Region, Role, SystemName};
use crate::suggest::{suggestion, with_serde_suggestion};

/// Takes out of `tree` the key a deserializing error at `path` (saying
/// `message`) points at, an unknown key or one with a bad value, so the
/// next read finds the next error. `false` when nothing can be taken out
/// without hiding other errors (a missing key, the root, a list item).
fn without_error(
    tree: &mut serde_yaml::Value,
    path: &serde_path_to_error::Path,
    message: &str,
) -> bool {
    use serde_path_to_error::Segment;
    let segments: Vec<&Segment> = path.iter().collect();
    let Some((Segment::Map { key }, walk)) = segments.split_last() else {
        return false;
    };
    if message.starts_with("missing field") {
        return false;
    }
    let mut node = tree;
    for s in walk {
        let next = match (s, node) {
            (Segment::Map { key }, serde_yaml::Value::Mapping(m)) => m.get_mut(key.as_str()),
            (Segment::Seq { index }, serde_yaml::Value::Sequence(v)) => v.get_mut(*index),
            _ => None,
        };
        match next {
            Some(n) => node = n,
            None => return false,
        }
    }
    match node {
        serde_yaml::Value::Mapping(m) => m.remove(key.as_str()).is_some(),
        _ => false,
    }
}

/// Most instances one role may ask for (`nodes` or `count`).
pub const MAX_NODES: u32 = 500;

/// The `conductor:` pillar tree.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pillar {
    /// Salt environments: domain and the regions whose instances share ids.
    pub environments: IndexMap<Env, EnvironmentSpec>,
    /// Product groups (teams) and what they can build.
    pub groups: IndexMap<Group, GroupSpec>,
    /// Limits shared by every run in a region.
    #[serde(default)]
    pub throttle: Throttle,
}

/// Limits on how hard runs hit the cloud, shared by all parallel runs.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Throttle {
    /// Runs that may provision at once in one region (slots held through the
    /// reserver, so the limit holds across processes and, with DynamoDB, masters).
    #[serde(default)]
    pub max_provisioning_runs: Option<u32>,
    /// Launch calls one run keeps in flight at once.
    #[serde(default)]
    pub max_inflight_calls: Option<u32>,
}

/// One Salt environment.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnvironmentSpec {
    /// DNS domain appended to every name (`foobar.com`).
    pub domain: String,
    /// Regions whose instances count when choosing ids (default: the run's region).
    #[serde(default)]
    pub regions: Vec<Region>,
    /// The AWS account of the environment's instances (default: the
    /// conductor's own credentials).
    #[serde(default)]
    pub aws: Option<AccountSpec>,
}

impl EnvironmentSpec {
    /// Refuses a run in `region` (given as `given`, the request's words)
    /// when the environment lists its regions and `region` is not one of
    /// them: a typo or a wrong env, caught before any AWS call.
    pub(crate) fn check_region(
        &self,
        env: &Env,
        given: &str,
        region: &Region,
    ) -> Result<(), InputError> {
        if self.regions.is_empty() || self.regions.contains(region) {
            return Ok(());
        }
        let listed: Vec<&str> = self.regions.iter().map(Region::as_str).collect();
        Err(InputError::invalid(
            "region",
            given,
            &format!(
                "is in {region}, which environment {env} does not list (its regions: {}); \
                 fix region= or add {region} to conductor:environments:{env}:regions in pillar",
                listed.join(", ")
            ),
        ))
    }
}

/// One product group.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupSpec {
    /// salt-cloud provider settings (size, ssh_interface, subnet_id, keys, ...).
    #[serde(default)]
    pub provider: serde_yaml::Mapping,
    /// salt-cloud profile settings (image, script_args, minion, startup_states, ...);
    /// `bootstrap: {url, sha256, version}` overrides the native
    /// provisioner's pinned bootstrap script (checked while loading).
    #[serde(default)]
    pub profile: serde_yaml::Mapping,
    /// Orchestration SLS run on the master before and after each action.
    #[serde(default)]
    pub hooks: Hooks,
    /// Roles (machine types), by name.
    pub roles: IndexMap<Role, RoleSpec>,
    /// Systems: named lists of roles built together.
    #[serde(default)]
    pub systems: IndexMap<SystemName, Vec<SystemEntry>>,
}

/// Orchestration hooks of a group.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Hooks {
    /// Run before instances are created.
    #[serde(default)]
    pub pre_create: Vec<String>,
    /// Run after instances are created and their startup states applied.
    #[serde(default)]
    pub post_create: Vec<String>,
    /// Run before instances are destroyed.
    #[serde(default)]
    pub pre_destroy: Vec<String>,
    /// Run after instances are destroyed.
    #[serde(default)]
    pub post_destroy: Vec<String>,
    /// Run before an update re-applies states.
    #[serde(default)]
    pub pre_update: Vec<String>,
    /// Run after an update re-applied states.
    #[serde(default)]
    pub post_update: Vec<String>,
}

/// A role, or a cluster member when inside `cluster:`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoleSpec {
    /// Name pattern, e.g. `devops-mqXX.REGION.ENV` (required unless `cluster:` is set).
    #[serde(default)]
    pub basename: Option<Basename>,
    /// Instances to build (default 1); `count=` overrides it.
    #[serde(default = "one")]
    pub nodes: u32,
    /// Instance type, overriding the profile's and provider's.
    #[serde(default)]
    pub size: Option<String>,
    /// AMI, overriding the profile's.
    #[serde(default)]
    pub image: Option<String>,
    /// Extra grains for each instance.
    #[serde(default)]
    pub grains: serde_yaml::Mapping,
    /// Extra EC2 tags for each instance.
    #[serde(default)]
    pub tags: serde_yaml::Mapping,
    /// Minion config overrides for each instance.
    #[serde(default)]
    pub minion: serde_yaml::Mapping,
    /// Block device definitions, passed through to the map.
    #[serde(default)]
    pub volumes: Option<serde_yaml::Value>,
    /// Network interface definitions, passed through to the map.
    #[serde(default)]
    pub network_interfaces: Option<serde_yaml::Value>,
    /// Startup states for these instances, overriding the group profile's.
    #[serde(default)]
    pub startup_states: Option<Vec<String>>,
    /// Cluster members: building this role makes one new cluster of them.
    #[serde(default)]
    pub cluster: Option<IndexMap<Role, RoleSpec>>,
}

fn one() -> u32 {
    1
}

/// One entry of a system: a role and how many of it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SystemEntry {
    /// The role to build.
    pub role: Role,
    /// Instances (or clusters, for a cluster role); default the role's `nodes` (or 1 cluster).
    #[serde(default)]
    pub count: Option<u32>,
}

#[derive(Deserialize)]
struct Root {
    conductor: Option<serde_yaml::Value>,
}

impl Pillar {
    /// Reads the `conductor:` key of a whole pillar and validates it.
    pub fn from_pillar(value: serde_yaml::Value) -> Result<Self, PillarError> {
        let root: Root = serde_yaml::from_value(value).map_err(|e| {
            PillarError::new(
                "<root>",
                format!("expected a mapping with a `conductor` key: {e}"),
            )
        })?;
        let tree = root.conductor.ok_or_else(|| {
            PillarError::new("conductor", "missing: the pillar has no `conductor` key")
        })?;
        Self::from_tree(tree)
    }

    /// Reads a whole pillar document as YAML text (with its `conductor:` key)
    /// and validates it.
    pub fn from_yaml_str(text: &str) -> Result<Self, PillarError> {
        let value: serde_yaml::Value = serde_yaml::from_str(text)
            .map_err(|e| PillarError::new("<root>", format!("not YAML: {e}")))?;
        Self::from_pillar(value)
    }

    /// Reads the contents of the `conductor:` key and validates it. Every
    /// error is reported at once (up to [`MAX_PILLAR_ERRORS`]): the shape
    /// errors (unknown keys, bad values) found by reading again without
    /// each one in turn, else every consistency error.
    pub fn from_tree(mut tree: serde_yaml::Value) -> Result<Self, PillarError> {
        let mut errors = Vec::new();
        loop {
            match serde_path_to_error::deserialize::<_, Pillar>(tree.clone()) {
                Ok(pillar) if errors.is_empty() => {
                    let mut found = pillar.validate();
                    found.truncate(MAX_PILLAR_ERRORS);
                    return match PillarError::all(found) {
                        None => Ok(pillar),
                        Some(e) => Err(e),
                    };
                }
                Ok(_) => break,
                Err(e) => {
                    let path = e.path().clone();
                    let message = with_serde_suggestion(e.into_inner().to_string());
                    let shown = match path.to_string().as_str() {
                        "." => "conductor".to_string(),
                        p => format!("conductor.{p}"),
                    };
                    let removed = without_error(&mut tree, &path, &message);
                    errors.push(PillarError::new(shown, message));
                    if !removed || errors.len() >= MAX_PILLAR_ERRORS {
                        break;
                    }
                }
            }
        }
        Err(PillarError::all(errors).expect("at least one error"))
    }

    fn validate(&self) -> Vec<PillarError> {
        let mut errors = Vec::new();
        for (key, v) in [
            ("max_provisioning_runs", self.throttle.max_provisioning_runs),
            ("max_inflight_calls", self.throttle.max_inflight_calls),
        ] {
            if v == Some(0) || v.is_some_and(|v| v > 10_000) {
                errors.push(PillarError::new(
                    format!("conductor.throttle.{key}"),
                    "must be 1 to 10000, or left out for no limit",
                ));
            }
        }
        for (env, spec) in &self.environments {
            if let Err(e) = check_domain(&spec.domain) {
                errors.push(PillarError::new(
                    format!("conductor.environments.{env}.domain"),
                    e.to_string(),
                ));
            }
            if let Some(Err((key, message))) = spec.aws.as_ref().map(AccountSpec::validate) {
                let dot = if key.is_empty() { "" } else { "." };
                errors.push(PillarError::new(
                    format!("conductor.environments.{env}.aws{dot}{key}"),
                    message,
                ));
            }
        }
        for (group, g) in &self.groups {
            let at = |rest: &str| format!("conductor.groups.{group}.{rest}");
            if let Err(m) = check_bootstrap(g) {
                errors.push(PillarError::new(at("profile.bootstrap"), m));
            }
            for (part, settings) in [("provider", &g.provider), ("profile", &g.profile)] {
                for key in settings.keys().filter_map(|k| k.as_str()) {
                    if let Some(meant) = misspelt_special(key) {
                        errors.push(PillarError::new(
                            at(&format!("{part}.{key}")),
                            format!("is not a setting Conductor reads, nor one it passes on knowingly; did you mean `{meant}`?"),
                        ));
                    }
                }
            }
            for (role, r) in &g.roles {
                match &r.cluster {
                    None => errors.extend(check_role(r, &at(&format!("roles.{role}"))).err()),
                    Some(members) if members.is_empty() => errors.push(PillarError::new(
                        at(&format!("roles.{role}.cluster")),
                        "is empty: list at least one member",
                    )),
                    Some(members) => {
                        for (m, spec) in members {
                            let p = at(&format!("roles.{role}.cluster.{m}"));
                            if spec.cluster.is_some() {
                                errors.push(PillarError::new(
                                    p,
                                    "clusters cannot nest: remove `cluster` from the member",
                                ));
                            } else {
                                errors.extend(check_role(spec, &p).err());
                            }
                        }
                    }
                }
            }
            for (system, entries) in &g.systems {
                if entries.is_empty() {
                    errors.push(PillarError::new(
                        at(&format!("systems.{system}")),
                        "is empty: list at least one role",
                    ));
                }
                for (i, e) in entries.iter().enumerate() {
                    let p = at(&format!("systems.{system}[{i}]"));
                    if !g.roles.contains_key(&e.role) {
                        errors.push(PillarError::new(
                            format!("{p}.role"),
                            format!(
                                "unknown role {:?}; the group has: {}{}",
                                e.role.as_str(),
                                keys(&g.roles),
                                suggestion(e.role.as_str(), g.roles.keys().map(Role::as_str))
                            ),
                        ));
                    }
                    if let Some(c) = e.count {
                        if let Err(m) = check_count(c) {
                            errors.push(PillarError::new(format!("{p}.count"), m));
                        }
                    }
                }
            }
        }
        errors
    }

    /// The environment `env`, or an error naming the ones pillar has.
    pub fn environment(&self, env: &Env) -> Result<&EnvironmentSpec, PillarError> {
        self.environments.get(env).ok_or_else(|| {
            PillarError::new(
                format!("conductor.environments.{env}"),
                format!(
                    "missing: pillarenv {:?} is not configured; pillar has: {}{}",
                    env.as_str(),
                    keys(&self.environments),
                    suggestion(env.as_str(), self.environments.keys().map(Env::as_str))
                ),
            )
        })
    }

    /// The group `group`, or an error naming the ones pillar has.
    pub fn group(&self, group: &Group) -> Result<&GroupSpec, PillarError> {
        self.groups.get(group).ok_or_else(|| {
            PillarError::new(
                format!("conductor.groups.{group}"),
                format!(
                    "missing: group {:?} is not in pillar; pillar has: {}{}",
                    group.as_str(),
                    keys(&self.groups),
                    suggestion(group.as_str(), self.groups.keys().map(Group::as_str))
                ),
            )
        })
    }
}

/// The group's `bootstrap` (and older `bootstrap_url`) resolve to a script
/// with a checksum: a URL other than the pinned release needs its sha256.
/// The settings of a group's profile Conductor itself acts on (the rest
/// go to salt-cloud as they are): a key one typo away from one of them is
/// a mistake that would drop what it asks for silently.
const SPECIAL_SETTINGS: &[&str] = &["startup_states", "bootstrap", "bootstrap_url"];

/// The special setting `key` is a misspelling of, if any.
fn misspelt_special(key: &str) -> Option<&'static str> {
    if SPECIAL_SETTINGS.contains(&key) {
        return None;
    }
    crate::suggest::did_you_mean(key, SPECIAL_SETTINGS.iter().copied())
}

fn check_bootstrap(g: &GroupSpec) -> Result<(), String> {
    let get = |key: &str| {
        let v = g.profile.get(key).or_else(|| g.provider.get(key))?;
        Some(serde_json::to_value(v).unwrap_or(serde_json::Value::Null))
    };
    crate::user_data::Bootstrap::from_settings(
        get("bootstrap").as_ref(),
        get("bootstrap_url").as_ref(),
    )
    .map(|_| ())
    .map_err(|e| e.to_string())
}

fn check_role(r: &RoleSpec, path: &str) -> Result<(), PillarError> {
    if r.basename.is_none() {
        return Err(PillarError::new(
            format!("{path}.basename"),
            "missing: give a name pattern such as devops-mqXX.REGION.ENV",
        ));
    }
    check_count(r.nodes).map_err(|m| PillarError::new(format!("{path}.nodes"), m))
}

/// Checks an instance or cluster count: 1 to [`MAX_NODES`].
pub fn check_count(n: u32) -> Result<(), String> {
    if n == 0 || n > MAX_NODES {
        return Err(format!("{n} is out of range: give 1 to {MAX_NODES}"));
    }
    Ok(())
}

/// Comma-separated keys of a map, for error messages.
pub fn keys<K: std::fmt::Display, V>(map: &IndexMap<K, V>) -> String {
    if map.is_empty() {
        return "(none)".into();
    }
    map.keys()
        .map(|k| k.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(yaml: &str) -> Result<Pillar, PillarError> {
        Pillar::from_pillar(serde_yaml::from_str(yaml).unwrap())
    }

    const OK: &str = "conductor:\n  environments: {test: {domain: foobar.com}}\n  groups:\n    devops:\n      roles:\n        mq: {basename: devops-mqXX.REGION.ENV, nodes: 2}\n";

    #[test]
    fn loads_minimal() {
        let p = load(OK).unwrap();
        assert_eq!(p.groups[&Group::new("devops").unwrap()].roles.len(), 1);
    }

    #[test]
    fn a_group_named_cloud_is_refused_at_its_path() {
        let e = load(&OK.replace("    devops:\n", "    cloud:\n")).unwrap_err();
        let text = e.to_string();
        assert!(text.contains("conductor.groups"), "{text}");
        assert!(text.contains("rename the group"), "{text}");
    }

    #[test]
    fn every_shape_error_is_reported_at_once() {
        let yaml = "conductor:\n  environments: {test: {domain: foobar.com, regoins: [us-east-1]}}\n  groups:\n    devops:\n      roles:\n        mq: {basename: devops-mqXX.REGION.ENV, nodez: 2}\n        kafka: {basename: devops-kafkaXX.REGION.ENV, nodes: -1}\n        zk: {basename: devops-zkXX.REGION.ENV, size: [1]}\n";
        let e = load(yaml).unwrap_err();
        let paths: Vec<&str> = std::iter::once(e.path.as_str())
            .chain(e.also.iter().map(|e| e.path.as_str()))
            .collect();
        assert_eq!(
            paths,
            [
                "conductor.environments.test.regoins",
                "conductor.groups.devops.roles.mq.nodez",
                "conductor.groups.devops.roles.kafka.nodes",
                "conductor.groups.devops.roles.zk.size",
            ],
            "{e}"
        );
        let text = e.to_string();
        assert_eq!(text.lines().count(), 4, "{text}");
        assert!(text.contains("did you mean `regions`?"), "{text}");
        assert!(text.contains("did you mean `nodes`?"), "{text}");
    }

    #[test]
    fn every_consistency_error_is_reported_at_once() {
        let yaml = format!(
            "{}  throttle: {{max_inflight_calls: 0}}\n",
            OK.replace(
                "nodes: 2}\n",
                "nodes: 2}\n        big: {basename: devops-bigXX.REGION.ENV, nodes: 501}\n      systems: {s: [{role: mw}], t: []}\n"
            )
        );
        let e = load(&yaml).unwrap_err();
        let mut paths: Vec<&str> = std::iter::once(e.path.as_str())
            .chain(e.also.iter().map(|e| e.path.as_str()))
            .collect();
        paths.sort();
        assert_eq!(
            paths,
            [
                "conductor.groups.devops.roles.big.nodes",
                "conductor.groups.devops.systems.s[0].role",
                "conductor.groups.devops.systems.t",
                "conductor.throttle.max_inflight_calls",
            ],
            "{e}"
        );
        assert!(e.to_string().contains("did you mean mq?"), "{e}");
    }

    #[test]
    fn a_misspelt_special_setting_is_refused() {
        let yaml = OK.replace(
            "      roles:",
            "      profile: {startup_state: [devops.conductor], image: ami-1}\n      roles:",
        );
        let e = load(&yaml).unwrap_err();
        assert_eq!(
            e.path, "conductor.groups.devops.profile.startup_state",
            "{e}"
        );
        assert!(e.message.contains("did you mean `startup_states`?"), "{e}");
        let fine = OK.replace(
            "      roles:",
            "      profile: {startup_states: [a], image: ami-1, size: t3.small}\n      roles:",
        );
        assert!(load(&fine).is_ok());
    }

    #[test]
    fn errors_stop_at_a_bound() {
        let roles: String = (0..30)
            .map(|i| format!("        r{i}: {{basename: devops-rXX.REGION.ENV, nodez: 1}}\n"))
            .collect();
        let yaml = format!("conductor:\n  environments: {{test: {{domain: foobar.com}}}}\n  groups:\n    devops:\n      roles:\n{roles}");
        let e = load(&yaml).unwrap_err();
        assert_eq!(1 + e.also.len(), MAX_PILLAR_ERRORS);
    }

    #[test]
    fn errors_name_the_key_path() {
        let e = load(&OK.replace("nodes: 2", "nodes: -1")).unwrap_err();
        assert_eq!(e.path, "conductor.groups.devops.roles.mq.nodes", "{e}");
        let e = load(&OK.replace("nodes: 2", "nodez: 2")).unwrap_err();
        assert!(e.to_string().contains("nodez"), "{e}");
        let e = load(&OK.replace("devops-mqXX", "devops-mq")).unwrap_err();
        assert_eq!(e.path, "conductor.groups.devops.roles.mq.basename", "{e}");
        let e = load(&OK.replace("nodes: 2", "nodes: 0")).unwrap_err();
        assert_eq!(e.path, "conductor.groups.devops.roles.mq.nodes", "{e}");
        let e = load(&OK.replace("devops:", "Dev/ops:")).unwrap_err();
        assert!(e.to_string().contains("Dev/ops"), "{e}");
        let e = load("other: 1").unwrap_err();
        assert_eq!(e.path, "conductor");
    }

    #[test]
    fn bootstrap_overrides_are_checked_while_loading() {
        let with = |b: &str| {
            OK.replace(
                "    devops:\n",
                &format!("    devops:\n      profile: {{bootstrap: {b}}}\n"),
            )
        };
        let sum = "0".repeat(64);
        assert!(load(&with(&format!("{{version: 2025.01.02, sha256: '{sum}'}}"))).is_ok());
        for bad in [
            "{url: 'https://mirror/b.sh'}".to_string(),
            "{version: 2025.01.02}".to_string(),
            format!("{{sha256: '{sum}', extra: 1}}"),
        ] {
            let e = load(&with(&bad)).unwrap_err();
            assert_eq!(
                e.path, "conductor.groups.devops.profile.bootstrap",
                "{bad}: {e}"
            );
        }
    }

    #[test]
    fn systems_must_name_known_roles() {
        let y = format!("{OK}      systems:\n        s: [{{role: nope}}]\n");
        let e = load(&y).unwrap_err();
        assert_eq!(e.path, "conductor.groups.devops.systems.s[0].role", "{e}");
    }
}
