//! Signals outside a lifecycle run, and the second signal: a command that
//! only reads (plan, status, a destroy's or update's selection, adopt)
//! stops at the first signal while Salt reads its pillar, kills that Salt
//! command and exits 128 + the signal; a second signal while a Salt
//! command runs that the first does not stop (a destroy deleting the keys
//! of what it terminated) ends the process at once and kills that command.
//! The housekeeping commands (`doctor`, `reservations list|prune`, `runs
//! list|prune|archive`) stop too, each held at a known point: a Salt stub,
//! an endpoint that never answers, the reservations' lock, a FIFO.

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

/// `child`'s stderr, line by line, as it comes (a thread reads it).
fn stderr_lines(child: &mut Child) -> mpsc::Receiver<String> {
    let err = BufReader::new(child.stderr.take().unwrap());
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in err.lines() {
            if tx.send(line.unwrap_or_default()).is_err() {
                break;
            }
        }
    });
    rx
}

/// Waits for a stderr line holding `text` (within [`BOUND`]); the lines
/// read so far. On a timeout `child` (by pid) is killed and the test fails.
fn line_with(lines: &mpsc::Receiver<String>, text: &str, pid: u32, what: &str) -> String {
    let deadline = Instant::now() + BOUND;
    let mut shown = String::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match lines.recv_timeout(left) {
            Ok(line) => {
                shown.push_str(&line);
                shown.push('\n');
                if line.contains(text) {
                    return shown;
                }
            }
            Err(_) => {
                // SAFETY: kills the child this test spawned.
                unsafe {
                    libc::kill(pid as i32, libc::SIGKILL);
                }
                panic!("{what}: no {text:?} on stderr: {shown}");
            }
        }
    }
}

/// Polls `ready` until it gives a value (within [`BOUND`]); fails, with
/// the child's exit, if the child ends first.
fn until<T>(child: &mut Child, what: &str, mut ready: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + BOUND;
    loop {
        if let Some(v) = ready() {
            return v;
        }
        if Instant::now() > deadline || child.try_wait().unwrap().is_some() {
            let _ = child.kill();
            let status = child.wait().unwrap();
            panic!("{what}: never got there; exit {status:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `conductor <args>` in a lab under `dir` (the in-memory cloud), its
/// output piped, spawned.
fn spawn(lab: &Lab, args: &[&str]) -> Child {
    lab.command(args, None)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// A run's file under the lab's runner dir, for a CPID of 1970 (old).
fn an_old_run(lab: &Lab) -> (String, PathBuf) {
    let cpid = conductor_core::Cpid::from_parts(7, 1_000).to_string();
    let map = lab.runner_dir().join("maps").join(&cpid).join("devops.map");
    std::fs::create_dir_all(map.parent().unwrap()).unwrap();
    std::fs::write(&map, "devops: []\n").unwrap();
    (cpid, map)
}

#[test]
fn a_signal_stops_doctor_between_its_checks() {
    let dir = tempfile::tempdir().unwrap();
    let lab = Lab::example(dir.path());
    let bin = sleeping_salt(dir.path(), &["salt-run"]);
    let mut child = spawn(&lab, &["doctor", "--salt-bin-dir", bin.to_str().unwrap()]);
    let stub = pid_in(&dir.path().join("salt-run.pid"), &mut child);
    signal(&child, libc::SIGHUP);
    let out = exit_of(child, "doctor");
    assert_eq!(out.status.code(), Some(129), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("doctor stopped after 2 check(s)"),
        "{}",
        stderr(&out)
    );
    assert!(out.stdout.is_empty(), "no report");
    assert_gone(stub, "doctor");
}

/// A TCP endpoint that accepts and never answers: a command calling it
/// (DynamoDB, S3) waits there until it gives up.
fn silent_endpoint() -> (std::net::TcpListener, String) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    (listener, url)
}

#[test]
fn a_signal_while_the_reservations_are_read_stops_the_commands_that_read_them() {
    let dir = tempfile::tempdir().unwrap();
    let lab = Lab::example(dir.path());
    let (old, map) = an_old_run(&lab);
    let cases: [(&[&str], i32, i32); 3] = [
        (&["reservations", "list"], libc::SIGINT, 130),
        (&["reservations", "prune"], libc::SIGHUP, 129),
        (&["runs", "prune", "--older-than", "0s"], libc::SIGTERM, 143),
    ];
    for (args, signo, code) in cases {
        let what = args.join(" ");
        let (listener, url) = silent_endpoint();
        let mut all = args.to_vec();
        all.extend([
            "--reserver",
            "dynamodb",
            "--endpoint-url",
            &url,
            "--dynamodb-region",
            "us-east-1",
        ]);
        let mut child = spawn(&lab, &all);
        // Connected: the command waits for DynamoDB's answer.
        let _conn = until(&mut child, &what, || listener.accept().ok());
        signal(&child, signo);
        let out = exit_of(child, &what);
        assert_eq!(out.status.code(), Some(code), "{what}: {}", stderr(&out));
        assert!(
            stderr(&out).contains("interrupted"),
            "{what}: {}",
            stderr(&out)
        );
        assert!(map.exists(), "{what}: run {old}'s files stay");
    }
}

#[test]
fn a_signal_during_a_reservations_prune_lets_it_finish_and_report_what_it_removed() {
    use std::os::unix::fs::MetadataExt;
    use std::os::unix::io::AsRawFd;
    let dir = tempfile::tempdir().unwrap();
    let lab = Lab::example(dir.path());
    // A key file of an unknown owner: pruned by --older-than 0s.
    let names = lab.runner_dir().join("reserved_names");
    std::fs::create_dir_all(&names).unwrap();
    std::fs::write(names.join("test_web01.example.com"), "python\n").unwrap();
    // The prune waits for the reservations' lock, which this test holds.
    let lock_path = lab.runner_dir().join(".reserved.lock");
    let lock = std::fs::File::create(&lock_path).unwrap();
    // SAFETY: flock on a file this test owns.
    assert_eq!(unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) }, 0);
    let inode = format!(":{} ", lock.metadata().unwrap().ino());
    let mut child = spawn(&lab, &["reservations", "prune", "--older-than", "0s"]);
    let lines = stderr_lines(&mut child);
    until(&mut child, "prune", || {
        let locks = std::fs::read_to_string("/proc/locks").ok()?;
        locks
            .lines()
            .any(|l| l.contains("->") && l.contains(&inode))
            .then_some(())
    });
    signal(&child, libc::SIGTERM);
    let shown = line_with(&lines, "interrupted: stopping", child.id(), "prune");
    drop(lock);
    let out = exit_of(child, "prune");
    assert_eq!(out.status.code(), Some(143), "{shown}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("pruned 1 reservation(s)") && stdout.contains("test_web01.example.com"),
        "says what it removed: {stdout}"
    );
    assert!(!names.join("test_web01.example.com").exists());
}

#[test]
fn a_signal_while_runs_list_reads_stops_it() {
    let dir = tempfile::tempdir().unwrap();
    let lab = Lab::example(dir.path());
    // The run's record is a FIFO: reading it waits for a writer (this test).
    let cpid = conductor_core::Cpid::from_parts(7, 1_000).to_string();
    let runs = lab.runner_dir().join("cloud_runs").join(&cpid);
    std::fs::create_dir_all(&runs).unwrap();
    let fifo = runs.join("run.json");
    let c_path = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: a NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) }, 0);
    let mut child = spawn(&lab, &["runs", "list"]);
    let lines = stderr_lines(&mut child);
    // Opened for writing (without blocking) once the command opened it to read.
    let writer = until(&mut child, "runs list", || {
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&fifo)
            .ok()
    });
    signal(&child, libc::SIGINT);
    let shown = line_with(&lines, "interrupted: stopping", child.id(), "runs list");
    // The writer stays open: the abandoned read never ends, and the process
    // must exit without it.
    let out = exit_of(child, "runs list");
    drop(writer);
    assert_eq!(out.status.code(), Some(130), "{shown}");
    assert!(out.stdout.is_empty(), "nothing listed");
}

