//! [`SaltExecutor`] for [`SaltCli`]: which command each call runs, and how
//! its output becomes a result.

use std::path::Path;

use async_trait::async_trait;
use conductor_core::Env;
use conductor_core::{BackendError, BackendErrorKind};
use conductor_core::{
    CachedGrains, CloudRunResult, CloudVm, MinionKeys, SaltExecutor, StateFailure, StateRunResult,
};
use serde_json::Value;

use super::{master_unreachable, salt_json, tail, SaltCli};
use crate::parse;
use crate::process::Captured;

/// Adds a failure when the command exited non-zero or Salt's JSON carries a
/// non-zero `retcode`, and no state failure explains it already.
fn with_retcode(mut r: StateRunResult, c: &Captured, what: &str) -> StateRunResult {
    let retcode = r.raw.get("retcode").and_then(Value::as_i64).unwrap_or(0);
    if (c.code != Some(0) || retcode != 0) && r.failures.is_empty() {
        r.failures.push(StateFailure {
            minion: "<salt>".into(),
            state: "<retcode>".into(),
            comment: format!(
                "{what} exited {:?} (retcode {retcode}): {}",
                c.code,
                tail(&String::from_utf8_lossy(&c.stderr), 3)
            ),
            log: None,
        });
    }
    r
}

/// Adds a `<return>` failure for each target missing from the run's return
/// (not an accepted minion, or it did not answer in time).
fn with_missing(mut r: StateRunResult, targets: &[String]) -> StateRunResult {
    for t in targets.iter().filter(|t| !r.minions.contains(t)) {
        r.failures.push(StateFailure {
            minion: t.clone(),
            state: "<return>".into(),
            comment: "the minion did not return".into(),
            log: None,
        });
    }
    r
}

impl SaltCli {
    /// The program and arguments of `state.apply`: `salt -L` through the
    /// master, or `salt-call --local` when masterless.
    fn state_apply_command(
        &self,
        targets: &[String],
        sls: &[String],
        saltenv: &Env,
    ) -> (&'static str, Vec<String>) {
        let (program, mut args) = if self.local {
            ("salt-call", vec!["--local".to_string()])
        } else {
            (
                "salt",
                vec!["-L".to_string(), targets.join(","), "--static".into()],
            )
        };
        args.extend([
            "state.apply".into(),
            sls.join(","),
            format!("saltenv={saltenv}"),
            "--out=json".into(),
        ]);
        (program, args)
    }
}

#[async_trait]
impl SaltExecutor for SaltCli {
    async fn cloud_map(&self, map: &Path) -> Result<CloudRunResult, BackendError> {
        self.cloud_map_per_vm(map).await
    }

