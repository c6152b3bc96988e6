//! A project-local virtualenv with the real `salt` package from PyPI, for
//! tests: created once per machine (under `target/salt-venv`, or
//! `$CONDUCTOR_SALT_VENV`), shared by parallel test processes through a file
//! lock. If Salt cannot be installed, the test fails with pip's reason.

use std::fs::OpenOptions;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// The Salt release the tests pin: the newest 3007.x that installs here and
/// still ships the EC2 cloud driver (see SALT-NOTES.md).
pub const SALT_VERSION: &str = "3007.16";

/// A virtualenv holding Salt.
#[derive(Debug)]
pub struct SaltEnv {
    /// The virtualenv's root.
    pub venv: PathBuf,
}

fn default_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("CONDUCTOR_SALT_VENV") {
        return d.into();
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target"));
    target.join("salt-venv")
}

impl SaltEnv {
    /// The shared Salt virtualenv, installed on first use.
    pub fn get() -> &'static SaltEnv {
        static ENV: OnceLock<SaltEnv> = OnceLock::new();
        ENV.get_or_init(|| Self::install(&default_dir()))
    }

    fn install(venv: &Path) -> SaltEnv {
        let parent = venv.parent().expect("the venv has a parent directory");
        std::fs::create_dir_all(parent)
            .unwrap_or_else(|e| panic!("cannot create {}: {e}", parent.display()));
        let marker = venv.join(format!(".conductor-salt-{SALT_VERSION}"));
        let lock_path = parent.join("salt-venv.lock");
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .expect("lock file");
        // SAFETY: flock on a descriptor we own; released when `lock` is dropped.
        unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) };
        if !marker.exists() {
            let _ = std::fs::remove_dir_all(venv);
            run(
                Command::new("python3").arg("-m").arg("venv").arg(venv),
                "create the Salt virtualenv",
            );
            run(
                Command::new(venv.join("bin/pip"))
                    .args(["install", "--quiet", "--disable-pip-version-check"])
                    .arg(format!("salt=={SALT_VERSION}")),
                &format!("install salt=={SALT_VERSION} from PyPI"),
            );
            std::fs::write(&marker, SALT_VERSION).expect("write the venv marker");
        }
        drop(lock);
        SaltEnv {
            venv: venv.to_path_buf(),
        }
    }

    /// A program of the virtualenv (`salt-call`, `salt-run`, `python`, ...).
    pub fn bin(&self, name: &str) -> PathBuf {
        self.venv.join("bin").join(name)
    }

    /// The directory of the virtualenv's programs.
    pub fn bin_dir(&self) -> PathBuf {
        self.venv.join("bin")
    }
}

fn run(cmd: &mut Command, what: &str) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot {what}: {e}"));
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        let tail: Vec<&str> = err.lines().rev().take(20).collect();
        panic!(
            "cannot {what} ({}):\n{}",
            out.status,
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        );
    }
}

/// The directory holding the testkit's stand-in `salt-cloud` (a Python script
/// that launches a map's instances in moto with boto3, names and tags as
/// salt-cloud would), to use as `SaltCli::bin_dir`.
pub fn stand_in_bin_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts")
}
