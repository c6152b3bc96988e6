//! EC2's documented limits on what one launch carries, checked on a plan
//! before anything is reserved: EC2 refuses a launch that breaks them only
//! after the run has reserved its keys, and moto does not refuse it at all.

use std::collections::BTreeMap;

use crate::error::PlanError;

/// Most tags one EC2 resource carries.
pub const MAX_TAGS: usize = 50;
/// Longest tag key, in Unicode characters.
pub const MAX_TAG_KEY_CHARS: usize = 128;
/// Longest tag value, in Unicode characters.
pub const MAX_TAG_VALUE_CHARS: usize = 256;
/// Largest user data of one launch, in bytes, before base64 encoding.
pub const MAX_USER_DATA_BYTES: usize = 16 * 1024;

/// The refusal of `instance`'s launch for `why`.
fn refused(instance: &str, why: String) -> PlanError {
    PlanError::Ec2Limit {
        instance: instance.to_string(),
        why,
    }
}

/// Checks the tags of one planned instance (the pillar's `tags` and
/// Conductor's own) against EC2's limits.
pub fn check_tags(instance: &str, tags: &BTreeMap<String, String>) -> Result<(), PlanError> {
    if tags.len() > MAX_TAGS {
        return Err(refused(
            instance,
            format!(
                "{} tags, EC2 allows {MAX_TAGS} per instance ({} of them are Conductor's); remove some of the role's `tags`",
                tags.len(),
                tags.keys()
                    .filter(|k| *k == "Name" || k.starts_with("conductor:"))
                    .count()
            ),
        ));
    }
    for (k, v) in tags {
        if k.chars().count() > MAX_TAG_KEY_CHARS {
            return Err(refused(
                instance,
                format!(
                    "tag key {:?} is {} characters long, EC2 allows {MAX_TAG_KEY_CHARS}; shorten it",
                    short(k),
                    k.chars().count()
                ),
            ));
        }
        if v.chars().count() > MAX_TAG_VALUE_CHARS {
            return Err(refused(
                instance,
                format!(
                    "tag {k:?} has a value of {} characters, EC2 allows {MAX_TAG_VALUE_CHARS}; shorten it",
                    v.chars().count()
                ),
            ));
        }
        if k.get(..4).is_some_and(|p| p.eq_ignore_ascii_case("aws:")) {
            return Err(refused(
                instance,
                format!("tag key {k:?} starts with `aws:`, which EC2 reserves for AWS; rename it"),
            ));
        }
    }
    Ok(())
}

/// Checks the size of one instance's rendered user data.
pub fn check_user_data(instance: &str, user_data: &str) -> Result<(), PlanError> {
    if user_data.len() > MAX_USER_DATA_BYTES {
        return Err(refused(
            instance,
            format!(
                "its user data (the minion config with its grains, and the bootstrap command) is {} bytes, EC2 allows {MAX_USER_DATA_BYTES}; move large grains out of the pillar's `grains` (into pillar data the minion reads)",
                user_data.len()
            ),
        ));
    }
    Ok(())
}

/// The first 40 characters of `s`, for messages.
fn short(s: &str) -> String {
    match s.char_indices().nth(40) {
        Some((i, _)) => format!("{}...", &s[..i]),
        None => s.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tags(n: usize) -> BTreeMap<String, String> {
        (0..n).map(|i| (format!("k{i}"), "v".to_string())).collect()
    }

    #[test]
    fn fifty_tags_pass_and_fifty_one_are_refused() {
        assert!(check_tags("a", &tags(50)).is_ok());
        let e = check_tags("a", &tags(51)).unwrap_err().to_string();
        assert!(e.contains("51 tags") && e.contains("a:"), "{e}");
    }

    #[test]
    fn long_keys_and_values_and_the_aws_prefix_are_refused() {
        let mut t = tags(1);
        t.insert("é".repeat(128), "v".repeat(256));
        assert!(check_tags("a", &t).is_ok(), "characters, not bytes");
        t.insert("k".repeat(129), "v".into());
        let e = check_tags("a", &t).unwrap_err().to_string();
        assert!(e.contains("129 characters") && e.contains("kkk..."), "{e}");
        let mut t = tags(1);
        t.insert("owner".into(), "x".repeat(257));
        let e = check_tags("a", &t).unwrap_err().to_string();
        assert!(e.contains("\"owner\"") && e.contains("257"), "{e}");
        let mut t = tags(1);
        t.insert("AWS:team".into(), "x".into());
        let e = check_tags("a", &t).unwrap_err().to_string();
        assert!(e.contains("aws:"), "{e}");
    }

    #[test]
    fn user_data_over_16_kib_is_refused() {
        assert!(check_user_data("a", &"x".repeat(MAX_USER_DATA_BYTES)).is_ok());
        let e = check_user_data("a", &"x".repeat(MAX_USER_DATA_BYTES + 1))
            .unwrap_err()
            .to_string();
        assert!(e.contains("16385 bytes"), "{e}");
    }
}
