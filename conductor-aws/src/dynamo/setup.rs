//! Table set-up: the [`DynamoReserverBuilder`] (connection, table name, key
//! prefix), and checking or creating the table (hash key `pk`, range key
//! `sk`, the local index [`LIVE_INDEX`], TTL on [`TTL_ATTRIBUTE`]). A table
//! of the layout before partitions (hash key `pk` only) is refused with
//! the way to migrate.

use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::time::Duration;

use aws_sdk_dynamodb::error::SdkError;
use aws_sdk_dynamodb::operation::describe_table::{DescribeTableError, DescribeTableOutput};
use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, KeySchemaElement, KeyType, LocalSecondaryIndex, Projection,
    ProjectionType, ScalarAttributeType, TableDescription, TableStatus, TimeToLiveSpecification,
};
use aws_sdk_dynamodb::Client;
use conductor_core::{BackendError, BackendErrorKind};
use tracing::{info_span, Instrument};

use super::{build_err, DynamoReserver, LIVE_INDEX, TTL_ATTRIBUTE};
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
            items_read: Arc::new(AtomicUsize::new(0)),
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
            Ok(d) => return self.check_layout(d.table()),
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
                    "DynamoDB table {:?} does not exist; pass --create-table to create it (or see docs/reservations.md for its layout)",
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

    /// Refuses a table whose keys are not this layout's: hash key `pk`,
    /// range key `sk`, and the local index [`LIVE_INDEX`] on `expires`.
    fn check_layout(&self, table: Option<&TableDescription>) -> Result<(), BackendError> {
        let Some(table) = table else {
            return Ok(());
        };
        let has = |keys: &[KeySchemaElement], name: &str, kind: KeyType| {
            keys.iter()
                .any(|k| k.attribute_name() == name && *k.key_type() == kind)
        };
        let keys = table.key_schema();
        let live = table
            .local_secondary_indexes()
            .iter()
            .find(|i| i.index_name() == Some(LIVE_INDEX))
            .map(|i| i.key_schema());
        let ok = has(keys, "pk", KeyType::Hash)
            && has(keys, "sk", KeyType::Range)
            && live.is_some_and(|k| has(k, "expires", KeyType::Range));
        if ok {
            return Ok(());
        }
        let found: Vec<String> = keys
            .iter()
            .map(|k| format!("{} ({})", k.attribute_name(), k.key_type().as_str()))
            .collect();
        let old = keys.len() == 1 && has(keys, "pk", KeyType::Hash);
        let what = if old {
            "has the first layout (hash key `pk` only, one item per key)"
        } else {
            "is not a Conductor reservation table"
        };
        Err(BackendError::new(
            BackendErrorKind::Rejected,
            format!(
                "DynamoDB table {:?} {what}: keys {}; this version partitions reservations by \
                 environment (hash key `pk`, range key `sk`, local index `{LIVE_INDEX}` on \
                 `expires`). Create a new table with --create-table and another \
                 --dynamodb-table name, and move every master to it once no run uses the \
                 old one (docs/reservations.md, \"Migrating the DynamoDB table\")",
                self.table,
                found.join(", "),
            ),
        ))
    }

    /// Creates the table: on-demand, hash key `pk` and range key `sk`
    /// (strings), and the local index [`LIVE_INDEX`] on `expires` (a
    /// number) holding every attribute.
    async fn create_table(&self) -> Result<(), BackendError> {
        let attr = |name: &str, t: ScalarAttributeType| {
            AttributeDefinition::builder()
                .attribute_name(name)
                .attribute_type(t)
                .build()
                .map_err(build_err)
        };
        let key = |name: &str, t: KeyType| {
            KeySchemaElement::builder()
                .attribute_name(name)
                .key_type(t)
                .build()
                .map_err(build_err)
        };
        let live = LocalSecondaryIndex::builder()
            .index_name(LIVE_INDEX)
            .key_schema(key("pk", KeyType::Hash)?)
            .key_schema(key("expires", KeyType::Range)?)
            .projection(
                Projection::builder()
                    .projection_type(ProjectionType::All)
                    .build(),
            )
            .build()
            .map_err(build_err)?;
        self.count();
        self.client
            .create_table()
            .table_name(&self.table)
            .billing_mode(BillingMode::PayPerRequest)
            .attribute_definitions(attr("pk", ScalarAttributeType::S)?)
            .attribute_definitions(attr("sk", ScalarAttributeType::S)?)
            .attribute_definitions(attr("expires", ScalarAttributeType::N)?)
            .key_schema(key("pk", KeyType::Hash)?)
            .key_schema(key("sk", KeyType::Range)?)
            .local_secondary_indexes(live)
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
