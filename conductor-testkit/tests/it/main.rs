//! The integration tests of `conductor-testkit`, one test binary (a module per topic),
//! so the crate graph is linked once. Run one topic with
//! `cargo test -p conductor-testkit --test it <module>::`.

mod fake_salt;
mod fs_stress;
mod pid_namespace;
#[cfg(feature = "salt")]
mod salt_lab;
