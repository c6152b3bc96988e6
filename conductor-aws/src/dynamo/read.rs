//! Listings: the whole table (a `Scan`, for `reservations list` and
//! `prune`) or one environment's partition (a `Query`, for plans), page by
//! page, every read strongly consistent and its items counted.

use aws_sdk_dynamodb::types::Select;
use conductor_core::{BackendError, Env, Reservation};
use tracing::{info_span, Instrument};

use super::codec::{n, partition, reservation_of, s, Item};
use super::{DynamoReserver, LIVE_INDEX};
use crate::errors::classify;

/// One page of a listing: its items, how many it read, where the next starts.
struct Page {
    items: Vec<Item>,
    read: i32,
    next: Option<Item>,
}

impl DynamoReserver {
    /// Every reservation with this reserver's prefix, by key: a consistent
    /// `Scan`.
    pub(super) async fn scan(&self) -> Result<Vec<Reservation>, BackendError> {
        self.pages(|start| async move {
            let mut scan = self
                .client
                .scan()
                .table_name(&self.table)
                .consistent_read(true)
                .set_exclusive_start_key(start);
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
            Ok(Page {
                read: page.scanned_count(),
                next: page.last_evaluated_key().cloned(),
                items: page.items.unwrap_or_default(),
            })
        })
        .await
    }

    /// Every reservation (`env` `None`: a `Scan`), or `env`'s ([`query`](Self::query)).
    pub(super) async fn read(
        &self,
        env: Option<&Env>,
        live_at: Option<u64>,
    ) -> Result<Vec<Reservation>, BackendError> {
        match env {
            None => self.scan().await,
            Some(env) => self.query(Some(env), live_at).await,
        }
    }

    /// `env`'s reservations (`None`: the keys of no environment), by key:
    /// a consistent `Query` of its partition; with `live_at`, of
    /// [`LIVE_INDEX`] for the keys whose expiry is after it, so expired
    /// items are not read.
    pub(super) async fn query(
        &self,
        env: Option<&Env>,
        live_at: Option<u64>,
    ) -> Result<Vec<Reservation>, BackendError> {
        let pk = partition(&self.prefix, env.map(Env::as_str));
        let env = env.map_or("(none)", Env::as_str);
        self.pages(|start| {
            let pk = pk.clone();
            async move {
                let mut query = self
                    .client
                    .query()
                    .table_name(&self.table)
                    .consistent_read(true)
                    .select(Select::AllAttributes)
                    .expression_attribute_values(":pk", s(pk))
                    .set_exclusive_start_key(start);
                query = match live_at {
                    Some(now) => query
                        .index_name(LIVE_INDEX)
                        .key_condition_expression("pk = :pk AND expires > :now")
                        .expression_attribute_values(":now", n(now)),
                    None => query.key_condition_expression("pk = :pk"),
                };
                let page = query
                    .send()
                    .instrument(info_span!("dynamodb.query", table = %self.table, env, live = live_at.is_some()))
                    .await
                    .map_err(|e| {
                        classify(
                            "Query",
                            &format!("listing environment {env} in table {}", self.table),
                            e,
                        )
                    })?;
                Ok(Page {
                    read: page.scanned_count(),
                    next: page.last_evaluated_key().cloned(),
                    items: page.items.unwrap_or_default(),
                })
            }
        })
        .await
    }

    /// Runs `page` from the start until no page says where the next starts;
    /// counts the calls and the items read; returns the reservations of
    /// this reserver's prefix, sorted by key.
    async fn pages<F, Fut>(&self, page: F) -> Result<Vec<Reservation>, BackendError>
    where
        F: Fn(Option<Item>) -> Fut,
        Fut: std::future::Future<Output = Result<Page, BackendError>>,
    {
        let mut out = Vec::new();
        let mut start: Option<Item> = None;
        loop {
            self.count();
            let p = page(start.take()).await?;
            self.count_read(p.read);
            out.extend(
                p.items
                    .iter()
                    .filter_map(|i| reservation_of(i, &self.prefix)),
            );
            match p.next {
                Some(k) if !k.is_empty() => start = Some(k),
                _ => break,
            }
        }
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }
}
