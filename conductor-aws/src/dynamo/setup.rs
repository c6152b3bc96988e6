//! Table set-up: the [`DynamoReserverBuilder`] (connection, table name, key
//! prefix), and checking or creating the table with TTL on
//! [`TTL_ATTRIBUTE`].

use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::time::Duration;

use aws_sdk_dynamodb::error::SdkError;
use aws_sdk_dynamodb::operation::describe_table::{DescribeTableError, DescribeTableOutput};
use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, KeySchemaElement, KeyType, ScalarAttributeType, TableStatus,
    TimeToLiveSpecification,
};
use aws_sdk_dynamodb::Client;
use conductor_core::{BackendError, BackendErrorKind};
use tracing::{info_span, Instrument};

use super::{build_err, DynamoReserver, TTL_ATTRIBUTE};
use crate::config::AwsConfig;
use crate::errors::classify;

/// The region of a table when neither the builder nor the AWS configuration names one.
const FALLBACK_REGION: &str = "us-east-1";

/// Polls of `DescribeTable` (100 ms apart) for a new table to become active.
const ACTIVE_POLLS: u32 = 300;

/// Builds a [`DynamoReserver`].
///
/// `build` connects and checks the table, so an unreachable endpoint fails
/// at once, classed so that the run exits 4:
///
/// ```
/// use conductor_aws::dynamo::DynamoReserver;
/// use conductor_core::BackendErrorKind;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let result = DynamoReserver::builder("conductor-reservations")
///     .region("eu-west-1")
///     .endpoint_url("http://127.0.0.1:9") // nothing listens here
///     .static_credentials("test", "test")
///     .max_attempts(1)
///     .key_prefix("prod/")
///     .create_table_if_missing(true)
///     .build()
///     .await;
/// let error = result.unwrap_err();
/// assert_eq!(error.kind, BackendErrorKind::Unreachable, "{error}");
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct DynamoReserverBuilder {
    table: String,
    aws: AwsConfig,
    create_table: bool,
    prefix: String,
}

impl DynamoReserverBuilder {
    /// A builder for `table`: the default AWS connection, no key prefix,
    /// and the table must exist.
    pub(super) fn new(table: String) -> Self {
        Self {
            table,
            aws: AwsConfig::new(),
            create_table: false,
            prefix: String::new(),
        }
    }

    crate::config::aws_setters!(
        "The region of the table (default: the AWS configuration's, else us-east-1).",
        aws
    );

    /// Create the table (on-demand, with TTL on `expires_at`) when it does not exist.
    pub fn create_table_if_missing(mut self, yes: bool) -> Self {
        self.create_table = yes;
        self
    }

    /// Prefix every key's `pk` with `prefix` (e.g. `prod/`), so several
    /// installations can share one table; `list` and `prune` see only keys
    /// with this prefix.
    pub fn key_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// Connects, and checks (or creates) the table.
    pub async fn build(self) -> Result<DynamoReserver, BackendError> {
        self.validate()?;
        let sdk = self.aws.load().await;
        let region = sdk
            .region()
            .map(|r| r.to_string())
            .unwrap_or_else(|| FALLBACK_REGION.into());
        let conf = aws_sdk_dynamodb::config::Builder::from(&sdk)
            .region(aws_sdk_dynamodb::config::Region::new(region))
            .build();
        let me = DynamoReserver {
            client: Client::from_conf(conf),
            table: self.table.clone(),
            prefix: self.prefix.clone(),
            calls: Arc::new(AtomicUsize::new(0)),
        };
        me.check_table(self.create_table)
            .instrument(info_span!("dynamodb.check_table", table = %self.table))
            .await?;
        Ok(me)
    }

