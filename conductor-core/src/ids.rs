//! `IdScope`: the four kinds of id a run hands out (DESIGN §5), and the one
//! place that writes and reads their grain, their EC2 tag and their
//! reservation key.
//!
//! | scope | grain | tag | key |
//! |---|---|---|---|
//! | group cluster | `devops.nifi.cluster.id` | `conductor:devops.nifi.cluster.id` | `test_devops.nifi.cluster.id.2` |
//! | cloud cluster | `cloud.nifi.cluster.id` | `conductor:cloud.nifi.cluster.id` | `test_cloud.nifi.cluster.id.2` |
//! | group system | `devops.system.id` | `conductor:devops.system.id` | `test_devops.system.id.1` |
//! | cloud system | `cloud.system.id` | `conductor:cloud.system.id` | `test_cloud.system.id.1` |

use std::fmt;

use serde::Serialize;

use crate::cloud::{conductor_tag, TAG_PREFIX};
use crate::names::{Env, Group, Role, CLOUD};
use crate::reserve::{Key, KeyKind};

/// Where an id is unique: within a group or across the environment, for a
/// cluster role or for systems.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(into = "String")]
pub enum IdScope {
    /// `<group>.<role>.cluster.id`: unique within the group (and env).
    GroupCluster {
        /// The group.
        group: Group,
        /// The cluster role.
        role: Role,
    },
    /// `cloud.<role>.cluster.id`: unique within the env across groups.
    CloudCluster {
        /// The cluster role.
        role: Role,
    },
    /// `<group>.system.id`.
    GroupSystem {
        /// The group.
        group: Group,
    },
    /// `cloud.system.id`.
    CloudSystem,
}

impl IdScope {
    /// The grain holding this id (`devops.nifi.cluster.id`).
    pub fn grain(&self) -> String {
        format!("{self}.id")
    }

    /// The EC2 tag holding this id (`conductor:devops.nifi.cluster.id`).
    pub fn tag(&self) -> String {
        conductor_tag(&self.grain())
    }

    /// The reservation key of id `n` in `env` (`test_devops.nifi.cluster.id.2`).
    pub fn key(&self, env: &Env, n: u32) -> Key {
        Key::new(KeyKind::Id, format!("{env}_{}.{n}", self.grain()))
            .expect("validated names make valid keys")
    }

    /// Reads a grain name back (`cloud.system.id` -> `CloudSystem`).
    pub fn parse_grain(grain: &str) -> Option<Self> {
        let scope = grain.strip_suffix(".id")?;
        let parts: Vec<&str> = scope.split('.').collect();
        match parts.as_slice() {
            [CLOUD, "system"] => Some(Self::CloudSystem),
            [group, "system"] => Some(Self::GroupSystem {
                group: Group::new(*group).ok()?,
            }),
            [CLOUD, role, "cluster"] => Some(Self::CloudCluster {
                role: Role::new(*role).ok()?,
            }),
            [group, role, "cluster"] => Some(Self::GroupCluster {
                group: Group::new(*group).ok()?,
                role: Role::new(*role).ok()?,
            }),
            _ => None,
        }
    }

    /// Reads a tag back: the scope and id of `conductor:<grain>` = `<n>`.
    pub fn parse_tag(key: &str, value: &str) -> Option<(Self, u32)> {
        let scope = Self::parse_grain(key.strip_prefix(TAG_PREFIX)?)?;
        Some((scope, value.trim().parse().ok()?))
    }

    /// Reads an id key of `env` back (`test_devops.system.id.3` -> (`GroupSystem`, 3)).
    pub fn parse_key(key: &Key, env: &Env) -> Option<(Self, u32)> {
        if key.kind() != KeyKind::Id {
            return None;
        }
        let rest = key.as_str().strip_prefix(env.as_str())?.strip_prefix('_')?;
        let (grain, n) = rest.rsplit_once('.')?;
        Some((Self::parse_grain(grain)?, n.parse().ok()?))
    }
}

impl fmt::Display for IdScope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::GroupCluster { group, role } => write!(f, "{group}.{role}.cluster"),
            Self::CloudCluster { role } => write!(f, "{CLOUD}.{role}.cluster"),
            Self::GroupSystem { group } => write!(f, "{group}.system"),
            Self::CloudSystem => write!(f, "{CLOUD}.system"),
        }
    }
}

impl From<IdScope> for String {
    fn from(s: IdScope) -> String {
        s.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grain_tag_and_key_read_back() {
        let env = Env::new("test").unwrap();
        let (g, r) = (Group::new("devops").unwrap(), Role::new("nifi").unwrap());
        for scope in [
            IdScope::GroupCluster {
                group: g.clone(),
                role: r.clone(),
            },
            IdScope::CloudCluster { role: r.clone() },
            IdScope::GroupSystem { group: g.clone() },
            IdScope::CloudSystem,
        ] {
            assert_eq!(IdScope::parse_grain(&scope.grain()), Some(scope.clone()));
            assert_eq!(
                IdScope::parse_tag(&scope.tag(), " 7 "),
                Some((scope.clone(), 7))
            );
            assert_eq!(
                IdScope::parse_key(&scope.key(&env, 12), &env),
                Some((scope.clone(), 12))
            );
            assert_eq!(
                IdScope::parse_key(&scope.key(&env, 12), &Env::new("prod").unwrap()),
                None
            );
        }
        assert_eq!(
            IdScope::GroupCluster { group: g, role: r }
                .key(&env, 2)
                .as_str(),
            "test_devops.nifi.cluster.id.2"
        );
        assert_eq!(IdScope::parse_grain("devops.nifi.id"), None);
        assert_eq!(IdScope::parse_grain("cpid"), None);
    }
}
