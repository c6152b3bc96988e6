//! The Salt side of Conductor: pillar sources ([`FilePillar`], [`SaltPillar`]),
//! the executor that runs salt-cloud, salt and salt-run ([`SaltCli`]), parsing
//! of Salt's JSON output, and run archives.
#![warn(missing_docs)]

pub mod archive;
pub mod file_pillar;
pub mod parse;
pub mod process;
pub mod salt_cli;
pub mod salt_pillar;

pub use file_pillar::FilePillar;
pub use process::Captured;
pub use salt_cli::SaltCli;
pub use salt_pillar::{PillarVia, SaltPillar};

/// The examples of README.md, run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
