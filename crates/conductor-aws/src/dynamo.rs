//! `DynamoReserver`: reservations in a DynamoDB table, shared by every Salt
//! master and CI runner that points at it.
//!
//! One item per key (`pk` = key text) holding the owner (`cpid`, `host`,
//! `pid`, `created`, `expires` in epoch milliseconds) and `ttl` (epoch
//! seconds, for DynamoDB's TTL). A run's keys are written in one
//! `TransactWriteItems` whose every put is conditioned on the key being absent
//! or expired, so the grant is all-or-nothing; more than 100 keys go in
//! chunks, and a failed later chunk rolls back the earlier ones. Keys of an
//! owner that died on this host are taken over in a second transaction
//! conditioned on exactly that owner.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, KeySchemaElement, KeyType, Put,
    ScalarAttributeType, TimeToLiveSpecification, TransactWriteItem,
};
use aws_sdk_dynamodb::Client;
use conductor_core::error::{BackendError, BackendErrorKind, ReserveError};
use conductor_core::reserve::{
    is_free, is_prunable, now_ms, Key, KeyKind, Lease, Owner, Reservation, Reserver,
};
use conductor_core::Cpid;
use tracing::{info_span, Instrument};

use crate::errors::classify;

/// Most items in one DynamoDB transaction.
const TRANSACTION_ITEMS: usize = 100;

type Item = HashMap<String, AttributeValue>;

/// Builds a [`DynamoReserver`].
#[derive(Clone, Debug)]
pub struct DynamoReserverBuilder {
    table: String,
    region: Option<String>,
    endpoint_url: Option<String>,
    create_table: bool,
    credentials: Option<(String, String)>,
}

impl DynamoReserverBuilder {
    /// The region of the table (default: the AWS configuration's, else us-east-1).
    pub fn region(mut self, region: impl Into<String>) -> Self {
        self.region = Some(region.into());
        self
    }

    /// An explicit endpoint (moto, LocalStack); otherwise `AWS_ENDPOINT_URL` or AWS.
    pub fn endpoint_url(mut self, url: impl Into<String>) -> Self {
        self.endpoint_url = Some(url.into());
        self
    }

    /// Create the table (on-demand, with TTL on `ttl`) when it does not exist.
    pub fn create_table_if_missing(mut self, yes: bool) -> Self {
        self.create_table = yes;
        self
    }

    /// Static credentials instead of the default chain (tests against moto).
    pub fn static_credentials(
        mut self,
        key_id: impl Into<String>,
        secret: impl Into<String>,
    ) -> Self {
        self.credentials = Some((key_id.into(), secret.into()));
        self
    }

    /// Connects, and checks (or creates) the table.
    pub async fn build(self) -> Result<DynamoReserver, BackendError> {
        let sdk =
            crate::config::load(self.endpoint_url.as_deref(), self.credentials.as_ref(), 5).await;
        let region = self
            .region
            .clone()
            .or_else(|| sdk.region().map(|r| r.to_string()))
            .unwrap_or_else(|| "us-east-1".into());
        let conf = aws_sdk_dynamodb::config::Builder::from(&sdk)
            .region(aws_sdk_dynamodb::config::Region::new(region))
            .build();
        let me = DynamoReserver {
            client: Client::from_conf(conf),
            table: self.table.clone(),
            calls: Arc::new(AtomicUsize::new(0)),
        };
        me.check_table(self.create_table).await?;
        Ok(me)
    }
}

/// A [`Reserver`] on a DynamoDB table (see the module docs).
#[derive(Clone, Debug)]
pub struct DynamoReserver {
    client: Client,
    table: String,
    calls: Arc<AtomicUsize>,
}

fn s(v: impl Into<String>) -> AttributeValue {
    AttributeValue::S(v.into())
}

fn n(v: u64) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

fn get_s<'a>(item: &'a Item, k: &str) -> Option<&'a str> {
    item.get(k)?.as_s().ok().map(String::as_str)
}

fn get_n(item: &Item, k: &str) -> Option<u64> {
    item.get(k)?.as_n().ok()?.parse().ok()
}

