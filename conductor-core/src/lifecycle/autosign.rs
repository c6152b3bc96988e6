//! Minion key acceptance for the native provisioner, without `auto_accept`.
//!
//! Each run draws a random token (not the CPID, which anyone who can read
//! EC2 tags sees) and gives it to its minions as the grain [`AUTOSIGN_GRAIN`],
//! with `autosign_grains: [conductor_autosign]` in their config. While the run
//! bootstraps, the token is a line of `<autosign_grains_dir>/conductor_autosign`,
//! the file Salt's master reads to accept a minion whose grain matches a line;
//! the run removes its line once its minions are accepted (or it gives up).
//! Parallel runs share the file: every edit happens under an exclusive
//! `flock` of a lock file beside it and replaces the file atomically, so the
//! master never reads half of it. Each token follows a comment line naming
//! its run and an expiry; an edit drops entries whose expiry has passed, so a
//! crashed run's token does not outlive it by long.

use std::fs::OpenOptions;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

use tracing::warn;

use crate::cpid::Cpid;
use crate::error::Error;
use crate::layout::write_atomic;
use crate::reserve::now_ms;
use crate::settings::LaunchSettings;

/// The grain (and the file name in `autosign_grains_dir`) holding a run's token.
pub const AUTOSIGN_GRAIN: &str = "conductor_autosign";

/// A fresh random token: 128 bits from the thread's CSPRNG, as hex.
pub fn new_token() -> String {
    format!("{:032x}", rand::random::<u128>())
}

/// Gives a launch's minion the token: grain [`AUTOSIGN_GRAIN`] in
/// `settings.grains` (grains that are not tags) and the grain's name in the
/// minion config's `autosign_grains`.
pub fn add_to_settings(settings: &mut LaunchSettings, token: &str) {
    use serde_json::{Map, Value};
    let s = &mut settings.other;
    fn object<'a>(s: &'a mut Map<String, Value>, key: &str) -> &'a mut Map<String, Value> {
        let v = s
            .entry(key.to_string())
            .or_insert_with(|| Value::Object(Map::new()));
        if !v.is_object() {
            *v = Value::Object(Map::new());
        }
        v.as_object_mut().expect("made an object above")
    }
    object(s, "grains").insert(AUTOSIGN_GRAIN.into(), Value::from(token));
    let minion = object(s, "minion");
    let list = minion
        .entry("autosign_grains")
        .or_insert_with(|| Value::Array(vec![]));
    if !list.is_array() {
        *list = Value::Array(vec![]);
    }
    let list = list.as_array_mut().expect("made an array above");
    if !list.iter().any(|g| g == AUTOSIGN_GRAIN) {
        list.push(Value::from(AUTOSIGN_GRAIN));
    }
}

/// One run's entry in the autosign file.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    cpid: String,
    expires_ms: u64,
    token: String,
}

const MARK: &str = "# conductor cpid=";

fn parse(text: &str) -> Vec<Entry> {
    let mut out = Vec::new();
    let mut lines = text.lines();
    while let Some(line) = lines.next() {
        let Some(rest) = line.strip_prefix(MARK) else {
            continue;
        };
        let mut words = rest.split_whitespace();
        let cpid = words.next().unwrap_or_default().to_string();
        let expires_ms = words
            .next()
            .and_then(|w| w.strip_prefix("expires="))
            .and_then(|w| w.parse().ok())
            .unwrap_or(0);
        if let Some(token) = lines.next() {
            out.push(Entry {
                cpid,
                expires_ms,
                token: token.trim().to_string(),
            });
        }
    }
    out
}

fn print(entries: &[Entry]) -> String {
    let mut s = String::from(
        "# Autosign tokens of running Conductor runs (one per run, removed when it has bootstrapped).\n",
    );
    for e in entries {
        s.push_str(&format!(
            "{MARK}{} expires={}\n{}\n",
            e.cpid, e.expires_ms, e.token
        ));
    }
    s
}

