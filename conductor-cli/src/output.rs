//! Human summaries and JSON documents.

use std::io::Write;

use conductor_core::{
    AdoptReport, Cpid, CreateReport, DestroyPlan, DestroyReport, IdScope, InstanceStatus, Plan,
    UpdateReport,
};
use serde_json::{json, Value};

use crate::exit::{self, Failure};
use crate::logging;

/// Writes `args` on stdout. A stdout that is gone (a pipe whose reader
/// exited, a terminal hung up) loses the text, not the run: the error is
/// ignored (Rust ignores SIGPIPE, and `print!` would panic), so the run
/// still writes its record and ends with its own exit code.
pub fn print_fmt(args: std::fmt::Arguments) {
    let _ = std::io::stdout().lock().write_fmt(args);
}

/// Writes `line` and a newline on stderr in one write, ignoring a stderr
/// that is gone (see [`print_fmt`]; `eprintln!` would panic).
pub fn say_err(line: &str) {
    let _ = std::io::stderr().write_all(format!("{line}\n").as_bytes());
}

/// Writes `value` as one pretty JSON document on stdout.
pub fn print_json(value: &Value) {
    let mut out = std::io::stdout().lock();
    let _ = serde_json::to_writer_pretty(&mut out, value);
    let _ = writeln!(out);
}

/// Reports a failure once: on stderr, in the admin log (not for bad input,
/// which writes no file), and with `--json` as the document on stdout
/// (`result`, `error`, `class`, `exit_code`, and `cpid` when the failure
/// came after the run claimed one). Returns the exit code.
pub fn failure(f: &Failure, cpid: Option<Cpid>, json: bool) -> u8 {
    let line = match cpid {
        Some(cpid) => format!("{} (run {cpid})", f.message),
        None => f.message.clone(),
    };
    if f.code != exit::BAD_INPUT {
        tracing::error!(target: logging::ADMIN, code = f.code, "{line}");
    }
    say_err(&format!("error: {line}"));
    if json {
        let mut doc = failure_json(f.code, &f.message);
        if let Some(cpid) = cpid {
            doc["cpid"] = json!(cpid.to_string());
        }
        print_json(&doc);
    }
    f.code
}

/// Reports words or flags clap refused (exit 2), as a JSON document too when
/// `json` (`config::wants_json`); help and version are printed and exit 0.
pub fn usage_error(e: &clap::Error, json: bool) -> u8 {
    use clap::error::ErrorKind;
    let _ = e.print();
    if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) {
        return exit::OK;
    }
    if json {
        let text = e.render().to_string();
        let first = text.lines().next().unwrap_or("bad arguments");
        let message = first.strip_prefix("error: ").unwrap_or(first);
        print_json(&failure_json(exit::BAD_INPUT, message));
    }
    exit::BAD_INPUT
}

/// The `--json` document of a failed command.
fn failure_json(code: u8, message: &str) -> Value {
    json!({
        "result": {"success": false},
        "error": message,
        "class": exit::class_of(code),
        "exit_code": code,
    })
}

/// The plan as the JSON document of docs/design.md section 9.
pub fn plan_json(plan: &Plan) -> Value {
    serde_json::to_value(plan).unwrap_or(Value::Null)
}

/// The adopt report: each instance with the tags it gets, and whether its
/// ids are known (`grains_read`: the master's grains cache was read).
pub fn adopt_text(r: &AdoptReport, grains_read: bool) -> String {
    let mut s = String::new();
    if r.instances.is_empty() {
        s.push_str(&format!(
            "every instance of group {} in env {} has conductor tags; nothing to adopt\n",
            r.group, r.env
        ));
        return s;
    }
    let verb = if r.applied { "tagged" } else { "would tag" };
    if !grains_read {
        s.push_str("ids unknown: the master's grains cache, which holds these instances' ids, was not read (--no-salt or --no-grains); --apply refuses without it\n");
    }
    for a in &r.instances {
        s.push_str(&format!("{verb} {} ({}, {}):\n", a.name, a.id, a.region));
        for (k, v) in &a.tags {
            s.push_str(&format!("  {k} = {v}\n"));
        }
        if grains_read && a.from_grains.is_empty() {
            s.push_str("  ids unknown: the master's grains cache holds no cpid or id grain of its minion; --apply refuses until it does (accept its key, let it send its grains)\n");
        }
    }
    if !r.applied {
        s.push_str("dry run: nothing written; add --apply to write these tags\n");
    }
    s
}

