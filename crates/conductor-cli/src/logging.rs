//! `tracing` to stderr by level and to the continuous admin log.

use std::fs::OpenOptions;
use std::sync::Mutex;

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{fmt, EnvFilter, Layer};

use crate::args::Global;

/// Keeps logging alive for the process.
pub struct Guard;

/// Installs stderr logging (`-q` errors, default warnings, `-v` info, `-vv`
/// debug, `-vvv` trace; `RUST_LOG` overrides) and, for commands that write
/// files, the admin log `<runner-dir>/logs/conductor/conductor.log` at info.
pub fn init(g: &Global, admin_log: bool) -> Guard {
    let level = match (g.quiet, g.verbose) {
        (true, _) => "error",
        (false, 0) => "warn",
        (false, 1) => "info",
        (false, 2) => "debug",
        _ => "trace",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(level));
    let stderr = fmt::layer()
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_filter(filter);
    let file = admin_log.then(|| {
        let dir = g.runner_dir.join("logs").join("conductor");
        std::fs::create_dir_all(&dir)
            .and_then(|_| {
                OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(dir.join("conductor.log"))
            })
            .map_err(|e| eprintln!("warning: admin log in {} unavailable: {e}", dir.display()))
            .ok()
    });
    let file_layer = file.flatten().map(|f| {
        fmt::layer()
            .with_writer(Mutex::new(f))
            .with_ansi(false)
            .with_filter(EnvFilter::new("info"))
    });
    let _ = tracing_subscriber::registry()
        .with(stderr)
        .with(file_layer)
        .try_init();
    Guard
}
