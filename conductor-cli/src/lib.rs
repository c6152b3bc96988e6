//! The `conductor` command as a library: argument parsing, wiring of the
//! backends, output and exit codes over conductor-core, conductor-aws and
//! conductor-salt. `src/main.rs` calls [`main_with`]; tests call it with an
//! [`Observer`] of the lifecycle (the crash tests kill the process at a step).
// Doc comments of the arguments are the --help text, where <placeholders> read right.
#![allow(rustdoc::invalid_html_tags)]

/// `print!` that never panics: a stdout that is gone loses the text, not
/// the run (see [`output::print_fmt`]).
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::output::print_fmt(format_args!($($arg)*))
    };
}

/// `println!` that never panics (see [`out!`]).
macro_rules! outln {
    ($($arg:tt)*) => {
        $crate::output::print_fmt(format_args!("{}\n", format_args!($($arg)*)))
    };
}

mod args;
mod commands;
mod complete;
mod config;
#[cfg(test)]
mod docs_commands;
mod doctor;
mod exit;
mod logging;
mod output;
mod progress;
mod run_cpid;
mod runs;
mod signals;
mod wiring;
mod words;

use std::ffi::OsString;
use std::process::ExitCode;
use std::sync::Arc;

use clap::FromArgMatches;
use conductor_core::Observer;

use args::Cli;

/// Answers the shell and exits the process when it is asking for
/// completions (`COMPLETE=bash conductor -- <line>`, the scripts
/// `conductor completions <shell>` prints); returns otherwise.
pub fn answer_completion() {
    complete::answer_if_asked();
}

/// Runs `conductor` with `args` (the first is the program name); `observer`,
/// when given, is told of every lifecycle step of a create.
pub fn main_with(
    args: impl IntoIterator<Item = OsString>,
    observer: Option<Arc<dyn Observer>>,
) -> ExitCode {
    let args: Vec<OsString> = args.into_iter().collect();
    let Parsed { cli, matches, file } = match parse(&args) {
        Ok(parsed) => parsed,
        Err(Unparsed::Config(f)) => {
            let json = config::wants_json(&args, None);
            return ExitCode::from(output::failure(&f, None, json));
        }
        Err(Unparsed::Usage(e, file)) => {
            let json = config::wants_json(&args, Some(&file));
            return ExitCode::from(output::usage_error(&e, json));
        }
    };
    let name = command_name(&matches);
    if let args::Command::Config = cli.command {
        // The tree again (parsing consumed it): only this command needs it.
        let cmd = config::apply(args::command(), &file);
        let settings = config::settings(&cmd, &matches, &file);
        if cli.global.json {
            let path = file.path.as_ref().map(|p| p.display().to_string());
            output::print_json(&serde_json::json!({"config_file": path, "settings": settings}));
        } else {
            out!("{}", config::settings_text(&file, &settings));
        }
        return ExitCode::from(exit::OK);
    }
    let writes = commands::writes_files(&cli.command);
    let _guard = logging::init(&cli.global, writes);
    // One thread runs every task: a run waits on the network and the disk
    // (blocking file work goes to tokio's blocking pool), and worker threads
    // only added wake-ups between them (about 5% of a run's CPU, measured
    // with `perf stat`); nothing in the commands blocks a task.
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            output::say_err(&format!("error: cannot start the async runtime: {e}"));
            return ExitCode::from(exit::FAILED);
        }
    };
    let code = rt.block_on(async {
        let interrupt = match signals::Interrupt::install() {
            Ok(i) => i,
            Err(e) => {
                output::say_err(&format!("error: cannot install the signal handlers: {e}"));
                return exit::FAILED;
            }
        };
        let display = progress::Display::new(&cli.global);
        let mut observers: Vec<Arc<dyn Observer>> = vec![display.clone()];
        observers.extend(observer);
        let run = Arc::new(run_cpid::RunCpid::new(observers));
        let ctx = commands::Ctx {
            g: &cli.global,
            interrupt: &interrupt,
            observer: Some(run.clone()),
            display: &display,
            instances: Default::default(),
        };
        let result = commands::run(&ctx, cli.command).await;
        display.finish();
        let code = match result {
            Ok(code) => code,
            Err(f) => output::failure(&f, run.get(), cli.global.json),
        };
        if let (true, Some(cpid)) = (writes, run.get()) {
            let instances = ctx
                .instances
                .into_inner()
                .unwrap_or_else(|p| p.into_inner());
            let record = runs::RunRecord {
                command: name.clone(),
                group: word(&matches, "group"),
                env: word(&matches, "pillarenv"),
                result: exit::class_of(code).to_string(),
                exit_code: code,
                instances,
                ended_at: conductor_core::iso_utc(conductor_core::now_ms() / 1000),
            };
            runs::write_record(&wiring::layout(&cli.global), cpid, &record);
        }
        code
    });
    // A blocking read a signal abandoned (`runs list` on a FIFO or a hung
    // NFS mount) would hold the runtime's drop forever, with the signal
    // handlers already gone: wait for it briefly, then leave it behind.
    rt.shutdown_timeout(BLOCKING_GRACE);
    // The admin log ends each run with its result (bad input did nothing
    // and writes no log; commands without the log ignore the line).
    if code != exit::BAD_INPUT {
        tracing::info!(
            target: logging::ADMIN,
            exit_code = code,
            "conductor {name}: {} (exit {code})",
            exit::class_of(code)
        );
    }
    ExitCode::from(code)
}

/// How long the end of a command waits for blocking work it no longer
/// waits on (a read a signal abandoned) before it exits without it.
const BLOCKING_GRACE: std::time::Duration = std::time::Duration::from_secs(2);

/// A command line parsed over its config file.
struct Parsed {
    cli: Cli,
    matches: clap::ArgMatches,
    file: config::ConfigFile,
}

/// Why a command line did not parse.
enum Unparsed {
    /// The config file is unreadable or names an unknown option.
    Config(exit::Failure),
    /// The line itself is wrong (the config file it was read over beside).
    Usage(clap::Error, config::ConfigFile),
}

/// Parses `args` (the first is the program name) over the config file
/// they, or the environment, name.
fn parse(args: &[OsString]) -> Result<Parsed, Unparsed> {
    let cmd = args::command();
    let file = match config::locate(args) {
        Some((path, _)) => config::load(&path, &cmd).map_err(Unparsed::Config)?,
        None => config::ConfigFile::default(),
    };
    // Parsing consumes the tree; no copy is kept for the one command that
    // needs it (`conductor config` builds it again).
    let parsed = config::apply(cmd, &file)
        .try_get_matches_from(args)
        .and_then(|matches| Ok((Cli::from_arg_matches(&matches)?, matches)));
    match parsed {
        Ok((cli, matches)) => Ok(Parsed { cli, matches, file }),
        Err(e) => Err(Unparsed::Usage(e, file)),
    }
}

/// The value of the `key=` word of the command's words, if given.
fn word(m: &clap::ArgMatches, key: &str) -> Option<String> {
    let mut m = m;
    while let Some((_, sub)) = m.subcommand() {
        m = sub;
    }
    let prefix = format!("{key}=");
    m.try_get_raw("words")
        .ok()
        .flatten()?
        .filter_map(|w| w.to_str())
        .find_map(|w| w.strip_prefix(&prefix).map(str::to_string))
}

/// The command's name as typed, subcommands included (`group create`).
fn command_name(m: &clap::ArgMatches) -> String {
    let mut words = Vec::new();
    let mut m = m;
    while let Some((name, sub)) = m.subcommand() {
        words.push(name);
        m = sub;
    }
    words.join(" ")
}
