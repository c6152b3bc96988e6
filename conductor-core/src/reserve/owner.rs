//! Who holds a key, until when, and what its run is doing (the lease's
//! phase); the lease clock; whether a local owner still lives.

use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::cpid::Cpid;

/// What the run holding a lease is doing; decides whether its keys may be
/// freed when the run is gone before the lease expires.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    /// Nothing of the run can exist in the cloud yet: a dead owner frees
    /// its keys at once.
    Planning,
    /// Written before the first launch call: instances may exist, so the
    /// keys are held until the lease expires, whoever is alive. Also the
    /// reading of an owner record that names no phase (the safe side).
    #[default]
    Launching,
    /// Released with a grace period (EC2's reads lag behind launches): held
    /// until the grace ends, whoever is alive.
    Released,
}

/// Milliseconds since the Unix epoch, now: the clock of every lease.
///
/// Anchored once to the system clock and advanced by tokio's clock, so that a
/// test on a paused tokio clock sees leases expire in virtual time; outside a
/// paused runtime it follows the monotonic clock from the anchor.
pub fn now_ms() -> u64 {
    static ANCHOR: OnceLock<(u64, std::time::Instant)> = OnceLock::new();
    let (wall, mono) = ANCHOR.get_or_init(|| {
        let wall = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(ms)
            .unwrap_or(0);
        (wall, tokio::time::Instant::now().into_std())
    });
    let elapsed = tokio::time::Instant::now()
        .into_std()
        .saturating_duration_since(*mono);
    wall.saturating_add(ms(elapsed))
}

/// A duration in whole milliseconds (saturating).
pub fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Who holds a reservation, until when, and in which phase; stored as JSON
/// with each key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Owner {
    /// The run's CPID.
    pub cpid: Cpid,
    /// Host name of the machine running the run.
    pub host: String,
    /// Process id of the run on `host`.
    pub pid: u32,
    /// Creation time, epoch milliseconds.
    pub created: u64,
    /// Expiry, epoch milliseconds; at or after it the key is free for anyone.
    pub expires: u64,
    /// Start time of the owner process (clock ticks after boot, from
    /// `/proc/<pid>/stat`), so a reused pid is not taken for the owner.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started: Option<u64>,
    /// Where `pid` means something: the kernel's boot id and the owner's pid
    /// namespace, as `<boot id>/pid:[<inode>]` (see [`this_pid_ns`]), so a
    /// process of another container or machine of the same host name is
    /// not judged by a pid of this one. Absent in records of older versions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid_ns: Option<String>,
    /// What the run is doing (see [`Phase`]).
    #[serde(default)]
    pub phase: Phase,
}

impl Owner {
    /// An owner for this process, created now, expiring after `ttl`, planning.
    pub fn this_process(cpid: Cpid, ttl: Duration) -> Self {
        let now = now_ms();
        Self {
            cpid,
            host: this_host(),
            pid: std::process::id(),
            created: now,
            expires: now.saturating_add(ms(ttl)),
            started: process_start(std::process::id()),
            pid_ns: this_pid_ns(),
            phase: Phase::Planning,
        }
    }

    /// Whether the lease has expired at `now` (epoch milliseconds).
    pub fn is_expired(&self, now: u64) -> bool {
        self.expires <= now
    }

    /// Whether `other` is the same run (same CPID, host and pid). `pid_ns`
    /// is not compared: two runs never hold one CPID at once (its key,
    /// `cpid.<CPID>`, is reserved first), and records of older versions lack it.
    pub fn same_run(&self, other: &Owner) -> bool {
        self.cpid == other.cpid && self.host == other.host && self.pid == other.pid
    }

