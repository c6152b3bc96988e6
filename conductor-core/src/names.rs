//! Validated names: environments, groups, roles, systems, zones and regions.
//!
//! Every value that ends up in a path, a file or an EC2 tag passes through one
//! of these newtypes first, so a `/`, `..`, whitespace or control character can
//! never reach the filesystem.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::input::InputError;

/// Checks `value` as a lowercase DNS label (`[a-z0-9-]`, 1..=63, no leading or
/// trailing `-`); `what` names the input in the error.
pub fn check_label(what: &'static str, value: &str) -> Result<(), InputError> {
    check_chars(what, value, 63, |c| {
        c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'
    })?;
    if value.starts_with('-') || value.ends_with('-') {
        return Err(InputError::invalid(
            what,
            value,
            "must not start or end with '-'",
        ));
    }
    Ok(())
}

/// Refuses `value` when `ok` refuses one of its characters, naming the first
/// one (control and blank characters as `U+XXXX`) and what is `allowed`.
fn refuse_chars(
    what: &str,
    value: &str,
    ok: impl Fn(char) -> bool,
    allowed: &str,
) -> Result<(), InputError> {
    let Some(bad) = value.chars().find(|c| !ok(*c)) else {
        return Ok(());
    };
    let shown = if bad.is_control() || bad.is_whitespace() {
        format!("U+{:04X}", bad as u32)
    } else {
        format!("'{bad}'")
    };
    Err(InputError::invalid(
        what,
        value,
        &format!("contains {shown}; {allowed}"),
    ))
}

fn check_chars(
    what: &'static str,
    value: &str,
    max: usize,
    ok: impl Fn(char) -> bool,
) -> Result<(), InputError> {
    if value.is_empty() {
        return Err(InputError::invalid(what, value, "must not be empty"));
    }
    if value.len() > max {
        return Err(InputError::invalid(
            what,
            value,
            &format!("is longer than {max} characters"),
        ));
    }
    refuse_chars(what, value, ok, "use lowercase letters, digits and '-'")?;
    Ok(())
}