/// Answers the S3 request on `conn` (its head read first) with
/// `NoSuchKey`, closing the connection: no archive there yet.
fn no_such_key(mut conn: std::net::TcpStream) {
    use std::io::{BufRead, Write};
    conn.set_nonblocking(false).unwrap();
    let mut head = std::io::BufReader::new(conn.try_clone().unwrap());
    let mut line = String::new();
    while head.read_line(&mut line).unwrap() > 0 && line != "\r\n" {
        line.clear();
    }
    let body = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>NoSuchKey</Code><Message>The specified key does not exist.</Message></Error>";
    write!(
        conn,
        "HTTP/1.1 404 Not Found\r\nContent-Type: application/xml\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
}

#[test]
fn a_signal_while_s3_is_read_or_written_keeps_the_runs_files_and_leaves_no_temporary_file() {
    // Signalled while the archive already on S3 is read (the first
    // request), then while the new one is uploaded (the second, once the
    // first said there is none).
    for answered in [0, 1] {
        let dir = tempfile::tempdir().unwrap();
        let lab = Lab::example(dir.path());
        let (cpid, map) = an_old_run(&lab);
        let tmp = dir.path().join("tmp");
        std::fs::create_dir_all(&tmp).unwrap();
        let (listener, url) = silent_endpoint();
        let mut child = lab
            .command(
                &[
                    "runs",
                    "archive",
                    &cpid,
                    "--to",
                    "s3://salt-runs/conductor",
                    "--remove",
                    "--endpoint-url",
                    &url,
                ],
                None,
            )
            .env("TMPDIR", &tmp)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        for _ in 0..answered {
            let (conn, _) = until(&mut child, "archive", || listener.accept().ok());
            no_such_key(conn);
        }
        // Connected: the request waits for S3.
        let _conn = until(&mut child, "archive", || listener.accept().ok());
        signal(&child, libc::SIGINT);
        let out = exit_of(child, "archive");
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(130), "{err}");
        let phase = ["reading the archive on S3", "during the upload to S3"][answered];
        assert!(err.contains(phase), "{phase}: {err}");
        assert!(err.contains("the run's files were kept"), "{err}");
        assert!(map.exists(), "--remove removed nothing");
        let left: Vec<_> = std::fs::read_dir(&tmp).unwrap().collect();
        assert!(left.is_empty(), "no temporary archive left: {left:?}");
    }
}
