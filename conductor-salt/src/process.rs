//! A bounded child-process runner: the program runs in its own process
//! group, its stdout and stderr are captured up to a limit (the rest is read
//! and dropped, so the child never blocks on a full pipe), and a timeout, or
//! dropping the future that runs it, kills the whole group.

use std::fmt;
use std::process::Stdio;
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

/// Kills a command's whole process group unless disarmed (on timeout, and
/// when the future running the command is dropped).
struct GroupKill {
    pgid: Option<i32>,
}

impl GroupKill {
    fn disarm(&mut self) {
        self.pgid = None;
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
pub async fn run(mut cmd: tokio::process::Command, limits: Limits) -> Result<Captured, RunError> {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    let mut child = cmd.spawn().map_err(RunError::Spawn)?;
    let mut group = GroupKill {
        pgid: child.id().and_then(|p| i32::try_from(p).ok()),
    };
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