    async fn cloud_forget(&self, vms: &[CloudVm]) -> Result<(), BackendError> {
        let base = self.cloud_cachedir_value();
        for vm in vms {
            let provider_ok = !vm.provider.is_empty()
                && vm
                    .provider
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
            if conductor_core::check_instance_name("name", &vm.name).is_err() || !provider_ok {
                return Err(BackendError::new(
                    BackendErrorKind::Rejected,
                    format!(
                        "refusing to touch salt-cloud's cache for {:?} under provider {:?}: not a valid name",
                        vm.name, vm.provider
                    ),
                ));
            }
            // salt.utils.cloud.delete_minion_cachedir: <cachedir>/<requested|active>/<driver>/<provider>/<name>.p
            for sub in ["requested", "active"] {
                let path = base
                    .join(sub)
                    .join("ec2")
                    .join(&vm.provider)
                    .join(format!("{}.p", vm.name));
                match tokio::fs::remove_file(&path).await {
                    Ok(()) => {
                        tracing::debug!(path = %path.display(), "removed salt-cloud's cache entry")
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(BackendError::io(&path, e)),
                }
            }
        }
        Ok(())
    }

    async fn state_apply(
        &self,
        targets: &[String],
        sls: &[String],
        saltenv: &Env,
    ) -> Result<StateRunResult, BackendError> {
        let (program, args) = self.state_apply_command(targets, sls, saltenv);
        let (raw, c) = self.run_json(program, args).await?;
        let mut r = parse::state_run(raw);
        if !self.local {
            // Missing minions explain a non-zero exit (`salt` exits 2 when
            // no target matched an accepted minion).
            r = with_missing(r, targets);
        }
        Ok(with_retcode(r, &c, program))
    }

    async fn orchestrate(
        &self,
        sls: &str,
        saltenv: &Env,
        pillarenv: &Env,
    ) -> Result<StateRunResult, BackendError> {
        let args = vec![
            "state.orchestrate".to_string(),
            sls.to_string(),
            format!("saltenv={saltenv}"),
            format!("pillarenv={pillarenv}"),
            "--out=json".into(),
        ];
        let (raw, c) = self.run_json("salt-run", args).await?;
        Ok(with_retcode(parse::state_run(raw), &c, "salt-run"))
    }

    async fn minion_keys(&self) -> Result<MinionKeys, BackendError> {
        if self.local {
            // Masterless: no keys to list.
            return Ok(MinionKeys::default());
        }
        let (raw, _) = self
            .run_json("salt-key", vec!["-L".into(), "--out=json".into()])
            .await?;
        Ok(parse::minion_keys(&raw))
    }

    async fn ping(&self, targets: &[String]) -> Result<Vec<String>, BackendError> {
        if self.local {
            // Masterless: the local minion is the only one, and it is here.
            return Ok(targets.to_vec());
        }
        if targets.is_empty() {
            return Ok(vec![]);
        }
        let args = vec![
            "-L".to_string(),
            targets.join(","),
            "--static".into(),
            "-t".into(),
            "10".into(),
            "test.ping".into(),
            "--out=json".into(),
        ];
        let c = self.run("salt", &args).await?;
        match salt_json(&c.stdout) {
            Ok(v) => Ok(targets
                .iter()
                .filter(|t| v.get(t.as_str()) == Some(&Value::Bool(true)))
                .cloned()
                .collect()),
            Err(e) if master_unreachable(&String::from_utf8_lossy(&c.stderr)).is_some() => {
                Err(self.no_json("salt", &args, &c, &e))
            }
            // No document at all: none of them answered.
            Err(_) => Ok(vec![]),
        }
    }

    async fn settle(&self) {
        let left = self.killed.settle(super::SETTLE_WITHIN).await;
        if !left.is_empty() {
            tracing::warn!(
                pids = ?left,
                "Salt commands killed with SIGKILL are still running after {:?}: they may be stuck in the kernel (a hung disk or NFS mount)",
                super::SETTLE_WITHIN
            );
        }
    }

    async fn cached_grains(&self) -> Result<CachedGrains, BackendError> {
        if self.local {
            // Masterless: there is no master, so no minion is cached.
            return Ok(CachedGrains::new());
        }
        // salt-run reads the cache itself (no master process needed), and
        // with a missing config dir it only warns and prints `{}`: check
        // that there is a master config to read first.
        let master = self.master_config();
        if !tokio::fs::try_exists(&master).await.unwrap_or(false) {
            return Err(BackendError::new(
                BackendErrorKind::Unreachable,
                format!(
                    "no Salt master config at {}; point --salt-config-dir at the master's config dir",
                    master.display()
                ),
            ));
        }
        let args = vec![
            "cache.grains".to_string(),
            "tgt=*".into(),
            "--out=json".into(),
        ];
        let (raw, c) = self.run_json("salt-run", args.clone()).await?;
        match raw {
            Value::Object(m) if c.code == Some(0) => Ok(m.into_iter().collect()),
            other => Err(BackendError::new(
                BackendErrorKind::Failed,
                format!(
                    "{} exited {:?} with {:.200} instead of an object of minions: {}",
                    self.shown(&self.program("salt-run"), &args),
                    c.code,
                    other.to_string(),
                    tail(&String::from_utf8_lossy(&c.stderr), 3)
                ),
            )),
        }
    }

    async fn delete_keys(&self, names: &[String]) -> Result<(), BackendError> {
        if self.local {
            return Ok(());
        }
        for name in names {
            let args = vec!["-y".to_string(), "-d".into(), name.clone()];
            let c = self.run("salt-key", &args).await?;
            if c.code != Some(0) {
                return Err(BackendError::new(
                    BackendErrorKind::Failed,
                    format!(
                        "{} exited {:?}: {}",
                        self.shown(&self.program("salt-key"), &args),
                        c.code,
                        tail(&String::from_utf8_lossy(&c.stderr), 3)
                    ),
                ));
            }
        }
        Ok(())
    }
}

/// The VM names of a map file (`{profile: [{name: {...}}, ...]}`), read off
/// the async runtime with core's one map reader.
pub async fn map_names(map: &Path) -> Result<Vec<String>, BackendError> {
    let path = map.to_path_buf();
    let vms = tokio::task::spawn_blocking(move || conductor_core::read_map_file(&path))
        .await
        .map_err(|e| {
            BackendError::new(
                BackendErrorKind::Io,
                format!("reading {}: {e}", map.display()),
            )
        })??;
    Ok(vms.into_iter().map(|(name, _)| name).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn captured(code: i32, stderr: &str) -> Captured {
        Captured {
            code: Some(code),
            stdout: Vec::new(),
            stderr: stderr.as_bytes().to_vec(),
            truncated: false,
        }
    }

    #[test]
    fn a_nonzero_retcode_without_failed_states_is_a_failure() {
        let r = with_retcode(
            parse::state_run(json!({"data": {}, "outputter": "highstate", "retcode": 2})),
            &captured(0, ""),
            "salt-run",
        );
        assert_eq!(r.failures.len(), 1);
        assert_eq!(r.failures[0].state, "<retcode>");
        let r = with_retcode(
            parse::state_run(json!({"local": {}})),
            &captured(1, "[ERROR   ] boom\n"),
            "salt-call",
        );
        assert!(r.failures[0].comment.contains("boom"), "{:?}", r.failures);
        let ok = with_retcode(
            parse::state_run(json!({"data": {}, "retcode": 0})),
            &captured(0, ""),
            "salt-run",
        );
        assert!(ok.ok());
    }

    #[test]
    fn missing_targets_explain_a_nonzero_exit() {
        let r = with_missing(parse::state_run(json!({})), &["m1".into()]);
        let r = with_retcode(r, &captured(2, "ERROR: No return received"), "salt");
        assert_eq!(r.failures.len(), 1, "{:?}", r.failures);
        assert_eq!(
            (r.failures[0].minion.as_str(), r.failures[0].state.as_str()),
            ("m1", "<return>")
        );
    }
}
