//! A command run with stdin and stderr on a pseudo-terminal, as from an
//! operator's shell, and its stdout a pipe: what tests of progress
//! rendering and of questions asked on a terminal read.
//!
//! ```no_run
//! let out = conductor_testkit::pty::on_terminal(&mut std::process::Command::new("ls"), None)
//!     .unwrap();
//! assert!(out.status.success());
//! ```

use std::ffi::CStr;
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::{mpsc, Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// How long [`on_terminal`] waits for the question it is to answer.
const QUESTION_WAIT: Duration = Duration::from_secs(120);

/// How long, once the command exited, the terminal and stdout may stay
/// open: a hang guard (reading what is left takes milliseconds), past
/// which a process the command started and left running holds them.
const CLOSE_WAIT: Duration = Duration::from_secs(60);

/// What the command wrote, and how it ended.
#[derive(Debug)]
pub struct TerminalOutput {
    /// Its exit status.
    pub status: ExitStatus,
    /// What it wrote to stdout (a pipe).
    pub stdout: Vec<u8>,
    /// What it wrote to stderr (the terminal), escape sequences included.
    pub terminal: Vec<u8>,
}

impl TerminalOutput {
    /// What the terminal showed, as text.
    pub fn shown(&self) -> String {
        String::from_utf8_lossy(&self.terminal).into_owned()
    }
}

/// `rc`, or the error of a libc call that returned -1.
fn check(rc: libc::c_int) -> std::io::Result<libc::c_int> {
    if rc == -1 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

/// A pseudo-terminal of 120×40: (the terminal's end, the program's end,
/// the program's end's path). Both ends are close-on-exec from their
/// creation (not set afterwards, when another thread may have spawned a
/// process in between), so no command inherits them but through the
/// stdio it is given (dup2 onto 0 and 2 clears the flag on those).
fn open() -> std::io::Result<(File, OwnedFd, String)> {
    // SAFETY: opens a new pseudo-terminal master; the fd is checked below.
    let master =
        check(unsafe { libc::posix_openpt(libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC) })?;
    // SAFETY: the fd was just opened and is owned here alone.
    let master = unsafe { File::from_raw_fd(master) };
    // SAFETY: plain syscalls on the master just opened; ptsname_r writes a
    // NUL-terminated name into the buffer of the given length.
    let mut name = [0 as libc::c_char; 128];
    unsafe {
        check(libc::grantpt(master.as_raw_fd()))?;
        check(libc::unlockpt(master.as_raw_fd()))?;
        let rc = libc::ptsname_r(master.as_raw_fd(), name.as_mut_ptr(), name.len());
        if rc != 0 {
            return Err(std::io::Error::from_raw_os_error(rc));
        }
    }
    // SAFETY: ptsname_r succeeded: `name` holds a NUL-terminated string.
    let path = unsafe { CStr::from_ptr(name.as_ptr()) };
    // SAFETY: opens the path ptsname_r named; the fd is checked below.
    let slave = check(unsafe {
        libc::open(
            path.as_ptr(),
            libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC,
        )
    })?;
    // SAFETY: the fd was just opened and is owned here alone.
    let slave = unsafe { OwnedFd::from_raw_fd(slave) };
    let size = libc::winsize {
        ws_row: 40,
        ws_col: 120,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads the valid winsize given.
    check(unsafe { libc::ioctl(slave.as_raw_fd(), libc::TIOCSWINSZ, &size) })?;
    Ok((master, slave, path.to_string_lossy().into_owned()))
}

/// The processes (`pid (name)`) with a descriptor open on `target` (a path
/// as `/proc/<pid>/fd/<n>` links name it, as `pipe:[inode]` for a pipe).
fn holders(target: &str) -> Vec<String> {
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let me = std::process::id().to_string();
    procs
        .flatten()
        .filter_map(|p| {
            let pid = p.file_name().to_str()?.parse::<u32>().ok()?.to_string();
            if pid == me {
                return None;
            }
            let holds = std::fs::read_dir(p.path().join("fd"))
                .ok()?
                .flatten()
                .any(|fd| std::fs::read_link(fd.path()).is_ok_and(|l| l.as_os_str() == target));
            if !holds {
                return None;
            }
            let name = std::fs::read_to_string(p.path().join("comm")).unwrap_or_default();
            Some(format!("{pid} ({})", name.trim()))
        })
        .collect()
}

/// Runs `cmd` with stdin and stderr on a 120×40 pseudo-terminal and
/// stdout a pipe, until it exits (see [`Terminal::wait`]). With `answer` = `(question, reply)`,
/// types `reply` once the terminal shows `question` (an error if it does
/// not within two minutes).
pub fn on_terminal(
    cmd: &mut Command,
    answer: Option<(&str, &str)>,
) -> std::io::Result<TerminalOutput> {
    let mut t = Terminal::spawn(cmd)?;
    if let Some((question, reply)) = answer {
        t.wait_for(question, QUESTION_WAIT)?;
        t.type_text(reply)?;
    }
    t.wait()
}

/// A command running with stdin and stderr on a pseudo-terminal that stays
/// open until the command ends (as an operator's terminal does), and its
/// stdout a pipe: [`on_terminal`] step by step.
#[derive(Debug)]
pub struct Terminal {
    master: File,
    /// The program's end's path (`/dev/pts/<n>`).
    tty: String,
    /// The stdout pipe (`pipe:[inode]`, as `/proc/<pid>/fd` links name it).
    pipe: String,
    pid: i32,
    /// True once the waiter reaped the command: from then on its pid may
    /// be another process's. The waiter reaps, and [`Terminal::signal`]
    /// signals, only while holding this lock.
    reaped: Arc<Mutex<bool>>,
    shown: mpsc::Receiver<Vec<u8>>,
    stdout: mpsc::Receiver<std::io::Result<Vec<u8>>>,
    ended: mpsc::Receiver<std::io::Result<ExitStatus>>,
    terminal: Vec<u8>,
}

/// Waits until process `pid`, a child of this process, has exited, without
/// reaping it (it stays a zombie, its pid its own, until waited for).
fn wait_exited(pid: i32) -> std::io::Result<()> {
    let id = libc::id_t::try_from(pid).map_err(std::io::Error::other)?;
    loop {
        // SAFETY: zeroed siginfo_t is a valid value to be written into.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: waitid writes into the valid siginfo_t given.
        let rc = unsafe { libc::waitid(libc::P_PID, id, &mut info, libc::WEXITED | libc::WNOWAIT) };
        match check(rc) {
            Ok(_) => return Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
}

impl Terminal {
    /// Starts `cmd` on a 120×40 pseudo-terminal.
    pub fn spawn(cmd: &mut Command) -> std::io::Result<Self> {
        let (master, slave, tty) = open()?;
        cmd.stdin(Stdio::from(slave.try_clone()?))
            .stdout(Stdio::piped())
            .stderr(Stdio::from(slave));
        let child = cmd.spawn();
        // Drops the command's copies of the program's end: reading the
        // terminal's end then stops once the child has closed it.
        cmd.stdin(Stdio::null()).stderr(Stdio::null());
        let mut child = child?;
        let pid = i32::try_from(child.id()).map_err(std::io::Error::other)?;
        let out = child
            .stdout
            .take()
            .ok_or_else(|| std::io::Error::other("no stdout pipe"))?;
        let pipe = std::fs::read_link(format!("/proc/self/fd/{}", out.as_raw_fd()))?
            .to_string_lossy()
            .into_owned();
        let (tx, shown) = mpsc::channel::<Vec<u8>>();
        let mut reader = master.try_clone()?;
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            // Linux answers EIO once the last holder of the other end closed it.
            while let Ok(n @ 1..) = reader.read(&mut buf) {
                if tx.send(buf[..n].to_vec()).is_err() {
                    break;
                }
            }
        });
        let (tx, stdout) = mpsc::channel();
        std::thread::spawn(move || {
            let mut out = out;
            let mut bytes = Vec::new();
            let _ = tx.send(out.read_to_end(&mut bytes).map(|_| bytes));
        });
        let reaped = Arc::new(Mutex::new(false));
        let (done, ended) = mpsc::channel();
        let waiter = Arc::clone(&reaped);
        std::thread::spawn(move || {
            let status = wait_exited(pid).and_then(|()| {
                let mut reaped = lock(&waiter);
                let status = child.wait();
                *reaped = true;
                status
            });
            let _ = done.send(status);
        });
        Ok(Self {
            master,
            tty,
            pipe,
            pid,
            reaped,
            shown,
            stdout,
            ended,
            terminal: Vec::new(),
        })
    }

    /// The command's process id.
    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// Waits until the terminal shows `text` (an error naming what it
    /// showed if it does not within `within`).
    pub fn wait_for(&mut self, text: &str, within: Duration) -> std::io::Result<()> {
        let deadline = Instant::now() + within;
        while !String::from_utf8_lossy(&self.terminal).contains(text) {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.shown.recv_timeout(left) {
                Ok(b) => self.terminal.extend(b),
                Err(_) => {
                    return Err(std::io::Error::other(format!(
                        "the terminal did not show {text:?}; it showed {:?}",
                        String::from_utf8_lossy(&self.terminal)
                    )))
                }
            }
        }
        Ok(())
    }

    /// Types `text` on the terminal.
    pub fn type_text(&mut self, text: &str) -> std::io::Result<()> {
        self.master.write_all(text.as_bytes())
    }

    /// Sends signal `signo` to the command (as `kill` would: the terminal
    /// stays open, unlike a hang-up); an error, nothing sent, once the
    /// command has exited and been reaped.
    pub fn signal(&self, signo: i32) -> std::io::Result<()> {
        let reaped = lock(&self.reaped);
        if *reaped {
            return Err(std::io::Error::other(format!(
                "the command (pid {}) has exited: not signalled",
                self.pid
            )));
        }
        // SAFETY: a plain syscall on the child this terminal started, not
        // yet reaped (its waiter reaps it only holding `reaped`, held here):
        // the pid is still the command's, running or a zombie.
        if unsafe { libc::kill(self.pid, signo) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    }

    /// Waits until the command exits, and reads what is left of the
    /// terminal and stdout: an error, naming the processes, when something
    /// the command started still holds either a minute after it exited.
    pub fn wait(self) -> std::io::Result<TerminalOutput> {
        let status = self
            .ended
            .recv()
            .map_err(|_| std::io::Error::other("the command's waiter panicked"))??;
        self.finish(status, CLOSE_WAIT)
    }

    /// Waits until the command exits, at most `within`: still running
    /// then, it is killed (SIGKILL) and the error says so, with what the
    /// terminal showed.
    pub fn wait_within(mut self, within: Duration) -> std::io::Result<TerminalOutput> {
        match self.ended.recv_timeout(within) {
            Ok(status) => self.finish(status?, CLOSE_WAIT),
            Err(_) => {
                // An error only when it has exited since.
                let _ = self.signal(libc::SIGKILL);
                let _ = self.ended.recv();
                self.terminal.extend(self.shown.try_iter().flatten());
                Err(std::io::Error::other(format!(
                    "still running {within:?} later (killed now); the terminal showed {:?}",
                    String::from_utf8_lossy(&self.terminal)
                )))
            }
        }
    }

    /// Reads what is left on the terminal and stdout once the command
    /// exited with `status`: both close with the command, unless a process
    /// it started still holds them `within` later, which is an error naming
    /// what is open and which processes hold it (not a hang).
    fn finish(mut self, status: ExitStatus, within: Duration) -> std::io::Result<TerminalOutput> {
        // The reader ends once every holder of the program's end closed it.
        drop(self.master);
        let deadline = Instant::now() + within;
        let left = || deadline.saturating_duration_since(Instant::now());
        let mut open = Vec::new();
        loop {
            match self.shown.recv_timeout(left()) {
                Ok(b) => self.terminal.extend(b),
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    open.push(format!("the terminal {}", self.tty));
                    break;
                }
            }
        }
        let stdout = match self.stdout.recv_timeout(left()) {
            Ok(out) => out?,
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                return Err(std::io::Error::other("the stdout reader panicked"))
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                open.push(format!("stdout {}", self.pipe));
                Vec::new()
            }
        };
        if !open.is_empty() {
            let held: Vec<String> = [&self.tty, &self.pipe]
                .into_iter()
                .flat_map(|t| holders(t))
                .collect::<std::collections::BTreeSet<_>>()
                .into_iter()
                .collect();
            return Err(std::io::Error::other(format!(
                "the command exited ({status}) but {} {} still open {within:?} later, held \
                 by a process it started: {}; the terminal showed {:?}",
                open.join(" and "),
                if open.len() == 1 { "is" } else { "are" },
                if held.is_empty() {
                    "none found".to_string()
                } else {
                    held.join(", ")
                },
                String::from_utf8_lossy(&self.terminal)
            )));
        }
        Ok(TerminalOutput {
            status,
            stdout,
            terminal: self.terminal,
        })
    }
}

/// `m`'s guard, whether or not a holder panicked.
fn lock(m: &Mutex<bool>) -> MutexGuard<'_, bool> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::CommandExt;

    /// Kills process group `.0` (SIGKILL) when dropped: the background
    /// `sleep` a test leaves behind, even when it fails.
    struct KillGroup(i32);

    impl Drop for KillGroup {
        fn drop(&mut self) {
            // SAFETY: a plain syscall on a group the test started (sh,
            // started with process_group(0), leads it; its sleep stays).
            unsafe {
                libc::killpg(self.0, libc::SIGKILL);
            }
        }
    }

    /// `sh -c script` in a process group of its own.
    fn sh(script: &str) -> Command {
        let mut cmd = Command::new("sh");
        cmd.arg("-c").arg(script).process_group(0);
        cmd
    }

    #[test]
    fn the_command_has_the_terminal_only_as_its_stdin_and_stderr() {
        // Every descriptor of the shell, with what it is open on.
        let t = Terminal::spawn(&mut sh(
            r#"for f in /proc/$$/fd/*; do echo "${f##*/} $(readlink "$f")"; done"#,
        ))
        .unwrap();
        let tty = t.tty.clone();
        let out = t.wait().unwrap();
        assert!(out.status.success(), "{}", out.shown());
        let fds = String::from_utf8(out.stdout).unwrap();
        // The program's end, or the terminal's (`/dev/ptmx`).
        let on_the_terminal: Vec<&str> = fds
            .lines()
            .filter_map(|l| l.split_once(' '))
            .filter(|(_, target)| *target == tty || target.ends_with("/ptmx"))
            .map(|(fd, _)| fd)
            .collect();
        assert_eq!(on_the_terminal, ["0", "2"], "{fds}");
    }

    #[test]
    fn a_process_left_running_with_stdio_of_its_own_does_not_hold_the_terminal() {
        let mut t = Terminal::spawn(&mut sh(
            "sleep 600 </dev/null >/dev/null 2>&1 & echo started >&2",
        ))
        .unwrap();
        let _sleep = KillGroup(t.pid());
        t.wait_for("started", Duration::from_secs(60)).unwrap();
        let out = t.wait().unwrap();
        assert!(out.status.success(), "{}", out.shown());
    }

    #[test]
    fn a_process_left_holding_the_terminal_is_named_not_waited_for() {
        let t = Terminal::spawn(&mut sh("sleep 600 & echo started >&2")).unwrap();
        let _sleep = KillGroup(t.pid());
        let status = t.ended.recv().unwrap().unwrap();
        assert!(status.success());
        // The sleep holds both until it is killed: any bound ends the same.
        let e = t.finish(status, Duration::from_secs(1)).unwrap_err();
        let e = e.to_string();
        assert!(e.contains("the terminal /dev/pts/"), "{e}");
        assert!(e.contains("and stdout pipe:["), "{e}");
        assert!(e.contains(" (sleep)"), "{e}");
        assert!(e.contains("started"), "{e}");
    }

    #[test]
    fn signal_reaches_a_running_command_and_never_a_reaped_one() {
        let t = Terminal::spawn(&mut sh("exec sleep 600")).unwrap();
        let sleep = KillGroup(t.pid());
        t.signal(libc::SIGTERM).unwrap();
        let out = t.wait().unwrap();
        // Reaped, and alone in its group: the group's id is free for reuse.
        std::mem::forget(sleep);
        assert_eq!(
            std::os::unix::process::ExitStatusExt::signal(&out.status),
            Some(libc::SIGTERM)
        );

        let t = Terminal::spawn(&mut Command::new("true")).unwrap();
        // Returns once the waiter reaped it: its pid is free for reuse.
        let status = t.ended.recv().unwrap().unwrap();
        assert!(status.success());
        let e = t.signal(libc::SIGTERM).unwrap_err().to_string();
        assert!(e.contains("has exited: not signalled"), "{e}");
    }
}
