//! `RetryCloud`: wraps any [`CloudBackend`] and retries the calls a cloud
//! refused for rate limits ([`BackendErrorKind::Throttled`]) or could not
//! answer ([`BackendErrorKind::Unreachable`]), with bounded, jittered
//! exponential backoff.
//!
//! What is retried, and why it is safe:
//! - `inventory` and `wait_visible` only read.
//! - `terminate` of an instance already terminating or gone is a no-op on EC2
//!   (and `Ec2Backend` drops ids EC2 no longer knows), so a repeat is harmless.
//! - `launch` is retried only when the call failed **as a whole**, with the
//!   very same specs and hence the same client tokens. A throttled call was
//!   refused before anything ran. After an unreachable one, a launch may have
//!   happened; EC2 (and `FakeCloud`) answer a repeated `RunInstances` with the
//!   instance of the earlier request that carried the same `ClientToken`
//!   instead of launching another, so the retry cannot launch twice. That is
//!   why an unreachable launch is retried only when every spec carries a
//!   token. Per-instance failures inside the results are passed through
//!   untouched: the backend has settled them (`Ec2Backend` already retried
//!   each `RunInstances` in the SDK), and an uncertain one may exist on an
//!   endpoint that does not honour tokens (moto), where a repeat would
//!   launch a second instance under the same name.

use std::collections::BTreeSet;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use tracing::{debug, warn};

use crate::backend::{BackendError, BackendErrorKind};
use crate::backoff::Backoff;
use crate::clock::CloudTime;
use crate::cloud::{
    CloudBackend, InstanceRef, InstanceTags, Inventory, LaunchResult, LaunchSpec, Scope,
};
use crate::names::Region;

/// How often and how long [`RetryCloud`] retries.
#[derive(Clone, Debug, PartialEq)]
pub struct RetryPolicy {
    /// Attempts per call, the first included (at least 1).
    pub max_attempts: u32,
    /// Delays between attempts (jittered, so parallel runs that were
    /// throttled together do not come back together).
    pub backoff: Backoff,
    /// No attempt starts later than this after the call's first one.
    pub deadline: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 5,
            backoff: Backoff::new(Duration::from_millis(200), Duration::from_secs(5)),
            deadline: Duration::from_secs(60),
        }
    }
}

impl RetryPolicy {
    /// The delay after failed attempt `attempt` (1-based), jitter applied.
    pub fn delay(&self, attempt: u32) -> Duration {
        self.backoff.delay(attempt)
    }

    /// Whether an error of `kind` is worth another attempt.
    pub fn retryable(kind: BackendErrorKind) -> bool {
        matches!(
            kind,
            BackendErrorKind::Throttled | BackendErrorKind::Unreachable
        )
    }
}

/// A [`CloudBackend`] that retries throttled and unreachable calls of `C`;
/// see the module docs for what is retried.
#[derive(Clone, Debug)]
pub struct RetryCloud<C> {
    inner: C,
    policy: RetryPolicy,
}

impl<C: CloudBackend> RetryCloud<C> {
    /// Wraps `inner` with the default [`RetryPolicy`].
    pub fn new(inner: C) -> Self {
        Self {
            inner,
            policy: RetryPolicy::default(),
        }
    }

    /// Replaces the whole policy.
    pub fn policy(mut self, policy: RetryPolicy) -> Self {
        self.policy = policy;
        self
    }

    /// Attempts per call, the first included.
    pub fn max_attempts(mut self, n: u32) -> Self {
        self.policy.max_attempts = n.max(1);
        self
    }

    /// First delay and the cap of the exponential backoff.
    pub fn backoff(mut self, base: Duration, max_delay: Duration) -> Self {
        self.policy.backoff.base = base;
        self.policy.backoff.max = max_delay;
        self
    }

    /// Random fraction of each delay (0.0..=1.0).
    pub fn jitter(mut self, jitter: f64) -> Self {
        self.policy.backoff.jitter = jitter;
        self
    }

    /// Longest time after a call's first attempt at which another may start.
    pub fn deadline(mut self, deadline: Duration) -> Self {
        self.policy.deadline = deadline;
        self
    }

    /// The wrapped backend.
    pub fn inner(&self) -> &C {
        &self.inner
    }

