//! One function per command; `run` dispatches.

use std::io::IsTerminal;
use std::sync::Arc;
use std::time::Duration;

use conductor_core::{now_ms, Conductor, Cpid, Holder, Observer, Options, Provisioner, Region};
use serde_json::json;

use crate::args::{self, Command, GroupCommand, ReservationsCommand, RunsCommand};
use crate::exit::{self, Failure};
use crate::signals::Interrupt;
use crate::words::{Words, ADOPT_WORDS, CREATE_WORDS, SELECT_WORDS};
use crate::{output, runs, wiring};

/// What every command runs with.
pub struct Ctx<'a> {
    /// The global options.
    pub g: &'a args::Global,
    /// The signal handlers' cancellation.
    pub interrupt: &'a Interrupt,
    /// Told of each lifecycle step (tests).
    pub observer: Option<Arc<dyn Observer>>,
    /// The progress display (also among the observer's).
    pub display: &'a crate::progress::Display,
    /// The instances the run launched, destroyed or updated (for its record).
    pub instances: std::sync::Mutex<Vec<String>>,
}

impl Ctx<'_> {
    /// Notes the instances the run acted on, for its record.
    fn acted_on(&self, names: &[String]) {
        let mut all = self.instances.lock().unwrap_or_else(|p| p.into_inner());
        all.extend(names.iter().cloned());
    }

    /// A conductor with every backend wired for a request in `region`,
    /// cancelled by the signals.
    async fn conductor(
        &self,
        region: Option<&Region>,
        opts: Options,
    ) -> Result<Conductor, Failure> {
        wiring::conductor(
            self.g,
            region,
            opts,
            self.interrupt.token.clone(),
            self.observer.clone(),
        )
        .await
    }

    /// The exit code of a report: 0 success, 1 failure, 128+signal interrupted.
    fn code(&self, success: bool, interrupted: bool) -> u8 {
        if interrupted || self.interrupt.token.is_cancelled() {
            self.interrupt.exit_code()
        } else if success {
            exit::OK
        } else {
            exit::FAILED
        }
    }

    /// The failure of a command a signal stopped: `message`, exit 128 + the signal.
    pub(crate) fn interrupted(&self, message: impl Into<String>) -> Failure {
        Failure::new(self.interrupt.exit_code(), message)
    }

    /// Runs `f` unless a signal comes first (or came already: the
    /// cancellation is polled first); then `f` is dropped and the failure
    /// is [`interrupted`](Self::interrupted) with `message()`. For the
    /// commands that only read, or have not changed anything yet.
    pub(crate) async fn unless_interrupted<F: std::future::Future>(
        &self,
        f: F,
        message: impl FnOnce() -> String,
    ) -> Result<F::Output, Failure> {
        tokio::select! {
            biased;
            _ = self.interrupt.token.cancelled() => Err(self.interrupted(message())),
            out = f => Ok(out),
        }
    }

    /// The failure for an error, with the signal's code when interrupted.
    fn failure(&self, e: conductor_core::Error) -> Failure {
        let mut f = Failure::from(e);
        if f.code == exit::INTERRUPTED {
            f.code = self.interrupt.exit_code();
        }
        f
    }
}

/// Whether the command writes under the runner root (and so gets the admin log).
pub fn writes_files(c: &Command) -> bool {
    matches!(
        c,
        Command::Group(GroupCommand::Create { dry_run: false, .. })
            | Command::Group(GroupCommand::Destroy { dry_run: false, .. })
            | Command::Group(GroupCommand::Update { dry_run: false, .. })
            | Command::Reservations(ReservationsCommand::Prune { .. })
            | Command::Runs(RunsCommand::Archive { .. })
            | Command::Runs(RunsCommand::Prune { .. })
    )
}

/// Options for the commands that create nothing (destroy, update).
fn options(provisioner: Provisioner) -> Options {
    Options {
        provisioner,
        release_grace: Duration::ZERO,
        ..Options::default()
    }
}

