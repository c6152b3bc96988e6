//! `SaltPillar`: pillar as Salt renders it (Jinja, GPG, ext_pillar).

use std::path::PathBuf;
use std::time::Duration;

use async_trait::async_trait;
use conductor_core::{BackendErrorKind, Error, PillarError};
use conductor_core::{Env, Pillar, PillarSource};
use serde_json::Value;
use tracing::{info_span, Instrument};

use crate::salt_cli::{self, SaltCli};

/// Longest `salt-call pillar.items` may take by default: salt-call waits
/// for an unreachable master without end, so the wait must be bounded.
pub const DEFAULT_PILLAR_TIMEOUT: Duration = Duration::from_secs(120);

/// Asks Salt: `salt-call [--local] --out=json pillar.items pillarenv=<env>`.
#[derive(Clone, Debug)]
pub struct SaltPillar {
    cli: SaltCli,
    local: bool,
}

impl SaltPillar {
    /// Pillar through `cli` (its `-c` config dir and programs); `local` adds
    /// `--local` (masterless `salt-call`, pillar_roots of the local config).
    /// The wait is the shorter of `cli`'s timeout and [`DEFAULT_PILLAR_TIMEOUT`].
    pub fn new(cli: SaltCli, local: bool) -> Self {
        let t = cli.timeout_value().min(DEFAULT_PILLAR_TIMEOUT);
        Self {
            cli: cli.timeout(t),
            local,
        }
    }

    /// Longest `salt-call pillar.items` may run before it is killed.
    pub fn timeout(mut self, t: Duration) -> Self {
        self.cli = self.cli.timeout(t);
        self
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
            .map_err(|mut e| {
                if salt_cli::timed_out(&e) && !self.local {
                    // salt-call waits without end for a master that does not
                    // answer: here a timeout means the master is unreachable.
                    e.kind = BackendErrorKind::Unreachable;
                    e.message.push_str(
                        "; salt-call waits as long as its master does not answer: check the master of its minion config, or give --pillar-dir",
                    );
                }
                Error::backend("reading pillar through salt-call", e)
            })?;
        let text = String::from_utf8_lossy(&c.stdout);
        let doc: Value = serde_json::from_str(text.trim()).map_err(|e| {
            Error::backend(
                "reading pillar through salt-call",
                self.cli.no_json("salt-call", &args, &c, &e),
            )
        })?;
        let pillar = doc.get("local").cloned().unwrap_or(doc);
        if !pillar.is_object() {
            // e.g. a list of error strings when Salt could not compile pillar.
            return Err(PillarError::new(
                "<salt>",
                format!(
                    "salt-call pillar.items pillarenv={env} returned no pillar (exit {:?}): {pillar}",
                    c.code
                ),
            )
            .into());
        }
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
