//! A real `salt-master` on 127.0.0.1 with real `salt-minion` processes, for
//! end-to-end tests: free ports, its own root directory, file roots from a
//! fixture tree, key acceptance by grains (`autosign_grains_dir`), never
//! `auto_accept`. Every process it starts runs in its own process group and
//! is killed with that group when stopped or when the lab is dropped, also
//! when the test panics.
//!
//! ```no_run
//! # async fn demo() {
//! use conductor_testkit::salt_lab::SaltLab;
//! let lab = SaltLab::start(&SaltLab::fixture_file_roots()).await;
//! // Point Conductor's SaltCli at lab.config_dir() and lab.bin_dir(), its
//! // autosign directory at lab.autosign_grains_dir(); start minions through
//! // conductor_testkit::minion_cloud::MinionCloud.
//! let grains = lab.salt(&["*", "grains.item", "cpid"]).await;
//! # }
//! ```

use std::collections::BTreeMap;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::{Map, Value};

use crate::net::{free_ports, group_listens_on, group_members};
use crate::salt_env::SaltEnv;

/// The master's config directory under the lab root (holds `master`).
const CONF: &str = "conf";
/// `autosign_grains_dir` as written in the master config (Salt puts it under `root_dir`).
const AUTOSIGN: &str = "/autosign_grains";
/// What a master that found its port taken logs before it exits (Salt's
/// `verify_socket`: `Unable to bind socket 127.0.0.1:<port>, error: [Errno
/// 98] Address already in use`).
const PORT_TAKEN: &str = "Address already in use";

/// Set this environment variable to keep a lab's root (configs, logs, keys)
/// after the test, for debugging.
pub const KEEP_ENV: &str = "CONDUCTOR_SALTLAB_KEEP";

/// A running master and the minions started through it.
#[derive(Debug)]
pub struct SaltLab {
    root: tempfile::TempDir,
    bin: PathBuf,
    ret_port: u16,
    publish_port: u16,
    master: Mutex<Option<Child>>,
    minions: Mutex<BTreeMap<String, Child>>,
    /// Minions started so far (numbers their root directories).
    started: AtomicUsize,
}

