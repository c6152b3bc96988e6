//! `SaltCli`: the [`SaltExecutor`] that runs the real Salt commands.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use async_trait::async_trait;
use conductor_core::error::{BackendError, BackendErrorKind};
use conductor_core::salt::{CloudRunResult, SaltExecutor, StateRunResult};
use conductor_core::Env;
use serde_json::Value;
use tokio::io::AsyncReadExt;
use tracing::{info_span, Instrument};

use crate::parse;

/// Most bytes of output kept from one command (the rest is dropped and noted).
const DEFAULT_MAX_OUTPUT: u64 = 64 << 20;

/// Runs `salt-cloud`, `salt`, `salt-run` (and `salt-call`) as child processes.
#[derive(Clone, Debug)]
pub struct SaltCli {
    bin_dir: Option<PathBuf>,
    config_dir: Option<PathBuf>,
    timeout: Duration,
    parallel: bool,
    local: bool,
    max_output: u64,
    envs: Vec<(String, String)>,
}

impl Default for SaltCli {
    fn default() -> Self {
        Self {
            bin_dir: None,
            config_dir: None,
            timeout: Duration::from_secs(3600),
            parallel: true,
            local: false,
            max_output: DEFAULT_MAX_OUTPUT,
            envs: Vec::new(),
        }
    }
}

/// What one command printed.
#[derive(Debug)]
pub struct Captured {
    /// Exit code (None when killed by a signal).
    pub code: Option<i32>,
    /// Standard output (at most the capture limit).
    pub stdout: Vec<u8>,
    /// Standard error (at most the capture limit).
    pub stderr: Vec<u8>,
}

impl SaltCli {
    /// Salt commands from `PATH`, default config dir, 1 h timeout, `salt-cloud -P`.
    pub fn new() -> Self {
        Self::default()
    }

    /// Where the Salt programs are (e.g. a virtualenv's `bin`).
    pub fn bin_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.bin_dir = Some(dir.into());
        self
    }

    /// The config directory passed as `-c` to every command.
    pub fn config_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.config_dir = Some(dir.into());
        self
    }

    /// Longest a command may run before it is killed.
    pub fn timeout(mut self, t: Duration) -> Self {
        self.timeout = t;
        self
    }

    /// Whether salt-cloud provisions the map's instances in parallel (`-P`).
    pub fn parallel(mut self, yes: bool) -> Self {
        self.parallel = yes;
        self
    }

    /// Masterless: states run through `salt-call --local` on this machine.
    pub fn local(mut self, yes: bool) -> Self {
        self.local = yes;
        self
    }

    /// Sets an environment variable for every command (e.g. `AWS_ENDPOINT_URL`).
    pub fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.envs.push((key.into(), value.into()));
        self
    }

    fn program(&self, name: &str) -> PathBuf {
        match &self.bin_dir {
            Some(d) => d.join(name),
            None => PathBuf::from(name),
        }
    }

    /// Runs `program args...` with `-c <config>` and the timeout; captures output.
    pub async fn run(&self, program: &str, args: &[String]) -> Result<Captured, BackendError> {
        let path = self.program(program);
        let mut cmd = tokio::process::Command::new(&path);
        if let Some(c) = &self.config_dir {
            cmd.arg("-c").arg(c);
        }
        cmd.envs(self.envs.iter().map(|(k, v)| (k, v)));
        cmd.args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let shown = format!("{} {}", path.display(), args.join(" "));
        let mut child = cmd.spawn().map_err(|e| {
            let kind = BackendErrorKind::Unreachable;
            let hint = if e.kind() == std::io::ErrorKind::NotFound {
                "install Salt on this machine, or point --salt-bin-dir at its programs"
            } else {
                "check its permissions"
            };
            BackendError::new(kind, format!("cannot run {}: {e}; {hint}", path.display()))
                .with_source(e)
        })?;
        let limit = self.max_output;
        let mut out = child.stdout.take().expect("piped").take(limit);
        let mut err = child.stderr.take().expect("piped").take(limit);
        let work = async {
            let (mut o, mut e) = (Vec::new(), Vec::new());
            let (r1, r2) = tokio::join!(out.read_to_end(&mut o), err.read_to_end(&mut e));
            r1.and(r2)?;
            let status = child.wait().await?;
            Ok::<_, std::io::Error>((status, o, e))
        };
        match tokio::time::timeout(self.timeout, work)
            .instrument(info_span!("salt.command", program))
            .await
        {
            Ok(Ok((status, stdout, stderr))) => Ok(Captured {
                code: status.code(),
                stdout,
                stderr,
            }),
            Ok(Err(e)) => {
                Err(BackendError::new(BackendErrorKind::Io, format!("{shown}: {e}")).with_source(e))
            }
            Err(_) => Err(BackendError::new(
                BackendErrorKind::Unreachable,
                format!(
                    "{shown} did not finish within {:?}; it was killed",
                    self.timeout
                ),
            )),
        }
    }

    /// Runs a command whose stdout is Salt JSON; a missing or unparsable
    /// document is an error naming the command and its stderr.
    async fn run_json(
        &self,
        program: &str,
        args: Vec<String>,
    ) -> Result<(Value, Captured), BackendError> {
        let c = self.run(program, &args).await?;
        let text = String::from_utf8_lossy(&c.stdout);
        match serde_json::from_str::<Value>(text.trim()) {
            Ok(v) => Ok((v, c)),
            Err(_) => {
                let err = String::from_utf8_lossy(&c.stderr);
                let tail: Vec<&str> = err.lines().rev().take(5).collect();
                let kind = if err.contains("Salt request timed out")
                    || err.contains("master") && err.contains("not respond")
                {
                    BackendErrorKind::Unreachable
                } else {
                    BackendErrorKind::Failed
                };
                Err(BackendError::new(
                    kind,
                    format!(
                        "{program} {} exited {:?} without JSON output: {}",
                        args.join(" "),
                        c.code,
                        tail.into_iter().rev().collect::<Vec<_>>().join(" | ")
                    ),
                ))
            }
        }
    }
}

