//! `Backoff`: the one waiting policy of Conductor — exponential, capped,
//! optionally jittered. Retries of cloud calls, reservation attempts,
//! provisioning slots and every poll (visibility, minions) use it.

use std::time::Duration;

/// Delays that double from `base` up to `max`, each shortened by a random
/// part of up to `jitter` of it, so runs that failed together do not come
/// back together.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Backoff {
    /// Delay after the first failed attempt.
    pub base: Duration,
    /// Largest delay.
    pub max: Duration,
    /// Random fraction (0.0..=1.0) taken off each delay: 0.5 waits between
    /// half and all of it; 0.0 waits exactly (polls).
    pub jitter: f64,
}

impl Backoff {
    /// From `base` doubling up to `max`, half jittered.
    pub const fn new(base: Duration, max: Duration) -> Self {
        Self {
            base,
            max,
            jitter: 0.5,
        }
    }

    /// The same delays without jitter (for polls that nobody else competes with).
    pub const fn exact(base: Duration, max: Duration) -> Self {
        Self {
            base,
            max,
            jitter: 0.0,
        }
    }

    /// The delay after failed attempt `attempt` (1-based), jitter applied.
    pub fn delay(&self, attempt: u32) -> Duration {
        let exp = self
            .base
            .saturating_mul(1u32 << attempt.clamp(1, 17).saturating_sub(1));
        let jitter = self.jitter.clamp(0.0, 1.0);
        let cut = if jitter > 0.0 {
            jitter * rand::random::<f64>()
        } else {
            0.0
        };
        exp.min(self.max).mul_f64(1.0 - cut)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_up_to_the_cap_and_jitter_only_shortens() {
        let b = Backoff::exact(Duration::from_millis(100), Duration::from_secs(1));
        let got: Vec<u128> = (1..=6).map(|a| b.delay(a).as_millis()).collect();
        assert_eq!(got, [100, 200, 400, 800, 1000, 1000]);
        let j = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
        for a in 1..=6 {
            let d = j.delay(a);
            assert!(d <= b.delay(a) && d >= b.delay(a) / 2, "{a}: {d:?}");
        }
        assert_eq!(
            b.delay(1000),
            Duration::from_secs(1),
            "large attempts saturate"
        );
    }
}
