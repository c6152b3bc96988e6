//! A command run with stdin and stderr on a pseudo-terminal, as from an
//! operator's shell, and its stdout a pipe: what tests of progress
//! rendering and of questions asked on a terminal read.
//!
//! ```no_run
//! let out = conductor_testkit::pty::on_terminal(&mut std::process::Command::new("ls"), None)
//!     .unwrap();
//! assert!(out.status.success());
//! ```

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{FromRawFd, OwnedFd};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// How long [`on_terminal`] waits for the question it is to answer.
const QUESTION_WAIT: Duration = Duration::from_secs(120);

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

/// A pseudo-terminal of 120×40: (the terminal's end, the program's end).
fn open() -> std::io::Result<(File, OwnedFd)> {
    let (mut master, mut slave) = (-1, -1);
    let size = libc::winsize {
        ws_row: 40,
        ws_col: 120,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: openpty writes two fds into the given ints; the name and
    // termios pointers may be null, the winsize is a valid struct.
    let rc = unsafe {
        libc::openpty(
            &mut master,
            &mut slave,
            std::ptr::null_mut(),
            std::ptr::null(),
            &size,
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: both fds were just opened and are owned here alone.
    Ok(unsafe { (File::from_raw_fd(master), OwnedFd::from_raw_fd(slave)) })
}

/// Runs `cmd` with stdin and stderr on a 120×40 pseudo-terminal and
/// stdout a pipe, until it exits. With `answer` = `(question, reply)`,
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
    pid: i32,
    shown: mpsc::Receiver<Vec<u8>>,
    reading: std::thread::JoinHandle<()>,
    ended: mpsc::Receiver<std::io::Result<std::process::Output>>,
    terminal: Vec<u8>,
}

impl Terminal {
    /// Starts `cmd` on a 120×40 pseudo-terminal.
    pub fn spawn(cmd: &mut Command) -> std::io::Result<Self> {
        let (master, slave) = open()?;
        cmd.stdin(Stdio::from(slave.try_clone()?))
            .stdout(Stdio::piped())
            .stderr(Stdio::from(slave));
        let child = cmd.spawn();
        // Drops the command's copies of the program's end: reading the
        // terminal's end then stops once the child has closed it.
        cmd.stdin(Stdio::null()).stderr(Stdio::null());
        let child = child?;
        let pid = i32::try_from(child.id()).map_err(std::io::Error::other)?;
        let (tx, shown) = mpsc::channel::<Vec<u8>>();
        let mut reader = master.try_clone()?;
        let reading = std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            // Linux answers EIO once the last holder of the other end closed it.
            while let Ok(n @ 1..) = reader.read(&mut buf) {
                if tx.send(buf[..n].to_vec()).is_err() {
                    break;
                }
            }
        });
        let (done, ended) = mpsc::channel();
        std::thread::spawn(move || {
            let _ = done.send(child.wait_with_output());
        });
        Ok(Self {
            master,
            pid,
            shown,
            reading,
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
    /// stays open, unlike a hang-up).
    pub fn signal(&self, signo: i32) -> std::io::Result<()> {
        // SAFETY: a plain syscall on the child this terminal started (not
        // yet reaped: its waiter sends the status only after it exited).
        if unsafe { libc::kill(self.pid, signo) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    }

    /// Waits until the command exits.
    pub fn wait(self) -> std::io::Result<TerminalOutput> {
        let out = self
            .ended
            .recv()
            .map_err(|_| std::io::Error::other("the command's waiter panicked"))??;
        self.finish(out)
    }

    /// Waits until the command exits, at most `within`: still running
    /// then, it is killed (SIGKILL) and the error says so, with what the
    /// terminal showed.
    pub fn wait_within(mut self, within: Duration) -> std::io::Result<TerminalOutput> {
        match self.ended.recv_timeout(within) {
            Ok(out) => self.finish(out?),
            Err(_) => {
                // SAFETY: kills the child this terminal started, not yet reaped.
                unsafe {
                    libc::kill(self.pid, libc::SIGKILL);
                }
                let _ = self.ended.recv();
                self.terminal.extend(self.shown.try_iter().flatten());
                Err(std::io::Error::other(format!(
                    "still running {within:?} later (killed now); the terminal showed {:?}",
                    String::from_utf8_lossy(&self.terminal)
                )))
            }
        }
    }

    fn finish(mut self, out: std::process::Output) -> std::io::Result<TerminalOutput> {
        // The program's end is closed with the program: the reader ends.
        drop(self.master);
        self.reading
            .join()
            .map_err(|_| std::io::Error::other("the terminal reader panicked"))?;
        self.terminal.extend(self.shown.try_iter().flatten());
        Ok(TerminalOutput {
            status: out.status,
            stdout: out.stdout,
            terminal: self.terminal,
        })
    }
}
