//! The Salt side of Conductor: pillar sources ([`FilePillar`], [`SaltPillar`]),
//! the executor that runs salt-cloud, salt and salt-run ([`SaltCli`]), parsing
//! of Salt's JSON output, and run archives.
#![warn(missing_docs)]

pub mod archive;
pub mod cli;
pub mod file_pillar;
pub mod parse;
pub mod salt_pillar;

pub use cli::SaltCli;
pub use file_pillar::FilePillar;
pub use salt_pillar::SaltPillar;
