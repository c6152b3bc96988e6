//! Clocks. Lease expiries are epoch milliseconds of each host's clock, and
//! every reserver compares them with the reader's own clock, so two masters
//! whose clocks differ by more than the release grace could free a key
//! early (or hold it late). Before it plans, a run compares its clock with
//! the cloud's: the `Date` of the cloud's last answer
//! ([`CloudBackend::clock`](crate::CloudBackend::clock)). A skew beyond a
//! quarter of the grace is a warning; beyond the grace, a refusal
//! ([`Error::ClockSkew`](crate::Error::ClockSkew), exit 2).

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;

/// Where a run reads the local time it compares with the cloud's: the
/// system clock unless a test (or an embedder) injects another.
#[derive(Clone)]
pub struct Clock(Arc<dyn Fn() -> u64 + Send + Sync>);

impl Clock {
    /// The system clock ([`now_ms`](crate::now_ms)).
    pub fn system() -> Self {
        Self(Arc::new(crate::reserve::now_ms))
    }

    /// The system clock moved by `offset_ms` (a host whose clock is off).
    pub fn skewed(offset_ms: i64) -> Self {
        Self(Arc::new(move || {
            crate::reserve::now_ms().saturating_add_signed(offset_ms)
        }))
    }

    /// A clock read from `now` (epoch milliseconds).
    pub fn from_fn(now: impl Fn() -> u64 + Send + Sync + 'static) -> Self {
        Self(Arc::new(now))
    }

    /// The time now, epoch milliseconds.
    pub fn now_ms(&self) -> u64 {
        (self.0)()
    }
}

impl Default for Clock {
    fn default() -> Self {
        Self::system()
    }
}

impl fmt::Debug for Clock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Clock({})", self.now_ms())
    }
}

/// A reading of the cloud's clock: the `Date` of one of its answers, and
/// when that answer arrived.
#[derive(Clone, Copy, Debug)]
pub struct CloudTime {
    /// The answer's `Date`, epoch milliseconds (whole seconds: HTTP dates
    /// have no fraction).
    pub date_ms: u64,
    /// When the answer arrived, on the monotonic clock.
    pub received: Instant,
}

impl CloudTime {
    /// A reading taken now from `date_ms`.
    pub fn now(date_ms: u64) -> Self {
        Self {
            date_ms,
            received: Instant::now(),
        }
    }
}

/// How far the local clock is from the cloud's, and what a run makes of it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct ClockSkew {
    /// The local clock when the cloud's answer arrived, epoch milliseconds.
    pub local_ms: u64,
    /// The cloud's clock then (its `Date`), epoch milliseconds.
    pub cloud_ms: u64,
    /// How far the local clock is ahead (negative: behind) of the second
    /// the `Date` names, in milliseconds; 0 inside that second.
    pub skew_ms: i64,
}

/// The smallest skew that is warned about or refused, whatever the grace:
/// HTTP dates are whole seconds, and answers take time to arrive.
pub const SKEW_FLOOR: Duration = Duration::from_secs(2);

/// What a run does about a [`ClockSkew`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SkewVerdict {
    /// Within a quarter of the grace (or [`SKEW_FLOOR`]).
    Fine,
    /// Beyond a quarter of the grace: the run goes on and says so.
    Warn,
    /// Beyond the grace (or [`SKEW_FLOOR`]): the run refuses to reserve.
    Refuse,
}

impl ClockSkew {
    /// Compares `clock` with `reading` (see [`ClockSkew::between`]).
    pub fn measure(clock: &Clock, reading: &CloudTime) -> Self {
        let since = u64::try_from(reading.received.elapsed().as_millis()).unwrap_or(u64::MAX);
        Self::between(clock.now_ms().saturating_sub(since), reading.date_ms)
    }

    /// The skew of `local_ms` from a `Date` of `date_ms`: the cloud's time
    /// was within the second the `Date` names, so the skew is the local
    /// time's distance outside that second.
    pub fn between(local_ms: u64, date_ms: u64) -> Self {
        let (from, to) = (date_ms, date_ms.saturating_add(1000));
        let signed = |d: u64| i64::try_from(d).unwrap_or(i64::MAX);
        let skew_ms = if local_ms < from {
            -signed(from - local_ms)
        } else {
            signed(local_ms.saturating_sub(to))
        };
        Self {
            local_ms,
            cloud_ms: date_ms,
            skew_ms,
        }
    }

