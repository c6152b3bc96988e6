//! The integration tests of `conductor-salt`, one test binary (a module per topic),
//! so the crate graph is linked once. Run one topic with
//! `cargo test -p conductor-salt --test it <module>::`.

mod command_limits;
mod master_pillar;
mod real_salt;
mod salt_cloud_moto;
mod salt_cloud_scope;
mod salt_conformance;
