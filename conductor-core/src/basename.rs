//! Basename patterns such as `devops-mqXX.REGION.ENV` and the names they make.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::input::InputError;
use crate::names::{check_label, Env, Zone};

/// Largest index width: indexes are `u32` and 9 digits always fit.
const MAX_WIDTH: usize = 9;

/// A parsed basename: one run of `X`s (the index) in the host label, then
/// dot-separated literal labels or the `REGION` / `ENV` placeholders.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Basename {
    raw: String,
    prefix: String,
    width: usize,
    host_suffix: String,
    rest: Vec<Part>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Part {
    Literal(String),
    Region,
    Env,
}

/// Where a name's index ended up, found by [`Basename::parse_name`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NameMatch {
    /// The instance index (`03` -> 3).
    pub index: u32,
    /// The cluster id of `.clid-<N>`, when the name has one.
    pub clid: Option<u32>,
}

impl Basename {
    /// Parses `raw`, e.g. `devops-mqXX.REGION.ENV`.
    pub fn parse(raw: &str) -> Result<Self, InputError> {
        let bad = |reason: &str| InputError::invalid("basename", raw, reason);
        let mut labels = raw.split('.');
        let host = labels.next().unwrap_or_default();
        let runs: Vec<(usize, usize)> = x_runs(host);
        match runs.len() {
            0 => return Err(bad(
                "has no index: put a run of X's in its first label, e.g. devops-mqXX.REGION.ENV",
            )),
            1 => {}
            _ => {
                return Err(bad(
                    "has more than one run of X's; the index must be one run, e.g. XX",
                ))
            }
        }
        if raw.split('.').skip(1).any(|l| l.contains('X')) {
            return Err(bad(
                "has X's outside its first label; the index must be in the host label",
            ));
        }
        let (start, end) = runs[0];
        let width = end - start;
        if width > MAX_WIDTH {
            return Err(bad(&format!("index has {width} X's; at most {MAX_WIDTH}")));
        }
        let prefix = host[..start].to_string();
        let host_suffix = host[end..].to_string();
        let sample = format!("{prefix}{}{host_suffix}", "0".repeat(width));
        check_label("basename", &sample).map_err(|e| bad(&e.reason))?;
        let mut rest = Vec::new();
        for label in labels {
            rest.push(match label {
                "REGION" => Part::Region,
                "ENV" => Part::Env,
                lit => {
                    check_label("basename", lit).map_err(|_| {
                        bad(&format!(
                            "label {lit:?} is neither REGION, ENV nor lowercase letters, digits and '-'"
                        ))
                    })?;
                    Part::Literal(lit.to_string())
                }
            });
        }
        Ok(Self {
            raw: raw.to_string(),
            prefix,
            width,
            host_suffix,
            rest,
        })
    }

    /// The pattern as written in pillar.
    pub fn as_str(&self) -> &str {
        &self.raw
    }

    /// The host label up to the index (`devops-mq`); names of this basename
    /// start with it, so it serves as a server-side filter (`devops-mq*`).
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Whether names of this basename hold the region (`REGION`); names of
    /// one without it are the same in every region.
    pub fn has_region(&self) -> bool {
        self.rest.contains(&Part::Region)
    }

    /// Digits of the index (the number of X's).
    pub fn width(&self) -> usize {
        self.width
    }

    /// Largest index the pattern can hold (`XX` -> 99).
    pub fn max_index(&self) -> u32 {
        (10u64.pow(self.width as u32) - 1).min(u32::MAX as u64) as u32
    }

    /// The fully qualified name for `index` (and cluster id), e.g.
    /// `devops-nifi-01.clid-2.us-east-1a.test.foobar.com`.
    pub fn render(
        &self,
        index: u32,
        clid: Option<u32>,
        zone: &Zone,
        env: &Env,
        domain: &str,
    ) -> String {
        let mut s = format!(
            "{}{:0w$}{}",
            self.prefix,
            index,
            self.host_suffix,
            w = self.width
        );
        if let Some(c) = clid {
            s.push_str(&format!(".clid-{c}"));
        }
        s.push_str(&self.tail(zone, env, domain));
        s
    }

    fn tail(&self, zone: &Zone, env: &Env, domain: &str) -> String {
        let mut s = String::new();
        for part in &self.rest {
            s.push('.');
            s.push_str(match part {
                Part::Literal(l) => l,
                Part::Region => zone.as_str(),
                Part::Env => env.as_str(),
            });
        }
        s.push('.');
        s.push_str(domain);
        s
    }

