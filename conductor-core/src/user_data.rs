//! The cloud-init user data of a native launch: it writes the minion
//! configuration (master, id = fqdn, environment, grains) and installs the
//! Salt minion at the pinned version with `bootstrap-salt.sh`, so the minion
//! joins the master with the grains salt-cloud would have given it.
//!
//! The document (from [`render`]) has this shape (keys are written sorted):
//!
//! ```yaml
//! #cloud-config
//! write_files:
//! - path: /etc/salt/minion.d/conductor.conf
//!   permissions: '0644'
//!   content: |
//!     master: salt.foobar.com
//!     id: devops-mq03.us-east-1a.test.foobar.com
//!     environment: test
//!     grains: {cpid: '16833830331552303186', ...}
//!     conductor_startup_states: [devops.conductor]
//! runcmd:
//! - [curl, -fsSL, --retry, '5', -o, /tmp/bootstrap-salt.sh, <bootstrap_url>]
//! - [sh, /tmp/bootstrap-salt.sh, -P, stable, '3007.16']
//! ```
//!
//! Commands are argument lists, never shell text, so pillar values cannot
//! inject commands. Startup states are recorded (`conductor_startup_states`)
//! but not run by the minion: Conductor applies them itself once the minion
//! is up, with its own log, as on the salt-cloud path; a `startup_states`
//! key in the pillar's `minion` settings is passed through unchanged.

use std::collections::BTreeMap;

use crate::cloud::{LaunchSpec, TAG_PREFIX};
use serde_json::{Map, Value};
use thiserror::Error;

/// Where the minion configuration is written on the instance.
pub const MINION_CONF: &str = "/etc/salt/minion.d/conductor.conf";

/// Where the bootstrap script is downloaded to on the instance.
pub const BOOTSTRAP_PATH: &str = "/tmp/bootstrap-salt.sh";

/// Where the bootstrap script comes from unless `bootstrap_url` is set.
pub const DEFAULT_BOOTSTRAP_URL: &str =
    "https://github.com/saltstack/salt-bootstrap/releases/latest/download/bootstrap-salt.sh";

/// Salt version installed when pillar gives neither `script_args` nor `salt_version`.
pub const DEFAULT_SALT_VERSION: &str = "3007";

/// The minion-config key recording the startup states Conductor applies.
pub const STARTUP_STATES_KEY: &str = "conductor_startup_states";

/// Conductor tags that are not grains (DESIGN section 7).
const TAG_ONLY: &[&str] = &["env", "group", "role", "member"];

/// Launch settings that cannot make a user-data document.
#[derive(Debug, Clone, Error, PartialEq, Eq)]
pub enum UserDataError {
    /// `salt_version` is not a version (`3007`, `3007.16`).
    #[error("salt_version {0:?} is not a Salt version such as 3007 or 3007.16")]
    BadVersion(String),
    /// `script_args` or `bootstrap_url` holds a control character.
    #[error("{what} {value:?} holds a control character")]
    ControlCharacter {
        /// The setting.
        what: &'static str,
        /// Its value.
        value: String,
    },
    /// A setting has the wrong type.
    #[error("{what} must be {expected}")]
    WrongType {
        /// The setting.
        what: &'static str,
        /// What it should be.
        expected: &'static str,
    },
}

/// A user-data document read back: what a harness starting real minions needs.
#[derive(Debug, Clone, PartialEq)]
pub struct ParsedUserData {
    /// The minion configuration written to [`MINION_CONF`].
    pub minion: Map<String, Value>,
    /// The arguments given to `bootstrap-salt.sh`.
    pub bootstrap_args: Vec<String>,
    /// Where the bootstrap script is downloaded from.
    pub bootstrap_url: String,
}

impl ParsedUserData {
    /// The Salt version the bootstrap pins (`3007.16` of `-P stable 3007.16`).
    pub fn salt_version(&self) -> Option<&str> {
        salt_version_of(&self.bootstrap_args)
    }

