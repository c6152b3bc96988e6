//! The `conductor` binary run against one set of roots and one cloud: the
//! command lines the CLI's integration tests and the bench share. The
//! testkit cannot name the binary (`CARGO_BIN_EXE_conductor` exists only in
//! the CLI's own tests), so the caller passes its path.
//!
//! ```no_run
//! use conductor_testkit::bin_lab::BinLab;
//! let dir = tempfile::tempdir().unwrap();
//! let lab = BinLab::new("target/debug/conductor", "examples/pillar", dir.path(), None);
//! let out = lab.create(&["role=activemq"]).output().unwrap();
//! assert!(out.status.success());
//! ```

use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The `conductor` binary, the pillar it reads, its file roots and cloud.
#[derive(Clone, Debug)]
pub struct BinLab {
    /// Path of the `conductor` binary.
    pub bin: PathBuf,
    /// `--pillar-dir`.
    pub pillar: PathBuf,
    /// Root of `etc/` (`--config-dir`) and `runner/` (`--runner-dir`).
    pub dir: PathBuf,
    /// EC2 endpoint (`--endpoint-url`), or `None` for `--cloud fake` (an
    /// empty in-memory cloud in each process).
    pub endpoint: Option<String>,
    /// Extra environment of every run (after, so over, the lab's own).
    pub env: Vec<(String, String)>,
    /// Read the Salt master's grains cache when planning; off by default
    /// (`--no-grains`): most tests have no master.
    pub grains: bool,
}

/// `group <verb>` for group devops in us-east-1a of env test, then `words`
/// (the target, more flags).
pub fn group_args<'a>(verb: &'a str, words: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec![
        "group",
        verb,
        "group=devops",
        "pillarenv=test",
        "region=us-east-1a",
    ];
    args.extend(words);
    args
}

/// The words of `group create` ([`group_args`]) with the target `words`, the
/// native provisioner, no Salt, no release grace, and `--json`.
pub fn create_args<'a>(words: &[&'a str]) -> Vec<&'a str> {
    let mut args = group_args("create", words);
    args.extend([
        "--provisioner",
        "ec2",
        "--no-salt",
        "--release-grace",
        "0",
        "--json",
    ]);
    args
}

impl BinLab {
    /// The binary `bin` reading the pillar under `pillar`, with its files
    /// under `dir`, against `endpoint` (or `--cloud fake`).
    pub fn new(
        bin: impl Into<PathBuf>,
        pillar: impl Into<PathBuf>,
        dir: &Path,
        endpoint: Option<String>,
    ) -> Self {
        Self {
            bin: bin.into(),
            pillar: pillar.into(),
            dir: dir.to_path_buf(),
            endpoint,
            env: Vec::new(),
            grains: false,
        }
    }

    /// `--config-dir`.
    pub fn config_dir(&self) -> PathBuf {
        self.dir.join("etc")
    }

    /// `--runner-dir`.
    pub fn runner_dir(&self) -> PathBuf {
        self.dir.join("runner")
    }

    /// `args`, then the lab's roots and cloud flags.
    pub fn args<S: AsRef<OsStr>>(&self, args: &[S]) -> Vec<OsString> {
        let mut all: Vec<OsString> = args.iter().map(|a| a.as_ref().to_owned()).collect();
        for (flag, value) in [
            ("--pillar-dir", self.pillar.clone()),
            ("--config-dir", self.config_dir()),
            ("--runner-dir", self.runner_dir()),
        ] {
            all.extend([flag.into(), value.into_os_string()]);
        }
        match &self.endpoint {
            Some(url) => all.extend(["--endpoint-url".into(), url.into()]),
            None => all.extend(["--cloud".into(), "fake".into()]),
        }
        if !self.grains {
            all.push("--no-grains".into());
        }
        all
    }

    /// Gives `c` the lab's environment: throwaway credentials, region
    /// us-east-1, no instance metadata, no profile, no config file (not
    /// this host's `/etc/conductor/conductor.yaml`), no `RUST_LOG`, then
    /// [`BinLab::env`].
    pub fn set_env(&self, c: &mut Command) {
        c.env("AWS_ACCESS_KEY_ID", "testing")
            .env("AWS_SECRET_ACCESS_KEY", "testing")
            .env("AWS_REGION", "us-east-1")
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env("CONDUCTOR_CONFIG", "/dev/null")
            .env_remove("AWS_PROFILE")
            .env_remove("RUST_LOG")
            .envs(self.env.iter().map(|(k, v)| (k, v)));
    }

    /// The command `conductor <args>` with the lab's roots, cloud and
    /// environment.
    pub fn command<S: AsRef<OsStr>>(&self, args: &[S]) -> Command {
        let mut c = Command::new(&self.bin);
        c.args(self.args(args));
        self.set_env(&mut c);
        c
    }

    /// The command of [`create_args`]`(words)`.
    pub fn create(&self, words: &[&str]) -> Command {
        self.command(&create_args(words))
    }
}