/// The plan plus a `result` object.
pub fn create_json(report: &CreateReport) -> Value {
    let mut v = plan_json(&report.plan);
    v["result"] = json!({
        "success": report.success(),
        "provisioner": report.provisioner,
        "attempts": report.attempts,
        "launched": report.launched,
        "failed": report.failed.iter().map(|(n, m)| json!({"name": n, "error": m})).collect::<Vec<_>>(),
        "not_deployed": report.not_deployed,
        "not_visible": report.not_visible,
        "minions_not_ready": report.minions_not_ready.iter().map(|(n, m)| json!({"name": n, "error": m})).collect::<Vec<_>>(),
        "state_failures": report.state_failures,
        "skipped": report.skipped,
        "logs": report.logs,
        "interrupted": report.interrupted,
        "error": report.error,
    });
    v
}

/// The destroy report as JSON.
pub fn destroy_json(report: &DestroyReport) -> Value {
    json!({
        "cpid": report.cpid,
        "success": report.success(),
        "destroyed": report.destroyed,
        "skipped_instances": report.skipped_instances,
        "failed": report.failed.iter().map(|(n, m)| json!({"name": n, "error": m})).collect::<Vec<_>>(),
        "state_failures": report.state_failures,
        "skipped": report.skipped,
        "logs": report.logs,
        "interrupted": report.interrupted,
    })
}

/// What `destroy --dry-run --json` prints: the instances that would be
/// terminated, the minion keys (and salt-cloud cache entries) that would be
/// deleted, and what is left alone.
pub fn destroy_plan_json(plan: &DestroyPlan) -> Value {
    json!({
        "dry_run": true,
        "group": plan.query.group,
        "env": plan.query.env,
        "selection": plan.query.selection,
        "destroy": plan.targets,
        "delete_minion_keys": plan.keys,
        "remove_salt_cloud_cache": plan.cloud_vms,
        "skipped_instances": plan.skipped_instances,
    })
}

/// What `destroy --dry-run` prints.
pub fn destroy_plan_text(plan: &DestroyPlan) -> String {
    let mut s = format!(
        "destroy would terminate {} instance(s) of group {} in env {} (dry run: nothing changed)\n",
        plan.targets.len(),
        plan.query.group,
        plan.query.env
    );
    for t in &plan.targets {
        s.push_str(&format!(
            "  would destroy {} ({}, {})\n",
            t.name.as_deref().unwrap_or("-"),
            t.id,
            t.region
        ));
    }
    for k in &plan.keys {
        s.push_str(&format!("  would delete the minion key of {k}\n"));
    }
    for v in &plan.cloud_vms {
        s.push_str(&format!(
            "  would remove salt-cloud's cache entry of {} under {}\n",
            v.name, v.provider
        ));
    }
    for i in &plan.skipped_instances {
        s.push_str(&format!("  left alone: {i}\n"));
    }
    s
}

