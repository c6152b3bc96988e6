//! `SaltCli`: the [`SaltExecutor`](conductor_core::SaltExecutor) that runs the
//! real Salt commands (`salt-cloud`, `salt`, `salt-run`, `salt-key`,
//! `salt-call`) through the bounded [`process`] runner, and
//! reads what they print: Salt's JSON, or the sign of an unreachable master.

mod cloud_map;
mod executor;

use std::path::{Path, PathBuf};
use std::time::Duration;

use conductor_core::{BackendError, BackendErrorKind};
use serde_json::Value;
use tracing::{info_span, Instrument};

use crate::process::{self, Captured, Limits, RunError};

pub use executor::map_names;

/// Most bytes of output kept from one command (the rest is read and dropped).
const DEFAULT_MAX_OUTPUT: u64 = 64 << 20;

/// Longest [`SaltCli`]'s `settle` waits for the commands it killed to exit:
/// SIGKILL takes effect within milliseconds unless a process waits on a
/// stuck disk or network file system, which no wait would outlast.
const SETTLE_WITHIN: Duration = Duration::from_secs(5);

/// What `salt` prints on stdout, before its JSON, when no target is an
/// accepted minion.
const NO_MINIONS_MATCHED: &str = "No minions matched the target.";

/// Runs `salt-cloud`, `salt`, `salt-run` (and `salt-call`) as child processes.
///
/// Each command runs in its own process group, so a timeout (or dropping the
/// future that runs it) kills Salt's worker processes too, not only the
/// program started (salt-cloud forks workers of its own);
/// [`SaltExecutor::settle`](conductor_core::SaltExecutor::settle) waits
/// until the killed groups are gone (at most 5 s).
#[derive(Clone, Debug)]
pub struct SaltCli {
    bin_dir: Option<PathBuf>,
    config_dir: Option<PathBuf>,
    timeout: Duration,
    parallel: bool,
    local: bool,
    max_output: u64,
    envs: Vec<(String, String)>,
    cloud_cachedir: Option<PathBuf>,
    killed: process::Killed,
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
            cloud_cachedir: None,
            killed: process::Killed::default(),
        }
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

/// Salt's JSON document on a command's stdout. `salt` prints a line before
/// it when no target matched an accepted minion (`{}` follows): that line is
/// skipped, so the document reads as "nobody answered".
fn salt_json(stdout: &[u8]) -> Result<Value, serde_json::Error> {
    let text = String::from_utf8_lossy(stdout);
    let text = text.trim();
    let doc = match text.strip_prefix(NO_MINIONS_MATCHED) {
        Some(rest) => rest.split_once('\n').map_or("", |(_, json)| json),
        None => text,
    };
    serde_json::from_str(doc.trim())
}

/// True when `e` is a command that ran into its timeout (and was killed).
pub fn timed_out(e: &BackendError) -> bool {
    e.source
        .as_ref()
        .and_then(|s| s.downcast_ref::<RunError>())
        .is_some_and(|r| matches!(r, RunError::TimedOut(_)))
}

impl SaltCli {
    /// Salt commands from `PATH`, default config dir, 1 h timeout, a map's VMs created at once.
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

    /// Whether the map's VMs are created at once (one salt-cloud process
    /// each, the default) or one after the other.
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

