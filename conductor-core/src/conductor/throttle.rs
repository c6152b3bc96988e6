//! Provisioning slots: at most K runs of a region launch at once, across
//! processes and hosts, through the configured reserver.

use std::time::Duration;

use tracing::{info, info_span, Instrument};

use super::Conductor;
use crate::cpid::Cpid;
use crate::error::{Error, ReserveError};
use crate::names::Region;
use crate::reserve::{Key, KeyKind, Lease, Owner};

/// The key of provisioning slot `i` of `region`: `slot.<region>.<i>`.
pub fn slot_key(region: &Region, i: u32) -> Key {
    Key::new(KeyKind::Id, format!("slot.{region}.{i}"))
        .expect("regions and numbers make valid keys")
}

impl Conductor {
    /// Takes one of `slots` provisioning slots of `region`, waiting (with a
    /// progress message) while all are taken. A crashed holder's slot frees
    /// itself when its lease expires.
    pub(super) async fn take_slot(
        &self,
        cpid: Cpid,
        region: &Region,
        slots: u32,
    ) -> Result<Lease, Error> {
        let keys: Vec<Key> = (1..=slots).map(|i| slot_key(region, i)).collect();
        let deadline = tokio::time::Instant::now() + self.opts.slot_wait;
        let mut delay = self.opts.backoff_base;
        let mut announced = false;
        loop {
            let owner = Owner::this_process(cpid, self.opts.lease_ttl);
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
                        return Ok(lease);
                    }
                    Err(ReserveError::Conflict(_)) => {}
                    Err(ReserveError::Backend(e)) => {
                        return Err(Error::backend("taking a provisioning slot", e))
                    }
                }
            }
            if !announced {
                info!(slots, %region, "all provisioning slots of the region are taken; waiting for one");
                announced = true;
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(Error::RetriesExhausted { attempts: 0, keys });
            }
            tokio::time::sleep(delay.mul_f64(0.5 + rand::random::<f64>() * 0.5)).await;
            delay = (delay * 2).min(self.opts.backoff_max.max(Duration::from_millis(1)));
        }
    }
}