/// Runs one command; its exit code, or the failure to report.
pub async fn run(ctx: &Ctx<'_>, command: Command) -> Result<u8, Failure> {
    let g = ctx.g;
    match command {
        Command::Group(GroupCommand::Plan { words, provisioner })
        | Command::Group(GroupCommand::Create {
            words,
            provisioner,
            dry_run: true,
            ..
        }) => plan(ctx, &words, wiring::provisioner(provisioner)).await,
        Command::Group(GroupCommand::Create {
            words,
            provisioner,
            release_grace,
            autosign,
            minion_timeout,
            ..
        }) => {
            let opts = Options {
                provisioner: wiring::provisioner(provisioner),
                release_grace,
                autosign_grains_dir: Some(autosign.autosign_grains_dir),
                minion_timeout,
                ..Options::default()
            };
            create(ctx, &words, opts).await
        }
        Command::Group(GroupCommand::Destroy {
            words,
            provisioner,
            dry_run,
            yes,
        }) => {
            // Without Salt there is no salt-cloud cache to clean: the ec2
            // provisioner's destroy, as plan and status do.
            let provisioner = wiring::provisioner_under(g, wiring::provisioner(provisioner));
            destroy(ctx, &words, provisioner, dry_run, yes).await
        }
        Command::Group(GroupCommand::Update { words, dry_run, .. }) => {
            update(ctx, &words, dry_run).await
        }
        Command::Group(GroupCommand::Status { words, ping, .. }) => status(ctx, &words, ping).await,
        Command::Group(GroupCommand::Adopt { words, apply, .. }) => adopt(ctx, &words, apply).await,
        Command::Reservations(ReservationsCommand::List { env }) => {
            reservations_list(ctx, env.as_ref()).await
        }
        Command::Reservations(ReservationsCommand::Prune { older_than }) => {
            reservations_prune(ctx, older_than).await
        }
        Command::Runs(cmd) => runs_command(ctx, cmd).await,
        // Printed by `main_with`, which holds the parsed command line.
        Command::Config => Ok(exit::OK),
        Command::Doctor {
            env,
            region,
            autosign,
            release_grace,
        } => {
            let scope = crate::doctor::Scope {
                env: env.as_ref(),
                region: region.as_ref(),
                autosign_grains_dir: &autosign.autosign_grains_dir,
                release_grace,
            };
            crate::doctor::run(ctx, &scope).await
        }
        Command::Completions { shell } => {
            crate::complete::print_registration(shell)
                .map_err(|e| Failure::new(exit::FAILED, format!("writing the completions: {e}")))?;
            Ok(exit::OK)
        }
        Command::Man { dir: None } => {
            clap_mangen::Man::new(args::command())
                .render(&mut std::io::stdout())
                .map_err(|e| Failure::new(exit::FAILED, format!("writing the man page: {e}")))?;
            Ok(exit::OK)
        }
        Command::Man { dir: Some(dir) } => {
            let pages = man_pages(&dir)?;
            if !g.quiet {
                outln!("wrote {pages} man pages to {}", dir.display());
            }
            Ok(exit::OK)
        }
    }
}

async fn plan(
    ctx: &Ctx<'_>,
    words: &[std::ffi::OsString],
    provisioner: Provisioner,
) -> Result<u8, Failure> {
    let req = Words::parse(words, "conductor group plan", CREATE_WORDS)?.create_request()?;
    let c = wiring::conductor_for_plan(
        ctx.g,
        Some(&req.zone.region()),
        provisioner,
        ctx.interrupt.token.clone(),
    )
    .await?;
    let plan = c.plan(&req).await.map_err(|e| ctx.failure(e))?;
    if ctx.g.json {
        output::print_json(&output::plan_json(&plan));
    } else {
        out!("{}", output::plan_text(&plan, |_| None));
    }
    Ok(ctx.code(true, false))
}

