//! Signals outside a lifecycle run, and the second signal: a command that
//! only reads (plan, status, a destroy's or update's selection, adopt)
//! stops at the first signal while Salt reads its pillar, kills that Salt
//! command and exits 128 + the signal; a second signal while a Salt
//! command runs that the first does not stop (a destroy deleting the keys
//! of what it terminated) ends the process at once and kills that command.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use conductor_testkit::moto::MotoServer;

use crate::support::{stderr, Lab};

/// How long a test waits for what must happen at once (a stub started, a
/// process ended): only a hang runs into it.
const BOUND: Duration = Duration::from_secs(60);

/// A directory of Salt stubs: each of `programs` writes its pid to
/// `<dir>/<program>.pid` and sleeps two minutes. Returns the bin directory.
fn sleeping_salt(dir: &Path, programs: &[&str]) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    for name in programs {
        let pid = dir.join(format!("{name}.pid"));
        let text = format!(
            "#!/bin/sh\necho $$ > {tmp}\nmv {tmp} {pid}\nexec sleep 120\n",
            tmp = pid.with_extension("tmp").display(),
            pid = pid.display()
        );
        let path = bin.join(name);
        std::fs::write(&path, text).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    bin
}

/// Waits until `file` holds a pid (the stub started); the child's output
/// in the panic if it ends first or the file does not show within [`BOUND`].
fn pid_in(file: &Path, child: &mut Child) -> i32 {
    let deadline = Instant::now() + BOUND;
    loop {
        if let Some(pid) = std::fs::read_to_string(file)
            .ok()
            .and_then(|t| t.trim().parse().ok())
        {
            return pid;
        }
        if Instant::now() > deadline || child.try_wait().unwrap().is_some() {
            let _ = child.kill();
            let out = child.wait().unwrap();
            panic!(
                "the Salt stub did not start ({}); exit {out:?}",
                file.display()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Whether `pid` is a live process (a zombie is not).
fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            let (_, rest) = s.rsplit_once(") ")?;
            Some(!matches!(rest.split_whitespace().next()?, "Z" | "X"))
        })
        .unwrap_or(false)
}

/// Asserts that the stub `pid` ends (within [`BOUND`]: SIGKILL takes a
/// moment); kills it if not, so no stub outlives the test.
fn assert_gone(pid: i32, what: &str) {
    let deadline = Instant::now() + BOUND;
    while alive(pid) {
        if Instant::now() > deadline {
            // SAFETY: kills the stub this test started.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
            }
            panic!("{what}: the Salt command {pid} outlived conductor");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn signal(child: &Child, signo: i32) {
    // SAFETY: signals the child this test spawned (not yet reaped).
    let rc = unsafe { libc::kill(child.id() as i32, signo) };
    assert_eq!(rc, 0);
}

/// Waits for `child` to exit (its stdout and stderr piped), at most
/// [`BOUND`]: still running then, it is killed and the test fails.
fn exit_of(child: Child, what: &str) -> Output {
    let pid = child.id() as i32;
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(BOUND) {
        Ok(out) => out.unwrap(),
        Err(_) => {
            // SAFETY: kills the child this test spawned.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
            }
            let out = rx.recv().unwrap().unwrap();
            panic!(
                "{what}: still running {BOUND:?} after the signal (killed now): {}",
                stderr(&out)
            );
        }
    }
}

#[test]
fn a_signal_while_salt_reads_the_pillar_stops_every_reading_command() {
    let dir = tempfile::tempdir().unwrap();
    let bin = sleeping_salt(dir.path(), &["salt-run"]);
    let pid_file = dir.path().join("salt-run.pid");
    let base = |verb: &str| -> Vec<String> {
        let mut a: Vec<String> = ["group", verb, "group=devops", "pillarenv=test"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        a.push("region=us-east-1a".into());
        a
    };
    let mut plan = base("plan");
    plan.push("role=activemq".into());
    let status = base("status");
    let mut adopt = base("adopt");
    adopt.push("--apply".into());
    let mut destroy = base("destroy");
    destroy.extend([
        "names=devops-mq01.us-east-1a.test.foobar.com".into(),
        "--yes".into(),
    ]);
    let mut update = base("update");
    update.extend(["system_id=1".into(), "--dry-run".into()]);
    let cases = [
        (plan, libc::SIGINT, 130),
        (status, libc::SIGHUP, 129),
        (adopt, libc::SIGTERM, 143),
        (destroy, libc::SIGINT, 130),
        (update, libc::SIGTERM, 143),
    ];
    for (args, signo, code) in cases {
        let what = args[..2].join(" ");
        let _ = std::fs::remove_file(&pid_file);
        // No --pillar-dir: the pillar is the master's, read by salt-run.
        let mut child = Command::new(env!("CARGO_BIN_EXE_conductor"))
            .args(&args)
            .args(["--cloud", "fake", "--no-grains", "--salt-bin-dir"])
            .arg(&bin)
            .arg("--config-dir")
            .arg(dir.path().join("etc"))
            .arg("--runner-dir")
            .arg(dir.path().join("runner"))
            .env("CONDUCTOR_CONFIG", "/dev/null")
            .env_remove("CONDUCTOR_PILLAR_DIR")
            .env_remove("CONDUCTOR_PILLAR_SOURCE")
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stub = pid_in(&pid_file, &mut child);
        signal(&child, signo);
        let out = exit_of(child, &what);
        assert_eq!(out.status.code(), Some(code), "{what}: {}", stderr(&out));
        assert_gone(stub, &what);
    }
}

#[test]
fn a_second_signal_kills_the_salt_commands_still_running() {
    let moto = MotoServer::start();
    let dir = tempfile::tempdir().unwrap();
    let lab = Lab::new(moto.endpoint(), dir.path(), |p| p);
    let o = lab.create(&["role=activemq"], None);
    assert!(o.status.success(), "{}", stderr(&o));
    // A destroy deletes the keys of what it terminated even when
    // interrupted: the first signal leaves salt-key running.
    let bin = sleeping_salt(dir.path(), &["salt-key"]);
    let args = [
        "group",
        "destroy",
        "group=devops",
        "pillarenv=test",
        "region=us-east-1a",
        "names=devops-mq01.us-east-1a.test.foobar.com",
        "--provisioner",
        "ec2",
        "--yes",
        "--json",
        "--salt-bin-dir",
        bin.to_str().unwrap(),
    ];
    let mut child = lab
        .command(&args, None)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stub = pid_in(&dir.path().join("salt-key.pid"), &mut child);
    let mut err = BufReader::new(child.stderr.take().unwrap());
    signal(&child, libc::SIGINT);
    // The second only once the first was seen (signals may merge).
    let mut shown = String::new();
    while !shown.contains("interrupted: stopping") {
        let mut line = String::new();
        if err.read_line(&mut line).unwrap() == 0 {
            panic!("conductor ended before the second signal: {shown}");
        }
        shown.push_str(&line);
    }
    assert!(alive(stub), "the first signal leaves salt-key running");
    signal(&child, libc::SIGINT);
    let out = exit_of(child, "destroy");
    assert_eq!(out.status.code(), Some(130), "{shown}");
    assert_gone(stub, "a second signal");
}
