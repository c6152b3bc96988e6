//! `tracing` to stderr by level and to the continuous admin log.

use std::fs::{File, OpenOptions};
use std::io::IsTerminal;
use std::io::Write;
use std::path::PathBuf;
use std::sync::Mutex;

use tracing_subscriber::filter::filter_fn;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{fmt, EnvFilter, Layer};

use crate::args::Global;

/// The `tracing` target of lines meant for the admin log only (the failure
/// the binary prints itself, the result line of a run).
pub const ADMIN: &str = "conductor::admin";

/// Keeps logging alive for the process.
pub struct Guard;

/// Installs stderr logging (`-q` errors, default warnings (progress is
/// [`crate::progress`]'s), `-v` info, `-vv` debug, `-vvv` trace; `RUST_LOG`
/// overrides) and, for commands that write
/// files, the admin log `<runner-dir>/logs/conductor/conductor.log` at info.
pub fn init(g: &Global, admin_log: bool) -> Guard {
    // Progress is the display's (crate::progress), not the log's.
    let level = match (g.quiet, g.verbose) {
        (true, _) => "error",
        (false, 0) => "warn",
        (false, 1) => "info",
        (false, 2) => "debug",
        _ => "trace",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(level));
    // Colour only for a person: stderr a terminal and NO_COLOR unset.
    let ansi = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let stderr = fmt::layer()
        .with_writer(crate::progress::Stderr)
        .with_target(false)
        .with_ansi(ansi)
        .with_filter(filter)
        .with_filter(filter_fn(|m| m.target() != ADMIN));
    let file_layer = admin_log.then(|| {
        let writer = LazyFile {
            dir: g.runner_dir.join("logs").join("conductor"),
            file: Mutex::new(None),
        };
        fmt::layer()
            .with_writer(writer)
            .with_ansi(false)
            .with_filter(EnvFilter::new("info"))
    });
    let _ = tracing_subscriber::registry()
        .with(stderr)
        .with(file_layer)
        .try_init();
    Guard
}

/// The admin log file, created on the first line written: a run refused for
/// bad input leaves no file behind.
struct LazyFile {
    dir: PathBuf,
    file: Mutex<Option<Result<File, ()>>>,
}

/// A handle writing to the shared admin log.
struct LazyWriter<'a>(&'a LazyFile);

impl Write for LazyWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let mut slot = self.0.file.lock().unwrap_or_else(|p| p.into_inner());
        let opened = slot.get_or_insert_with(|| {
            std::fs::create_dir_all(&self.0.dir)
                .and_then(|_| {
                    OpenOptions::new()
                        .create(true)
                        .append(true)
                        .open(self.0.dir.join("conductor.log"))
                })
                .map_err(|e| {
                    crate::output::say_err(&format!(
                        "warning: admin log in {} unavailable: {e}",
                        self.0.dir.display()
                    ))
                })
        });
        match opened {
            Ok(f) => f.write(buf),
            Err(()) => Ok(buf.len()),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> fmt::MakeWriter<'a> for LazyFile {
    type Writer = LazyWriter<'a>;
    fn make_writer(&'a self) -> Self::Writer {
        LazyWriter(self)
    }
}
