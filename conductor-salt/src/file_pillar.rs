//! `FilePillar`: pillar from YAML files, for machines without Salt.

use std::path::{Path, PathBuf};

use async_trait::async_trait;
use conductor_core::{BackendError, BackendErrorKind, Error, PillarError};
use conductor_core::{Env, Pillar, PillarSource};
use serde_yaml::Value;

/// Reads every `*.sls` / `*.yaml` / `*.yml` file of `<dir>/<env>/` (or of
/// `<dir>/` when that subdirectory does not exist), deep-merged in file-name
/// order, and takes its `conductor:` key.
#[derive(Clone, Debug)]
pub struct FilePillar {
    dir: PathBuf,
}

impl FilePillar {
    /// A pillar source reading `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    /// The files read for `env`, in merge order.
    pub fn files(&self, env: &Env) -> Result<Vec<PathBuf>, Error> {
        let per_env = self.dir.join(env.as_str());
        let dir = if per_env.is_dir() {
            per_env
        } else {
            self.dir.clone()
        };
        let entries = std::fs::read_dir(&dir).map_err(|e| {
            // A directory that is not there is bad input (exit 2), as a
            // typo in the flag is; other I/O errors are the machine's.
            let missing = matches!(
                e.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory
            );
            let mut err = BackendError::io(&dir, e)
                .with_hint("give --pillar-dir a directory of pillar YAML files");
            if missing {
                err.kind = BackendErrorKind::Rejected;
            }
            Error::backend("reading pillar", err)
        })?;
        let mut files: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_file() && matches!(ext(p), Some("sls" | "yaml" | "yml")))
            .collect();
        files.sort();
        if files.is_empty() {
            return Err(PillarError::new(
                "conductor",
                format!(
                    "no pillar for pillarenv {env}: neither {} nor {} holds *.sls or *.yaml files",
                    self.dir.join(env.as_str()).display(),
                    self.dir.display()
                ),
            )
            .into());
        }
        Ok(files)
    }

    /// Loads and merges the files of `env` into one pillar value.
    pub fn load_value(&self, env: &Env) -> Result<Value, Error> {
        let mut merged = Value::Mapping(Default::default());
        for file in self.files(env)? {
            let text = std::fs::read(&file).map_err(|e| Error::io(&file, e))?;
            let text = String::from_utf8(text)
                .map_err(|_| PillarError::new(file.display().to_string(), "is not UTF-8 text"))?;
            let value: Value = serde_yaml::from_str(&text).map_err(|e| {
                PillarError::new(
                    file.display().to_string(),
                    format!("is not valid YAML: {e}"),
                )
            })?;
            if !value.is_null() {
                deep_merge(&mut merged, value);
            }
        }
        Ok(merged)
    }
}

fn ext(p: &Path) -> Option<&str> {
    p.extension().and_then(|e| e.to_str())
}

/// Merges `other` into `base`: mappings key by key (recursively), anything
/// else replaced — Salt's default pillar merge.
pub fn deep_merge(base: &mut Value, other: Value) {
    match (base, other) {
        (Value::Mapping(b), Value::Mapping(o)) => {
            for (k, v) in o {
                match b.get_mut(&k) {
                    Some(existing) => deep_merge(existing, v),
                    None => {
                        b.insert(k, v);
                    }
                }
            }
        }
        (b, o) => *b = o,
    }
}

#[async_trait]
impl PillarSource for FilePillar {
    async fn load(&self, env: &Env) -> Result<Pillar, Error> {
        let me = self.clone();
        let env = env.clone();
        let value = tokio::task::spawn_blocking(move || me.load_value(&env))
            .await
            .map_err(|e| Error::task("reading the pillar files", e))??;
        Ok(Pillar::from_pillar(value)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn merges_files_in_name_order_and_prefers_env_dir() {
        let d = tempfile::tempdir().unwrap();
        let test = d.path().join("test");
        std::fs::create_dir(&test).unwrap();
        std::fs::write(
            test.join("a.sls"),
            "conductor:\n  environments: {test: {domain: a.com}}\n  groups:\n    devops:\n      roles: {mq: {basename: mqXX.ENV}}\n",
        )
        .unwrap();
        std::fs::write(
            test.join("b.yaml"),
            "conductor:\n  environments: {test: {domain: b.com}}\n",
        )
        .unwrap();
        std::fs::write(d.path().join("ignored.sls"), "conductor: 1\n").unwrap();
        let p = FilePillar::new(d.path())
            .load(&Env::new("test").unwrap())
            .await
            .unwrap();
        assert_eq!(p.environments[&Env::new("test").unwrap()].domain, "b.com");
        assert_eq!(p.groups.len(), 1);
    }

    #[tokio::test]
    async fn errors_name_the_file() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("bad.sls"), "conductor: [\n").unwrap();
        let e = FilePillar::new(d.path())
            .load(&Env::new("test").unwrap())
            .await
            .unwrap_err();
        assert!(e.to_string().contains("bad.sls"), "{e}");
        let e = FilePillar::new(d.path().join("missing"))
            .load(&Env::new("test").unwrap())
            .await
            .unwrap_err();
        assert!(e.to_string().contains("missing"), "{e}");
    }
}
