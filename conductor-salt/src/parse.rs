//! Salt's JSON output, parsed into Conductor's results.

use conductor_core::{CloudRunResult, MinionKeys, StateFailure, StateRunResult};
use serde_json::Value;

/// Whether an object's keys are state ids (`<mod>_|-<id>_|-<name>_|-<fun>`).
fn is_state_map(v: &Value) -> bool {
    v.as_object()
        .is_some_and(|m| !m.is_empty() && m.keys().all(|k| k.contains("_|-")))
}

/// Parses the output of `salt ... state.apply --out=json --static`,
/// `salt-call ... state.apply --out=json` or `salt-run state.orchestrate
/// --out=json`: `{minion: {state_id: {result, comment, ...}}}`, with a list of
/// error strings instead of states when the sls could not be rendered, and
/// `{"data": ...}` wrappers around orchestration returns.
pub fn state_run(raw: Value) -> StateRunResult {
    let mut minions = Vec::new();
    let mut failures = Vec::new();
    collect(&raw, None, &mut minions, &mut failures);
    StateRunResult {
        raw,
        minions,
        failures,
    }
}

fn collect(
    v: &Value,
    minion: Option<&str>,
    minions: &mut Vec<String>,
    failures: &mut Vec<StateFailure>,
) {
    let Some(map) = v.as_object() else { return };
    for (key, ret) in map {
        if matches!(
            key.as_str(),
            "outputter" | "retcode" | "jid" | "fun" | "fun_args" | "success" | "return"
        ) && minion.is_none()
        {
            continue;
        }
        if key == "data" {
            collect(ret, minion, minions, failures);
            continue;
        }
        let who = key.as_str();
        match ret {
            r if is_state_map(r) => {
                minions.push(who.to_string());
                for (state, s) in r.as_object().into_iter().flatten() {
                    if s.get("result") == Some(&Value::Bool(false)) {
                        let comment = s.get("comment").map(comment_text).unwrap_or_default();
                        failures.push(StateFailure {
                            minion: who.to_string(),
                            state: state.clone(),
                            comment,
                            log: None,
                        });
                    }
                }
            }
            Value::Array(errors) => {
                minions.push(who.to_string());
                let text: Vec<String> = errors.iter().map(comment_text).collect();
                failures.push(StateFailure {
                    minion: who.to_string(),
                    state: "<render>".into(),
                    comment: text.join("; "),
                    log: None,
                });
            }
            Value::String(s) => {
                minions.push(who.to_string());
                failures.push(StateFailure {
                    minion: who.to_string(),
                    state: "<return>".into(),
                    comment: s.clone(),
                    log: None,
                });
            }
            Value::Object(_) => collect(ret, Some(who), minions, failures),
            _ => {}
        }
    }
}

fn comment_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Array(a) => a.iter().map(comment_text).collect::<Vec<_>>().join("; "),
        other => other.to_string(),
    }
}

/// Parses `salt-key -L --out=json`: key lists by state.
pub fn minion_keys(raw: &Value) -> MinionKeys {
    let list = |k: &str| -> Vec<String> {
        raw.get(k)
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    };
    MinionKeys {
        accepted: list("minions"),
        pending: list("minions_pre"),
        rejected: list("minions_rejected"),
        denied: list("minions_denied"),
    }
}

/// Parses `salt-cloud -m <map> --out=json` (or `-d`): VMs by name, possibly
/// nested under provider and driver; a VM whose object holds `Error` (or a
/// string) failed. Only the `wanted` names are reported.
pub fn cloud_run(raw: Value, wanted: &[String]) -> CloudRunResult {
    let mut ok = Vec::new();
    let mut failed = Vec::new();
    fn walk(
        v: &Value,
        wanted: &[String],
        ok: &mut Vec<String>,
        failed: &mut Vec<(String, String)>,
    ) {
        let Some(map) = v.as_object() else { return };
        for (k, child) in map {
            if wanted.iter().any(|w| w == k) {
                let err = match child {
                    Value::String(s) => Some(s.clone()),
                    Value::Object(o) => o.get("Error").or_else(|| o.get("error")).map(comment_text),
                    Value::Bool(false) => Some("salt-cloud reported false".into()),
                    _ => None,
                };
                match err {
                    Some(e) => failed.push((k.clone(), e)),
                    None => ok.push(k.clone()),
                }
            } else {
                walk(child, wanted, ok, failed);
            }
        }
    }
    walk(&raw, wanted, &mut ok, &mut failed);
    CloudRunResult { raw, ok, failed }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn states_render_errors_and_orchestration() {
        let r = state_run(json!({
            "m1": {"test_|-a_|-a_|-succeed_without_changes": {"result": true, "comment": "ok"},
                   "test_|-b_|-b_|-fail_without_changes": {"result": false, "comment": "Failure!"}},
            "m2": ["Rendering SLS 'base:x' failed"],
            "m3": "Minion did not return. [No response]"
        }));
        assert_eq!(r.minions, ["m1", "m2", "m3"]);
        assert_eq!(r.failures.len(), 3);
        assert_eq!(r.failures[0].state, "test_|-b_|-b_|-fail_without_changes");
        let o = state_run(
            json!({"data": {"master_master": {"salt_|-x_|-x_|-state": {"result": true, "comment": ""}}}, "outputter": "highstate", "retcode": 0}),
        );
        assert_eq!(o.minions, ["master_master"]);
        assert!(o.ok());
    }

    #[test]
    fn cloud_runs_nested_or_flat() {
        let names = vec!["a".to_string(), "b".to_string()];
        let r = cloud_run(
            json!({"prov": {"ec2": {"a": {"instanceId": "i-1"}, "b": {"Error": "capacity"}}}}),
            &names,
        );
        assert_eq!(r.ok, ["a"]);
        assert_eq!(r.failed, [("b".to_string(), "capacity".to_string())]);
    }
}
