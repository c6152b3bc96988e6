//! The `conductor` binary: a thin layer over `conductor-core` and its backends.
// Doc comments of the arguments are the --help text, where <placeholders> read right.
#![allow(rustdoc::invalid_html_tags)]

mod args;
mod exit;
mod logging;
mod output;
mod runs;
mod wiring;
mod words;

use std::io::IsTerminal;
use std::process::ExitCode;
use std::time::Duration;

use clap::{CommandFactory, Parser};
use conductor_core::conductor::Options;
use conductor_core::reserve::now_ms;
use conductor_core::Cpid;
use serde_json::json;

use args::{Cli, Command, GroupCommand, ReservationsCommand, RunsCommand};
use exit::Failure;
use words::{Words, CREATE_WORDS, SELECT_WORDS};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let _guard = logging::init(&cli.global, writes_files(&cli.command));
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(exit::FAILED);
        }
    };
    match rt.block_on(run(cli)) {
        Ok(code) => ExitCode::from(code),
        Err(f) => {
            if f.code != exit::BAD_INPUT {
                tracing::error!(code = f.code, "{}", f.message);
            }
            eprintln!("error: {}", f.message);
            ExitCode::from(f.code)
        }
    }
}

/// Whether the command writes under the runner root (and so gets the admin log).
fn writes_files(c: &Command) -> bool {
    matches!(
        c,
        Command::Group(GroupCommand::Create { dry_run: false, .. })
            | Command::Group(GroupCommand::Destroy { .. })
            | Command::Group(GroupCommand::Update { dry_run: false, .. })
            | Command::Reservations(ReservationsCommand::Prune { .. })
            | Command::Runs(RunsCommand::Archive { .. })
    )
}

/// Options for the commands that create nothing (destroy, update).
fn options(provisioner: conductor_core::Provisioner) -> Options {
    Options {
        provisioner,
        release_grace: Duration::ZERO,
        ..Options::default()
    }
}

async fn run(cli: Cli) -> Result<u8, Failure> {
    let g = &cli.global;
    match cli.command {
        Command::Group(GroupCommand::Plan { words }) => plan(g, &words).await,
        Command::Group(GroupCommand::Create {
            words,
            dry_run: true,
            ..
        }) => plan(g, &words).await,
        Command::Group(GroupCommand::Create {
            words,
            provisioner,
            release_grace,
            autosign_grains_dir,
            minion_timeout,
            ..
        }) => {
            let req =
                Words::parse(&words, "conductor group create", CREATE_WORDS)?.create_request()?;
            let opts = Options {
                provisioner: wiring::provisioner(provisioner),
                release_grace,
                autosign_grains_dir: Some(autosign_grains_dir),
                minion_timeout,
                ..Options::default()
            };
            let c = wiring::conductor(g, opts).await?;
            progress(
                g,
                &format!("creating for group {} in {} ...", req.group, req.zone),
            );
            let report = c.create(&req).await?;
            if g.json {
                output::print_json(&output::create_json(&report));
            } else {
                print!("{}", output::create_text(&report));
            }
            Ok(if report.success() {
                exit::OK
            } else {
                exit::FAILED
            })
        }
        Command::Group(GroupCommand::Destroy { words, provisioner }) => {
            let req =
                Words::parse(&words, "conductor group destroy", SELECT_WORDS)?.query(false)?;
            let c = wiring::conductor(g, options(wiring::provisioner(provisioner))).await?;
            progress(g, &format!("destroying for group {} ...", req.group));
            let report = c.destroy(&req).await?;
            if g.json {
                output::print_json(&output::destroy_json(&report));
            } else {
                print!("{}", output::destroy_text(&report));
            }
            Ok(if report.success() {
                exit::OK
            } else {
                exit::FAILED
            })
        }
        Command::Group(GroupCommand::Update { words, dry_run }) => {
            let q = Words::parse(&words, "conductor group update", SELECT_WORDS)?.query(false)?;
            let c = wiring::conductor(g, options(conductor_core::Provisioner::Ec2)).await?;
            if dry_run {
                let targets = c.update_targets(&q).await?;
                if g.json {
                    output::print_json(&json!({ "targets": targets }));
                } else {
                    for t in &targets {
                        println!("would update {t}");
                    }
                }
                return Ok(exit::OK);
            }
            let report = c.update(&q).await?;
            if g.json {
                output::print_json(&json!(report));
            } else {
                print!("{}", output::update_text(&report));
            }
            Ok(if report.success() {
                exit::OK
            } else {
                exit::FAILED
            })
        }
        Command::Group(GroupCommand::Status { words }) => {
            let q = Words::parse(&words, "conductor group status", SELECT_WORDS)?.query(true)?;
            let c = wiring::conductor_for_plan(g).await?;
            let rows = c.status(&q).await?;
            if g.json {
                output::print_json(&json!(rows));
            } else {
                print!("{}", output::status_text(&rows));
            }
            Ok(exit::OK)
        }
        Command::Reservations(ReservationsCommand::List) => {
            let r = wiring::reserver(g).await?;
            let list = r.list().await?;
            let now = now_ms();
            if g.json {
                output::print_json(&json!(list));
            } else if list.is_empty() {
                println!("no reservations");
            } else {
                for e in &list {
                    let left = e.owner.expires as i64 - now as i64;
                    let state = if left <= 0 {
                        "expired".to_string()
                    } else {
                        format!("expires in {}s", left / 1000)
                    };
                    println!(
                        "{:<4} {}  cpid {} on {} pid {}  {state}",
                        format!("{:?}", e.kind).to_lowercase(),
                        e.key,
                        e.owner.cpid,
                        e.owner.host,
                        e.owner.pid
                    );
                }
            }
            Ok(exit::OK)
        }
        Command::Reservations(ReservationsCommand::Prune { older_than }) => {
            let r = wiring::reserver(g).await?;
            let pruned = r.prune(now_ms(), older_than).await?;
            if g.json {
                output::print_json(&json!({ "pruned": pruned }));
            } else {
                println!("pruned {} reservation(s)", pruned.len());
                for k in &pruned {
                    println!("  {k}");
                }
            }
            Ok(exit::OK)
        }
        Command::Runs(cmd) => runs_command(g, cmd).await,
        Command::Completions { shell } => {
            clap_complete::generate(
                shell,
                &mut Cli::command(),
                "conductor",
                &mut std::io::stdout(),
            );
            Ok(exit::OK)
        }
        Command::Man => {
            clap_mangen::Man::new(Cli::command())
                .render(&mut std::io::stdout())
                .map_err(|e| Failure::new(exit::FAILED, format!("writing the man page: {e}")))?;
            Ok(exit::OK)
        }
    }
}

