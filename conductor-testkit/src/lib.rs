//! Test kit for Conductor: fakes of the backends, pillar fixtures, the
//! conformance suites every backend must pass, and helpers that start real
//! services (moto, Salt) for tests.
//!
//! # Features
//!
//! | feature | default | what it adds |
//! |---|---|---|
//! | `moto` | on | `moto`: a moto server on a free loopback port (python3 with `moto[server]` at run time) |
//! | `salt` | on | `salt_env`, `salt_lab`, `minion_cloud`, `aws_front` (HTTPS front making moto answer Salt's EC2 driver as AWS does): a Salt virtualenv, a real master and minions (python3 at run time); implies `moto` |
//! | `mock` | off | `mocks`: `mockall` mocks of the backend traits |
//!
//! A downstream CI that only tests naming or its own backends against the
//! conformance suites turns the defaults off
//! (`conductor-testkit = { version = "0.1", default-features = false }`)
//! and needs no Python.
#![warn(missing_docs)]

#[cfg(feature = "salt")]
pub mod aws_front;
pub mod bin_lab;
pub mod conformance;
pub mod crash;
pub mod ec2_replay;
pub mod fake_cloud;
pub mod fake_salt;
pub mod fault_reserver;
pub mod fixtures;
pub mod harness;
pub mod logs;
#[cfg(feature = "salt")]
pub mod minion_cloud;
#[cfg(feature = "mock")]
pub mod mocks;
#[cfg(feature = "moto")]
pub mod moto;
pub mod net;
pub mod proxy;
pub mod pty;
pub mod reserve_figures;
#[cfg(feature = "salt")]
pub mod salt_env;
#[cfg(feature = "salt")]
pub mod salt_lab;
#[cfg(feature = "salt")]
pub mod script_server;
pub mod strict_ec2;
pub mod wrappers;

pub use fake_cloud::FakeCloud;
pub use fake_salt::FakeSalt;
pub use fault_reserver::FaultReserver;
pub use wrappers::{FaultCloud, LagCloud, LatencyCloud, RecordingCloud};

/// The examples of README.md, run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
