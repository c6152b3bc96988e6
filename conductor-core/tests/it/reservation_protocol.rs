//! The reservation protocol: the race the seed's protocol loses and ours
//! does not, and lease renewal during long runs. Paused tokio clock.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use conductor_core::now_ms;
use conductor_core::BackendError;
use conductor_core::Options;
use conductor_core::{CloudBackend, InstanceRef, Inventory, LaunchResult, LaunchSpec, Scope};
use conductor_core::{Provisioner, Region};
use conductor_testkit::fake_cloud::Lag;
use conductor_testkit::fixtures;
use conductor_testkit::harness::{paused_runtime, Harness};
use conductor_testkit::FakeCloud;

/// The seed's cloud handling: a launched instance counts as done at once
/// (no wait for it to show in the inventory).
#[derive(Debug)]
struct NoWait(Arc<FakeCloud>);

#[async_trait]
impl CloudBackend for NoWait {
    async fn inventory(&self, scope: &Scope) -> Result<Inventory, BackendError> {
        self.0.inventory(scope).await
    }
    async fn launch(&self, specs: &[LaunchSpec]) -> Result<Vec<LaunchResult>, BackendError> {
        self.0.launch(specs).await
    }
    async fn terminate(&self, refs: &[InstanceRef]) -> Result<(), BackendError> {
        self.0.terminate(refs).await
    }
    async fn wait_visible(
        &self,
        _: &Region,
        names: &[String],
        _: Duration,
    ) -> Result<BTreeSet<String>, BackendError> {
        Ok(names.iter().cloned().collect())
    }
}

/// Two runs of `role=activemq`: A launches at once; its instances show in
/// EC2 two seconds later. B starts after A has finished. Returns the names.
fn two_runs(seed_protocol: bool) -> Vec<String> {
    paused_runtime().block_on(async {
        let fake = Arc::new(FakeCloud::new().with_lag(Lag::Fixed(Duration::from_secs(2))));
        let cloud: Arc<dyn CloudBackend> = if seed_protocol {
            Arc::new(NoWait(fake.clone()))
        } else {
            fake.clone()
        };
        // Runs write files: the harness gives them a real directory.
        let h = Harness::new().with_options(|o| {
            *o = Options {
                provisioner: Provisioner::Ec2,
                release_grace: if seed_protocol {
                    Duration::ZERO
                } else {
                    Duration::from_secs(5)
                },
                check_after_reserve: !seed_protocol,
                backoff_base: Duration::from_millis(50),
                visible_timeout: Duration::from_secs(60),
                ..Options::default()
            }
        });
        let mk = || h.builder_on(cloud.clone()).build().unwrap();
        let a = mk()
            .create(&fixtures::role_request("activemq", None))
            .await
            .unwrap();
        assert!(a.success());
        let b = mk()
            .create(&fixtures::role_request("activemq", None))
            .await
            .unwrap();
        assert!(b.success());
        fake.live_instances()
            .iter()
            .filter_map(|i| i.name().map(str::to_string))
            .collect()
    })
}

/// Launches that take 30 s, leases of a 3 s TTL.
fn slow_launch_harness() -> Harness {
    Harness::new()
        .with_cloud(Arc::new(
            FakeCloud::new().with_latency(Duration::from_secs(30)),
        ))
        .with_options(|o| {
            *o = Options {
                provisioner: Provisioner::Ec2,
                release_grace: Duration::ZERO,
                lease_ttl: Duration::from_secs(3),
                visible_timeout: Duration::from_secs(120),
                ..Options::default()
            }
        })
}

fn duplicates(names: &[String]) -> Vec<String> {
    let mut seen = BTreeSet::new();
    names
        .iter()
        .filter(|n| !seen.insert(n.as_str()))
        .cloned()
        .collect()
}

#[test]
fn the_seed_protocol_hands_out_a_name_twice_and_ours_does_not() {
    let seed = two_runs(true);
    assert_eq!(
        duplicates(&seed),
        [
            "devops-mq01.us-east-1a.test.foobar.com",
            "devops-mq02.us-east-1a.test.foobar.com"
        ],
        "release right after launch, no re-check: the second run reuses the first run's names"
    );
    let ours = two_runs(false);
    assert!(duplicates(&ours).is_empty(), "{ours:?}");
    assert_eq!(ours.len(), 4);
}