    /// Runs `call` until it succeeds, fails with an error `retry` refuses, or
    /// the attempts are used up; returns the last error then.
    async fn run<T, F, Fut>(
        &self,
        op: &'static str,
        retry: impl Fn(BackendErrorKind) -> bool,
        mut call: F,
    ) -> Result<T, BackendError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, BackendError>>,
    {
        let max = self.policy.max_attempts.max(1);
        let deadline = tokio::time::Instant::now() + self.policy.deadline;
        let mut attempt = 1;
        loop {
            let e = match call().await {
                Ok(v) => {
                    if attempt > 1 {
                        debug!(op, attempt, "cloud call succeeded after retries");
                    }
                    return Ok(v);
                }
                Err(e) => e,
            };
            let delay = self.policy.delay(attempt);
            let again =
                attempt < max && retry(e.kind) && tokio::time::Instant::now() + delay <= deadline;
            if !again {
                if attempt > 1 {
                    warn!(op, attempt, kind = ?e.kind, error = %e, "cloud call failed; giving up");
                }
                return Err(e);
            }
            warn!(op, attempt, max, kind = ?e.kind, delay_ms = delay.as_millis() as u64, error = %e, "cloud call failed; retrying");
            tokio::time::sleep(delay).await;
            attempt += 1;
        }
    }
}

#[async_trait]
impl<C: CloudBackend> CloudBackend for RetryCloud<C> {
    async fn inventory(&self, scope: &Scope) -> Result<Inventory, BackendError> {
        self.run("inventory", RetryPolicy::retryable, || {
            self.inner.inventory(scope)
        })
        .await
    }

    async fn launch(&self, specs: &[LaunchSpec]) -> Result<Vec<LaunchResult>, BackendError> {
        let tokens = specs.iter().all(|s| !s.client_token.is_empty());
        let retry = |kind| {
            kind == BackendErrorKind::Throttled || (tokens && kind == BackendErrorKind::Unreachable)
        };
        // An attempt that may have launched keeps the whole call uncertain,
        // whatever the later attempts answer: a caller frees the names of
        // a launch that surely failed at once.
        let uncertain = AtomicBool::new(false);
        let result = self
            .run("launch", retry, || async {
                let r = self.inner.launch(specs).await;
                if matches!(&r, Err(e) if e.kind == BackendErrorKind::Unreachable) {
                    uncertain.store(true, Ordering::Relaxed);
                }
                r
            })
            .await;
        result.map_err(|mut e| {
            if uncertain.load(Ordering::Relaxed) && e.kind != BackendErrorKind::Unreachable {
                e.message = format!(
                    "{} (an earlier attempt went unanswered and may have launched)",
                    e.message
                );
                e.kind = BackendErrorKind::Unreachable;
            }
            e
        })
    }

    async fn terminate(&self, instances: &[InstanceRef]) -> Result<(), BackendError> {
        self.run("terminate", RetryPolicy::retryable, || {
            self.inner.terminate(instances)
        })
        .await
    }

    async fn tag_instances(&self, tags: &[InstanceTags]) -> Result<(), BackendError> {
        // CreateTags sets values: repeating it is harmless.
        self.run("tag_instances", RetryPolicy::retryable, || {
            self.inner.tag_instances(tags)
        })
        .await
    }

    async fn wait_visible(
        &self,
        region: &Region,
        names: &[String],
        timeout: Duration,
    ) -> Result<BTreeSet<String>, BackendError> {
        self.run("wait_visible", RetryPolicy::retryable, || {
            self.inner.wait_visible(region, names, timeout)
        })
        .await
    }

