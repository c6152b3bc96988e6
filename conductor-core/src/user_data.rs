//! The cloud-init user data of a native launch: it writes the minion
//! configuration (master, id = fqdn, environment, grains; mode 0600: it
//! holds the run's autosign token) and installs the Salt minion at the
//! pinned version with `bootstrap-salt.sh` from a pinned salt-bootstrap
//! release whose sha256 is checked before it runs, so the minion joins the
//! master with the grains salt-cloud would have given it.
//!
//! The document (from [`render`]) has this shape (keys are written sorted):
//!
//! ```yaml
//! #cloud-config
//! write_files:
//! - path: /etc/salt/minion.d/conductor.conf
//!   permissions: '0600'
//!   content: |
//!     master: salt.foobar.com
//!     id: devops-mq03.us-east-1a.test.foobar.com
//!     environment: test
//!     grains: {cpid: '16833830331552303186', ...}
//!     conductor_startup_states: [devops.conductor]
//! runcmd:
//! - [sh, -c, <BOOTSTRAP_SH>, conductor-bootstrap, <url>, <sha256>, /tmp/bootstrap-salt.sh, -P, stable, '3007.16']
//! ```
//!
//! [`BOOTSTRAP_SH`] is fixed text (download, `sha256sum -c`, then run, each
//! step only if the one before succeeded); the URL, checksum, path and
//! arguments are its positional parameters. Commands are argument lists,
//! never shell text built from values, so pillar values cannot inject
//! commands. Startup states are recorded (`conductor_startup_states`)
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

/// The salt-bootstrap release the user data installs with unless pillar's
/// `bootstrap` says otherwise: the release whose `bootstrap-salt.sh` Salt
/// 3007.16 ships as `salt/cloud/deploy/bootstrap-salt.sh` (what salt-cloud
/// deploys with), so both provisioners bootstrap with the same script.
pub const BOOTSTRAP_VERSION: &str = "2026.09.03";

/// Where the bootstrap script comes from unless pillar sets `bootstrap.url`
/// (or `bootstrap.version`): the pinned release's asset, never "latest".
pub const DEFAULT_BOOTSTRAP_URL: &str =
    "https://github.com/saltstack/salt-bootstrap/releases/download/v2026.09.03/bootstrap-salt.sh";

/// The sha256 of [`DEFAULT_BOOTSTRAP_URL`]'s script, checked on the
/// instance before the script runs (equal to the copy Salt 3007.16 ships;
/// `conductor-salt`'s real-Salt tests check that).
pub const DEFAULT_BOOTSTRAP_SHA256: &str =
    "cca427e7da4131ad4bf9d3d8941a69cd99f45bc880e17e73cc539f459d7bcd66";

/// The program `sh -c` runs on the instance: download to `$3`, check
/// against `$2`, run with the remaining arguments; `set -e` stops it at the
/// first failing step, so a script whose checksum differs never runs. Fixed
/// text: the URL (`$1`), checksum, path and arguments are positional
/// parameters, never spliced into it.
pub const BOOTSTRAP_SH: &str = r#"set -eu; url="$1"; sum="$2"; f="$3"; shift 3; curl -fsSL --retry 5 -o "$f" "$url"; echo "$sum  $f" | sha256sum -c -; exec sh "$f" "$@""#;

/// `$0` of [`BOOTSTRAP_SH`] (its name in the instance's process list and errors).
const BOOTSTRAP_ARG0: &str = "conductor-bootstrap";

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
    /// The `bootstrap` settings cannot be used (a URL without its sha256,
    /// a malformed checksum, an unknown key, ...).
    #[error("bootstrap: {0}")]
    Bootstrap(String),
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
    /// The sha256 the script is checked against before it runs.
    pub bootstrap_sha256: String,
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

/// Where the bootstrap script comes from, and the sha256 it must have.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Bootstrap {
    /// The script's URL (`https://`, `http://` or `file://`).
    pub url: String,
    /// Its sha256, 64 lowercase hex digits.
    pub sha256: String,
    /// The salt-bootstrap release (for the record; the URL names it).
    pub version: String,
}

/// Pillar's `bootstrap:` mapping, under the group's profile.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct BootstrapSettings {
    url: Option<String>,
    sha256: Option<String>,
    version: Option<String>,
}

impl Default for Bootstrap {
    fn default() -> Self {
        Self {
            url: DEFAULT_BOOTSTRAP_URL.into(),
            sha256: DEFAULT_BOOTSTRAP_SHA256.into(),
            version: BOOTSTRAP_VERSION.into(),
        }
    }
}

