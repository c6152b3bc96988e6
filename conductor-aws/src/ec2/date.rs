//! The cloud's clock: an interceptor on every EC2 client that keeps the
//! `Date` of the latest answer, which [`Ec2Backend::clock`](super::Ec2Backend)
//! hands to the run's clock check.

use std::sync::{Arc, Mutex};

use aws_sdk_ec2::config::interceptors::BeforeDeserializationInterceptorContextRef;
use aws_sdk_ec2::config::{ConfigBag, Intercept, RuntimeComponents};
use aws_sdk_ec2::error::BoxError;
use aws_sdk_ec2::primitives::{DateTime, DateTimeFormat};
use conductor_core::CloudTime;

/// The latest `Date` seen, shared by the backend's clients.
#[derive(Clone, Debug, Default)]
pub(super) struct LastDate(Arc<Mutex<Option<CloudTime>>>);

impl LastDate {
    /// The latest reading, if any answer carried a `Date`.
    pub(super) fn get(&self) -> Option<CloudTime> {
        *self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Intercept for LastDate {
    fn name(&self) -> &'static str {
        "conductor.LastDate"
    }

    fn read_after_transmit(
        &self,
        context: &BeforeDeserializationInterceptorContextRef<'_>,
        _components: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let date = context
            .response()
            .headers()
            .get("date")
            .and_then(|d| DateTime::from_str(d, DateTimeFormat::HttpDate).ok())
            .and_then(|d| u64::try_from(d.to_millis().ok()?).ok());
        if let Some(ms) = date {
            *self.0.lock().unwrap_or_else(|p| p.into_inner()) = Some(CloudTime::now(ms));
        }
        Ok(())
    }
}