    fn clock(&self) -> Option<CloudTime> {
        self.inner.clock()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;
    use std::sync::Mutex;

    use super::*;
    use crate::cloud::{LaunchFailure, Launched};
    use crate::names::Zone;

    /// A cloud that answers each call with the next scripted error, then succeeds.
    #[derive(Debug, Default)]
    struct Scripted {
        errors: Mutex<VecDeque<BackendErrorKind>>,
        calls: Mutex<usize>,
    }

    impl Scripted {
        fn failing(kinds: &[BackendErrorKind]) -> Self {
            Self {
                errors: Mutex::new(kinds.iter().copied().collect()),
                calls: Mutex::new(0),
            }
        }
        fn calls(&self) -> usize {
            *self.calls.lock().unwrap()
        }
        fn next(&self) -> Result<(), BackendError> {
            *self.calls.lock().unwrap() += 1;
            match self.errors.lock().unwrap().pop_front() {
                Some(kind) => Err(BackendError::new(kind, format!("scripted {kind:?}"))),
                None => Ok(()),
            }
        }
    }

    #[async_trait]
    impl CloudBackend for Scripted {
        async fn inventory(&self, _: &Scope) -> Result<Inventory, BackendError> {
            self.next().map(|()| Inventory::default())
        }
        async fn launch(&self, specs: &[LaunchSpec]) -> Result<Vec<LaunchResult>, BackendError> {
            self.next()?;
            Ok(specs
                .iter()
                .map(|s| LaunchResult {
                    name: s.name.clone(),
                    outcome: Err(LaunchFailure {
                        message: "per-instance failure".into(),
                        definite: false,
                    }),
                })
                .chain(std::iter::once(LaunchResult {
                    name: "ok".into(),
                    outcome: Ok(Launched {
                        name: "ok".into(),
                        instance_id: "i-1".into(),
                        detail: serde_json::Value::Null,
                    }),
                }))
                .collect())
        }
        async fn terminate(&self, _: &[InstanceRef]) -> Result<(), BackendError> {
            self.next()
        }
    }

    use BackendErrorKind::{Rejected, Throttled, Unreachable};

    fn wrap(kinds: &[BackendErrorKind], attempts: u32) -> RetryCloud<Scripted> {
        RetryCloud::new(Scripted::failing(kinds))
            .max_attempts(attempts)
            .backoff(Duration::from_millis(100), Duration::from_secs(1))
    }

    fn scope() -> Scope {
        Scope::all(Region::new("us-east-1").unwrap())
    }

    fn spec(token: &str) -> LaunchSpec {
        LaunchSpec {
            name: "a.example.com".into(),
            zone: Zone::new("us-east-1a").unwrap(),
            client_token: token.into(),
            tags: Default::default(),
            settings: crate::settings::LaunchSettings::with_image("ami-1"),
            user_data: None,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn retries_throttled_and_unreachable_reads_until_they_pass() {
        let c = wrap(&[Throttled, Unreachable, Throttled], 4);
        c.inventory(&scope()).await.unwrap();
        assert_eq!(c.inner().calls(), 4);
        let w = c
            .wait_visible(&scope().region, &[], Duration::from_secs(1))
            .await
            .unwrap();
        assert!(w.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn gives_up_after_max_attempts_with_the_last_error() {
        let c = wrap(&[Throttled, Throttled, Unreachable, Throttled], 3);
        let e = c.terminate(&[]).await.unwrap_err();
        assert_eq!(e.kind, Unreachable);
        assert_eq!(c.inner().calls(), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn does_not_retry_a_rejected_call() {
        let c = wrap(&[Rejected], 5);
        assert_eq!(c.inventory(&scope()).await.unwrap_err().kind, Rejected);
        assert_eq!(c.inner().calls(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn launch_retries_only_when_a_repeat_cannot_launch_twice() {
        let c = wrap(&[Throttled, Unreachable], 5);
        let r = c.launch(&[spec("tok-1")]).await.unwrap();
        assert_eq!(c.inner().calls(), 3, "throttled and unreachable retried");
        assert!(
            r[0].outcome.is_err(),
            "per-instance failures are passed through, not retried"
        );
        let c = wrap(&[Throttled, Unreachable], 5);
        let e = c.launch(&[spec("tok-1"), spec("")]).await.unwrap_err();
        assert_eq!(
            e.kind, Unreachable,
            "no token: an unreachable launch stays failed"
        );
        assert_eq!(c.inner().calls(), 2, "but a throttled one was retried");
    }

    #[tokio::test(start_paused = true)]
    async fn a_launch_that_may_have_launched_once_stays_uncertain() {
        let c = wrap(&[Unreachable, Throttled, Throttled], 3);
        let e = c.launch(&[spec("tok-1")]).await.unwrap_err();
        assert_eq!(c.inner().calls(), 3);
        assert_eq!(e.kind, Unreachable, "{e}");
        assert!(e.message.contains("may have launched"), "{e}");
        let c = wrap(&[Throttled, Throttled, Throttled], 3);
        let e = c.launch(&[spec("tok-1")]).await.unwrap_err();
        assert_eq!(e.kind, Throttled, "never answered uncertainly: {e}");
    }

    #[tokio::test(start_paused = true)]
    async fn no_attempt_starts_after_the_deadline() {
        let c = wrap(&[Throttled; 10], 10).deadline(Duration::from_millis(500));
        assert_eq!(c.inventory(&scope()).await.unwrap_err().kind, Throttled);
        assert!(
            c.inner().calls() < 10,
            "the deadline ends the retries before the attempts run out: {}",
            c.inner().calls()
        );
    }
}
