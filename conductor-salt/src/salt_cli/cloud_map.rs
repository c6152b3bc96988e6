//! A map run as one `salt-cloud` process per VM, each with a cache
//! directory of its own.
//!
//! Every EC2 create of salt-cloud 3007 adds its VM to the cloud index
//! (`<cachedir>/index.p`) under a lock file taken by "exists, then create",
//! which two processes can both pass; one then reads the index while the
//! other writes it and dies, and with it the whole `salt-cloud -P` run
//! (Salt issues #18980, #31634). The index is written only (nothing in Salt
//! 3007 reads it back), so each VM's process gets its own `cachedir`
//! (`<cachedir>/conductor/<vm>.<pid>.<n>`, through `SALT_CLOUD_CONFIG`: the
//! operator's `<config dir>/cloud` with `cachedir` set), whose `requested`
//! and `active` are links to the shared ones, so the minion cache stays
//! where Salt's other commands look for it. A process that dies then loses
//! only its own VM, and names it.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use conductor_core::{BackendError, BackendErrorKind, CloudRunResult, YAML_ONLY};
use serde_json::Value;
use serde_yaml::{Mapping, Value as Yaml};

use super::SaltCli;
use crate::parse;
use crate::process::RunError;

/// Numbers the private cache directories made by this process.
static NEXT: AtomicU64 = AtomicU64::new(0);

/// The single-VM maps of a salt-cloud map document (`{profile: [{name:
/// overrides}, ...]}`), as (name, map), in map order.
fn split_map(doc: &Yaml) -> Vec<(String, Yaml)> {
    let mut maps = Vec::new();
    for (profile, list) in doc.as_mapping().into_iter().flatten() {
        for vm in list.as_sequence().into_iter().flatten() {
            for (name, _) in vm.as_mapping().into_iter().flatten() {
                if let Some(name) = name.as_str() {
                    let mut one = Mapping::new();
                    one.insert(profile.clone(), Yaml::Sequence(vec![vm.clone()]));
                    maps.push((name.to_string(), Yaml::Mapping(one)));
                }
            }
        }
    }
    maps
}

/// Adds the members of `from` to `into`, object by object (salt-cloud
/// answers `{provider: {driver: {vm: ...}}}`, one VM per process here).
fn merge(into: &mut Value, from: Value) {
    match (into, from) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in b {
                match a.get_mut(&k) {
                    Some(slot) => merge(slot, v),
                    None => {
                        a.insert(k, v);
                    }
                }
            }
        }
        (slot, v) => *slot = v,
    }
}

/// An error that says nothing ran: salt-cloud could not be started, or
/// refused before doing anything. `Unreachable` also names a salt-cloud
/// that ran (it may have created its VM) and then printed no answer for
/// want of a master: only a failure to start it ran nothing.
fn nothing_ran(e: &BackendError) -> bool {
    match e.kind {
        BackendErrorKind::Rejected | BackendErrorKind::Throttled => true,
        BackendErrorKind::Unreachable => e
            .source
            .as_deref()
            .and_then(|s| s.downcast_ref::<RunError>())
            .is_some_and(|r| matches!(r, RunError::Spawn(_))),
        _ => false,
    }
}

/// A VM's private salt-cloud directory, removed when dropped (also when the
/// run is cancelled).
struct PrivateDir(PathBuf);

impl Drop for PrivateDir {
    fn drop(&mut self) {
        // A few small files and two links (not followed).
        if let Err(e) = std::fs::remove_dir_all(&self.0) {
            tracing::debug!(dir = %self.0.display(), error = %e, "cannot remove salt-cloud's private dir");
        }
    }
}

