//! Start-up: `conductor --version` beside `salt-run --version` from the Salt
//! virtualenv, and the size of the binary measured.

use std::process::Command;
use std::time::Duration;

use conductor_testkit::salt_env::SaltEnv;

use crate::util::{median, ms, ratio, run};

/// The start-up table: medians of `runs` (after one untimed run of each).
pub fn section(conductor: &std::path::Path, runs: usize) -> String {
    let time = |cmd: &mut dyn FnMut() -> Command| -> Duration {
        run(&mut cmd());
        let v: Vec<Duration> = (0..runs).map(|_| run(&mut cmd()).wall).collect();
        median(&v)
    };
    let ours = time(&mut || {
        let mut c = Command::new(conductor);
        c.arg("--version");
        c
    });
    let size = std::fs::metadata(conductor).map_or(0, |m| m.len());
    let mut out = String::from("| command | median wall | / conductor |\n|---|---|---|\n");
    out.push_str(&format!(
        "| `conductor --version` (binary {:.1} MB) | {} | 1.00 |\n",
        size as f64 / 1e6,
        ms(ours)
    ));
    // SaltEnv::get installs Salt on first use and panics when it cannot.
    match std::panic::catch_unwind(SaltEnv::get) {
        Ok(env) => {
            let salt = time(&mut || {
                let mut c = Command::new(env.salt_run());
                c.arg("--version");
                c
            });
            out.push_str(&format!(
                "| `salt-run --version` (salt {}) | {} | {} |\n",
                conductor_testkit::salt_env::SALT_VERSION,
                ms(salt),
                ratio(salt, ours)
            ));
        }
        Err(_) => out.push_str("| `salt-run --version` | not measured: the Salt virtualenv could not be installed | |\n"),
    }
    out
}
