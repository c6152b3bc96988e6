//! How every test of the binary runs it: [`Lab`], a directory with the
//! example pillar (or a changed copy), and the `conductor` binary run
//! against one EC2 endpoint (moto, or a proxy in front of it) or the
//! in-memory cloud. A run to be killed at a lifecycle step is this test
//! binary re-run as [`crash_child`]: the `conductor` command
//! (`conductor_cli::main_with`) with an observer that SIGKILLs the process
//! at the step.

use std::collections::BTreeMap;
use std::ops::{Deref, DerefMut};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;

use conductor_core::Step;
use conductor_testkit::bin_lab::{create_args, group_args, BinLab};
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

/// The names a plan (or a create's report) lists.
pub fn names(doc: &serde_json::Value) -> Vec<String> {
    doc["instances"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["name"].as_str().unwrap().to_string())
        .collect()
}

/// The seed's three commands (DESIGN section 9), as the words after `group=devops`.
pub const SEED: [&[&str]; 3] = [
    &["role=nifi"],
    &["role=activemq", "count=2"],
    &["system=small_test"],
];

/// The example pillar (`examples/pillar`).
pub fn example_pillar() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/pillar")
}

/// The repository's root.
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .canonicalize()
        .unwrap()
}

/// The words of the runner tests' plan: `salt-run conduct.group plan
/// <words>` and `conductor group plan <words>` must return the same document.
pub const RUNNER_PLAN_WORDS: [&str; 5] = [
    "group=devops",
    "system=small_test",
    "pillarenv=test",
    "region=us-east-1a",
    "cpid=16833830331552303186",
];

/// Writes a Salt master config for `salt-run -c <d>/conf` and returns that
/// directory: root, cache and log under `<d>/root`; `runner_dirs` when some
/// are given (none: Salt's default, which lists no directory); the runner's
/// `conductor_binary` and, when some are given, `conductor_args`.
pub fn write_master_config(
    d: &Path,
    runner_dirs: &[PathBuf],
    bin: &Path,
    args: &[String],
) -> PathBuf {
    let mut master = format!(
        "root_dir: {root}\ncachedir: {root}/cache\nlog_file: {root}/master.log\nconductor_binary: {bin}\n",
        root = d.join("root").display(),
        bin = bin.display(),
    );
    if !runner_dirs.is_empty() {
        let dirs: Vec<String> = runner_dirs
            .iter()
            .map(|r| r.display().to_string())
            .collect();
        master.push_str(&format!("runner_dirs: [{}]\n", dirs.join(", ")));
    }
    if !args.is_empty() {
        let args: Vec<String> = args.iter().map(|a| format!("'{a}'")).collect();
        master.push_str(&format!("conductor_args: [{}]\n", args.join(", ")));
    }
    let conf = d.join("conf");
    std::fs::create_dir_all(&conf).unwrap();
    std::fs::create_dir_all(d.join("root/cache/proc")).unwrap();
    std::fs::write(conf.join("master"), master).unwrap();
    conf
}

/// The `conductor` binary with a pillar, config and runner directory, and
/// the cloud every run uses (the testkit's [`BinLab`]), run as it is or as
/// a crash child.
#[derive(Clone, Debug)]
pub struct Lab(pub BinLab);

impl Deref for Lab {
    type Target = BinLab;
    fn deref(&self) -> &BinLab {
        &self.0
    }
}

impl DerefMut for Lab {
    fn deref_mut(&mut self) -> &mut BinLab {
        &mut self.0
    }
}

impl Lab {
    /// The unmodified example pillar where it is, every run on `--cloud
    /// fake`, files under `dir`.
    pub fn example(dir: &Path) -> Self {
        Self(BinLab::new(
            env!("CARGO_BIN_EXE_conductor"),
            example_pillar(),
            dir,
            None,
        ))
    }

