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
