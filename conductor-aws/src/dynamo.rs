//! `DynamoReserver`: reservations in a DynamoDB table, shared by every Salt
//! master and CI runner that points at it.
//!
//! One item per key: `pk` (the key text, after an optional prefix), `kind`
//! (`name` or `id`), the owner (`cpid`, `host`, `pid`, `started`, `created`,
//! `expires` in epoch milliseconds, and the run's `phase`: `planning`,
//! `launching` or `released`) and `expires_at` (epoch seconds, the
//! attribute DynamoDB's TTL deletes expired items by; TTL is only a janitor,
//! correctness never depends on it). A run's keys are written in one
//! `TransactWriteItems` whose every put is conditioned on
//! `attribute_not_exists(pk) OR expires <= :now`, so the grant is
//! all-or-nothing and expired keys are taken over. The puts ask for the old
//! item on a failed condition, so one cancelled transaction tells which keys
//! are held and by whom; keys of an owner that died on this host while
//! planning (dead pid, or a pid reused by a process with another start
//! time) are taken over in a second transaction conditioned on exactly the
//! owner record found (its run and its expiry: a holder that renewed
//! meanwhile keeps its key). More than 100 keys
//! go in chunks, and a failed later chunk rolls back the earlier ones.
//!
//! Updates (renewal, fencing, release) are one transaction per 100 keys of
//! updates or deletes conditioned on the owner; if one condition fails (a key
//! already taken over after its expiry), the chunk falls back to one
//! conditional call per key, and the keys that failed are reported lost. Every call is in a `tracing` span and counted
//! ([`DynamoReserver::calls`]).

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, CancellationReason, Delete, KeySchemaElement,
    KeyType, Put, ReturnValuesOnConditionCheckFailure, ScalarAttributeType,
    TimeToLiveSpecification, TransactWriteItem, Update,
};
use aws_sdk_dynamodb::Client;
use conductor_core::Cpid;
use conductor_core::{now_ms, Holder, Key, KeyKind, Lease, Owner, Phase, Reservation, Reserver};
use conductor_core::{BackendError, BackendErrorKind, ReserveError};
use tracing::{info_span, Instrument};

use crate::errors::classify;

/// Most items in one DynamoDB transaction.
const TRANSACTION_ITEMS: usize = 100;

/// The attribute DynamoDB's TTL is enabled on (epoch seconds).
pub const TTL_ATTRIBUTE: &str = "expires_at";

type Item = HashMap<String, AttributeValue>;

/// Builds a [`DynamoReserver`].
#[derive(Clone, Debug)]
pub struct DynamoReserverBuilder {
    table: String,
    region: Option<String>,
    endpoint_url: Option<String>,
    create_table: bool,
    credentials: Option<(String, String)>,
    prefix: String,
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
            prefix: self.prefix.clone(),
            calls: Arc::new(AtomicUsize::new(0)),
        };
        me.check_table(self.create_table)
            .instrument(info_span!("dynamodb.check_table", table = %self.table))
            .await?;
        Ok(me)
    }
}

/// A [`Reserver`] on a DynamoDB table (see the module docs).
#[derive(Clone, Debug)]
pub struct DynamoReserver {
    client: Client,
    table: String,
    prefix: String,
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

/// The owner stored in `item`, if it is well formed.
fn owner_of(item: &Item) -> Option<Owner> {
    Some(Owner {
        cpid: Cpid::parse(get_s(item, "cpid")?).ok()?,
        host: get_s(item, "host")?.to_string(),
        pid: u32::try_from(get_n(item, "pid")?).ok()?,
        created: get_n(item, "created")?,
        expires: get_n(item, "expires")?,
        started: get_n(item, "started"),
        phase: get_s(item, "phase").and_then(phase_of).unwrap_or_default(),
    })
}

fn phase_name(p: Phase) -> &'static str {
    match p {
        Phase::Planning => "planning",
        Phase::Launching => "launching",
        Phase::Released => "released",
    }
}

fn phase_of(s: &str) -> Option<Phase> {
    [Phase::Planning, Phase::Launching, Phase::Released]
        .into_iter()
        .find(|p| phase_name(*p) == s)
}

