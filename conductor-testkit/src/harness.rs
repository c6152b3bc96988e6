//! One test set-up for the lifecycle: a [`Conductor`] wired to the fakes
//! (FakeCloud, MemReserver, optionally FakeSalt), the devops pillar, file
//! roots in a temp dir and tunables sized for tests — instead of a builder
//! written out in every test file.
//!
//! ```
//! use conductor_testkit::{fixtures, harness::Harness};
//! let h = Harness::new();
//! let rt = tokio::runtime::Runtime::new().unwrap();
//! let report = rt
//!     .block_on(h.conductor().create(&fixtures::role_request("activemq", None)))
//!     .unwrap();
//! assert_eq!(report.launched.len(), 2);
//! assert!(report.success());
//! ```

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use conductor_core::{
    CloudBackend, Conductor, ConductorBuilder, FsReserver, Layout, MemReserver, Options, Pillar,
    Provisioner, Reserver, SaltExecutor, StaticPillar,
};

use crate::fixtures;
use crate::FakeCloud;

/// Fakes, pillar and options one test runs conductors with.
#[derive(Debug)]
pub struct Harness {
    /// The cloud every conductor of the harness uses.
    pub cloud: Arc<FakeCloud>,
    /// The reserver every conductor of the harness shares.
    pub reserver: Arc<dyn Reserver>,
    /// The Salt executor, when set.
    pub salt: Option<Arc<dyn SaltExecutor>>,
    /// The pillar.
    pub pillar: Pillar,
    /// Lifecycle tunables: native provisioner, no grace, quick backoff.
    pub opts: Options,
    /// The file roots: `etc/` (config dir) and `runner/` (runner dir) under
    /// [`Harness::dir`] unless [`Harness::with_layout`] says otherwise.
    pub layout: Layout,
    /// A temp dir, removed with the harness, that holds the file roots.
    pub dir: tempfile::TempDir,
}

impl Default for Harness {
    fn default() -> Self {
        Self::new()
    }
}

impl Harness {
    /// An empty FakeCloud, a MemReserver, no Salt, the devops pillar.
    pub fn new() -> Self {
        let dir = tempfile::tempdir().expect("a temp dir");
        Self {
            cloud: Arc::new(FakeCloud::new()),
            reserver: Arc::new(MemReserver::new()),
            salt: None,
            pillar: fixtures::devops_pillar(),
            opts: test_options(),
            layout: Layout::new(dir.path().join("etc"), dir.path().join("runner")),
            dir,
        }
    }

    /// Uses `cloud` instead of an empty FakeCloud.
    pub fn with_cloud(mut self, cloud: Arc<FakeCloud>) -> Self {
        self.cloud = cloud;
        self
    }

    /// Uses `reserver`.
    pub fn with_reserver(mut self, reserver: Arc<dyn Reserver>) -> Self {
        self.reserver = reserver;
        self
    }

    /// Uses an [`FsReserver`] on the harness's runner dir (call it after
    /// [`Harness::with_layout`]).
    pub fn with_fs_reserver(self) -> Self {
        let fs = Arc::new(FsReserver::new(&self.layout));
        self.with_reserver(fs)
    }

    /// Uses `salt` as the Salt executor.
    pub fn with_salt(mut self, salt: Arc<dyn SaltExecutor>) -> Self {
        self.salt = Some(salt);
        self
    }

    /// Uses `pillar`.
    pub fn with_pillar(mut self, pillar: Pillar) -> Self {
        self.pillar = pillar;
        self
    }

    /// Changes the options (those of [`test_options`] to begin with).
    pub fn with_options(mut self, edit: impl FnOnce(&mut Options)) -> Self {
        edit(&mut self.opts);
        self
    }

    /// Uses the file roots `layout` makes of the harness's temp dir (other
    /// dirs under it, or roots elsewhere).
    pub fn with_layout(mut self, layout: impl FnOnce(&Path) -> Layout) -> Self {
        self.layout = layout(self.dir.path());
        self
    }

    /// A builder with everything wired (add an observer or a cancellation).
    pub fn builder(&self) -> ConductorBuilder {
        self.builder_on(self.cloud.clone())
    }

    /// A builder like [`Harness::builder`] over another cloud (a wrapper of
    /// [`Harness::cloud`], or a mock).
    pub fn builder_on(&self, cloud: Arc<dyn CloudBackend>) -> ConductorBuilder {
        let mut b = Conductor::builder()
            .cloud(cloud)
            .reserver(self.reserver.clone())
            .pillar(Arc::new(StaticPillar(self.pillar.clone())))
            .layout(self.layout.clone())
            .options(self.opts.clone());
        if let Some(s) = &self.salt {
            b = b.salt(s.clone());
        }
        b
    }

    /// A conductor with everything wired.
    pub fn conductor(&self) -> Conductor {
        self.builder()
            .build()
            .expect("the harness wires every backend")
    }
}

/// Options for tests: native provisioner, no release grace, quick backoff,
/// many attempts, a visibility wait that suits FakeCloud's lags.
pub fn test_options() -> Options {
    Options {
        provisioner: Provisioner::Ec2,
        release_grace: Duration::ZERO,
        backoff_base: Duration::from_millis(10),
        backoff_max: Duration::from_millis(100),
        max_attempts: 100,
        visible_timeout: Duration::from_secs(30),
        ..Options::default()
    }
}

/// File roots laid out as on a Salt master, under `root`: `etc/salt` (config
/// dir) and `srv/runners` (runner dir). For [`Harness::with_layout`].
pub fn master_layout(root: &Path) -> Layout {
    Layout::new(root.join("etc/salt"), root.join("srv/runners"))
}

/// A current-thread runtime whose clock starts paused: sleeps finish at
/// once in virtual time, so schedules of seconds or minutes run instantly.
pub fn paused_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .expect("a paused runtime")
}