/// The reservation stored in `item`, if it is well formed.
fn reservation(item: &Item) -> Option<Reservation> {
    let kind = match get_s(item, "kind")? {
        "name" => KeyKind::Name,
        _ => KeyKind::Id,
    };
    let key = Key::new(kind, get_s(item, "pk")?).ok()?;
    let owner = Owner {
        cpid: Cpid::parse(get_s(item, "cpid")?).ok()?,
        host: get_s(item, "host")?.to_string(),
        pid: u32::try_from(get_n(item, "pid")?).ok()?,
        created: get_n(item, "created")?,
        expires: get_n(item, "expires")?,
        started: get_n(item, "started"),
    };
    Some(Reservation { key, kind, owner })
}

fn item(key: &Key, owner: &Owner) -> Item {
    let mut item = HashMap::from([
        ("pk".to_string(), s(key.as_str())),
        (
            "kind".to_string(),
            s(if key.kind() == KeyKind::Name {
                "name"
            } else {
                "id"
            }),
        ),
        ("cpid".to_string(), s(owner.cpid.to_string())),
        ("host".to_string(), s(owner.host.clone())),
        ("pid".to_string(), n(u64::from(owner.pid))),
        ("created".to_string(), n(owner.created)),
        ("expires".to_string(), n(owner.expires)),
        ("ttl".to_string(), n(owner.expires / 1000 + 1)),
    ]);
    if let Some(started) = owner.started {
        item.insert("started".to_string(), n(started));
    }
    item
}

/// The condition that `owner` (cpid, host, pid) holds the item.
const OWNED_BY: &str = "cpid = :cpid AND host = :host AND pid = :pid";

fn owner_values(owner: &Owner) -> HashMap<String, AttributeValue> {
    HashMap::from([
        (":cpid".to_string(), s(owner.cpid.to_string())),
        (":host".to_string(), s(owner.host.clone())),
        (":pid".to_string(), n(u64::from(owner.pid))),
    ])
}

fn build_err(e: aws_sdk_dynamodb::error::BuildError) -> BackendError {
    BackendError::new(
        BackendErrorKind::Rejected,
        format!("building a DynamoDB request: {e}"),
    )
}

impl DynamoReserver {
    /// Starts a builder for `table`.
    pub fn builder(table: impl Into<String>) -> DynamoReserverBuilder {
        DynamoReserverBuilder {
            table: table.into(),
            region: None,
            endpoint_url: None,
            create_table: false,
            credentials: None,
        }
    }

    /// DynamoDB calls made so far (for measurements).
    pub fn calls(&self) -> usize {
        self.calls.load(Ordering::Relaxed)
    }

    fn count(&self) {
        self.calls.fetch_add(1, Ordering::Relaxed);
    }

