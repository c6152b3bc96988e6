//! Inventory reads: server-side filters, every page, client-side matching.
//!
//! A [`Scope`]'s selectors are grouped by the EC2 filter they become
//! (`tag:Name` for name prefixes and exact names, `tag-key` for tag keys,
//! `tag:<key>` for tag values). EC2 ANDs filters of different names and ORs
//! the values of one filter, so each group is one paginated
//! DescribeInstances (more only past [`FILTER_VALUES`] values), all with the
//! live-state filter; the groups are read concurrently, merged by instance
//! id, and every instance is checked with [`Scope::matches`].

use std::collections::{BTreeMap, BTreeSet, HashSet};

use aws_sdk_ec2::types::Filter;
use aws_sdk_ec2::Client;
use conductor_core::{BackendError, BackendErrorKind};
use conductor_core::{Instance, InstanceState, Inventory, Scope, Selector, NAME_TAG};
use tracing::{field, info_span, Instrument, Span};

use super::convert;
use crate::errors::classify;

/// Most values EC2 takes in one filter.
pub const FILTER_VALUES: usize = 200;

/// One DescribeInstances worth of filters: `(filter name, values)` pairs,
/// the live-state filter first.
pub type FilterSet = Vec<(String, Vec<String>)>;

/// The filter sets a scope is read with, one paginated DescribeInstances
/// each: every live instance when the scope has no selector; otherwise one
/// set per filter name (and per [`FILTER_VALUES`] values of it).
pub fn filter_sets(scope: &Scope) -> Vec<FilterSet> {
    let live = (
        "instance-state-name".to_string(),
        InstanceState::LIVE
            .iter()
            .map(|s| s.as_str().to_string())
            .collect::<Vec<_>>(),
    );
    if scope.select.is_empty() {
        return vec![vec![live]];
    }
    let mut by_filter: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for s in &scope.select {
        let (name, value) = match s {
            Selector::NamePrefix(p) => (format!("tag:{NAME_TAG}"), format!("{}*", escape(p))),
            Selector::TagKey(k) => ("tag-key".to_string(), escape(k)),
            Selector::Tag { key, value } => (format!("tag:{key}"), escape(value)),
        };
        by_filter.entry(name).or_default().insert(value);
    }
    let mut sets = Vec::new();
    for (name, values) in by_filter {
        let values: Vec<String> = values.into_iter().collect();
        for chunk in values.chunks(FILTER_VALUES) {
            sets.push(vec![live.clone(), (name.clone(), chunk.to_vec())]);
        }
    }
    sets
}

/// Escapes EC2 filter wildcards (`*`, `?`, `\`) in a literal.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '*' | '?' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Reads `scope` with `client` (whose region is `scope.region`).
pub(super) async fn read(
    client: Client,
    scope: &Scope,
    page_size: Option<i32>,
) -> Result<Inventory, BackendError> {
    let sets = filter_sets(scope);
    let mut tasks = tokio::task::JoinSet::new();
    let total = sets.len();
    for (n, set) in sets.into_iter().enumerate() {
        let (client, scope) = (client.clone(), scope.clone());
        let span = info_span!(
            "ec2.describe_instances",
            region = %scope.region,
            filter = %set.last().map(|f| f.0.as_str()).unwrap_or(""),
            values = set.last().map_or(0, |f| f.1.len()),
            pages = field::Empty,
            instances = field::Empty,
        );
        tasks.spawn(
            async move { (n, describe(&client, set, &scope, page_size).await) }.instrument(span),
        );
    }
    let mut found: Vec<Option<Vec<Instance>>> = vec![None; total];
    while let Some(joined) = tasks.join_next().await {
        let (n, r) = joined.map_err(|e| {
            BackendError::new(
                BackendErrorKind::Failed,
                format!("inventory read of {} failed: {e}", scope.region),
            )
        })?;
        found[n] = Some(r?);
    }
    // Merge in filter-set order so the result does not depend on timing.
    let mut seen = HashSet::new();
    let mut instances = Vec::new();
    for i in found.into_iter().flatten().flatten() {
        if seen.insert(i.id.clone()) {
            instances.push(i);
        }
    }
    Ok(Inventory { instances })
}