/// A table of the plan's instances, with a status column when given.
pub fn plan_text(plan: &Plan, status: impl Fn(&str) -> Option<&'static str>) -> String {
    let mut s = format!(
        "group {} · pillarenv {} · zone {} · cpid {}\n",
        plan.group, plan.env, plan.zone, plan.cpid
    );
    let width = plan
        .instances
        .iter()
        .map(|i| i.name.len())
        .max()
        .unwrap_or(4)
        .max(4);
    s.push_str(&format!(
        "  {:width$}  {:<18} {:>5}  {:>7}  STATUS\n",
        "NAME", "ROLE", "INDEX", "CLUSTER"
    ));
    for i in &plan.instances {
        let role = match &i.member {
            Some(m) if m != &i.role => format!("{}/{m}", i.role),
            _ => i.role.to_string(),
        };
        let cluster = i
            .cluster_id
            .map(|c| c.to_string())
            .unwrap_or_else(|| "-".into());
        let st = status(&i.name).unwrap_or("planned");
        s.push_str(&format!(
            "  {:width$}  {role:<18} {:>5}  {cluster:>7}  {st}\n",
            i.name, i.index
        ));
    }
    for c in &plan.clusters {
        let group = IdScope::GroupCluster {
            group: plan.group.clone(),
            role: c.role.clone(),
        };
        let cloud = IdScope::CloudCluster {
            role: c.role.clone(),
        };
        s.push_str(&format!(
            "cluster {}: {}={} {}={}\n",
            c.role,
            group.grain(),
            c.group_id,
            cloud.grain(),
            c.cloud_id
        ));
    }
    if let Some(sys) = &plan.system {
        let group = IdScope::GroupSystem {
            group: plan.group.clone(),
        };
        s.push_str(&format!(
            "system {}: {}={} {}={}\n",
            sys.name,
            group.grain(),
            sys.group_id,
            IdScope::CloudSystem.grain(),
            sys.cloud_id
        ));
    }
    // The name keys are the names above; the id keys are listed.
    s.push_str(&format!(
        "reservations: {} names, {} ids{}\n",
        plan.reservations.names.len(),
        plan.reservations.ids.len(),
        if plan.reservations.ids.is_empty() {
            String::new()
        } else {
            let ids: Vec<String> = plan
                .reservations
                .ids
                .iter()
                .map(|k| k.to_string())
                .collect();
            format!(" ({})", ids.join(", "))
        }
    ));
    if let Some(f) = &plan.files {
        s.push_str(&format!(
            "files: {}\n       {}\n       {}\n",
            f.provider.display(),
            f.profile.display(),
            f.map.display()
        ));
    }
    s
}

/// The human summary of a create run.
pub fn create_text(r: &CreateReport) -> String {
    let failed: Vec<&str> = r.failed.iter().map(|(n, _)| n.as_str()).collect();
    // The run's files are listed once, at the end, where they are kept (the
    // provider and profile leave the config dir when the run ends).
    let plan = Plan {
        files: None,
        ..r.plan.clone()
    };
    let mut s = plan_text(&plan, |name| {
        if r.not_visible.iter().any(|n| n == name) {
            Some("launched, not yet visible")
        } else if r.minions_not_ready.iter().any(|(n, _)| n == name) {
            Some("launched, minion not ready")
        } else if r.launched.iter().any(|n| n == name) {
            if r.state_failures.iter().any(|f| f.minion == name) {
                Some("launched, state failed")
            } else if r.not_deployed.iter().any(|n| n == name) {
                Some("launched, not deployed")
            } else {
                Some("launched")
            }
        } else if failed.contains(&name) {
            Some("FAILED")
        } else {
            None
        }
    });
    for (n, m) in r.failed.iter().chain(&r.minions_not_ready) {
        s.push_str(&format!("error: {n}: {m}\n"));
    }
    s.push_str(&tail(&r.state_failures, &r.skipped, &r.logs));
    if let Some(e) = &r.error {
        s.push_str(&format!("error after the launch: {}\n", e.message));
    }
    s.push_str(if r.interrupted {
        "result: INTERRUPTED (names that may exist stay reserved until they expire)\n"
    } else if r.success() {
        "result: success\n"
    } else {
        "result: FAILED (exit 1)\n"
    });
    s
}