    /// The startup states Conductor applies after bootstrap.
    pub fn startup_states(&self) -> Vec<String> {
        strings(self.minion.get(STARTUP_STATES_KEY))
    }
}

fn strings(v: Option<&Value>) -> Vec<String> {
    match v {
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(|x| x.as_str().map(str::to_string))
            .collect(),
        _ => Vec::new(),
    }
}

/// The version after `stable`/`git` (or the last word that starts with a digit).
fn salt_version_of(args: &[String]) -> Option<&str> {
    let looks = |a: &&String| a.starts_with(|c: char| c.is_ascii_digit());
    args.iter()
        .zip(args.iter().skip(1))
        .find(|(a, _)| *a == "stable" || *a == "git")
        .map(|(_, v)| v)
        .filter(looks)
        .or_else(|| args.iter().rev().find(looks))
        .map(String::as_str)
}

/// The grains the `conductor:*` tags carry (DESIGN section 7): cpid and the
/// id tags (numbers where they are numbers); env, group, role and member are
/// tags only.
pub fn grains_of_tags(tags: &BTreeMap<String, String>) -> Map<String, Value> {
    let mut g = Map::new();
    for (k, v) in tags {
        let Some(name) = k.strip_prefix(TAG_PREFIX) else {
            continue;
        };
        if TAG_ONLY.contains(&name) {
            continue;
        }
        let value = match v.parse::<u64>() {
            Ok(n) if name.ends_with(".id") => Value::from(n),
            _ => Value::String(v.clone()),
        };
        g.insert(name.to_string(), value);
    }
    g
}

/// The grains of a launch: [`grains_of_tags`], overlaid by `settings.grains`.
pub fn grains(spec: &LaunchSpec) -> Map<String, Value> {
    let mut g = grains_of_tags(&spec.tags);
    if let Some(Value::Object(planned)) = spec.settings.get("grains") {
        g.extend(planned.clone());
    }
    g
}

/// The minion configuration of a launch: `settings.minion` (master, ...),
/// `id` = the instance name, `environment` (the minion's, else
/// `settings.saltenv`, else the `conductor:env` tag), [`grains`], and the
/// startup states Conductor applies ([`STARTUP_STATES_KEY`]).
pub fn minion_config(spec: &LaunchSpec) -> Map<String, Value> {
    let s = &spec.settings;
    let mut conf = match s.get("minion") {
        Some(Value::Object(m)) => m.clone(),
        _ => Map::new(),
    };
    conf.insert("id".into(), Value::String(spec.name.clone()));
    if !conf.contains_key("environment") {
        let env = s.get("saltenv").and_then(Value::as_str).or_else(|| {
            spec.tags
                .get(&format!("{TAG_PREFIX}env"))
                .map(String::as_str)
        });
        if let Some(env) = env {
            conf.insert("environment".into(), Value::String(env.to_string()));
        }
    }
    conf.insert("grains".into(), Value::Object(grains(spec)));
    let states = strings(s.get("startup_states"));
    if !states.is_empty() {
        conf.insert(STARTUP_STATES_KEY.into(), Value::from(states));
    }
    conf
}

