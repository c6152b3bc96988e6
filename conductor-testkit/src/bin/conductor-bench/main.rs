//! Conductor's benchmarks, side by side with the alternatives, each figure
//! taken in one run on one machine; prints Markdown tables and, with
//! `--write FILE`, puts each between the `<!-- bench:NAME -->` and
//! `<!-- /bench:NAME -->` markers of FILE (docs/performance.md).
//!
//! Usage: `conductor-bench <conductor-binary> <pillar-dir> [--only SECTION,...]
//! [--write FILE] [--dynamo-row FILE] [counts...]`
//!
//! Sections: `plan` (plan latency at `counts` instances, default 1000 10000
//! 50000, beside a boto3 pager and a raw page fetch), `parallel` (1, 8 and 32
//! simultaneous creates sharing one FsReserver, on the replay endpoint with
//! 100 ms per call and on moto), `startup` (`conductor --version` beside
//! `salt-run --version`), `reserve` (FsReserver operations; the
//! DynamoReserver row conductor-aws's `dynamo_reserver` bench printed,
//! read from `--dynamo-row FILE`),
//! `calls` (AWS calls of one create by instance count). Needs python3 with
//! boto3, moto_server, and the Salt virtualenv (installed on first use).

mod calls;
mod parallel;
mod plan;
mod reserve;
mod startup;
mod util;

use std::path::PathBuf;
use std::time::Duration;

use util::Conductor;

const SECTIONS: [&str; 5] = ["plan", "parallel", "startup", "reserve", "calls"];

struct Args {
    conductor: Conductor,
    only: Vec<String>,
    write: Option<PathBuf>,
    dynamo_row: Option<PathBuf>,
    counts: Vec<usize>,
}

fn usage() -> ! {
    eprintln!("usage: conductor-bench <conductor-binary> <pillar-dir> [--only SECTION,...] [--write FILE] [--dynamo-row FILE] [counts...]\nsections: {}", SECTIONS.join(", "));
    std::process::exit(2)
}

fn args() -> Args {
    let mut it = std::env::args().skip(1);
    let (Some(bin), Some(pillar)) = (it.next(), it.next()) else {
        usage()
    };
    let mut a = Args {
        conductor: Conductor {
            bin: PathBuf::from(bin),
            pillar: PathBuf::from(pillar),
        },
        only: SECTIONS.iter().map(|s| s.to_string()).collect(),
        write: None,
        dynamo_row: None,
        counts: vec![],
    };
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--only" => {
                a.only = it
                    .next()
                    .unwrap_or_else(|| usage())
                    .split(',')
                    .map(str::to_string)
                    .collect();
                if a.only.iter().any(|s| !SECTIONS.contains(&s.as_str())) {
                    usage()
                }
            }
            "--write" => a.write = Some(it.next().unwrap_or_else(|| usage()).into()),
            "--dynamo-row" => a.dynamo_row = Some(it.next().unwrap_or_else(|| usage()).into()),
            n => a.counts.push(n.parse().unwrap_or_else(|_| usage())),
        }
    }
    if a.counts.is_empty() {
        a.counts = vec![1000, 10_000, 50_000];
    }
    a
}

/// Replaces what lies between the markers of `name` in `doc` with `body`.
fn splice(doc: &str, name: &str, body: &str) -> Option<String> {
    let (open, close) = (
        format!("<!-- bench:{name} -->"),
        format!("<!-- /bench:{name} -->"),
    );
    let from = doc.find(&open)? + open.len();
    let to = from + doc[from..].find(&close)?;
    Some(format!("{}\n{}{}", &doc[..from], body, &doc[to..]))
}

fn main() {
    let raw: Vec<String> = std::env::args().skip(1).collect();
    if raw.first().map(String::as_str) == Some(util::WRAP) {
        util::wrapper_main(&raw[1..]);
    }
    let a = args();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let c = &a.conductor;
    let mut tables: Vec<(&str, String)> = Vec::new();
    let profile = if c.bin.components().any(|p| p.as_os_str() == "release") {
        "release"
    } else {
        "debug"
    };
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let when = std::process::Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M UTC"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    let load_before = util::load();
    let on = |s: &str| a.only.iter().any(|o| o == s);
    if on("plan") {
        eprintln!("bench: plan latency at {:?} instances", a.counts);
        tables.push(("plan", plan::section(&rt, c, &a.counts)));
    }
    if on("parallel") {
        eprintln!("bench: parallel creates");
        // moto checks subnets: both clouds get the pillar without the
        // placeholder one, and 32 more roles for runs with distinct targets.
        let dir = tempfile::tempdir().expect("tempdir");
        let c = Conductor {
            bin: c.bin.clone(),
            pillar: util::pillar_copy(&c.pillar, dir.path(), 32),
        };
        let mut t = String::from(parallel::HEADER);
        for (cloud, name) in [
            (
                parallel::Cloud::Replay(Duration::from_millis(100)),
                "replay, 100 ms per call",
            ),
            (parallel::Cloud::Moto, "moto"),
        ] {
            for (target, what) in [
                (parallel::Target::Same, "same role"),
                (parallel::Target::Distinct, "distinct roles"),
            ] {
                let label = format!("{name}, {what}");
                t.push_str(&parallel::table(
                    &rt,
                    &c,
                    &cloud,
                    target,
                    &label,
                    &[1, 8, 32],
                ));
            }
        }
        tables.push(("parallel", t));
    }
    if on("startup") {
        eprintln!("bench: start-up");
        tables.push(("startup", startup::section(&c.bin, 21)));
    }
    if on("reserve") {
        eprintln!("bench: reservations");
        let t = reserve::section(&rt, a.dynamo_row.as_deref());
        tables.push(("reserve", t));
        tables.push((
            "reserve-read",
            reserve::read_section(a.dynamo_row.as_deref()),
        ));
    }
    if on("calls") {
        eprintln!("bench: AWS calls per create");
        tables.push(("calls", calls::section(&rt, c, &[1, 4, 16, 64], 1000)));
    }
    tables.insert(
        0,
        (
            "meta",
            format!(
                "Measured by `scripts/bench` on {cores} cores with {profile} builds, {when}; 1-minute load average {load_before} at the start, {} at the end (other work on the machine slows every figure).\n",
                util::load()
            ),
        ),
    );
    for (name, body) in &tables {
        println!("<!-- {name} -->\n{body}");
    }
    if let Some(path) = &a.write {
        let mut doc = std::fs::read_to_string(path)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
        for (name, body) in &tables {
            doc = splice(&doc, name, body)
                .unwrap_or_else(|| panic!("{} has no bench:{name} markers", path.display()));
        }
        std::fs::write(path, doc)
            .unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
        eprintln!("bench: wrote {}", path.display());
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn splice_replaces_between_markers() {
        let doc = "a\n<!-- bench:x -->\nold\n<!-- /bench:x -->\nb\n";
        assert_eq!(
            super::splice(doc, "x", "new\n").unwrap(),
            "a\n<!-- bench:x -->\nnew\n<!-- /bench:x -->\nb\n"
        );
        assert!(super::splice(doc, "y", "").is_none());
    }
}
