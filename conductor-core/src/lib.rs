//! Conductor's core: validated names, the pillar schema, the naming engine,
//! the four backend traits and the run lifecycle.
//!
//! Core never talks to AWS or Salt itself: it drives a [`CloudBackend`], a
//! [`Reserver`], a [`PillarSource`] and a [`SaltExecutor`] given by the caller.
//! It ships an in-memory cloud ([`MemCloud`]) and two reservers
//! ([`FsReserver`], [`MemReserver`]); conductor-aws and conductor-salt hold
//! the real backends.
//!
//! # From a pillar string to a create, with a cloud of your own
//!
//! 1. **Pillar.** [`Pillar::from_yaml_str`] parses and validates the
//!    `conductor:` pillar (errors name the key path); [`StaticPillar`] serves
//!    it to the lifecycle. Pillar kept elsewhere: implement [`PillarSource`].
//! 2. **Cloud.** Implement [`CloudBackend`]: `inventory` (every live
//!    instance matching a [`Scope`]; [`Scope::matches`] is the reference),
//!    `launch` (one [`LaunchResult`] per [`LaunchSpec`], in order) and
//!    `terminate`. The trait is object-safe through `async_trait`, so your
//!    crate depends on `async-trait` too.
//! 3. **Reservations.** [`FsReserver`] keeps parallel runs of one host apart
//!    through files, [`MemReserver`] those of one process; for several hosts
//!    use a shared one (conductor-aws's `DynamoReserver`) or implement
//!    [`Reserver`].
//! 4. **Wiring.** [`Conductor::builder`] takes the backends, the file
//!    [`Layout`] (where provider, profile and map files and the run logs
//!    go) and the [`Options`]. Without a [`SaltExecutor`], hooks and startup
//!    states are skipped and only [`Provisioner::Ec2`] works.
//! 5. **Runs.** [`Conductor::plan`] reads only and says which names and ids
//!    a create would choose; [`Conductor::create`] reserves them, launches
//!    through your cloud, waits until the instances are visible and releases
//!    the reservations. Run as many at once as you like: they never choose
//!    the same name.
//!
//! ```
//! use std::sync::{Arc, Mutex};
//!
//! use async_trait::async_trait;
//! use conductor_core::{
//!     BackendError, CloudBackend, Conductor, CreateRequest, Env, FsReserver, Group, Instance,
//!     InstanceRef, InstanceState, Inventory, LaunchResult, LaunchSpec, Launched, Layout, Options,
//!     Pillar, Provisioner, Role, Scope, StaticPillar, Target, Zone,
//! };
//!
//! /// A cloud that keeps its machines in a list (think: a CMDB, an on-premises VM API).
//! #[derive(Debug, Default)]
//! struct ListCloud(Mutex<Vec<Instance>>);
//!
//! #[async_trait]
//! impl CloudBackend for ListCloud {
//!     async fn inventory(&self, scope: &Scope) -> Result<Inventory, BackendError> {
//!         let machines = self.0.lock().unwrap();
//!         let instances = machines.iter().filter(|m| scope.matches(m)).cloned().collect();
//!         Ok(Inventory { instances })
//!     }
//!
//!     async fn launch(&self, specs: &[LaunchSpec]) -> Result<Vec<LaunchResult>, BackendError> {
//!         let mut machines = self.0.lock().unwrap();
//!         let mut results = Vec::new();
//!         for spec in specs {
//!             let id = format!("vm-{}", machines.len() + 1);
//!             machines.push(Instance {
//!                 id: id.clone(),
//!                 region: spec.zone.region(),
//!                 zone: spec.zone.to_string(),
//!                 state: InstanceState::Running,
//!                 launch_time: None,
//!                 instance_type: Some(spec.settings.size.clone()),
//!                 private_ip: None,
//!                 tags: spec.tags.clone(), // the Name tag and the id tags
//!             });
//!             let launched = Launched {
//!                 name: spec.name.clone(),
//!                 instance_id: id,
//!                 detail: serde_json::Value::Null,
//!             };
//!             results.push(LaunchResult { name: spec.name.clone(), outcome: Ok(launched) });
//!         }
//!         Ok(results)
//!     }
//!
//!     async fn terminate(&self, refs: &[InstanceRef]) -> Result<(), BackendError> {
//!         self.0.lock().unwrap().retain(|m| !refs.iter().any(|r| r.id == m.id));
//!         Ok(())
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // 1. The pillar, from a string.
//! let pillar = Pillar::from_yaml_str(
//!     "conductor:
//!        environments: {lab: {domain: example.org}}
//!        groups:
//!          web:
//!            provider: {size: small}
//!            profile: {image: vm-template-1}
//!            roles: {frontend: {basename: web-feXX.REGION.ENV, nodes: 2}}",
//! )?;
//!
//! // 2.-4. Your cloud, reservations on files, file roots in a directory of your own.
//! let dir = tempfile::tempdir()?;
//! let layout = Layout::new(dir.path().join("etc-salt"), dir.path().join("runner"));
//! let cloud = Arc::new(ListCloud::default());
//! let conductor = Conductor::builder()
//!     .cloud(cloud.clone())
//!     .reserver(Arc::new(FsReserver::new(&layout)))
//!     .pillar(Arc::new(StaticPillar(pillar)))
//!     .layout(layout)
//!     .options(Options { provisioner: Provisioner::Ec2, ..Options::default() })
//!     .build()?;
//!
//! // 5. Plan (reads only), then create.
//! let request = CreateRequest::new(
//!     Group::new("web")?,
//!     Env::new("lab")?,
//!     Zone::new("eu-west-1b")?,
//!     Target::Role { role: Role::new("frontend")?, count: None },
//! );
//! let plan = conductor.plan(&request).await?;
//! assert_eq!(plan.names(), ["web-fe01.eu-west-1b.lab.example.org", "web-fe02.eu-west-1b.lab.example.org"]);
//!
//! let report = conductor.create(&request).await?;
//! assert!(report.success(), "{report:?}");
//! assert_eq!(report.launched, plan.names());
//! assert_eq!(cloud.0.lock().unwrap().len(), 2);
//!
//! // The next run sees them in your cloud and goes on from there.
//! let next = conductor.plan(&request).await?;
//! assert_eq!(next.names()[0], "web-fe03.eu-west-1b.lab.example.org");
//! # Ok(())
//! # }
//! ```
//!
//! `examples/embed.rs` is the same as a program; the testkit
//! (`conductor-testkit`) has the conformance suites your backends should
//! pass.
//!
//! # Features
//!
//! None: no optional parts, and no AWS or Salt dependency.
#![warn(missing_docs)]

