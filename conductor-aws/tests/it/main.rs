//! The integration tests of `conductor-aws`, one test binary (a module per topic),
//! so the crate graph is linked once. Run one topic with
//! `cargo test -p conductor-aws --test it <module>::`.

#[cfg(feature = "dynamodb")]
mod dynamo;
#[cfg(feature = "dynamodb")]
mod dynamo_crash;
#[cfg(feature = "dynamodb")]
mod dynamo_fill;
#[cfg(feature = "dynamodb")]
mod dynamo_partitions;
mod ec2_errors;
mod ec2_moto;
mod ec2_native_moto;
mod endpoint_env;
mod moto_helper;
mod replay;
#[cfg(feature = "s3")]
mod s3;
