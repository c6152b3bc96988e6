//! The integration tests of `conductor-cli`, one test binary (a module per topic),
//! so the crate graph is linked once. Run one topic with
//! `cargo test -p conductor-cli --test it <module>::`.

mod adopt;
mod bad_input;
mod cli;
mod crash;
mod destroy_safety;
mod faults;
mod guarantee;
mod moto;
mod pillar_source;
mod runner_module;
mod salt_cloud_real;
mod salt_lab;
mod saltext;
mod signals;
mod support;
mod tls_endpoint;