fn with_retcode(mut r: StateRunResult, c: &Captured, what: &str) -> StateRunResult {
    if c.code != Some(0) && r.failures.is_empty() {
        r.failures.push(conductor_core::salt::StateFailure {
            minion: "<salt>".into(),
            state: "<retcode>".into(),
            comment: format!(
                "{what} exited {:?}: {}",
                c.code,
                String::from_utf8_lossy(&c.stderr)
                    .lines()
                    .last()
                    .unwrap_or("")
            ),
            log: None,
        });
    }
    r
}

#[async_trait]
impl SaltExecutor for SaltCli {
    async fn cloud_map(&self, map: &Path) -> Result<CloudRunResult, BackendError> {
        let mut args = vec![
            "-m".to_string(),
            map.display().to_string(),
            "-y".into(),
            "--out=json".into(),
        ];
        if self.parallel {
            args.push("-P".into());
        }
        let names = map_names(map)?;
        let (raw, _) = self.run_json("salt-cloud", args).await?;
        Ok(parse::cloud_run(raw, &names))
    }

    async fn cloud_destroy(&self, names: &[String]) -> Result<CloudRunResult, BackendError> {
        let mut args = vec!["-d".to_string()];
        args.extend(names.iter().cloned());
        args.extend(["-y".into(), "--out=json".into()]);
        let (raw, _) = self.run_json("salt-cloud", args).await?;
        Ok(parse::cloud_run(raw, names))
    }

    async fn state_apply(
        &self,
        targets: &[String],
        sls: &[String],
        saltenv: &Env,
    ) -> Result<StateRunResult, BackendError> {
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
        let (raw, c) = self.run_json(program, args).await?;
        let mut r = with_retcode(parse::state_run(raw), &c, program);
        if !self.local {
            for t in targets.iter().filter(|t| !r.minions.contains(t)) {
                r.failures.push(conductor_core::salt::StateFailure {
                    minion: t.clone(),
                    state: "<return>".into(),
                    comment: "the minion did not return".into(),
                    log: None,
                });
            }
        }
        Ok(r)
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
}

/// The VM names of a map file (`{profile: [{name: {...}}, ...]}`).
pub fn map_names(map: &Path) -> Result<Vec<String>, BackendError> {
    Ok(conductor_core::render::read_map_file(map)?
        .into_iter()
        .map(|(name, _)| name)
        .collect())
}
