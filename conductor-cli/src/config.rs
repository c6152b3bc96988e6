//! Settings from the command line, the environment and the config file.
//!
//! Every option (`--runner-dir`, `--provisioner`, ...) can also be set by
//! an environment variable (`CONDUCTOR_RUNNER_DIR`; its own where it had
//! one before) and by a key of the YAML config file (`runner_dir:
//! /srv/runners`), `--config FILE`, `CONDUCTOR_CONFIG`, else
//! [`DEFAULT_PATH`] when it exists. Precedence: flag > environment > file >
//! built-in default. A key that is no option is refused by name; a value is
//! checked as its flag's would be, naming the file and the key.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::path::{Path, PathBuf};

use clap::parser::ValueSource;
use clap::{Arg, ArgAction, ArgMatches, Command};
use serde::Serialize;

use crate::exit::Failure;

/// The config file read when neither `--config` nor `CONDUCTOR_CONFIG` names one.
pub const DEFAULT_PATH: &str = "/etc/conductor/conductor.yaml";

/// The environment variable naming the config file.
pub const CONFIG_ENV: &str = "CONDUCTOR_CONFIG";

/// Options that are choices of one invocation, never settings: no
/// environment variable and no config key. `older_than` is one: a threshold
/// of what to delete, shared by `reservations prune` and `runs prune`, must
/// not reach the one from a setting meant for the other.
const PER_INVOCATION: &[&str] = &[
    "help",
    "version",
    "config",
    "verbose",
    "yes",
    "dry_run",
    "apply",
    "remove",
    "older_than",
];

/// The config file in effect, if any, and its settings.
#[derive(Debug, Default)]
pub struct ConfigFile {
    /// Where it was read from.
    pub path: Option<PathBuf>,
    /// Its settings: option id (`runner_dir`) to values.
    pub values: BTreeMap<String, Vec<String>>,
}

/// Whether `arg` is an option a config key and a variable may set.
fn settable(arg: &Arg) -> bool {
    !arg.is_positional()
        && !PER_INVOCATION.contains(&arg.get_id().as_str())
        && !matches!(
            arg.get_action(),
            ArgAction::Count | ArgAction::Help | ArgAction::Version
        )
}

/// The variable of an option that has none: `CONDUCTOR_<ID>`.
fn env_name(id: &str) -> String {
    format!("CONDUCTOR_{}", id.to_uppercase())
}

/// Whether a failure found before the command line parsed (a bad flag, a
/// bad config file) is reported as JSON: `--json` on the line, else
/// `CONDUCTOR_JSON`, else the config file's `json` (`file`, when read), as
/// a parsed line would have it.
pub fn wants_json(args: &[OsString], file: Option<&ConfigFile>) -> bool {
    let on_line = args.iter().skip(1).take_while(|a| *a != "--");
    if on_line.into_iter().any(|a| a == "--json") {
        return true;
    }
    // The flag's variable and config value parse as clap's `bool`: `true`
    // or `false`, anything else being a usage error of its own.
    if let Some(v) = std::env::var_os(env_name("json")) {
        return v == "true";
    }
    file.and_then(|f| f.values.get("json"))
        .and_then(|v| v.last())
        .is_some_and(|v| v == "true")
}

/// `cmd` with every settable option of its tree readable from an
/// environment variable (the man page and `--help` show them).
pub fn with_env_vars(cmd: Command) -> Command {
    map_args(cmd, &|arg| {
        if arg.get_env().is_none() {
            let name = env_name(arg.get_id().as_str());
            arg.env(name)
        } else {
            arg
        }
    })
}

/// Applies `f` to every settable option of `cmd` and its subcommands.
fn map_args(mut cmd: Command, f: &dyn Fn(Arg) -> Arg) -> Command {
    let ids: Vec<String> = cmd
        .get_arguments()
        .filter(|a| settable(a))
        .map(|a| a.get_id().to_string())
        .collect();
    for id in ids {
        cmd = cmd.mut_arg(id, f);
    }
    let subs: Vec<String> = cmd
        .get_subcommands()
        .map(|s| s.get_name().to_string())
        .collect();
    for sub in subs {
        cmd = cmd.mut_subcommand(sub, |s| map_args(s, f));
    }
    cmd
}