    /// salt-cloud's cache directory (its `cachedir`), where
    /// [`cloud_forget`](conductor_core::SaltExecutor::cloud_forget) removes
    /// the entries of destroyed VMs. Default: the `cachedir` of
    /// `<config dir>/cloud`, else Salt's `/var/cache/salt/cloud`.
    pub fn cloud_cachedir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.cloud_cachedir = Some(dir.into());
        self
    }

    /// The salt-cloud cache directory in effect (see [`SaltCli::cloud_cachedir`]):
    /// as Salt's `cloud_config` computes it, the `cachedir` of
    /// `<config dir>/cloud` (default `/var/cache/salt/cloud`) under the
    /// `root_dir` of that file or of `<config dir>/master` (default `/`).
    pub fn cloud_cachedir_value(&self) -> PathBuf {
        if let Some(d) = &self.cloud_cachedir {
            return d.clone();
        }
        let conf = self.config_dir_value();
        let setting = |file: &str, key: &str| -> Option<PathBuf> {
            let text = std::fs::read_to_string(conf.join(file)).ok()?;
            let doc: serde_yaml::Value = serde_yaml::from_str(&text).ok()?;
            doc.get(key)?.as_str().map(PathBuf::from)
        };
        let cachedir =
            setting("cloud", "cachedir").unwrap_or_else(|| PathBuf::from("/var/cache/salt/cloud"));
        let root = setting("cloud", "root_dir")
            .or_else(|| setting("master", "root_dir"))
            .unwrap_or_else(|| PathBuf::from("/"));
        // salt.config.prepend_root_dir: a path not under root_dir goes under it.
        if cachedir.starts_with(&root) || !cachedir.is_absolute() && root == Path::new("/") {
            cachedir
        } else {
            root.join(cachedir.strip_prefix("/").unwrap_or(&cachedir))
        }
    }

    /// Makes salt-cloud's cache directories (the cache dir, `requested`,
    /// `active`) at `base` before a map run: Salt 3007 creates each with an
    /// unguarded "exists, then makedirs", and salt-cloud processes started
    /// together on a fresh root race on it (`FileExistsError`: the loser's
    /// VM is never created); each VM's private cache dir links to these.
    /// Failing here is no error: salt-cloud says what is wrong.
    pub(crate) async fn make_cloud_cachedir(base: &Path) {
        for sub in ["requested", "active"] {
            if let Err(e) = tokio::fs::create_dir_all(base.join(sub)).await {
                tracing::debug!(dir = %base.display(), error = %e, "cannot make salt-cloud's cache dir");
            }
        }
    }

    /// The config directory in effect: the one set, else Salt's `/etc/salt`.
    fn config_dir_value(&self) -> PathBuf {
        self.config_dir
            .clone()
            .unwrap_or_else(|| PathBuf::from("/etc/salt"))
    }

    /// The master's config file (`<config dir>/master`).
    fn master_config(&self) -> PathBuf {
        self.config_dir_value().join("master")
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
    /// output (bounded). A program that cannot be started is an `Unreachable`
    /// error naming the command; one that does not finish in time is killed
    /// with its process group and is a `Failed` error (it ran, and may have
    /// done part of its work: salt-cloud may have created instances).
    pub async fn run(&self, program: &str, args: &[String]) -> Result<Captured, BackendError> {
        self.run_env(program, args, &[]).await
    }

    /// [`SaltCli::run`] with more environment variables for this command.
    async fn run_env(
        &self,
        program: &str,
        args: &[String],
        env: &[(&str, std::ffi::OsString)],
    ) -> Result<Captured, BackendError> {
        let path = self.program(program);
        let shown = self.shown(&path, args);
        let mut cmd = tokio::process::Command::new(&path);
        if let Some(c) = &self.config_dir {
            cmd.arg("-c").arg(c);
        }
        cmd.envs(self.envs.iter().map(|(k, v)| (k, v)))
            .envs(env.iter().map(|(k, v)| (k, v)))
            .args(args);
        let limits = Limits {
            timeout: self.timeout,
            max_output: self.max_output,
        };
        let span = info_span!("salt.command", program, command = %shown);
        match process::run_tracked(cmd, limits, &self.killed)
            .instrument(span.clone())
            .await
        {
            Ok(c) => {
                span.in_scope(|| {
                    tracing::debug!(code = ?c.code, stdout = c.stdout.len(), stderr = c.stderr.len(), "finished");
                });
                Ok(c)
            }
            Err(e) => Err(run_error(&shown, e)),
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
        self.run_json_env(program, args, &[]).await
    }

    /// [`SaltCli::run_json`] with more environment variables for this command.
    async fn run_json_env(
        &self,
        program: &str,
        args: Vec<String>,
        env: &[(&str, std::ffi::OsString)],
    ) -> Result<(Value, Captured), BackendError> {
        let c = self.run_env(program, &args, env).await?;
        match salt_json(&c.stdout) {
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

/// The error of a command that gave no output to read: `Unreachable` when it
/// could not be started, `Failed` when it ran into its timeout, `Io` else.
fn run_error(shown: &str, e: RunError) -> BackendError {
    let (kind, message) = match &e {
        RunError::Spawn(io) => {
            let hint = if io.kind() == std::io::ErrorKind::NotFound {
                "install Salt on this machine, or point --salt-bin-dir at the directory of its programs"
            } else {
                "check that it is an executable file"
            };
            (
                BackendErrorKind::Unreachable,
                format!("cannot run {shown}: {io}; {hint}"),
            )
        }
        RunError::Io(io) => (BackendErrorKind::Io, format!("{shown}: {io}")),
        RunError::TimedOut(t) => (
            BackendErrorKind::Failed,
            format!(
                "{shown} did not finish within {t:?}; it was killed with its process group and may have done part of its work (raise the timeout if Salt needs longer)"
            ),
        ),
    };
    BackendError::new(kind, message).with_source(e)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn master_unreachable_is_recognized() {
        let err = "[ERROR   ] Unable to connect to the salt master publisher at /x\nTraceback...\nsalt.exceptions.SaltClientError: The salt master could not be contacted. Is master running?\n";
        assert!(master_unreachable(err).is_some());
        assert!(master_unreachable("[ERROR   ] Rendering SLS failed").is_none());
    }

    #[test]
    fn no_minions_matched_reads_as_an_empty_return() {
        let out = b"No minions matched the target. No command was sent, no jid was assigned.\n{}\n";
        assert_eq!(salt_json(out).unwrap(), serde_json::json!({}));
        assert_eq!(salt_json(b" {\"a\": 1}\n").unwrap()["a"], 1);
        assert!(salt_json(b"[ERROR] boom").is_err());
    }

    #[test]
    fn a_timeout_is_failed_and_recognizable() {
        let e = run_error(
            "salt-cloud -m x",
            RunError::TimedOut(Duration::from_secs(1)),
        );
        assert_eq!(e.kind, BackendErrorKind::Failed);
        assert!(timed_out(&e));
        let e = run_error("salt", RunError::Spawn(std::io::ErrorKind::NotFound.into()));
        assert_eq!(e.kind, BackendErrorKind::Unreachable);
        assert!(!timed_out(&e));
    }
}