async fn create(ctx: &Ctx<'_>, words: &[std::ffi::OsString], opts: Options) -> Result<u8, Failure> {
    let req = Words::parse(words, "conductor group create", CREATE_WORDS)?.create_request()?;
    let c = ctx.conductor(Some(&req.zone.region()), opts).await?;
    ctx.display.note(&format!(
        "creating for group {} in {} ...",
        req.group, req.zone
    ));
    let report = c.create(&req).await.map_err(|e| ctx.failure(e))?;
    // The summary goes below the last progress line, not into it.
    ctx.display.finish();
    ctx.acted_on(&report.launched);
    if report.interrupted {
        tracing::warn!(cpid = %report.plan.cpid, "interrupted: the report lists what was launched; keys of instances that may exist stay reserved until they expire");
    }
    if ctx.g.json {
        output::print_json(&output::create_json(&report));
    } else {
        out!("{}", output::create_text(&report));
    }
    Ok(ctx.code(report.success(), report.interrupted))
}

async fn destroy(
    ctx: &Ctx<'_>,
    words: &[std::ffi::OsString],
    provisioner: Provisioner,
    dry_run: bool,
    yes: bool,
) -> Result<u8, Failure> {
    let req = Words::parse(words, "conductor group destroy", SELECT_WORDS)?.query(false)?;
    let c = ctx
        .conductor(req.region.as_ref(), options(provisioner))
        .await?;
    let plan = c.plan_destroy(&req).await.map_err(|e| ctx.failure(e))?;
    if dry_run {
        if ctx.g.json {
            output::print_json(&output::destroy_plan_json(&plan));
        } else {
            out!("{}", output::destroy_plan_text(&plan));
        }
        return Ok(ctx.code(true, false));
    }
    let terminal = std::io::stdin().is_terminal() && std::io::stderr().is_terminal();
    if terminal && !yes && !confirm(ctx, &plan).await? {
        return Err(Failure::input(format!(
            "destroy of {} instance(s) not confirmed; nothing was changed (answer y, or pass --yes)",
            plan.targets.len()
        )));
    }
    ctx.display
        .note(&format!("destroying for group {} ...", req.group));
    let report = c.destroy_planned(plan).await.map_err(|e| ctx.failure(e))?;
    // The summary goes below the last progress line, not into it.
    ctx.display.finish();
    ctx.acted_on(&report.destroyed);
    if report.interrupted {
        tracing::warn!(cpid = %report.cpid, "interrupted: the report lists what was terminated and what was left undone");
    }
    if ctx.g.json {
        output::print_json(&output::destroy_json(&report));
    } else {
        out!("{}", output::destroy_text(&report));
    }
    Ok(ctx.code(report.success(), report.interrupted))
}

/// Asks on the terminal `destroy N instances: a, b, c? [y/N]`; true for y/yes.
/// A signal before or while it waits stops the command (nothing was changed).
async fn confirm(ctx: &Ctx<'_>, plan: &conductor_core::DestroyPlan) -> Result<bool, Failure> {
    let interrupted = || ctx.interrupted("interrupted at the confirmation; nothing was changed");
    if ctx.interrupt.token.is_cancelled() {
        return Err(interrupted());
    }
    let names = plan.labels();
    let mut question = String::new();
    for s in &plan.skipped_instances {
        question.push_str(&format!("left alone: {s}\n"));
    }
    question.push_str(&format!(
        "destroy {} instance{}: {}? [y/N] ",
        names.len(),
        if names.len() == 1 { "" } else { "s" },
        names.join(", ")
    ));
    {
        use std::io::Write;
        let mut err = std::io::stderr().lock();
        let _ = err.write_all(question.as_bytes());
        let _ = err.flush();
    }
    // A thread of its own, left behind on a signal: a read of the terminal
    // cannot be interrupted, and the runtime waits for the threads of its
    // blocking pool when it shuts down, so a read there would keep the
    // process alive until Enter (and swallow a second Ctrl-C).
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("confirm".into())
        .spawn(move || {
            let mut line = String::new();
            let _ = tx.send(std::io::stdin().read_line(&mut line).map(|_| line));
        })
        .map_err(|e| Failure::new(exit::FAILED, format!("reading the answer: {e}")))?;
    let line = tokio::select! {
        biased;
        _ = ctx.interrupt.token.cancelled() => return Err(interrupted()),
        r = rx => r
            .map_err(|e| Failure::new(exit::FAILED, format!("reading the answer: {e}")))?
            .map_err(|e| Failure::new(exit::FAILED, format!("reading the answer: {e}")))?,
    };
    Ok(matches!(
        line.trim().to_ascii_lowercase().as_str(),
        "y" | "yes"
    ))
}