mod account;
mod adopt_error;
mod backend;
mod backoff;
mod basename;
mod clock;
mod cloud;
mod conductor;
mod cpid;
mod error;
mod grains;
mod ids;
mod input;
mod layout;
mod lifecycle;
mod mem_cloud;
mod names;
mod pillar;
mod plan;
mod render;
mod request;
mod reserve;
mod retry;
mod salt;
mod settings;
mod suggest;
pub mod user_data;

pub use account::{AccountSpec, CloudAccounts, MemAccounts};
pub use backend::{BackendError, BackendErrorKind};
pub use backoff::Backoff;
pub use basename::{Basename, NameMatch};
pub use clock::{iso_utc, iso_utc_ms, Clock, ClockSkew, CloudTime, SkewVerdict, SKEW_FLOOR};
pub use cloud::{
    conductor_tag, poll_visible, CloudBackend, Instance, InstanceRef, InstanceState, InstanceTags,
    Inventory, LaunchFailure, LaunchResult, LaunchSpec, Launched, Scope, Selector, NAME_TAG,
    TAG_PREFIX,
};
pub use conductor::{Conductor, ConductorBuilder, Options, Provisioner};
pub use cpid::Cpid;
pub use error::{backend_class, Error, ErrorClass, PlanError, Result};
pub use grains::{name_env, GrainId, GrainIds, MinionIds, NameEnv};
pub use ids::IdScope;
pub use input::{InputError, PillarError, MAX_PILLAR_ERRORS};
pub use layout::{write_atomic, CloudFiles, Layout, Pruned};
pub use lifecycle::{
    client_token, slot_key, AdoptError, AdoptReport, AdoptRequest, Adoption, CreateReport,
    DestroyPlan, DestroyReport, InstanceQuery, InstanceStatus, Observer, Progress, ReportError,
    Selected, Selection, SkippedInstance, Step, UpdateReport,
};
pub use mem_cloud::MemCloud;
pub use names::{check_instance_name, Env, Group, Region, Role, SystemName, Zone};
pub use pillar::{
    EnvironmentSpec, GroupSpec, Hooks, Pillar, RoleSpec, SystemEntry, Throttle, MAX_NODES,
};
pub use plan::limits::{MAX_TAGS, MAX_TAG_KEY_CHARS, MAX_TAG_VALUE_CHARS, MAX_USER_DATA_BYTES};
pub use plan::{
    plan, plan_with_grains, ClusterIds, Plan, PlanFiles, PlanKeys, PlannedInstance, SystemIds,
};
pub use render::{map_vms, read_map_file, YAML_ONLY};
pub use request::{CreateRequest, Target};
pub use reserve::{
    ms, now_ms, this_host, this_pid_ns, FsReserver, Holder, Key, KeyKind, Lease, MemReserver,
    Owner, Phase, Reservation, ReserveError, Reserver,
};
pub use retry::{RetryCloud, RetryPolicy};
pub use salt::{
    CachedGrains, CloudRunResult, CloudVm, MinionKeys, PillarSource, SaltExecutor, StateFailure,
    StateRunResult, StaticPillar,
};
pub use settings::{LaunchSettings, NetworkInterface, Volume, DEFAULT_SIZE};
pub use suggest::did_you_mean;
pub use tokio_util::sync::CancellationToken;

/// The examples of README.md, run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
