//! What a run shows while it works, on stderr: on a terminal one line per
//! phase (`launching 4/6`, `minions answered 4/6 (waiting: mq05, mq06)`)
//! with the phase's elapsed time, redrawn as it changes; otherwise plain
//! timestamped lines, one per change; nothing with `-q`.

use std::io::{IsTerminal, Write};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use conductor_core::{Cpid, Observer, Progress, Step};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::args::Global;

/// Slow minions named in a progress line; the rest are counted.
const NAMED: usize = 3;

/// How progress is shown.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    /// A line per phase, redrawn in place (stderr is a terminal).
    Terminal,
    /// Plain timestamped lines (stderr is a pipe or file: Jenkins, Rundeck).
    Lines,
    /// Nothing (`-q`).
    Off,
}

/// The progress display of one command; an [`Observer`] of its run.
#[derive(Debug)]
pub struct Display {
    mode: Mode,
    phase: Mutex<Option<Phase>>,
}

/// The phase shown now.
#[derive(Debug)]
struct Phase {
    /// Which phase (a `Progress` variant's name, or `run`).
    kind: &'static str,
    /// Its last line.
    text: String,
    started: Instant,
    bar: Option<ProgressBar>,
}

/// The terminal's lines: a finished phase's stays above the next.
static LINES: OnceLock<MultiProgress> = OnceLock::new();

/// Writes `line` and a newline to stderr in one write: `eprintln!` makes
/// one per piece, each waking whatever reads the pipe.
fn say(line: std::fmt::Arguments) {
    let _ = std::io::stderr().write_all(format!("{line}\n").as_bytes());
}

fn lines() -> &'static MultiProgress {
    LINES.get_or_init(|| MultiProgress::with_draw_target(ProgressDrawTarget::stderr()))
}

impl Display {
    /// The display `g` asks for: nothing with `-q`, redrawn lines when
    /// stderr is a terminal, timestamped lines otherwise.
    pub fn new(g: &Global) -> Arc<Self> {
        let mode = if g.quiet {
            Mode::Off
        } else if std::io::stderr().is_terminal() {
            Mode::Terminal
        } else {
            Mode::Lines
        };
        Arc::new(Self {
            mode,
            phase: Mutex::new(None),
        })
    }

    /// Shows `text` as a line of its own (`creating for group devops ...`).
    pub fn note(&self, text: &str) {
        self.finish();
        match self.mode {
            Mode::Terminal => say(format_args!("{text}")),
            Mode::Lines => say(format_args!("{} {text}", stamp())),
            Mode::Off => {}
        }
    }

    /// Ends the phase shown, leaving its last line; call before printing
    /// the command's result.
    pub fn finish(&self) {
        let mut phase = self.phase.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(p) = phase.take() {
            if let Some(bar) = p.bar {
                bar.finish();
            }
        }
    }

    /// Shows `text` for phase `kind`: a new line when the phase changed,
    /// else the phase's line updated (a new timestamped line when not on a
    /// terminal and the text changed).
    fn show(&self, kind: &'static str, text: String) {
        if self.mode == Mode::Off {
            return;
        }
        let mut phase = self.phase.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(p) = phase.as_mut().filter(|p| p.kind == kind) {
            if p.text == text {
                return;
            }
            match &p.bar {
                Some(bar) => bar.set_message(text.clone()),
                None => say(format_args!(
                    "{} {text} ({})",
                    stamp(),
                    seconds(p.started.elapsed())
                )),
            }
            p.text = text;
            return;
        }
        if let Some(bar) = phase.take().and_then(|p| p.bar) {
            bar.finish();
        }
        let bar = (self.mode == Mode::Terminal).then(|| {
            let bar = lines().add(ProgressBar::new_spinner());
            // The last string is shown once the phase ended: a blank, as
            // an ended phase may have fallen short (`minions answered 4/6`).
            let style = ProgressStyle::with_template("{spinner} {msg} ({elapsed})")
                .expect("the template is valid")
                .tick_strings(&["-", "\\", "|", "/", " "]);
            bar.set_style(style);
            bar.set_message(text.clone());
            bar.enable_steady_tick(Duration::from_millis(120));
            bar
        });
        if bar.is_none() {
            say(format_args!("{} {text}", stamp()));
        }
        *phase = Some(Phase {
            kind,
            text,
            started: Instant::now(),
            bar,
        });
    }
}

impl Observer for Display {
    fn step(&self, cpid: Cpid, step: Step) {
        // Every action's run starts so (create, update, destroy).
        if step == Step::CpidClaimed {
            self.show("run", format!("run {cpid} started"));
        }
    }

    fn progress(&self, _cpid: Cpid, progress: &Progress) {
        let (kind, text) = match progress {
            Progress::Reserved {
                instances,
                attempts,
            } => (
                "reserved",
                format!(
                    "reserved {instances} name{} ({attempts} attempt{})",
                    plural(*instances),
                    plural(*attempts as usize)
                ),
            ),
            Progress::Hook { which, sls } => ("hook", format!("{which} hook {sls}")),
            Progress::Launching { done, total } => {
                ("launching", format!("launching {done}/{total}"))
            }
            Progress::Visible { seen, total } => ("visible", format!("visible {seen}/{total}")),
            Progress::Minions {
                answered,
                total,
                waiting,
            } => ("minions", minions_text(*answered, *total, waiting)),
            Progress::States { done, total } => ("states", format!("states {done}/{total}")),
            _ => return,
        };
        self.show(kind, text);
    }
}

/// `minions answered 4/6 (waiting: a, b, c and 2 more)`.
fn minions_text(answered: usize, total: usize, waiting: &[String]) -> String {
    let mut text = format!("minions answered {answered}/{total}");
    if !waiting.is_empty() {
        let named: Vec<&str> = waiting.iter().take(NAMED).map(String::as_str).collect();
        text.push_str(&format!(" (waiting: {}", named.join(", ")));
        if waiting.len() > NAMED {
            text.push_str(&format!(" and {} more", waiting.len() - NAMED));
        }
        text.push(')');
    }
    text
}

fn plural(n: usize) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

/// `2.5s`.
fn seconds(d: Duration) -> String {
    format!("{:.1}s", d.as_secs_f64())
}

/// The local time now, ISO 8601 with its offset.
fn stamp() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    crate::runs::local_iso(now.as_secs())
}

/// Where `tracing` writes stderr lines: above the progress lines being
/// drawn, so a warning never lands inside one.
#[derive(Clone, Copy, Debug, Default)]
pub struct Stderr;

impl Write for Stderr {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match LINES.get() {
            Some(lines) => lines.suspend(|| std::io::stderr().write_all(buf))?,
            None => std::io::stderr().write_all(buf)?,
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Stderr {
    type Writer = Stderr;
    fn make_writer(&'a self) -> Self::Writer {
        *self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slow_minions_are_named_up_to_three() {
        let names: Vec<String> = (1..=5).map(|i| format!("mq0{i}")).collect();
        assert_eq!(
            minions_text(1, 6, &names),
            "minions answered 1/6 (waiting: mq01, mq02, mq03 and 2 more)"
        );
        assert_eq!(minions_text(6, 6, &[]), "minions answered 6/6");
        assert_eq!(
            minions_text(4, 6, &names[..2]),
            "minions answered 4/6 (waiting: mq01, mq02)"
        );
    }
}
