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
/// nested under provider and driver; only the `wanted` names are reported.
/// A VM whose object holds an instance id (`instanceId`) was created, even
/// with an `Error` beside it: salt-cloud's `{"No Deploy": ...}` (the
/// profile's `deploy: False`) leaves it not deployed, any other error after
/// the launch (`Not Deployed`, a failed deploy script) is a failed deploy.
/// A VM whose object holds an `Error` and no instance id, or that is a
/// string or `false`, failed. An empty object (the EC2 driver's answer both
/// when the launch was refused and when a step after it failed) is left out
/// of every list: the VM may exist.
pub fn cloud_run(raw: Value, wanted: &[String]) -> CloudRunResult {
    let mut r = CloudRunResult::default();
    walk(&raw, wanted, &mut r);
    r.raw = raw;
    r
}

/// The VM objects of `v` named in `wanted`, sorted into `r`.
fn walk(v: &Value, wanted: &[String], r: &mut CloudRunResult) {
    let Some(map) = v.as_object() else { return };
    for (name, vm) in map {
        if !wanted.contains(name) {
            walk(vm, wanted, r);
            continue;
        }
        let error = match vm {
            Value::String(s) => Some(s.clone()),
            Value::Object(o) => o.get("Error").or_else(|| o.get("error")).map(comment_text),
            Value::Bool(false) => Some("salt-cloud reported false".into()),
            _ => None,
        };
        let created = ["instanceId", "instance_id"]
            .iter()
            .any(|k| vm.get(k).is_some_and(|id| !id.is_null()));
        let empty = vm.as_object().is_some_and(|o| o.is_empty());
        match error {
            // The EC2 driver answers `{}` when RunInstances was refused, and
            // also when a step after the launch failed: not reported either
            // way, so the VM counts as one that may exist.
            None if empty => {}
            None => r.ok.push(name.clone()),
            Some(e) if created => {
                r.ok.push(name.clone());
                let no_deploy = vm
                    .get("Error")
                    .and_then(Value::as_object)
                    .is_some_and(|o| o.len() == 1 && o.contains_key("No Deploy"));
                if no_deploy {
                    r.not_deployed.push(name.clone());
                } else {
                    r.deploy_failed.push((name.clone(), e));
                }
            }
            Some(e) => r.failed.push((name.clone(), e)),
        }
    }
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

    /// salt-cloud 3007.16's EC2 driver with `deploy: False`, and with a
    /// deploy that failed: both VMs exist (an instance id), neither failed.
    #[test]
    fn created_vms_with_an_error_beside_them_are_launched() {
        let raw: Value = serde_json::from_str(include_str!(
            "../tests/fixtures/salt-cloud-3007.16-no-deploy.json"
        ))
        .unwrap();
        let wanted: Vec<String> = raw.as_object().unwrap().keys().cloned().collect();
        let r = cloud_run(raw, &wanted);
        assert_eq!(
            r.ok, wanted,
            "every VM of the real driver's return was created"
        );
        assert_eq!(r.not_deployed, wanted);
        assert!(r.failed.is_empty() && r.deploy_failed.is_empty(), "{r:?}");

        let names: Vec<String> = ["a", "b", "c", "d"].map(String::from).into();
        let r = cloud_run(
            json!({
                "a": {"instanceId": "i-1", "Error": {"No Deploy": "'deploy' is not enabled. Not deploying."}},
                "b": {"instanceId": "i-2", "Error": {"Not Deployed": "Failed to start Salt on host b"}},
                "c": {"Error": "InvalidAMIID.NotFound"},
                "d": {}
            }),
            &names,
        );
        assert_eq!(r.ok, ["a", "b"]);
        assert_eq!(r.not_deployed, ["a"]);
        assert_eq!(r.deploy_failed.len(), 1);
        assert!(
            r.deploy_failed[0].1.contains("Failed to start Salt"),
            "{r:?}"
        );
        assert_eq!(r.failed.len(), 1, "d, answered {{}}, is in no list: {r:?}");
    }
}