/// A run's token listed in the autosign file; [`Autosign::close`] removes it,
/// and dropping it unclosed (an early return, a cancelled run, a close that
/// failed) removes it too.
#[derive(Debug)]
pub struct Autosign {
    dir: PathBuf,
    cpid: Cpid,
    /// The token the run's minions carry as [`AUTOSIGN_GRAIN`].
    pub token: String,
    open: bool,
}

impl Autosign {
    /// Lists a new token for `cpid` in `<dir>/conductor_autosign` until
    /// `ttl_ms` from now.
    pub async fn open(dir: &Path, cpid: Cpid, ttl_ms: u64) -> Result<Autosign, Error> {
        let token = new_token();
        let entry = Entry {
            cpid: cpid.to_string(),
            expires_ms: now_ms() + ttl_ms,
            token: token.clone(),
        };
        let d = dir.to_path_buf();
        blocking(move || {
            check_dir_now(&d)?;
            edit(&d, |entries| {
                entries.retain(|e| e.cpid != entry.cpid);
                entries.push(entry);
            })
        })
        .await?;
        Ok(Autosign {
            dir: dir.to_path_buf(),
            cpid,
            token,
            open: true,
        })
    }

    /// Refuses `dir` unless it is a directory: a run checks before it
    /// reserves anything, and again when it lists its token.
    pub async fn check_dir(dir: &Path) -> Result<(), Error> {
        let d = dir.to_path_buf();
        blocking(move || check_dir_now(&d)).await
    }

    /// Removes this run's token: its minions that are not accepted yet stay
    /// pending. When the edit fails, the token stays this run's to remove:
    /// a later `close`, or the drop, tries again.
    pub async fn close(&mut self) -> Result<(), Error> {
        let (d, cpid) = (self.dir.clone(), self.cpid.to_string());
        blocking(move || remove(&d, &cpid)).await?;
        self.open = false;
        Ok(())
    }
}

impl Drop for Autosign {
    fn drop(&mut self) {
        if self.open {
            if let Err(e) = remove(&self.dir, &self.cpid.to_string()) {
                warn!(error = %e, "removing the run's autosign token failed");
            }
        }
    }
}

fn check_dir_now(d: &Path) -> Result<(), Error> {
    if d.is_dir() {
        return Ok(());
    }
    Err(crate::input::InputError::invalid(
        "autosign_grains_dir",
        &d.display().to_string(),
        "is not a directory: create it, set the same path as autosign_grains_dir in the master's config, and point --autosign-grains-dir at it",
    )
    .into())
}

fn remove(dir: &Path, cpid: &str) -> Result<(), Error> {
    edit(dir, |entries| entries.retain(|e| e.cpid != cpid))
}

async fn blocking(f: impl FnOnce() -> Result<(), Error> + Send + 'static) -> Result<(), Error> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::io(PathBuf::new(), std::io::Error::other(e)))?
}

