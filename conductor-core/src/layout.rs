//! Where a run's files go (DESIGN section 6), and crash-safe writes.

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::cpid::Cpid;
use crate::names::{Env, Group, Zone};

/// The two roots and every path derived from them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Layout {
    /// Salt config root (`/etc/salt`): cloud providers and profiles.
    pub config_dir: PathBuf,
    /// Runner root (`/srv/runners`): maps, reservations, logs.
    pub runner_dir: PathBuf,
}

impl Default for Layout {
    fn default() -> Self {
        Self {
            config_dir: "/etc/salt".into(),
            runner_dir: "/srv/runners".into(),
        }
    }
}

impl Layout {
    /// A layout with both roots given.
    pub fn new(config_dir: impl Into<PathBuf>, runner_dir: impl Into<PathBuf>) -> Self {
        Self {
            config_dir: config_dir.into(),
            runner_dir: runner_dir.into(),
        }
    }

    /// The provider and profile id of a run: `<group>_<CPID>`.
    pub fn cloud_id(group: &Group, cpid: Cpid) -> String {
        format!("{group}_{cpid}")
    }

    /// `<config-dir>/cloud.providers.d/<group>_<CPID>.conf`.
    pub fn provider_file(&self, group: &Group, cpid: Cpid) -> PathBuf {
        self.config_dir
            .join("cloud.providers.d")
            .join(format!("{}.conf", Self::cloud_id(group, cpid)))
    }

    /// `<config-dir>/cloud.profiles.d/<group>_<CPID>.conf`.
    pub fn profile_file(&self, group: &Group, cpid: Cpid) -> PathBuf {
        self.config_dir
            .join("cloud.profiles.d")
            .join(format!("{}.conf", Self::cloud_id(group, cpid)))
    }

    /// `<runner-dir>/maps/<CPID>/cloud.providers.d/<group>_<CPID>.conf`: the
    /// run's copy of its provider file, kept (mode 0600) after the run
    /// removed the one in `<config-dir>` when it ended.
    pub fn provider_copy(&self, group: &Group, cpid: Cpid) -> PathBuf {
        self.maps_dir(cpid)
            .join("cloud.providers.d")
            .join(format!("{}.conf", Self::cloud_id(group, cpid)))
    }

    /// `<runner-dir>/maps/<CPID>/cloud.profiles.d/<group>_<CPID>.conf`: the
    /// run's copy of its profile file.
    pub fn profile_copy(&self, group: &Group, cpid: Cpid) -> PathBuf {
        self.maps_dir(cpid)
            .join("cloud.profiles.d")
            .join(format!("{}.conf", Self::cloud_id(group, cpid)))
    }

    /// `<runner-dir>/maps/<CPID>/<group>_<zone>_<saltenv>.map`.
    pub fn map_file(&self, cpid: Cpid, group: &Group, zone: &Zone, saltenv: &Env) -> PathBuf {
        self.maps_dir(cpid)
            .join(format!("{group}_{zone}_{saltenv}.map"))
    }

    /// `<runner-dir>/maps/<CPID>`.
    pub fn maps_dir(&self, cpid: Cpid) -> PathBuf {
        self.runner_dir.join("maps").join(cpid.to_string())
    }

    /// `<runner-dir>/reserved_names`.
    pub fn reserved_names_dir(&self) -> PathBuf {
        self.runner_dir.join("reserved_names")
    }

    /// `<runner-dir>/reserved_ids`.
    pub fn reserved_ids_dir(&self) -> PathBuf {
        self.runner_dir.join("reserved_ids")
    }

    /// `<runner-dir>/logs/conductor`: the continuous admin log.
    pub fn admin_log_dir(&self) -> PathBuf {
        self.runner_dir.join("logs").join("conductor")
    }

    /// `<runner-dir>/state_runs/<CPID>`.
    pub fn state_runs_dir(&self, cpid: Cpid) -> PathBuf {
        self.runner_dir.join("state_runs").join(cpid.to_string())
    }

    /// `<runner-dir>/cloud_runs/<CPID>`.
    pub fn cloud_runs_dir(&self, cpid: Cpid) -> PathBuf {
        self.runner_dir.join("cloud_runs").join(cpid.to_string())
    }

