//! AWS backends of Conductor: [`ec2::Ec2Backend`] (inventory, native
//! provisioner, terminate), [`dynamo::DynamoReserver`], and [`s3`] uploads of
//! run archives.
//!
//! # Features
//!
//! | feature | default | what it adds |
//! |---|---|---|
//! | `dynamodb` | on | `dynamo::DynamoReserver`, a [`Reserver`](conductor_core::Reserver) on a DynamoDB table (aws-sdk-dynamodb) |
//! | `s3` | on | `s3`: uploads of run archives (aws-sdk-s3) |
//!
//! [`ec2`] and [`config`] are always there. An embedder who only needs EC2
//! compiles neither of the other SDKs:
//! `conductor-aws = { version = "0.1", default-features = false }`.
#![warn(missing_docs)]

pub mod config;
#[cfg(feature = "dynamodb")]
pub mod dynamo;
pub mod ec2;
pub mod errors;
mod http;
#[cfg(feature = "s3")]
pub mod s3;

/// The examples of README.md, run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