    /// Refuses a table name DynamoDB would refuse, and an unprintable or long prefix.
    fn validate(&self) -> Result<(), BackendError> {
        let table_ok = (3..=255).contains(&self.table.len())
            && self
                .table
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
        if !table_ok {
            return Err(BackendError::new(
                BackendErrorKind::Rejected,
                format!(
                    "DynamoDB table name {:?} is invalid: use 3 to 255 characters of [A-Za-z0-9_.-] (--dynamodb-table)",
                    self.table
                ),
            ));
        }
        if self.prefix.len() > 256 || self.prefix.chars().any(char::is_control) {
            return Err(BackendError::new(
                BackendErrorKind::Rejected,
                format!(
                    "DynamoDB key prefix {:?} is invalid: use at most 256 printable characters",
                    self.prefix
                ),
            ));
        }
        Ok(())
    }
}

impl DynamoReserver {
    /// Checks that the table exists; with `create`, creates a missing one
    /// (waiting for it to be active, then enabling TTL).
    async fn check_table(&self, create: bool) -> Result<(), BackendError> {
        match self.describe().await {
            Ok(_) => return Ok(()),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_resource_not_found_exception()) => {}
            Err(e) => {
                return Err(classify(
                    "DescribeTable",
                    &format!("checking table {}", self.table),
                    e,
                ))
            }
        }
        if !create {
            return Err(BackendError::new(
                BackendErrorKind::Rejected,
                format!(
                    "DynamoDB table {:?} does not exist; create it (hash key `pk`, a string), or pass --create-table",
                    self.table
                ),
            ));
        }
        self.create_table().await?;
        self.wait_active().await?;
        self.enable_ttl().await
    }

    /// One `DescribeTable` of the table.
    async fn describe(&self) -> Result<DescribeTableOutput, SdkError<DescribeTableError>> {
        self.count();
        self.client
            .describe_table()
            .table_name(&self.table)
            .send()
            .instrument(info_span!("dynamodb.describe_table", table = %self.table))
            .await
    }

    /// Creates the table: on-demand, hash key `pk` (a string).
    async fn create_table(&self) -> Result<(), BackendError> {
        self.count();
        self.client
            .create_table()
            .table_name(&self.table)
            .billing_mode(BillingMode::PayPerRequest)
            .attribute_definitions(
                AttributeDefinition::builder()
                    .attribute_name("pk")
                    .attribute_type(ScalarAttributeType::S)
                    .build()
                    .map_err(build_err)?,
            )
            .key_schema(
                KeySchemaElement::builder()
                    .attribute_name("pk")
                    .key_type(KeyType::Hash)
                    .build()
                    .map_err(build_err)?,
            )
            .send()
            .instrument(info_span!("dynamodb.create_table", table = %self.table))
            .await
            .map_err(|e| classify("CreateTable", &format!("creating table {}", self.table), e))?;
        Ok(())
    }

    /// Waits up to 30 s for a new table to become `ACTIVE`.
    async fn wait_active(&self) -> Result<(), BackendError> {
        for _ in 0..ACTIVE_POLLS {
            let status = self
                .describe()
                .await
                .ok()
                .and_then(|d| d.table().and_then(|t| t.table_status().cloned()));
            if status == Some(TableStatus::Active) {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Err(BackendError::new(
            BackendErrorKind::Unreachable,
            format!(
                "DynamoDB table {} was created but is not ACTIVE after 30 s; try again shortly",
                self.table
            ),
        ))
    }

    /// Enables TTL on [`TTL_ATTRIBUTE`], DynamoDB's janitor of expired items.
    async fn enable_ttl(&self) -> Result<(), BackendError> {
        self.count();
        self.client
            .update_time_to_live()
            .table_name(&self.table)
            .time_to_live_specification(
                TimeToLiveSpecification::builder()
                    .enabled(true)
                    .attribute_name(TTL_ATTRIBUTE)
                    .build()
                    .map_err(build_err)?,
            )
            .send()
            .instrument(info_span!("dynamodb.update_time_to_live", table = %self.table))
            .await
            .map_err(|e| {
                classify(
                    "UpdateTimeToLive",
                    &format!("enabling TTL on table {}", self.table),
                    e,
                )
            })?;
        Ok(())
    }
}