    /// Whether the owner is known alive: `Some` when it runs on this host and
    /// in this pid namespace (checked by its pid and start time), `None` when
    /// only its expiry can tell: another host, or the same host name with
    /// another boot id or pid namespace (another container or machine, or
    /// this one before a reboot). A record that names no namespace (written
    /// by an older version) is judged by its host name alone.
    pub fn alive(&self) -> Option<bool> {
        if self.host != this_host() {
            return None;
        }
        if let Some(ns) = &self.pid_ns {
            if this_pid_ns().as_ref() != Some(ns) {
                return None;
            }
        }
        let Ok(pid) = i32::try_from(self.pid) else {
            return Some(false);
        };
        // SAFETY: kill with signal 0 sends nothing; it only checks the pid.
        let r = unsafe { libc::kill(pid, 0) };
        let exists = r == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM);
        // A pid that exists but started at another time was reused by another process.
        let same = match (self.started, process_start(self.pid)) {
            (Some(recorded), Some(now)) => recorded == now,
            _ => true,
        };
        Some(exists && same)
    }

    /// Whether a key held by this owner is free for anyone at `now`: its
    /// lease expired, or it was still planning and its run is gone (a run
    /// that may have launched holds its keys until they expire).
    pub fn is_free(&self, now: u64) -> bool {
        self.is_expired(now) || (self.phase == Phase::Planning && self.alive() == Some(false))
    }

    /// Whether `prune` may remove a key held by this owner: it is free, or it
    /// was created more than `older_than` ago and its owner is known dead (it
    /// ran on this host, in this pid namespace, and is gone, whatever its
    /// phase). An owner whose liveness is unknown (it runs on another host,
    /// or in another pid namespace) is held until its lease expires, however
    /// old: its renewals move only the expiry, never `created`, so age says
    /// nothing about whether it still runs.
    pub fn is_prunable(&self, now: u64, older_than: Option<Duration>) -> bool {
        self.is_free(now)
            || (older_than.is_some_and(|d| self.created.saturating_add(ms(d)) <= now)
                && self.alive() == Some(false))
    }
}

/// The host name of this machine (`/proc/sys/kernel/hostname`, `$HOSTNAME`, or `localhost`).
pub fn this_host() -> String {
    static HOST: OnceLock<String> = OnceLock::new();
    HOST.get_or_init(|| {
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .ok()
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .or_else(|| std::env::var("HOSTNAME").ok())
            .unwrap_or_else(|| "localhost".into())
    })
    .clone()
}

/// Where this process's pids mean something, `<boot id>/pid:[<inode>]`: the
/// kernel's boot id (`/proc/sys/kernel/random/boot_id`) and this process's pid
/// namespace (the link `/proc/self/ns/pid`), where `/proc` tells both.
///
/// Two processes see the same pids only when both agree: containers sharing
/// a host name (`--uts=host`, pods on one node) differ by namespace, machines
/// of the same name and one machine across a reboot by boot id.
pub fn this_pid_ns() -> Option<String> {
    static NS: OnceLock<Option<String>> = OnceLock::new();
    NS.get_or_init(|| {
        let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").ok()?;
        let boot = boot.trim();
        let ns = std::fs::read_link("/proc/self/ns/pid").ok()?;
        let ns = ns.to_str()?;
        (!boot.is_empty() && !ns.is_empty()).then(|| format!("{boot}/{ns}"))
    })
    .clone()
}

