//! `DynamoReserver`: reservations in a DynamoDB table, shared by every Salt
//! master and CI runner that points at it.
//!
//! One item per key, partitioned by environment: `pk` is the key's
//! partition (an optional prefix, then `env/<env>` for the keys of an
//! environment, `<env>_…`, or `global` for the keys of none, such as
//! `cpid.<CPID>`), `sk` the key text; then `kind` (`name` or `id`), the
//! owner (`cpid`, `host`, `pid`, `started` and `pid_ns` when known, see
//! [`Owner`], `created`, `expires` in epoch milliseconds, and the run's
//! `phase`: `planning`, `launching` or
//! `released`) and `expires_at` (epoch seconds, the attribute DynamoDB's
//! TTL deletes expired items by; TTL is only a janitor, correctness never
//! depends on it). A local secondary index, [`LIVE_INDEX`], sorts each
//! partition by `expires`, so a plan reads its environment's unexpired keys
//! with one strongly consistent `Query`, whatever the table holds for other
//! environments and however many expired items wait for TTL.
//!
//! A run's keys are written in one
//! `TransactWriteItems` whose every put is conditioned on
//! `attribute_not_exists(pk) OR expires <= :now`, so the grant is
//! all-or-nothing and expired keys are taken over. The puts ask for the old
//! item on a failed condition, so one cancelled transaction tells which keys
//! are held and by whom; keys of an owner that died on this host, in this
//! pid namespace, while planning (dead pid, or a pid reused by a process
//! with another start time) are taken over in a second transaction conditioned on exactly the
//! owner record found (its run and its expiry: a holder that renewed
//! meanwhile keeps its key). More than 100 keys
//! go in chunks, and a failed later chunk rolls back the earlier ones.
//!
//! Updates (renewal, fencing, release) are one transaction per 100 keys of
//! updates or deletes conditioned on the owner; if one condition fails (a key
//! already taken over after its expiry), the chunk falls back to one
//! conditional call per key, and the keys that failed are reported lost.
//! Every call is in a `tracing` span and counted ([`DynamoReserver::calls`],
//! and the items listings read, [`DynamoReserver::items_read`]).
//!
//! Files: `setup` (the builder, the table, its index and TTL, and the
//! check that refuses a table of the old layout), `codec` (owners as
//! items, and the conditions on them), `read` (listings), `reserve` (grants
//! and takeovers) and `update` (renewal, fencing, release and prune).

mod codec;
mod read;
mod reserve;
mod setup;
mod update;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::types::{CancellationReason, TransactWriteItem};
use aws_sdk_dynamodb::Client;
use conductor_core::{BackendError, BackendErrorKind, ReserveError};
use conductor_core::{Env, Key, Lease, Owner, Phase, Reservation, Reserver};
use tracing::{info_span, Instrument};

pub use setup::DynamoReserverBuilder;

use crate::errors::classify;

/// Most items in one DynamoDB transaction.
const TRANSACTION_ITEMS: usize = 100;

/// The attribute DynamoDB's TTL is enabled on (epoch seconds).
pub const TTL_ATTRIBUTE: &str = "expires_at";

/// The local secondary index on (`pk`, `expires`): a partition's keys by
/// expiry, read by [`Reserver::held`] to skip expired items.
pub const LIVE_INDEX: &str = "live";

/// A [`Reserver`] on a DynamoDB table (see the module docs).
#[derive(Clone, Debug)]
pub struct DynamoReserver {
    client: Client,
    table: String,
    prefix: String,
    calls: Arc<AtomicUsize>,
    items_read: Arc<AtomicUsize>,
}

/// The keys of a cancelled transaction, each with its cancellation reason.
type Cancelled = Vec<(Key, Option<CancellationReason>)>;

fn build_err(e: aws_sdk_dynamodb::error::BuildError) -> BackendError {
    BackendError::new(
        BackendErrorKind::Rejected,
        format!("building a DynamoDB request: {e}"),
    )
}

impl DynamoReserver {
    /// Starts a builder for `table`.
    pub fn builder(table: impl Into<String>) -> DynamoReserverBuilder {
        DynamoReserverBuilder::new(table.into())
    }

    /// The table this reserver uses.
    pub fn table(&self) -> &str {
        &self.table
    }

    /// DynamoDB calls made so far (for measurements).
    pub fn calls(&self) -> usize {
        self.calls.load(Ordering::Relaxed)
    }

    /// Items read by listings so far (DynamoDB's `ScannedCount`, what reads
    /// are billed by; for measurements).
    pub fn items_read(&self) -> usize {
        self.items_read.load(Ordering::Relaxed)
    }

    fn count(&self) {
        self.calls.fetch_add(1, Ordering::Relaxed);
    }

    fn count_read(&self, items: i32) {
        let items = usize::try_from(items).unwrap_or(0);
        self.items_read.fetch_add(items, Ordering::Relaxed);
    }

    /// The primary key (`pk`, `sk`) of `key`.
    fn primary_key(&self, key: &Key) -> codec::Item {
        codec::primary_key(&self.prefix, key)
    }

    /// Writes one transaction of `items` (one per key of `keys`, in order);
    /// a cancelled one returns each key's cancellation reason.
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
}

#[async_trait]
impl Reserver for DynamoReserver {
    async fn try_reserve(&self, keys: &[Key], owner: &Owner) -> Result<Lease, ReserveError> {
        let span = info_span!("dynamodb.try_reserve", table = %self.table, keys = keys.len(), cpid = %owner.cpid);
        self.reserve(keys, owner).instrument(span).await
    }

    async fn update(&self, lease: &Lease, expires: u64, phase: Phase) -> Result<(), ReserveError> {
        let span = info_span!("dynamodb.update", table = %self.table, keys = lease.keys.len());
        self.update_lease(lease, expires, phase)
            .instrument(span)
            .await
    }

    async fn list(&self, env: Option<&Env>) -> Result<Vec<Reservation>, BackendError> {
        let span = info_span!("dynamodb.list", table = %self.table, env = env.map(Env::as_str));
        self.read(env, None).instrument(span).await
    }

    /// One `Query` of `env`'s partition on [`LIVE_INDEX`] for the keys not
    /// expired at `now`: expired items and other environments' are not read.
    async fn held(
        &self,
        now: u64,
        env: Option<&Env>,
        except: Option<&Owner>,
    ) -> Result<Vec<Key>, BackendError> {
        let span = info_span!("dynamodb.held", table = %self.table, env = env.map(Env::as_str));
        let listed = self.read(env, Some(now)).instrument(span).await?;
        Ok(listed
            .into_iter()
            .filter(|r| r.is_held(now, except))
            .map(|r| r.key)
            .collect())
    }

    async fn prune(
        &self,
        now: u64,
        env: Option<&Env>,
        older_than: Option<Duration>,
    ) -> Result<Vec<Key>, BackendError> {
        let span = info_span!("dynamodb.prune", table = %self.table, env = env.map(Env::as_str));
        self.prune_free(now, env, older_than).instrument(span).await
    }
}
