//! Ids read from the master's grains cache: the evidence of instances the
//! Python runner built, which carry their ids as grains and not as
//! `conductor:*` tags.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::Value;

use crate::cpid::Cpid;
use crate::ids::IdScope;
use crate::pillar::Pillar;
use crate::salt::CachedGrains;

/// One id a minion's cached grains hold.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct GrainId {
    /// The minion (its instance's `Name`).
    pub minion: String,
    /// The grain's scope (serialized as the grain's name without `.id`).
    pub scope: IdScope,
    /// The id.
    pub id: u32,
}

/// What one minion's cached grains say about it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MinionIds {
    /// The `cpid` grain, when it is a valid CPID.
    pub cpid: Option<Cpid>,
    /// Its id grains (`cloud.system.id`, `<group>.<role>.cluster.id`, ...).
    pub ids: BTreeMap<IdScope, u32>,
}

/// The id grains of every cached minion.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GrainIds {
    minions: BTreeMap<String, MinionIds>,
}

impl GrainIds {
    /// Reads the id grains and `cpid` of each minion of `cache`; other
    /// grains, and id grains whose value is not a positive integer (or its
    /// text), are ignored.
    pub fn from_cache(cache: &CachedGrains) -> Self {
        let minions = cache
            .iter()
            .filter_map(|(minion, grains)| {
                let grains = grains.as_object()?;
                let ids: BTreeMap<IdScope, u32> = grains
                    .iter()
                    .filter_map(|(k, v)| Some((IdScope::parse_grain(k)?, id_value(v)?)))
                    .collect();
                let cpid = grains
                    .get("cpid")
                    .and_then(scalar_text)
                    .and_then(|c| Cpid::parse(&c).ok());
                (cpid.is_some() || !ids.is_empty())
                    .then(|| (minion.clone(), MinionIds { cpid, ids }))
            })
            .collect();
        Self { minions }
    }

    /// What the cache holds about `minion`.
    pub fn minion(&self, minion: &str) -> Option<&MinionIds> {
        self.minions.get(minion)
    }

    /// Every id grain of the minions whose name may be in `env` of `domain`
    /// ([`name_env`]: it carries `env`'s label, or no environment's label).
    pub fn in_env<'a>(
        &'a self,
        env: &'a str,
        domain: &'a str,
        pillar: &'a Pillar,
    ) -> impl Iterator<Item = GrainId> + 'a {
        self.minions
            .iter()
            .filter(move |(m, _)| name_env(m, env, domain, pillar) != NameEnv::Other)
            .flat_map(|(m, g)| {
                g.ids.iter().map(move |(scope, id)| GrainId {
                    minion: m.clone(),
                    scope: scope.clone(),
                    id: *id,
                })
            })
    }
}

/// What an instance name says about its environment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NameEnv {
    /// It ends with the domain and one label before it is the environment
    /// (basenames put `ENV` before the domain:
    /// `devops-mq01.us-east-1a.test.foobar.com`).
    Labeled,
    /// It ends with the domain but no label before it names an environment
    /// of the pillar (a basename without `ENV`): it may be any environment's
    /// of that domain. Used ids count it (the safe side); adopt refuses it
    /// unless only one environment has that domain.
    Unlabeled,
    /// Another domain's, or it names another environment.
    Other,
}

/// Where instance `name` stands towards environment `env` of `domain`;
/// the labels of `pillar`'s environments (and `env`) are the ones that
/// place a name.
pub fn name_env(name: &str, env: &str, domain: &str, pillar: &Pillar) -> NameEnv {
    let Some(rest) = name
        .strip_suffix(domain)
        .and_then(|rest| rest.strip_suffix('.'))
    else {
        return NameEnv::Other;
    };
    let labels = || rest.split('.').skip(1);
    if labels().any(|label| label == env) {
        NameEnv::Labeled
    } else if labels().any(|label| pillar.environments.keys().any(|e| e.as_str() == label)) {
        NameEnv::Other
    } else {
        NameEnv::Unlabeled
    }
}

fn scalar_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.trim().to_string()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn id_value(v: &Value) -> Option<u32> {
    scalar_text(v)?.parse().ok().filter(|n| *n > 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn id_grains_and_cpid_are_read_and_envs_told_apart() {
        let cache: CachedGrains = [
            (
                "devops-nifi-01.clid-1.us-east-1a.test.foobar.com".to_string(),
                json!({"id": "x", "cpid": "16833830331552303186", "cloud.nifi.cluster.id": 3,
                       "devops.nifi.cluster.id": "1", "cloud.system.id": "zero", "os": "Debian"}),
            ),
            ("other.example.com".to_string(), json!({"os": "Debian"})),
            (
                "devops-mq01.us-east-1a.prod.foobar.com".to_string(),
                json!({"cloud.system.id": 2}),
            ),
        ]
        .into_iter()
        .collect();
        let g = GrainIds::from_cache(&cache);
        let pillar = two_envs();
        assert!(g.minion("other.example.com").is_none());
        let test: Vec<GrainId> = g.in_env("test", "foobar.com", &pillar).collect();
        assert_eq!(test.len(), 2, "{test:?}");
        assert!(test
            .iter()
            .any(|i| i.id == 3 && i.scope.grain() == "cloud.nifi.cluster.id"));
        let prod: Vec<GrainId> = g.in_env("prod", "foobar.com", &pillar).collect();
        assert_eq!(prod.len(), 1);
        assert!(g
            .minion("devops-nifi-01.clid-1.us-east-1a.test.foobar.com")
            .unwrap()
            .cpid
            .is_some());
    }

    fn two_envs() -> Pillar {
        Pillar::from_yaml_str(
            "conductor: {environments: {test: {domain: foobar.com}, prod: {domain: foobar.com}}, groups: {}}",
        )
        .unwrap()
    }

    #[test]
    fn a_name_without_an_env_label_may_be_any_envs_of_its_domain() {
        let p = two_envs();
        let env = |name: &str, env: &str| name_env(name, env, "foobar.com", &p);
        assert_eq!(
            env("a.us-east-1a.test.foobar.com", "test"),
            NameEnv::Labeled
        );
        assert_eq!(env("a.us-east-1a.prod.foobar.com", "test"), NameEnv::Other);
        assert_eq!(env("a.us-east-1a.foobar.com", "test"), NameEnv::Unlabeled);
        assert_eq!(env("a.us-east-1a.foobar.com", "prod"), NameEnv::Unlabeled);
        // The host label is not an env label; other domains are not ours.
        assert_eq!(env("test.foobar.com", "test"), NameEnv::Unlabeled);
        assert_eq!(env("a.test.foobar.org", "test"), NameEnv::Other);
        assert_eq!(env("a.test.xfoobar.com", "test"), NameEnv::Other);
        // Counted in both envs (the safe side).
        let cache: CachedGrains = [(
            "devops-mq01.us-east-1a.foobar.com".to_string(),
            json!({"cloud.system.id": 4}),
        )]
        .into_iter()
        .collect();
        let g = GrainIds::from_cache(&cache);
        assert_eq!(g.in_env("test", "foobar.com", &p).count(), 1);
        assert_eq!(g.in_env("prod", "foobar.com", &p).count(), 1);
    }
}