/// The `bootstrap-salt.sh` arguments: `script_args` split on whitespace, else
/// `-P stable <salt_version>`, else `-P stable` [`DEFAULT_SALT_VERSION`].
pub fn bootstrap_args(spec: &LaunchSpec) -> Result<Vec<String>, UserDataError> {
    let s = &spec.settings;
    if let Some(v) = s.get("script_args").filter(|v| !v.is_null()) {
        let text = match v {
            Value::String(t) => t.clone(),
            Value::Array(a) if a.iter().all(Value::is_string) => a
                .iter()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join(" "),
            _ => {
                return Err(UserDataError::WrongType {
                    what: "script_args",
                    expected: "a string such as '-P stable 3007.16'",
                })
            }
        };
        if text.chars().any(char::is_control) {
            return Err(UserDataError::ControlCharacter {
                what: "script_args",
                value: text,
            });
        }
        let args: Vec<String> = text
            .split_whitespace()
            .map(|a| a.trim_matches(|c| c == '\'' || c == '"').to_string())
            .filter(|a| !a.is_empty())
            .collect();
        if !args.is_empty() {
            return Ok(args);
        }
    }
    let version = match s.get("salt_version") {
        None | Some(Value::Null) => DEFAULT_SALT_VERSION.to_string(),
        Some(Value::String(v)) => v.clone(),
        Some(Value::Number(n)) => n.to_string(),
        Some(_) => {
            return Err(UserDataError::WrongType {
                what: "salt_version",
                expected: "a version such as 3007.16",
            })
        }
    };
    let ok = !version.is_empty()
        && version.starts_with(|c: char| c.is_ascii_digit())
        && version
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-');
    if !ok {
        return Err(UserDataError::BadVersion(version));
    }
    Ok(vec!["-P".into(), "stable".into(), version])
}

/// The `#cloud-config` document for `spec` (pure: no I/O).
pub fn render(spec: &LaunchSpec) -> Result<String, UserDataError> {
    let conf = serde_yaml::to_string(&Value::Object(minion_config(spec)))
        .expect("JSON values serialize as YAML");
    let url = match spec.settings.get("bootstrap_url") {
        None | Some(Value::Null) => DEFAULT_BOOTSTRAP_URL.to_string(),
        Some(Value::String(u)) if !u.chars().any(char::is_control) => u.clone(),
        Some(Value::String(u)) => {
            return Err(UserDataError::ControlCharacter {
                what: "bootstrap_url",
                value: u.clone(),
            })
        }
        Some(_) => {
            return Err(UserDataError::WrongType {
                what: "bootstrap_url",
                expected: "a URL",
            })
        }
    };
    let mut install = vec!["sh".to_string(), BOOTSTRAP_PATH.to_string()];
    install.extend(bootstrap_args(spec)?);
    let doc = serde_json::json!({
        "write_files": [{ "path": MINION_CONF, "permissions": "0644", "content": conf }],
        "runcmd": [
            ["curl", "-fsSL", "--retry", "5", "-o", BOOTSTRAP_PATH, url],
            install,
        ],
    });
    Ok(format!(
        "#cloud-config\n{}",
        serde_yaml::to_string(&doc).expect("JSON values serialize as YAML")
    ))
}

/// Reads a user-data document made by [`render`] back.
pub fn parse(user_data: &str) -> Option<ParsedUserData> {
    let doc: Value = serde_yaml::from_str(user_data.strip_prefix("#cloud-config\n")?).ok()?;
    let file = doc
        .get("write_files")?
        .as_array()?
        .iter()
        .find(|f| f.get("path").and_then(Value::as_str) == Some(MINION_CONF))?;
    let minion = match serde_yaml::from_str::<Value>(file.get("content")?.as_str()?).ok()? {
        Value::Object(m) => m,
        _ => return None,
    };
    let cmds: Vec<Vec<String>> = doc
        .get("runcmd")?
        .as_array()?
        .iter()
        .map(|c| strings(Some(c)))
        .collect();
    let bootstrap_url = cmds
        .iter()
        .find(|c| c.first().map(String::as_str) == Some("curl"))?
        .last()?
        .clone();
    let bootstrap_args = cmds
        .iter()
        .find(|c| c.get(1).map(String::as_str) == Some(BOOTSTRAP_PATH))?
        .get(2..)?
        .to_vec();
    Some(ParsedUserData {
        minion,
        bootstrap_args,
        bootstrap_url,
    })
}