impl SaltLab {
    /// The testkit's fixture file roots: `devops/conductor.sls` (the startup
    /// state; it fails on a minion with grain `lab_fail_startup: true`),
    /// `orch/conductor_common.sls` (the pre/post-create hook), and
    /// `devops/failing_startup.sls` and `orch/failing_hook.sls` (a state of
    /// each always fails).
    pub fn fixture_file_roots() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/salt-lab/states")
    }

    /// Starts a master serving `file_roots` as the `base` and `test`
    /// environments, and [`SaltLab::pillar_dir`] (empty) as the pillar roots
    /// of `base`, `test` and `prod`, and waits until it listens. Panics with the reason and
    /// the master's log when it cannot start.
    pub async fn start(file_roots: &Path) -> Self {
        Self::start_from(file_roots, free_ports()).await
    }

    /// [`SaltLab::start`] trying `ports` (ret, publish) first. A port taken
    /// between choosing it and the master binding it makes the master exit
    /// at once, saying so in its log: the lab starts again, twice at most,
    /// on other ports (as `MotoServer` does).
    async fn start_from(file_roots: &Path, mut ports: [u16; 2]) -> Self {
        for tries_left in (0..3).rev() {
            let (lab, status) = match Self::try_start(file_roots, ports).await {
                Ok(lab) => return lab,
                Err(failed) => failed,
            };
            let log = lab.log_tail("master.log");
            if tries_left == 0 || !log.contains(PORT_TAKEN) {
                panic!("salt-master exited at start ({status}); its log:\n{log}");
            }
            ports = free_ports();
        }
        unreachable!("the last try returns or panics")
    }

    /// Starts a master on `ports`; `Err` (with the lab, to read its log)
    /// when it exits before it listens.
    async fn try_start(
        file_roots: &Path,
        [ret_port, publish_port]: [u16; 2],
    ) -> Result<Self, (Self, std::process::ExitStatus)> {
        let bin = SaltEnv::get().bin_dir();
        let root = tempfile::Builder::new()
            .prefix("saltlab-")
            .tempdir()
            .expect("a temp dir for the Salt lab");
        let lab = SaltLab {
            root,
            bin,
            ret_port,
            publish_port,
            master: Mutex::new(None),
            minions: Mutex::new(BTreeMap::new()),
            started: AtomicUsize::new(0),
        };
        let roots = file_roots.display().to_string();
        let pillar = lab.pillar_dir();
        std::fs::create_dir_all(&pillar).expect("pillar dir");
        // Salt 3007 creates these master cache directories with an unguarded
        // "isdir, then makedirs" (salt/state.py get_accumulator_dir at the end
        // of every state run; salt/fileserver/roots.py update at every
        // salt-run's start): the first salt-runs on a fresh master, run in
        // parallel (three runs' pre_create hooks), die with FileExistsError
        // when one loses the race. Created up front, there is no race.
        let cache = lab.root.path().join("var/cache/salt/master");
        for d in ["accumulator", "roots", "file_lists/roots"] {
            std::fs::create_dir_all(cache.join(d)).expect("master cache dir");
        }
        std::fs::create_dir_all(lab.autosign_grains_dir()).expect("autosign dir");
        let config = serde_json::json!({
            "root_dir": lab.root.path(),
            "cachedir": cache,
            "interface": "127.0.0.1",
            "ret_port": ret_port,
            "publish_port": publish_port,
            "log_file": lab.master_log(),
            "log_level_logfile": "info",
            "worker_threads": 3,
            "auto_accept": false,
            "open_mode": false,
            "autosign_grains_dir": AUTOSIGN,
            "file_roots": {"base": [&roots], "test": [&roots]},
            "pillar_roots": {"base": [&pillar], "test": [&pillar], "prod": [&pillar]},
            "state_output": "full",
        });
        write_yaml(&lab.config_dir().join("master"), &config);
        lab.write_info();
        lab.link_bin_dir();
        let child = lab.spawn("salt-master", &["-c", &lab.conf_arg(), "-l", "quiet"]);
        let pgid = i32::try_from(child.id()).expect("a pid");
        *lab.master.lock().unwrap() = Some(child);
        let deadline = Instant::now() + Duration::from_secs(60);
        // Ready once one of the master's processes listens on the port: a
        // connection alone could reach whatever took the port first.
        while !group_listens_on(pgid, ret_port) {
            if let Some(status) = lab.master_exited() {
                return Err((lab, status));
            }
            assert!(
                Instant::now() < deadline,
                "salt-master did not listen on 127.0.0.1:{ret_port} within 60 s; its log:\n{}",
                lab.log_tail("master.log")
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        Ok(lab)
    }

    /// The master's config directory: pass it as `salt -c` / `SaltCli::config_dir`.
    pub fn config_dir(&self) -> PathBuf {
        self.root.path().join(CONF)
    }

    /// The directory of the Salt programs for `SaltCli::bin_dir`: the
    /// virtualenv's `salt`, `salt-key`, `salt-run`, `salt-call`, and the
    /// testkit's stand-in `salt-cloud` (which starts minions in this lab
    /// when `$CONDUCTOR_SALT_LAB` names [`SaltLab::info_file`]).
    pub fn bin_dir(&self) -> PathBuf {
        self.root.path().join("bin")
    }

    /// The master's pillar root of the `base`, `test` and `prod` pillarenvs
    /// (one directory: a `top.sls` there names each env's pillar; with
    /// `pillarenv=` given, the master reads only that env's part of it).
    pub fn pillar_dir(&self) -> PathBuf {
        self.root.path().join("pillar")
    }

    /// Where the master looks for autosign grain files (absolute path).
    pub fn autosign_grains_dir(&self) -> PathBuf {
        self.root.path().join(AUTOSIGN.trim_start_matches('/'))
    }

    /// The lab's root directory (master state, minion roots `m<N>`, logs).
    pub fn root(&self) -> &Path {
        self.root.path()
    }

    fn conf_arg(&self) -> String {
        self.config_dir().display().to_string()
    }

    fn spawn(&self, program: &str, args: &[&str]) -> Child {
        Command::new(self.bin.join(program))
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {program}: {e}"))
    }

    fn master_exited(&self) -> Option<std::process::ExitStatus> {
        let mut m = self.master.lock().unwrap();
        m.as_mut().and_then(|c| c.try_wait().ok().flatten())
    }

    /// The end of a log under the lab root, bounded (for failure messages).
    pub fn log_tail(&self, rel: &str) -> String {
        crate::logs::tail(&self.root.path().join(rel), crate::logs::TAIL_BYTES)
    }

    /// The master's log file.
    pub fn master_log(&self) -> PathBuf {
        self.root.path().join("master.log")
    }

    /// The config a minion started from `config` (as read from an instance's
    /// user data) runs with: the same id, grains, environment and
    /// `autosign_grains`, pointed at this master and given its own root.
    pub fn minion_config(&self, config: &Map<String, Value>) -> Map<String, Value> {
        // A short root: Salt's event sockets live under it, and a Unix socket
        // path longer than 107 bytes fails ("AF_UNIX path too long"), which
        // a root named after a long minion id reaches.
        let n = self.started.fetch_add(1, Ordering::Relaxed);
        let root = self.root.path().join(format!("m{n}"));
        let mut c = config.clone();
        c.extend(self.minion_defaults());
        c.insert("root_dir".into(), Value::from(root.display().to_string()));
        c.insert(
            "log_file".into(),
            Value::from(root.join("minion.log").display().to_string()),
        );
        c
    }

    /// What every lab minion's config sets over its own: this master's
    /// address and ports, short retry delays, one process per job.
    fn minion_defaults(&self) -> Map<String, Value> {
        serde_json::json!({
            "master": "127.0.0.1",
            "master_port": self.ret_port,
            "publish_port": self.publish_port,
            "log_level_logfile": "info",
            "acceptance_wait_time": 1,
            "acceptance_wait_time_max": 2,
            "random_reauth_delay": 0,
            // Salt's default, as on a real minion: each job in a process of
            // its own. As threads of the minion (`false`), two jobs at once
            // can race in CPython's `importlib.invalidate_caches`, which
            // Salt's loader calls at every module load: both delete the same
            // stale `sys.path_importer_cache` entry and one job dies with a
            // KeyError (a startup state, once in the flake hunt's rounds).
            "multiprocessing": true,
        })
        .as_object()
        .expect("an object")
        .clone()
    }

    /// The lab described for programs outside this process (the stand-in
    /// `salt-cloud` reads it from `$CONDUCTOR_SALT_LAB` to start minions as
    /// salt-cloud's deploy step would): root, Salt's bin dir, the master's
    /// config and pki dirs, and the minion settings of [`SaltLab::minion_config`].
    pub fn info_file(&self) -> PathBuf {
        self.root.path().join("lab.json")
    }

    fn write_info(&self) {
        let info = serde_json::json!({
            "root": self.root.path(),
            "bin": self.bin,
            "conf": self.config_dir(),
            "master_pki": self.root.path().join("etc/salt/pki/master"),
            "minion": self.minion_defaults(),
        });
        std::fs::write(self.info_file(), info.to_string()).expect("lab.json");
    }

    /// Fills [`SaltLab::bin_dir`]: links to the virtualenv's programs and
    /// to the testkit's stand-in `salt-cloud`.
    fn link_bin_dir(&self) {
        let dir = self.bin_dir();
        std::fs::create_dir_all(&dir).expect("lab bin dir");
        for p in ["salt", "salt-key", "salt-run", "salt-call", "salt-minion"] {
            std::os::unix::fs::symlink(self.bin.join(p), dir.join(p)).expect("symlink");
        }
        let stand_in = crate::salt_env::stand_in_bin_dir().join("salt-cloud");
        std::os::unix::fs::symlink(stand_in, dir.join("salt-cloud")).expect("symlink");
    }

    /// Starts one `salt-minion` with [`SaltLab::minion_config`] of `config`
    /// and returns the path of its log; a minion of the same id already
    /// running is stopped first.
    pub fn start_minion(&self, config: &Map<String, Value>) -> PathBuf {
        let config = self.minion_config(config);
        let log = PathBuf::from(config["log_file"].as_str().expect("set by minion_config"));
        let id = config["id"].as_str().unwrap_or("minion").to_string();
        self.stop_minion(&id);
        let dir = PathBuf::from(config["root_dir"].as_str().expect("set above"));
        write_yaml(&dir.join("conf/minion"), &Value::Object(config));
        let conf = dir.join("conf").display().to_string();
        let child = self.spawn("salt-minion", &["-c", &conf, "-l", "quiet"]);
        self.minions.lock().unwrap().insert(id, child);
        log
    }

    /// Process groups of live minions started under this lab by other
    /// programs: of each `<root>/v*/var/run/salt-minion.pid` whose process
    /// runs from this lab (a stale pid file of a dead minion is ignored).
    pub fn detached_minions(&self) -> Vec<i32> {
        let ours = processes_under(self.root.path());
        let Ok(dirs) = std::fs::read_dir(self.root.path()) else {
            return vec![];
        };
        dirs.flatten()
            .filter(|d| d.file_name().to_string_lossy().starts_with('v'))
            .filter_map(|d| std::fs::read_to_string(d.path().join("var/run/salt-minion.pid")).ok())
            .filter_map(|p| p.trim().parse::<i32>().ok())
            // The pid file names a child of the minion's session leader.
            // SAFETY: getpgid only reads the process table.
            .map(|pid| unsafe { libc::getpgid(pid) })
            .filter(|pgid| *pgid > 0)
            .filter(|pgid| u32::try_from(*pgid).is_ok_and(|p| ours.contains(&p)))
            .collect()
    }

    /// Stops the minion `id` (its whole process group); false if none ran.
    pub fn stop_minion(&self, id: &str) -> bool {
        let child = self.minions.lock().unwrap().remove(id);
        child.map(kill_group).is_some()
    }

    /// Stops the minion `id` another program started in this lab (the
    /// stand-in salt-cloud's deploy), as its instance's termination would:
    /// the process group of each `<root>/v*/` minion whose config has that
    /// id. False if none ran.
    pub fn stop_detached_minion(&self, id: &str) -> bool {
        let ours = processes_under(self.root.path());
        let Ok(dirs) = std::fs::read_dir(self.root.path()) else {
            return false;
        };
        let mut stopped = false;
        for d in dirs.flatten() {
            if !d.file_name().to_string_lossy().starts_with('v') {
                continue;
            }
            let conf = std::fs::read_to_string(d.path().join("conf/minion")).unwrap_or_default();
            let named = serde_yaml::from_str::<serde_yaml::Value>(&conf)
                .ok()
                .and_then(|v| v.get("id")?.as_str().map(str::to_string));
            if named.as_deref() != Some(id) {
                continue;
            }
            let Some(pid) = std::fs::read_to_string(d.path().join("var/run/salt-minion.pid"))
                .ok()
                .and_then(|p| p.trim().parse::<i32>().ok())
            else {
                continue;
            };
            // SAFETY: getpgid only reads the process table.
            let pgid = unsafe { libc::getpgid(pid) };
            if pgid > 0 && u32::try_from(pgid).is_ok_and(|p| ours.contains(&p)) {
                // SAFETY: signals a process group whose leader runs from this lab.
                unsafe {
                    libc::killpg(pgid, libc::SIGKILL);
                }
                stopped = true;
            }
        }
        stopped
    }

    /// The ids of the minions running now.
    pub fn minions(&self) -> Vec<String> {
        let mut m = self.minions.lock().unwrap();
        m.retain(|_, c| matches!(c.try_wait(), Ok(None)));
        m.keys().cloned().collect()
    }

    /// Runs `salt -c <conf> <args> --out=json --static` and returns its JSON
    /// (`{}` when nothing answered). Panics with the output when it is not JSON.
    pub async fn salt(&self, args: &[&str]) -> Value {
        self.json("salt", args, &["--out=json", "--static"]).await
    }

    /// The master's keys: `salt-key -L --out=json`
    /// (`{"minions": [...], "minions_pre": [...], "minions_rejected": [...], ...}`).
    pub async fn keys(&self) -> Value {
        self.json("salt-key", &["-L"], &["--out=json"]).await
    }

    /// Runs `salt-run -c <conf> <args> --out=json` and returns its JSON
    /// (`{}` when it printed nothing), e.g. `["cache.grains", "tgt=*"]`.
    pub async fn salt_run(&self, args: &[&str]) -> Value {
        self.json("salt-run", args, &["--out=json"]).await
    }

    /// Accepted minion ids.
    pub async fn accepted(&self) -> Vec<String> {
        strings(&self.keys().await["minions"])
    }

    /// Minion ids whose key waits for acceptance.
    pub async fn pending(&self) -> Vec<String> {
        strings(&self.keys().await["minions_pre"])
    }

    async fn json(&self, program: &str, args: &[&str], tail: &[&str]) -> Value {
        let out = tokio::process::Command::new(self.bin.join(program))
            .arg("-c")
            .arg(self.config_dir())
            .args(args)
            .args(tail)
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output()
            .await
            .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
        let text = String::from_utf8_lossy(&out.stdout);
        if text.trim().is_empty() {
            return Value::Object(Map::new());
        }
        serde_json::from_str(text.trim()).unwrap_or_else(|e| {
            panic!(
                "{program} {args:?} printed no JSON ({e}): {text}\n{}",
                String::from_utf8_lossy(&out.stderr)
            )
        })
    }
}

impl Drop for SaltLab {
    fn drop(&mut self) {
        let minions = std::mem::take(&mut *self.minions.lock().unwrap_or_else(|e| e.into_inner()));
        minions.into_values().for_each(kill_group);
        // Minions other programs started here (the stand-in salt-cloud).
        for pid in self.detached_minions() {
            // SAFETY: signals a process group whose leader runs from this lab.
            unsafe {
                libc::killpg(pid, libc::SIGKILL);
            }
            wait_group_gone(pid);
        }
        let master = self.master.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(m) = master {
            kill_group(m);
        }
        if std::env::var_os(KEEP_ENV).is_some() {
            let root = std::mem::replace(&mut self.root, tempfile::tempdir().expect("a temp dir"));
            eprintln!(
                "salt_lab: kept {} ({KEEP_ENV} is set)",
                root.keep().display()
            );
        }
    }
}

/// Pids of the live processes whose command line mentions `root` (a lab's
/// processes: each is started with a config under the lab's root).
pub fn processes_under(root: &Path) -> Vec<u32> {
    let root = root.display().to_string();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return vec![];
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_string_lossy().parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| String::from_utf8_lossy(&c).contains(&root))
        })
        .collect()
}

