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
    let (mut master, slave) = open()?;
    cmd.stdin(Stdio::from(slave.try_clone()?))
        .stdout(Stdio::piped())
        .stderr(Stdio::from(slave));
    let child = cmd.spawn();
    // Drops the command's copies of the program's end: reading the
    // terminal's end then stops once the child has closed it.
    cmd.stdin(Stdio::null()).stderr(Stdio::null());
    let child = child?;
    let (tx, rx) = mpsc::channel::<Vec<u8>>();
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
    let mut terminal = Vec::new();
    if let Some((question, reply)) = answer {
        let deadline = Instant::now() + QUESTION_WAIT;
        while !String::from_utf8_lossy(&terminal).contains(question) {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(b) => terminal.extend(b),
                Err(_) => {
                    return Err(std::io::Error::other(format!(
                        "the terminal did not show {question:?}; it showed {:?}",
                        String::from_utf8_lossy(&terminal)
                    )))
                }
            }
        }
        master.write_all(reply.as_bytes())?;
    }
    let out = child.wait_with_output()?;
    reading
        .join()
        .map_err(|_| std::io::Error::other("the terminal reader panicked"))?;
    terminal.extend(rx.try_iter().flatten());
    Ok(TerminalOutput {
        status: out.status,
        stdout: out.stdout,
        terminal,
    })
}