/// Every settable option of the tree: id, the option, and the commands
/// (`group create`, ...) that take it (empty for the global ones).
fn options(cmd: &Command) -> BTreeMap<String, (Arg, Vec<String>)> {
    fn walk(cmd: &Command, path: &str, out: &mut BTreeMap<String, (Arg, Vec<String>)>) {
        for a in cmd.get_arguments().filter(|a| settable(a)) {
            let entry = out
                .entry(a.get_id().to_string())
                .or_insert_with(|| (a.clone(), vec![]));
            if !a.is_global_set() && !path.is_empty() {
                entry.1.push(path.to_string());
            }
        }
        for s in cmd.get_subcommands() {
            let name = if path.is_empty() {
                s.get_name().to_string()
            } else {
                format!("{path} {}", s.get_name())
            };
            walk(s, &name, out);
        }
    }
    let mut out = BTreeMap::new();
    walk(cmd, "", &mut out);
    out
}

/// The config file the command line or the environment names, else
/// [`DEFAULT_PATH`] when it exists; `None` when there is none to read.
pub fn locate(args: &[OsString]) -> Option<(PathBuf, bool)> {
    let mut it = args.iter().skip(1);
    while let Some(a) = it.next() {
        if a == "--" {
            break;
        }
        if a == "--config" {
            return it.next().map(|p| (PathBuf::from(p), true));
        }
        if let Some(p) = a.to_str().and_then(|s| s.strip_prefix("--config=")) {
            return Some((PathBuf::from(p), true));
        }
    }
    if let Some(p) = std::env::var_os(CONFIG_ENV).filter(|p| !p.is_empty()) {
        return Some((PathBuf::from(p), true));
    }
    let default = Path::new(DEFAULT_PATH);
    default.exists().then(|| (default.to_path_buf(), false))
}

/// Reads the config file `path` against the options of `cmd`: a mapping
/// of option names (`runner_dir` or `runner-dir`) to scalars or lists.
pub fn load(path: &Path, cmd: &Command) -> Result<ConfigFile, Failure> {
    let shown = path.display();
    let text = std::fs::read_to_string(path).map_err(|e| {
        Failure::input(format!(
            "config file {shown}: cannot be read: {e}; fix --config or {CONFIG_ENV}, or create it"
        ))
    })?;
    let doc: serde_yaml::Value = serde_yaml::from_str(&text)
        .map_err(|e| Failure::input(format!("config file {shown}: not YAML: {e}")))?;
    let map = match doc {
        serde_yaml::Value::Null => serde_yaml::Mapping::new(),
        serde_yaml::Value::Mapping(m) => m,
        _ => {
            return Err(Failure::input(format!(
                "config file {shown}: must be a mapping of option names to values (runner_dir: /srv/runners)"
            )))
        }
    };
    let known = options(cmd);
    let mut values = BTreeMap::new();
    for (k, v) in map {
        let Some(key) = k.as_str() else {
            return Err(Failure::input(format!(
                "config file {shown}: keys are option names, not {k:?}"
            )));
        };
        let id = key.replace('-', "_");
        let Some((arg, _)) = known.get(&id) else {
            if PER_INVOCATION.contains(&id.as_str()) {
                return Err(Failure::input(format!(
                    "config file {shown}: `{key}` is a choice of one invocation, not a setting: pass --{} on the command line",
                    id.replace('_', "-")
                )));
            }
            let names = known.keys().map(String::as_str);
            let hint = conductor_core::did_you_mean(&id, names)
                .map(|s| format!(" (did you mean `{s}`?)"))
                .unwrap_or_default();
            return Err(Failure::input(format!(
                "config file {shown}: unknown key `{key}`{hint}; keys are the long options without `--` (`conductor config` lists them)"
            )));
        };
        let texts = scalars(&v).ok_or_else(|| {
            Failure::input(format!(
                "config file {shown}: `{key}` must be a string, number, boolean or list of them"
            ))
        })?;
        for t in &texts {
            check_value(arg, t)
                .map_err(|e| Failure::input(format!("config file {shown}: `{key}: {t}`: {e}")))?;
        }
        values.insert(id, texts);
    }
    Ok(ConfigFile {
        path: Some(path.to_path_buf()),
        values,
    })
}

