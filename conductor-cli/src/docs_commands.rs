//! The docs-commands check: every `conductor ...` line of a fenced block in
//! README.md and docs/*.md, and every example of `--help`, parses as the
//! binary parses it (subcommands, flags) and its `key=value` words make a
//! valid request. A documented flag or word that does not exist fails CI.

use std::ffi::OsString;
use std::path::Path;

use clap::FromArgMatches;

use crate::args::{Cli, Command, GroupCommand};
use crate::words::{Words, ADOPT_WORDS, CREATE_WORDS, SELECT_WORDS};

/// `line` split into words as a POSIX shell would for these examples:
/// whitespace, '...' and "..." quotes; a `#` word starts a comment, and a
/// redirection or pipe (`>`, `|`, `&&`, `;`) ends the command.
fn shell_words(line: &str) -> Vec<String> {
    let mut words = split(line);
    if let Some(end) = words.iter().position(|w| {
        w.starts_with('>') || w.starts_with("2>") || ["|", "&&", ";"].contains(&w.as_str())
    }) {
        words.truncate(end);
    }
    words
}

/// `line` split at unquoted whitespace, quotes removed, up to a comment.
fn split(line: &str) -> Vec<String> {
    let mut words = Vec::new();
    let (mut word, mut quote, mut started) = (String::new(), None, false);
    for c in line.chars() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), c) => word.push(c),
            (None, '\'' | '"') => {
                quote = Some(c);
                started = true;
            }
            (None, c) if c.is_whitespace() => {
                if started {
                    words.push(std::mem::take(&mut word));
                    started = false;
                }
            }
            (None, '#') if !started => break,
            (None, c) => {
                word.push(c);
                started = true;
            }
        }
    }
    if started {
        words.push(word);
    }
    words
}

/// The `conductor` command lines of the fenced blocks of `text` (lines
/// continued with `\` joined; a `$ ` prompt and `VAR=value` prefixes
/// dropped), with their line numbers.
fn fenced_commands(text: &str) -> Vec<(usize, Vec<String>)> {
    let mut out = Vec::new();
    let (mut fenced, mut pending): (bool, Option<(usize, String)>) = (false, None);
    for (i, line) in text.lines().enumerate() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
            continue;
        }
        if !fenced {
            continue;
        }
        let (n, joined) = match pending.take() {
            Some((n, head)) => (n, format!("{head} {}", line.trim())),
            None => (i + 1, line.trim().to_string()),
        };
        if let Some(head) = joined.strip_suffix('\\') {
            pending = Some((n, head.to_string()));
            continue;
        }
        let words: Vec<String> = shell_words(joined.trim_start_matches("$ "))
            .into_iter()
            .skip_while(|w| {
                w.contains('=') && w.chars().next().is_some_and(|c| c.is_ascii_uppercase())
            })
            .collect();
        if words.first().is_some_and(|w| w == "conductor") {
            out.push((n, words));
        }
    }
    out
}

/// The examples of every subcommand's `--help` (`  conductor ...` lines).
fn help_examples(cmd: &clap::Command, path: &str, out: &mut Vec<(String, Vec<String>)>) {
    let path = format!("{path} {}", cmd.get_name());
    if let Some(help) = cmd.get_after_help() {
        for line in help.to_string().lines() {
            if line.trim_start().starts_with("conductor ") {
                out.push((format!("`{}` --help", path.trim()), shell_words(line)));
            }
        }
    }
    for sub in cmd.get_subcommands() {
        help_examples(sub, &path, out);
    }
}

/// Parses `args` as the binary does and builds the request of its words.
fn check(args: &[String]) -> Result<(), String> {
    let m = crate::args::command()
        .try_get_matches_from(args)
        .map_err(|e| e.render().to_string())?;
    let cli = Cli::from_arg_matches(&m).map_err(|e| e.to_string())?;
    let words = |w: &[OsString], allowed| Words::parse(w, "conductor", allowed);
    let r = match cli.command {
        Command::Group(
            GroupCommand::Create { words: w, .. } | GroupCommand::Plan { words: w, .. },
        ) => words(&w, CREATE_WORDS).and_then(|w| w.create_request().map(drop)),
        Command::Group(
            GroupCommand::Destroy { words: w, .. } | GroupCommand::Update { words: w, .. },
        ) => words(&w, SELECT_WORDS).and_then(|w| w.query(false).map(drop)),
        Command::Group(GroupCommand::Status { words: w, .. }) => {
            words(&w, SELECT_WORDS).and_then(|w| w.query(true).map(drop))
        }
        Command::Group(GroupCommand::Adopt {
            words: w, apply, ..
        }) => words(&w, ADOPT_WORDS).and_then(|w| w.adopt_request(apply).map(drop)),
        _ => Ok(()),
    };
    r.map_err(|e| e.to_string())
}

#[test]
fn every_documented_command_parses_and_its_words_are_a_valid_request() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut files = vec![root.join("README.md")];
    let mut docs: Vec<_> = std::fs::read_dir(root.join("docs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    docs.sort();
    files.extend(docs);
    let mut commands = Vec::new();
    for f in &files {
        let text = std::fs::read_to_string(f).unwrap();
        let name = f.strip_prefix(&root).unwrap().display().to_string();
        for (n, words) in fenced_commands(&text) {
            commands.push((format!("{name}:{n}"), words));
        }
    }
    let documented = commands.len();
    help_examples(&crate::args::command(), "", &mut commands);
    assert!(
        documented >= 30,
        "found only {documented} documented commands"
    );
    assert!(
        commands.len() > documented + 10,
        "found the --help examples"
    );
    let failures: Vec<String> = commands
        .iter()
        .filter_map(|(at, words)| {
            check(words)
                .err()
                .map(|e| format!("{at}: {}\n  {e}", words.join(" ")))
        })
        .collect();
    assert!(
        failures.is_empty(),
        "{} of {} documented commands do not parse:\n{}",
        failures.len(),
        commands.len(),
        failures.join("\n")
    );
}

#[test]
fn shell_words_and_fenced_blocks_read_as_a_shell_would() {
    assert_eq!(
        shell_words("conductor runs show 'a b' \"c\" d  # comment"),
        ["conductor", "runs", "show", "a b", "c", "d"]
    );
    assert_eq!(shell_words("conductor man > x.1"), ["conductor", "man"]);
    assert_eq!(
        shell_words("conductor runs list | head"),
        ["conductor", "runs", "list"]
    );
    let text = "x\n```sh\n$ AWS_REGION=us-east-1 conductor group plan \\\n  group=devops\nls\n```\nconductor not-fenced\n";
    assert_eq!(
        fenced_commands(text),
        [(
            3,
            vec![
                "conductor".to_string(),
                "group".into(),
                "plan".into(),
                "group=devops".into()
            ]
        )]
    );
}
