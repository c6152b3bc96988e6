//! Changes of held keys (renewal, fencing, release, prune), each conditioned
//! on the owner, and the listing they start from.

use std::time::Duration;

use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::types::{Delete, TransactWriteItem, Update};
use conductor_core::{now_ms, BackendError, BackendErrorKind, ReserveError};
use conductor_core::{Env, Key, Lease, Owner, Phase};
use tracing::{info_span, Instrument};

use super::codec::{owned_condition, set_values, SET_EXPIRY};
use super::{build_err, DynamoReserver, TRANSACTION_ITEMS, TTL_ATTRIBUTE};
use crate::errors::classify;

/// The error code of a conditional write whose condition failed.
const CONDITION_FAILED: &str = "ConditionalCheckFailedException";

/// Writes of one key again after the key was busy in another transaction.
const CONFLICT_RETRIES: u32 = 4;

/// A conditional write of one key: a new expiry and phase, or removal.
#[derive(Clone, Copy, Debug)]
enum Change {
    /// Set `expires` (and the TTL attribute) and `phase` if the owner still holds the key.
    Set(u64, Phase),
    /// Delete the key if the condition (on the owner) holds.
    Remove,
}

/// A key to change, its owner, and (to pin it too) the expiry it must still have.
type Target = (Key, Owner, Option<u64>);