    /// The skew's size.
    pub fn size(&self) -> Duration {
        Duration::from_millis(self.skew_ms.unsigned_abs())
    }

    /// Fine, a warning beyond a quarter of `grace`, a refusal beyond
    /// `grace` (neither below [`SKEW_FLOOR`]).
    pub fn verdict(&self, grace: Duration) -> SkewVerdict {
        if self.size() > grace.max(SKEW_FLOOR) {
            SkewVerdict::Refuse
        } else if self.size() > (grace / 4).max(SKEW_FLOOR) {
            SkewVerdict::Warn
        } else {
            SkewVerdict::Fine
        }
    }
}

impl fmt::Display for ClockSkew {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let way = if self.skew_ms >= 0 {
            "ahead of"
        } else {
            "behind"
        };
        write!(
            f,
            "this host's clock ({}) is {:.1} s {way} the cloud's (its answers' Date: {})",
            iso_utc_ms(self.local_ms),
            self.size().as_secs_f64(),
            iso_utc_ms(self.cloud_ms),
        )
    }
}

/// `secs` since the Unix epoch as `YYYY-MM-DDTHH:MM:SSZ` (proleptic
/// Gregorian calendar; the civil-from-days algorithm of H. Hinnant).
pub fn iso_utc(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3_600,
        rem % 3_600 / 60,
        rem % 60
    )
}

/// Epoch milliseconds as [`iso_utc`] with milliseconds (`…T05:00:07.250Z`).
pub fn iso_utc_ms(ms: u64) -> String {
    let secs = iso_utc(ms / 1000);
    format!("{}.{:03}Z", secs.trim_end_matches('Z'), ms % 1000)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iso_dates() {
        assert_eq!(iso_utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(iso_utc(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(iso_utc(1_796_146_235), "2026-12-01T17:30:35Z");
        assert_eq!(iso_utc(4_107_542_399), "2100-02-28T23:59:59Z");
        assert_eq!(iso_utc_ms(1_796_146_235_250), "2026-12-01T17:30:35.250Z");
    }

    #[test]
    fn skew_is_the_distance_outside_the_dates_second() {
        let date = 1_796_146_235_000;
        for (local, skew) in [
            (date, 0),
            (date + 999, 0),
            (date + 1_000, 0),
            (date + 1_500, 500),
            (date - 1, -1),
            (date - 7_000, -7_000),
        ] {
            assert_eq!(
                ClockSkew::between(local, date).skew_ms,
                skew,
                "local {local}"
            );
        }
        // A reading measured with an injected clock.
        let clock = Clock::from_fn(move || date + 5_000);
        let s = ClockSkew::measure(&clock, &CloudTime::now(date));
        assert!((3_990..=4_000).contains(&s.skew_ms), "{s:?}");
    }

    #[test]
    fn thresholds_are_a_quarter_of_the_grace_and_the_grace() {
        let grace = Duration::from_secs(120);
        let date = 1_796_146_235_000_u64;
        let verdict = |skew_s: i64| {
            let local = if skew_s >= 0 {
                date + 1000 + skew_s.unsigned_abs() * 1000
            } else {
                date - skew_s.unsigned_abs() * 1000
            };
            ClockSkew::between(local, date).verdict(grace)
        };
        assert_eq!(verdict(0), SkewVerdict::Fine);
        assert_eq!(verdict(30), SkewVerdict::Fine, "a quarter of the grace");
        assert_eq!(verdict(31), SkewVerdict::Warn);
        assert_eq!(verdict(-31), SkewVerdict::Warn);
        assert_eq!(verdict(120), SkewVerdict::Warn, "the grace itself");
        assert_eq!(verdict(121), SkewVerdict::Refuse);
        assert_eq!(verdict(-200), SkewVerdict::Refuse);
        // No grace (moto): the floor still tolerates a second or two.
        let fine = ClockSkew::between(date + 2_900, date);
        assert_eq!(fine.verdict(Duration::ZERO), SkewVerdict::Fine);
        let off = ClockSkew::between(date + 3_100, date);
        assert_eq!(off.verdict(Duration::ZERO), SkewVerdict::Refuse);
        let text = off.to_string();
        assert!(
            text.contains("2.1 s ahead of")
                && text.contains("(its answers' Date: 2026-12-01T17:30:35.000Z)"),
            "{text}"
        );
    }
}
