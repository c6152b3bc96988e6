//! The built `conductor` binary: words, exit codes, messages, JSON plans.
//! These use the in-memory cloud; the moto tests live in `moto.rs`.

use conductor_testkit::bin_lab::group_args;

use crate::support::{stderr, Lab};

/// The flags of `create_args` but `--json`: native provisioner, no Salt,
/// no release grace, the report as text.
const TEXT_CREATE: [&str; 5] = ["--provisioner", "ec2", "--no-salt", "--release-grace", "0"];

/// A lab with the example pillar on the in-memory cloud, and its temp dir.
fn lab() -> (Lab, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    (Lab::example(dir.path()), dir)
}

#[test]
fn plan_json_has_the_design_schema() {
    let (r, _dir) = lab();
    let o = r.run(&group_args("plan", &["system=small_test", "--json"]), None);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    for k in [
        "cpid",
        "group",
        "env",
        "zone",
        "instances",
        "reservations",
        "files",
    ] {
        assert!(v.get(k).is_some(), "plan JSON lacks {k}: {v}");
    }
    let names: Vec<&str> = v["instances"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "devops-nifi-01.clid-1.us-east-1a.test.foobar.com",
            "devops-nifi-02.clid-1.us-east-1a.test.foobar.com",
            "devops-nifigr-01.clid-1.us-east-1a.test.foobar.com",
            "devops-nifi-dummy-01.clid-1.us-east-1a.test.foobar.com",
            "devops-mq01.us-east-1a.test.foobar.com",
            "devops-mq02.us-east-1a.test.foobar.com",
        ]
    );
    let nifi = &v["instances"][0];
    assert_eq!(nifi["cluster_id"], 1);
    assert_eq!(nifi["grains"]["devops.nifi.cluster.id"], 1);
    assert_eq!(nifi["grains"]["cloud.system.id"], 1);
    assert_eq!(v["reservations"]["ids"].as_array().unwrap().len(), 4);
    assert!(v["files"]["map"]
        .as_str()
        .unwrap()
        .ends_with("devops_us-east-1a_test.map"));
    assert!(r.files().is_empty(), "plan writes nothing: {:?}", r.files());

    // The human plan shows the same: names, the id grains, the keys.
    let o = r.run(&group_args("plan", &["system=small_test"]), None);
    let text = String::from_utf8_lossy(&o.stdout);
    for shown in [
        "devops-nifi-dummy-01.clid-1.us-east-1a.test.foobar.com",
        "cluster nifi: devops.nifi.cluster.id=1 cloud.nifi.cluster.id=1",
        "system small_test: devops.system.id=1 cloud.system.id=1",
        "reservations: 6 names, 4 ids (test_devops.system.id.1, test_cloud.system.id.1, test_devops.nifi.cluster.id.1, test_cloud.nifi.cluster.id.1)",
        "devops_us-east-1a_test.map",
    ] {
        assert!(text.contains(shown), "no {shown:?} in:\n{text}");
    }
}

#[test]
fn count_overrides_nodes() {
    let (r, _dir) = lab();
    let words = ["--dry-run", "role=activemq", "count=4", "--json"];
    let o = r.run(&group_args("create", &words), None);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["instances"].as_array().unwrap().len(), 4);
    assert_eq!(
        v["instances"][3]["name"],
        "devops-mq04.us-east-1a.test.foobar.com"
    );
    assert!(r.files().is_empty());
}

