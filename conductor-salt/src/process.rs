//! A bounded child-process runner: the program runs in its own process
//! group, its stdout and stderr are captured up to a limit (the rest is read
//! and dropped, so the child never blocks on a full pipe), and a timeout, or
//! dropping the future that runs it, kills the whole group.

use std::collections::BTreeSet;
use std::fmt;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::AsyncReadExt;

/// What one command printed.
#[derive(Debug)]
pub struct Captured {
    /// Exit code (None when killed by a signal).
    pub code: Option<i32>,
    /// Standard output (at most the capture limit).
    pub stdout: Vec<u8>,
    /// Standard error (at most the capture limit).
    pub stderr: Vec<u8>,
    /// True when stdout or stderr was longer than the capture limit and cut.
    pub truncated: bool,
}

/// How a bounded run ended without a [`Captured`] result.
#[derive(Debug)]
pub enum RunError {
    /// The program could not be started (missing, not executable, ...).
    Spawn(std::io::Error),
    /// Reading its output or waiting for it failed.
    Io(std::io::Error),
    /// It ran longer than the timeout and was killed with its process group.
    TimedOut(Duration),
}

impl fmt::Display for RunError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RunError::Spawn(e) => write!(f, "cannot start: {e}"),
            RunError::Io(e) => write!(f, "{e}"),
            RunError::TimedOut(t) => write!(f, "did not finish within {t:?}"),
        }
    }
}

impl std::error::Error for RunError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            RunError::Spawn(e) | RunError::Io(e) => Some(e),
            RunError::TimedOut(_) => None,
        }
    }
}

/// The bounds of one run.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Longest the command may run before its process group is killed.
    pub timeout: Duration,
    /// Most bytes kept of each of stdout and stderr.
    pub max_output: u64,
}

/// The process groups a runner killed and has not yet seen gone: SIGKILL
/// ends a process only once the kernel schedules it again (longer when it
/// waits on the disk), so a killed command can outlive the call that
/// dropped it. Clones share the list.
#[derive(Clone, Debug, Default)]
pub(crate) struct Killed(Arc<Mutex<Vec<i32>>>);

impl Killed {
    fn push(&self, pgid: i32) {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).push(pgid);
    }

    fn groups(&self) -> Vec<i32> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn forget(&self, gone: &[i32]) {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|g| !gone.contains(g));
    }

    /// Waits until no process of the killed groups is alive (zombies
    /// waiting for their parent count as gone), checking every 10 ms, at
    /// most `within`; returns the pids still alive then, which are
    /// forgotten too: a process stuck in the kernel past the bound will
    /// not be waited for again.
    pub(crate) async fn settle(&self, within: Duration) -> Vec<u32> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let groups = self.groups();
            if groups.is_empty() {
                return Vec::new();
            }
            let scan = groups.clone();
            let live = tokio::task::spawn_blocking(move || live_members(&scan))
                .await
                .unwrap_or_default();
            let gone: Vec<i32> = groups
                .iter()
                .copied()
                .filter(|g| !live.iter().any(|(_, pg)| pg == g))
                .collect();
            self.forget(&gone);
            if live.is_empty() {
                return Vec::new();
            }
            if tokio::time::Instant::now() >= deadline {
                self.forget(&groups);
                return live.into_iter().map(|(pid, _)| pid).collect();
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// The live processes (not zombies) of the process groups `pgids`, with
/// their group, from `/proc/<pid>/stat` (state is field 3, group field 5).
pub(crate) fn live_members(pgids: &[i32]) -> Vec<(u32, i32)> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| {
            let pid = e.file_name().to_str()?.parse::<u32>().ok()?;
            let stat = std::fs::read_to_string(e.path().join("stat")).ok()?;
            // The command name (field 2) is in parentheses and may hold spaces.
            let (_, rest) = stat.rsplit_once(") ")?;
            let mut fields = rest.split_whitespace();
            let state = fields.next()?;
            let pgrp = fields.nth(1)?.parse::<i32>().ok()?;
            (pgids.contains(&pgrp) && !matches!(state, "Z" | "X")).then_some((pid, pgrp))
        })
        .collect()
}

