//! Latency and throughput of any [`Reserver`]: reserving and releasing 20
//! fresh keys (a large system run's names and ids), sequentially and from
//! concurrent clients, and listing. `conductor-bench` measures `FsReserver`
//! with it and conductor-aws's `dynamo_reserver` bench measures
//! `DynamoReserver` on moto, so both rows of docs/performance.md are taken
//! the same way.
//!
//! ```
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! use std::sync::Arc;
//! use conductor_core::MemReserver;
//! use conductor_testkit::reserve_figures::{measure, HEADER};
//!
//! let figures = measure(Arc::new(MemReserver::new()), 10, 2).await;
//! let table = format!("{HEADER}{}", figures.row("`MemReserver`"));
//! assert_eq!(table.lines().count(), 3);
//! # });
//! ```

use std::sync::Arc;
use std::time::{Duration, Instant};

use conductor_core::{now_ms, Cpid, Env, Key, KeyKind, Owner, Reserver};

/// Keys per reservation: a run of the devops small_test system reserves
/// 6 names and 4 ids, twice that is a large system.
pub const KEYS: usize = 20;

/// Header of the reservation table in docs/performance.md.
pub const HEADER: &str = "| reserver | reserve 20 keys p50 / p99 | release p50 / p99 | list p50 | reserve + release per second, one client | with concurrent clients |\n|---|---|---|---|---|---|\n";

/// Latencies of each operation and the sequential and concurrent rates.
pub struct Figures {
    /// Latency of each sequential reserve of [`KEYS`] fresh keys.
    pub reserve: Vec<Duration>,
    /// Latency of each sequential release (grace 0).
    pub release: Vec<Duration>,
    /// Latency of each listing of the environment's held keys.
    pub list: Vec<Duration>,
    /// Reserve-and-release pairs per second, one client.
    pub sequential: f64,
    /// Reserve-and-release pairs per second over `clients` concurrent clients.
    pub concurrent: f64,
    /// Concurrent clients of the second phase.
    pub clients: usize,
}

fn keys(tag: &str, round: usize) -> Vec<Key> {
    (0..KEYS)
        .map(|k| {
            Key::new(
                KeyKind::Name,
                format!("bench_{tag}{round}-k{k:02}.us-east-1a.test.foobar.com"),
            )
            .expect("a valid key")
        })
        .collect()
}

/// One reserve and release of fresh keys; returns their latencies.
async fn pair<R: Reserver + ?Sized>(r: &R, tag: &str, round: usize) -> (Duration, Duration) {
    let owner = Owner::this_process(Cpid::generate(), Duration::from_secs(600));
    let t = Instant::now();
    let lease = r
        .try_reserve(&keys(tag, round), &owner)
        .await
        .expect("fresh keys are free");
    let reserve = t.elapsed();
    let t = Instant::now();
    r.release(&lease, Duration::ZERO).await.expect("release");
    (reserve, t.elapsed())
}

/// Measures `rounds` sequential pairs, `rounds` listings (the keys of the
/// pairs' environment others hold: a plan attempt's read), then `rounds`
/// pairs spread over `clients` concurrent tasks. Panics on a reserver error:
/// a benchmark of a failing reserver has no figures.
pub async fn measure<R: Reserver + ?Sized + 'static>(
    r: Arc<R>,
    rounds: usize,
    clients: usize,
) -> Figures {
    let (mut reserve, mut release, mut list) = (Vec::new(), Vec::new(), Vec::new());
    let start = Instant::now();
    for round in 0..rounds {
        let (a, b) = pair(&*r, "seq", round).await;
        reserve.push(a);
        release.push(b);
    }
    let sequential = rounds as f64 / start.elapsed().as_secs_f64();
    let env = Env::new("bench").expect("an env");
    for _ in 0..rounds {
        let t = Instant::now();
        r.held(now_ms(), Some(&env), None).await.expect("list");
        list.push(t.elapsed());
    }
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for c in 0..clients {
        let r = r.clone();
        tasks.spawn(async move {
            for round in (c..rounds).step_by(clients) {
                pair(&*r, &format!("par{c}x"), round).await;
            }
        });
    }
    while let Some(t) = tasks.join_next().await {
        t.expect("client task");
    }
    let concurrent = rounds as f64 / start.elapsed().as_secs_f64();
    Figures {
        reserve,
        release,
        list,
        sequential,
        concurrent,
        clients,
    }
}

impl Figures {
    /// The table row of these figures, under [`HEADER`].
    pub fn row(&self, label: &str) -> String {
        let pp =
            |v: &[Duration]| format!("{} / {}", ms(percentile(v, 50.0)), ms(percentile(v, 99.0)));
        format!(
            "| {label} | {} | {} | {} | {:.0} | {:.0} ({} clients) |\n",
            pp(&self.reserve),
            pp(&self.release),
            ms(percentile(&self.list, 50.0)),
            self.sequential,
            self.concurrent,
            self.clients,
        )
    }
}

/// The `p`-th percentile of `v` by nearest rank (`v` must not be empty).
pub fn percentile(v: &[Duration], p: f64) -> Duration {
    let mut v = v.to_vec();
    v.sort();
    let rank = ((p / 100.0 * v.len() as f64).ceil() as usize).clamp(1, v.len());
    v[rank - 1]
}

/// Milliseconds, rounded to what the figure needs.
pub fn ms(d: Duration) -> String {
    let m = d.as_secs_f64() * 1e3;
    if m >= 100.0 {
        format!("{m:.0} ms")
    } else if m >= 10.0 {
        format!("{m:.1} ms")
    } else {
        format!("{m:.2} ms")
    }
}

/// `50000` as `50,000`.
pub fn thousands(n: usize) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}
