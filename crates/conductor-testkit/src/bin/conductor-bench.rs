//! Plan latency and inventory calls against the EC2 replay endpoint, side by
//! side with a boto3 pager and a raw page fetch; prints a Markdown table.
//!
//! Usage: `conductor-bench <conductor-binary> <pillar-dir> [counts...]`
//! (counts default to 1000 10000 50000). Needs python3 with boto3.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use conductor_testkit::ec2_replay::{Ec2Replay, ReplayInstance};

const RUNS: usize = 5;

/// Runs `cmd`, returning wall time and the child's peak RSS (KiB).
// The child is reaped by wait4 (for its rusage), which clippy cannot see.
#[allow(clippy::zombie_processes)]
fn timed(cmd: &mut Command) -> (Duration, i64) {
    let start = Instant::now();
    let child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    let pid = child.id() as i32;
    let mut status = 0;
    // SAFETY: an all-zero rusage is valid; wait4 fills it for our own child.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: waits for the child we spawned.
    unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    let took = start.elapsed();
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "{cmd:?} failed"
    );
    (took, usage.ru_maxrss)
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// Fetches every page with plain HTTP, no XML parsing: the transfer floor.
fn raw_pages(port: u16) -> usize {
    let mut token: Option<String> = None;
    let mut pages = 0;
    loop {
        let body = match &token {
            Some(t) => {
                format!("Action=DescribeInstances&Version=2016-11-15&MaxResults=1000&NextToken={t}")
            }
            None => "Action=DescribeInstances&Version=2016-11-15&MaxResults=1000".to_string(),
        };
        let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        write!(s, "POST / HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len()).unwrap();
        let mut resp = String::new();
        // The endpoint keeps connections open: read until the body is complete.
        let mut buf = [0u8; 65536];
        loop {
            let n = s.read(&mut buf).unwrap();
            resp.push_str(&String::from_utf8_lossy(&buf[..n]));
            if n == 0 || resp.ends_with("</DescribeInstancesResponse>") {
                break;
            }
        }
        pages += 1;
        token = resp
            .split("<nextToken>")
            .nth(1)
            .and_then(|t| t.split("</nextToken>").next())
            .map(str::to_string);
        if token.is_none() {
            return pages;
        }
    }
}

const BOTO3: &str = "import boto3,sys\nc=boto3.client('ec2',endpoint_url=sys.argv[1],region_name='us-east-1',aws_access_key_id='x',aws_secret_access_key='x')\nn=0\nfor p in c.get_paginator('describe_instances').paginate(PaginationConfig={'PageSize':1000}):\n    for r in p['Reservations']: n+=len(r['Instances'])\nprint(n)\n";

fn plan_command(conductor: &str, pillar: &str, endpoint: &str, json: bool) -> Command {
    let mut c = Command::new(conductor);
    c.args([
        "group",
        "plan",
        "group=devops",
        "system=small_test",
        "pillarenv=test",
        "region=us-east-1a",
    ])
    .arg("--pillar-dir")
    .arg(pillar)
    .args(["--endpoint-url", endpoint])
    .env("AWS_ACCESS_KEY_ID", "x")
    .env("AWS_SECRET_ACCESS_KEY", "x")
    .env("AWS_REGION", "us-east-1")
    .env(
        "CONDUCTOR_RUNNER_DIR",
        std::env::temp_dir().join("conductor-bench"),
    );
    if json {
        c.arg("--json");
    }
    c
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (conductor, pillar, counts) = match args.as_slice() {
        [c, p, rest @ ..] => (c.clone(), p.clone(), rest.to_vec()),
        _ => {
            eprintln!("usage: conductor-bench <conductor-binary> <pillar-dir> [counts...]");
            std::process::exit(2);
        }
    };
    let counts: Vec<usize> = if counts.is_empty() {
        vec![1000, 10_000, 50_000]
    } else {
        counts.iter().map(|c| c.parse().expect("a count")).collect()
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    println!("| instances | conductor plan (wall) | of which the emulator | conductor's own | DescribeInstances per plan | plan peak RSS | boto3 pager, all pages (wall) | boto3 peak RSS | raw pages (wall) | plan / boto3 | plan / raw |");
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    for n in counts {
        let mut instances = ReplayInstance::generate(n);
        for (i, name) in ["devops-mq01", "devops-mq02"].iter().enumerate() {
            let mut x = instances[i].clone();
            x.id = format!("i-mq{i:015}");
            x.tags = [(
                "Name".to_string(),
                format!("{name}.us-east-1a.test.foobar.com"),
            )]
            .into();
            instances.push(x);
        }
        let replay = rt.block_on(Ec2Replay::start(instances, 1000, Duration::ZERO));
        let endpoint = replay.endpoint();
        let port: u16 = endpoint
            .rsplit(':')
            .next()
            .expect("port")
            .parse()
            .expect("port");
        let (plan_times, plan_rss): (Vec<Duration>, Vec<i64>) = (0..RUNS)
            .map(|_| timed(&mut plan_command(&conductor, &pillar, &endpoint, true)))
            .unzip();
        let (before, busy_before) = (replay.calls(), replay.busy());
        let (one, _) = timed(&mut plan_command(&conductor, &pillar, &endpoint, false));
        let (calls, server) = (replay.calls() - before, replay.busy() - busy_before);
        let own = one.saturating_sub(server);
        let (boto_times, boto_rss): (Vec<Duration>, Vec<i64>) = (0..RUNS)
            .map(|_| timed(Command::new("python3").args(["-c", BOTO3, &endpoint])))
            .unzip();
        let raw: Vec<Duration> = (0..RUNS)
            .map(|_| {
                let t = Instant::now();
                raw_pages(port);
                t.elapsed()
            })
            .collect();
        let (p, b, r) = (median(plan_times), median(boto_times), median(raw));
        println!(
            "| {n} | {:.0} ms | {:.0} ms | {:.0} ms | {calls} | {} MB | {:.0} ms | {} MB | {:.0} ms | {:.2} | {:.2} |",
            p.as_secs_f64() * 1e3,
            server.as_secs_f64() * 1e3,
            own.as_secs_f64() * 1e3,
            plan_rss.iter().max().expect("runs") / 1024,
            b.as_secs_f64() * 1e3,
            boto_rss.iter().max().expect("runs") / 1024,
            r.as_secs_f64() * 1e3,
            p.as_secs_f64() / b.as_secs_f64(),
            p.as_secs_f64() / r.as_secs_f64(),
        );
        drop(replay);
    }
}