/// The process groups of the commands a process runs now (each in a group
/// of its own, so a signal to the process does not reach them), and
/// whether [`Registry::kill_all`] ran: then every group listed later is
/// killed at once. One mutex for both, so a command started while
/// `kill_all` runs is either listed before it (and killed by it) or sees
/// the flag (and is killed by its guard): none is missed.
struct Registry(Mutex<Running>);

/// What a [`Registry`] holds.
struct Running {
    groups: BTreeSet<i32>,
    closing: bool,
}

impl Registry {
    const fn new() -> Self {
        Self(Mutex::new(Running {
            groups: BTreeSet::new(),
            closing: false,
        }))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Running> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Lists `pgid` (when there is one) unless [`Registry::kill_all`] ran:
    /// false then, and the caller kills the group.
    fn insert(&self, pgid: Option<i32>) -> bool {
        let mut r = self.lock();
        if r.closing {
            return false;
        }
        r.groups.extend(pgid);
        true
    }

    /// Whether [`Registry::kill_all`] ran (a command not started yet need
    /// not start).
    fn closing(&self) -> bool {
        self.lock().closing
    }

    fn remove(&self, pgid: i32) {
        self.lock().groups.remove(&pgid);
    }

    /// Kills (SIGKILL) every listed group and returns how many; from now
    /// on, [`Registry::insert`] refuses.
    fn kill_all(&self) -> usize {
        let groups = {
            let mut r = self.lock();
            r.closing = true;
            std::mem::take(&mut r.groups)
        };
        for pgid in &groups {
            // SAFETY: plain syscall on a process group this process created
            // and has not seen end (its guard deregisters it once the
            // command exited).
            unsafe {
                libc::killpg(*pgid, libc::SIGKILL);
            }
        }
        groups.len()
    }
}

/// The commands this process runs now: what [`kill_running`] kills.
static RUNNING: Registry = Registry::new();

/// Kills (SIGKILL) the process group of every command the runner runs now
/// in this process, and returns how many. For a process about to end
/// without running destructors (`std::process::exit` on a second signal):
/// a dropped command is killed by its guard, but an exit drops nothing, and
/// the commands, in process groups of their own, would outlive it. From
/// then on, a command the runner starts in this process is killed at once
/// (with its group) and its run fails: one started between this call and
/// the exit does not outlive the process either.
pub fn kill_running() -> usize {
    RUNNING.kill_all()
}

/// What the run of a command started after [`kill_running`] fails with.
const CLOSING: &str = "killed at once: this process is exiting (its running commands were killed)";

/// Kills a command's whole process group unless disarmed (on timeout, and
/// when the future running the command is dropped), and records it in
/// [`Killed`]; while armed, the group is listed in `registry`, which
/// [`kill_running`] kills.
struct GroupKill {
    pgid: Option<i32>,
    killed: Killed,
    registry: &'static Registry,
}

impl GroupKill {
    /// The armed guard of group `pgid`, listed in `registry`; once the
    /// registry killed its groups, the group is killed now and this fails.
    fn new(
        pgid: Option<i32>,
        killed: &Killed,
        registry: &'static Registry,
    ) -> Result<Self, RunError> {
        let guard = Self {
            pgid,
            killed: killed.clone(),
            registry,
        };
        if registry.insert(pgid) {
            Ok(guard)
        } else {
            // Dropped armed: the group is killed.
            drop(guard);
            Err(RunError::Io(std::io::Error::other(CLOSING)))
        }
    }

