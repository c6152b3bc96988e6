//! Process timing, statistics and the `conductor` command lines the sections share.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use conductor_testkit::bin_lab::BinLab;
pub use conductor_testkit::reserve_figures::{ms, percentile};

/// Wall time, exit status and resource use of one child process.
pub struct Finished {
    /// From spawn (or the batch's start) to exit; for a wrapped child, the
    /// child's own.
    pub wall: Duration,
    /// Whether it exited with 0.
    pub ok: bool,
    /// Peak resident set, KiB (wrapped children only: see [`spawn_wrapped`]).
    pub max_rss_kb: Option<i64>,
    /// User plus system CPU time.
    pub cpu: Duration,
    /// What it printed on stdout.
    pub stdout: String,
}

/// The first argument that makes the bench the wrapper of [`spawn_wrapped`].
pub const WRAP: &str = "__rusage";

/// Spawns `cmd` with stdout piped (and read to the end) and stderr dropped.
pub fn spawn(cmd: &mut Command) -> Child {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"))
}

/// Spawns `cmd` under this bench run as a small wrapper, which reports the
/// child's own peak RSS. A child spawned by the bench directly starts out
/// sharing the bench's memory (vfork), and the kernel counts that resident
/// set as the child's peak: with 50,000 instances held by the endpoint in
/// the bench, every child's peak would read as the bench's.
pub fn spawn_wrapped(cmd: &Command) -> Child {
    let mut w = Command::new(std::env::current_exe().expect("the bench's own path"));
    w.arg(WRAP).arg(cmd.get_program()).args(cmd.get_args());
    for (k, v) in cmd.get_envs() {
        match v {
            Some(v) => w.env(k, v),
            None => w.env_remove(k),
        };
    }
    if let Some(d) = cmd.get_current_dir() {
        w.current_dir(d);
    }
    w.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start the wrapper of {cmd:?}: {e}"))
}

/// `wait4` for `pid`: exit status and the rusage of it and its reaped children.
fn wait4(pid: u32) -> (i32, libc::rusage) {
    let mut status = 0;
    // SAFETY: an all-zero rusage is valid; wait4 fills it for our own child.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: waits for a child we spawned and have not reaped.
    unsafe { libc::wait4(pid as i32, &mut status, 0, &mut usage) };
    (status, usage)
}

fn cpu(usage: &libc::rusage) -> Duration {
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

/// The wrapper: runs `args` (program first) with the bench's stdin and
/// stdout, stderr dropped, and prints `rusage <exit code> <wall µs> <peak
/// RSS KiB> <CPU µs>` of it on stderr.
pub fn wrapper_main(args: &[String]) -> ! {
    let [program, rest @ ..] = args else {
        std::process::exit(2)
    };
    let start = Instant::now();
    let child = Command::new(program)
        .args(rest)
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {program}: {e}"));
    let (status, usage) = wait4(child.id());
    let code = if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else {
        128
    };
    eprintln!(
        "rusage {code} {} {} {}",
        start.elapsed().as_micros(),
        usage.ru_maxrss,
        cpu(&usage).as_micros()
    );
    std::process::exit(code)
}

/// Waits for `child` (reaped by wait4, for its rusage), timing from `start`;
/// takes a wrapper's report when there is one.
// The child is reaped by wait4, which clippy cannot see.
#[allow(clippy::zombie_processes)]
pub fn finish(mut child: Child, start: Instant) -> Finished {
    use std::io::Read;
    let mut stdout = String::new();
    if let Some(mut out) = child.stdout.take() {
        let _ = out.read_to_string(&mut stdout);
    }
    let mut stderr = String::new();
    if let Some(mut err) = child.stderr.take() {
        let _ = err.read_to_string(&mut stderr);
    }
    let (status, usage) = wait4(child.id());
    let mut f = Finished {
        wall: start.elapsed(),
        ok: libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        max_rss_kb: None,
        cpu: cpu(&usage),
        stdout,
    };
    let report: Option<Vec<u64>> = stderr
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix("rusage "))
        .map(|r| {
            r.split_whitespace()
                .filter_map(|n| n.parse().ok())
                .collect()
        });
    if let Some([code, wall_us, rss, cpu_us]) = report.as_deref() {
        f.ok = *code == 0;
        f.wall = Duration::from_micros(*wall_us);
        f.max_rss_kb = Some(*rss as i64);
        f.cpu = Duration::from_micros(*cpu_us);
    }
    f
}

