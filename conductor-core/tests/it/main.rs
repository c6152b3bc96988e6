//! The integration tests of `conductor-core`, one test binary (a module per topic),
//! so the crate graph is linked once. Run one topic with
//! `cargo test -p conductor-core --test it <module>::`.

mod accounts;
mod adopt;
mod bootstrap;
mod clock_skew;
mod conformance;
mod contention;
mod destroy_safety;
mod faults;
mod guarantee;
mod lifecycle_errors;
mod races;
mod reservation_protocol;
mod seed;
mod update_status_throttle;
