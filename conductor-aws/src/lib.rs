//! AWS backends of Conductor: [`ec2::Ec2Backend`] (inventory, native
//! provisioner, terminate), [`dynamo::DynamoReserver`], and [`s3`] uploads of
//! run archives.
#![warn(missing_docs)]

pub mod config;
pub mod dynamo;
pub mod ec2;
pub mod errors;
pub mod s3;
