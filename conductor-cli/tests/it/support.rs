//! Shared by the binary's fault tests (`crash.rs`, `faults.rs`): a directory
//! with the example pillar, and the `conductor` binary run against one EC2
//! endpoint (moto, or a proxy in front of it). A run to be killed at a
//! lifecycle step is this test binary re-run as [`crash_child`]: the
//! `conductor` command (`conductor_cli::main_with`) with an observer that
//! SIGKILLs the process at the step.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;

use conductor_core::Step;
use conductor_testkit::crash::{KillAt, CRASH_AT_ENV};

/// The arguments of a crash child's `conductor` command (a JSON list).
const CRASH_ARGS_ENV: &str = "CONDUCTOR_CRASH_ARGS";

/// The child side of a killed run: `conductor <args>` killed at the step
/// named by `CONDUCTOR_CRASH_AT` (a no-op test otherwise).
#[test]
fn crash_child() {
    let Ok(args) = std::env::var(CRASH_ARGS_ENV) else {
        return;
    };
    let args: Vec<String> = serde_json::from_str(&args).unwrap();
    let kill = KillAt::from_env().expect("the parent names the step");
    let code = conductor_cli::main_with(
        std::iter::once("conductor".to_string())
            .chain(args)
            .map(Into::into),
        Some(Arc::new(kill)),
    );
    panic!("the run was not killed at {:?}: it exited {code:?}", kill.0);
}

/// The seed's three commands (DESIGN section 9), as the words after `group=devops`.
pub const SEED: [&[&str]; 3] = [
    &["role=nifi"],
    &["role=activemq", "count=2"],
    &["system=small_test"],
];

/// A pillar, config and runner directory, and the cloud every run uses.
pub struct Lab {
    /// EC2 endpoint (`--endpoint-url`), or `None` for `--cloud fake` (an
    /// empty in-memory cloud in each process).
    pub endpoint: Option<String>,
    /// Root of pillar/, etc/ and runner/.
    pub dir: PathBuf,
    /// Extra environment of every run.
    pub env: Vec<(String, String)>,
}