/// Kills a child's process group (the program and everything it forked),
/// reaps it, and waits until the rest of the group is gone.
fn kill_group(mut child: Child) {
    if let Ok(pgid) = i32::try_from(child.id()) {
        // SAFETY: signals the process group this lab created for the child.
        unsafe {
            libc::killpg(pgid, libc::SIGKILL);
        }
        let _ = child.kill();
        let _ = child.wait();
        wait_group_gone(pgid);
    } else {
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// Waits (at most 10 s) until no live process is left in process group
/// `pgid`. SIGKILL is delivered asynchronously: reaping the group's leader
/// says nothing of its other members (the master's workers, a minion's
/// children), which on a loaded machine may still be running, their command
/// lines still readable, for a while after the signal. Zombies do not count:
/// they have no command line and their new parent reaps them.
fn wait_group_gone(pgid: i32) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while group_has_live_members(pgid) && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

/// Whether a process that is not a zombie is in process group `pgid`.
fn group_has_live_members(pgid: i32) -> bool {
    !group_members(pgid).is_empty()
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

fn write_yaml(path: &Path, value: &Value) {
    std::fs::create_dir_all(path.parent().expect("a parent")).expect("config dir");
    std::fs::write(path, serde_yaml::to_string(value).expect("yaml")).expect("config file");
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A master whose ret port another process took exits at start; the lab
    /// starts it again on other ports instead of failing the test.
    #[tokio::test]
    async fn a_master_finding_its_port_taken_starts_on_other_ports() {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = taken.local_addr().unwrap().port();
        let [publish] = free_ports();
        let lab = SaltLab::start_from(&SaltLab::fixture_file_roots(), [port, publish]).await;
        assert_ne!(lab.ret_port, port);
        assert!(lab.master_exited().is_none(), "the master runs");
        let pgid = lab.master.lock().unwrap().as_ref().unwrap().id() as i32;
        assert!(group_listens_on(pgid, lab.ret_port));
        assert!(!group_listens_on(pgid, port), "the port stays the other's");
        drop(taken);
    }
}