impl DynamoReserver {
    /// Sets the expiry and phase of the lease's keys still held by its run
    /// (an expiry at or before now removes them); the others are lost.
    pub(super) async fn update_lease(
        &self,
        lease: &Lease,
        expires: u64,
        phase: Phase,
    ) -> Result<(), ReserveError> {
        let keys: Vec<Target> = lease
            .keys
            .iter()
            .map(|k| (k.clone(), lease.owner.clone(), None))
            .collect();
        let (change, what) = if expires <= now_ms() {
            (Change::Remove, "releasing")
        } else {
            (Change::Set(expires, phase), "changing the expiry of")
        };
        let applied = self.change(&keys, change, what).await?;
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

    /// Removes the keys prunable at `now` (see [`Reserver::prune`](conductor_core::Reserver::prune)); returns
    /// them. With `env`, reads that environment's partition and the
    /// partition of keys of no environment (two `Query`s), not the table.
    pub(super) async fn prune_free(
        &self,
        now: u64,
        env: Option<&Env>,
        older_than: Option<Duration>,
    ) -> Result<Vec<Key>, BackendError> {
        let listed = match env {
            None => self.scan().await?,
            Some(env) => {
                let mut listed = self.query(Some(env), None).await?;
                listed.extend(self.query(None, None).await?);
                listed
            }
        };
        let doomed: Vec<Target> = listed
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

    /// Applies `change` to each key held by its owner (keys held by anyone
    /// else, or gone, are left alone) and returns the keys changed: one
    /// transaction per chunk; a cancelled chunk (some key is no longer the
    /// owner's) goes one conditional call per key. A given expiry is pinned
    /// into the condition too (prune: leave keys renewed since the scan).
    async fn change(
        &self,
        keys: &[Target],
        change: Change,
        what: &str,
    ) -> Result<Vec<Key>, BackendError> {
        let mut applied = Vec::new();
        for chunk in keys.chunks(TRANSACTION_ITEMS) {
            if chunk.len() > 1 {
                let items = chunk
                    .iter()
                    .map(|(k, o, e)| self.change_item(k, o, change, *e))
                    .collect::<Result<Vec<_>, _>>()?;
                let chunk_keys: Vec<Key> = chunk.iter().map(|(k, _, _)| k.clone()).collect();
                if self.transact(items, &chunk_keys, what).await?.is_ok() {
                    applied.extend(chunk_keys);
                    continue;
                }
            }
            for (k, o, e) in chunk {
                if self.change_one(k, o, change, *e, what).await? {
                    applied.push(k.clone());
                }
            }
        }
        Ok(applied)
    }

    /// A transaction write that applies `change` to `key` if `owner` holds
    /// it (and, with `expires`, only if its expiry is still that).
    fn change_item(
        &self,
        key: &Key,
        owner: &Owner,
        change: Change,
        expires: Option<u64>,
    ) -> Result<TransactWriteItem, BackendError> {
        let (condition, mut values) = owned_condition(owner, expires);
        let pk = self.primary_key(key);
        let item = match change {
            Change::Remove => TransactWriteItem::builder().delete(
                Delete::builder()
                    .table_name(&self.table)
                    .set_key(Some(pk))
                    .condition_expression(condition)
                    .set_expression_attribute_values(Some(values))
                    .build()
                    .map_err(build_err)?,
            ),
            Change::Set(e, phase) => {
                set_values(&mut values, e, phase);
                TransactWriteItem::builder().update(
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
            }
        };
        Ok(item.build())
    }

    /// One conditional `DeleteItem` or `UpdateItem`; `Ok(false)` when the
    /// condition failed (the key is not the owner's any more).
    async fn change_one(
        &self,
        key: &Key,
        owner: &Owner,
        change: Change,
        expires: Option<u64>,
        what: &str,
    ) -> Result<bool, BackendError> {
        // A key another run's transaction is writing (a run that does not
        // know yet that this one holds it) refuses writes until that
        // transaction ends, in milliseconds: wait a little and write again.
        let mut wait = Duration::from_millis(20);
        for _ in 0..CONFLICT_RETRIES {
            match self
                .change_one_once(key, owner, change, expires, what)
                .await
            {
                Err(e) if e.kind == BackendErrorKind::Throttled => {
                    tracing::debug!(%key, error = %e, "write refused for now; retrying");
                    tokio::time::sleep(wait).await;
                    wait *= 2;
                }
                done => return done,
            }
        }
        self.change_one_once(key, owner, change, expires, what)
            .await
    }

    /// One conditional write of [`DynamoReserver::change_one`].
    async fn change_one_once(
        &self,
        key: &Key,
        owner: &Owner,
        change: Change,
        expires: Option<u64>,
        what: &str,
    ) -> Result<bool, BackendError> {
        let (condition, mut values) = owned_condition(owner, expires);
        let context = format!("{what} {key} in table {}", self.table);
        self.count();
        match change {
            Change::Remove => {
                let r = self
                    .client
                    .delete_item()
                    .table_name(&self.table)
                    .set_key(Some(self.primary_key(key)))
                    .condition_expression(condition)
                    .set_expression_attribute_values(Some(values))
                    .send()
                    .instrument(info_span!("dynamodb.delete_item", table = %self.table, what))
                    .await;
                applied("DeleteItem", &context, r)
            }
            Change::Set(e, phase) => {
                set_values(&mut values, e, phase);
                let r = self
                    .client
                    .update_item()
                    .table_name(&self.table)
                    .set_key(Some(self.primary_key(key)))
                    .update_expression(SET_EXPIRY)
                    .expression_attribute_names("#ttl", TTL_ATTRIBUTE)
                    .condition_expression(condition)
                    .set_expression_attribute_values(Some(values))
                    .send()
                    .instrument(info_span!("dynamodb.update_item", table = %self.table, what))
                    .await;
                applied("UpdateItem", &context, r)
            }
        }
    }
}

/// Whether the conditional call `op` (while doing `context`) was applied:
/// `Ok(false)` when its condition failed.
fn applied<O, E>(op: &str, context: &str, r: Result<O, SdkError<E>>) -> Result<bool, BackendError>
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    match r {
        Ok(_) => Ok(true),
        Err(e) if e.as_service_error().and_then(|s| s.code()) == Some(CONDITION_FAILED) => {
            Ok(false)
        }
        Err(e) => Err(classify(op, context, e)),
    }
}
