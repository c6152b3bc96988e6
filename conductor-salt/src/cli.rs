//! `SaltCli`: the [`SaltExecutor`] that runs the real Salt commands.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use async_trait::async_trait;
use conductor_core::Env;
use conductor_core::{BackendError, BackendErrorKind};
use conductor_core::{CloudRunResult, MinionKeys, SaltExecutor, StateRunResult};
use serde_json::Value;
use tokio::io::AsyncReadExt;
use tracing::{info_span, Instrument};

use crate::parse;

/// Most bytes of output kept from one command (the rest is read and dropped).
const DEFAULT_MAX_OUTPUT: u64 = 64 << 20;

/// Runs `salt-cloud`, `salt`, `salt-run` (and `salt-call`) as child processes.
///
/// Each command runs in its own process group, so a timeout (or dropping the
/// future that runs it) kills Salt's worker processes too, not only the
/// program started (`salt-cloud -P` forks one process per VM).
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
    /// True when stdout or stderr was longer than the capture limit and cut.
    pub truncated: bool,
}

/// Kills a command's whole process group unless disarmed (on timeout, and
/// when the future running the command is dropped).
struct GroupKill {
    pgid: Option<i32>,
}

impl GroupKill {
    fn disarm(&mut self) {
        self.pgid = None;
    }
}

impl Drop for GroupKill {
    fn drop(&mut self) {
        if let Some(pgid) = self.pgid.take() {
            // SAFETY: plain syscall on a process group this process created
            // (the child was spawned with process_group(0), so pgid == its pid).
            unsafe {
                libc::killpg(pgid, libc::SIGKILL);
            }
        }
    }
}

/// Reads `r` to its end, keeping at most `limit` bytes; returns them and
/// whether anything was dropped. Reading on past the limit keeps the child
/// from blocking on a full pipe.
async fn capture(
    mut r: impl tokio::io::AsyncRead + Unpin,
    limit: u64,
) -> std::io::Result<(Vec<u8>, bool)> {
    let mut kept = Vec::new();
    let mut buf = vec![0u8; 64 << 10];
    let mut dropped = false;
    loop {
        let n = r.read(&mut buf).await?;
        if n == 0 {
            return Ok((kept, dropped));
        }
        let room = usize::try_from(limit.saturating_sub(kept.len() as u64)).unwrap_or(usize::MAX);
        kept.extend_from_slice(&buf[..n.min(room)]);
        dropped |= n > room;
    }
}

/// Recognizes, from stderr, a Salt that could not reach its master.
fn master_unreachable(stderr: &str) -> Option<&str> {
    const SIGNS: [&str; 5] = [
        "could not be contacted",
        "Unable to connect to the salt master",
        "Salt request timed out",
        "master is not responding",
        "Minion failed to authenticate with the master",
    ];
    stderr
        .lines()
        .find(|l| SIGNS.iter().any(|s| l.contains(s)))
        .map(str::trim)
}

