//! AWS backends of Conductor: [`ec2::Ec2Backend`] (inventory, native
//! provisioner, terminate) and [`dynamo::DynamoReserver`].
#![warn(missing_docs)]

pub mod dynamo;
pub mod ec2;
pub mod errors;