impl SaltCli {
    /// Runs `map` as one salt-cloud process per VM (all at once when
    /// [`SaltCli::parallel`], else one after the other) and merges their
    /// answers. A process that ends without an answer puts its VM in
    /// `lost`; when none ran at all, that error is the run's.
    pub(super) async fn cloud_map_per_vm(
        &self,
        map: &Path,
    ) -> Result<CloudRunResult, BackendError> {
        let text = tokio::fs::read_to_string(map)
            .await
            .map_err(|e| BackendError::io(map, e))?;
        let doc: Yaml = serde_yaml::from_str(&text).map_err(|e| {
            BackendError::new(
                BackendErrorKind::Failed,
                format!("{}: not a salt-cloud map: {e}", map.display()),
            )
        })?;
        let vms = split_map(&doc);
        let names: Vec<String> = vms.iter().map(|(n, _)| n.clone()).collect();
        let cloud = self.cloud_config_doc().await?;
        let base = self.cloud_cachedir_value();
        Self::make_cloud_cachedir(&base).await;
        let runs = vms
            .iter()
            .map(|(name, one)| self.cloud_map_one(&base, &cloud, name, one));
        let answers = if self.parallel {
            futures_util::future::join_all(runs).await
        } else {
            let mut answers = Vec::new();
            for run in runs {
                answers.push(run.await);
            }
            answers
        };
        if !answers.is_empty() && answers.iter().all(|a| a.as_ref().is_err_and(nothing_ran)) {
            return Err(answers
                .into_iter()
                .find_map(Result::err)
                .expect("not empty"));
        }
        let mut raw = Value::Object(Default::default());
        let mut lost = Vec::new();
        for (name, answer) in names.iter().zip(answers) {
            match answer {
                Ok(v) => merge(&mut raw, v),
                Err(e) => lost.push((
                    name.clone(),
                    format!("salt-cloud gave no answer for it ({e}); it may exist"),
                )),
            }
        }
        let mut r = parse::cloud_run(raw, &names);
        r.lost = lost;
        Ok(r)
    }