/// The human summary of a destroy run.
pub fn destroy_text(r: &DestroyReport) -> String {
    let mut s = format!("destroy run cpid {}\n", r.cpid);
    for n in &r.destroyed {
        s.push_str(&format!("  destroyed {n}\n"));
    }
    for i in &r.skipped_instances {
        s.push_str(&format!("  left alone: {i}\n"));
    }
    for (n, m) in &r.failed {
        s.push_str(&format!("  error: {n}: {m}\n"));
    }
    s.push_str(&tail(&r.state_failures, &r.skipped, &r.logs));
    s.push_str(if r.interrupted {
        "result: INTERRUPTED (what was terminated is listed above)\n"
    } else if r.success() {
        "result: success\n"
    } else {
        "result: FAILED (exit 1)\n"
    });
    s
}

/// The human summary of an update run.
pub fn update_text(r: &UpdateReport) -> String {
    let mut s = format!("update run cpid {}\n", r.cpid);
    for t in &r.targets {
        let failed = r.state_failures.iter().any(|f| &f.minion == t);
        s.push_str(&format!(
            "  {t}  {}\n",
            if failed { "state FAILED" } else { "updated" }
        ));
    }
    for i in &r.skipped_instances {
        s.push_str(&format!("  left alone: {i}\n"));
    }
    s.push_str(&tail(&r.state_failures, &r.skipped, &r.logs));
    s
}

/// Failures, skipped steps and logs, one line each.
fn tail(
    failures: &[conductor_core::StateFailure],
    skipped: &[String],
    logs: &[std::path::PathBuf],
) -> String {
    let mut s = String::new();
    for f in failures {
        let log = f
            .log
            .as_ref()
            .map(|l| format!(" (log: {})", l.display()))
            .unwrap_or_default();
        s.push_str(&format!(
            "state failed on {}: {} — {}{log}\n",
            f.minion, f.state, f.comment
        ));
    }
    for k in skipped {
        s.push_str(&format!("skipped: {k}\n"));
    }
    for l in logs {
        s.push_str(&format!("file: {}\n", l.display()));
    }
    s
}

/// The `status` table: what an operator reads instead of `salt '*' grains.item ...`.
pub fn status_text(rows: &[InstanceStatus]) -> String {
    if rows.is_empty() {
        return "no instances\n".into();
    }
    let ping = rows.iter().any(|r| r.answers.is_some());
    let width = rows.iter().map(|r| r.name.len()).max().unwrap_or(4).max(4);
    let dash = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
    let mut s = format!(
        "{:width$}  {:<19} {:<16} {:<13} {:<11} {:<11} {:<15} {:<20} {:<21} {}IDS\n",
        "NAME",
        "ID",
        "ROLE",
        "STATE",
        "ZONE",
        "TYPE",
        "PRIVATE-IP",
        "LAUNCHED",
        "CPID",
        if ping { "PING  " } else { "" }
    );
    for r in rows {
        let role = match (&r.role, &r.member) {
            (Some(role), Some(m)) if m != role => format!("{role}/{m}"),
            (Some(role), _) => role.clone(),
            _ => "-".into(),
        };
        let ids: Vec<String> = r
            .cluster_ids
            .iter()
            .chain(&r.system_ids)
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        let launched = r
            .launch_time
            .map_or_else(|| "-".into(), conductor_core::iso_utc);
        let answers = match (ping, r.answers) {
            (false, _) => String::new(),
            (true, Some(true)) => format!("{:<6}", "yes"),
            (true, Some(false)) => format!("{:<6}", "NO"),
            (true, None) => format!("{:<6}", "-"),
        };
        s.push_str(&format!(
            "{:width$}  {:<19} {role:<16} {:<13} {:<11} {:<11} {:<15} {launched:<20} {:<21} {answers}{}\n",
            r.name,
            r.id,
            r.state.as_str(),
            r.zone,
            dash(&r.instance_type),
            dash(&r.private_ip),
            r.cpid.as_deref().unwrap_or("-"),
            ids.join(" ")
        ));
    }
    s
}
