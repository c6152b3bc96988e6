//! "Did you mean": the known name closest to a mistyped one.

/// Edit distance (insertions, deletions, substitutions, and swaps of two
/// neighbours) between `a` and `b`, in characters.
fn distance(a: &str, b: &str) -> usize {
    let (a, b): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
    // d[i][j]: distance between a[..i] and b[..j].
    let mut d: Vec<Vec<usize>> = (0..=a.len())
        .map(|i| {
            (0..=b.len())
                .map(|j| {
                    if i == 0 {
                        j
                    } else if j == 0 {
                        i
                    } else {
                        0
                    }
                })
                .collect()
        })
        .collect();
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut best = (d[i - 1][j] + 1)
                .min(d[i][j - 1] + 1)
                .min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(d[i - 2][j - 2] + 1);
            }
            d[i][j] = best;
        }
    }
    d[a.len()][b.len()]
}

/// The candidate closest to `given`, when it is close enough to be what was
/// meant: at most one edit in 3 characters (at least 1, at most 3 edits).
pub fn did_you_mean<'a>(
    given: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    let limit = (given.chars().count() / 3).clamp(1, 3);
    candidates
        .into_iter()
        .map(|c| (distance(given, c), c))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

/// `"; did you mean X?"` for [`did_you_mean`]'s answer, else `""`.
pub fn suggestion<'a>(given: &str, candidates: impl IntoIterator<Item = &'a str>) -> String {
    did_you_mean(given, candidates).map_or_else(String::new, |c| format!("; did you mean {c}?"))
}

/// serde's "unknown field `x`, expected one of `a`, `b`" (or "unknown
/// variant"), with the closest expected name suggested.
pub fn with_serde_suggestion(message: String) -> String {
    let Some(rest) = message
        .strip_prefix("unknown field `")
        .or_else(|| message.strip_prefix("unknown variant `"))
    else {
        return message;
    };
    let Some((given, tail)) = rest.split_once('`') else {
        return message;
    };
    let expected: Vec<&str> = tail.split('`').skip(1).step_by(2).collect();
    match did_you_mean(given, expected) {
        Some(c) => format!("{message}; did you mean `{c}`?"),
        None => message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typos_find_their_name_and_strangers_find_none() {
        let roles = ["activemq", "nifi"];
        assert_eq!(did_you_mean("activmq", roles), Some("activemq"));
        assert_eq!(did_you_mean("actvemq", roles), Some("activemq"));
        assert_eq!(
            did_you_mean("nfii", roles),
            Some("nifi"),
            "a swap is one edit"
        );
        assert_eq!(did_you_mean("kafka", roles), None);
        let words = ["group", "region", "role", "count"];
        assert_eq!(did_you_mean("rgion", words), Some("region"));
        assert_eq!(did_you_mean("x", words), None);
    }

    #[test]
    fn serde_messages_gain_the_closest_field() {
        let m = "unknown field `basenme`, expected one of `basename`, `nodes`, `size`".to_string();
        assert_eq!(
            with_serde_suggestion(m.clone()),
            format!("{m}; did you mean `basename`?")
        );
        let other = "invalid type: string, expected u32".to_string();
        assert_eq!(with_serde_suggestion(other.clone()), other);
        let far = "unknown field `zzzzzz`, expected `basename` or `nodes`".to_string();
        assert_eq!(with_serde_suggestion(far.clone()), far);
    }
}