async fn update(ctx: &Ctx<'_>, words: &[std::ffi::OsString], dry_run: bool) -> Result<u8, Failure> {
    let q = Words::parse(words, "conductor group update", SELECT_WORDS)?.query(false)?;
    let c = ctx
        .conductor(q.region.as_ref(), options(Provisioner::Ec2))
        .await?;
    if dry_run {
        let selected = c.select(&q).await.map_err(|e| ctx.failure(e))?;
        let targets = selected.names();
        if ctx.g.json {
            output::print_json(&json!({
                "targets": targets,
                "skipped_instances": selected.skipped,
            }));
        } else {
            for t in &targets {
                outln!("would update {t}");
            }
            for s in &selected.skipped {
                outln!("left alone: {s}");
            }
        }
        return Ok(ctx.code(true, false));
    }
    let report = c.update(&q).await.map_err(|e| ctx.failure(e))?;
    // The summary goes below the last progress line, not into it.
    ctx.display.finish();
    ctx.acted_on(&report.targets);
    if ctx.g.json {
        output::print_json(&json!(report));
    } else {
        out!("{}", output::update_text(&report));
    }
    Ok(ctx.code(report.success(), false))
}

async fn status(ctx: &Ctx<'_>, words: &[std::ffi::OsString], ping: bool) -> Result<u8, Failure> {
    let q = Words::parse(words, "conductor group status", SELECT_WORDS)?.query(true)?;
    let c = wiring::conductor_for_plan(
        ctx.g,
        q.region.as_ref(),
        Provisioner::Ec2,
        ctx.interrupt.token.clone(),
    )
    .await?;
    let rows = if ping {
        c.status_pinged(&q).await
    } else {
        c.status(&q).await
    };
    let rows = rows.map_err(|e| ctx.failure(e))?;
    if ctx.g.json {
        output::print_json(&json!(rows));
    } else {
        out!("{}", output::status_text(&rows));
    }
    Ok(ctx.code(true, false))
}

async fn adopt(ctx: &Ctx<'_>, words: &[std::ffi::OsString], apply: bool) -> Result<u8, Failure> {
    let req = Words::parse(words, "conductor group adopt", ADOPT_WORDS)?.adopt_request(apply)?;
    let c = ctx
        .conductor(req.region.as_ref(), options(Provisioner::Ec2))
        .await?;
    let report = c.adopt(&req).await.map_err(|e| ctx.failure(e))?;
    if ctx.g.json {
        output::print_json(&json!(report));
    } else {
        out!(
            "{}",
            output::adopt_text(&report, !ctx.g.no_salt && !ctx.g.no_grains)
        );
    }
    Ok(ctx.code(true, false))
}