/// Epoch seconds for DynamoDB's TTL: the first second at or after `expires_ms`.
fn ttl_seconds(expires_ms: u64) -> u64 {
    expires_ms.div_ceil(1000)
}

/// The update of a key's expiry, TTL attribute and phase.
const SET_EXPIRY: &str = "SET expires = :e, #ttl = :t, phase = :ph";

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

/// The keys of a cancelled transaction, each with its cancellation reason.
type Cancelled = Vec<(Key, Option<CancellationReason>)>;

/// A conditional write of one key: a new expiry and phase, or removal.
#[derive(Clone, Debug)]
enum Change {
    /// Set `expires` (and the TTL attribute) and `phase` if the owner still holds the key.
    Set(u64, Phase),
    /// Delete the key if the condition (on the owner) holds.
    Remove,
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
            prefix: String::new(),
        }
    }

    /// The table this reserver uses.
    pub fn table(&self) -> &str {
        &self.table
    }

    /// DynamoDB calls made so far (for measurements).
    pub fn calls(&self) -> usize {
        self.calls.load(Ordering::Relaxed)
    }

    fn count(&self) {
        self.calls.fetch_add(1, Ordering::Relaxed);
    }

    /// The `pk` of `key`.
    fn pk(&self, key: &Key) -> String {
        format!("{}{}", self.prefix, key.as_str())
    }

    /// The reservation stored in `item`, if it is well formed and has our prefix.
    fn reservation(&self, item: &Item) -> Option<Reservation> {
        let kind = match get_s(item, "kind")? {
            "name" => KeyKind::Name,
            _ => KeyKind::Id,
        };
        let text = get_s(item, "pk")?.strip_prefix(self.prefix.as_str())?;
        let key = Key::new(kind, text).ok()?;
        Some(Reservation {
            key,
            kind,
            holder: Holder::Run(owner_of(item)?),
        })
    }

    fn item(&self, key: &Key, owner: &Owner) -> Item {
        let mut item = HashMap::from([
            ("pk".to_string(), s(self.pk(key))),
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
            (TTL_ATTRIBUTE.to_string(), n(ttl_seconds(owner.expires))),
            ("phase".to_string(), s(phase_name(owner.phase))),
        ]);
        if let Some(started) = owner.started {
            item.insert("started".to_string(), n(started));
        }
        item
    }

    async fn check_table(&self, create: bool) -> Result<(), BackendError> {
        self.count();
        let described = self
            .client
            .describe_table()
            .table_name(&self.table)
            .send()
            .instrument(info_span!("dynamodb.describe_table", table = %self.table))
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
                        "DynamoDB table {:?} does not exist; create it (hash key `pk`, a string), or pass --create-table",
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
        let mut active = false;
        for _ in 0..300 {
            self.count();
            let d = self
                .client
                .describe_table()
                .table_name(&self.table)
                .send()
                .instrument(info_span!("dynamodb.describe_table", table = %self.table))
                .await;
            if d.ok()
                .and_then(|d| d.table().and_then(|t| t.table_status().cloned()))
                == Some(aws_sdk_dynamodb::types::TableStatus::Active)
            {
                active = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        if !active {
            return Err(BackendError::new(
                BackendErrorKind::Unreachable,
                format!(
                    "DynamoDB table {} was created but is not ACTIVE after 30 s; try again shortly",
                    self.table
                ),
            ));
        }
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

    /// A conditional put of `key` for `owner`: the key is absent or expired, or
    /// (for a takeover) still holds exactly the record `replacing` that was
    /// found free — same run and same expiry, so a holder that renewed
    /// meanwhile keeps its key. On a failed condition the cancellation
    /// reason carries the item it found.
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
            condition.push_str(
                " OR (cpid = :ocpid AND host = :ohost AND pid = :opid AND expires = :oexp)",
            );
            values.insert(":ocpid".into(), s(old.cpid.to_string()));
            values.insert(":ohost".into(), s(old.host.clone()));
            values.insert(":opid".into(), n(u64::from(old.pid)));
            values.insert(":oexp".into(), n(old.expires));
        }
        let put = Put::builder()
            .table_name(&self.table)
            .set_item(Some(self.item(key, owner)))
            .condition_expression(condition)
            .set_expression_attribute_values(Some(values))
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .build()
            .map_err(build_err)?;
        Ok(TransactWriteItem::builder().put(put).build())
    }

    /// A write that applies `change` to `key` if `owner` holds it (and, with
    /// `expires`, only if its expiry is still that).
    fn change_item(
        &self,
        key: &Key,
        owner: &Owner,
        change: &Change,
        expires: Option<u64>,
    ) -> Result<TransactWriteItem, BackendError> {
        let mut values = owner_values(owner);
        let mut condition = OWNED_BY.to_string();
        if let Some(e) = expires {
            condition.push_str(" AND expires = :old");
            values.insert(":old".into(), n(e));
        }
        let pk = HashMap::from([("pk".to_string(), s(self.pk(key)))]);
        Ok(match change {
            Change::Remove => TransactWriteItem::builder()
                .delete(
                    Delete::builder()
                        .table_name(&self.table)
                        .set_key(Some(pk))
                        .condition_expression(condition)
                        .set_expression_attribute_values(Some(values))
                        .build()
                        .map_err(build_err)?,
                )
                .build(),
            Change::Set(e, phase) => {
                values.insert(":e".into(), n(*e));
                values.insert(":t".into(), n(ttl_seconds(*e)));
                values.insert(":ph".into(), s(phase_name(*phase)));
                TransactWriteItem::builder()
                    .update(
                        Update::builder()
                            .table_name(&self.table)
                            .set_key(Some(pk))
                            .update_expression(SET_EXPIRY)
                            .expression_attribute_names("#ttl", TTL_ATTRIBUTE)
                            .condition_expression(condition)
                            .set_expression_attribute_values(Some(values))
                            .build()
                            .map_err(build_err)?,
                    )
                    .build()
            }
        })
    }

    /// Writes one transaction of `items` (one per key of `keys`, in order).
    async fn transact(
        &self,
        items: Vec<TransactWriteItem>,
        keys: &[Key],
        what: &str,
    ) -> Result<Result<(), Cancelled>, BackendError> {
        self.count();
        let r = self
            .client
            .transact_write_items()
            .set_transact_items(Some(items))
            .send()
            .instrument(info_span!("dynamodb.transact_write_items", table = %self.table, items = keys.len(), what))
            .await;
        match r {
            Ok(_) => Ok(Ok(())),
            Err(e) => {
                if let Some(TransactWriteItemsError::TransactionCanceledException(c)) =
                    e.as_service_error()
                {
                    let reasons = c.cancellation_reasons();
                    let per_key = keys
                        .iter()
                        .enumerate()
                        .map(|(i, k)| (k.clone(), reasons.get(i).cloned()))
                        .collect();
                    return Ok(Err(per_key));
                }
                Err(classify(
                    "TransactWriteItems",
                    &format!("{what} ({} keys) in table {}", keys.len(), self.table),
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
            .key("pk", s(self.pk(key)))
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
        Ok(out.item().and_then(|i| self.reservation(i)))
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
        let cancelled = match self.transact(items, keys, "reserving").await? {
            Ok(()) => return Ok(Ok(())),
            Err(c) => c,
        };
        // Which keys are held, and by whom: from the old items the failed
        // conditions returned (one GetItem per key only when one is missing).
        let mut free: HashMap<Key, Owner> = HashMap::new();
        let mut held = Vec::new();
        let mut contended = Vec::new();
        for (k, reason) in cancelled {
            let code = reason.as_ref().and_then(|r| r.code()).unwrap_or("Unknown");
            if code == "None" {
                continue;
            }
            match code {
                "ConditionalCheckFailed" => {}
                // Another writer on the key right now, or rate limits: try again later.
                "TransactionConflict"
                | "ThrottlingError"
                | "ProvisionedThroughputExceeded"
                | "Unknown" => {
                    contended.push(k);
                    continue;
                }
                other => {
                    let msg = reason.as_ref().and_then(|r| r.message()).unwrap_or("");
                    return Err(BackendError::new(
                        BackendErrorKind::Rejected,
                        format!(
                            "TransactWriteItems refused key {k} in table {}: {other}: {msg}",
                            self.table
                        ),
                    ));
                }
            }
            let found = match reason.as_ref().and_then(|r| r.item()) {
                Some(item) => Some(owner_of(item)),
                None => self.get(&k).await?.map(|r| r.holder.owner().cloned()),
            };
            match found {
                // Gone since: the next attempt may have it.
                None => contended.push(k),
                Some(Some(o)) if o.is_free(now) => {
                    free.insert(k, o);
                }
                // Held by a live owner, or by an item we cannot read: refused.
                Some(_) => held.push(k),
            }
        }
        if !held.is_empty() {
            return Ok(Err(held));
        }
        if free.is_empty() && !contended.is_empty() {
            return Ok(Err(contended));
        }
        let items = keys
            .iter()
            .map(|k| self.put(k, owner, now, free.get(k)))
            .collect::<Result<Vec<_>, _>>()?;
        match self.transact(items, keys, "taking over free keys").await? {
            Ok(()) => Ok(Ok(())),
            Err(c) => {
                let failed: Vec<Key> = c
                    .into_iter()
                    .filter(|(_, r)| r.as_ref().and_then(|r| r.code()) != Some("None"))
                    .map(|(k, _)| k)
                    .collect();
                Ok(Err(if failed.is_empty() {
                    keys.to_vec()
                } else {
                    failed
                }))
            }
        }
    }

    /// Applies `change` to each key held by its owner (keys held by anyone
    /// else, or gone, are left alone) and returns the keys changed: one
    /// transaction per chunk; a cancelled chunk (some key is no longer the
    /// owner's) goes one conditional call per key. A given expiry is pinned
    /// into the condition too (prune: leave keys renewed since the scan).
    async fn change(
        &self,
        keys: &[(Key, Owner, Option<u64>)],
        change: Change,
        what: &str,
    ) -> Result<Vec<Key>, BackendError> {
        let mut applied = Vec::new();
        for chunk in keys.chunks(TRANSACTION_ITEMS) {
            if chunk.len() > 1 {
                let items = chunk
                    .iter()
                    .map(|(k, o, e)| self.change_item(k, o, &change, *e))
                    .collect::<Result<Vec<_>, _>>()?;
                let chunk_keys: Vec<Key> = chunk.iter().map(|(k, _, _)| k.clone()).collect();
                if self.transact(items, &chunk_keys, what).await?.is_ok() {
                    applied.extend(chunk_keys);
                    continue;
                }
            }
            for (k, o, e) in chunk {
                if self.change_one(k, o, &change, *e, what).await? {
                    applied.push(k.clone());
                }
            }
        }
        Ok(applied)
    }

    /// One conditional `DeleteItem` or `UpdateItem`; `Ok(false)` when the
    /// condition failed (the key is not the owner's any more).
    async fn change_one(
        &self,
        key: &Key,
        owner: &Owner,
        change: &Change,
        expires: Option<u64>,
        what: &str,
    ) -> Result<bool, BackendError> {
        let mut values = owner_values(owner);
        let mut condition = OWNED_BY.to_string();
        if let Some(e) = expires {
            condition.push_str(" AND expires = :old");
            values.insert(":old".into(), n(e));
        }
        let context = format!("{what} {key} in table {}", self.table);
        self.count();
        match change {
            Change::Remove => {
                let r = self
                    .client
                    .delete_item()
                    .table_name(&self.table)
                    .key("pk", s(self.pk(key)))
                    .condition_expression(condition)
                    .set_expression_attribute_values(Some(values))
                    .send()
                    .instrument(info_span!("dynamodb.delete_item", table = %self.table, what))
                    .await;
                match r {
                    Ok(_) => Ok(true),
                    Err(e)
                        if e.as_service_error()
                            .is_some_and(|s| s.is_conditional_check_failed_exception()) =>
                    {
                        Ok(false)
                    }
                    Err(e) => Err(classify("DeleteItem", &context, e)),
                }
            }
            Change::Set(e, phase) => {
                values.insert(":e".into(), n(*e));
                values.insert(":t".into(), n(ttl_seconds(*e)));
                values.insert(":ph".into(), s(phase_name(*phase)));
                let r = self
                    .client
                    .update_item()
                    .table_name(&self.table)
                    .key("pk", s(self.pk(key)))
                    .update_expression(SET_EXPIRY)
                    .expression_attribute_names("#ttl", TTL_ATTRIBUTE)
                    .condition_expression(condition)
                    .set_expression_attribute_values(Some(values))
                    .send()
                    .instrument(info_span!("dynamodb.update_item", table = %self.table, what))
                    .await;
                match r {
                    Ok(_) => Ok(true),
                    Err(e)
                        if e.as_service_error()
                            .is_some_and(|s| s.is_conditional_check_failed_exception()) =>
                    {
                        Ok(false)
                    }
                    Err(e) => Err(classify("UpdateItem", &context, e)),
                }
            }
        }
    }
}

#[async_trait]
impl Reserver for DynamoReserver {
    async fn try_reserve(&self, keys: &[Key], owner: &Owner) -> Result<Lease, ReserveError> {
        let mut unique = std::collections::BTreeSet::new();
        let keys: Vec<Key> = keys.iter().filter(|k| unique.insert(*k)).cloned().collect();
        let span = info_span!("dynamodb.try_reserve", table = %self.table, keys = keys.len(), cpid = %owner.cpid);
        async {
            let mut done: Vec<Key> = Vec::new();
            for chunk in keys.chunks(TRANSACTION_ITEMS) {
                let refused = match self.reserve_chunk(chunk, owner).await {
                    Ok(Ok(())) => {
                        done.extend(chunk.iter().cloned());
                        continue;
                    }
                    Ok(Err(conflicts)) => ReserveError::Conflict(conflicts),
                    Err(e) => e.into(),
                };
                // Roll back the chunks already written. Until then, other runs
                // may see those keys held and retry: never a double grant.
                if !done.is_empty() {
                    let lease = Lease {
                        keys: done,
                        owner: owner.clone(),
                    };
                    if let Err(e) = self.update(&lease, 0, Phase::Planning).await {
                        tracing::error!(error = %e, "rolling back a partial reservation failed; its keys expire with the lease");
                    }
                }
                return Err(refused);
            }
            Ok(Lease {
                keys,
                owner: owner.clone(),
            })
        }
        .instrument(span)
        .await
    }

    async fn update(&self, lease: &Lease, expires: u64, phase: Phase) -> Result<(), ReserveError> {
        let keys: Vec<(Key, Owner, Option<u64>)> = lease
            .keys
            .iter()
            .map(|k| (k.clone(), lease.owner.clone(), None))
            .collect();
        let (change, what) = if expires <= now_ms() {
            (Change::Remove, "releasing")
        } else {
            (Change::Set(expires, phase), "changing the expiry of")
        };
        let applied = self
            .change(&keys, change, what)
            .instrument(info_span!("dynamodb.update", table = %self.table, keys = keys.len()))
            .await?;
        let lost: Vec<Key> = lease
            .keys
            .iter()
            .filter(|k| !applied.contains(k))
            .cloned()
            .collect();
        if lost.is_empty() {
            Ok(())
        } else {
            Err(ReserveError::Lost(lost))
        }
    }

    async fn list(&self) -> Result<Vec<Reservation>, BackendError> {
        let mut out = Vec::new();
        let mut start: Option<Item> = None;
        loop {
            self.count();
            let mut scan = self
                .client
                .scan()
                .table_name(&self.table)
                .consistent_read(true)
                .set_exclusive_start_key(start.take());
            if !self.prefix.is_empty() {
                scan = scan
                    .filter_expression("begins_with(pk, :prefix)")
                    .expression_attribute_values(":prefix", s(self.prefix.clone()));
            }
            let page = scan
                .send()
                .instrument(info_span!("dynamodb.scan", table = %self.table))
                .await
                .map_err(|e| classify("Scan", &format!("listing table {}", self.table), e))?;
            out.extend(page.items().iter().filter_map(|i| self.reservation(i)));
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
        let span = info_span!("dynamodb.prune", table = %self.table);
        async {
            let doomed: Vec<(Key, Owner, Option<u64>)> = self
                .list()
                .await?
                .into_iter()
                .filter(|r| r.holder.is_prunable(now, older_than))
                .filter_map(|r| {
                    let owner = r.holder.owner()?.clone();
                    let e = owner.expires;
                    Some((r.key, owner, Some(e)))
                })
                .collect();
            // Conditioned on the owner and expiry read: a key renewed or taken
            // over since the scan is left alone.
            self.change(&doomed, Change::Remove, "pruning").await
        }
        .instrument(span)
        .await
    }
}
