//! Parallel scaling: N simultaneous `conductor group create` processes
//! sharing one runner directory (one `FsReserver`), all asking for the same
//! role so that they compete for the same names, on the replay endpoint with
//! a fixed latency per call and on moto.

use std::path::Path;
use std::time::{Duration, Instant};

use conductor_testkit::ec2_replay::Ec2Replay;
use conductor_testkit::moto::MotoServer;

use crate::util::{duplicates, finish, median, ms, ratio, run, spawn, Conductor, Finished};

/// Single runs whose median is the baseline, and batches of N > 1 runs
/// whose median (by wall) is reported: one batch is one sample, and a
/// 32-run batch on 2 cores moves by a third between samples.
const SAMPLES: usize = 3;

/// What the parallel runs create.
#[derive(Clone, Copy)]
pub enum Target {
    /// Every run `role=activemq count=2`: all compete for the same names.
    Same,
    /// Run k `role=benchK` (two instances): no name in common.
    Distinct,
}

impl Target {
    fn words(self, k: usize) -> Vec<String> {
        match self {
            Target::Same => vec!["role=activemq".into(), "count=2".into()],
            Target::Distinct => vec![format!("role=bench{k:02}")],
        }
    }
}

/// A cloud the runs share, with a fresh state per measurement.
pub enum Cloud {
    /// The replay endpoint with this latency per call.
    Replay(Duration),
    /// moto_server.
    Moto,
}

/// One cloud and a running instance of it.
enum Running {
    Replay(Ec2Replay),
    Moto(MotoServer),
}

impl Running {
    fn endpoint(&self) -> String {
        match self {
            Running::Replay(r) => r.endpoint(),
            Running::Moto(m) => m.endpoint(),
        }
    }

    /// Live instance names now (the endpoint's state, or `group status` on moto).
    fn names(&self, conductor: &Conductor, root: &Path) -> Vec<String> {
        match self {
            Running::Replay(r) => r
                .instances()
                .into_iter()
                .filter(|i| i.state != "terminated")
                .filter_map(|i| i.tags.get("Name").cloned())
                .collect(),
            Running::Moto(m) => {
                let f = run(&mut conductor.command(
                    &[
                        "group",
                        "status",
                        "group=devops",
                        "pillarenv=test",
                        "region=us-east-1a",
                        "--json",
                    ],
                    &m.endpoint(),
                    root,
                ));
                let rows: serde_json::Value = serde_json::from_str(&f.stdout).expect("status JSON");
                rows.as_array()
                    .expect("status rows")
                    .iter()
                    .filter_map(|r| r["name"].as_str().map(str::to_string))
                    .collect()
            }
        }
    }
}

/// What N parallel runs did.
struct Batch {
    /// First spawn to last exit.
    wall: Duration,
    /// The fastest and the slowest sample's wall (of the batches sampled).
    range: (Duration, Duration),
    /// Median wall time of one process in the batch.
    each: Duration,
    /// Wall time of the slowest process in the batch.
    slowest: Duration,
    /// Runs that exited 0, of `runs`.
    ok: usize,
    /// Runs made (N times the repeats).
    runs: usize,
    /// Mean CPU time of one process.
    cpu: Duration,
    /// Mean plan-and-reserve attempts per run.
    attempts: f64,
    /// Most attempts one run needed.
    most_attempts: f64,
    /// Live instances afterwards.
    instances: usize,
    /// Extra occurrences of a name.
    duplicates: usize,
}