/// A YAML scalar, or a list of them, as text.
fn scalars(v: &serde_yaml::Value) -> Option<Vec<String>> {
    use serde_yaml::Value;
    let one = |v: &Value| match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    };
    match v {
        Value::Sequence(items) => items.iter().map(one).collect(),
        v => one(v).map(|s| vec![s]),
    }
}

/// Parses `value` as `arg`'s flag value would be; the reason otherwise.
fn check_value(arg: &Arg, value: &str) -> Result<(), String> {
    if matches!(arg.get_action(), ArgAction::SetTrue | ArgAction::SetFalse) {
        return match value {
            "true" | "false" => Ok(()),
            _ => Err("a switch is true or false".into()),
        };
    }
    let long = arg.get_long().unwrap_or_else(|| arg.get_id().as_str());
    let probe = Arg::new("probe")
        .long(long.to_string())
        .value_parser(arg.get_value_parser().clone());
    Command::new("conductor")
        .arg(probe)
        .try_get_matches_from(["conductor", &format!("--{long}={value}")])
        .map(|_| ())
        .map_err(|e| {
            let text = e.render().to_string();
            let first = text.lines().next().unwrap_or("invalid value").to_string();
            first.strip_prefix("error: ").unwrap_or(&first).to_string()
        })
}

/// `cmd` with the file's settings as the options' defaults (so a flag and
/// a variable still win).
pub fn apply(cmd: Command, file: &ConfigFile) -> Command {
    if file.values.is_empty() {
        return cmd;
    }
    let values = file.values.clone();
    map_args(cmd, &move |arg| match values.get(arg.get_id().as_str()) {
        Some(v) => arg.default_values(v.clone()),
        None => arg,
    })
}

/// One effective setting, for `conductor config`.
#[derive(Debug, Serialize)]
pub struct Setting {
    /// The option (`runner_dir`), as a config key.
    pub key: String,
    /// Its value(s) as text; empty when unset.
    pub value: Vec<String>,
    /// Where the value came from: `flag`, `env <VAR>`, `file <path>`, `default`, `unset`.
    pub source: String,
    /// The commands that take it; empty for the options of every command.
    pub commands: Vec<String>,
}

/// Every setting in effect for the options of `cmd`, and where it came from.
/// `matches` are the parsed command line (for the global options).
pub fn settings(cmd: &Command, matches: &ArgMatches, file: &ConfigFile) -> Vec<Setting> {
    let from_file = |id: &str| {
        file.values.get(id).map(|v| {
            let path = file.path.as_deref().unwrap_or(Path::new("?"));
            (v.clone(), format!("file {}", path.display()))
        })
    };
    let globals: BTreeSet<&str> = cmd
        .get_arguments()
        .filter(|a| a.is_global_set())
        .map(|a| a.get_id().as_str())
        .collect();
    let mut out = Vec::new();
    for (id, (arg, commands)) in options(cmd) {
        let env = arg.get_env().map(|e| e.to_string_lossy().into_owned());
        let (value, source) = if globals.contains(id.as_str()) {
            let raw: Vec<String> = matches
                .get_raw(&id)
                .map(|vs| vs.map(|v| v.to_string_lossy().into_owned()).collect())
                .unwrap_or_default();
            let source = match matches.value_source(&id) {
                Some(ValueSource::CommandLine) => "flag".to_string(),
                Some(ValueSource::EnvVariable) => {
                    format!("env {}", env.clone().unwrap_or_default())
                }
                Some(ValueSource::DefaultValue) => from_file(&id).map_or("default".into(), |f| f.1),
                _ => "unset".to_string(),
            };
            (raw, source)
        } else if let Some((name, v)) = env
            .as_ref()
            .and_then(|n| std::env::var(n).ok().map(|v| (n.clone(), v)))
        {
            (vec![v], format!("env {name}"))
        } else if let Some(f) = from_file(&id) {
            f
        } else {
            let defaults: Vec<String> = arg
                .get_default_values()
                .iter()
                .map(|v| v.to_string_lossy().into_owned())
                .collect();
            let source = if defaults.is_empty() {
                "unset"
            } else {
                "default"
            };
            (defaults, source.to_string())
        };
        out.push(Setting {
            key: id,
            value,
            source,
            commands,
        });
    }
    out
}

