//! Grants: conditional `TransactWriteItems` of a run's keys, chunk by chunk
//! (a refused later chunk rolls back the earlier ones), and takeovers of
//! keys found free, conditioned on the exact record found.

use std::collections::{BTreeSet, HashMap};

use aws_sdk_dynamodb::types::{Put, ReturnValuesOnConditionCheckFailure, TransactWriteItem};
use conductor_core::{now_ms, BackendError, BackendErrorKind, ReserveError};
use conductor_core::{Key, Lease, Owner, Phase, Reservation, Reserver};
use tracing::{info_span, Instrument};

use super::codec::{grant_condition, item_of, owner_of, reservation_of};
use super::{build_err, Cancelled, DynamoReserver, TRANSACTION_ITEMS};
use crate::errors::classify;

/// What a cancelled grant found on its keys.
#[derive(Debug, Default)]
struct Triage {
    /// Keys whose holder is free (expired, or a dead local planner), with that holder.
    free: HashMap<Key, Owner>,
    /// Keys held by a live owner, or by an item that is not an owner record.
    held: Vec<Key>,
    /// Keys another writer is on right now, throttled, or gone since: try again later.
    contended: Vec<Key>,
}

impl DynamoReserver {
    /// Reserves `keys` (duplicates once) for `owner`, all or nothing.
    pub(super) async fn reserve(&self, keys: &[Key], owner: &Owner) -> Result<Lease, ReserveError> {
        let mut unique = BTreeSet::new();
        let keys: Vec<Key> = keys.iter().filter(|k| unique.insert(*k)).cloned().collect();
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

    /// A conditional put of `key` for `owner` (see [`grant_condition`]). On
    /// a failed condition the cancellation reason carries the item it found.
    fn put(
        &self,
        key: &Key,
        owner: &Owner,
        now: u64,
        replacing: Option<&Owner>,
    ) -> Result<TransactWriteItem, BackendError> {
        let (condition, values) = grant_condition(now, replacing);
        let put = Put::builder()
            .table_name(&self.table)
            .set_item(Some(item_of(&self.prefix, key, owner)))
            .condition_expression(condition)
            .set_expression_attribute_values(Some(values))
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .build()
            .map_err(build_err)?;
        Ok(TransactWriteItem::builder().put(put).build())
    }

    /// The puts of `keys` for `owner`, each taking over the holder `free` names.
    fn puts(
        &self,
        keys: &[Key],
        owner: &Owner,
        now: u64,
        free: &HashMap<Key, Owner>,
    ) -> Result<Vec<TransactWriteItem>, BackendError> {
        keys.iter()
            .map(|k| self.put(k, owner, now, free.get(k)))
            .collect()
    }

    /// The reservation of `key`, read consistently.
    async fn get(&self, key: &Key) -> Result<Option<Reservation>, BackendError> {
        self.count();
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(self.primary_key(key)))
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
        Ok(out.item().and_then(|i| reservation_of(i, &self.prefix)))
    }

    /// Reserves one chunk, taking over keys found free (expired, or of
    /// owners that died on this host while planning); `Ok(Err(keys))` names
    /// the keys that refused it.
    async fn reserve_chunk(
        &self,
        keys: &[Key],
        owner: &Owner,
    ) -> Result<Result<(), Vec<Key>>, BackendError> {
        let now = now_ms();
        let none = HashMap::new();
        let cancelled = match self
            .transact(self.puts(keys, owner, now, &none)?, keys, "reserving")
            .await?
        {
            Ok(()) => return Ok(Ok(())),
            Err(c) => c,
        };
        let found = self.triage(cancelled, now).await?;
        if !found.held.is_empty() {
            return Ok(Err(found.held));
        }
        if found.free.is_empty() && !found.contended.is_empty() {
            return Ok(Err(found.contended));
        }
        let items = self.puts(keys, owner, now, &found.free)?;
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

    /// Sorts the keys of a cancelled grant by what holds them at `now`: from
    /// the old items the failed conditions returned (one `GetItem` per key
    /// only when one is missing). A reason DynamoDB gives for refusing the
    /// write itself (validation) is an error.
    async fn triage(&self, cancelled: Cancelled, now: u64) -> Result<Triage, BackendError> {
        let mut t = Triage::default();
        for (k, reason) in cancelled {
            match reason.as_ref().and_then(|r| r.code()).unwrap_or("Unknown") {
                "None" => continue,
                "ConditionalCheckFailed" => {}
                // Another writer on the key right now, or rate limits: try again later.
                "TransactionConflict"
                | "ThrottlingError"
                | "ProvisionedThroughputExceeded"
                | "Unknown" => {
                    t.contended.push(k);
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
                None => t.contended.push(k),
                Some(Some(o)) if o.is_free(now) => {
                    t.free.insert(k, o);
                }
                // Held by a live owner, or by an item we cannot read: refused.
                Some(_) => t.held.push(k),
            }
        }
        Ok(t)
    }
}
