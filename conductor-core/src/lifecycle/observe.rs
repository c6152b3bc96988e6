//! `Observer`: the lifecycle points a run passes, for callers that want to
//! follow a run (progress, metrics) or act at a point (crash tests).

use std::fmt;

use crate::cpid::Cpid;

/// A point of a run's lifecycle, reported as the run passes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Step {
    /// The run's CPID is reserved.
    CpidClaimed,
    /// Its names and ids are reserved and checked against the cloud.
    Reserved,
    /// Its provider, profile and map files are written.
    FilesWritten,
    /// Its keys are fenced and marked launching; the first launch call follows.
    Launching,
    /// The provisioner returned.
    Launched,
    /// The launched instances showed in the inventory (or the wait ended).
    Visible,
    /// The keys of settled instances are released with the grace.
    Released,
}

impl Step {
    /// Every step, in lifecycle order.
    pub const ALL: [Step; 7] = [
        Step::CpidClaimed,
        Step::Reserved,
        Step::FilesWritten,
        Step::Launching,
        Step::Launched,
        Step::Visible,
        Step::Released,
    ];

    /// A stable name (`cpid_claimed`, `reserved`, ...).
    pub fn as_str(&self) -> &'static str {
        match self {
            Step::CpidClaimed => "cpid_claimed",
            Step::Reserved => "reserved",
            Step::FilesWritten => "files_written",
            Step::Launching => "launching",
            Step::Launched => "launched",
            Step::Visible => "visible",
            Step::Released => "released",
        }
    }

    /// The step named `name` (see [`Step::as_str`]).
    pub fn parse(name: &str) -> Option<Step> {
        Step::ALL.into_iter().find(|s| s.as_str() == name)
    }
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How far a phase of a run has come: what a progress display shows
/// (`launching 4/6`, `minions answered 4/6`). Reported as counts change,
/// starting at zero, so a display can show a phase before it ends.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Progress {
    /// The run reserved the names (and ids) of `instances` instances, in
    /// `attempts` plan-and-reserve attempts.
    Reserved {
        /// Instances the run builds.
        instances: usize,
        /// Plan-and-reserve attempts it took.
        attempts: u32,
    },
    /// An orchestration hook starts (`which` is `pre_create`, ...).
    Hook {
        /// The hook's list: `pre_create`, `post_create`, `pre_update`, ...
        which: String,
        /// The orchestration SLS it runs.
        sls: String,
    },
    /// Launch calls returned for `done` of `total` instances.
    Launching {
        /// Instances whose launch returned.
        done: usize,
        /// Instances to launch.
        total: usize,
    },
    /// `seen` of `total` launched instances show in the inventory.
    Visible {
        /// Instances the inventory shows.
        seen: usize,
        /// Instances launched.
        total: usize,
    },
    /// `answered` of `total` new minions answer the master; `waiting`
    /// names the others.
    Minions {
        /// Minions that answered `test.ping`.
        answered: usize,
        /// Minions waited for.
        total: usize,
        /// The minions still waited for.
        waiting: Vec<String>,
    },
    /// Startup states finished on `done` of `total` minions.
    States {
        /// Minions whose startup states ran.
        done: usize,
        /// Minions that get startup states.
        total: usize,
    },
}

/// Told of each [`Step`] a create run passes; set with
/// `ConductorBuilder::observer`. Called inline: keep it quick.
///
/// ```
/// use std::sync::{Arc, Mutex};
///
/// use conductor_core::{Cpid, Observer, Step};
///
/// /// Keeps the steps it is told of.
/// #[derive(Debug, Default)]
/// struct Steps(Mutex<Vec<Step>>);
///
/// impl Observer for Steps {
///     fn step(&self, _cpid: Cpid, step: Step) {
///         self.0.lock().unwrap().push(step);
///     }
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// // The testkit's harness: a conductor on the in-memory fakes and temporary file roots.
/// let harness = conductor_testkit::harness::Harness::new();
/// let steps = Arc::new(Steps::default());
/// let conductor = harness.builder().observer(steps.clone()).build()?;
/// let report = conductor.create(&conductor_testkit::fixtures::role_request("activemq", None)).await?;
/// assert!(report.success());
/// assert_eq!(*steps.0.lock().unwrap(), Step::ALL);
/// # Ok(())
/// # }
/// ```
pub trait Observer: Send + Sync + fmt::Debug {
    /// Run `cpid` passed `step`.
    fn step(&self, cpid: Cpid, step: Step);

    /// Run `cpid` came as far as `progress` in a phase (create and update
    /// runs); by default ignored.
    fn progress(&self, cpid: Cpid, progress: &Progress) {
        let _ = (cpid, progress);
    }
}