async fn reservations_list(
    ctx: &Ctx<'_>,
    env: Option<&conductor_core::Env>,
) -> Result<u8, Failure> {
    let g = ctx.g;
    let read = async {
        wiring::reserver(g)
            .await?
            .list(env)
            .await
            .map_err(|e| Failure::backend("reservations", e))
    };
    let list = ctx
        .unless_interrupted(read, || "interrupted: nothing listed".into())
        .await??;
    if g.json {
        output::print_json(&json!(list));
        return Ok(ctx.code(true, false));
    }
    if list.is_empty() {
        outln!("no reservations");
    }
    let now = now_ms();
    for e in &list {
        let kind = format!("{:?}", e.kind).to_lowercase();
        match &e.holder {
            Holder::Run(o) => {
                let left = o.expires as i64 - now as i64;
                let state = if left <= 0 {
                    "expired".to_string()
                } else {
                    format!("expires in {}s", left / 1000)
                };
                let phase = format!("{:?}", o.phase).to_lowercase();
                outln!(
                    "{kind:<4} {}  cpid {} on {} pid {}  {phase}, {state}",
                    e.key,
                    o.cpid,
                    o.host,
                    o.pid
                );
            }
            Holder::Foreign { modified } => {
                let age = now.saturating_sub(*modified) / 1000;
                outln!(
                    "{kind:<4} {}  foreign (not Conductor's; written {age}s ago): held until `reservations prune --older-than` removes it",
                    e.key
                );
            }
        }
    }
    Ok(ctx.code(true, false))
}

/// `reservations prune`: a signal before the prune began stops it with
/// nothing removed; one during the prune lets it finish (the backend
/// removes each key whole, in one call the command cannot stop midway),
/// prints what it removed and exits 128 + the signal.
async fn reservations_prune(ctx: &Ctx<'_>, older_than: Option<Duration>) -> Result<u8, Failure> {
    let g = ctx.g;
    let r = ctx
        .unless_interrupted(wiring::reserver(g), || {
            "interrupted before the prune began: no reservation was removed".into()
        })
        .await??;
    let pruned = r
        .prune(now_ms(), None, older_than)
        .await
        .map_err(|e| Failure::backend("reservations", e))?;
    let interrupted = ctx.interrupt.token.is_cancelled();
    if interrupted {
        tracing::warn!(
            pruned = pruned.len(),
            "interrupted: the prune under way finished; the reservations it removed are listed"
        );
    }
    if g.json {
        output::print_json(&json!({ "pruned": pruned, "interrupted": interrupted }));
    } else {
        outln!("pruned {} reservation(s)", pruned.len());
        for k in &pruned {
            outln!("  {k}");
        }
    }
    Ok(ctx.code(true, interrupted))
}

async fn runs_command(ctx: &Ctx<'_>, cmd: RunsCommand) -> Result<u8, Failure> {
    let g = ctx.g;
    let layout = wiring::layout(g);
    match cmd {
        RunsCommand::List => {
            // On a blocking thread: the signals are seen while it reads.
            let reading = layout.clone();
            let all = ctx
                .unless_interrupted(
                    tokio::task::spawn_blocking(move || runs::list(&reading)),
                    || "interrupted: nothing listed".into(),
                )
                .await?
                .map_err(|e| Failure::new(exit::FAILED, format!("listing the runs: {e}")))?;
            if g.json {
                output::print_json(&json!(all));
            } else if all.is_empty() {
                outln!("no runs under {}", layout.runner_dir.display());
            } else {
                outln!(
                    "{:<21} {:<26} {:<16} {:<15} {:<12} {:<10} FILES",
                    "CPID",
                    "STARTED",
                    "GROUP",
                    "ACTION",
                    "RESULT",
                    "INSTANCES"
                );
                for r in &all {
                    let group = r.group.as_deref().unwrap_or("-");
                    let rec = r.record.as_ref();
                    outln!(
                        "{:<21} {:<26} {:<16} {:<15} {:<12} {:<10} {}",
                        r.cpid.to_string(),
                        r.started_local,
                        group,
                        rec.map_or("-", |r| r.command.as_str()),
                        rec.map_or("-", |r| r.result.as_str()),
                        rec.map_or_else(|| "-".into(), |r| r.instances.len().to_string()),
                        r.files.len()
                    );
                }
            }
            Ok(ctx.code(true, false))
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
                    outln!("{}", f.display());
                }
            }
            Ok(exit::OK)
        }
        RunsCommand::Archive {
            cpid,
            to,
            remove,
            sse,
            kms_key_id,
        } => {
            let sse = match (sse, kms_key_id) {
                (args::SseArg::Aes256, None) => conductor_aws::s3::Sse::Aes256,
                (args::SseArg::Aes256, Some(_)) => {
                    return Err(Failure::input(
                        "--kms-key-id goes with --sse aws:kms".to_string(),
                    ))
                }
                (args::SseArg::AwsKms, key_id) => conductor_aws::s3::Sse::Kms { key_id },
            };
            archive(ctx, &layout, &cpid, to, remove, &sse).await
        }
        RunsCommand::Prune { older_than } => runs_prune(ctx, &layout, older_than).await,
    }
}