    /// `state_runs/<CPID>/orch_state_run-<sls>._<rand>.out`.
    pub fn orch_log(&self, cpid: Cpid, sls: &str, rand: u32) -> PathBuf {
        self.state_runs_dir(cpid)
            .join(format!("orch_state_run-{}._{rand}.out", file_safe(sls)))
    }

    /// `state_runs/<CPID>/state_run-<GROUP>_conductor._<rand>.out`.
    pub fn state_log(&self, cpid: Cpid, group: &Group, rand: u32) -> PathBuf {
        self.state_runs_dir(cpid).join(format!(
            "state_run-{}_conductor._{rand}.out",
            group.as_str().to_uppercase()
        ))
    }

    /// `cloud_runs/<CPID>/cloud_run-conductor._group-<action>_<rand>.out`.
    pub fn cloud_log(&self, cpid: Cpid, action: &str, rand: u32) -> PathBuf {
        self.cloud_runs_dir(cpid)
            .join(format!("cloud_run-conductor._group-{action}_{rand}.out"))
    }
}

impl Layout {
    /// Every file of run `cpid`: its map directory (with the copies of its
    /// provider and profile), `cloud_runs/<CPID>`, `state_runs/<CPID>`, and
    /// its provider and profile files in `<config-dir>` while the run is
    /// going (or after it crashed), as [`Layout::cloud_files`] lists them
    /// (an operator's file that only looks like one is not the run's);
    /// sorted.
    pub fn run_files(&self, cpid: Cpid) -> Vec<PathBuf> {
        fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
            let Ok(entries) = std::fs::read_dir(dir) else {
                return;
            };
            for e in entries.flatten() {
                let p = e.path();
                if p.is_dir() {
                    walk(&p, out);
                } else {
                    out.push(p);
                }
            }
        }
        let mut files = Vec::new();
        for d in [
            self.maps_dir(cpid),
            self.cloud_runs_dir(cpid),
            self.state_runs_dir(cpid),
        ] {
            walk(&d, &mut files);
        }
        // Those `cloud_files` lists: an operator's file named like a run's
        // (another top key), or one that cannot be read, is not the run's.
        files.extend(
            self.cloud_files()
                .files
                .into_iter()
                .filter(|(c, _)| *c == cpid)
                .map(|(_, p)| p),
        );
        files.sort();
        files
    }

    /// The provider and profile files in `<config-dir>/cloud.providers.d`
    /// and `cloud.profiles.d` (`<group>_<CPID>.conf` whose top key is
    /// `<group>_<CPID>`, as a run writes them; an operator's file that only
    /// looks like one is not listed), with their CPID; and the files named
    /// like a run's that could not be read (not listed either), with why.
    pub fn cloud_files(&self) -> CloudFiles {
        let mut out = CloudFiles::default();
        for d in ["cloud.providers.d", "cloud.profiles.d"] {
            let Ok(entries) = std::fs::read_dir(self.config_dir.join(d)) else {
                continue;
            };
            for e in entries.flatten() {
                let name = e.file_name();
                let Some(stem) = name.to_str().and_then(|n| n.strip_suffix(".conf")) else {
                    continue;
                };
                let Some(cpid) = stem.rsplit_once('_').and_then(|(_, c)| Cpid::parse(c).ok())
                else {
                    continue;
                };
                let top_key = format!("{stem}:");
                match std::fs::read_to_string(e.path()) {
                    Ok(text) if text.lines().any(|l| l == top_key) => {
                        out.files.push((cpid, e.path()));
                    }
                    Ok(_) => {}
                    Err(error) => out.unreadable.push((e.path(), error)),
                }
            }
        }
        out.files.sort();
        out.unreadable.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    /// Removes the files runs left that started at or before `before`
    /// (epoch seconds) and are not `running`: their provider and profile files in
    /// `<config-dir>` (a crashed run's) and their directories under the
    /// runner root (`maps/`, `cloud_runs/`, `state_runs/`), one run after
    /// the other, oldest first. `stop` is asked before each run: once it
    /// says so, the runs not reached are left whole ([`Pruned::stopped`]).
    /// A file named like a run's that cannot be read is kept (it may be a
    /// run's) and named in [`Pruned::unreadable`].
    pub fn prune_runs(
        &self,
        before: u64,
        running: impl Fn(Cpid) -> bool,
        stop: impl Fn() -> bool,
    ) -> std::io::Result<Pruned> {
        let old = |c: Cpid| c.epoch() <= before && !running(c);
        let cloud = self.cloud_files();
        let mut pruned = Pruned {
            unreadable: cloud.unreadable,
            ..Pruned::default()
        };
        let mut cpids: Vec<Cpid> = self.runs();
        for (cpid, _) in &cloud.files {
            if !cpids.contains(cpid) {
                cpids.push(*cpid);
            }
        }
        cpids.sort_by_key(|c| (c.epoch(), c.to_string()));
        for cpid in cpids.into_iter().filter(|c| old(*c)) {
            if stop() {
                pruned.stopped = true;
                break;
            }
            for (_, path) in cloud.files.iter().filter(|(c, _)| *c == cpid) {
                match std::fs::remove_file(path) {
                    Ok(()) => pruned.removed.push(path.clone()),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(e),
                }
            }
            for d in [
                self.maps_dir(cpid),
                self.cloud_runs_dir(cpid),
                self.state_runs_dir(cpid),
            ] {
                match std::fs::remove_dir_all(&d) {
                    Ok(()) => pruned.removed.push(d),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(e),
                }
            }
            pruned.runs += 1;
        }
        pruned.removed.sort();
        Ok(pruned)
    }

    /// CPIDs of the runs with files under the runner root, oldest first.
    pub fn runs(&self) -> Vec<Cpid> {
        let mut cpids = std::collections::BTreeSet::new();
        for d in ["maps", "cloud_runs", "state_runs"] {
            let Ok(entries) = std::fs::read_dir(self.runner_dir.join(d)) else {
                continue;
            };
            for e in entries.flatten() {
                if let Some(c) = e.file_name().to_str().and_then(|n| Cpid::parse(n).ok()) {
                    cpids.insert((c.epoch(), c.to_string(), c));
                }
            }
        }
        cpids.into_iter().map(|(_, _, c)| c).collect()
    }
}

