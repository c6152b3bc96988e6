//! The salt-runner style `key=value` words, parsed into requests.

use std::collections::BTreeMap;
use std::ffi::OsString;

use conductor_core::{
    AdoptRequest, Cpid, CreateRequest, Env, Group, InputError, InstanceQuery, Role, Selection,
    SystemName, Target, Zone, MAX_NODES,
};

/// Words `create` and `plan` accept.
pub const CREATE_WORDS: &[&str] = &[
    "group",
    "system",
    "role",
    "count",
    "pillarenv",
    "saltenv",
    "region",
    "cpid",
];
/// Words `destroy`, `update` and `status` accept.
pub const SELECT_WORDS: &[&str] = &[
    "group",
    "pillarenv",
    "saltenv",
    "region",
    "cpid",
    "names",
    "role",
    "cluster_id",
    "system_id",
];

/// Words `adopt` accepts.
pub const ADOPT_WORDS: &[&str] = &["group", "pillarenv", "saltenv", "region"];

/// Parsed words: key -> value, each key once.
#[derive(Debug, Default)]
pub struct Words(BTreeMap<String, String>);

impl Words {
    /// Parses `key=value` words, refusing anything not in `allowed`.
    pub fn parse(raw: &[OsString], command: &str, allowed: &[&str]) -> Result<Self, InputError> {
        let mut map = BTreeMap::new();
        for w in raw {
            let Some(w) = w.to_str() else {
                return Err(InputError::invalid(
                    "word",
                    &w.to_string_lossy(),
                    "is not valid UTF-8",
                ));
            };
            let Some((k, v)) = w.split_once('=') else {
                return Err(InputError::invalid(
                    "word",
                    w,
                    &format!("is not key=value; {command} takes words such as group=devops role=activemq pillarenv=test region=us-east-1a"),
                ));
            };
            if !allowed.contains(&k) {
                return Err(InputError::invalid(
                    "word",
                    w,
                    &format!(
                        "unknown key {k:?}; {command} accepts: {}{}",
                        allowed.join(", "),
                        conductor_core::did_you_mean(k, allowed.iter().copied())
                            .map_or_else(String::new, |c| format!("; did you mean {c}=?"))
                    ),
                ));
            }
            if v.is_empty() {
                return Err(InputError::invalid(
                    "word",
                    w,
                    &format!("{k} needs a value, e.g. {k}=..."),
                ));
            }
            if map.insert(k.to_string(), v.to_string()).is_some() {
                return Err(InputError::invalid(
                    "word",
                    w,
                    &format!("{k} is given twice"),
                ));
            }
        }
        Ok(Self(map))
    }

    fn get(&self, k: &str) -> Option<&str> {
        self.0.get(k).map(String::as_str)
    }

    fn require(&self, k: &str, example: &str) -> Result<&str, InputError> {
        self.get(k)
            .ok_or_else(|| InputError::invalid(k, "", &format!("is required: add {k}={example}")))
    }

    /// `k`'s value as a whole number from 1 to `max` (the same range in
    /// every message, whether the value is text or too large).
    fn number(&self, k: &str, max: u32) -> Result<Option<u32>, InputError> {
        self.get(k)
            .map(|v| match v.parse::<u32>() {
                Ok(n) if (1..=max).contains(&n) => Ok(n),
                _ => Err(InputError::invalid(
                    k,
                    v,
                    &format!("must be a whole number from 1 to {max}"),
                )),
            })
            .transpose()
    }

    fn envs(&self) -> Result<(Env, Env), InputError> {
        let pillarenv = Env::new(self.require("pillarenv", "test")?)?;
        let saltenv = match self.get("saltenv") {
            Some(s) => Env::new(s)?,
            None => pillarenv.clone(),
        };
        Ok((pillarenv, saltenv))
    }

    /// A create/plan request: `group`, `pillarenv`, `region` and one of `system` or `role` (+`count`).
    pub fn create_request(&self) -> Result<CreateRequest, InputError> {
        let group = Group::new(self.require("group", "devops")?)?;
        let (pillarenv, saltenv) = self.envs()?;
        let zone = Zone::new(self.require("region", "us-east-1a")?)?;
        let count = self.number("count", MAX_NODES)?;
        let target = match (self.get("system"), self.get("role")) {
            (Some(s), None) => {
                if count.is_some() {
                    return Err(InputError::invalid(
                        "count",
                        self.get("count").unwrap_or(""),
                        "goes with role=, not system= (set counts in the system's pillar)",
                    ));
                }
                Target::System(SystemName::new(s)?)
            }
            (None, Some(r)) => Target::Role {
                role: Role::new(r)?,
                count,
            },
            (Some(_), Some(_)) => {
                return Err(InputError::invalid(
                    "system",
                    self.get("system").unwrap_or(""),
                    "give either system= or role=, not both",
                ))
            }
            (None, None) => {
                return Err(InputError::invalid(
                    "role",
                    "",
                    "is required: add role=<role> or system=<system>",
                ))
            }
        };
        let cpid = self.get("cpid").map(Cpid::parse).transpose()?;
        Ok(CreateRequest {
            group,
            pillarenv,
            saltenv,
            zone,
            target,
            cpid,
        })
    }

    /// The region of an optional `region=<zone>`.
    fn region(&self) -> Result<Option<conductor_core::Region>, InputError> {
        self.get("region")
            .map(|z| Zone::new(z).map(|z| z.region()))
            .transpose()
    }

