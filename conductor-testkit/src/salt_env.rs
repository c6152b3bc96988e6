//! A project-local virtualenv with the real `salt` package from PyPI, for
//! tests: created once per machine (under `target/salt-venv`, or
//! `$CONDUCTOR_SALT_VENV`), shared by parallel test processes through a file
//! lock. If Salt cannot be installed, the test fails with pip's reason.

use std::fs::OpenOptions;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// The Salt release the tests pin: the newest 3007.x that installs here
/// (3007.17 and 3008.5 do not) and still ships the EC2 cloud driver (3008
/// has none).
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
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
    target.join("salt-venv")
}

impl SaltEnv {
    /// The shared Salt virtualenv, installed on first use. Panics with the
    /// reason (pip's last lines) when Salt cannot be installed; later calls in
    /// the same process fail with the same reason without retrying.
    pub fn get() -> &'static SaltEnv {
        static ENV: OnceLock<Result<SaltEnv, String>> = OnceLock::new();
        match ENV.get_or_init(|| Self::install(&default_dir())) {
            Ok(env) => env,
            Err(reason) => panic!("{reason}"),
        }
    }

    fn install(venv: &Path) -> Result<SaltEnv, String> {
        let parent = venv
            .parent()
            .ok_or_else(|| format!("{} has no parent directory", venv.display()))?;
        std::fs::create_dir_all(parent)
            .map_err(|e| format!("cannot create {}: {e}", parent.display()))?;
        let marker = venv.join(format!(".conductor-salt-{SALT_VERSION}"));
        let lock_path = parent.join("salt-venv.lock");
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| format!("cannot open the lock {}: {e}", lock_path.display()))?;
        // SAFETY: flock on a descriptor we own; released when `lock` is dropped.
        if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) } != 0 {
            return Err(format!(
                "cannot lock {}: {}",
                lock_path.display(),
                std::io::Error::last_os_error()
            ));
        }
        let env = SaltEnv {
            venv: venv.to_path_buf(),
        };
        let intact = marker.exists() && env.salt_call().exists() && env.salt_cloud().exists();
        if !intact {
            let started = std::time::Instant::now();
            let _ = std::fs::remove_dir_all(venv);
            run(
                Command::new("python3").arg("-m").arg("venv").arg(venv),
                "create the Salt virtualenv (python3 -m venv; on Debian/Ubuntu install python3-venv)",
            )?;
            run(
                Command::new(venv.join("bin/pip"))
                    .args(["install", "--quiet", "--disable-pip-version-check"])
                    .arg(format!("salt=={SALT_VERSION}")),
                &format!(
                    "install salt=={SALT_VERSION} from PyPI into {} (needs network access to PyPI)",
                    venv.display()
                ),
            )?;
            std::fs::write(&marker, SALT_VERSION)
                .map_err(|e| format!("cannot write {}: {e}", marker.display()))?;
            eprintln!(
                "salt_env: installed salt=={SALT_VERSION} into {} in {:.1?}",
                venv.display(),
                started.elapsed()
            );
        }
        drop(lock);
        Ok(env)
    }

    /// A program of the virtualenv (`salt-call`, `salt-run`, `python`, ...).
    pub fn bin(&self, name: &str) -> PathBuf {
        self.venv.join("bin").join(name)
    }

    /// The directory of the virtualenv's programs.
    pub fn bin_dir(&self) -> PathBuf {
        self.venv.join("bin")
    }

    /// The virtualenv's `salt-call`.
    pub fn salt_call(&self) -> PathBuf {
        self.bin("salt-call")
    }

    /// The virtualenv's `salt-run`.
    pub fn salt_run(&self) -> PathBuf {
        self.bin("salt-run")
    }

    /// The virtualenv's `salt-cloud`.
    pub fn salt_cloud(&self) -> PathBuf {
        self.bin("salt-cloud")
    }

    /// The virtualenv's `python` (imports `salt`).
    pub fn python(&self) -> PathBuf {
        self.bin("python")
    }

    /// Runs the Python `script` with the virtualenv's `python` and `args`,
    /// and parses what it prints as JSON; panics with its stderr when it
    /// fails (for tests that read Salt's own view of generated files).
    pub fn python_json<S: AsRef<std::ffi::OsStr>>(
        &self,
        script: &Path,
        args: &[S],
    ) -> serde_json::Value {
        let out = Command::new(self.python())
            .arg(script)
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", self.python().display()));
        assert!(
            out.status.success(),
            "{} {} failed ({}):\n{}",
            self.python().display(),
            script.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "{} printed no JSON ({e}):\n{}",
                script.display(),
                String::from_utf8_lossy(&out.stdout)
            )
        })
    }
}

fn run(cmd: &mut Command, what: &str) -> Result<(), String> {
    let out = cmd.output().map_err(|e| format!("cannot {what}: {e}"))?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        let tail: Vec<&str> = err.lines().rev().take(20).collect();
        return Err(format!(
            "cannot {what} ({}):\n{}",
            out.status,
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        ));
    }
    Ok(())
}

/// The directory holding the testkit's stand-in `salt-cloud` (a Python script
/// that launches a map's instances in moto with boto3, names and tags as
/// salt-cloud would), to use as `SaltCli::bin_dir`.
pub fn stand_in_bin_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts")
}
