//! Shell completion. The shell asks the binary itself at each TAB
//! (`COMPLETE=<shell> conductor -- <the line>`, clap's dynamic completion),
//! so subcommands and flags complete as `--help` lists them and the
//! `key=value` words of `conductor group ...` complete from the keys the
//! command accepts and from the pillar the command would read (the flags,
//! environment and config file on the line): groups, systems, roles,
//! environments, and the zones of an environment's `regions`.

use std::collections::BTreeSet;
use std::ffi::{OsStr, OsString};
use std::time::Duration;

use clap_complete::engine::{ArgValueCompleter, CompletionCandidate};
use conductor_core::{Env, Group, Pillar};

use crate::words::{ADOPT_WORDS, CREATE_WORDS, SELECT_WORDS};

/// How long completion waits for the pillar (the master compiles it).
const PILLAR_WAIT: Duration = Duration::from_secs(10);

/// Zones completed for each region an environment lists.
const ZONE_LETTERS: [char; 3] = ['a', 'b', 'c'];

/// Answers the shell and exits when it is asking (`COMPLETE` is set);
/// returns otherwise.
pub fn answer_if_asked() {
    clap_complete::CompleteEnv::with_factory(command).complete();
}

/// Writes the script that registers completion for `shell` (what
/// `COMPLETE=<shell> conductor` prints) to stdout.
pub fn print_registration(shell: clap_complete::Shell) -> std::io::Result<()> {
    let name = shell.to_string();
    let shells = clap_complete::env::Shells::builtins();
    let shell = shells
        .completer(&name)
        .ok_or_else(|| std::io::Error::other(format!("no completion for {name}")))?;
    shell.write_registration(
        "COMPLETE",
        "conductor",
        "conductor",
        "conductor",
        &mut std::io::stdout(),
    )
}

/// The command line with a completer on the words of each group command.
fn command() -> clap::Command {
    crate::args::command().mut_subcommand("group", |group| {
        [
            ("create", CREATE_WORDS),
            ("plan", CREATE_WORDS),
            ("destroy", SELECT_WORDS),
            ("update", SELECT_WORDS),
            ("status", SELECT_WORDS),
            ("adopt", ADOPT_WORDS),
        ]
        .into_iter()
        .fold(group, |group, (name, keys)| {
            group.mut_subcommand(name, |c| {
                c.mut_arg("words", |a| {
                    a.add(ArgValueCompleter::new(move |current: &OsStr| {
                        words(keys, current, &line())
                    }))
                })
            })
        })
    })
}

/// The line being completed, as the shell passed it after `--`.
fn line() -> Vec<OsString> {
    std::env::args_os()
        .skip_while(|a| a != "--")
        .skip(1)
        .collect()
}

/// Candidates for the word `current` of a command accepting `keys`, on
/// `line`: `key=` for keys not given yet, else the key's values.
fn words(keys: &[&str], current: &OsStr, line: &[OsString]) -> Vec<CompletionCandidate> {
    let current = current.to_string_lossy();
    // The other words: the line without the one being completed.
    let mut others = line.to_vec();
    if let Some(i) = others.iter().rposition(|w| w.to_string_lossy() == current) {
        others.remove(i);
    }
    let given = given_words(&others);
    let Some((key, prefix)) = current.split_once('=') else {
        return keys
            .iter()
            .filter(|k| k.starts_with(current.as_ref()) && !given.iter().any(|(g, _)| g == *k))
            .map(|k| CompletionCandidate::new(format!("{k}=")))
            .collect();
    };
    values(key, &given, &others)
        .into_iter()
        .filter(|v| v.starts_with(prefix))
        .map(|v| CompletionCandidate::new(format!("{key}={v}")))
        .collect()
}