#[test]
fn bad_words_exit_2_and_name_the_word() {
    let (r, _dir) = lab();
    let base = ["group", "plan"];
    let cases: &[(&[&str], &str)] = &[
        (
            &[
                "group=devops",
                "role=activemq",
                "pillarenv=test",
                "region=us-east-1a",
                "colour=blue",
            ],
            "colour=blue",
        ),
        (
            &["group=devops", "role=activemq", "region=us-east-1a"],
            "pillarenv",
        ),
        (
            &[
                "group=devops",
                "role=nope",
                "pillarenv=test",
                "region=us-east-1a",
            ],
            "nope",
        ),
        (
            &[
                "group=devops",
                "system=big",
                "pillarenv=test",
                "region=us-east-1a",
            ],
            "big",
        ),
        (
            &[
                "group=devops",
                "role=activemq",
                "pillarenv=test",
                "region=mars",
            ],
            "mars",
        ),
        (
            &[
                "group=devops",
                "role=activemq",
                "pillarenv=prod",
                "region=us-east-1a",
            ],
            "prod",
        ),
        (
            &[
                "group=../etc",
                "role=activemq",
                "pillarenv=test",
                "region=us-east-1a",
            ],
            "../etc",
        ),
        (
            &[
                "group=devops",
                "role=activemq",
                "count=0",
                "pillarenv=test",
                "region=us-east-1a",
            ],
            "count",
        ),
        (&["devops"], "key=value"),
    ];
    for (words, needle) in cases {
        let args: Vec<&str> = base.iter().chain(words.iter()).copied().collect();
        let o = r.run(&args, None);
        assert_eq!(o.status.code(), Some(2), "{words:?}: {}", stderr(&o));
        assert!(
            stderr(&o).contains(needle),
            "{words:?}: message should name {needle:?}: {}",
            stderr(&o)
        );
    }
    assert!(r.files().is_empty());
}

#[test]
fn create_with_the_native_provisioner_and_no_salt() {
    let (r, _dir) = lab();
    // As `create_args`, but the report as text.
    let words = [&["role=activemq"][..], &TEXT_CREATE].concat();
    let o = r.run(&group_args("create", &words), None);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains("devops-mq01.us-east-1a.test.foobar.com") && out.contains("launched"),
        "{out}"
    );
    assert!(out.contains("skipped: startup states"), "{out}");
    let names = r.runner_dir().join("reserved_names");
    assert_eq!(
        std::fs::read_dir(names).unwrap().count(),
        0,
        "reservations released"
    );
    let admin = r.runner_dir().join("logs/conductor/conductor.log");
    assert!(std::fs::read_to_string(admin).unwrap().contains("reserved"));
    // Files are listed once, where they stay (not the config dir's copies,
    // which the run removed).
    let config = r.config_dir().display().to_string();
    assert!(!out.contains(&config), "{out}");
    assert_eq!(out.matches("cloud.providers.d").count(), 1, "{out}");

    // runs list: a table with the start in local time, the group, the action (two
    // words), the result, the instances and the files.
    let o = r.run(&["runs", "list"], None);
    let list = String::from_utf8_lossy(&o.stdout);
    let row = list.lines().nth(1).unwrap_or_else(|| panic!("{list}"));
    let cols: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(cols.len(), 8, "{list}");
    assert_eq!(cols[3..7], ["group", "create", "ok", "2"], "{list}");
    assert!(
        cols[1].len() == 25 && &cols[1][10..11] == "T" && &cols[1][22..23] == ":",
        "local time with its offset: {list}"
    );
    assert_eq!(cols[2], "devops", "{list}");
}

