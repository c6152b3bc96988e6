//! `SaltPillar`: pillar as Salt renders it (Jinja, GPG, ext_pillar).

use std::path::PathBuf;

use async_trait::async_trait;
use conductor_core::error::{Error, PillarError};
use conductor_core::{Env, Pillar, PillarSource};
use serde_json::Value;
use tracing::{info_span, Instrument};

use crate::cli::SaltCli;

/// Asks Salt: `salt-call [--local] --out=json pillar.items pillarenv=<env>`.
#[derive(Clone, Debug)]
pub struct SaltPillar {
    cli: SaltCli,
    local: bool,
}

impl SaltPillar {
    /// Pillar through `cli` (its `-c` config dir and programs); `local` adds
    /// `--local` (masterless `salt-call`, pillar_roots of the local config).
    pub fn new(cli: SaltCli, local: bool) -> Self {
        Self { cli, local }
    }

    /// Convenience: `salt-call` from `bin_dir` with config `config_dir`.
    pub fn with_config(bin_dir: Option<PathBuf>, config_dir: Option<PathBuf>, local: bool) -> Self {
        let mut cli = SaltCli::new();
        if let Some(b) = bin_dir {
            cli = cli.bin_dir(b);
        }
        if let Some(c) = config_dir {
            cli = cli.config_dir(c);
        }
        Self::new(cli, local)
    }
}

#[async_trait]
impl PillarSource for SaltPillar {
    async fn load(&self, env: &Env) -> Result<Pillar, Error> {
        let mut args = Vec::new();
        if self.local {
            args.push("--local".to_string());
        }
        args.extend([
            "--out=json".into(),
            "pillar.items".into(),
            format!("pillarenv={env}"),
        ]);
        let c = self
            .cli
            .run("salt-call", &args)
            .instrument(info_span!("salt.pillar_items", %env))
            .await
            .map_err(|e| Error::backend("reading pillar through salt-call", e))?;
        let text = String::from_utf8_lossy(&c.stdout);
        let doc: Value = serde_json::from_str(text.trim()).map_err(|_| {
            PillarError::new(
                "<salt-call>",
                format!(
                    "salt-call pillar.items pillarenv={env} printed no JSON (exit {:?}): {}",
                    c.code,
                    String::from_utf8_lossy(&c.stderr)
                        .lines()
                        .last()
                        .unwrap_or("")
                ),
            )
        })?;
        let pillar = doc.get("local").cloned().unwrap_or(doc);
        // A render error still exits 0: its only sign is `_errors`.
        if let Some(errors) = pillar.get("_errors") {
            return Err(PillarError::new(
                "<salt>",
                format!("Salt could not render pillar for {env}: {errors}"),
            )
            .into());
        }
        if pillar.get("conductor").is_none() {
            return Err(PillarError::new(
                "conductor",
                format!("Salt's pillar for pillarenv {env:?} has no `conductor` key; check the top file and pillar_roots of that environment"),
            )
            .into());
        }
        let value: serde_yaml::Value = serde_json::from_value(pillar)
            .map_err(|e| PillarError::new("<salt>", e.to_string()))?;
        Ok(Pillar::from_pillar(value)?)
    }
}