/// The settings as text: `key: value  (source)`, one a line.
pub fn settings_text(file: &ConfigFile, settings: &[Setting]) -> String {
    let mut out = match &file.path {
        Some(p) => format!("# config file: {}\n", p.display()),
        None => format!("# config file: none ({DEFAULT_PATH} does not exist; --config or {CONFIG_ENV} names one)\n"),
    };
    let width = settings.iter().map(|s| s.key.len()).max().unwrap_or(0);
    for s in settings {
        let value = match s.value.as_slice() {
            [] => "~".to_string(),
            [one] => one.clone(),
            many => format!("[{}]", many.join(", ")),
        };
        let scope = if s.commands.is_empty() {
            String::new()
        } else {
            format!("; {}", s.commands.join(", "))
        };
        out.push_str(&format!(
            "{:<w$}  {value}  # {}{scope}\n",
            format!("{}:", s.key),
            s.source,
            w = width + 1
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;
    use crate::args::Cli;

    fn command() -> Command {
        with_env_vars(Cli::command())
    }

    fn file(text: &str) -> (tempfile::TempDir, PathBuf) {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("conductor.yaml");
        std::fs::write(&p, text).unwrap();
        (d, p)
    }

    #[test]
    fn every_setting_has_a_variable_and_choices_of_one_run_have_none() {
        let opts = options(&command());
        for id in [
            "runner_dir",
            "provisioner",
            "release_grace",
            "endpoint_url",
            "json",
        ] {
            assert!(opts[id].0.get_env().is_some(), "{id}");
        }
        assert_eq!(
            opts["dynamodb_table"].0.get_env().unwrap(),
            "CONDUCTOR_DYNAMODB_TABLE"
        );
        for id in PER_INVOCATION {
            assert!(!opts.contains_key(*id), "{id}");
        }
        assert!(opts["provisioner"].1.contains(&"group create".to_string()));
    }

    #[test]
    fn unknown_keys_and_bad_values_are_refused_by_name() {
        let (_d, p) = file("runner_dri: /srv\n");
        let e = load(&p, &command()).unwrap_err();
        assert!(
            e.message.contains("unknown key `runner_dri`"),
            "{}",
            e.message
        );
        assert!(
            e.message.contains("did you mean `runner_dir`"),
            "{}",
            e.message
        );
        let (_d, p) = file("reserver: dynamo\n");
        let e = load(&p, &command()).unwrap_err();
        assert!(e.message.contains("`reserver: dynamo`"), "{}", e.message);
        let (_d, p) = file("release-grace: 10m\nno_salt: true\n");
        let f = load(&p, &command()).unwrap();
        assert_eq!(f.values["release_grace"], ["10m"]);
        let (_d, p) = file("older_than: 30d\n");
        let e = load(&p, &command()).unwrap_err();
        assert!(
            e.message
                .contains("`older_than` is a choice of one invocation")
                && e.message.contains("--older-than"),
            "{}",
            e.message
        );
        let (_d, p) = file("- a\n");
        assert!(load(&p, &command()).is_err());
    }

    #[test]
    fn a_config_path_is_found_on_the_command_line() {
        let args: Vec<OsString> = ["conductor", "reservations", "list", "--config=/x.yaml"]
            .map(OsString::from)
            .to_vec();
        assert_eq!(locate(&args), Some((PathBuf::from("/x.yaml"), true)));
    }
}
