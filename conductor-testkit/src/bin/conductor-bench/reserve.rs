//! Reservation operations per second and their latency, for any `Reserver`
//! (here `FsReserver`; `DynamoReserver` on moto comes from conductor-aws's
//! `twenty_key_run_figures` test, whose line `scripts/bench` passes in).

use std::sync::Arc;
use std::time::{Duration, Instant};

use conductor_core::Cpid;
use conductor_core::{Key, KeyKind, Owner, Reserver};

use crate::util::{ms, percentile};

/// Keys per reservation: a run of the devops small_test system reserves
/// 6 names and 4 ids, twice that is a large system.
pub const KEYS: usize = 20;

/// Latencies of each operation and the sequential and concurrent rates.
pub struct Figures {
    reserve: Vec<Duration>,
    release: Vec<Duration>,
    list: Vec<Duration>,
    /// Reserve-and-release pairs per second, one client.
    sequential: f64,
    /// Reserve-and-release pairs per second over `clients` concurrent clients.
    concurrent: f64,
    clients: usize,
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

/// Measures `rounds` sequential pairs (and a listing after each), then
/// `rounds` pairs spread over `clients` concurrent tasks.
pub async fn measure<R: Reserver + 'static>(r: Arc<R>, rounds: usize, clients: usize) -> Figures {
    let (mut reserve, mut release, mut list) = (Vec::new(), Vec::new(), Vec::new());
    let start = Instant::now();
    for round in 0..rounds {
        let (a, b) = pair(&*r, "seq", round).await;
        reserve.push(a);
        release.push(b);
    }
    let sequential = rounds as f64 / start.elapsed().as_secs_f64();
    for _ in 0..rounds {
        let t = Instant::now();
        r.list().await.expect("list");
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

/// Header of the reservation table.
pub const HEADER: &str = "| reserver | reserve 20 keys p50 / p99 | release p50 / p99 | list p50 | reserve + release per second, one client | with concurrent clients |\n|---|---|---|---|---|---|\n";

impl Figures {
    /// The table row of these figures.
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

/// A row from the line conductor-aws's `twenty_key_run_figures` test prints:
/// `DynamoReserver(moto): 20-key reserve <d> + release <d> = <d> per run ...`
/// (means of 20 runs; percentiles are not in the line).
pub fn dynamo_row(line: &str) -> Option<String> {
    let after = |tag: &str| -> Option<Duration> {
        let rest = line.split(tag).nth(1)?.trim_start();
        parse_debug_duration(rest.split_whitespace().next()?)
    };
    let (reserve, release) = (after("reserve")?, after("+ release")?);
    Some(format!(
        "| `DynamoReserver` on moto (mean of 20 runs, from `cargo test -p conductor-aws --test it dynamo::twenty_key_run_figures`) | {} (mean) | {} (mean) | | {:.0} | |\n",
        ms(reserve),
        ms(release),
        1.0 / (reserve + release).as_secs_f64(),
    ))
}

/// Parses a `Duration` as `{:?}` prints it (`12.3ms`, `850µs`, `1.2s`).
fn parse_debug_duration(s: &str) -> Option<Duration> {
    let s = s.trim_end_matches([',', ';', ')']);
    let split = s.find(|c: char| !(c.is_ascii_digit() || c == '.'))?;
    let (n, unit) = s.split_at(split);
    let n: f64 = n.parse().ok()?;
    let secs = match unit {
        "s" => n,
        "ms" => n / 1e3,
        "µs" | "us" => n / 1e6,
        "ns" => n / 1e9,
        _ => return None,
    };
    Some(Duration::from_secs_f64(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_dynamo_test_line() {
        let row = dynamo_row("DynamoReserver(moto): 20-key reserve 30.5ms + release 19.5ms = 50ms per run (renewal 12ms); 3 DynamoDB calls").unwrap();
        assert!(row.contains("| 30.5 ms (mean) | 19.5 ms (mean) |"), "{row}");
        assert!(row.contains("| 20 |"), "{row}");
        assert_eq!(
            parse_debug_duration("850µs"),
            Some(Duration::from_micros(850))
        );
        assert_eq!(
            parse_debug_duration("1.5s"),
            Some(Duration::from_millis(1500))
        );
        assert!(dynamo_row("something else").is_none());
    }
}