/// Runs `cmd` to the end; panics when it fails.
pub fn run(cmd: &mut Command) -> Finished {
    let f = finish(spawn(cmd), Instant::now());
    assert!(f.ok, "{cmd:?} failed");
    f
}

/// Runs `cmd` to the end under the wrapper (for its peak RSS); panics when it fails.
pub fn run_wrapped(cmd: &Command) -> Finished {
    let f = finish(spawn_wrapped(cmd), Instant::now());
    assert!(f.ok, "{cmd:?} failed");
    f
}

/// The median of `v` (upper one of an even count).
pub fn median(v: &[Duration]) -> Duration {
    percentile(v, 50.0)
}

/// `a / b` with two decimals (three below 0.1).
pub fn ratio(a: Duration, b: Duration) -> String {
    let r = a.as_secs_f64() / b.as_secs_f64();
    if r < 0.1 {
        format!("{r:.3}")
    } else {
        format!("{r:.2}")
    }
}

/// The 1-minute load average now (`/proc/loadavg`), as text.
pub fn load() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().map(str::to_string))
        .unwrap_or_else(|| "?".into())
}

/// The `conductor` binary and the pillar it reads.
#[derive(Clone, Debug)]
pub struct Conductor {
    /// Path of the binary.
    pub bin: PathBuf,
    /// `--pillar-dir`.
    pub pillar: PathBuf,
}

impl Conductor {
    /// The binary against `endpoint`, with files under `root` (`etc/`,
    /// `runner/`), throwaway credentials and region us-east-1.
    pub fn lab(&self, endpoint: &str, root: &Path) -> BinLab {
        BinLab::new(&self.bin, &self.pillar, root, Some(endpoint.to_string()))
    }

    /// `conductor <args>` against `endpoint`, with files under `root`.
    pub fn command(&self, args: &[&str], endpoint: &str, root: &Path) -> Command {
        self.lab(endpoint, root).command(args)
    }

    /// `group create group=devops pillarenv=test region=us-east-1a <words>`
    /// with the native provisioner, no Salt and no release grace, `--json`.
    pub fn create(&self, words: &[&str], endpoint: &str, root: &Path) -> Command {
        self.lab(endpoint, root).create(words)
    }
}

/// A copy of the pillar of `test` under `dir`, without the example's
/// placeholder subnet (moto checks subnets) and with `extra` more roles in
/// group devops, `bench00` to `bench<extra-1>` (two instances each, named
/// `devops-benchNN-XX...`); returns the pillar root.
pub fn pillar_copy(pillar: &Path, dir: &Path, extra: usize) -> PathBuf {
    let from = if pillar.join("test").is_dir() {
        pillar.join("test")
    } else {
        pillar.to_path_buf()
    };
    let to = dir.join("pillar/test");
    std::fs::create_dir_all(&to).expect("pillar copy dir");
    let roles: String = (0..extra)
        .map(|k| {
            format!(
                "        bench{k:02}: {{basename: devops-bench{k:02}-XX.REGION.ENV, nodes: 2}}\n"
            )
        })
        .collect();
    let mut added = extra == 0;
    for e in std::fs::read_dir(&from).expect("pillar dir").flatten() {
        if e.path().is_file() {
            let mut text = std::fs::read_to_string(e.path())
                .expect("pillar file")
                .replace(", subnet_id: subnet-1", "");
            if !added && text.contains("\n      roles:\n") {
                text = text.replacen("\n      roles:\n", &format!("\n      roles:\n{roles}"), 1);
                added = true;
            }
            std::fs::write(to.join(e.file_name()), text).expect("pillar copy");
        }
    }
    assert!(added, "no `roles:` of a group found in {}", from.display());
    dir.join("pillar")
}

/// Names that occur more than once in `names`: the extra occurrences.
pub fn duplicates<'a>(names: impl IntoIterator<Item = &'a str>) -> usize {
    let mut seen = std::collections::HashMap::<&str, usize>::new();
    for n in names {
        *seen.entry(n).or_default() += 1;
    }
    seen.values().map(|c| c - 1).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_and_duplicates() {
        let v: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(median(&v), Duration::from_millis(50));
        assert_eq!(percentile(&v, 99.0), Duration::from_millis(99));
        assert_eq!(percentile(&v[..1], 99.0), Duration::from_millis(1));
        assert_eq!(duplicates(["a", "b", "a", "a"]), 2);
    }
}