/// What [`Layout::cloud_files`] found.
#[derive(Debug, Default)]
pub struct CloudFiles {
    /// The runs' provider and profile files, with their CPID, sorted.
    pub files: Vec<(Cpid, PathBuf)>,
    /// The files named like a run's (`<name>_<CPID>.conf`) that could not
    /// be read, with the error, sorted: whose they are is not known.
    pub unreadable: Vec<(PathBuf, std::io::Error)>,
}

/// What [`Layout::prune_runs`] did.
#[derive(Debug, Default)]
pub struct Pruned {
    /// The files and directories removed, sorted.
    pub removed: Vec<PathBuf>,
    /// How many runs were pruned (each whole).
    pub runs: usize,
    /// The files named like a run's that could not be read, kept, with the error.
    pub unreadable: Vec<(PathBuf, std::io::Error)>,
    /// Whether `stop` ended the prune before every old run was reached.
    pub stopped: bool,
}

/// `text` with every character outside `[A-Za-z0-9._-]` replaced by `_`.
fn file_safe(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// Writes `bytes` to `path` crash-safely: a temp file beside it (mode `mode`),
/// fsync, rename over `path`, fsync of the directory. Creates parent dirs.
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> std::io::Result<()> {
    replace_file(path, bytes, mode)?;
    sync_dir(parent_dir(path))
}

/// [`write_atomic`] without the directory's fsync, for callers that rename
/// several files into one directory and then [`sync_dir`] it once: until
/// then a crash may leave `path` as it was, never half-written.
///
/// The temp file is `.tmp.<pid>.<random>` (at most 36 bytes), whatever the
/// length of `path`'s name: a name that fits `NAME_MAX` (255 bytes) can be
/// replaced, and listings that skip dot files skip it.
pub(crate) fn replace_file(path: &Path, bytes: &[u8], mode: u32) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let dir = parent_dir(path);
    std::fs::create_dir_all(dir)?;
    let tmp = dir.join(format!(
        ".tmp.{}.{}",
        std::process::id(),
        rand::random::<u64>()
    ));
    let result = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Fsyncs directory `dir`, making the renames and links into it durable.
pub(crate) fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

/// The directory `path` is in (`.` for a bare file name).
fn parent_dir(path: &Path) -> &Path {
    path.parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

/// A random number for log file names (`._<rand>.out`).
pub fn log_rand() -> u32 {
    rand::random::<u32>() % 100_000
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn seed_paths() {
        let l = Layout::default();
        let cpid = Cpid::from_parts(1683383033, 1552303186);
        let g = Group::new("devops").unwrap();
        assert_eq!(
            l.provider_file(&g, cpid),
            PathBuf::from("/etc/salt/cloud.providers.d/devops_16833830331552303186.conf")
        );
        assert_eq!(
            l.map_file(
                cpid,
                &g,
                &Zone::new("us-east-1a").unwrap(),
                &Env::new("test").unwrap()
            ),
            PathBuf::from("/srv/runners/maps/16833830331552303186/devops_us-east-1a_test.map")
        );
        assert_eq!(
            l.state_log(cpid, &g, 137),
            PathBuf::from(
                "/srv/runners/state_runs/16833830331552303186/state_run-DEVOPS_conductor._137.out"
            )
        );
    }

    #[test]
    fn atomic_write_sets_mode_and_leaves_no_temp() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("a/b/provider.conf");
        write_atomic(&p, b"x: 1\n", 0o600).unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"x: 1\n");
        assert_eq!(
            std::fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(std::fs::read_dir(p.parent().unwrap()).unwrap().count(), 1);
    }

    #[test]
    fn prune_runs_removes_old_runs_files_but_not_a_running_ones() {
        let d = tempfile::tempdir().unwrap();
        let l = Layout::new(d.path().join("etc"), d.path().join("runner"));
        let g = Group::new("devops").unwrap();
        let (old, running, young) = (
            Cpid::from_parts(1, 1_000),
            Cpid::from_parts(2, 1_000),
            Cpid::from_parts(3, 5_000),
        );
        for c in [old, running, young] {
            let top = format!("#!yaml\ndevops_{c}:\n  provider: x\n");
            write_atomic(&l.provider_file(&g, c), top.as_bytes(), 0o600).unwrap();
            write_atomic(&l.profile_file(&g, c), top.as_bytes(), 0o644).unwrap();
            write_atomic(&l.provider_copy(&g, c), b"p", 0o600).unwrap();
            write_atomic(&l.cloud_log(c, "create", 1), b"{}", 0o644).unwrap();
        }
        // Files that are not a run's stay: one named like a run's file
        // (`backup_20240101000000` reads as a CPID of 1973) whose top key
        // is another.
        write_atomic(
            &l.config_dir.join("cloud.providers.d/site.conf"),
            b"x",
            0o600,
        )
        .unwrap();
        let lookalike = l
            .config_dir
            .join("cloud.providers.d/backup_20240101000000.conf");
        write_atomic(&lookalike, b"ec2-backup:\n  driver: ec2\n", 0o600).unwrap();
        let pruned = l.prune_runs(2_000, |c| c == running, || false).unwrap();
        assert!(!pruned.stopped);
        assert_eq!(pruned.runs, 1);
        assert!(pruned.unreadable.is_empty());
        assert_eq!(pruned.removed, {
            let mut v = vec![
                l.provider_file(&g, old),
                l.profile_file(&g, old),
                l.maps_dir(old),
                l.cloud_runs_dir(old),
            ];
            v.sort();
            v
        });
        assert!(l.run_files(old).is_empty());
        for c in [running, young] {
            assert_eq!(l.run_files(c).len(), 4, "{c}");
        }
        assert!(l.config_dir.join("cloud.providers.d/site.conf").exists());
        assert!(
            lookalike.exists(),
            "an operator's file named like a run's stays"
        );
    }

    /// The run's files are those `runs prune` would remove: an operator's
    /// file named like the run's provider (another top key), or a
    /// directory so named, is not one (`runs archive --remove` removes what
    /// `run_files` lists).
    #[test]
    fn a_runs_files_leave_out_lookalikes_in_the_config_dir() {
        let d = tempfile::tempdir().unwrap();
        let l = Layout::new(d.path().join("etc"), d.path().join("runner"));
        let g = Group::new("devops").unwrap();
        let c = Cpid::from_parts(1, 1_000);
        run_files(&l, &g, c);
        let lookalike = l
            .config_dir
            .join(format!("cloud.providers.d/site_{c}.conf"));
        write_atomic(&lookalike, b"ec2-site:\n  driver: ec2\n", 0o600).unwrap();
        let dir = l
            .config_dir
            .join(format!("cloud.profiles.d/other_{c}.conf"));
        std::fs::create_dir_all(&dir).unwrap();
        let mut expected = vec![
            l.provider_file(&g, c),
            l.profile_file(&g, c),
            l.provider_copy(&g, c),
            l.cloud_log(c, "create", 1),
        ];
        expected.sort();
        assert_eq!(l.run_files(c), expected);
    }

    /// Writes a run's provider, profile, provider copy and cloud log.
    fn run_files(l: &Layout, g: &Group, c: Cpid) {
        let top = format!("#!yaml\ndevops_{c}:\n  provider: x\n");
        write_atomic(&l.provider_file(g, c), top.as_bytes(), 0o600).unwrap();
        write_atomic(&l.profile_file(g, c), top.as_bytes(), 0o644).unwrap();
        write_atomic(&l.provider_copy(g, c), b"p", 0o600).unwrap();
        write_atomic(&l.cloud_log(c, "create", 1), b"{}", 0o644).unwrap();
    }

    #[test]
    fn a_stopped_prune_leaves_the_runs_it_did_not_reach_whole() {
        let d = tempfile::tempdir().unwrap();
        let l = Layout::new(d.path().join("etc"), d.path().join("runner"));
        let g = Group::new("devops").unwrap();
        let runs = [
            Cpid::from_parts(1, 1_000),
            Cpid::from_parts(2, 1_000),
            Cpid::from_parts(3, 1_000),
        ];
        for c in runs {
            run_files(&l, &g, c);
        }
        // Asked before each run: stop once one run is pruned.
        let asked = std::cell::Cell::new(0);
        let pruned = l
            .prune_runs(
                2_000,
                |_| false,
                || {
                    asked.set(asked.get() + 1);
                    asked.get() > 1
                },
            )
            .unwrap();
        assert!(pruned.stopped);
        assert_eq!(pruned.runs, 1);
        assert!(l.run_files(runs[0]).is_empty(), "the first run, whole");
        assert_eq!(pruned.removed.len(), 4, "{:?}", pruned.removed);
        for c in &runs[1..] {
            assert_eq!(l.run_files(*c).len(), 4, "{c} is untouched");
        }
    }

    #[test]
    fn files_named_like_a_runs_that_cannot_be_read_are_kept_and_named() {
        let d = tempfile::tempdir().unwrap();
        let l = Layout::new(d.path().join("etc"), d.path().join("runner"));
        let g = Group::new("devops").unwrap();
        let old = Cpid::from_parts(1, 1_000);
        run_files(&l, &g, old);
        // Not UTF-8, and a directory: neither can be read as text (as
        // root too, which reads a file whatever its mode).
        let providers = l.config_dir.join("cloud.providers.d");
        let binary = providers.join(format!("other_{old}.conf"));
        std::fs::write(&binary, b"\xff\xfe\x00 not yaml").unwrap();
        let dir = l
            .config_dir
            .join(format!("cloud.profiles.d/other_{old}.conf"));
        std::fs::create_dir_all(&dir).unwrap();
        let pruned = l.prune_runs(2_000, |_| false, || false).unwrap();
        assert!(l.run_files(old).iter().all(|f| *f == binary || *f == dir));
        let named: Vec<_> = pruned.unreadable.iter().map(|(p, _)| p.clone()).collect();
        let mut expected = vec![binary.clone(), dir.clone()];
        expected.sort();
        assert_eq!(named, expected);
        assert!(binary.exists() && dir.exists(), "kept");
    }
}