impl Bootstrap {
    /// The release URL of salt-bootstrap `version`.
    pub fn release_url(version: &str) -> String {
        format!(
            "https://github.com/saltstack/salt-bootstrap/releases/download/v{version}/bootstrap-salt.sh"
        )
    }

    /// Resolves the `bootstrap` setting (`{url, sha256, version}`, each
    /// optional) and the older `bootstrap_url` against the pinned defaults.
    /// A script other than the pinned one needs its `sha256`.
    pub fn from_settings(
        bootstrap: Option<&Value>,
        legacy_url: Option<&Value>,
    ) -> Result<Self, UserDataError> {
        let bad = |m: String| UserDataError::Bootstrap(m);
        let given: BootstrapSettings = match bootstrap {
            None | Some(Value::Null) => BootstrapSettings::default(),
            Some(v) => serde_json::from_value(v.clone()).map_err(|e| {
                bad(format!(
                    "{e}; give a mapping {{url, sha256, version}}, e.g. {{version: 2026.09.03, sha256: <64 hex digits>}}"
                ))
            })?,
        };
        let legacy = match legacy_url {
            None | Some(Value::Null) => None,
            Some(Value::String(u)) => Some(u.clone()),
            Some(_) => {
                return Err(UserDataError::WrongType {
                    what: "bootstrap_url",
                    expected: "a URL",
                })
            }
        };
        let version = match given.version {
            Some(v) => {
                let ok = !v.is_empty()
                    && v.len() <= 40
                    && v.chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-')
                    && v.starts_with(|c: char| c.is_ascii_digit());
                if !ok {
                    return Err(bad(format!(
                        "version {v:?} is not a salt-bootstrap release such as {BOOTSTRAP_VERSION}"
                    )));
                }
                v
            }
            None => BOOTSTRAP_VERSION.to_string(),
        };
        let url = match given.url.or(legacy) {
            Some(u) => {
                if u.chars().any(|c| c.is_control() || c.is_whitespace()) {
                    return Err(UserDataError::ControlCharacter {
                        what: "bootstrap.url",
                        value: u,
                    });
                }
                if !["https://", "http://", "file://"]
                    .iter()
                    .any(|p| u.starts_with(p))
                {
                    return Err(bad(format!(
                        "url {u:?} must start with https://, http:// or file://"
                    )));
                }
                u
            }
            None => Self::release_url(&version),
        };
        let sha256 = match given.sha256 {
            Some(h) => {
                let h = h.to_ascii_lowercase();
                if h.len() != 64 || !h.bytes().all(|b| b.is_ascii_hexdigit()) {
                    return Err(bad(format!(
                        "sha256 {h:?} is not a sha256 (64 hex digits)"
                    )));
                }
                h
            }
            None if url == DEFAULT_BOOTSTRAP_URL => DEFAULT_BOOTSTRAP_SHA256.to_string(),
            None => {
                return Err(bad(format!(
                    "sha256 is required with url {url:?}: the script is checked before it runs as root; \
                     set bootstrap.sha256 in the group's profile (the release's bootstrap-salt.sh.sha256)"
                )))
            }
        };
        Ok(Self {
            url,
            sha256,
            version,
        })
    }

    /// The bootstrap of a launch: its settings' `bootstrap` (and `bootstrap_url`).
    pub fn of(spec: &LaunchSpec) -> Result<Self, UserDataError> {
        Self::from_settings(
            spec.settings.get("bootstrap"),
            spec.settings.get("bootstrap_url"),
        )
    }