/// `runs prune --older-than D`: the files of runs older than D that are not
/// going (their `cpid.<CPID>` reservation is not held). A signal stops it
/// between two runs (each run's files are removed whole); what was removed
/// is printed and it exits 128 + the signal. A file named like a run's
/// that cannot be read is kept, with a warning naming it.
async fn runs_prune(
    ctx: &Ctx<'_>,
    layout: &conductor_core::Layout,
    older_than: Duration,
) -> Result<u8, Failure> {
    let g = ctx.g;
    let read = async {
        wiring::reserver(g)
            .await?
            .held(now_ms(), None, None)
            .await
            .map_err(|e| Failure::backend("reservations", e))
    };
    let held: std::collections::BTreeSet<String> = ctx
        .unless_interrupted(read, || {
            "interrupted before the prune began: nothing was removed".into()
        })
        .await??
        .into_iter()
        .map(|k| k.to_string())
        .collect();
    let before = (now_ms() / 1000).saturating_sub(older_than.as_secs());
    let layout = layout.clone();
    let token = ctx.interrupt.token.clone();
    // Awaited to its end: it asks the token before each run, so nothing is
    // still being removed once the command reports.
    let pruned = tokio::task::spawn_blocking(move || {
        layout.prune_runs(
            before,
            |cpid| held.contains(&conductor_core::Key::cpid(cpid).to_string()),
            || token.is_cancelled(),
        )
    })
    .await
    .map_err(|e| Failure::new(exit::FAILED, format!("pruning runs: {e}")))?
    .map_err(|e| Failure::new(exit::FAILED, format!("pruning runs: {e}")))?;
    for (path, error) in &pruned.unreadable {
        tracing::warn!(
            "kept {}: named like a run's file, but it cannot be read to tell whose it is: {error}; remove it by hand if no run needs it",
            path.display()
        );
    }
    if pruned.stopped {
        tracing::warn!(
            runs = pruned.runs,
            "interrupted: stopped after pruning {} run(s), each whole; the older runs not reached stay",
            pruned.runs
        );
    }
    let unreadable: Vec<_> = pruned
        .unreadable
        .iter()
        .map(|(p, e)| json!({ "path": p, "error": e.to_string() }))
        .collect();
    if g.json {
        output::print_json(&json!({
            "removed": pruned.removed,
            "kept_unreadable": unreadable,
            "interrupted": pruned.stopped,
        }));
    } else {
        outln!(
            "removed {} file(s) and run directories",
            pruned.removed.len()
        );
        for p in &pruned.removed {
            outln!("  {}", p.display());
        }
    }
    Ok(ctx.code(true, pruned.stopped))
}

