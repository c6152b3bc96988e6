//! Plan latency and inventory reads against the EC2 replay endpoint at
//! 1,000 to 50,000 instances, beside a boto3 pager and a raw page fetch.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};

use conductor_testkit::bin_lab::group_args;
use conductor_testkit::ec2_replay::{Ec2Replay, ReplayInstance};
use conductor_testkit::reserve_figures::thousands;

use crate::util::{median, ms, ratio, run_wrapped, Conductor};

const RUNS: usize = 5;

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
        let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        write!(s, "POST / HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len()).expect("send");
        let mut resp = String::new();
        // The endpoint keeps connections open: read until the body is complete.
        let mut buf = [0u8; 65536];
        loop {
            let n = s.read(&mut buf).expect("read");
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

/// `n` generated instances plus the existing devops-mq01/02.
fn account(n: usize) -> Vec<ReplayInstance> {
    let mut instances = ReplayInstance::generate(n);
    for (i, name) in ["devops-mq01", "devops-mq02"].iter().enumerate() {
        instances.push(ReplayInstance {
            id: format!("i-mq{i:015}"),
            zone: "us-east-1a".into(),
            state: "running".into(),
            tags: [(
                "Name".to_string(),
                format!("{name}.us-east-1a.test.foobar.com"),
            )]
            .into(),
        });
    }
    instances
}

/// The plan-latency table for each account size in `counts`.
pub fn section(rt: &tokio::runtime::Runtime, conductor: &Conductor, counts: &[usize]) -> String {
    let root = tempfile::tempdir().expect("tempdir");
    let mut out = String::from("| instances | conductor plan (wall) | of which the emulator (mean) | conductor's own (wall − emulator) | DescribeInstances per plan | plan peak RSS | boto3 pager, all pages (wall) | boto3 peak RSS | raw pages (wall) | plan / boto3 | plan / raw |\n|---|---|---|---|---|---|---|---|---|---|---|\n");
    for &n in counts {
        let replay = rt.block_on(Ec2Replay::start(account(n), 1000, Duration::ZERO));
        let endpoint = replay.endpoint();
        let port: u16 = endpoint
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .expect("port");
        let args = group_args("plan", &["system=small_test", "--json"]);
        let (mut plans, mut own, mut calls) = (Vec::new(), Vec::new(), 0);
        for _ in 0..RUNS {
            let (before, busy_before) = (replay.calls(), replay.busy());
            let f = run_wrapped(&conductor.command(&args, &endpoint, root.path()));
            let server = replay.busy() - busy_before;
            calls = replay.calls() - before;
            own.push(f.wall.saturating_sub(server));
            plans.push(f);
        }
        let server = replay.busy() / RUNS as u32;
        let botos: Vec<_> = (0..RUNS)
            .map(|_| run_wrapped(Command::new("python3").args(["-c", BOTO3, &endpoint])))
            .collect();
        let raw: Vec<Duration> = (0..RUNS)
            .map(|_| {
                let t = Instant::now();
                raw_pages(port);
                t.elapsed()
            })
            .collect();
        let p = median(&plans.iter().map(|f| f.wall).collect::<Vec<_>>());
        let b = median(&botos.iter().map(|f| f.wall).collect::<Vec<_>>());
        let r = median(&raw);
        let peak = |v: &[crate::util::Finished]| {
            v.iter().filter_map(|f| f.max_rss_kb).max().unwrap_or(0) / 1024
        };
        out.push_str(&format!(
            "| {} | {} | {} | {} | {calls} | {} MB | {} | {} MB | {} | {} | {} |\n",
            thousands(n),
            ms(p),
            ms(server),
            ms(median(&own)),
            peak(&plans),
            ms(b),
            peak(&botos),
            ms(r),
            ratio(p, b),
            ratio(p, r),
        ));
        drop(replay);
    }
    out
}