#[test]
fn reservations_and_runs_commands() {
    let (r, _dir) = lab();
    let o = r.run(&["reservations", "list"], None);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains("no reservations"));
    // Two environments' keys (files of an unknown owner, as the Python
    // runner writes): --env lists one.
    let names = r.runner_dir().join("reserved_names");
    std::fs::create_dir_all(&names).unwrap();
    for key in ["test_web01.example.com", "prod_web01.example.com"] {
        std::fs::write(names.join(key), "held by the Python runner\n").unwrap();
    }
    let listed = |extra: &[&str]| -> Vec<String> {
        let mut args = vec!["reservations", "list", "--json"];
        args.extend(extra);
        let o = r.run(&args, None);
        assert!(o.status.success(), "{}", stderr(&o));
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        v.as_array()
            .unwrap()
            .iter()
            .map(|k| k["key"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(listed(&[]).len(), 2);
    assert_eq!(listed(&["--env", "test"]), ["test_web01.example.com"]);
    let o = r.run(&["reservations", "list", "--env", "Bad_Env"], None);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let o = r.run(
        &["reservations", "prune", "--older-than", "2h", "--json"],
        None,
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let o = r.run(&["runs", "show", "16833830331552303186"], None);
    assert_eq!(o.status.code(), Some(2));
    let o = r.run(&["reservations", "prune", "--older-than", "2 weeks"], None);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
}

/// `doctor --env` checks the environment's pillar on any cloud: the
/// pillar does not need EC2.
#[test]
fn doctor_checks_the_pillar_without_ec2() {
    let (mut r, _dir) = lab();
    let pillar_of = |r: &Lab| {
        let o = r.run(&["doctor", "--env", "test", "--no-salt", "--json"], None);
        let v: serde_json::Value =
            serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", stderr(&o)));
        let checks = v["checks"].as_array().unwrap();
        let ec2 = checks.iter().find(|c| c["check"] == "ec2").unwrap();
        assert_eq!(ec2["status"], "skipped", "{v}");
        let pillar = checks.iter().find(|c| c["check"] == "pillar");
        let pillar = pillar.unwrap_or_else(|| panic!("no pillar check: {v}"));
        (o.status.code(), pillar.clone())
    };
    let (code, pillar) = pillar_of(&r);
    assert_eq!(code, Some(0), "{pillar}");
    assert_eq!(pillar["status"], "ok", "{pillar}");
    assert!(pillar["detail"].as_str().unwrap().contains("env test"));

    r.write_pillar("conductor:\n  groups:\n    devops: {roles: 3}\n");
    let (code, pillar) = pillar_of(&r);
    assert_eq!(code, Some(2), "{pillar}");
    assert_eq!(pillar["status"], "fail", "{pillar}");
    assert!(
        pillar["detail"].as_str().unwrap().contains("roles"),
        "{pillar}"
    );
}

#[test]
fn help_teaches_with_examples() {
    let (r, _dir) = lab();
    let every: &[&[&str]] = &[
        &[],
        &["group"],
        &["group", "create"],
        &["group", "plan"],
        &["group", "destroy"],
        &["group", "update"],
        &["group", "status"],
        &["reservations"],
        &["reservations", "list"],
        &["reservations", "prune"],
        &["runs"],
        &["runs", "list"],
        &["runs", "show"],
        &["runs", "archive"],
        &["runs", "prune"],
        &["completions"],
        &["man"],
        &["doctor"],
        &["config"],
    ];
    for command in every {
        let args: Vec<&str> = command.iter().copied().chain(["--help"]).collect();
        let o = r.bare(&args);
        assert!(o.status.success());
        let s = String::from_utf8_lossy(&o.stdout);
        assert!(s.contains("Example"), "{args:?} help has no example:\n{s}");
    }
}

/// Progress an operator can follow: on a terminal one line per phase with
/// its counts, redrawn in place; through a pipe (Jenkins) plain lines, each
/// with its local time and no escape codes; nothing with `-q`.
#[test]
fn progress_is_drawn_on_a_terminal_and_timestamped_through_a_pipe() {
    let (r, _dir) = lab();
    let words = [&["role=activemq"][..], &TEXT_CREATE].concat();
    let on_terminal = |extra: &[&str]| {
        let args = group_args("create", &[&words[..], extra].concat());
        let mut c = r.command(&args, None);
        c.env("TERM", "xterm");
        let out = conductor_testkit::pty::on_terminal(&mut c, None).unwrap();
        let screen = out.shown();
        assert!(out.status.success(), "{screen}");
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("devops-mq02"),
            "the summary stays on stdout"
        );
        screen
    };
    let screen = on_terminal(&[]);
    for phase in [
        "creating for group devops in us-east-1a",
        "reserved 2 names (1 attempt)",
        "launching 2/2",
        "visible 2/2",
    ] {
        assert!(
            screen.contains(phase),
            "no {phase:?} on the terminal:\n{screen:?}"
        );
    }
    assert!(screen.contains("\x1b["), "redrawn in place:\n{screen:?}");
    assert_eq!(on_terminal(&["-q"]), "", "-q shows nothing");

    let o = r.run(&group_args("create", &words), None);
    assert!(o.status.success(), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(!err.contains('\x1b'), "{err:?}");
    let mut shown = err.lines().map(|l| {
        // `2026-12-02T15:04:05+01:00 launching 2/2`
        let (stamp, text) = l.split_once(' ').unwrap_or_else(|| panic!("{l:?}"));
        assert!(
            stamp.len() == 25 && &stamp[10..11] == "T" && &stamp[19..20] != ":",
            "{l:?} has no timestamp"
        );
        text
    });
    for phase in [
        "creating for group devops",
        "started",
        "reserved 2 names (1 attempt)",
        "launching 0/2",
        "launching 2/2",
        "visible 0/2",
        "visible 2/2",
    ] {
        assert!(
            shown.any(|text| text.contains(phase)),
            "{phase:?} missing or out of order:\n{err}"
        );
    }
}

/// Completion through the real bash: the script `conductor completions
/// bash` prints, sourced, asks the binary at each TAB; subcommands and
/// flags complete, and the `key=value` words from the keys the command
/// accepts and the pillar it would read (here CONDUCTOR_PILLAR_DIR).
#[test]
fn bash_completes_words_from_the_pillar() {
    let (r, dir) = lab();
    let script = dir.path().join("conductor.bash");
    let o = r.bare(&["completions", "bash"]);
    assert!(o.status.success(), "{}", stderr(&o));
    std::fs::write(&script, &o.stdout).unwrap();
    let bin_dir = std::path::Path::new(&r.bin).parent().unwrap().to_path_buf();
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    // `line` as typed before TAB; its last word (empty after a space) is completed.
    let complete = |line: &str| -> Vec<String> {
        let words = format!(
            "COMP_WORDS=({}{})",
            line,
            if line.ends_with(' ') { "''" } else { "" }
        );
        let program = format!(
            r#"source {script}
{words}
COMP_CWORD=$(( ${{#COMP_WORDS[@]}} - 1 ))
COMP_LINE="{line}"; COMP_POINT=${{#COMP_LINE}}; COMP_TYPE=9
_clap_complete_conductor conductor "${{COMP_WORDS[COMP_CWORD]}}" "${{COMP_WORDS[COMP_CWORD-1]}}"
printf '%s\n' "${{COMPREPLY[@]}}""#,
            script = script.display(),
        );
        let o = std::process::Command::new("bash")
            .args(["--norc", "-c", &program])
            .env("PATH", &path)
            .env("CONDUCTOR_CONFIG", "/dev/null")
            .env("CONDUCTOR_PILLAR_DIR", &r.pillar)
            .output()
            .unwrap();
        assert!(o.status.success(), "{line}: {}", stderr(&o));
        String::from_utf8_lossy(&o.stdout)
            .lines()
            .filter(|l| !l.is_empty())
            .map(str::to_string)
            .collect()
    };
    assert_eq!(complete("conductor gr"), ["group"]);
    assert!(
        complete("conductor group cr").contains(&"create".to_string()),
        "{:?}",
        complete("conductor group cr")
    );
    assert!(complete("conductor group create --prov").contains(&"--provisioner".to_string()));
    assert_eq!(
        complete("conductor group create group=devops p"),
        ["pillarenv="]
    );
    assert_eq!(complete("conductor group create g"), ["group="]);
    assert_eq!(complete("conductor group create group="), ["group=devops"]);
    assert_eq!(
        complete("conductor group create group=devops role="),
        ["role=activemq", "role=nifi"]
    );
    assert_eq!(
        complete("conductor group plan group=devops system="),
        ["system=small_test"]
    );
    assert_eq!(
        complete("conductor group status pillarenv="),
        ["pillarenv=test"]
    );
    assert_eq!(
        complete("conductor group create pillarenv=test region=us-w"),
        [
            "region=us-west-2a",
            "region=us-west-2b",
            "region=us-west-2c"
        ]
    );
    // destroy takes selection words create does not; count= has no list.
    assert!(complete("conductor group destroy cl").contains(&"cluster_id=".to_string()));
    assert!(complete("conductor group create count=").is_empty());
}

/// Exit 3, reservations exhausted: a run told to use a CPID that another
/// live process holds cannot claim it; the JSON says `exhausted`, and no
/// file of a run is written.
#[test]
fn a_cpid_another_process_holds_is_exit_3() {
    use conductor_core::{Cpid, FsReserver, Key, Layout, Owner, Reserver};
    let (r, _dir) = lab();
    let cpid = Cpid::parse("16833830331552303186").unwrap();
    let reserver = FsReserver::new(&Layout::new(r.config_dir(), r.runner_dir()));
    // This test process holds it, alive, for ten minutes.
    let owner = Owner::this_process(cpid, std::time::Duration::from_secs(600));
    let _held = conductor_testkit::harness::paused_runtime()
        .block_on(reserver.try_reserve(&[Key::cpid(cpid)], &owner))
        .unwrap();
    let word = format!("cpid={cpid}");
    let args = [&["role=activemq", &word, "--json"][..], &TEXT_CREATE].concat();
    let o = r.run(&group_args("create", &args), None);
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["class"], "exhausted", "{v}");
    assert_eq!(v["exit_code"], 3, "{v}");
    // Only the holder's reservation and the admin log's line of the failure.
    let written: Vec<_> = r
        .files()
        .into_iter()
        .filter(|f| {
            let f = f.to_string_lossy();
            !f.contains("reserved") && !f.ends_with("logs/conductor/conductor.log")
        })
        .collect();
    assert!(written.is_empty(), "{written:?}");
}

/// What automation reads: with `--json` every failure is one JSON document
/// on stdout (`result`, `error`, `class`, `exit_code`), the error is printed
/// once on stderr, and neither stderr through a pipe nor the admin log
/// carries colour codes; the admin log ends with the run's result.
#[test]
fn failures_are_one_json_document_and_nothing_is_coloured() {
    let failure = |o: &std::process::Output, code: i32, class: &str| {
        assert_eq!(o.status.code(), Some(code), "{}", stderr(o));
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap_or_else(|e| {
            panic!(
                "stdout is not one JSON document ({e}):\n{}",
                String::from_utf8_lossy(&o.stdout)
            )
        });
        assert_eq!(v["result"]["success"], false, "{v}");
        assert_eq!(v["class"], class, "{v}");
        assert_eq!(v["exit_code"], code, "{v}");
        let message = v["error"].as_str().unwrap().to_string();
        let err = stderr(o);
        assert_eq!(err.matches(&message).count(), 1, "printed once:\n{err}");
        assert!(!err.contains('\x1b'), "no colour through a pipe:\n{err}");
        message
    };
    let (r, _dir) = lab();
    let o = r.run(&group_args("plan", &["system=nope", "--json"]), None);
    assert!(failure(&o, 2, "bad_input").contains("nope"));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(v.get("cpid").is_none(), "bad input claims no run: {v}");
    let o = r.run(
        &group_args("plan", &["system=small_test", "--jsn", "--json"]),
        None,
    );
    assert!(failure(&o, 2, "bad_input").contains("--jsn"));
    // JSON asked for by the variable or the config file, as a parsed line
    // would have it; `CONDUCTOR_JSON=false` wins over the file.
    let bad_flag = group_args("plan", &["system=small_test", "--jsn"]);
    let mut by_env = r.clone();
    by_env.env.push(("CONDUCTOR_JSON".into(), "true".into()));
    assert!(failure(&by_env.run(&bad_flag, None), 2, "bad_input").contains("--jsn"));
    let config = r.dir.join("json.yaml");
    std::fs::write(&config, "json: true\n").unwrap();
    let with_config = [&bad_flag[..], &["--config", config.to_str().unwrap()]].concat();
    assert!(failure(&r.run(&with_config, None), 2, "bad_input").contains("--jsn"));
    // `1` is no boolean to clap (a parsed line rejects it), so it asks for
    // no JSON either.
    for value in ["false", "1"] {
        let mut off = r.clone();
        off.env.push(("CONDUCTOR_JSON".into(), value.into()));
        let o = off.run(&with_config, None);
        assert_eq!(o.status.code(), Some(2), "{value}: {}", stderr(&o));
        assert!(
            o.stdout.is_empty(),
            "{value}: {}",
            String::from_utf8_lossy(&o.stdout)
        );
    }
    // A pillar directory that is not there is bad input too.
    let nope = r.runner_dir().join("no-such-pillar");
    let o = r.bare(&[
        "group",
        "plan",
        "group=devops",
        "system=small_test",
        "pillarenv=test",
        "region=us-east-1a",
        "--cloud",
        "fake",
        "--pillar-dir",
        nope.to_str().unwrap(),
        "--json",
    ]);
    assert!(failure(&o, 2, "bad_input").contains("--pillar-dir"));
    // So is a --runner-dir that is a file: no reservation can be written.
    let file = r.dir.join("a-file");
    std::fs::write(&file, "").unwrap();
    let o = r.bare(&[
        "group",
        "create",
        "group=devops",
        "role=activemq",
        "pillarenv=test",
        "region=us-east-1a",
        "--cloud",
        "fake",
        "--no-salt",
        "--provisioner",
        "ec2",
        "--pillar-dir",
        r.pillar.to_str().unwrap(),
        "--runner-dir",
        file.to_str().unwrap(),
        "--json",
    ]);
    assert!(failure(&o, 2, "bad_input").contains("point --runner-dir at a writable directory"));

    // AWS that does not answer: exit 4, after the run's log lines (-v).
    let dir = tempfile::tempdir().unwrap();
    let down = Lab::new("http://127.0.0.1:9".into(), dir.path(), |p| p);
    let words = [
        "role=activemq",
        "--provisioner",
        "ec2",
        "--no-salt",
        "--json",
        "-v",
    ];
    let o = down.run(&group_args("create", &words), None);
    failure(&o, 4, "unreachable");
    // The run had claimed its CPID: the document and stderr name it.
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let cpid = v["cpid"].as_str().unwrap_or_else(|| panic!("no cpid: {v}"));
    assert!(conductor_core::Cpid::parse(cpid).is_ok(), "{v}");
    assert!(
        stderr(&o).contains(&format!("(run {cpid})")),
        "{}",
        stderr(&o)
    );
    let admin = down.runner_dir().join("logs/conductor/conductor.log");
    let log = std::fs::read_to_string(&admin).unwrap();
    assert!(!log.contains('\x1b'), "{log}");
    assert!(
        log.trim_end()
            .lines()
            .last()
            .is_some_and(|l| l.contains("conductor group create: unreachable (exit 4)")),
        "{log}"
    );
}

/// The config file: its keys are the options' defaults, an environment
/// variable wins over it and a flag over both (`conductor config` says
/// which gave each); a plan runs on the file's settings alone; an unknown
/// key or a bad value is exit 2 naming the file and the key.
#[test]
fn the_config_file_sets_defaults_under_the_environment_and_the_flags() {
    let (r, dir) = lab();
    let file = dir.path().join("conductor.yaml");
    let runner = dir.path().join("from-file");
    std::fs::write(
        &file,
        format!(
            "# settings of this master\nrunner_dir: {}\nrelease-grace: 10m\ncloud: fake\nno_salt: true\nno_grains: true\npillar_dir: {}\nprovisioner: ec2\n",
            runner.display(),
            r.pillar.display()
        ),
    )
    .unwrap();
    let config = |env: &[(&str, &str)], extra: &[&str]| {
        let mut c = std::process::Command::new(&r.bin);
        c.args(["config", "--json", "--config"])
            .arg(&file)
            .args(extra);
        c.env_remove("CONDUCTOR_RUNNER_DIR")
            .envs(env.iter().copied());
        let o = c.output().unwrap();
        assert!(o.status.success(), "{}", stderr(&o));
        let doc: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        let setting = |key: &str| {
            doc["settings"]
                .as_array()
                .unwrap()
                .iter()
                .find(|s| s["key"] == key)
                .unwrap_or_else(|| panic!("no {key} in {doc}"))
                .clone()
        };
        (setting("runner_dir"), setting("release_grace"))
    };
    let (runner_dir, grace) = config(&[], &[]);
    assert_eq!(runner_dir["value"][0], runner.display().to_string());
    assert!(
        runner_dir["source"].as_str().unwrap().starts_with("file "),
        "{runner_dir}"
    );
    assert_eq!(grace["value"][0], "10m");
    let (runner_dir, _) = config(&[("CONDUCTOR_RUNNER_DIR", "/from/env")], &[]);
    assert_eq!(runner_dir["value"][0], "/from/env");
    assert_eq!(runner_dir["source"], "env CONDUCTOR_RUNNER_DIR");
    let (runner_dir, _) = config(
        &[("CONDUCTOR_RUNNER_DIR", "/from/env")],
        &["--runner-dir", "/from/flag"],
    );
    assert_eq!(runner_dir["value"][0], "/from/flag");
    assert_eq!(runner_dir["source"], "flag");

    // A plan with no flag but the words: the file's cloud, pillar and switches.
    let o = std::process::Command::new(&r.bin)
        .args([
            "group",
            "plan",
            "group=devops",
            "role=activemq",
            "pillarenv=test",
        ])
        .args(["region=us-east-1a", "--json"])
        .env("CONDUCTOR_CONFIG", &file)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let plan: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(plan["instances"].as_array().unwrap().len(), 2, "{plan}");

    for (text, named) in [
        (
            "runner_dri: /srv\n",
            "unknown key `runner_dri` (did you mean `runner_dir`?)",
        ),
        ("reserver: dynamo\n", "`reserver: dynamo`"),
        ("[runner_dir]\n", "must be a mapping"),
    ] {
        std::fs::write(&file, text).unwrap();
        let o = r.bare(&["config", "--config", file.to_str().unwrap()]);
        assert_eq!(o.status.code(), Some(2), "{text}");
        let err = stderr(&o);
        assert!(
            err.contains(&file.display().to_string()) && err.contains(named),
            "{err}"
        );
    }
    // The commented example loads as it is.
    let example = crate::support::example_pillar().join("../conductor.yaml");
    let o = r.bare(&["config", "--config", example.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    // A named file that does not exist is refused too.
    let o = r.bare(&["config", "--config", "/nonexistent/conductor.yaml"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("/nonexistent/conductor.yaml"),
        "{}",
        stderr(&o)
    );
}

/// `runs list` says of each run what it was and how it ended, from the
/// record the binary writes at the end (`cloud_runs/<CPID>/run.json`).
#[test]
fn runs_list_shows_each_runs_action_result_and_instances() {
    let (r, _dir) = lab();
    let created = r.json(&conductor_testkit::bin_lab::create_args(&["role=activemq"]));
    let cpid = created["cpid"].as_str().unwrap();
    let runs = r.json(&["runs", "list", "--json"]);
    let run = runs
        .as_array()
        .unwrap()
        .iter()
        .find(|run| run["cpid"] == cpid)
        .unwrap_or_else(|| panic!("{cpid} in {runs}"));
    let record = &run["record"];
    assert_eq!(record["command"], "group create", "{run}");
    assert_eq!(record["group"], "devops");
    assert_eq!(record["env"], "test");
    assert_eq!(record["result"], "ok");
    assert_eq!(record["exit_code"], 0);
    assert_eq!(record["instances"], created["result"]["launched"], "{run}");
    let o = r.run(&["runs", "list"], None);
    let text = String::from_utf8_lossy(&o.stdout);
    let line = text.lines().find(|l| l.starts_with(cpid)).unwrap();
    for part in ["devops", "group create", "ok", " 2 "] {
        assert!(line.contains(part), "{part:?} in {line:?}");
    }
    // The start in the host's time zone, with its offset (a POSIX TZ rule,
    // UTC+5:30, needs no zone files); the CPID's second in UTC beside it.
    let mut local = r.clone();
    local.env.push(("TZ".into(), "XYZ-5:30".into()));
    let runs = local.json(&["runs", "list", "--json"]);
    let run = runs
        .as_array()
        .unwrap()
        .iter()
        .find(|run| run["cpid"] == cpid)
        .unwrap();
    let (utc, there) = (
        run["started_at"].as_str().unwrap(),
        run["started_local"].as_str().unwrap(),
    );
    assert!(there.ends_with("+05:30"), "{run}");
    let minutes = |iso: &str| -> i64 {
        let h: i64 = iso[11..13].parse().unwrap();
        let m: i64 = iso[14..16].parse().unwrap();
        h * 60 + m
    };
    assert_eq!(
        (minutes(there) - minutes(utc)).rem_euclid(24 * 60),
        330,
        "{utc} vs {there}"
    );
    assert_eq!(utc[17..19], there[17..19], "the same second");
    // The record is one of the run's files.
    let shown = r.json(&["runs", "show", cpid, "--json"]);
    assert!(shown.to_string().contains("run.json"), "{shown}");
}

/// `man --dir` writes a page for every command, and every page another
/// page names (SEE ALSO) exists.
#[test]
fn man_pages_exist_for_every_command_they_name() {
    let (r, dir) = lab();
    let out = dir.path().join("man1");
    let o = r.bare(&["man", "--dir", out.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let pages: std::collections::BTreeSet<String> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    for page in [
        "conductor.1",
        "conductor-group-create.1",
        "conductor-doctor.1",
        "conductor-config.1",
    ] {
        assert!(pages.contains(page), "{page} in {pages:?}");
    }
    let mut checked = 0;
    for page in &pages {
        let text = std::fs::read_to_string(out.join(page)).unwrap();
        for named in text.split("conductor\\-").skip(1) {
            let Some((rest, _)) = named.split_once("(1)") else {
                continue;
            };
            if rest.contains(char::is_whitespace) {
                continue;
            }
            let file = format!("conductor-{}.1", rest.replace("\\-", "-"));
            assert!(
                pages.contains(&file),
                "{page} names {file}, which was not written"
            );
            checked += 1;
        }
    }
    assert!(
        checked > 20,
        "the pages name each other ({checked} references)"
    );
}

/// `conductor group create … | tee log` when tee is gone (a Ctrl-C ended
/// it too): writing the text report fails with EPIPE, which loses the text
/// but neither the exit code nor the run's record and admin-log line.
#[test]
fn a_closed_stdout_loses_the_report_not_the_record() {
    use std::os::fd::{FromRawFd, OwnedFd};
    let dir = tempfile::tempdir().unwrap();
    let lab = Lab::fake(dir.path(), |p| p);
    let mut fds = [0; 2];
    // SAFETY: pipe writes two fresh fds into the array.
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
    // SAFETY: both fds were just opened and are owned here alone.
    let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    drop(read);
    let mut args = group_args("create", &["role=activemq"]);
    args.extend(["--provisioner", "ec2", "--no-salt", "--release-grace", "0"]);
    let o = lab
        .command(&args, None)
        .stdout(std::process::Stdio::from(write))
        .output()
        .unwrap();
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(0), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    let records: Vec<std::path::PathBuf> = std::fs::read_dir(lab.runner_dir().join("cloud_runs"))
        .unwrap()
        .map(|e| e.unwrap().path().join("run.json"))
        .filter(|p| p.exists())
        .collect();
    assert_eq!(records.len(), 1, "the run's record is written");
    let record: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&records[0]).unwrap()).unwrap();
    assert_eq!(record["exit_code"], 0, "{record}");
    let log =
        std::fs::read_to_string(lab.runner_dir().join("logs/conductor/conductor.log")).unwrap();
    assert!(log.contains("conductor group create: "), "{log}");
    assert!(log.contains("(exit 0)"), "{log}");
}

#[test]
fn runs_prune_keeps_the_files_it_cannot_read_and_names_them() {
    let (r, _dir) = lab();
    let cpid = conductor_core::Cpid::from_parts(7, 1_000).to_string();
    let providers = r.config_dir().join("cloud.providers.d");
    let profiles = r.config_dir().join("cloud.profiles.d");
    std::fs::create_dir_all(&providers).unwrap();
    // Not UTF-8 (not YAML either), and a directory: neither can be read
    // to tell whose it is, as root too (which reads whatever the mode).
    let binary = providers.join(format!("devops_{cpid}.conf"));
    std::fs::write(&binary, b"\xff\xfe devops_\x00:\n").unwrap();
    let dir = profiles.join(format!("devops_{cpid}.conf"));
    std::fs::create_dir_all(&dir).unwrap();
    let o = r.run(&["runs", "prune", "--older-than", "0s", "--json"], None);
    assert!(o.status.success(), "{}", stderr(&o));
    let err = stderr(&o);
    for (path, why) in [(&binary, "UTF-8"), (&dir, "directory")] {
        assert!(path.exists(), "{} is kept", path.display());
        let line = err
            .lines()
            .find(|l| l.contains(&format!("kept {}", path.display())))
            .unwrap_or_else(|| panic!("no warning names {}: {err}", path.display()));
        assert!(line.contains("WARN") && line.contains(why), "{line}");
    }
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["kept_unreadable"].as_array().unwrap().len(), 2, "{v}");
    // The admin log has them too.
    let log = std::fs::read_to_string(r.runner_dir().join("logs/conductor/conductor.log")).unwrap();
    assert!(log.contains(&format!("kept {}", binary.display())), "{log}");
}