    /// The operator's salt-cloud config (`<config dir>/cloud`) as a mapping;
    /// empty when there is none.
    async fn cloud_config_doc(&self) -> Result<Mapping, BackendError> {
        let path = self.config_dir_value().join("cloud");
        let text = match tokio::fs::read_to_string(&path).await {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Mapping::new()),
            Err(e) => return Err(BackendError::io(&path, e)),
        };
        match serde_yaml::from_str::<Yaml>(&text) {
            Ok(Yaml::Mapping(m)) => Ok(m),
            Ok(Yaml::Null) => Ok(Mapping::new()),
            Ok(_) => Err(BackendError::new(
                BackendErrorKind::Rejected,
                format!(
                    "{}: salt-cloud's config is not a mapping of settings; fix the file",
                    path.display()
                ),
            )),
            Err(e) => Err(BackendError::new(
                BackendErrorKind::Rejected,
                format!(
                    "{}: salt-cloud's config is not YAML ({e}); fix the file",
                    path.display()
                ),
            )),
        }
    }

    /// Runs salt-cloud for one VM's map in a private cache directory.
    async fn cloud_map_one(
        &self,
        base: &Path,
        cloud: &Mapping,
        name: &str,
        map: &Yaml,
    ) -> Result<Value, BackendError> {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir = PrivateDir(
            base.join("conductor")
                .join(format!("{name}.{}.{n}", std::process::id())),
        );
        self.write_private_dir(&dir.0, base, cloud, map).await?;
        let args = vec![
            "-m".to_string(),
            dir.0.join("map").display().to_string(),
            "-y".into(),
            "--out=json".into(),
        ];
        let env = [("SALT_CLOUD_CONFIG", dir.0.join("cloud").into_os_string())];
        let (raw, _) = self.run_json_env("salt-cloud", args, &env).await?;
        drop(dir);
        Ok(raw)
    }

    /// Fills a VM's private directory: its `cloud` config (mode 0600: the
    /// operator's file may hold secrets), its `map` (starting with `#!yaml`,
    /// so Salt reads it as YAML only), and links to the shared `requested`
    /// and `active`.
    async fn write_private_dir(
        &self,
        dir: &Path,
        base: &Path,
        cloud: &Mapping,
        map: &Yaml,
    ) -> Result<(), BackendError> {
        let io = |p: &Path| {
            let p = p.to_path_buf();
            move |e| BackendError::io(&p, e)
        };
        match tokio::fs::remove_dir_all(dir).await {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(BackendError::io(dir, e)),
        }
        tokio::fs::create_dir_all(dir).await.map_err(io(dir))?;
        let mut conf = cloud.clone();
        conf.insert("cachedir".into(), dir.display().to_string().into());
        let conf_path = dir.join("cloud");
        let text = serde_yaml::to_string(&conf).expect("a mapping serializes");
        let mut opts = tokio::fs::OpenOptions::new();
        opts.write(true).create_new(true).mode(0o600);
        let mut f = opts.open(&conf_path).await.map_err(io(&conf_path))?;
        tokio::io::AsyncWriteExt::write_all(&mut f, text.as_bytes())
            .await
            .map_err(io(&conf_path))?;
        let map_path = dir.join("map");
        // The render line, as in the run's own map: salt-cloud renders a map
        // through Jinja unless told otherwise, and pillar values are in it.
        let text = format!(
            "{YAML_ONLY}\n{}",
            serde_yaml::to_string(map).expect("a map serializes")
        );
        tokio::fs::write(&map_path, text)
            .await
            .map_err(io(&map_path))?;
        for sub in ["requested", "active"] {
            let link = dir.join(sub);
            tokio::fs::symlink(base.join(sub), &link)
                .await
                .map_err(io(&link))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn only_a_salt_cloud_that_did_not_start_ran_nothing() {
        let spawn = RunError::Spawn(std::io::ErrorKind::NotFound.into());
        let unstarted =
            BackendError::new(BackendErrorKind::Unreachable, "cannot run").with_source(spawn);
        assert!(nothing_ran(&unstarted));
        let no_master = BackendError::new(
            BackendErrorKind::Unreachable,
            "salt-cloud: the Salt master could not be reached",
        );
        assert!(!nothing_ran(&no_master), "it ran: its VM may exist");
        assert!(nothing_ran(&BackendError::new(
            BackendErrorKind::Rejected,
            "bad config"
        )));
        assert!(!nothing_ran(&BackendError::new(
            BackendErrorKind::Failed,
            "traceback"
        )));
    }

    #[test]
    fn a_map_splits_into_one_map_per_vm() {
        let doc: Yaml = serde_yaml::from_str(
            "p1:\n- a: {grains: {x: 1}}\n- b: {}\np2:\n- c: {minion: {master: m}}\n",
        )
        .unwrap();
        let maps = split_map(&doc);
        let names: Vec<&str> = maps.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["a", "b", "c"]);
        let c: Yaml = serde_yaml::from_str("p2:\n- c: {minion: {master: m}}\n").unwrap();
        assert_eq!(maps[2].1, c);
        assert_eq!(core_names(&maps[0].1), ["a"], "each map holds its VM only");
    }

    fn core_names(doc: &Yaml) -> Vec<String> {
        conductor_core::map_vms(doc)
            .into_iter()
            .map(|(n, _)| n)
            .collect()
    }

    #[test]
    fn answers_merge_under_their_provider() {
        let mut raw = json!({});
        merge(
            &mut raw,
            json!({"p": {"ec2": {"a": {"instanceId": "i-1"}}}}),
        );
        merge(
            &mut raw,
            json!({"p": {"ec2": {"b": {"instanceId": "i-2"}}}}),
        );
        merge(&mut raw, json!({"q": {"ec2": {"c": {}}}}));
        assert_eq!(
            raw,
            json!({"p": {"ec2": {"a": {"instanceId": "i-1"}, "b": {"instanceId": "i-2"}}}, "q": {"ec2": {"c": {}}}})
        );
    }
}
