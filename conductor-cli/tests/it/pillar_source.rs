//! `--pillar-source`: the pillar compiled by the real master of the
//! testkit's `SaltLab` (`salt-run pillar.show_pillar`, the default), with no
//! minion anywhere, for a Jinja pillar in pillarenvs `test` and `prod`; a
//! render error in one env is exit 2 naming it; and the rules of
//! `--pillar-source` with `--pillar-dir`.

use std::path::Path;
use std::process::{Command, Output};

use conductor_testkit::fixtures;
use conductor_testkit::salt_lab::SaltLab;
use serde_json::Value;

use crate::support::{example_pillar, names, stderr};

/// `conductor group plan group=devops <words> region=us-east-1a` on the
/// in-memory cloud, files under `dir`, no grains read, then `more`; no
/// pillar flag or variable but those in `more`.
fn plan(dir: &Path, words: &[&str], more: &[&str]) -> Output {
    let (etc, runner) = (dir.join("etc"), dir.join("runner"));
    Command::new(env!("CARGO_BIN_EXE_conductor"))
        .args(["group", "plan", "group=devops", "region=us-east-1a"])
        .args(words)
        .args(["--cloud", "fake", "--no-grains", "--json"])
        .arg("--config-dir")
        .arg(etc)
        .arg("--runner-dir")
        .arg(runner)
        .args(more)
        .env_remove("CONDUCTOR_PILLAR_DIR")
        .env_remove("CONDUCTOR_PILLAR_SOURCE")
        .env_remove("RUST_LOG")
        .output()
        .unwrap()
}

/// The names a plan's JSON lists.
fn planned(o: &Output) -> Vec<String> {
    let v: Value = serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("no JSON ({e}): {}", stderr(o)));
    names(&v)
}

/// The error message of a failed `--json` run with exit code `code`.
fn error(o: &Output, code: i32) -> String {
    assert_eq!(o.status.code(), Some(code), "{}", stderr(o));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    v["error"].as_str().unwrap().to_string()
}

#[test]
fn plans_read_each_pillarenvs_pillar_as_the_master_compiles_it() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let lab = rt.block_on(SaltLab::start(&SaltLab::fixture_file_roots()));
    fixtures::write_jinja_pillar(&lab.pillar_dir());
    assert_eq!(lab.minions(), Vec::<String>::new(), "no minion runs");
    let dir = tempfile::tempdir().unwrap();
    let (bin, conf) = (lab.bin_dir(), lab.config_dir());
    let salt = [
        "--salt-bin-dir",
        bin.to_str().unwrap(),
        "--salt-config-dir",
        conf.to_str().unwrap(),
    ];
    let with = |source: Option<&'static str>| -> Vec<&str> {
        let mut more = salt.to_vec();
        if let Some(s) = source {
            more.extend(["--pillar-source", s]);
        }
        more
    };
    let why = |o: &Output| {
        format!(
            "{}\nthe master's log:\n{}",
            stderr(o),
            lab.log_tail("master.log")
        )
    };

    // The default is the master.
    let test = plan(dir.path(), &["pillarenv=test", "role=mq"], &with(None));
    assert_eq!(test.status.code(), Some(0), "{}", why(&test));
    assert_eq!(
        planned(&test),
        [
            "devops-mq01.us-east-1a.test.foobar.com",
            "devops-mq02.us-east-1a.test.foobar.com"
        ]
    );
    let prod = plan(
        dir.path(),
        &["pillarenv=prod", "role=mq"],
        &with(Some("master")),
    );
    assert_eq!(prod.status.code(), Some(0), "{}", why(&prod));
    assert_eq!(planned(&prod), ["devops-mq01.us-east-1a.prod.example.org"]);

    // A render error in prod (Salt exits 0): exit 2, naming the env and
    // Salt's cause.
    std::fs::write(
        lab.pillar_dir().join("conductor/prod.sls"),
        "conductor: {{ broken\n",
    )
    .unwrap();
    let broken = plan(
        dir.path(),
        &["pillarenv=prod", "role=mq"],
        &with(Some("master")),
    );
    let e = error(&broken, 2);
    assert!(
        e.contains("could not render pillar for pillarenv prod"),
        "{e}"
    );
    assert!(e.contains("Jinja syntax error"), "{e}");
    assert_eq!(lab.minions(), Vec::<String>::new(), "still no minion");
}

#[test]
fn pillar_source_and_pillar_dir_go_together_only_as_dir() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let pillar = example_pillar();
    let p = pillar.to_str().unwrap();
    let words = ["pillarenv=test", "role=activemq", "--no-salt"];

    // --pillar-dir alone, or with --pillar-source dir: the files.
    for more in [
        vec!["--pillar-dir", p],
        vec!["--pillar-source", "dir", "--pillar-dir", p],
    ] {
        let o = plan(d, &words, &more);
        assert_eq!(planned(&o).len(), 2, "{more:?}: {}", stderr(&o));
    }
    // dir without a directory: exit 2 naming the fix.
    let e = error(&plan(d, &words, &["--pillar-source", "dir"]), 2);
    assert!(
        e.contains("--pillar-source dir needs --pillar-dir DIR"),
        "{e}"
    );
    // A Salt source with a directory, also through the variables: exit 2
    // naming both.
    for source in ["master", "salt-call"] {
        let e = error(
            &plan(d, &words, &["--pillar-source", source, "--pillar-dir", p]),
            2,
        );
        assert!(e.contains(&format!("--pillar-source {source}")), "{e}");
        assert!(e.contains("--pillar-dir"), "{e}");
    }
    let mut c = Command::new(env!("CARGO_BIN_EXE_conductor"));
    c.args([
        "group",
        "plan",
        "group=devops",
        "pillarenv=test",
        "role=activemq",
    ])
    .args([
        "region=us-east-1a",
        "--cloud",
        "fake",
        "--no-salt",
        "--json",
    ])
    .arg("--runner-dir")
    .arg(d.join("runner"))
    .arg("--config-dir")
    .arg(d.join("etc"))
    .env("CONDUCTOR_PILLAR_SOURCE", "salt-call")
    .env("CONDUCTOR_PILLAR_DIR", &pillar);
    let e = error(&c.output().unwrap(), 2);
    assert!(e.contains("--pillar-source salt-call"), "{e}");
}