    /// An adopt request: `group`, `pillarenv`, optional `saltenv` and `region`.
    pub fn adopt_request(&self, apply: bool) -> Result<AdoptRequest, InputError> {
        let group = Group::new(self.require("group", "devops")?)?;
        let (env, saltenv) = self.envs()?;
        let region = self.region()?;
        Ok(AdoptRequest {
            group,
            env,
            saltenv,
            region,
            apply,
        })
    }

    /// The instances a destroy, update or status acts on: `group`,
    /// `pillarenv`, optional `region`, and one selector: `cpid=`, `names=a,b`,
    /// `role=` + `cluster_id=`, or `system_id=`; with `all_by_default`, no
    /// selector means every instance of the group.
    pub fn query(&self, all_by_default: bool) -> Result<InstanceQuery, InputError> {
        let group = Group::new(self.require("group", "devops")?)?;
        if let Some(v) = self.get("saltenv") {
            return Err(InputError::invalid(
                "saltenv",
                v,
                "is not used to select instances: destroy, update and status select by the env tag; \
                 give pillarenv= and drop saltenv=",
            ));
        }
        let (env, _) = self.envs()?;
        let region = self.region()?;
        let mut selections = Vec::new();
        if let Some(c) = self.get("cpid") {
            selections.push(Selection::Cpid(Cpid::parse(c)?));
        }
        if let Some(n) = self.get("names") {
            let names: Vec<String> = n
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect();
            for name in &names {
                conductor_core::check_instance_name("names", name)?;
            }
            selections.push(Selection::Names(names));
        }
        match (self.get("role"), self.number("cluster_id", u32::MAX)?) {
            (Some(r), Some(id)) => selections.push(Selection::Cluster {
                role: Role::new(r)?,
                id,
            }),
            (Some(r), None) => {
                return Err(InputError::invalid(
                    "role",
                    r,
                    "selecting by role needs cluster_id=<N>",
                ))
            }
            (None, Some(id)) => {
                return Err(InputError::invalid(
                    "cluster_id",
                    &id.to_string(),
                    "needs role=<cluster role>",
                ))
            }
            (None, None) => {}
        }
        if let Some(id) = self.number("system_id", u32::MAX)? {
            selections.push(Selection::System(id));
        }
        let selection = match selections.len() {
            1 => selections.remove(0),
            0 if all_by_default => Selection::All,
            0 => {
                return Err(InputError::invalid(
                    "selection",
                    "",
                    "needs one of cpid=, names=, role= with cluster_id=, or system_id=",
                ))
            }
            _ => {
                return Err(InputError::invalid(
                    "selection",
                    "",
                    "give only one of cpid=, names=, role=/cluster_id=, system_id=",
                ))
            }
        };
        Ok(InstanceQuery {
            group,
            env,
            region,
            selection,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(s: &str, allowed: &[&str]) -> Result<Words, InputError> {
        let raw: Vec<OsString> = s.split_whitespace().map(OsString::from).collect();
        Words::parse(&raw, "conductor group create", allowed)
    }

    #[test]
    fn seed_command_parses() {
        let r = words(
            "group=devops system=small_test pillarenv=test region=us-east-1a",
            CREATE_WORDS,
        )
        .unwrap()
        .create_request()
        .unwrap();
        assert_eq!(r.zone.as_str(), "us-east-1a");
        assert_eq!(
            r.target,
            Target::System(SystemName::new("small_test").unwrap())
        );
    }

    #[test]
    fn errors_name_the_bad_word() {
        let e = words("group=devops colour=blue", CREATE_WORDS)
            .unwrap_err()
            .to_string();
        assert!(e.contains("colour=blue") && e.contains("accepts"), "{e}");
        let e = words("group=devops role=mq region=us-east-1a", CREATE_WORDS)
            .unwrap()
            .create_request()
            .unwrap_err()
            .to_string();
        assert!(e.contains("pillarenv"), "{e}");
        let e = words(
            "group=devops role=mq pillarenv=test region=us-east-1a count=-1",
            CREATE_WORDS,
        )
        .unwrap()
        .create_request()
        .unwrap_err()
        .to_string();
        assert!(e.contains("count") && e.contains("-1"), "{e}");
        let e = words(
            "group=../x role=mq pillarenv=test region=us-east-1a",
            CREATE_WORDS,
        )
        .unwrap()
        .create_request()
        .unwrap_err()
        .to_string();
        assert!(e.contains("../x"), "{e}");
        let e = words("group=a group=b", CREATE_WORDS)
            .unwrap_err()
            .to_string();
        assert!(e.contains("twice"), "{e}");
    }

    #[test]
    fn destroy_needs_exactly_one_selector() {
        let ok = words(
            "group=devops pillarenv=test cpid=16833830331552303186",
            SELECT_WORDS,
        )
        .unwrap()
        .query(false)
        .unwrap();
        assert!(matches!(ok.selection, Selection::Cpid(_)));
        assert!(words("group=devops pillarenv=test", SELECT_WORDS)
            .unwrap()
            .query(false)
            .is_err());
        assert!(words(
            "group=devops pillarenv=test system_id=1 cpid=16833830331552303186",
            SELECT_WORDS
        )
        .unwrap()
        .query(false)
        .is_err());
    }
}
