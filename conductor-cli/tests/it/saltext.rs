//! The runner as a Salt extension (`salt/saltext-conductor`): built and
//! installed with the test virtualenv's pip from a copy of `salt/` as a fresh
//! clone has it, found by the real `salt-run` through the package's
//! `salt.loader` entry point with no `runner_dirs`, it returns what the
//! binary returns. The package's version is the binary's.
//!
//! The package is installed under the test's temporary directory (`pip
//! install --target`) and put on `salt-run`'s `PYTHONPATH`, where Salt's
//! `importlib_metadata` finds its entry point: the shared virtualenv stays as
//! it is for the tests running beside this one.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Instant;

use conductor_testkit::salt_env::SaltEnv;

use crate::support::{repo, write_master_config, Lab, RUNNER_PLAN_WORDS};

/// The package's directory in the repository.
const PACKAGE: &str = "salt/saltext-conductor";

/// The runner's one source file, which the package's build takes in.
const RUNNER: &str = "salt/runners/conduct.py";

/// The package's runner once installed, under the install directory.
const INSTALLED_RUNNER: &str = "saltext/conductor/runners/conduct.py";

/// `version = "..."` of the table `[section]` of the TOML file `path` (the
/// two files read here keep it on one line of that table).
fn toml_version(path: &Path, section: &str) -> String {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let header = format!("[{section}]");
    let mut in_section = false;
    for line in text.lines().map(str::trim) {
        if line.starts_with('[') {
            in_section = line == header;
        } else if in_section {
            if let Some(value) = line
                .strip_prefix("version")
                .and_then(|rest| rest.trim_start().strip_prefix('='))
            {
                return value.trim().trim_matches('"').to_string();
            }
        }
    }
    panic!("{} has no `version = ...` in {header}", path.display())
}

/// The `conductor` binary's version: `[workspace.package] version` of the
/// workspace's Cargo.toml.
fn workspace_version() -> String {
    let version = toml_version(&repo().join("Cargo.toml"), "workspace.package");
    assert_eq!(
        version,
        env!("CARGO_PKG_VERSION"),
        "conductor-cli takes the workspace's version"
    );
    version
}

#[test]
fn package_version_is_the_workspace_version() {
    let pyproject = repo().join(PACKAGE).join("pyproject.toml");
    let cargo = workspace_version();
    assert_eq!(
        toml_version(&pyproject, "project"),
        cargo,
        "the Salt extension's version is the binary's: set `version = \"{cargo}\"` in [project] of {}",
        pyproject.display()
    );
}

/// Runs `cmd`; panics with the command line (with the environment it sets)
/// and its output unless it succeeds.
fn run_ok(cmd: &mut Command) -> Output {
    let o = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(o.status.success(), "{}", failure(cmd, &o));
    o
}

/// The command line and output of `cmd`, for a failure message.
fn failure(cmd: &Command, o: &Output) -> String {
    format!(
        "{cmd:?} exited {}\n--- stdout\n{}\n--- stderr\n{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Copies the tree `from` to `to` as a clone has it: symbolic links as
/// links, without what building in a checkout leaves (`build/`, `dist/`,
/// `*.egg-info/`, `__pycache__/`, which git ignores).
fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name();
        let name_str = name.to_string_lossy();
        let (src, dst) = (entry.path(), to.join(&name));
        let kind = entry.file_type().unwrap();
        if kind.is_symlink() {
            std::os::unix::fs::symlink(std::fs::read_link(&src).unwrap(), &dst).unwrap();
        } else if kind.is_dir() {
            if !["build", "dist", "__pycache__"].contains(&&*name_str)
                && !name_str.ends_with(".egg-info")
            {
                copy_tree(&src, &dst);
            }
        } else {
            std::fs::copy(&src, &dst).unwrap();
        }
    }
}

