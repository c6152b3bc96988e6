//! Provisioning slots: at most K runs of a region launch at once, across
//! processes and hosts, through the configured reserver.

use tracing::{info, info_span, Instrument};

use super::run::Run;
use crate::account::AccountSpec;
use crate::backoff::Backoff;
use crate::conductor::Conductor;
use crate::error::Error;
use crate::names::Region;
use crate::reserve::{Key, KeyKind, ReserveError};

/// The key of provisioning slot `i` of `region`: `slot.<region>.<i>` in
/// the default account, `slot.<account>.<region>.<i>` in the `account` an
/// environment names (its [label](AccountSpec::label)), so each account
/// and region has its own slots.
pub fn slot_key(account: Option<&AccountSpec>, region: &Region, i: u32) -> Key {
    let text = match account {
        None => format!("slot.{region}.{i}"),
        Some(a) => format!("slot.{}.{region}.{i}", a.label()),
    };
    Key::new(KeyKind::Id, text).expect("account labels, regions and numbers make valid keys")
}

impl Conductor {
    /// Takes one of `slots` provisioning slots of `region` (of `account`) for `run` (held
    /// in its holdings; returns the slot's key), waiting (with a progress
    /// message) while all are taken. A crashed holder's slot frees itself
    /// when its owner is gone or its lease expires.
    pub(super) async fn take_slot(
        &self,
        run: &Run,
        (account, region): (Option<&AccountSpec>, &Region),
        slots: u32,
    ) -> Result<Vec<Key>, Error> {
        let keys: Vec<Key> = (1..=slots).map(|i| slot_key(account, region, i)).collect();
        let deadline = tokio::time::Instant::now() + self.opts.slot_wait;
        let backoff = Backoff::new(self.opts.backoff_base, self.opts.backoff_max);
        let mut attempt = 0;
        let mut announced = false;
        loop {
            let owner = run.owner();
            for key in &keys {
                match self
                    .reserver
                    .try_reserve(std::slice::from_ref(key), &owner)
                    .instrument(info_span!("reserver.slot", %key))
                    .await
                {
                    Ok(lease) => {
                        if announced {
                            info!(%key, "got a provisioning slot");
                        }
                        let keys = lease.keys.clone();
                        run.holdings.hold(lease).await;
                        return Ok(keys);
                    }
                    Err(ReserveError::Conflict(_)) => {}
                    Err(e) => return Err(super::reserve_failed("taking a provisioning slot", e)),
                }
            }
            if !announced {
                info!(slots, %region, "all provisioning slots of the region are taken; waiting for one");
                announced = true;
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(Error::RetriesExhausted { attempts: 0, keys });
            }
            attempt += 1;
            tokio::time::sleep(backoff.delay(attempt)).await;
        }
    }
}