/// Start time of process `pid` in clock ticks after boot (field 22 of
/// `/proc/<pid>/stat`), where `/proc` exists.
fn process_start(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces; fields after it follow its ')'.
    stat.rsplit_once(')')?
        .1
        .split_whitespace()
        .nth(19)?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reused_pid_is_not_the_owner() {
        let me = Owner::this_process(Cpid::generate(), Duration::from_secs(60));
        assert!(
            me.started.is_some(),
            "/proc gives this process's start time"
        );
        assert_eq!(me.alive(), Some(true));
        let reused = Owner {
            started: me.started.map(|s| s + 1),
            ..me.clone()
        };
        assert_eq!(
            reused.alive(),
            Some(false),
            "same pid, other start time: another process"
        );
        let elsewhere = Owner {
            host: "other.invalid".into(),
            ..me
        };
        assert_eq!(elsewhere.alive(), None);
    }

    /// A run of another container or machine that shares this host name:
    /// its pid says nothing here, so its keys are held until they expire,
    /// even while it plans and its pid is dead (or someone else's) here.
    #[test]
    fn an_owner_in_another_pid_namespace_is_not_judged_by_its_pid() {
        let me = Owner::this_process(Cpid::generate(), Duration::from_secs(60));
        let ns = me
            .pid_ns
            .clone()
            .expect("/proc names this process's namespace");
        assert_eq!(Some(ns.as_str()), this_pid_ns().as_deref());
        let (boot, pidns) = ns.split_once('/').expect("<boot id>/<namespace>");
        assert_eq!(boot.len(), 36, "a boot id: {ns}");
        assert!(pidns.starts_with("pid:["), "a pid namespace: {ns}");
        let now = now_ms();
        let two_hours = Some(Duration::from_secs(7_200));
        let here_dead = Owner {
            started: me.started.map(|s| s + 1),
            created: now - 3 * 3_600_000,
            ..me.clone()
        };
        assert_eq!(
            here_dead.alive(),
            Some(false),
            "same namespace: judged here"
        );
        assert!(here_dead.is_free(now));
        for other in [
            format!("{boot}/pid:[1]"),
            format!("00000000-0000-0000-0000-000000000000/{pidns}"),
        ] {
            let there = Owner {
                pid_ns: Some(other.clone()),
                ..here_dead.clone()
            };
            assert_eq!(there.alive(), None, "{other}: liveness unknown");
            assert!(!there.is_free(now), "{other}: planning, held until expiry");
            assert!(
                !there.is_prunable(now, two_hours),
                "{other}: kept by prune --older-than"
            );
            assert!(!there.is_prunable(now, Some(Duration::ZERO)));
            assert!(there.is_free(there.expires), "{other}: free at expiry");
            assert!(there.is_prunable(there.expires, None));
        }
        // A record of an older version names no namespace: judged here by its
        // host name, as before.
        let old = Owner {
            pid_ns: None,
            ..here_dead
        };
        assert_eq!(old.alive(), Some(false));
        assert!(old.is_free(now));
        assert_eq!(Owner { pid_ns: None, ..me }.alive(), Some(true));
    }

    #[test]
    fn the_pid_namespace_round_trips_and_may_be_absent() {
        let me = Owner::this_process(Cpid::generate(), Duration::from_secs(60));
        let json = serde_json::to_string(&me).unwrap();
        assert!(json.contains(r#""pid_ns":""#), "{json}");
        assert_eq!(serde_json::from_str::<Owner>(&json).unwrap(), me);
        let old: Owner = serde_json::from_str(
            r#"{"cpid":"16833830331552303186","host":"h","pid":1,"created":0,"expires":9,"started":5,"phase":"planning"}"#,
        )
        .unwrap();
        assert_eq!(old.pid_ns, None);
        assert!(
            !serde_json::to_string(&old).unwrap().contains("pid_ns"),
            "not written when unknown"
        );
    }

    #[test]
    fn an_old_owner_is_prunable_only_when_known_dead() {
        let now = now_ms();
        let two_hours = Some(Duration::from_secs(7_200));
        let me = Owner {
            created: now - 3 * 3_600_000,
            phase: Phase::Launching,
            ..Owner::this_process(Cpid::generate(), Duration::from_secs(600))
        };
        assert!(!me.is_prunable(now, two_hours), "alive here: kept");
        let dead = Owner {
            started: me.started.map(|s| s + 1),
            ..me.clone()
        };
        assert!(dead.is_prunable(now, two_hours), "dead here: old enough");
        assert!(!dead.is_prunable(now, None), "dead, launching: not free");
        let remote = Owner {
            host: "other.invalid".into(),
            ..me
        };
        assert!(
            !remote.is_prunable(now, two_hours),
            "another host's unexpired lease is kept, however old"
        );
        assert!(remote.is_prunable(remote.expires, two_hours));
    }

    #[test]
    fn a_dead_owner_frees_its_keys_only_while_planning() {
        let me = Owner::this_process(Cpid::generate(), Duration::from_secs(60));
        let now = now_ms();
        let dead = Owner {
            started: me.started.map(|s| s + 1),
            ..me.clone()
        };
        assert!(dead.is_free(now), "planning, owner gone: free");
        for phase in [Phase::Launching, Phase::Released] {
            let held = Owner {
                phase,
                ..dead.clone()
            };
            assert!(!held.is_free(now), "{phase:?}: held until expiry");
            assert!(held.is_free(held.expires), "{phase:?}: free at expiry");
        }
        let old: Owner = serde_json::from_str(
            r#"{"cpid":"16833830331552303186","host":"h","pid":1,"created":0,"expires":9}"#,
        )
        .unwrap();
        assert_eq!(
            old.phase,
            Phase::Launching,
            "no phase recorded: the safe side"
        );
    }
}