fn batch(
    rt: &tokio::runtime::Runtime,
    conductor: &Conductor,
    cloud: &Cloud,
    target: Target,
    n: usize,
) -> Batch {
    let _guard = rt.enter();
    let running = match cloud {
        Cloud::Replay(latency) => {
            Running::Replay(rt.block_on(Ec2Replay::start_cloud(vec![], 1000, *latency)))
        }
        Cloud::Moto => Running::Moto(MotoServer::start()),
    };
    let root = tempfile::tempdir().expect("tempdir");
    let endpoint = running.endpoint();
    // Untimed: the first launch on a fresh moto loads its EC2 data.
    run(&mut conductor.create(&["role=nifi"], &endpoint, root.path()));
    let warm = running.names(conductor, root.path()).len();
    let repeat = if n == 1 { SAMPLES } else { 1 };
    let mut walls = Vec::new();
    let mut done: Vec<Finished> = Vec::new();
    for _ in 0..repeat {
        let start = Instant::now();
        let children: Vec<_> = (0..n)
            .map(|k| {
                let words = target.words(k);
                let words: Vec<&str> = words.iter().map(String::as_str).collect();
                spawn(&mut conductor.create(&words, &endpoint, root.path()))
            })
            .collect();
        // One waiter per child, so each run's wall ends when it exits
        // (waiting in spawn order would give every run the slowest's).
        let waiters: Vec<_> = children
            .into_iter()
            .map(|c| std::thread::spawn(move || finish(c, start)))
            .collect();
        done.extend(waiters.into_iter().map(|w| w.join().expect("waiter")));
        walls.push(start.elapsed());
    }
    let attempts: Vec<f64> = done
        .iter()
        .filter_map(|f| serde_json::from_str::<serde_json::Value>(&f.stdout).ok())
        .filter_map(|v| v["result"]["attempts"].as_f64())
        .collect();
    let names = running.names(conductor, root.path());
    Batch {
        wall: median(&walls),
        range: (
            walls.iter().copied().min().unwrap_or_default(),
            walls.iter().copied().max().unwrap_or_default(),
        ),
        each: median(&done.iter().map(|f| f.wall).collect::<Vec<_>>()),
        slowest: done.iter().map(|f| f.wall).max().unwrap_or_default(),
        ok: done.iter().filter(|f| f.ok).count(),
        runs: done.len(),
        cpu: done.iter().map(|f| f.cpu).sum::<Duration>() / done.len() as u32,
        attempts: attempts.iter().sum::<f64>() / attempts.len().max(1) as f64,
        most_attempts: attempts.iter().copied().fold(0.0, f64::max),
        instances: names.len() - warm,
        duplicates: duplicates(names.iter().map(String::as_str)),
    }
}

/// The scaling rows for `cloud` and `target`: one per process count, each
/// against a fresh cloud and runner directory.
pub fn table(
    rt: &tokio::runtime::Runtime,
    conductor: &Conductor,
    cloud: &Cloud,
    target: Target,
    label: &str,
    counts: &[usize],
) -> String {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as u32;
    let mut out = String::new();
    let mut one = None;
    for &n in counts {
        let b = if n == 1 {
            batch(rt, conductor, cloud, target, n)
        } else {
            median_batch((0..SAMPLES).map(|_| batch(rt, conductor, cloud, target, n)))
        };
        let base = *one.get_or_insert(b.wall);
        // No schedule of N runs on these cores ends before this.
        let bound = base.max(b.cpu * n as u32 / cores);
        out.push_str(&format!(
            "| {label} | {n} | {} ({}–{}) | {} | {} | {} | {} / {} | {} | {}/{} | {:.1} / {} | {} | {} |\n",
            ms(b.wall),
            ms(b.range.0),
            ms(b.range.1),
            ratio(b.wall, base),
            ms(bound),
            ratio(b.wall, bound),
            ms(b.each),
            ms(b.slowest),
            ms(b.cpu),
            b.ok,
            b.runs,
            b.attempts,
            b.most_attempts,
            b.instances,
            b.duplicates,
        ));
    }
    out
}

/// The batch of median wall among `batches` (each on a fresh cloud), with
/// the range of their walls, and the runs, successes, most attempts and
/// duplicates of all of them.
fn median_batch(batches: impl Iterator<Item = Batch>) -> Batch {
    let mut all: Vec<Batch> = batches.collect();
    all.sort_by_key(|b| b.wall);
    let range = (all[0].wall, all[all.len() - 1].wall);
    let (ok, runs, duplicates) = all.iter().fold((0, 0, 0), |(o, r, d), b| {
        (o + b.ok, r + b.runs, d + b.duplicates)
    });
    let most_attempts = all.iter().map(|b| b.most_attempts).fold(0.0, f64::max);
    let mid = all.swap_remove(all.len() / 2);
    Batch {
        range,
        ok,
        runs,
        duplicates,
        most_attempts,
        ..mid
    }
}

/// Header of the scaling table.
pub const HEADER: &str = "| cloud, target | parallel runs | wall, all runs: median (fastest–slowest sample) | / one run | CPU bound: max(one run, N × CPU per run / cores) | wall / CPU bound | one run in the batch: median / slowest | CPU per run | succeeded | attempts per run: mean / most | instances created | duplicate names |\n|---|---|---|---|---|---|---|---|---|---|---|---|\n";