/// Applies `change` to the file's entries under the lock, drops expired
/// entries, and replaces the file (mode 0600: it holds secrets).
fn edit(dir: &Path, change: impl FnOnce(&mut Vec<Entry>)) -> Result<(), Error> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| Error::io(path, source)
    };
    let file = dir.join(AUTOSIGN_GRAIN);
    let lock_path = dir.join(format!(".{AUTOSIGN_GRAIN}.lock"));
    let lock = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(io(&lock_path))?;
    // SAFETY: flock on a descriptor we own; released when `lock` is closed.
    if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) } != 0 {
        return Err(io(&lock_path)(std::io::Error::last_os_error()));
    }
    let text = match std::fs::read_to_string(&file) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(io(&file)(e)),
    };
    let mut entries = parse(&text);
    change(&mut entries);
    let now = now_ms();
    entries.retain(|e| e.expires_ms > now);
    write_atomic(&file, print(&entries).as_bytes(), 0o600).map_err(io(&file))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens(dir: &Path) -> Vec<String> {
        let text = std::fs::read_to_string(dir.join(AUTOSIGN_GRAIN)).unwrap();
        // What Salt compares: every stripped line that is not a comment.
        text.lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(str::to_string)
            .collect()
    }

    #[tokio::test]
    async fn tokens_are_listed_while_open_and_removed_on_close_or_drop() {
        let dir = tempfile::tempdir().unwrap();
        let mut a = Autosign::open(dir.path(), Cpid::from_parts(1, 10), 60_000)
            .await
            .unwrap();
        let b = Autosign::open(dir.path(), Cpid::from_parts(2, 10), 60_000)
            .await
            .unwrap();
        assert_ne!(a.token, b.token);
        assert_eq!(a.token.len(), 32);
        assert_eq!(tokens(dir.path()), vec![a.token.clone(), b.token.clone()]);
        let b_token = b.token.clone();
        a.close().await.unwrap();
        assert_eq!(tokens(dir.path()), vec![b_token]);
        drop(b);
        assert!(tokens(dir.path()).is_empty());
        let mode = std::fs::metadata(dir.path().join(AUTOSIGN_GRAIN))
            .unwrap()
            .permissions();
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(mode.mode() & 0o777, 0o600);
    }

    /// A close whose edit fails returns the error and leaves the token to
    /// be removed: by a later close, or by the drop. The fault (the lock
    /// file replaced by a directory) denies root too.
    #[tokio::test]
    async fn a_failed_close_leaves_the_token_to_a_later_close_or_the_drop() {
        let dir = tempfile::tempdir().unwrap();
        let lock = dir.path().join(format!(".{AUTOSIGN_GRAIN}.lock"));
        let fault = |on: bool| {
            if on {
                std::fs::remove_file(&lock).unwrap();
                std::fs::create_dir(&lock).unwrap();
            } else {
                std::fs::remove_dir(&lock).unwrap();
            }
        };
        let mut a = Autosign::open(dir.path(), Cpid::from_parts(1, 10), 60_000)
            .await
            .unwrap();
        let mut b = Autosign::open(dir.path(), Cpid::from_parts(2, 10), 60_000)
            .await
            .unwrap();
        fault(true);
        let e = a.close().await.unwrap_err();
        assert!(e.to_string().contains(&lock.display().to_string()), "{e}");
        b.close().await.unwrap_err();
        assert_eq!(tokens(dir.path()), vec![a.token.clone(), b.token.clone()]);
        fault(false);
        a.close().await.unwrap();
        assert_eq!(tokens(dir.path()), vec![b.token.clone()], "a later close");
        drop(b);
        assert!(tokens(dir.path()).is_empty(), "the drop");
    }

    #[tokio::test]
    async fn an_expired_entry_is_dropped_by_the_next_edit() {
        let dir = tempfile::tempdir().unwrap();
        let stale = Autosign::open(dir.path(), Cpid::from_parts(1, 10), 0)
            .await
            .unwrap();
        std::mem::forget(stale); // a crashed run: nothing removes its entry
        let live = Autosign::open(dir.path(), Cpid::from_parts(2, 10), 60_000)
            .await
            .unwrap();
        assert_eq!(tokens(dir.path()), vec![live.token.clone()]);
    }

    #[test]
    fn settings_carry_the_token_grain_and_the_autosign_list() {
        let mut settings = LaunchSettings::parse(&serde_json::json!(
            {"image": "ami-1", "minion": {"master": "m", "autosign_grains": ["x"]}}
        ))
        .unwrap();
        add_to_settings(&mut settings, "tok");
        add_to_settings(&mut settings, "tok");
        let s = serde_json::Value::Object(settings.other);
        assert_eq!(s["grains"][AUTOSIGN_GRAIN], "tok");
        assert_eq!(
            s["minion"]["autosign_grains"],
            serde_json::json!(["x", AUTOSIGN_GRAIN])
        );
        assert_eq!(s["minion"]["master"], "m");
    }

    #[test]
    fn parse_reads_what_print_writes() {
        let e = vec![Entry {
            cpid: "12".into(),
            expires_ms: 5,
            token: "abc".into(),
        }];
        assert_eq!(parse(&print(&e)), e);
    }
}
