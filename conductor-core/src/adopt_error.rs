//! Why `conductor group adopt` refuses: a leaf error type, beside the other
//! leaf errors, so the umbrella `Error` does not import from the lifecycle.

use thiserror::Error;

use crate::ids::IdScope;
use crate::names::Group;

/// Why `adopt` refuses (nothing is written).
#[derive(Clone, Debug, Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum AdoptError {
    /// A name of the env that no basename of the group makes.
    #[error(
        "instance {name} ({id}) has no conductor tags and its name matches no basename of group {group} in pillar; \
         fix its Name tag or add its basename to the group's roles, then adopt again"
    )]
    NoBasename {
        /// Its name.
        name: String,
        /// Instance id.
        id: String,
        /// The group.
        group: Group,
    },
    /// A name with no environment label, in a domain several environments share.
    #[error(
        "instance {name} ({id}) has no conductor tags and its name carries no environment label; \
         environments {envs} share its domain, so adopt cannot tell whose it is; \
         tag it by hand (conductor:env and the tags `adopt` lists for its neighbours) or rename it, then adopt again"
    )]
    UnknownEnv {
        /// Its name.
        name: String,
        /// Instance id.
        id: String,
        /// The environments sharing its domain.
        envs: String,
    },
    /// `apply` without the master's grains, which hold the instances' ids.
    #[error(
        "adopt --apply needs the Salt master's grains cache, and {why}: the Python runner's instances hold their ids \
         (cpid, cloud.system.id, <group>.system.id, the cluster ids) only as grains, and tagging them without those ids \
         would hide the ids from planning, which would hand them out again. \
         Run adopt on the Salt master with its grains cache readable (--salt-config-dir; without --no-salt or --no-grains, \
         CONDUCTOR_NO_SALT or CONDUCTOR_NO_GRAINS, or no_salt or no_grains in conductor.yaml), then adopt again; nothing was written"
    )]
    GrainsNotRead {
        /// Why the grains are not read (no Salt, or reading grains off).
        why: String,
    },
    /// Untagged instances whose minions the master's grains cache does not hold.
    #[error(
        "the Salt master's grains cache holds no cpid or id grain for {instances}, untagged instances of the env: \
         their ids are unknown, and tagging them would hide those ids from planning, which would hand them out again. \
         Accept each one's minion key (salt-key -a <name>) and let the minion send its grains (restart its salt-minion, \
         or salt <name> saltutil.refresh_pillar), check with salt-run cache.grains tgt=<name>, then adopt again \
         (a minion that truly holds none of those grains: tag its instance by hand); nothing was written"
    )]
    NoCachedGrains {
        /// Each instance, as `name (instance id)`, comma-separated.
        instances: String,
    },
    /// Two instances of different runs claim one id in one scope.
    #[error(
        "{scope}.id {n} is claimed by {first} ({first_from}) and by {second} ({second_from}), built by different runs; \
         correct the grain or tag of one of them, then adopt again"
    )]
    Conflict {
        /// The scope.
        scope: IdScope,
        /// The id.
        n: u32,
        /// One instance.
        first: String,
        /// Where its claim comes from.
        first_from: String,
        /// The other.
        second: String,
        /// Where its claim comes from.
        second_from: String,
    },
}
