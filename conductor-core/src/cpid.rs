//! The cloud provision id (CPID) that names every file, directory and grain of a run.

use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::input::InputError;

/// A cloud provision id: the decimal of a 32-bit random value followed by the
/// Unix epoch seconds (`1683383033` ++ `1552303186` = `16833830331552303186`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Cpid {
    random: u32,
    epoch: u64,
}

/// Digits of the epoch-seconds part (10 until the year 2286).
const EPOCH_DIGITS: usize = 10;

impl Cpid {
    /// A fresh CPID from the thread RNG and the current time.
    pub fn generate() -> Self {
        let epoch = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        Self::from_parts(rand::random::<u32>(), epoch)
    }

    /// A CPID from its two parts.
    pub fn from_parts(random: u32, epoch: u64) -> Self {
        Self { random, epoch }
    }

    /// The random part.
    pub fn random(&self) -> u32 {
        self.random
    }

    /// The epoch-seconds part.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// Parses the decimal form; the last ten digits are the epoch seconds.
    pub fn parse(value: &str) -> Result<Self, InputError> {
        let bad = |reason: &str| InputError::invalid("cpid", value, reason);
        if !value.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad("must be decimal digits, e.g. 16833830331552303186"));
        }
        if value.len() <= EPOCH_DIGITS || value.len() > EPOCH_DIGITS + 10 {
            return Err(bad(
                "must be 11 to 20 digits: a 32-bit random number then epoch seconds",
            ));
        }
        let (r, e) = value.split_at(value.len() - EPOCH_DIGITS);
        if r.len() > 1 && r.starts_with('0') {
            return Err(bad("the random part has a leading zero"));
        }
        let random = r
            .parse::<u32>()
            .map_err(|_| bad("the random part exceeds 32 bits"))?;
        let epoch = e.parse::<u64>().map_err(|_| bad("bad epoch part"))?;
        Ok(Self { random, epoch })
    }
}

impl fmt::Display for Cpid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}{:0width$}",
            self.random,
            self.epoch,
            width = EPOCH_DIGITS
        )
    }
}

impl std::str::FromStr for Cpid {
    type Err = InputError;
    fn from_str(s: &str) -> Result<Self, InputError> {
        Self::parse(s)
    }
}

impl TryFrom<String> for Cpid {
    type Error = InputError;
    fn try_from(value: String) -> Result<Self, InputError> {
        Self::parse(&value)
    }
}

impl From<Cpid> for String {
    fn from(value: Cpid) -> String {
        value.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seed_example() {
        let c = Cpid::from_parts(1683383033, 1552303186);
        assert_eq!(c.to_string(), "16833830331552303186");
        assert_eq!(Cpid::parse("16833830331552303186").unwrap(), c);
    }

    #[test]
    fn round_trips_small_random() {
        let c = Cpid::from_parts(7, 1552303186);
        assert_eq!(c.to_string(), "71552303186");
        assert_eq!(Cpid::parse(&c.to_string()).unwrap(), c);
    }

    #[test]
    fn generated_is_current() {
        let c = Cpid::generate();
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        assert!(now - c.epoch() < 5);
        assert_eq!(Cpid::parse(&c.to_string()).unwrap(), c);
    }

    #[test]
    fn rejects_garbage() {
        for bad in [
            "",
            "abc",
            "123",
            "99999999991552303186",
            "0x1",
            "001552303186",
        ] {
            assert!(Cpid::parse(bad).is_err(), "{bad}");
        }
    }
}
