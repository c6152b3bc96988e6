//! SIGINT, SIGTERM and SIGHUP: the first cancels the running command (it
//! stops starting work, kills its Salt commands, frees what surely was not
//! launched, writes its report and exits 128 + the signal's number); a
//! second kills the Salt commands still running and ends the process at
//! once.

use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::Arc;

use conductor_core::CancellationToken;
use tokio::signal::unix::{signal, SignalKind};

/// The cancellation the command runs under, and the signal that fired it.
#[derive(Clone, Debug, Default)]
pub struct Interrupt {
    /// Cancelled by the first signal.
    pub token: CancellationToken,
    signo: Arc<AtomicI32>,
}

impl Interrupt {
    /// Installs the handlers (call inside the runtime).
    pub fn install() -> std::io::Result<Self> {
        let me = Self::default();
        for kind in [
            SignalKind::interrupt(),
            SignalKind::terminate(),
            SignalKind::hangup(),
        ] {
            let mut stream = signal(kind)?;
            let me = me.clone();
            tokio::spawn(async move {
                while stream.recv().await.is_some() {
                    let signo = kind.as_raw_value();
                    if me.token.is_cancelled() {
                        // An exit runs no destructor: the Salt commands, in
                        // process groups of their own, are killed here.
                        conductor_salt::process::kill_running();
                        crate::output::say_err("conductor: second signal, exiting now");
                        std::process::exit(128 + signo);
                    }
                    me.signo.store(signo, Ordering::SeqCst);
                    tracing::warn!(
                        signal = signo,
                        "interrupted: stopping (a second signal ends at once)"
                    );
                    me.token.cancel();
                }
            });
        }
        Ok(me)
    }

    /// The exit code of an interrupted command: 128 + the signal (130 for
    /// SIGINT, 143 for SIGTERM, 129 for SIGHUP).
    pub fn exit_code(&self) -> u8 {
        let signo = self.signo.load(Ordering::SeqCst);
        u8::try_from(128 + if signo == 0 { libc_sigint() } else { signo }).unwrap_or(130)
    }
}

const fn libc_sigint() -> i32 {
    2
}
