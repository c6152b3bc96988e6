//! Test kit for Conductor: fakes of the backends, pillar fixtures, the
//! conformance suites every backend must pass, and helpers that start real
//! services (moto, Salt) for tests.
#![warn(missing_docs)]

pub mod bin_lab;
pub mod conformance;
pub mod crash;
pub mod ec2_replay;
pub mod fake_cloud;
pub mod fake_salt;
pub mod fixtures;
pub mod harness;
pub mod logs;
pub mod minion_cloud;
#[cfg(feature = "mock")]
pub mod mocks;
pub mod moto;
pub mod proxy;
pub mod salt_env;
pub mod salt_lab;
pub mod wrappers;

pub use fake_cloud::FakeCloud;
pub use fake_salt::FakeSalt;
pub use wrappers::{FaultCloud, LagCloud, LatencyCloud, RecordingCloud};