    /// If `name` is a name of this pattern in `zone`/`env`/`domain`, its index
    /// and cluster id. Names with another index width, zone, env or domain do not match.
    pub fn parse_name(
        &self,
        name: &str,
        zone: &Zone,
        env: &Env,
        domain: &str,
    ) -> Option<NameMatch> {
        let (index, rest) = self.host(name)?;
        let rest = rest.strip_prefix('.')?;
        if self.fits(rest, Some(zone), env, domain) {
            return Some(NameMatch { index, clid: None });
        }
        let (clid, labels) = rest.strip_prefix("clid-")?.split_once('.')?;
        if !self.fits(labels, Some(zone), env, domain) {
            return None;
        }
        Some(NameMatch {
            index,
            clid: Some(parse_clid(clid)?),
        })
    }

    /// The cluster id of `name` when it is a cluster member's name of this
    /// pattern in `env`/`domain` and *any* zone: a group's cluster ids are
    /// unique across the regions of its env, so a member in another zone
    /// holds its cluster's id as well.
    pub fn clid_in_any_zone(&self, name: &str, env: &Env, domain: &str) -> Option<u32> {
        let (_, rest) = self.host(name)?;
        let (clid, labels) = rest.strip_prefix(".clid-")?.split_once('.')?;
        if !self.fits(labels, None, env, domain) {
            return None;
        }
        parse_clid(clid)
    }

    /// Whether `labels` (what follows the host label and any `.clid-N.`)
    /// are this pattern's labels and `domain`, in `env` and in `zone` (in
    /// any zone when `None`).
    fn fits(&self, labels: &str, zone: Option<&Zone>, env: &Env, domain: &str) -> bool {
        let Some(labels) = labels.strip_suffix(domain) else {
            return false;
        };
        if self.rest.is_empty() {
            return labels.is_empty();
        }
        let Some(labels) = labels.strip_suffix('.') else {
            return false;
        };
        let labels: Vec<&str> = labels.split('.').collect();
        labels.len() == self.rest.len()
            && self
                .rest
                .iter()
                .zip(labels)
                .all(|(part, label)| match part {
                    Part::Literal(l) => l == label,
                    Part::Region => {
                        zone.map_or_else(|| Zone::new(label).is_ok(), |z| z.as_str() == label)
                    }
                    Part::Env => label == env.as_str(),
                })
    }

    /// The index of `name` and what follows its host label, when the host
    /// label is this pattern's.
    fn host<'n>(&self, name: &'n str) -> Option<(u32, &'n str)> {
        let rest = name.strip_prefix(self.prefix.as_str())?;
        let digits = rest.get(..self.width)?;
        if !digits.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let index = digits.parse().ok()?;
        Some((
            index,
            rest[self.width..].strip_prefix(self.host_suffix.as_str())?,
        ))
    }
}

/// A cluster id as names write it: digits, no leading zero.
fn parse_clid(text: &str) -> Option<u32> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) || text.starts_with('0') {
        return None;
    }
    text.parse().ok()
}

fn x_runs(label: &str) -> Vec<(usize, usize)> {
    let b = label.as_bytes();
    let mut runs = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'X' {
            let s = i;
            while i < b.len() && b[i] == b'X' {
                i += 1;
            }
            runs.push((s, i));
        } else {
            i += 1;
        }
    }
    runs
}

impl TryFrom<String> for Basename {
    type Error = InputError;
    fn try_from(value: String) -> Result<Self, InputError> {
        Self::parse(&value)
    }
}

impl From<Basename> for String {
    fn from(value: Basename) -> String {
        value.raw
    }
}

