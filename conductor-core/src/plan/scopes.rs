//! What a plan reads from the cloud: server-side filters per region.

use std::collections::BTreeSet;

use super::basename_of;
use crate::basename::Basename;
use crate::cloud::{Scope, Selector};
use crate::error::Error;
use crate::ids::IdScope;
use crate::pillar::Pillar;
use crate::request::{Build, BuildItem, CreateRequest};

/// The inventory reads a plan needs: in the run's region, instances whose
/// Name starts with a basename prefix or that carry an id tag in play; in
/// the other regions of the environment, instances carrying an id tag, and
/// those whose Name starts with the prefix of a basename without `REGION`
/// (its names are the same in every region, so every region must be free)
/// or of a cluster member (its `.clid-N` holds a group cluster id, unique
/// across the regions, even on an instance without tags).
pub fn inventory_scopes(
    pillar: &Pillar,
    req: &CreateRequest,
    build: &Build,
) -> Result<Vec<Scope>, Error> {
    let group = pillar.group(&req.group)?;
    let env = pillar.environment(&req.pillarenv)?;
    env.check_region(&req.pillarenv, req.zone.as_str(), &req.zone.region())?;
    let mut names = BTreeSet::new();
    let mut everywhere = BTreeSet::new();
    let mut tags = BTreeSet::new();
    let mut name = |b: &Basename, member: bool| {
        names.insert(b.prefix().to_string());
        if member || !b.has_region() {
            everywhere.insert(b.prefix().to_string());
        }
    };
    for item in &build.items {
        match item {
            BuildItem::Single { role, .. } => name(basename_of(&group.roles[role]), false),
            BuildItem::Cluster { role, .. } => {
                for m in group.roles[role].cluster.iter().flat_map(|c| c.values()) {
                    name(basename_of(m), true);
                }
                tags.insert(
                    IdScope::GroupCluster {
                        group: req.group.clone(),
                        role: role.clone(),
                    }
                    .tag(),
                );
                tags.insert(IdScope::CloudCluster { role: role.clone() }.tag());
            }
        }
    }
    if build.system.is_some() {
        tags.insert(
            IdScope::GroupSystem {
                group: req.group.clone(),
            }
            .tag(),
        );
        tags.insert(IdScope::CloudSystem.tag());
    }
    let home = req.zone.region();
    let tag_selectors: Vec<Selector> = tags.into_iter().map(Selector::TagKey).collect();
    let elsewhere: Vec<Selector> = everywhere
        .into_iter()
        .map(Selector::NamePrefix)
        .chain(tag_selectors.iter().cloned())
        .collect();
    let mut scopes = vec![Scope {
        region: home.clone(),
        select: names
            .into_iter()
            .map(Selector::NamePrefix)
            .chain(tag_selectors)
            .collect(),
    }];
    if !elsewhere.is_empty() {
        for r in env.regions.iter().filter(|r| **r != home) {
            scopes.push(Scope {
                region: r.clone(),
                select: elsewhere.clone(),
            });
        }
    }
    Ok(scopes)
}