macro_rules! label_newtype {
    ($(#[$doc:meta])* $name:ident, $what:literal) => {
        label_newtype!($(#[$doc])* $name, $what, check_label);
    };
    ($(#[$doc:meta])* $name:ident, $what:literal, $check:path) => {
        $(#[$doc])*
        #[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            /// Validates and wraps `value`.
            pub fn new(value: impl Into<String>) -> Result<Self, InputError> {
                let value = value.into();
                $check($what, &value)?;
                Ok(Self(value))
            }

            /// The validated text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = InputError;
            fn try_from(value: String) -> Result<Self, InputError> {
                Self::new(value)
            }
        }

        impl From<$name> for String {
            fn from(value: $name) -> String {
                value.0
            }
        }

        impl std::str::FromStr for $name {
            type Err = InputError;
            fn from_str(value: &str) -> Result<Self, InputError> {
                Self::new(value)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }
    };
}

label_newtype!(
    /// A Salt environment (`pillarenv` / `saltenv`), e.g. `test`.
    Env,
    "environment"
);
label_newtype!(
    /// A product group (team), e.g. `devops`; never `cloud`.
    Group,
    "group",
    check_group
);

/// The scope word of the cross-group ids (`cloud.system.id`,
/// `cloud.<role>.cluster.id`), which no group may be named.
pub(crate) const CLOUD: &str = "cloud";

/// Checks a group name: a label, and not [`CLOUD`], whose ids
/// (`cloud.system.id`) would be those of every group's cross-group scope.
fn check_group(what: &'static str, value: &str) -> Result<(), InputError> {
    check_label(what, value)?;
    if value == CLOUD {
        return Err(InputError::invalid(
            what,
            value,
            "is the scope of the ids shared by every group (cloud.system.id); rename the group",
        ));
    }
    Ok(())
}
label_newtype!(
    /// A role of a group (a machine type), e.g. `activemq`, or a cluster member.
    Role,
    "role"
);
label_newtype!(
    /// An AWS region, e.g. `us-east-1`.
    Region,
    "region"
);

/// A named system of a group (a set of roles built together), e.g. `small_test`.
///
/// Systems never reach a path or a tag, so `_` is allowed as in Salt pillar keys.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct SystemName(String);

impl SystemName {
    /// Validates and wraps `value`.
    pub fn new(value: impl Into<String>) -> Result<Self, InputError> {
        let value = value.into();
        check_chars("system", &value, 63, |c| {
            c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_'
        })?;
        Ok(Self(value))
    }

    /// The validated text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for SystemName {
    type Error = InputError;
    fn try_from(value: String) -> Result<Self, InputError> {
        Self::new(value)
    }
}

impl From<SystemName> for String {
    fn from(value: SystemName) -> String {
        value.0
    }
}

impl fmt::Display for SystemName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Whether `region` has the shape of the AWS partitions' region names:
/// an area (`us`, `eu`, `ap`, ...), optional qualifiers (`gov`, `iso`, ...), a
/// compass direction and a number (`us-east-1`, `us-gov-west-1`,
/// `ap-southeast-4`). Catches typos such as `us-eest-1` before any AWS call.
fn aws_region_shape(region: &str) -> bool {
    const AREAS: [&str; 11] = [
        "af", "ap", "ca", "cn", "eu", "eusc", "il", "me", "mx", "sa", "us",
    ];
    const DIRECTIONS: [&str; 9] = [
        "north",
        "south",
        "east",
        "west",
        "central",
        "northeast",
        "northwest",
        "southeast",
        "southwest",
    ];
    let parts: Vec<&str> = region.split('-').collect();
    let [area, qualifiers @ .., direction, number] = parts.as_slice() else {
        return false;
    };
    AREAS.contains(area)
        && qualifiers.len() <= 1
        && DIRECTIONS.contains(direction)
        && !number.is_empty()
        && number.bytes().all(|b| b.is_ascii_digit())
}

/// An availability zone, e.g. `us-east-1a`; its region is the zone without the
/// trailing letter.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Zone(String);

impl Zone {
    /// Validates `value` as `<region><letter>` (`us-east-1a`).
    pub fn new(value: impl Into<String>) -> Result<Self, InputError> {
        let value = value.into();
        check_label("region", &value)?;
        let bytes = value.as_bytes();
        let n = bytes.len();
        let shaped = n >= 3
            && bytes[n - 1].is_ascii_lowercase()
            && bytes[n - 2].is_ascii_digit()
            && bytes[n - 3] == b'-';
        if !shaped {
            return Err(InputError::invalid(
                "region",
                &value,
                "is not an availability zone; give one like us-east-1a",
            ));
        }
        if !aws_region_shape(&value[..n - 1]) {
            return Err(InputError::invalid(
                "region",
                &value,
                &format!(
                    "is not in an AWS region: {} is not <area>-<direction>-<number> \
                     (us-east-1, eu-central-2, ap-southeast-4, us-gov-west-1); check the spelling",
                    &value[..n - 1]
                ),
            ));
        }
        Ok(Self(value))
    }

    /// The region this zone is in (`us-east-1a` -> `us-east-1`).
    pub fn region(&self) -> Region {
        Region(self.0[..self.0.len() - 1].to_string())
    }

    /// The validated text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for Zone {
    type Error = InputError;
    fn try_from(value: String) -> Result<Self, InputError> {
        Self::new(value)
    }
}

impl From<Zone> for String {
    fn from(value: Zone) -> String {
        value.0
    }
}

impl std::str::FromStr for Zone {
    type Err = InputError;
    fn from_str(value: &str) -> Result<Self, InputError> {
        Self::new(value)
    }
}

impl fmt::Display for Zone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Longest instance name (a DNS name).
const MAX_NAME: usize = 253;

/// Checks an instance name (minion id) as planned names are made:
/// dot-separated lowercase DNS labels (`devops-mq03.us-east-1a.test.foobar.com`).
/// Nothing else passes: no glob characters (`*?[]`), commas, spaces,
/// slashes, quotes or control characters. Every name read from EC2 passes
/// this before it reaches a Salt command line, a target list or a path.
pub fn check_instance_name(what: &str, value: &str) -> Result<(), InputError> {
    if value.is_empty() || value.len() > MAX_NAME {
        return Err(InputError::invalid(
            what,
            value,
            &format!("must be 1 to {MAX_NAME} characters"),
        ));
    }
    refuse_chars(
        what,
        value,
        |c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.',
        "instance names are lowercase letters, digits, '-' and '.'",
    )?;
    for label in value.split('.') {
        if label.is_empty() || label.len() > 63 || label.starts_with('-') || label.ends_with('-') {
            return Err(InputError::invalid(
                what,
                value,
                "must be dot-separated labels of 1 to 63 characters, none starting or ending with '-'",
            ));
        }
    }
    Ok(())
}

/// Checks a DNS domain (`foobar.com`): dot-separated labels.
pub fn check_domain(value: &str) -> Result<(), InputError> {
    if value.is_empty() || value.len() > 200 {
        return Err(InputError::invalid(
            "domain",
            value,
            "must be 1 to 200 characters",
        ));
    }
    for label in value.split('.') {
        check_label("domain", label).map_err(|_| {
            InputError::invalid(
                "domain",
                value,
                "must be dot-separated lowercase DNS labels",
            )
        })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_reject_paths_and_controls() {
        for bad in [
            "", "../x", "a/b", "a b", "A", "a\u{7}", "-a", "a-", "a_b", "a.b",
        ] {
            assert!(Group::new(bad).is_err(), "{bad:?} accepted");
        }
        assert_eq!(Group::new("devops").unwrap().as_str(), "devops");
    }

    #[test]
    fn a_group_cannot_be_named_like_the_cross_group_scope() {
        let err = Group::new("cloud").unwrap_err().to_string();
        assert!(err.contains("cloud.system.id"), "{err}");
        assert!(Group::new("clouds").is_ok());
        assert!(
            Role::new("cloud").is_ok(),
            "only groups share the scope word"
        );
    }

    #[test]
    fn zone_gives_region() {
        let z = Zone::new("us-east-1a").unwrap();
        assert_eq!(z.region().as_str(), "us-east-1");
        for bad in ["us-east-1", "east", "us-east-1A", "us/east-1a"] {
            assert!(Zone::new(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn zones_of_real_regions_pass_and_typos_do_not() {
        for good in [
            "us-east-1a",
            "eu-central-2b",
            "ap-southeast-4c",
            "us-gov-west-1a",
            "cn-northwest-1a",
            "il-central-1a",
            "eusc-de-east-1a",
        ] {
            assert!(Zone::new(good).is_ok(), "{good:?} refused");
        }
        for typo in [
            "us-eest-1a",
            "use-east-1a",
            "us-east-a1a",
            "us-east--1a",
            "mars-1a",
        ] {
            let e = Zone::new(typo).unwrap_err().to_string();
            assert!(e.contains(typo), "{e}");
        }
    }

    #[test]
    fn error_names_input_and_fix() {
        let e = Role::new("Bad Role").unwrap_err().to_string();
        assert!(e.contains("role") && e.contains("Bad Role"), "{e}");
    }

    #[test]
    fn instance_names_are_dns_names_only() {
        for ok in [
            "devops-mq03.us-east-1a.test.foobar.com",
            "devops-nifi-01.clid-2.us-east-1a.test.foobar.com",
            "a",
        ] {
            assert!(check_instance_name("name", ok).is_ok(), "{ok:?} refused");
        }
        for bad in [
            "", "*", "a,b", "a b", "a?b", "a[1]", "a/b", "../a", "A.b", "a\nb", "a\u{0}", "a..b",
            ".a", "a.", "-a.b", "a-.b", "a'b", "a\"b", "a;b", "$(x)", "a\tb",
        ] {
            assert!(
                check_instance_name("name", bad).is_err(),
                "{bad:?} accepted"
            );
        }
        let e = check_instance_name("name", "a b").unwrap_err().to_string();
        assert!(e.contains("U+0020"), "{e}");
    }

    #[test]
    fn systems_allow_underscore() {
        assert!(SystemName::new("small_test").is_ok());
        assert!(SystemName::new("small/test").is_err());
    }
}
