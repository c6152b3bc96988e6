//! The cloud-init user data of a native launch: it installs the Salt minion
//! at the pinned version and writes its configuration (master, id = fqdn,
//! grains), so the minion joins the master with the same grains salt-cloud
//! would have given it.

use conductor_core::LaunchSpec;
use serde_json::{Map, Value};

/// Where the minion configuration is written on the instance.
pub const MINION_CONF: &str = "/etc/salt/minion.d/conductor.conf";

/// Default bootstrap arguments when pillar gives no `script_args`.
pub const DEFAULT_SCRIPT_ARGS: &str = "-P stable 3007";

/// The minion configuration of a launch: `settings.minion` (master, ...),
/// `id` = the instance name, and `grains` = `settings.grains`.
pub fn minion_config(spec: &LaunchSpec) -> Map<String, Value> {
    let mut conf = match spec.settings.get("minion") {
        Some(Value::Object(m)) => m.clone(),
        _ => Map::new(),
    };
    conf.insert("id".into(), Value::String(spec.name.clone()));
    let grains = match spec.settings.get("grains") {
        Some(Value::Object(g)) => g.clone(),
        _ => Map::new(),
    };
    conf.insert("grains".into(), Value::Object(grains));
    conf
}

/// The `#cloud-config` document for `spec`.
pub fn render(spec: &LaunchSpec) -> String {
    let conf = serde_yaml::to_string(&Value::Object(minion_config(spec)))
        .expect("JSON values serialize as YAML");
    let args = spec
        .settings
        .get("script_args")
        .and_then(Value::as_str)
        .unwrap_or(DEFAULT_SCRIPT_ARGS)
        .replace('\'', "");
    let doc = serde_json::json!({
        "write_files": [{ "path": MINION_CONF, "permissions": "0644", "content": conf }],
        "runcmd": [[
            "sh", "-c",
            format!("curl -fsSL https://github.com/saltstack/salt-bootstrap/releases/latest/download/bootstrap-salt.sh -o /tmp/bootstrap-salt.sh && sh /tmp/bootstrap-salt.sh {args}"),
        ]],
    });
    format!(
        "#cloud-config\n{}",
        serde_yaml::to_string(&doc).expect("JSON values serialize as YAML")
    )
}

/// Reads the minion configuration back out of a user-data document made by
/// [`render`] (what a test harness starting real minions needs).
pub fn parse_minion_config(user_data: &str) -> Option<Map<String, Value>> {
    let doc: Value = serde_yaml::from_str(user_data.strip_prefix("#cloud-config\n")?).ok()?;
    let file = doc
        .get("write_files")?
        .as_array()?
        .iter()
        .find(|f| f.get("path").and_then(Value::as_str) == Some(MINION_CONF))?;
    match serde_yaml::from_str::<Value>(file.get("content")?.as_str()?).ok()? {
        Value::Object(m) => Some(m),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use conductor_core::Zone;

    #[test]
    fn round_trips_the_minion_config() {
        let spec = LaunchSpec {
            name: "devops-mq03.us-east-1a.test.foobar.com".into(),
            zone: Zone::new("us-east-1a").unwrap(),
            client_token: "t".into(),
            tags: Default::default(),
            settings: serde_json::json!({
                "minion": {"master": "salt.foobar.com", "environment": "test"},
                "grains": {"cpid": "16833830331552303186", "devops.system.id": 1},
                "script_args": "-P stable 3007.16",
            }),
            user_data: None,
        };
        let ud = render(&spec);
        assert!(ud.starts_with("#cloud-config\n"));
        assert!(ud.contains("bootstrap-salt.sh -P stable 3007.16"));
        let conf = parse_minion_config(&ud).unwrap();
        assert_eq!(conf["id"], "devops-mq03.us-east-1a.test.foobar.com");
        assert_eq!(conf["master"], "salt.foobar.com");
        assert_eq!(conf["grains"]["devops.system.id"], 1);
        assert_eq!(conf["grains"]["cpid"], "16833830331552303186");
    }
}