    async fn check_table(&self, create: bool) -> Result<(), BackendError> {
        self.count();
        let described = self
            .client
            .describe_table()
            .table_name(&self.table)
            .send()
            .await;
        match described {
            Ok(_) => return Ok(()),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_resource_not_found_exception())
                    && create => {}
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_resource_not_found_exception()) =>
            {
                return Err(BackendError::new(
                    BackendErrorKind::Rejected,
                    format!(
                        "DynamoDB table {:?} does not exist; create it, or pass --create-table",
                        self.table
                    ),
                ))
            }
            Err(e) => {
                return Err(classify(
                    "DescribeTable",
                    &format!("checking table {}", self.table),
                    e,
                ))
            }
        }
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
        for _ in 0..100 {
            self.count();
            let d = self
                .client
                .describe_table()
                .table_name(&self.table)
                .send()
                .await;
            if d.ok()
                .and_then(|d| d.table().and_then(|t| t.table_status().cloned()))
                == Some(aws_sdk_dynamodb::types::TableStatus::Active)
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        self.count();
        self.client
            .update_time_to_live()
            .table_name(&self.table)
            .time_to_live_specification(
                TimeToLiveSpecification::builder()
                    .enabled(true)
                    .attribute_name("ttl")
                    .build()
                    .map_err(build_err)?,
            )
            .send()
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

    /// A conditional put of `key` for `owner`: the key is absent or expired, or
    /// (for a takeover) held by exactly `replacing`.
    fn put(
        &self,
        key: &Key,
        owner: &Owner,
        now: u64,
        replacing: Option<&Owner>,
    ) -> Result<TransactWriteItem, BackendError> {
        let mut values = HashMap::from([(":now".to_string(), n(now))]);
        let mut condition = "attribute_not_exists(pk) OR expires <= :now".to_string();
        if let Some(old) = replacing {
            condition.push_str(" OR (cpid = :ocpid AND host = :ohost AND pid = :opid)");
            values.insert(":ocpid".into(), s(old.cpid.to_string()));
            values.insert(":ohost".into(), s(old.host.clone()));
            values.insert(":opid".into(), n(u64::from(old.pid)));
        }
        let put = Put::builder()
            .table_name(&self.table)
            .set_item(Some(item(key, owner)))
            .condition_expression(condition)
            .set_expression_attribute_values(Some(values))
            .build()
            .map_err(build_err)?;
        Ok(TransactWriteItem::builder().put(put).build())
    }

    /// Writes one chunk; `Ok(Err(keys))` names the keys whose condition failed.
    async fn transact(
        &self,
        items: Vec<TransactWriteItem>,
        keys: &[Key],
    ) -> Result<Result<(), Vec<Key>>, BackendError> {
        self.count();
        let r = self
            .client
            .transact_write_items()
            .set_transact_items(Some(items))
            .send()
            .instrument(info_span!("dynamodb.transact_write_items", table = %self.table, items = keys.len()))
            .await;
        match r {
            Ok(_) => Ok(Ok(())),
            Err(e) => {
                if let Some(aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError::TransactionCanceledException(c)) =
                    e.as_service_error()
                {
                    let reasons = c.cancellation_reasons();
                    let failed: Vec<Key> = keys
                        .iter()
                        .zip(reasons.iter().map(Some).chain(std::iter::repeat(None)))
                        .filter(|(_, r)| r.is_none_or(|r| r.code() == Some("ConditionalCheckFailed")))
                        .map(|(k, _)| k.clone())
                        .collect();
                    // Without reasons (or only transaction conflicts), name every key.
                    return Ok(Err(if failed.is_empty() { keys.to_vec() } else { failed }));
                }
                Err(classify(
                    "TransactWriteItems",
                    &format!("reserving {} keys in table {}", keys.len(), self.table),
                    e,
                ))
            }
        }
    }

    async fn get(&self, key: &Key) -> Result<Option<Reservation>, BackendError> {
        self.count();
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("pk", s(key.as_str()))
            .consistent_read(true)
            .send()
            .instrument(info_span!("dynamodb.get_item", table = %self.table))
            .await
            .map_err(|e| {
                classify(
                    "GetItem",
                    &format!("reading {key} in table {}", self.table),
                    e,
                )
            })?;
        Ok(out.item().and_then(reservation))
    }

    /// Reserves one chunk, taking over keys of owners that died on this host.
    async fn reserve_chunk(
        &self,
        keys: &[Key],
        owner: &Owner,
    ) -> Result<Result<(), Vec<Key>>, BackendError> {
        let now = now_ms();
        let items = keys
            .iter()
            .map(|k| self.put(k, owner, now, None))
            .collect::<Result<Vec<_>, _>>()?;
        let failed = match self.transact(items, keys).await? {
            Ok(()) => return Ok(Ok(())),
            Err(failed) => failed,
        };
        let mut dead: HashMap<Key, Owner> = HashMap::new();
        let mut held = Vec::new();
        for k in &failed {
            match self.get(k).await? {
                Some(r) if is_free(&r.owner, now) => {
                    dead.insert(k.clone(), r.owner);
                }
                Some(_) => held.push(k.clone()),
                None => {}
            }
        }
        if !held.is_empty() {
            return Ok(Err(held));
        }
        let items = keys
            .iter()
            .map(|k| self.put(k, owner, now, dead.get(k)))
            .collect::<Result<Vec<_>, _>>()?;
        self.transact(items, keys).await
    }

    async fn delete_if(
        &self,
        key: &Key,
        condition: &str,
        values: HashMap<String, AttributeValue>,
    ) -> Result<(), BackendError> {
        self.count();
        let r = self
            .client
            .delete_item()
            .table_name(&self.table)
            .key("pk", s(key.as_str()))
            .condition_expression(condition)
            .set_expression_attribute_values(Some(values))
            .send()
            .instrument(info_span!("dynamodb.delete_item", table = %self.table))
            .await;
        match r {
            Ok(_) => Ok(()),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_conditional_check_failed_exception()) =>
            {
                Ok(())
            }
            Err(e) => Err(classify(
                "DeleteItem",
                &format!("removing {key} from table {}", self.table),
                e,
            )),
        }
    }
}

