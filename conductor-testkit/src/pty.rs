//! A command run with its stderr on a pseudo-terminal, as from an
//! operator's shell, and its stdout a pipe: what progress-rendering tests
//! read.
//!
//! ```no_run
//! let out = conductor_testkit::pty::output_with_terminal_stderr(
//!     &mut std::process::Command::new("ls"),
//! )
//! .unwrap();
//! assert!(out.status.success());
//! ```

use std::fs::File;
use std::io::Read;
use std::os::fd::{FromRawFd, OwnedFd};
use std::process::{Command, ExitStatus, Stdio};

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

/// Runs `cmd` with stdin empty, stdout a pipe and stderr a 120×40
/// pseudo-terminal, until it exits.
pub fn output_with_terminal_stderr(cmd: &mut Command) -> std::io::Result<TerminalOutput> {
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
    let (master, slave) = unsafe { (OwnedFd::from_raw_fd(master), OwnedFd::from_raw_fd(slave)) };
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(slave));
    let child = cmd.spawn();
    // Drops the command's copy of the terminal's end: reading the other
    // end then stops once the child has closed it.
    cmd.stderr(Stdio::null());
    let child = child?;
    let reader = std::thread::spawn(move || {
        let mut terminal = Vec::new();
        let mut f = File::from(master);
        let mut buf = [0u8; 4096];
        // Linux answers EIO once the last holder of the other end closed it.
        while let Ok(n @ 1..) = f.read(&mut buf) {
            terminal.extend_from_slice(&buf[..n]);
        }
        terminal
    });
    let out = child.wait_with_output()?;
    let terminal = reader
        .join()
        .map_err(|_| std::io::Error::other("the terminal reader panicked"))?;
    Ok(TerminalOutput {
        status: out.status,
        stdout: out.stdout,
        terminal,
    })
}