    fn disarm(&mut self) {
        if let Some(g) = self.pgid.take() {
            self.registry.remove(g);
        }
    }
}

impl Drop for GroupKill {
    fn drop(&mut self) {
        if let Some(pgid) = self.pgid.take() {
            // SAFETY: plain syscall on a process group this process created
            // (the child was spawned with process_group(0), so pgid == its pid).
            unsafe {
                libc::killpg(pgid, libc::SIGKILL);
            }
            self.registry.remove(pgid);
            self.killed.push(pgid);
        }
    }
}

/// Reads `r` to its end, keeping at most `limit` bytes; returns them and
/// whether anything was dropped. Reading on past the limit keeps the child
/// from blocking on a full pipe.
async fn capture(
    mut r: impl tokio::io::AsyncRead + Unpin,
    limit: u64,
) -> std::io::Result<(Vec<u8>, bool)> {
    let mut kept = Vec::new();
    let mut buf = vec![0u8; 64 << 10];
    let mut dropped = false;
    loop {
        let n = r.read(&mut buf).await?;
        if n == 0 {
            return Ok((kept, dropped));
        }
        let room = usize::try_from(limit.saturating_sub(kept.len() as u64)).unwrap_or(usize::MAX);
        kept.extend_from_slice(&buf[..n.min(room)]);
        dropped |= n > room;
    }
}

/// Runs `cmd` (its program, arguments and environment as set by the caller)
/// with stdin closed, in a process group of its own, within `limits`.
pub async fn run(cmd: tokio::process::Command, limits: Limits) -> Result<Captured, RunError> {
    run_tracked(cmd, limits, &Killed::default()).await
}

/// [`run`], recording a group it kills in `killed`.
pub(crate) async fn run_tracked(
    cmd: tokio::process::Command,
    limits: Limits,
    killed: &Killed,
) -> Result<Captured, RunError> {
    run_listed(cmd, limits, killed, &RUNNING).await
}

/// [`run_tracked`], the command's group listed in `registry` while it runs.
async fn run_listed(
    mut cmd: tokio::process::Command,
    limits: Limits,
    killed: &Killed,
    registry: &'static Registry,
) -> Result<Captured, RunError> {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    // Checked again (under the lock) once the command is listed: this only
    // spares starting one that would be killed at once.
    if registry.closing() {
        return Err(RunError::Io(std::io::Error::other(CLOSING)));
    }
    let mut child = cmd.spawn().map_err(RunError::Spawn)?;
    let mut group = GroupKill::new(
        child.id().and_then(|p| i32::try_from(p).ok()),
        killed,
        registry,
    )?;
    let (Some(out), Some(err)) = (child.stdout.take(), child.stderr.take()) else {
        return Err(RunError::Io(std::io::Error::other("no pipes to the child")));
    };
    let work = async {
        let limit = limits.max_output;
        let (o, e) = tokio::join!(capture(out, limit), capture(err, limit));
        let ((stdout, t1), (stderr, t2)) = (o?, e?);
        let status = child.wait().await?;
        Ok::<_, std::io::Error>(Captured {
            code: status.code(),
            stdout,
            stderr,
            truncated: t1 || t2,
        })
    };
    match tokio::time::timeout(limits.timeout, work).await {
        Ok(Ok(c)) => {
            group.disarm();
            Ok(c)
        }
        // `group` is dropped armed: the command's processes are killed.
        Ok(Err(e)) => Err(RunError::Io(e)),
        Err(_) => Err(RunError::TimedOut(limits.timeout)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::CommandExt;

    /// `sleep secs` in a process group of its own, not killed: what settle
    /// sees of a killed command that the kernel has not ended yet.
    fn group_sleeping(secs: &str) -> (std::process::Child, i32) {
        let child = std::process::Command::new("sleep")
            .arg(secs)
            .process_group(0)
            .spawn()
            .unwrap();
        let pgid = i32::try_from(child.id()).unwrap();
        (child, pgid)
    }

    #[tokio::test]
    async fn settle_waits_until_the_groups_processes_are_gone() {
        let (mut child, pgid) = group_sleeping("0.5");
        let killed = Killed::default();
        killed.push(pgid);
        assert_eq!(live_members(&[pgid]), vec![(child.id(), pgid)]);
        let started = std::time::Instant::now();
        assert_eq!(
            killed.settle(Duration::from_secs(30)).await,
            Vec::<u32>::new()
        );
        assert!(
            started.elapsed() >= Duration::from_millis(400),
            "{:?}",
            started.elapsed()
        );
        // Gone, or a zombie its parent has not reaped: not alive.
        assert!(live_members(&[pgid]).is_empty());
        assert!(killed.groups().is_empty(), "a gone group is forgotten");
        child.wait().unwrap();
    }

    /// (Killing the listed groups is the binary's test: other tests of
    /// this process may run commands at the same time.)
    #[tokio::test]
    async fn a_command_is_listed_for_kill_running_while_it_runs() {
        let dir = tempfile::tempdir().unwrap();
        let pid_file = dir.path().join("pid");
        let mut cmd = tokio::process::Command::new("sh");
        cmd.arg("-c")
            .arg(format!("echo $$ > {}; exec sleep 60", pid_file.display()));
        let limits = Limits {
            timeout: Duration::from_secs(120),
            max_output: 1024,
        };
        let killed = Killed::default();
        let mut running_cmd = Box::pin(run_tracked(cmd, limits, &killed));
        // Runs the command until it wrote its pid.
        let pid = loop {
            tokio::select! {
                r = &mut running_cmd => panic!("the command ended early: {r:?}"),
                _ = tokio::time::sleep(Duration::from_millis(10)) => {}
            }
            if let Some(pid) = std::fs::read_to_string(&pid_file)
                .ok()
                .and_then(|t| t.trim().parse::<i32>().ok())
            {
                break pid;
            }
        };
        assert!(RUNNING.lock().groups.contains(&pid), "listed while it runs");
        drop(running_cmd);
        assert!(
            !RUNNING.lock().groups.contains(&pid),
            "a dropped command is not"
        );
        assert_eq!(killed.groups(), vec![pid], "its guard killed it");
        assert!(killed.settle(Duration::from_secs(30)).await.is_empty());
    }

    /// (On a registry of its own: `kill_running` would kill the commands of
    /// the other tests of this process, and every one they start after.)
    #[tokio::test]
    async fn a_command_started_after_kill_all_is_killed_at_once_and_fails() {
        static REGISTRY: Registry = Registry::new();
        let limits = Limits {
            timeout: Duration::from_secs(60),
            max_output: 1024,
        };
        let killed = Killed::default();
        let mut cmd = tokio::process::Command::new("sleep");
        cmd.arg("600");
        let mut sleeping = Box::pin(run_listed(cmd, limits, &killed, &REGISTRY));
        // Its first poll starts it and lists its group.
        tokio::select! {
            biased;
            r = &mut sleeping => panic!("the command ended early: {r:?}"),
            () = std::future::ready(()) => {}
        }
        let listed = *REGISTRY.lock().groups.first().expect("listed");
        assert_eq!(REGISTRY.kill_all(), 1);
        assert!(
            matches!(sleeping.await, Ok(Captured { code: None, .. })),
            "killed"
        );
        assert!(killed.groups().is_empty(), "not by its guard");
        // Run after kill_all: not started, and its run fails.
        let marker = tempfile::tempdir().unwrap();
        let started = marker.path().join("started");
        let mut cmd = tokio::process::Command::new("touch");
        cmd.arg(&started);
        let e = run_listed(cmd, limits, &killed, &REGISTRY)
            .await
            .unwrap_err();
        assert!(
            matches!(&e, RunError::Io(io) if io.to_string() == CLOSING),
            "{e:?}"
        );
        assert!(!started.exists(), "not started");
        // Started while kill_all ran (spawned before, listed after): killed
        // by its guard at once, and not listed.
        let (mut child, pgid) = group_sleeping("600");
        let e = GroupKill::new(Some(pgid), &killed, &REGISTRY)
            .map(|_| ())
            .unwrap_err();
        assert!(
            matches!(&e, RunError::Io(io) if io.to_string() == CLOSING),
            "{e:?}"
        );
        assert_eq!(killed.groups(), vec![pgid], "killed by its guard");
        assert!(REGISTRY.lock().groups.is_empty(), "not listed");
        assert!(killed.settle(Duration::from_secs(30)).await.is_empty());
        child.wait().unwrap();
        assert!(live_members(&[listed, pgid]).is_empty());
    }

    #[tokio::test]
    async fn settle_gives_up_after_its_bound_and_names_the_pids() {
        let (mut child, pgid) = group_sleeping("60");
        let killed = Killed::default();
        killed.push(pgid);
        let left = killed.settle(Duration::from_millis(200)).await;
        assert_eq!(left, vec![child.id()]);
        assert!(killed.groups().is_empty(), "not waited for again");
        assert_eq!(
            killed.settle(Duration::from_secs(30)).await,
            Vec::<u32>::new()
        );
        child.kill().unwrap();
        child.wait().unwrap();
    }
}