impl Lab {
    /// Writes the example pillar (without its placeholder subnet, which moto
    /// checks), changed by `edit`, under `dir`.
    pub fn new(endpoint: String, dir: &Path, edit: impl Fn(String) -> String) -> Self {
        let pillar = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/pillar/test/conductor.sls"),
        )
        .unwrap()
        .replace(", subnet_id: subnet-1", "");
        std::fs::create_dir_all(dir.join("pillar/test")).unwrap();
        std::fs::write(dir.join("pillar/test/conductor.sls"), edit(pillar)).unwrap();
        Self {
            endpoint: Some(endpoint),
            dir: dir.to_path_buf(),
            env: Vec::new(),
        }
    }

    /// Like [`Lab::new`], every run on `--cloud fake`.
    pub fn fake(dir: &Path, edit: impl Fn(String) -> String) -> Self {
        Self {
            endpoint: None,
            ..Self::new(String::new(), dir, edit)
        }
    }

    /// `--runner-dir`.
    pub fn runner(&self) -> PathBuf {
        self.dir.join("runner")
    }

    /// Runs `conductor <args>`, killed at step `fault` when given.
    pub fn run(&self, args: &[&str], fault: Option<Step>) -> Output {
        self.command(args, fault).output().unwrap()
    }

    /// The command `conductor <args>` with the lab's roots, cloud and
    /// environment (to spawn it); killed at step `fault` when given.
    pub fn command(&self, args: &[&str], fault: Option<Step>) -> Command {
        let mut all: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        let runner = self.runner();
        let pillar = self.dir.join("pillar");
        let etc = self.dir.join("etc");
        for (flag, value) in [
            ("--pillar-dir", pillar.to_str().unwrap()),
            ("--config-dir", etc.to_str().unwrap()),
            ("--runner-dir", runner.to_str().unwrap()),
        ] {
            all.extend([flag.to_string(), value.to_string()]);
        }
        match &self.endpoint {
            Some(url) => all.extend(["--endpoint-url".to_string(), url.clone()]),
            None => all.extend(["--cloud".to_string(), "fake".to_string()]),
        }
        let mut c = match fault {
            None => {
                let mut c = Command::new(env!("CARGO_BIN_EXE_conductor"));
                c.args(&all);
                c
            }
            Some(step) => {
                let mut c = Command::new(std::env::current_exe().unwrap());
                c.args([
                    "support::crash_child",
                    "--exact",
                    "--nocapture",
                    "--test-threads=1",
                ])
                .env(CRASH_ARGS_ENV, serde_json::to_string(&all).unwrap())
                .env(CRASH_AT_ENV, step.as_str());
                c
            }
        };
        c.env("AWS_ACCESS_KEY_ID", "testing")
            .env("AWS_SECRET_ACCESS_KEY", "testing")
            .env("AWS_REGION", "us-east-1")
            .env_remove("RUST_LOG")
            .envs(self.env.iter().map(|(k, v)| (k, v)));
        c
    }

    /// Runs `conductor <args>`, asserts success and parses its JSON.
    pub fn json(&self, args: &[&str]) -> serde_json::Value {
        let o = self.run(args, None);
        assert!(o.status.success(), "{args:?}: {}", stderr(&o));
        serde_json::from_slice(&o.stdout).unwrap()
    }

    /// `group create group=devops <words> ...` with the native provisioner and
    /// no Salt, killed at `fault` when given.
    pub fn create(&self, words: &[&str], fault: Option<Step>) -> Output {
        let mut args = vec!["group", "create", "group=devops"];
        args.extend(words);
        args.extend([
            "pillarenv=test",
            "region=us-east-1a",
            "--provisioner",
            "ec2",
            "--no-salt",
            "--release-grace",
            "0",
            "--json",
        ]);
        self.run(&args, fault)
    }

    /// Runs the seed's three commands at once, each killed at `fault` when given.
    pub fn create_seed_in_parallel(&self, fault: Option<Step>) -> Vec<Output> {
        std::thread::scope(|s| {
            let runs: Vec<_> = SEED
                .iter()
                .map(|words| s.spawn(move || self.create(words, fault)))
                .collect();
            runs.into_iter().map(|r| r.join().unwrap()).collect()
        })
    }

    /// (name, cpid tag) of every live instance of the group, as `group status`
    /// reports them; `words` narrow it (`cpid=...`).
    pub fn instances(&self, words: &[&str]) -> Vec<(String, String)> {
        let mut args = vec![
            "group",
            "status",
            "group=devops",
            "pillarenv=test",
            "region=us-east-1a",
            "--json",
        ];
        args.extend(words);
        self.json(&args)
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                (
                    r["name"].as_str().unwrap().to_string(),
                    r["cpid"].as_str().unwrap_or("-").to_string(),
                )
            })
            .collect()
    }

    /// Live instance names grouped by cpid tag.
    pub fn by_cpid(&self) -> BTreeMap<String, Vec<String>> {
        let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (name, cpid) in self.instances(&[]) {
            out.entry(cpid).or_default().push(name);
        }
        out
    }

    /// Names of the instances `group status cpid=<cpid>` finds, sorted.
    pub fn names_of_run(&self, cpid: &str) -> Vec<String> {
        let word = format!("cpid={cpid}");
        let mut names: Vec<String> = self
            .instances(&[&word])
            .into_iter()
            .map(|(n, _)| n)
            .collect();
        names.sort();
        names
    }

    /// Files under the reservation directories.
    pub fn reservation_files(&self) -> Vec<PathBuf> {
        ["reserved_names", "reserved_ids"]
            .iter()
            .flat_map(|d| {
                std::fs::read_dir(self.runner().join(d))
                    .into_iter()
                    .flatten()
            })
            .map(|e| e.unwrap().path())
            .collect()
    }
}

/// The process's stderr, for assertion messages.
pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Asserts that no name appears twice among `names`.
pub fn assert_unique(names: &[String], context: &str) {
    let mut sorted = names.to_vec();
    sorted.sort();
    sorted.dedup();
    assert_eq!(
        sorted.len(),
        names.len(),
        "{context}: a name was used twice: {names:?}"
    );
}
