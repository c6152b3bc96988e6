//! How `SaltCli` runs programs: timeouts kill the whole process group and are
//! `Failed` (the program ran), output capture is bounded without blocking the
//! child, and a missing program is `Unreachable` naming the command. Small
//! shell scripts stand in for the programs here because what is tested is
//! process handling, not Salt.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

use conductor_core::{BackendErrorKind, SaltExecutor};
use conductor_salt::SaltCli;

fn script(dir: &Path, name: &str, body: &str) {
    let p = dir.join(name);
    std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
}

fn alive(pid: i32) -> bool {
    // A killed orphan may linger as a zombie until reaped: that is not alive.
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat
            .rsplit(')')
            .next()
            .is_some_and(|rest| rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

#[tokio::test]
async fn a_timeout_kills_the_program_and_its_workers() {
    let dir = tempfile::tempdir().unwrap();
    let pids = dir.path().join("pids");
    // Like salt-cloud -P: the program forks workers, then waits.
    script(
        dir.path(),
        "salt-cloud",
        &format!(
            "sleep 300 & echo $! > {0}\nsleep 300 & echo $! >> {0}\nwait",
            pids.display()
        ),
    );
    let cli = SaltCli::new()
        .bin_dir(dir.path())
        .timeout(Duration::from_millis(1500));
    // The workers sleep 300 s: only the timeout ends the command this early
    // (`timed_out` below).
    let e = cli
        .run("salt-cloud", &["-m".into(), "x.map".into()])
        .await
        .unwrap_err();
    // It ran and did not finish: Failed, not Unreachable (which would tell
    // core that salt-cloud never started and launched nothing).
    assert_eq!(e.kind, BackendErrorKind::Failed, "{e}");
    assert!(conductor_salt::salt_cli::timed_out(&e), "{e}");
    assert!(e.message.contains("salt-cloud -m x.map"), "{e}");
    assert!(e.message.contains("did not finish within"), "{e}");
    assert!(e.message.contains("may have done part of its work"), "{e}");
    let workers: Vec<i32> = std::fs::read_to_string(&pids)
        .unwrap()
        .lines()
        .map(|l| l.trim().parse().unwrap())
        .collect();
    assert_eq!(workers.len(), 2);
    // SIGKILL ends a process once the kernel schedules it: settle waits.
    cli.settle().await;
    for p in workers {
        assert!(!alive(p), "worker {p} survived the timeout");
    }
}

#[tokio::test]
async fn dropping_the_run_kills_the_process_group() {
    let dir = tempfile::tempdir().unwrap();
    let pids = dir.path().join("pids");
    script(
        dir.path(),
        "salt-run",
        &format!("sleep 300 & echo $! > {}\nwait", pids.display()),
    );
    let cli = SaltCli::new().bin_dir(dir.path());
    let mut run = Box::pin(cli.run("salt-run", &[]));
    // Give up on the run (as a cancelled Conductor future would) once the
    // worker exists.
    let deadline = Instant::now() + Duration::from_secs(60);
    let worker: i32 = loop {
        tokio::select! {
            out = &mut run => panic!("salt-run ended: {out:?}"),
            () = tokio::time::sleep(Duration::from_millis(20)) => {}
        }
        let text = std::fs::read_to_string(&pids).unwrap_or_default();
        if let Some(line) = text.strip_suffix('\n') {
            break line.parse().unwrap();
        }
        assert!(Instant::now() < deadline, "the worker never started");
    };
    drop(run);
    // The drop sent SIGKILL; settle returns once the group is gone.
    cli.settle().await;
    assert!(!alive(worker), "worker {worker} survived the drop");
}

#[tokio::test]
async fn output_beyond_the_limit_is_dropped_without_blocking_the_program() {
    let dir = tempfile::tempdir().unwrap();
    // 4 MiB on each stream: far past the pipe buffer and the 1000-byte limit.
    script(
        dir.path(),
        "salt-call",
        "head -c 4194304 /dev/zero | tr '\\0' a\nhead -c 4194304 /dev/zero | tr '\\0' b >&2\nexit 3",
    );
    let cli = SaltCli::new()
        .bin_dir(dir.path())
        .max_output(1000)
        .timeout(Duration::from_secs(30));
    let c = cli.run("salt-call", &[]).await.unwrap();
    assert_eq!(c.code, Some(3));
    assert_eq!(c.stdout.len(), 1000);
    assert_eq!(c.stderr.len(), 1000);
    assert!(c.truncated);
    assert!(c.stdout.iter().all(|&b| b == b'a'));

    // A JSON document cut by the limit is reported as such.
    script(
        dir.path(),
        "salt-run",
        "printf '{\"data\": {\"master\": \"%04000d\"}}' 0",
    );
    let e = SaltCli::new()
        .bin_dir(dir.path())
        .max_output(1000)
        .orchestrate(
            "orch.x",
            &conductor_core::Env::new("test").unwrap(),
            &conductor_core::Env::new("test").unwrap(),
        )
        .await
        .unwrap_err();
    use conductor_core::SaltExecutor;
    assert!(e.message.contains("raise the output limit"), "{e}");
}

#[tokio::test]
async fn a_missing_program_is_unreachable_and_named() {
    let dir = tempfile::tempdir().unwrap();
    let e = SaltCli::new()
        .bin_dir(dir.path())
        .config_dir("/etc/salt-test")
        .run("salt-cloud", &["-d".into(), "devops-mq01".into()])
        .await
        .unwrap_err();
    assert_eq!(e.kind, BackendErrorKind::Unreachable);
    assert!(
        e.message.contains(&format!(
            "{}/salt-cloud -c /etc/salt-test -d devops-mq01",
            dir.path().display()
        )),
        "{e}"
    );
    assert!(e.message.contains("--salt-bin-dir"), "{e}");
}