#[async_trait]
impl Reserver for DynamoReserver {
    async fn try_reserve(&self, keys: &[Key], owner: &Owner) -> Result<Lease, ReserveError> {
        let mut unique = std::collections::BTreeSet::new();
        let keys: Vec<Key> = keys.iter().filter(|k| unique.insert(*k)).cloned().collect();
        let mut done: Vec<Key> = Vec::new();
        for chunk in keys.chunks(TRANSACTION_ITEMS) {
            match self.reserve_chunk(chunk, owner).await {
                Ok(Ok(())) => done.extend(chunk.iter().cloned()),
                outcome => {
                    // Roll back the chunks already written.
                    let lease = Lease {
                        keys: done,
                        owner: owner.clone(),
                    };
                    if let Err(e) = self.set_expiry(&lease, 0).await {
                        tracing::error!(error = %e, "rolling back a partial reservation failed; its keys expire with the lease");
                    }
                    return match outcome {
                        Ok(Err(conflicts)) => Err(ReserveError::Conflict(conflicts)),
                        Err(e) => Err(e.into()),
                        Ok(Ok(())) => unreachable!("handled above"),
                    };
                }
            }
        }
        Ok(Lease {
            keys,
            owner: owner.clone(),
        })
    }

    async fn set_expiry(&self, lease: &Lease, expires: u64) -> Result<(), BackendError> {
        let now = now_ms();
        for key in &lease.keys {
            let values = owner_values(&lease.owner);
            if expires <= now {
                self.delete_if(key, OWNED_BY, values).await?;
                continue;
            }
            let mut values = values;
            values.insert(":e".into(), n(expires));
            values.insert(":t".into(), n(expires / 1000 + 1));
            self.count();
            let r = self
                .client
                .update_item()
                .table_name(&self.table)
                .key("pk", s(key.as_str()))
                .update_expression("SET expires = :e, #ttl = :t")
                .expression_attribute_names("#ttl", "ttl")
                .condition_expression(OWNED_BY)
                .set_expression_attribute_values(Some(values))
                .send()
                .instrument(info_span!("dynamodb.update_item", table = %self.table))
                .await;
            match r {
                Ok(_) => {}
                Err(e)
                    if e.as_service_error()
                        .is_some_and(|s| s.is_conditional_check_failed_exception()) => {}
                Err(e) => {
                    return Err(classify(
                        "UpdateItem",
                        &format!("changing the expiry of {key} in table {}", self.table),
                        e,
                    ))
                }
            }
        }
        Ok(())
    }

    async fn list(&self) -> Result<Vec<Reservation>, BackendError> {
        let mut out = Vec::new();
        let mut start: Option<Item> = None;
        loop {
            self.count();
            let page = self
                .client
                .scan()
                .table_name(&self.table)
                .consistent_read(true)
                .set_exclusive_start_key(start.take())
                .send()
                .instrument(info_span!("dynamodb.scan", table = %self.table))
                .await
                .map_err(|e| classify("Scan", &format!("listing table {}", self.table), e))?;
            out.extend(page.items().iter().filter_map(reservation));
            match page.last_evaluated_key() {
                Some(k) if !k.is_empty() => start = Some(k.clone()),
                _ => break,
            }
        }
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    async fn prune(
        &self,
        now: u64,
        older_than: Option<Duration>,
    ) -> Result<Vec<Key>, BackendError> {
        let mut pruned = Vec::new();
        for r in self.list().await? {
            if is_prunable(&r.owner, now, older_than) {
                let mut values = owner_values(&r.owner);
                values.insert(":e".into(), n(r.owner.expires));
                self.delete_if(&r.key, &format!("{OWNED_BY} AND expires = :e"), values)
                    .await?;
                pruned.push(r.key);
            }
        }
        Ok(pruned)
    }
}
