//! The names and ids in use: live instances in the cloud and keys other
//! runs hold.

use std::collections::{BTreeMap, BTreeSet};

use crate::basename::{Basename, NameMatch};
use crate::cloud::{Instance, Inventory};
use crate::grains::{name_env, GrainId, GrainIds, NameEnv};
use crate::ids::IdScope;
use crate::input::InputError;
use crate::pillar::Pillar;
use crate::request::CreateRequest;
use crate::reserve::Key;

/// Used indexes and ids, gathered once from inventory and reservations.
pub(super) struct Used<'a> {
    req: &'a CreateRequest,
    /// The environment's domain.
    pub(super) domain: &'a str,
    /// Live names in AWS plus reserved names (without the `<env>_` prefix).
    pub(super) names: BTreeSet<String>,
    /// Ids per scope, from tags, grains and reservations.
    ids: BTreeMap<IdScope, BTreeSet<u32>>,
    /// Ids counted from the master's grains cache.
    pub(super) from_grains: Vec<GrainId>,
    pillar: &'a Pillar,
}

impl<'a> Used<'a> {
    pub(super) fn gather(
        req: &'a CreateRequest,
        domain: &'a str,
        inventory: &Inventory,
        reserved: &BTreeSet<Key>,
        grains: &GrainIds,
        pillar: &'a Pillar,
    ) -> Self {
        let env = req.pillarenv.as_str();
        let mut names = BTreeSet::new();
        let mut tagged = BTreeSet::new();
        let mut ids: BTreeMap<IdScope, BTreeSet<u32>> = BTreeMap::new();
        for i in inventory.live() {
            if let Some(n) = i.name() {
                names.insert(n.to_string());
                if i.conductor_tag("env").is_some() {
                    tagged.insert(n);
                }
            }
            if i.conductor_tag("env") == Some(env) {
                collect_id_tags(i, &mut ids);
            }
        }
        // Minions of instances without Conductor's tags (the Python
        // runner's): their id grains count as tags do, whether their names
        // carry the saltenv or the pillarenv (ids are the pillarenv's).
        let mut from_grains: Vec<GrainId> = req
            .envs()
            .into_iter()
            .flat_map(|e| grains.in_env(e.as_str(), domain, pillar))
            .filter(|g| !tagged.contains(g.minion.as_str()))
            .collect();
        from_grains.sort();
        from_grains.dedup();
        for g in &from_grains {
            ids.entry(g.scope.clone()).or_default().insert(g.id);
        }
        for k in reserved {
            // A name reserved under any env is taken: names are whole fqdns.
            if let Some(name) = k.fqdn() {
                names.insert(name.to_string());
            } else if let Some((scope, n)) = IdScope::parse_key(k, &req.pillarenv) {
                ids.entry(scope).or_default().insert(n);
            }
        }
        Self {
            req,
            domain,
            names,
            ids,
            from_grains,
            pillar,
        }
    }

    /// The keys that reserve `name`: under the saltenv, the env written into
    /// the name, and under every other env of the pillar that could make the
    /// same name (its domain ends the name, and no label of the name is
    /// another env's: a basename without `ENV`). Runs of those envs then
    /// conflict on the name although their keys start with their own env.
    pub(super) fn name_keys(&self, name: &str) -> Result<Vec<Key>, InputError> {
        let own = &self.req.saltenv;
        let mut keys = vec![Key::name(own, name)?];
        for (env, spec) in &self.pillar.environments {
            if env != own
                && name_env(name, env.as_str(), &spec.domain, self.pillar) != NameEnv::Other
            {
                keys.push(Key::name(env, name)?);
            }
        }
        // One order for every run: runs of two envs that want the name ask
        // for its keys alike, so one gets them all rather than each one.
        keys.sort();
        Ok(keys)
    }

    /// The names in use that `b` makes, read back.
    fn matches<'s>(&'s self, b: &'s Basename) -> impl Iterator<Item = NameMatch> + 's {
        let (z, e) = (&self.req.zone, &self.req.saltenv);
        self.names
            .iter()
            .filter_map(move |n| b.parse_name(n, z, e, self.domain))
    }

    /// Indexes in use by names of `b` outside clusters.
    pub(super) fn indexes(&self, b: &Basename) -> BTreeSet<u32> {
        self.matches(b)
            .filter(|m| m.clid.is_none())
            .map(|m| m.index)
            .collect()
    }

    /// Cluster ids (`.clid-N`) in use by names of `b`, in any zone.
    pub(super) fn clids(&self, b: &Basename) -> BTreeSet<u32> {
        let e = &self.req.saltenv;
        self.names
            .iter()
            .filter_map(|n| b.clid_in_any_zone(n, e, self.domain))
            .collect()
    }

    pub(super) fn ids(&mut self, scope: &IdScope) -> &mut BTreeSet<u32> {
        self.ids.entry(scope.clone()).or_default()
    }
}

fn collect_id_tags(i: &Instance, ids: &mut BTreeMap<IdScope, BTreeSet<u32>>) {
    for (k, v) in &i.tags {
        if let Some((scope, n)) = IdScope::parse_tag(k, v) {
            ids.entry(scope).or_default().insert(n);
        }
    }
}

/// The lowest positive integer not in `used` and at most `max`.
pub(super) fn lowest_free(used: &BTreeSet<u32>, max: u32) -> Option<u32> {
    let mut n = 1;
    for &u in used.range(1..) {
        if u > n {
            break;
        }
        if u == n {
            n += 1;
        }
    }
    (n <= max).then_some(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lowest_free_fills_gaps() {
        let s = |v: &[u32]| v.iter().copied().collect::<BTreeSet<u32>>();
        assert_eq!(lowest_free(&s(&[]), 99), Some(1));
        assert_eq!(lowest_free(&s(&[1, 2]), 99), Some(3));
        assert_eq!(lowest_free(&s(&[1, 3]), 99), Some(2));
        assert_eq!(lowest_free(&s(&[0, 2]), 99), Some(1));
        assert_eq!(lowest_free(&s(&[1, 2]), 2), None);
    }
}
