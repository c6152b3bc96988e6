//! Conformance suites: plain async functions every implementation of a backend
//! trait must pass, in the manner of `object_store`'s `integration.rs`.

pub mod accounts;
pub mod cloud;
pub mod pillar;
pub mod reserver;
pub mod salt;
