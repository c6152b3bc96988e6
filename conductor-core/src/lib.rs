//! Conductor's core: validated names, the pillar schema, the naming engine,
//! the four backend traits and the run lifecycle.
//!
//! Core never talks to AWS or Salt itself: it drives a [`CloudBackend`], a
//! [`Reserver`], a [`PillarSource`] and a [`SaltExecutor`] given by the caller.
#![warn(missing_docs)]

pub mod basename;
pub mod cloud;
pub mod conductor;
pub mod cpid;
pub mod error;
pub mod fs_reserver;
pub mod layout;
pub mod names;
pub mod pillar;
pub mod plan;
pub mod render;
pub mod request;
pub mod reserve;
pub mod retry;
pub mod salt;
pub mod user_data;

pub use cloud::{CloudBackend, Instance, InstanceState, Inventory, LaunchSpec, Scope, Selector};
pub use conductor::{
    Conductor, ConductorBuilder, CreateReport, DestroyReport, InstanceQuery, InstanceStatus,
    Provisioner, Selection, UpdateReport,
};
pub use cpid::Cpid;
pub use error::{
    BackendError, BackendErrorKind, Error, ErrorClass, InputError, PillarError, ReserveError,
};
pub use fs_reserver::FsReserver;
pub use layout::Layout;
pub use names::{Env, Group, Region, Role, SystemName, Zone};
pub use pillar::Pillar;
pub use plan::{plan, Plan};
pub use request::{CreateRequest, Target};
pub use reserve::{Key, KeyKind, Lease, Owner, Reservation, Reserver};
pub use retry::{RetryCloud, RetryPolicy};
pub use salt::{PillarSource, SaltExecutor};