/// The `key=value` words of `line`.
fn given_words(line: &[OsString]) -> Vec<(String, String)> {
    line.iter()
        .filter_map(|w| w.to_str()?.split_once('='))
        .filter(|(k, _)| !k.starts_with('-'))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// The values of `key` the pillar offers, given the other words.
fn values(key: &str, given: &[(String, String)], line: &[OsString]) -> Vec<String> {
    let word = |k: &str| {
        given
            .iter()
            .find(|(g, v)| g == k && !v.is_empty())
            .map(|(_, v)| v.as_str())
    };
    if !matches!(
        key,
        "group" | "system" | "role" | "pillarenv" | "saltenv" | "region"
    ) {
        return vec![];
    }
    let pillars = pillars(line, word("pillarenv"));
    let group = word("group").and_then(|g| Group::new(g).ok());
    let groups = || {
        pillars
            .iter()
            .flat_map(|(_, p)| p.groups.iter())
            .filter(|(name, _)| group.as_ref().is_none_or(|g| g == *name))
            .map(|(_, spec)| spec)
    };
    let found: BTreeSet<String> = match key {
        "group" => pillars
            .iter()
            .flat_map(|(_, p)| p.groups.keys().map(|g| g.to_string()))
            .collect(),
        "system" => groups()
            .flat_map(|g| g.systems.keys().map(|s| s.to_string()))
            .collect(),
        "role" => groups()
            .flat_map(|g| g.roles.keys().map(|r| r.to_string()))
            .collect(),
        "pillarenv" | "saltenv" => pillars
            .iter()
            .flat_map(|(env, p)| {
                std::iter::once(env.to_string()).chain(p.environments.keys().map(|e| e.to_string()))
            })
            .collect(),
        // "region"
        _ => pillars
            .iter()
            .filter_map(|(env, p)| p.environments.get(env))
            .flat_map(|e| e.regions.iter())
            .flat_map(|r| ZONE_LETTERS.map(|z| format!("{r}{z}")))
            .collect(),
    };
    found.into_iter().collect()
}

/// The pillar of each environment completion can read (`line` is the
/// command line without the word being completed): `pillarenv`'s when it
/// is on the line, else (pillar from files) every environment's
/// directory's; none when the line's options do not parse or the source
/// does not answer in time.
fn pillars(line: &[OsString], pillarenv: Option<&str>) -> Vec<(Env, Pillar)> {
    // A command's words are required: one stands in for the word being completed.
    let mut args = line.to_vec();
    args.push("_=_".into());
    let Ok(parsed) = crate::parse(&args) else {
        return vec![];
    };
    let g = parsed.cli.global;
    let envs: Vec<Env> = match (pillarenv, &g.pillar_dir) {
        (Some(e), _) => Env::new(e).ok().into_iter().collect(),
        (None, Some(dir)) => std::fs::read_dir(dir)
            .into_iter()
            .flatten()
            .filter_map(|e| e.ok())
            .filter(|e| e.path().is_dir())
            .filter_map(|e| Env::new(e.file_name().to_str()?).ok())
            .collect(),
        (None, None) => vec![],
    };
    let Ok(source) = crate::wiring::pillar(&g) else {
        return vec![];
    };
    let Ok(rt) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    else {
        return vec![];
    };
    rt.block_on(async {
        let mut found = Vec::new();
        for env in envs {
            if let Ok(Ok(p)) = tokio::time::timeout(PILLAR_WAIT, source.load(&env)).await {
                found.push((env, p));
            }
        }
        found
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(words: &[&str]) -> Vec<OsString> {
        words.iter().map(OsString::from).collect()
    }

    fn shown(c: Vec<CompletionCandidate>) -> Vec<String> {
        c.into_iter()
            .map(|c| c.get_value().to_string_lossy().into_owned())
            .collect()
    }

    #[test]
    fn keys_not_given_yet_complete_with_their_equals_sign() {
        let l = line(&["conductor", "group", "create", "group=devops", "p"]);
        assert_eq!(
            shown(words(CREATE_WORDS, OsStr::new("p"), &l)),
            ["pillarenv="]
        );
        let l = line(&["conductor", "group", "status", ""]);
        let all = shown(words(SELECT_WORDS, OsStr::new(""), &l));
        assert_eq!(all.len(), SELECT_WORDS.len(), "{all:?}");
        let l = line(&["conductor", "group", "create", "group=devops", "g"]);
        assert!(shown(words(CREATE_WORDS, OsStr::new("g"), &l)).is_empty());
    }

    #[test]
    fn values_without_a_pillar_are_none() {
        // No pillar dir and no master to ask: nothing, and no error.
        let l = line(&["conductor", "group", "create", "--no-salt", "count="]);
        assert!(shown(words(CREATE_WORDS, OsStr::new("count="), &l)).is_empty());
    }
}