async fn plan(g: &args::Global, words: &[std::ffi::OsString]) -> Result<u8, Failure> {
    let req = Words::parse(words, "conductor group plan", CREATE_WORDS)?.create_request()?;
    let c = wiring::conductor_for_plan(g).await?;
    let plan = c.plan(&req).await?;
    if g.json {
        output::print_json(&output::plan_json(&plan));
    } else {
        print!("{}", output::plan_text(&plan, |_| None));
    }
    Ok(exit::OK)
}

async fn runs_command(g: &args::Global, cmd: RunsCommand) -> Result<u8, Failure> {
    let layout = wiring::layout(g);
    match cmd {
        RunsCommand::List => {
            let all = runs::list(&layout);
            if g.json {
                output::print_json(&json!(all));
            } else if all.is_empty() {
                println!("no runs under {}", layout.runner_dir.display());
            } else {
                for r in &all {
                    println!("{}  started {}  {} files", r.cpid, r.started, r.files.len());
                }
            }
            Ok(exit::OK)
        }
        RunsCommand::Show { cpid } => {
            let cpid = Cpid::parse(&cpid)?;
            let files = layout.run_files(cpid);
            if files.is_empty() {
                return Err(Failure::input(format!(
                    "no files of run {cpid} under {} or {}; see `conductor runs list`",
                    layout.runner_dir.display(),
                    layout.config_dir.display()
                )));
            }
            if g.json {
                output::print_json(&json!({ "cpid": cpid, "files": files }));
            } else {
                for f in files {
                    println!("{}", f.display());
                }
            }
            Ok(exit::OK)
        }
        RunsCommand::Archive { cpid, to, remove } => {
            let cpid = Cpid::parse(&cpid)?;
            let to = to.unwrap_or_else(|| layout.runner_dir.join("archives").display().to_string());
            let location = if to.starts_with("s3://") {
                let url = conductor_aws::s3::S3Url::parse(&to)?;
                let tmp = tempfile::tempdir().map_err(|e| {
                    Failure::new(exit::FAILED, format!("a temporary directory: {e}"))
                })?;
                let file =
                    conductor_salt::archive::archive(&layout, cpid, tmp.path(), false).await?;
                let at = conductor_aws::s3::upload(&file, &url, g.endpoint_url.as_deref()).await?;
                if remove {
                    conductor_salt::archive::archive(&layout, cpid, tmp.path(), true).await?;
                }
                at
            } else {
                let path = conductor_salt::archive::archive(
                    &layout,
                    cpid,
                    std::path::Path::new(&to),
                    remove,
                )
                .await?;
                path.display().to_string()
            };
            if g.json {
                output::print_json(&json!({ "cpid": cpid, "archive": location }));
            } else {
                println!("{location}");
            }
            Ok(exit::OK)
        }
    }
}

/// A progress line on stderr when it is a terminal and output is for humans.
fn progress(g: &args::Global, msg: &str) {
    if !g.json && !g.quiet && std::io::stderr().is_terminal() {
        eprintln!("{msg}");
    }
}
