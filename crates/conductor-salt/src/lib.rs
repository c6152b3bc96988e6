//! The Salt side of Conductor: pillar sources ([`FilePillar`]) and, as they
//! land, the salt-cloud / salt / salt-run executor and run logs.
#![warn(missing_docs)]

pub mod file_pillar;

pub use file_pillar::FilePillar;