/// `runs archive`: a signal stops it between files (no temporary file is
/// left and nothing removed), or during the upload to S3 (the run's files
/// are kept); with `--remove`, the files are removed only when the archive
/// is complete (and uploaded) and no signal came, and exactly the files
/// packed, under the archivers' lock held from listing them.
async fn archive(
    ctx: &Ctx<'_>,
    layout: &conductor_core::Layout,
    cpid: &str,
    to: Option<String>,
    remove: bool,
    sse: &conductor_aws::s3::Sse,
) -> Result<u8, Failure> {
    let g = ctx.g;
    let cpid = Cpid::parse(cpid)?;
    let token = &ctx.interrupt.token;
    let failure = |e: conductor_core::Error| match e {
        conductor_core::Error::Interrupted => {
            ctx.interrupted("interrupted: no archive written; the run's files were kept")
        }
        e => ctx.failure(e),
    };
    let to = to.unwrap_or_else(|| layout.runner_dir.join("archives").display().to_string());
    let location = if to.starts_with("s3://") {
        use conductor_aws::s3;
        let url = s3::S3Url::parse(&to)?;
        let tmp = tempfile::tempdir()
            .map_err(|e| Failure::new(exit::FAILED, format!("a temporary directory: {e}")))?;
        let mut aws = conductor_aws::config::AwsConfig::new();
        if let Some(endpoint) = &g.endpoint_url {
            aws = aws.endpoint_url(endpoint);
        }
        // The archive already uploaded (a run whose `--remove` stopped
        // partway) is packed into the new one, which replaces it only if
        // it is still the one read. (A run without files fails to pack:
        // nothing to read.)
        let name = conductor_salt::archive::file_name(cpid);
        let expect = if layout.run_files(cpid).is_empty() {
            s3::Expect::Absent
        } else {
            let dest = tmp.path().join(&name);
            let download = s3::download_with(&url, &name, &dest, &aws);
            ctx.unless_interrupted(download, || {
                "interrupted while reading the archive on S3: no archive written; the run's files were kept".into()
            })
            .await?
            .map_err(|e| Failure::backend("reading the archive already on S3", e))?
        };
        // The lock is held from listing the files until exactly those
        // packed (and uploaded) are removed.
        let packed = conductor_salt::archive::pack(layout, cpid, tmp.path(), remove, token)
            .await
            .map_err(|e| {
                let mut f = failure(e);
                if let s3::Expect::ETag(_) = expect {
                    f.message.push_str(&format!(
                        " (the archive already there is a temporary copy of {}/{name}: move that object aside, or archive to another prefix)",
                        to.trim_end_matches('/')
                    ));
                }
                f
            })?;
        let upload = s3::upload_with(packed.path(), &url, &aws, sse, &expect);
        let at = ctx
            .unless_interrupted(upload, || {
                "interrupted during the upload to S3: the run's files were kept".into()
            })
            .await?
            .map_err(|e| Failure::backend("uploading the archive to S3", e))?;
        if remove {
            packed.remove_files(token).await.map_err(|e| match e {
                conductor_core::Error::Interrupted => ctx.interrupted(format!(
                    "interrupted: the archive is uploaded to {at}; the run's files were kept"
                )),
                e => ctx.failure(e),
            })?;
        }
        at
    } else {
        let to = std::path::Path::new(&to);
        let path = conductor_salt::archive::archive(layout, cpid, to, remove, token)
            .await
            .map_err(failure)?;
        path.display().to_string()
    };
    if g.json {
        output::print_json(&json!({ "cpid": cpid, "archive": location }));
    } else {
        outln!("{location}");
    }
    Ok(ctx.code(true, false))
}

/// Writes `conductor.1` and one page per subcommand, named as the pages'
/// SEE ALSO sections name them (`conductor-group-create.1`), into `dir`;
/// how many.
fn man_pages(dir: &std::path::Path) -> Result<usize, Failure> {
    fn write(cmd: clap::Command, dir: &std::path::Path) -> std::io::Result<usize> {
        let mut cmd = cmd;
        cmd.build();
        let name = cmd.get_name().to_string();
        let mut page = Vec::new();
        clap_mangen::Man::new(cmd.clone()).render(&mut page)?;
        std::fs::write(dir.join(format!("{name}.1")), page)?;
        let mut n = 1;
        for sub in cmd.get_subcommands() {
            let sub = sub.clone().name(format!("{name}-{}", sub.get_name()));
            n += write(sub, dir)?;
        }
        Ok(n)
    }
    let fail = |e: std::io::Error| {
        Failure::input(format!(
            "writing the man pages into {}: {e}; give --dir an existing, writable directory",
            dir.display()
        ))
    };
    std::fs::create_dir_all(dir).map_err(fail)?;
    write(args::command(), dir).map_err(fail)
}