/// One paginated DescribeInstances, converted page by page (only matching
/// instances are kept, so memory follows the answer, not the pages).
async fn describe(
    client: &Client,
    set: FilterSet,
    scope: &Scope,
    page_size: Option<i32>,
) -> Result<Vec<Instance>, BackendError> {
    let filters = set
        .iter()
        .map(|(name, values)| {
            Filter::builder()
                .name(name)
                .set_values(Some(values.clone()))
                .build()
        })
        .collect();
    let mut req = client.describe_instances().set_filters(Some(filters));
    if let Some(n) = page_size {
        req = req.max_results(n);
    }
    let what = format!(
        "reading the inventory of {} ({})",
        scope.region,
        set.iter()
            .skip(1)
            .map(|(n, v)| format!("{n} = {}", v.join("|")))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let mut pages = req.into_paginator().send();
    let (mut out, mut n) = (Vec::new(), 0u32);
    while let Some(page) = pages.next().await {
        let page = page.map_err(|e| classify("DescribeInstances", &what, e))?;
        n += 1;
        for r in page.reservations() {
            out.extend(
                r.instances()
                    .iter()
                    .filter_map(|i| convert::instance(i, &scope.region))
                    .filter(|i| scope.matches(i)),
            );
        }
    }
    Span::current().record("pages", n);
    Span::current().record("instances", out.len());
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use conductor_core::Region;

    fn scope(select: Vec<Selector>) -> Scope {
        Scope {
            region: Region::new("us-east-1").unwrap(),
            select,
        }
    }

    #[test]
    fn no_selector_reads_every_live_instance() {
        let sets = filter_sets(&scope(vec![]));
        assert_eq!(sets.len(), 1);
        assert_eq!(sets[0][0].0, "instance-state-name");
        assert_eq!(
            sets[0][0].1,
            ["pending", "running", "shutting-down", "stopping", "stopped"]
        );
    }

    #[test]
    fn one_read_per_filter_name() {
        let sets = filter_sets(&scope(vec![
            Selector::NamePrefix("devops-mq".into()),
            Selector::NamePrefix("devops-nifi-".into()),
            Selector::Tag {
                key: NAME_TAG.into(),
                value: "web01.example.com".into(),
            },
            Selector::TagKey("conductor:devops.nifi.cluster.id".into()),
            Selector::TagKey("conductor:cloud.nifi.cluster.id".into()),
            Selector::Tag {
                key: "conductor:cpid".into(),
                value: "1".into(),
            },
        ]));
        let got: Vec<(String, Vec<String>)> = sets.iter().map(|s| s[1].clone()).collect();
        assert_eq!(
            got,
            vec![
                (
                    "tag-key".into(),
                    vec![
                        "conductor:cloud.nifi.cluster.id".into(),
                        "conductor:devops.nifi.cluster.id".into()
                    ]
                ),
                (
                    "tag:Name".into(),
                    vec![
                        "devops-mq*".into(),
                        "devops-nifi-*".into(),
                        "web01.example.com".into()
                    ]
                ),
                ("tag:conductor:cpid".into(), vec!["1".into()]),
            ]
        );
        assert!(sets.iter().all(|s| s[0].0 == "instance-state-name"));
    }

    #[test]
    fn long_value_lists_are_split_and_wildcards_escaped() {
        let names = (0..450)
            .map(|i| Selector::Tag {
                key: NAME_TAG.into(),
                value: format!("n{i:03}"),
            })
            .collect();
        let sets = filter_sets(&scope(names));
        assert_eq!(
            sets.iter().map(|s| s[1].1.len()).collect::<Vec<_>>(),
            [200, 200, 50]
        );
        assert_eq!(escape(r"a*b?c\d"), r"a\*b\?c\\d");
    }
}