    /// The runcmd entry: `sh -c` [`BOOTSTRAP_SH`] with the URL, checksum,
    /// path and `args` as its parameters.
    pub fn command(&self, args: &[String]) -> Vec<String> {
        let mut cmd: Vec<String> = [
            "sh",
            "-c",
            BOOTSTRAP_SH,
            BOOTSTRAP_ARG0,
            &self.url,
            &self.sha256,
            BOOTSTRAP_PATH,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        cmd.extend(args.iter().cloned());
        cmd
    }
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
    let bootstrap = Bootstrap::of(spec)?;
    let doc = serde_json::json!({
        // 0600: the minion config carries the run's autosign token grain.
        "write_files": [{ "path": MINION_CONF, "permissions": "0600", "content": conf }],
        "runcmd": [bootstrap.command(&bootstrap_args(spec)?)],
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
    let boot = cmds.iter().find(|c| {
        c.len() >= 7
            && c[0] == "sh"
            && c[1] == "-c"
            && c[2] == BOOTSTRAP_SH
            && c[6] == BOOTSTRAP_PATH
    })?;
    Some(ParsedUserData {
        minion,
        bootstrap_args: boot[7..].to_vec(),
        bootstrap_url: boot[4].clone(),
        bootstrap_sha256: boot[5].clone(),
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
        assert_eq!(p.bootstrap_sha256, DEFAULT_BOOTSTRAP_SHA256);
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

    /// The document's bootstrap entry: the one runcmd list.
    fn runcmd(ud: &str) -> Vec<Vec<String>> {
        let doc: Value = serde_yaml::from_str(ud.strip_prefix("#cloud-config\n").unwrap()).unwrap();
        doc["runcmd"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| strings(Some(c)))
            .collect()
    }

    #[test]
    fn bootstrap_is_the_pinned_release_checked_by_sha256_before_it_runs() {
        let ud = render(&spec(json!({"salt_version": "3007.16"}))).unwrap();
        // One command: an argument list, the shell program fixed text.
        let cmds = runcmd(&ud);
        assert_eq!(cmds.len(), 1, "{cmds:?}");
        let c = &cmds[0];
        assert_eq!(&c[..4], ["sh", "-c", BOOTSTRAP_SH, "conductor-bootstrap"]);
        assert_eq!(c[4], DEFAULT_BOOTSTRAP_URL);
        assert!(
            DEFAULT_BOOTSTRAP_URL.contains("/releases/download/v2026.09.03/"),
            "a pinned release, not latest"
        );
        assert!(!ud.contains("latest"), "{ud}");
        assert_eq!(c[5], DEFAULT_BOOTSTRAP_SHA256);
        assert_eq!(c[6], BOOTSTRAP_PATH);
        assert_eq!(&c[7..], ["-P", "stable", "3007.16"]);
        // Download, then the check, then the run, and set -e between them.
        let at = |s: &str| BOOTSTRAP_SH.find(s).unwrap_or_else(|| panic!("{s}"));
        assert!(BOOTSTRAP_SH.starts_with("set -eu;"));
        assert!(at("curl -fsSL") < at("sha256sum -c") && at("sha256sum -c") < at("exec sh"));
        // The minion config (with the autosign token grain) is root's alone.
        assert!(ud.contains("permissions: '0600'"), "{ud}");
        assert!(!ud.contains("0644"), "{ud}");
    }

    #[test]
    fn bootstrap_overrides_need_their_sha256() {
        let sum = "ab".repeat(32);
        let p = parse(
            &render(&spec(
                json!({"bootstrap": {"version": "2025.01.02", "sha256": sum.to_uppercase()}}),
            ))
            .unwrap(),
        )
        .unwrap();
        assert_eq!(p.bootstrap_url, Bootstrap::release_url("2025.01.02"));
        assert_eq!(p.bootstrap_sha256, sum, "lowercased");
        let p = parse(
            &render(&spec(
                json!({"bootstrap": {"url": "https://mirror.example/b.sh", "sha256": sum}}),
            ))
            .unwrap(),
        )
        .unwrap();
        assert_eq!(p.bootstrap_url, "https://mirror.example/b.sh");
        // The older `bootstrap_url` is the same as `bootstrap.url`.
        let p = parse(
            &render(&spec(
                json!({"bootstrap_url": "https://m/b.sh", "bootstrap": {"sha256": sum}}),
            ))
            .unwrap(),
        )
        .unwrap();
        assert_eq!(p.bootstrap_url, "https://m/b.sh");
        for bad in [
            json!({"bootstrap": {"url": "https://mirror.example/b.sh"}}),
            json!({"bootstrap_url": "https://mirror.example/b.sh"}),
            json!({"bootstrap": {"version": "2025.01.02"}}),
            json!({"bootstrap": {"url": "-o/etc/passwd", "sha256": sum}}),
            json!({"bootstrap": {"url": "https://a b", "sha256": sum}}),
            json!({"bootstrap": {"sha256": "abc"}}),
            json!({"bootstrap": {"version": "1; reboot", "sha256": sum}}),
            json!({"bootstrap": {"checksum": sum}}),
            json!({"bootstrap": "https://x"}),
        ] {
            let e = render(&spec(bad.clone())).unwrap_err();
            assert!(e.to_string().contains("bootstrap"), "{bad}: {e}");
        }
        let e = render(&spec(json!({"bootstrap": {"url": "https://m/b.sh"}})))
            .unwrap_err()
            .to_string();
        assert!(e.contains("sha256 is required"), "{e}");
    }
}