/// A run whose launch takes far longer than the lease TTL keeps its keys:
/// they are renewed while it works.
#[test]
fn leases_are_renewed_while_a_run_works() {
    paused_runtime().block_on(async {
        let h = slow_launch_harness();
        let reserver = h.reserver.clone();
        let c = h.conductor();
        let run =
            tokio::spawn(async move { c.create(&fixtures::role_request("activemq", None)).await });
        // Well past the TTL, during the 30 s launch: the names are still held.
        tokio::time::sleep(Duration::from_secs(75)).await;
        let held = reserver.held(now_ms(), None, None).await.unwrap();
        let names: Vec<&str> = held
            .iter()
            .map(|k| k.as_str())
            .filter(|k| k.starts_with("test_devops-mq"))
            .collect();
        assert_eq!(
            names.len(),
            2,
            "renewed keys are held after 25 TTLs: {held:?}"
        );
        assert!(run.await.unwrap().unwrap().success());
        assert!(
            reserver.list(None).await.unwrap().is_empty(),
            "released at the end"
        );
    });
}

/// A run cancelled while it works (its future dropped) stops renewing: its
/// keys are free one TTL after the last renewal, not held forever.
#[test]
fn renewal_stops_when_a_run_is_cancelled() {
    paused_runtime().block_on(async {
        let h = slow_launch_harness();
        let reserver = h.reserver.clone();
        let c = h.conductor();
        let run =
            tokio::spawn(async move { c.create(&fixtures::role_request("activemq", None)).await });
        // Every call takes 30 s: at 45 s the run has read the inventory,
        // reserved its names and waits on the check after reserving, its
        // leases (TTL 3 s) kept only by its renewals.
        tokio::time::sleep(Duration::from_secs(45)).await;
        let held = reserver.held(now_ms(), None, None).await.unwrap();
        let names = held
            .iter()
            .filter(|k| k.as_str().contains("devops-mq"))
            .count();
        assert_eq!(names, 2, "its two names held while the run works: {held:?}");
        run.abort();
        assert!(run.await.unwrap_err().is_cancelled());
        // One TTL (3 s) after the last renewal, nothing renews them any more.
        tokio::time::sleep(Duration::from_secs(4)).await;
        let held = reserver.held(now_ms(), None, None).await.unwrap();
        assert!(
            held.is_empty(),
            "still renewed after cancellation: {held:?}"
        );
    });
}

mod fs_hardening {
    use std::time::{Duration, SystemTime};

    use conductor_core::{BackendErrorKind, Cpid, FsReserver, Layout, ReserveError};
    use conductor_core::{Env, Holder, Key, KeyKind, Owner, Reserver};

    fn owner() -> Owner {
        Owner::this_process(Cpid::generate(), Duration::from_secs(600))
    }

    fn key(text: &str) -> Key {
        Key::new(KeyKind::Name, text).unwrap()
    }

    fn age(path: &std::path::Path, by: Duration) {
        let f = std::fs::File::options().write(true).open(path).unwrap();
        f.set_modified(SystemTime::now() - by).unwrap();
    }