/// Reads the minion configuration back out of a user-data document made by
/// [`render`].
pub fn parse_minion_config(user_data: &str) -> Option<Map<String, Value>> {
    parse(user_data).map(|p| p.minion)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Zone;
    use serde_json::json;

    fn spec(mut settings: Value) -> LaunchSpec {
        if settings.is_null() {
            settings = json!({});
        }
        if let Value::Object(m) = &mut settings {
            m.entry("image").or_insert(json!("ami-1"));
        }
        let settings = crate::settings::LaunchSettings::parse(&settings).unwrap();
        LaunchSpec {
            name: "devops-mq03.us-east-1a.test.foobar.com".into(),
            zone: Zone::new("us-east-1a").unwrap(),
            client_token: "t".into(),
            tags: BTreeMap::from([
                (
                    "Name".into(),
                    "devops-mq03.us-east-1a.test.foobar.com".into(),
                ),
                ("conductor:cpid".into(), "16833830331552303186".into()),
                ("conductor:env".into(), "test".into()),
                ("conductor:group".into(), "devops".into()),
                ("conductor:role".into(), "activemq".into()),
                ("conductor:devops.system.id".into(), "1".into()),
                ("conductor:cloud.system.id".into(), "4".into()),
            ]),
            settings,
            user_data: None,
        }
    }

    #[test]
    fn round_trips_the_minion_config() {
        let s = spec(json!({
            "minion": {"master": "salt.foobar.com"},
            "grains": {"cpid": "16833830331552303186", "devops.system.id": 1, "team": "ops"},
            "script_args": "-P stable 3007.16",
            "startup_states": ["devops.conductor"],
        }));
        let ud = render(&s).unwrap();
        assert!(ud.starts_with("#cloud-config\n"));
        let p = parse(&ud).unwrap();
        assert_eq!(p.bootstrap_args, ["-P", "stable", "3007.16"]);
        assert_eq!(p.salt_version(), Some("3007.16"));
        assert_eq!(p.bootstrap_url, DEFAULT_BOOTSTRAP_URL);
        assert_eq!(p.startup_states(), ["devops.conductor"]);
        let conf = p.minion;
        assert_eq!(conf["id"], "devops-mq03.us-east-1a.test.foobar.com");
        assert_eq!(conf["master"], "salt.foobar.com");
        assert_eq!(conf["environment"], "test");
        assert!(
            conf.get("startup_states").is_none(),
            "Conductor applies them"
        );
        let g = &conf["grains"];
        assert_eq!(g["cpid"], "16833830331552303186");
        assert_eq!(g["devops.system.id"], 1);
        assert_eq!(g["cloud.system.id"], 4, "derived from the tag");
        assert_eq!(g["team"], "ops");
        assert!(g.get("env").is_none() && g.get("role").is_none());
        assert_eq!(parse_minion_config(&ud).unwrap()["id"], conf["id"]);
    }

    #[test]
    fn salt_version_pins_the_bootstrap_and_bad_input_is_refused() {
        let p = parse(&render(&spec(json!({"salt_version": "3007.16"}))).unwrap()).unwrap();
        assert_eq!(p.bootstrap_args, ["-P", "stable", "3007.16"]);
        let p = parse(&render(&spec(json!({}))).unwrap()).unwrap();
        assert_eq!(p.salt_version(), Some(DEFAULT_SALT_VERSION));
        assert!(matches!(
            render(&spec(json!({"salt_version": "3007; reboot"}))),
            Err(UserDataError::BadVersion(_))
        ));
        assert!(render(&spec(json!({"script_args": "-P\nstable"}))).is_err());
        // Shell text stays one argument: nothing runs through a shell.
        let p = parse(&render(&spec(json!({"script_args": "-P stable 3007;reboot"}))).unwrap())
            .unwrap();
        assert_eq!(p.bootstrap_args, ["-P", "stable", "3007;reboot"]);
    }

    #[test]
    fn grains_from_tags_alone() {
        let g = grains_of_tags(&spec(Value::Null).tags);
        assert_eq!(g["cpid"], "16833830331552303186");
        assert_eq!(g["devops.system.id"], 1);
        assert_eq!(g.len(), 3);
    }
}
