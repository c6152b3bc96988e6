//! Conductor's core: validated names, the pillar schema, the naming engine,
//! the four backend traits and the run lifecycle.
//!
//! Core never talks to AWS or Salt itself: it drives a [`CloudBackend`], a
//! [`Reserver`], a [`PillarSource`] and a [`SaltExecutor`] given by the caller.
//! It ships an in-memory cloud ([`MemCloud`]) and two reservers
//! ([`FsReserver`], [`MemReserver`]); conductor-aws and conductor-salt hold
//! the real backends.
#![warn(missing_docs)]

mod backend;
mod backoff;
mod basename;
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
pub mod user_data;

pub use backend::{BackendError, BackendErrorKind};
pub use backoff::Backoff;
pub use basename::{Basename, NameMatch};
pub use cloud::{
    conductor_tag, poll_visible, CloudBackend, Instance, InstanceRef, InstanceState, InstanceTags,
    Inventory, LaunchFailure, LaunchResult, LaunchSpec, Launched, Scope, Selector, NAME_TAG,
    TAG_PREFIX,
};
pub use conductor::{Conductor, ConductorBuilder, Options, Provisioner};
pub use cpid::Cpid;
pub use error::{backend_class, Error, ErrorClass, PlanError, Result};
pub use grains::{name_in_env, GrainId, GrainIds, MinionIds};
pub use ids::IdScope;
pub use input::{InputError, PillarError};
pub use layout::Layout;
pub use lifecycle::{
    client_token, slot_key, AdoptError, AdoptReport, AdoptRequest, Adoption, CreateReport,
    DestroyPlan, DestroyReport, InstanceQuery, InstanceStatus, Observer, ReportError, Selected,
    Selection, SkippedInstance, Step, UpdateReport,
};
pub use mem_cloud::MemCloud;
pub use names::{check_instance_name, Env, Group, Region, Role, SystemName, Zone};
pub use pillar::{EnvironmentSpec, GroupSpec, Hooks, Pillar, RoleSpec, SystemEntry, Throttle};
pub use plan::{
    plan, plan_with_grains, ClusterIds, Plan, PlanFiles, PlanKeys, PlannedInstance, SystemIds,
};
pub use render::{map_vms, read_map_file, YAML_ONLY};
pub use request::{CreateRequest, Target};
pub use reserve::{
    ms, now_ms, this_host, FsReserver, Holder, Key, KeyKind, Lease, MemReserver, Owner, Phase,
    Reservation, ReserveError, Reserver,
};
pub use retry::{RetryCloud, RetryPolicy};
pub use salt::{
    CachedGrains, CloudRunResult, CloudVm, MinionKeys, PillarSource, SaltExecutor, StateFailure,
    StateRunResult, StaticPillar,
};
pub use settings::{LaunchSettings, NetworkInterface, Volume, DEFAULT_SIZE};
pub use tokio_util::sync::CancellationToken;