/// Where setuptools finds `bdist_wheel` when the virtualenv cannot build a
/// wheel by itself: its setuptools (before 70.1) needs the separate `wheel`
/// package, which the virtualenv lacks. Then `wheel<0.46` (the last that
/// works with such a setuptools) is installed once next to the virtualenv,
/// from PyPI, and later runs build offline; None when the virtualenv has
/// what it needs.
fn build_tools(salt: &SaltEnv) -> Option<PathBuf> {
    let probe = "import importlib.util as u, sys\n\
                 sys.exit(0 if u.find_spec('setuptools.command.bdist_wheel') or u.find_spec('wheel') else 1)";
    let has = Command::new(salt.python())
        .args(["-c", probe])
        .env_remove("PYTHONPATH")
        .status()
        .unwrap();
    if has.success() {
        return None;
    }
    let tools = salt.venv.with_file_name("saltext-build-tools");
    if tools.join("wheel/__init__.py").exists() {
        return Some(tools);
    }
    // Installed aside and renamed into place: a run beside this one finds
    // either nothing or the whole directory.
    let partial = salt
        .venv
        .with_file_name(format!("saltext-build-tools.{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&partial);
    run_ok(
        Command::new(salt.bin("pip"))
            .args([
                "install",
                "--quiet",
                "--disable-pip-version-check",
                "--no-deps",
                "--target",
            ])
            .arg(&partial)
            .arg("wheel<0.46"),
    );
    if std::fs::rename(&partial, &tools).is_err() {
        // Another run put its copy in place first.
        let _ = std::fs::remove_dir_all(&partial);
        assert!(
            tools.join("wheel/__init__.py").exists(),
            "cannot put {} in place of {}",
            partial.display(),
            tools.display()
        );
    }
    Some(tools)
}

/// The virtualenv's pip with `args`, offline: no index, no build isolation
/// (the virtualenv's setuptools builds, with `tools` on its path), no cache.
fn pip<S: AsRef<OsStr>>(salt: &SaltEnv, tools: Option<&Path>, args: &[S]) -> Output {
    let mut c = Command::new(salt.bin("pip"));
    c.args(args).args([
        "--no-deps",
        "--no-index",
        "--no-cache-dir",
        "--disable-pip-version-check",
    ]);
    match tools {
        Some(t) => c.env("PYTHONPATH", t),
        None => c.env_remove("PYTHONPATH"),
    };
    run_ok(&mut c)
}

/// Asserts that the install directory `site` holds the runner as a file of
/// its own with the repository's runner code, and the distribution's
/// metadata at `version`.
fn assert_installed(site: &Path, version: &str) {
    let runner = site.join(INSTALLED_RUNNER);
    let meta = std::fs::symlink_metadata(&runner)
        .unwrap_or_else(|e| panic!("{} is not installed: {e}", runner.display()));
    assert!(
        meta.is_file(),
        "{} is a file (not a link into the checkout)",
        runner.display()
    );
    assert_eq!(
        std::fs::read_to_string(&runner).unwrap(),
        std::fs::read_to_string(repo().join(RUNNER)).unwrap(),
        "{} is {RUNNER}",
        runner.display()
    );
    let dist_info: Vec<PathBuf> = std::fs::read_dir(site)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension() == Some(OsStr::new("dist-info")))
        .collect();
    assert_eq!(
        dist_info.len(),
        1,
        "one distribution in {site:?}: {dist_info:?}"
    );
    let metadata = std::fs::read_to_string(dist_info[0].join("METADATA")).unwrap();
    assert!(
        metadata.lines().any(|l| l == format!("Version: {version}")),
        "{} says Version: {version}:\n{metadata}",
        dist_info[0].display()
    );
    let entry_points = std::fs::read_to_string(dist_info[0].join("entry_points.txt")).unwrap();
    assert!(
        entry_points.contains("[salt.loader]"),
        "{} declares a salt.loader entry point:\n{entry_points}",
        dist_info[0].display()
    );
}

/// `salt-run -c <conf> <args> --log-level=quiet` with `PYTHONPATH=<site>`
/// (none: without the package); panics with the command and its output
/// unless it exits 0.
fn salt_run(salt: &SaltEnv, conf: &Path, site: Option<&Path>, args: &[&str]) -> String {
    let mut c = Command::new(salt.salt_run());
    c.arg("-c").arg(conf).args(args).arg("--log-level=quiet");
    match site {
        Some(s) => c.env("PYTHONPATH", s),
        None => c.env_remove("PYTHONPATH"),
    };
    String::from_utf8(run_ok(&mut c).stdout).unwrap()
}

#[test]
fn salt_run_finds_the_installed_extension_without_runner_dirs() {
    let started = Instant::now();
    let salt = SaltEnv::get();
    let version = workspace_version();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let clone = d.join("clone");
    copy_tree(&repo().join("salt"), &clone.join("salt"));
    let package = clone.join(PACKAGE);
    let tools = build_tools(salt);
    let tools = tools.as_deref();

    // `pip install <dir>` from the checkout.
    let site = d.join("site");
    pip(
        salt,
        tools,
        &[
            OsStr::new("install"),
            OsStr::new("--no-build-isolation"),
            OsStr::new("--target"),
            site.as_os_str(),
            package.as_os_str(),
        ],
    );
    assert_installed(&site, &version);

    // `pip wheel <dir>`, then the wheel installed (no build on the master).
    let dist = d.join("dist");
    pip(
        salt,
        tools,
        &[
            OsStr::new("wheel"),
            OsStr::new("--no-build-isolation"),
            OsStr::new("--wheel-dir"),
            dist.as_os_str(),
            package.as_os_str(),
        ],
    );
    let wheels: Vec<PathBuf> = std::fs::read_dir(&dist)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(wheels.len(), 1, "one wheel: {wheels:?}");
    let wheel_name = wheels[0]
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    assert!(
        wheel_name.contains(&format!("conductor-{version}-")) && wheel_name.ends_with(".whl"),
        "the wheel {wheel_name} has the workspace's version {version}"
    );
    let from_wheel = d.join("site-from-wheel");
    pip(
        salt,
        tools,
        &[
            OsStr::new("install"),
            OsStr::new("--target"),
            from_wheel.as_os_str(),
            wheels[0].as_os_str(),
        ],
    );
    assert_installed(&from_wheel, &version);

    // A master config that lists no runner directory.
    let lab = Lab::example(&d.join("conductor"));
    let conf = write_master_config(d, &[], &lab.bin, &lab.runner_args());
    let master = std::fs::read_to_string(conf.join("master")).unwrap();
    assert!(!master.contains("runner_dirs"), "{master}");

    // Without the package, Salt has no `conduct` runner.
    let plan: Vec<&str> = ["conduct.group", "plan"]
        .into_iter()
        .chain(RUNNER_PLAN_WORDS)
        .chain(["--out=json"])
        .collect();
    let without = salt_run(salt, &conf, None, &plan);
    assert!(
        without.contains("'conduct.group' is not available"),
        "without the package, salt-run finds no conduct runner: {without}"
    );

    // With it, Salt lists the extension and runs the runner.
    let report = salt_run(salt, &conf, Some(&from_wheel), &["--versions-report"]);
    assert!(
        report
            .lines()
            .any(|l| l.trim() == format!("saltext.conductor: {version}")),
        "salt-run --versions-report lists saltext.conductor {version} under Salt Extensions:\n{report}"
    );
    let from_binary = lab.runner_plan();
    for s in [&site, &from_wheel] {
        let text = salt_run(salt, &conf, Some(s), &plan);
        let from_salt: serde_json::Value = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("salt-run printed no JSON ({e}): {text}"));
        assert_eq!(
            from_salt,
            from_binary,
            "salt-run conduct.group plan, with the package installed in {}, returns the binary's document",
            s.display()
        );
    }
    assert_eq!(from_binary["cpid"], "16833830331552303186");
    eprintln!(
        "saltext: built, installed and ran the Salt extension in {:.1?}",
        started.elapsed()
    );
}