    /// A runner directory that cannot be written is the operator's input
    /// (`Rejected`: exit 2) naming the directory and the fix, not a
    /// conflict and not a panic.
    #[tokio::test]
    async fn a_read_only_directory_is_a_clear_error() {
        let d = tempfile::tempdir().unwrap();
        // As root, permission bits do not stop writes; /sys refuses new entries.
        let is_root = unsafe { libc::geteuid() } == 0;
        let runner = if is_root {
            std::path::PathBuf::from("/sys/conductor-read-only-test")
        } else {
            let r = d.path().join("runner");
            std::fs::create_dir_all(&r).unwrap();
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&r, std::fs::Permissions::from_mode(0o555)).unwrap();
            r
        };
        let r = FsReserver::new(&Layout::new(d.path(), &runner));
        let e = match r.try_reserve(&[key("test_ro.example.com")], &owner()).await {
            Err(ReserveError::Backend(e)) => e,
            other => panic!("expected an I/O error, got {other:?}"),
        };
        assert_eq!(e.kind, BackendErrorKind::Rejected);
        let text = e.to_string();
        assert!(
            text.contains("conductor-read-only-test") || text.contains("runner"),
            "{text}"
        );
        assert!(
            text.contains("not writable") && text.contains("--runner-dir"),
            "{text}"
        );
    }

    /// Temp files a killed writer left in the reservation directories are
    /// removed by `prune` once stale; a fresh one (a writer at work) is not.
    #[tokio::test]
    async fn prune_removes_leftover_temp_files() {
        let d = tempfile::tempdir().unwrap();
        let layout = Layout::new(d.path(), d.path());
        let r = FsReserver::new(&layout);
        let lease = r
            .try_reserve(&[key("test_tmp.example.com")], &owner())
            .await
            .unwrap();
        let names = layout.reserved_names_dir();
        let stale = names.join(".tmp.4000000.1");
        let stale_atomic = names.join(".test_x.tmp.4000000.2");
        let fresh = names.join(".tmp.4000000.3");
        for p in [&stale, &stale_atomic, &fresh] {
            std::fs::write(p, b"{").unwrap();
        }
        age(&stale, Duration::from_secs(3600));
        age(&stale_atomic, Duration::from_secs(3600));
        let pruned = r.prune(conductor_core::now_ms(), None, None).await.unwrap();
        assert!(pruned.is_empty(), "temp files are not keys: {pruned:?}");
        assert!(!stale.exists() && !stale_atomic.exists());
        assert!(fresh.exists(), "a fresh temp file may be a writer at work");
        assert_eq!(r.list(None).await.unwrap().len(), 1, "the live key stays");
        r.release(&lease, Duration::ZERO).await.unwrap();
    }

    /// A key file with no readable owner blocks its key (it might be held);
    /// `prune --older-than` removes it once it is older than that.
    #[tokio::test]
    async fn an_unreadable_key_file_is_held_until_pruned_by_age() {
        let d = tempfile::tempdir().unwrap();
        let layout = Layout::new(d.path(), d.path());
        let r = FsReserver::new(&layout);
        let k = key("test_garbled.example.com");
        std::fs::create_dir_all(layout.reserved_names_dir()).unwrap();
        let path = layout.reserved_names_dir().join(k.as_str());
        std::fs::write(&path, b"not json").unwrap();
        assert!(matches!(
            r.try_reserve(std::slice::from_ref(&k), &owner()).await,
            Err(ReserveError::Conflict(_))
        ));
        let now = conductor_core::now_ms();
        assert!(r.prune(now, None, None).await.unwrap().is_empty());
        assert!(r
            .prune(now, None, Some(Duration::from_secs(3600)))
            .await
            .unwrap()
            .is_empty());
        age(&path, Duration::from_secs(7200));
        assert_eq!(
            r.prune(now, None, Some(Duration::from_secs(3600)))
                .await
                .unwrap(),
            vec![k.clone()]
        );
        r.try_reserve(std::slice::from_ref(&k), &owner())
            .await
            .expect("free after prune");
    }

    /// What `prune --older-than` does with an odd entry.
    enum Prune {
        Removes,
        /// A directory that is not empty: someone else's data, left in place.
        Leaves,
    }

    /// Awaits `f`, failing (not hanging) if reading blocks on the FIFO at `path`.
    async fn unblocked<T>(path: &std::path::Path, f: impl std::future::Future<Output = T>) -> T {
        match tokio::time::timeout(Duration::from_secs(20), f).await {
            Ok(v) => v,
            Err(_) => {
                // A reader blocked opening a FIFO returns once a writer opens it:
                // the test then ends instead of hanging in the runtime's drop.
                use std::os::unix::fs::OpenOptionsExt;
                let _ = std::fs::OpenOptions::new()
                    .write(true)
                    .custom_flags(libc::O_NONBLOCK)
                    .open(path);
                panic!("reading the reservations blocked on {}", path.display());
            }
        }
    }

    /// An entry `make` puts at a key path that is not a readable owner file
    /// is held by an unknown owner: listed as foreign with its age, refused
    /// to `try_reserve`, held at plan time; `prune` with an age removes it
    /// (never a symlink's target) or, for a non-empty directory, leaves it.
    async fn an_odd_entry_is_held_by_an_unknown_owner(
        make: impl FnOnce(&std::path::Path),
        prune: Prune,
    ) {
        // In /tmp, which anyone may write, whatever $TMPDIR: see [`unprivileged`].
        let d = tempfile::tempdir_in("/tmp").unwrap();
        let layout = Layout::new(d.path(), d.path());
        let r = FsReserver::new(&layout);
        let k = key("test_odd.example.com");
        std::fs::create_dir_all(layout.reserved_names_dir()).unwrap();
        let path = layout.reserved_names_dir().join(k.as_str());
        make(&path);
        let now = conductor_core::now_ms();

        let listed = unblocked(&path, r.list(None)).await.unwrap();
        assert_eq!(listed.len(), 1, "{listed:?}");
        assert_eq!(listed[0].key, k);
        match listed[0].holder {
            Holder::Foreign { modified } => assert!(
                modified.abs_diff(now) < 3_600_000,
                "its age is the entry's own (lstat): {modified} vs {now}"
            ),
            ref other => panic!("expected a foreign holder, got {other:?}"),
        }
        match unblocked(&path, r.try_reserve(std::slice::from_ref(&k), &owner())).await {
            Err(ReserveError::Conflict(keys)) => assert_eq!(keys, std::slice::from_ref(&k)),
            other => panic!("expected a conflict, got {other:?}"),
        }
        let env = Env::new("test").unwrap();
        let held = unblocked(&path, r.held(now, Some(&env), None))
            .await
            .unwrap();
        assert_eq!(held, std::slice::from_ref(&k), "planning skips it");

        let hour = Some(Duration::from_secs(3600));
        let young = unblocked(&path, r.prune(now, None, hour)).await.unwrap();
        assert!(young.is_empty(), "younger than --older-than: {young:?}");
        let later = now + 2 * 3_600_000;
        let pruned = unblocked(&path, r.prune(later, None, hour)).await.unwrap();
        match prune {
            Prune::Removes => {
                assert_eq!(pruned, std::slice::from_ref(&k));
                assert!(std::fs::symlink_metadata(&path).is_err(), "removed");
                r.try_reserve(std::slice::from_ref(&k), &owner())
                    .await
                    .expect("free after prune");
            }
            Prune::Leaves => {
                assert!(pruned.is_empty(), "{pruned:?}");
                assert!(path.is_dir(), "a non-empty directory is left");
                assert_eq!(r.held(later, None, None).await.unwrap(), [k], "still held");
            }
        }
    }

    #[tokio::test]
    async fn an_empty_directory_at_a_key_is_held_until_pruned() {
        let make = |p: &std::path::Path| std::fs::create_dir(p).unwrap();
        an_odd_entry_is_held_by_an_unknown_owner(make, Prune::Removes).await;
    }

    #[tokio::test]
    async fn a_non_empty_directory_at_a_key_is_held_and_never_pruned() {
        let make = |p: &std::path::Path| {
            std::fs::create_dir(p).unwrap();
            std::fs::write(p.join("data"), b"someone else's").unwrap();
        };
        an_odd_entry_is_held_by_an_unknown_owner(make, Prune::Leaves).await;
    }

    #[tokio::test]
    async fn a_dangling_symlink_at_a_key_is_held_until_pruned() {
        let make =
            |p: &std::path::Path| std::os::unix::fs::symlink("/nonexistent/owner", p).unwrap();
        an_odd_entry_is_held_by_an_unknown_owner(make, Prune::Removes).await;
    }

    /// Not followed, even to a valid (here expired) owner record, and prune
    /// removes the link, not its target.
    #[tokio::test]
    async fn a_symlink_to_a_file_at_a_key_is_held_until_pruned() {
        let t = tempfile::tempdir().unwrap();
        let target = t.path().join("owner.json");
        let expired = Owner::this_process(Cpid::generate(), Duration::ZERO);
        std::fs::write(&target, serde_json::to_vec(&expired).unwrap()).unwrap();
        let make = |p: &std::path::Path| std::os::unix::fs::symlink(&target, p).unwrap();
        an_odd_entry_is_held_by_an_unknown_owner(make, Prune::Removes).await;
        assert!(target.exists(), "the link's target is left alone");
    }

    #[tokio::test]
    async fn a_symlink_to_a_directory_at_a_key_is_held_until_pruned() {
        let t = tempfile::tempdir().unwrap();
        std::fs::write(t.path().join("data"), b"someone else's").unwrap();
        let make = |p: &std::path::Path| std::os::unix::fs::symlink(t.path(), p).unwrap();
        an_odd_entry_is_held_by_an_unknown_owner(make, Prune::Removes).await;
        assert!(
            t.path().join("data").exists(),
            "the link's target is left alone"
        );
    }

    /// Runs `f` to completion on a runtime of its own whose threads (this
    /// one and every thread the runtime starts, `spawn_blocking`'s
    /// included) check file permissions as an unprivileged user: as root,
    /// the file-system uid becomes `nobody` (65534), which drops the
    /// capabilities that let root read any file whatever its mode; as
    /// anyone else, the modes apply already. So the tests of unreadable
    /// entries run as root too (CI's usual user) instead of skipping.
    fn unprivileged<F: std::future::Future>(f: F) -> F::Output {
        fn drop_fs_privileges() {
            if unsafe { libc::geteuid() } != 0 {
                return;
            }
            // SAFETY: setfsuid changes only this thread's file-system uid.
            unsafe { libc::setfsuid(65534) };
            // An invalid uid changes nothing and returns the current one.
            let now = unsafe { libc::setfsuid(u32::MAX) };
            assert_eq!(now, 65534, "setfsuid(65534) did not take effect");
        }
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .on_thread_start(drop_fs_privileges)
            .build()
            .unwrap();
        let root = unsafe { libc::geteuid() } == 0;
        drop_fs_privileges();
        let out = rt.block_on(f);
        drop(rt);
        if root {
            // SAFETY: as above; back to root's file-system uid for this thread.
            unsafe { libc::setfsuid(0) };
        }
        out
    }

    /// A file this user may not read (the runner's, root-owned, mode 0600),
    /// holding a valid owner record. Made by and read as an unprivileged
    /// user ([`unprivileged`]): mode 000 does not stop root.
    #[test]
    fn an_unreadable_file_at_a_key_is_held_until_pruned() {
        let make = |p: &std::path::Path| {
            use std::os::unix::fs::PermissionsExt;
            std::fs::write(p, serde_json::to_vec(&owner()).unwrap()).unwrap();
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o000)).unwrap();
            assert!(std::fs::read(p).is_err(), "{} is readable", p.display());
        };
        unprivileged(an_odd_entry_is_held_by_an_unknown_owner(
            make,
            Prune::Removes,
        ));
    }

    /// Never opened: opening a FIFO without a writer blocks.
    #[tokio::test]
    async fn a_fifo_at_a_key_is_held_until_pruned() {
        let make = |p: &std::path::Path| {
            use std::os::unix::ffi::OsStrExt;
            let c = std::ffi::CString::new(p.as_os_str().as_bytes()).unwrap();
            assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0, "mkfifo");
        };
        an_odd_entry_is_held_by_an_unknown_owner(make, Prune::Removes).await;
    }

    /// A reservation directory that cannot be read fails the listing (its
    /// keys are unknown), `Rejected`, naming it and saying it is not
    /// readable. Made and read as an unprivileged user ([`unprivileged`]):
    /// mode 0300 does not stop root.
    #[test]
    fn an_unreadable_reservation_directory_is_a_clear_error() {
        unprivileged(an_unreadable_reservation_directory())
    }

    async fn an_unreadable_reservation_directory() {
        use std::os::unix::fs::PermissionsExt;
        // In /tmp, which anyone may write, whatever $TMPDIR: see [`unprivileged`].
        let d = tempfile::tempdir_in("/tmp").unwrap();
        let layout = Layout::new(d.path(), d.path());
        let names = layout.reserved_names_dir();
        std::fs::create_dir_all(&names).unwrap();
        std::fs::set_permissions(&names, std::fs::Permissions::from_mode(0o300)).unwrap();
        let e = FsReserver::new(&layout).list(None).await.unwrap_err();
        assert_eq!(e.kind, BackendErrorKind::Rejected);
        let text = e.to_string();
        assert!(
            text.contains("reserved_names") && text.contains("not readable"),
            "{text}"
        );
        // So that the temporary directory can be removed.
        std::fs::set_permissions(&names, std::fs::Permissions::from_mode(0o700)).unwrap();
    }

    /// An owner file from before `started` and `phase` existed still reads
    /// (backward compatible JSON). It names no phase, so its run may have
    /// launched: its dead owner holds the key until it expires (the safe
    /// side); the same record saying `planning` frees it at once.
    #[tokio::test]
    async fn owner_files_without_a_start_time_still_read() {
        let d = tempfile::tempdir().unwrap();
        let layout = Layout::new(d.path(), d.path());
        let r = FsReserver::new(&layout);
        std::fs::create_dir_all(layout.reserved_names_dir()).unwrap();
        let host = conductor_core::this_host();
        let old = format!(
            r#"{{"cpid":"16833830331552303186","host":"{host}","pid":2000000000,"created":1,"expires":99999999999999}}"#
        );
        let k = key("test_old.example.com");
        let path = layout.reserved_names_dir().join(k.as_str());
        std::fs::write(&path, &old).unwrap();
        let listed = r.list(None).await.unwrap();
        assert_eq!(listed.len(), 1);
        let o = listed[0].holder.owner().expect("Conductor's record");
        assert_eq!(
            (o.started, o.phase),
            (None, conductor_core::Phase::Launching)
        );
        assert!(
            matches!(
                r.try_reserve(std::slice::from_ref(&k), &owner()).await,
                Err(conductor_core::ReserveError::Conflict(_))
            ),
            "no phase recorded: held until it expires"
        );
        std::fs::write(&path, old.replace("}", r#","phase":"planning"}"#)).unwrap();
        r.try_reserve(std::slice::from_ref(&k), &owner())
            .await
            .expect("a dead planning owner's key is taken over");
    }
}