impl fmt::Display for Basename {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.raw)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx() -> (Zone, Env) {
        (Zone::new("us-east-1a").unwrap(), Env::new("test").unwrap())
    }

    #[test]
    fn renders_seed_names() {
        let (z, e) = ctx();
        let b = Basename::parse("devops-mqXX.REGION.ENV").unwrap();
        assert_eq!(
            b.render(3, None, &z, &e, "foobar.com"),
            "devops-mq03.us-east-1a.test.foobar.com"
        );
        let n = Basename::parse("devops-nifi-XX.REGION.ENV").unwrap();
        assert_eq!(
            n.render(1, Some(2), &z, &e, "foobar.com"),
            "devops-nifi-01.clid-2.us-east-1a.test.foobar.com"
        );
        assert_eq!(b.prefix(), "devops-mq");
        assert_eq!(b.max_index(), 99);
    }

    #[test]
    fn a_members_cluster_id_reads_back_in_any_zone() {
        let e = Env::new("test").unwrap();
        let n = Basename::parse("devops-nifi-XX.REGION.ENV").unwrap();
        let clid = |name: &str| n.clid_in_any_zone(name, &e, "foobar.com");
        assert_eq!(
            clid("devops-nifi-01.clid-3.us-east-1b.test.foobar.com"),
            Some(3)
        );
        assert_eq!(
            clid("devops-nifi-01.clid-3.us-west-2a.test.foobar.com"),
            Some(3)
        );
        assert_eq!(
            clid("devops-nifi-01.us-east-1b.test.foobar.com"),
            None,
            "no cluster"
        );
        assert_eq!(
            clid("devops-nifi-01.clid-3.us-east-1b.prod.foobar.com"),
            None,
            "other env"
        );
        assert_eq!(
            clid("devops-nifi-01.clid-3.east.test.foobar.com"),
            None,
            "not a zone"
        );
        assert_eq!(
            clid("devops-nifi-01.clid-03.us-east-1b.test.foobar.com"),
            None
        );
        assert_eq!(
            clid("devops-nifi-01.clid-3.us-east-1b.test.foobar.org"),
            None
        );
        let bare = Basename::parse("devops-nifi-XX").unwrap();
        assert_eq!(
            bare.clid_in_any_zone("devops-nifi-01.clid-4.foobar.com", &e, "foobar.com"),
            Some(4)
        );
    }

    #[test]
    fn every_rendered_name_parses_back_in_its_own_zone_only() {
        let e = Env::new("test").unwrap();
        let zones = [
            Zone::new("us-east-1a").unwrap(),
            Zone::new("us-west-2b").unwrap(),
        ];
        for raw in [
            "devops-mqXX.REGION.ENV",
            "devops-nifi-XXX.ENV.REGION",
            "mqXX-a.dc1.REGION",
            "mqXX.ENV",
            "mqXX",
        ] {
            let b = Basename::parse(raw).unwrap();
            for (index, clid) in [(1, None), (42, Some(1)), (7, Some(10))] {
                let name = b.render(index, clid, &zones[0], &e, "foobar.com");
                let parse = |z: &Zone| b.parse_name(&name, z, &e, "foobar.com");
                assert_eq!(
                    parse(&zones[0]),
                    Some(NameMatch { index, clid }),
                    "{raw}: {name}"
                );
                let other = if b.has_region() {
                    None
                } else {
                    Some(NameMatch { index, clid })
                };
                assert_eq!(parse(&zones[1]), other, "{raw}: {name} in another zone");
                assert_eq!(
                    b.clid_in_any_zone(&name, &e, "foobar.com"),
                    clid,
                    "{raw}: {name}"
                );
                let prod = Env::new("prod").unwrap();
                let in_prod = b.parse_name(&name, &zones[0], &prod, "foobar.com");
                let env_free = !raw.contains("ENV");
                assert_eq!(in_prod.is_some(), env_free, "{raw}: {name} read as prod");
            }
        }
    }

    #[test]
    fn parses_names_back() {
        let (z, e) = ctx();
        let n = Basename::parse("devops-nifi-XX.REGION.ENV").unwrap();
        assert_eq!(
            n.parse_name(
                "devops-nifi-02.clid-7.us-east-1a.test.foobar.com",
                &z,
                &e,
                "foobar.com"
            ),
            Some(NameMatch {
                index: 2,
                clid: Some(7)
            })
        );
        // another member's name with a shared prefix does not match
        assert_eq!(
            n.parse_name(
                "devops-nifi-dummy-01.clid-1.us-east-1a.test.foobar.com",
                &z,
                &e,
                "foobar.com"
            ),
            None
        );
        // other env, zone, width
        assert_eq!(
            n.parse_name(
                "devops-nifi-01.us-east-1a.prod.foobar.com",
                &z,
                &e,
                "foobar.com"
            ),
            None
        );
        assert_eq!(
            n.parse_name(
                "devops-nifi-01.us-east-1b.test.foobar.com",
                &z,
                &e,
                "foobar.com"
            ),
            None
        );
        assert_eq!(
            n.parse_name(
                "devops-nifi-001.us-east-1a.test.foobar.com",
                &z,
                &e,
                "foobar.com"
            ),
            None
        );
    }

    #[test]
    fn rejects_bad_patterns() {
        for bad in [
            "devops-mq.REGION",
            "devops-XXmqXX.REGION",
            "Devops-mqXX",
            "devops-mqXX.reg/ion",
            "devops-mqXX.a..b",
            "devops-mqXXXXXXXXXX",
            "devops-mq.XX.ENV",
            "devops mqXX",
        ] {
            assert!(Basename::parse(bad).is_err(), "{bad} accepted");
        }
    }
}