/// The last `n` non-empty lines of `text`, joined with ` | `.
fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .rev()
        .take(n)
        .collect();
    lines.into_iter().rev().collect::<Vec<_>>().join(" | ")
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

    /// Longest a command may run before it (and its process group) is killed.
    pub fn timeout(mut self, t: Duration) -> Self {
        self.timeout = t;
        self
    }

    /// The timeout set by [`SaltCli::timeout`].
    pub fn timeout_value(&self) -> Duration {
        self.timeout
    }

    /// Whether salt-cloud provisions the map's instances in parallel (`-P`).
    pub fn parallel(mut self, yes: bool) -> Self {
        self.parallel = yes;
        self
    }

    /// Masterless: states run through `salt-call --local` on this machine;
    /// the one local minion always answers, and there are no keys to list or delete.
    pub fn local(mut self, yes: bool) -> Self {
        self.local = yes;
        self
    }

    /// Most bytes kept of each of a command's stdout and stderr (default 64 MiB).
    pub fn max_output(mut self, bytes: u64) -> Self {
        self.max_output = bytes;
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

    /// The command line as shown in errors and spans.
    fn shown(&self, path: &Path, args: &[String]) -> String {
        let mut s = path.display().to_string();
        if let Some(c) = &self.config_dir {
            s.push_str(&format!(" -c {}", c.display()));
        }
        for a in args {
            s.push(' ');
            s.push_str(a);
        }
        s
    }

    /// Runs `program args...` with `-c <config>` and the timeout; captures
    /// output (bounded). A program that cannot be started, or that does not
    /// finish in time, is an `Unreachable` error naming the command.
    pub async fn run(&self, program: &str, args: &[String]) -> Result<Captured, BackendError> {
        let path = self.program(program);
        let shown = self.shown(&path, args);
        let span = info_span!("salt.command", program, command = %shown);
        self.run_inner(&path, args, &shown).instrument(span).await
    }

    async fn run_inner(
        &self,
        path: &Path,
        args: &[String],
        shown: &str,
    ) -> Result<Captured, BackendError> {
        let mut cmd = tokio::process::Command::new(path);
        if let Some(c) = &self.config_dir {
            cmd.arg("-c").arg(c);
        }
        cmd.envs(self.envs.iter().map(|(k, v)| (k, v)));
        cmd.args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        let mut child = cmd.spawn().map_err(|e| {
            let hint = if e.kind() == std::io::ErrorKind::NotFound {
                "install Salt on this machine, or point --salt-bin-dir at the directory of its programs"
            } else {
                "check that it is an executable file"
            };
            BackendError::new(
                BackendErrorKind::Unreachable,
                format!("cannot run {shown}: {e}; {hint}"),
            )
            .with_source(e)
        })?;
        let mut group = GroupKill {
            pgid: child.id().and_then(|p| i32::try_from(p).ok()),
        };
        let limit = self.max_output;
        let (Some(out), Some(err)) = (child.stdout.take(), child.stderr.take()) else {
            return Err(BackendError::new(
                BackendErrorKind::Io,
                format!("{shown}: no pipes to the child"),
            ));
        };
        let work = async {
            let (o, e) = tokio::join!(capture(out, limit), capture(err, limit));
            let ((stdout, t1), (stderr, t2)) = (o?, e?);
            let status = child.wait().await?;
            Ok::<_, std::io::Error>(Captured {
                code: status.code(),
                stdout,
                stderr,
                truncated: t1 || t2,
            })
        };
        match tokio::time::timeout(self.timeout, work).await {
            Ok(Ok(c)) => {
                group.disarm();
                tracing::debug!(code = ?c.code, stdout = c.stdout.len(), stderr = c.stderr.len(), "finished");
                Ok(c)
            }
            Ok(Err(e)) => {
                Err(BackendError::new(BackendErrorKind::Io, format!("{shown}: {e}")).with_source(e))
            }
            Err(_) => Err(BackendError::new(
                BackendErrorKind::Unreachable,
                format!(
                    "{shown} did not finish within {:?}; it was killed with its process group (raise the timeout if Salt needs longer)",
                    self.timeout
                ),
            )),
        }
    }

    /// Runs a command whose stdout is Salt JSON; a missing or unparsable
    /// document is an error naming the command and its stderr (`Unreachable`
    /// when Salt says it could not reach its master).
    async fn run_json(
        &self,
        program: &str,
        args: Vec<String>,
    ) -> Result<(Value, Captured), BackendError> {
        let c = self.run(program, &args).await?;
        let text = String::from_utf8_lossy(&c.stdout);
        match serde_json::from_str::<Value>(text.trim()) {
            Ok(v) => Ok((v, c)),
            Err(e) => Err(self.no_json(program, &args, &c, &e)),
        }
    }

    /// The error for a command that printed no (whole) JSON document.
    pub(crate) fn no_json(
        &self,
        program: &str,
        args: &[String],
        c: &Captured,
        parse: &serde_json::Error,
    ) -> BackendError {
        let shown = self.shown(&self.program(program), args);
        let err = String::from_utf8_lossy(&c.stderr);
        if let Some(line) = master_unreachable(&err) {
            let conf = self
                .config_dir
                .as_ref()
                .map(|c| c.display().to_string())
                .unwrap_or_else(|| "/etc/salt".into());
            return BackendError::new(
                BackendErrorKind::Unreachable,
                format!(
                    "{shown}: the Salt master could not be reached ({line}); check that salt-master is running and that {conf} is the config dir that points at it"
                ),
            );
        }
        if c.truncated {
            return BackendError::new(
                BackendErrorKind::Failed,
                format!(
                    "{shown} printed more than {} bytes and its JSON was cut; raise the output limit (SaltCli::max_output)",
                    self.max_output
                ),
            );
        }
        BackendError::new(
            BackendErrorKind::Failed,
            format!(
                "{shown} exited {} without JSON output ({parse}): {}",
                c.code
                    .map(|c| c.to_string())
                    .unwrap_or_else(|| "by a signal".into()),
                tail(&err, 5)
            ),
        )
    }
}

/// Adds a failure when the command exited non-zero or Salt's JSON carries a
/// non-zero `retcode`, and no state failure explains it already.
fn with_retcode(mut r: StateRunResult, c: &Captured, what: &str) -> StateRunResult {
    let retcode = r.raw.get("retcode").and_then(Value::as_i64).unwrap_or(0);
    if (c.code != Some(0) || retcode != 0) && r.failures.is_empty() {
        r.failures.push(conductor_core::StateFailure {
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
        let names = map_names(map).await?;
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
                r.failures.push(conductor_core::StateFailure {
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
        let text = String::from_utf8_lossy(&c.stdout);
        match serde_json::from_str::<Value>(text.trim()) {
            Ok(v) => Ok(targets
                .iter()
                .filter(|t| v.get(t.as_str()) == Some(&Value::Bool(true)))
                .cloned()
                .collect()),
            // "No minions matched the target": none of them is accepted yet.
            Err(e) if master_unreachable(&String::from_utf8_lossy(&c.stderr)).is_some() => {
                Err(self.no_json("salt", &args, &c, &e))
            }
            Err(_) => Ok(vec![]),
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
    fn master_unreachable_is_recognized() {
        let err = "[ERROR   ] Unable to connect to the salt master publisher at /x\nTraceback...\nsalt.exceptions.SaltClientError: The salt master could not be contacted. Is master running?\n";
        assert!(master_unreachable(err).is_some());
        assert!(master_unreachable("[ERROR   ] Rendering SLS failed").is_none());
    }
}