    /// Writes the example pillar (without its placeholder subnet, which moto
    /// checks), changed by `edit`, under `dir`.
    pub fn new(endpoint: String, dir: &Path, edit: impl Fn(String) -> String) -> Self {
        let pillar = std::fs::read_to_string(example_pillar().join("test/conductor.sls"))
            .unwrap()
            .replace(", subnet_id: subnet-1", "");
        let mut lab = Self::example(dir);
        lab.endpoint = Some(endpoint);
        lab.write_pillar(edit(pillar));
        lab
    }

    /// Like [`Lab::new`], every run on `--cloud fake`.
    pub fn fake(dir: &Path, edit: impl Fn(String) -> String) -> Self {
        let mut lab = Self::new(String::new(), dir, edit);
        lab.endpoint = None;
        lab
    }

    /// Makes `text` the pillar of env `test`, under `pillar/` of the lab's dir.
    pub fn write_pillar(&mut self, text: impl AsRef<[u8]>) {
        self.pillar = self.dir.join("pillar");
        std::fs::create_dir_all(self.pillar.join("test")).unwrap();
        std::fs::write(self.pillar.join("test/conductor.sls"), text).unwrap();
    }

    /// Runs `conductor <args>`, killed at step `fault` when given.
    pub fn run(&self, args: &[&str], fault: Option<Step>) -> Output {
        self.command(args, fault).output().unwrap()
    }

    /// The command `conductor <args>` with the lab's roots, cloud and
    /// environment (to spawn it); killed at step `fault` when given.
    pub fn command(&self, args: &[&str], fault: Option<Step>) -> Command {
        let Some(step) = fault else {
            return self.0.command(args);
        };
        let all: Vec<String> = self
            .args(args)
            .into_iter()
            .map(|a| {
                a.into_string()
                    .expect("a crash child's arguments are UTF-8")
            })
            .collect();
        let mut c = Command::new(std::env::current_exe().unwrap());
        c.args([
            "support::crash_child",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CRASH_ARGS_ENV, serde_json::to_string(&all).unwrap())
        .env(CRASH_AT_ENV, step.as_str());
        self.set_env(&mut c);
        c
    }

    /// `conductor <args>` alone: no roots, cloud or environment of the lab.
    pub fn bare(&self, args: &[&str]) -> Output {
        Command::new(&self.bin).args(args).output().unwrap()
    }

    /// The flags the Salt runner adds to every call (`conductor_args`) to
    /// reach this lab: its roots and cloud, and the documented
    /// `--provisioner ec2`, which every action accepts.
    pub fn runner_args(&self) -> Vec<String> {
        let mut args: Vec<String> = self
            .args::<&str>(&[])
            .into_iter()
            .map(|a| a.into_string().unwrap())
            .collect();
        args.extend(["--provisioner".into(), "ec2".into()]);
        args
    }

    /// The document of `conductor group plan <RUNNER_PLAN_WORDS> --json`,
    /// which `salt-run conduct.group plan <RUNNER_PLAN_WORDS>` must return.
    pub fn runner_plan(&self) -> serde_json::Value {
        let mut plan = vec!["group", "plan"];
        plan.extend(RUNNER_PLAN_WORDS);
        plan.push("--json");
        self.json(&plan)
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
        self.run(&create_args(words), fault)
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
        let mut args = group_args("status", &["--json"]);
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

    /// Every file under the config and runner directories.
    pub fn files(&self) -> Vec<PathBuf> {
        fn walk(d: &Path, out: &mut Vec<PathBuf>) {
            for e in std::fs::read_dir(d).into_iter().flatten().flatten() {
                if e.path().is_dir() {
                    walk(&e.path(), out)
                } else {
                    out.push(e.path())
                }
            }
        }
        let mut v = Vec::new();
        walk(&self.config_dir(), &mut v);
        walk(&self.runner_dir(), &mut v);
        v
    }

    /// Files under the reservation directories.
    pub fn reservation_files(&self) -> Vec<PathBuf> {
        ["reserved_names", "reserved_ids"]
            .iter()
            .flat_map(|d| {
                std::fs::read_dir(self.runner_dir().join(d))
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
