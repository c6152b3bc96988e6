//! `SaltPillar`: pillar as Salt renders it (Jinja, GPG, ext_pillar), compiled
//! by the master (`salt-run pillar.show_pillar`) or through a minion
//! (`salt-call pillar.items`).

use std::path::PathBuf;
use std::time::Duration;

use async_trait::async_trait;
use conductor_core::{BackendErrorKind, Error, PillarError};
use conductor_core::{Env, Pillar, PillarSource};
use serde_json::Value;
use tracing::{info_span, Instrument};

use crate::process::Captured;
use crate::salt_cli::{self, SaltCli};

/// Longest a pillar read may take by default: salt-call waits for an
/// unreachable master without end, so the wait must be bounded.
pub const DEFAULT_PILLAR_TIMEOUT: Duration = Duration::from_secs(120);

/// Which Salt program compiles the pillar.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PillarVia {
    /// The master itself, as a runner sees it:
    /// `salt-run --out=json pillar.show_pillar pillarenv=<env>` (no minion needed).
    Master,
    /// The minion of this host, through its master: `salt-call --out=json pillar.items pillarenv=<env>`.
    Minion,
    /// Masterless: `salt-call --local --out=json pillar.items pillarenv=<env>` (local pillar_roots).
    Local,
}

impl PillarVia {
    /// The program and its arguments that print the pillar of `env` as JSON.
    fn command(self, env: &Env) -> (&'static str, Vec<String>) {
        let env = format!("pillarenv={env}");
        match self {
            PillarVia::Master => (
                "salt-run",
                vec!["--out=json".into(), "pillar.show_pillar".into(), env],
            ),
            PillarVia::Minion => (
                "salt-call",
                vec!["--out=json".into(), "pillar.items".into(), env],
            ),
            PillarVia::Local => (
                "salt-call",
                vec![
                    "--local".into(),
                    "--out=json".into(),
                    "pillar.items".into(),
                    env,
                ],
            ),
        }
    }
}

/// Asks Salt for the pillar of a pillarenv, compiled as [`PillarVia`] says.
#[derive(Clone, Debug)]
pub struct SaltPillar {
    cli: SaltCli,
    via: PillarVia,
}

impl SaltPillar {
    /// Pillar through `cli` (its `-c` config dir and programs), compiled `via`
    /// the master or a minion. The wait is the shorter of `cli`'s timeout and
    /// [`DEFAULT_PILLAR_TIMEOUT`].
    pub fn new(cli: SaltCli, via: PillarVia) -> Self {
        let t = cli.timeout_value().min(DEFAULT_PILLAR_TIMEOUT);
        Self {
            cli: cli.timeout(t),
            via,
        }
    }

    /// Longest the Salt command may run before it is killed.
    pub fn timeout(mut self, t: Duration) -> Self {
        self.cli = self.cli.timeout(t);
        self
    }

    /// Convenience: the Salt programs of `bin_dir` with config `config_dir`.
    pub fn with_config(
        bin_dir: Option<PathBuf>,
        config_dir: Option<PathBuf>,
        via: PillarVia,
    ) -> Self {
        let mut cli = SaltCli::new();
        if let Some(b) = bin_dir {
            cli = cli.bin_dir(b);
        }
        if let Some(c) = config_dir {
            cli = cli.config_dir(c);
        }
        Self::new(cli, via)
    }
}

#[async_trait]
impl PillarSource for SaltPillar {
    async fn load(&self, env: &Env) -> Result<Pillar, Error> {
        let (program, args) = self.via.command(env);
        let during = format!("reading pillar through {program}");
        let span = match self.via {
            PillarVia::Master => info_span!("salt.show_pillar", %env),
            PillarVia::Minion | PillarVia::Local => {
                info_span!("salt.pillar_items", %env, local = self.via == PillarVia::Local)
            }
        };
        let c = self
            .cli
            .run(program, &args)
            .instrument(span)
            .await
            .map_err(|mut e| {
                if salt_cli::timed_out(&e) && self.via == PillarVia::Minion {
                    // salt-call waits without end for a master that does not
                    // answer: here a timeout means the master is unreachable.
                    e.kind = BackendErrorKind::Unreachable;
                    e.message.push_str(
                        "; salt-call waits as long as its master does not answer: check the master of its minion config, use --pillar-source master on the master host, or give --pillar-dir",
                    );
                }
                Error::backend(&during, e)
            })?;
        let text = String::from_utf8_lossy(&c.stdout);
        let doc: Value = serde_json::from_str(text.trim())
            .map_err(|e| Error::backend(&during, self.cli.no_json(program, &args, &c, &e)))?;
        let shown = format!("{program} {}", args.join(" "));
        let pillar = read_pillar(self.via, env, doc, &c, &shown)?;
        let value: serde_yaml::Value = serde_json::from_value(pillar)
            .map_err(|e| PillarError::new("<salt>", e.to_string()))?;
        Ok(Pillar::from_pillar(value)?)
    }
}

/// The pillar in Salt's JSON document `doc` (printed by `shown` for `env`),
/// checked: a pillar object with a `conductor` key and no render errors.
fn read_pillar(
    via: PillarVia,
    env: &Env,
    doc: Value,
    c: &Captured,
    shown: &str,
) -> Result<Value, PillarError> {
    // salt-call answers `{"local": <pillar>}`; salt-run the pillar itself
    // (whose own `local` key, if any, must stay).
    let pillar = match (via, doc) {
        (PillarVia::Minion | PillarVia::Local, Value::Object(mut m)) if m.contains_key("local") => {
            m.remove("local").unwrap_or_default()
        }
        (_, doc) => doc,
    };
    if !pillar.is_object() {
        // A list of error strings when Salt could not compile pillar; a
        // string when the function is unknown to this Salt (exit 0 too).
        let code = c
            .code
            .map_or_else(|| "by a signal".to_string(), |c| c.to_string());
        return Err(PillarError::new(
            "<salt>",
            format!("{shown} returned no pillar for pillarenv {env} (exit {code}): {pillar}"),
        ));
    }
    // A render error still exits 0: its only sign is `_errors`.
    if let Some(errors) = pillar.get("_errors") {
        let mut messages: Vec<String> = match errors {
            Value::Array(a) => a
                .iter()
                .map(|e| e.as_str().map_or_else(|| e.to_string(), str::to_string))
                .collect(),
            other => vec![other.to_string()],
        };
        messages.extend(render_details(&String::from_utf8_lossy(&c.stderr)));
        let whose = roots(via);
        return Err(PillarError::new(
            "<salt>",
            format!(
                "Salt could not render pillar for pillarenv {env} ({shown}): {}; fix the pillar files of pillarenv {env} in {whose}",
                messages.join(" | ")
            ),
        ));
    }
    if pillar.get("conductor").is_none() {
        let target = match via {
            PillarVia::Master => {
                " to every minion id ('*': the master compiles it for no particular minion)"
            }
            PillarVia::Minion | PillarVia::Local => " to this minion",
        };
        let roots = roots(via);
        let keys = pillar.as_object().map_or(0, |m| m.len());
        return Err(PillarError::new(
            "conductor",
            format!("Salt's pillar for pillarenv {env} has no `conductor` key ({shown} printed {keys} keys); check that {env} is in {roots} and that its top file assigns the conductor pillar{target}"),
        ));
    }
    Ok(pillar)
}

/// Where the pillar files of a pillarenv are, as `via` reads them.
fn roots(via: PillarVia) -> &'static str {
    match via {
        PillarVia::Master => "the master's pillar_roots",
        PillarVia::Minion => "the pillar_roots of the minion's master",
        PillarVia::Local => "the local pillar_roots",
    }
}

/// Salt's render error messages on stderr: `_errors` says only "Rendering
/// SLS 'x' failed. Please see master log for details." while the process that
/// rendered (salt-run on the master, salt-call --local) logs the cause on
/// the line after "Rendering SLS 'x' failed, render error:".
fn render_details(stderr: &str) -> Vec<String> {
    const MARK: &str = "failed, render error:";
    let lines: Vec<&str> = stderr.lines().collect();
    let mut out: Vec<String> = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let Some(at) = line.find(MARK) else {
            continue;
        };
        let head = &line[..at + MARK.len()];
        // Without the log level: `[CRITICAL] Rendering SLS ...`.
        let head = match head.trim_start().strip_prefix('[') {
            Some(rest) => rest.split_once(']').map_or(rest, |(_, h)| h).trim(),
            None => head.trim(),
        };
        let cause = lines
            .get(i + 1)
            .map(|l| l.trim())
            .filter(|l| !l.is_empty())
            .unwrap_or("");
        let detail = format!("{head} {cause}").trim().to_string();
        if !out.contains(&detail) {
            out.push(detail);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn captured(stderr: &str) -> Captured {
        Captured {
            code: Some(0),
            stdout: Vec::new(),
            stderr: stderr.as_bytes().to_vec(),
            truncated: false,
        }
    }

    fn env(name: &str) -> Env {
        Env::new(name).unwrap()
    }

    const STDERR: &str = "[ERROR   ] Rendering exception occurred\nTraceback...\n[CRITICAL] Rendering SLS 'conductor' failed, render error:\nJinja syntax error: unexpected end of template; line 1\n\n---\nconductor: {{ broken    <======================\n---\n[CRITICAL] Pillar render error: Rendering SLS 'conductor' failed. Please see master log for details.\n";

    #[test]
    fn salt_run_prints_the_pillar_itself() {
        let doc = json!({"conductor": {"a": 1}, "local": {"kept": true}});
        let p = read_pillar(
            PillarVia::Master,
            &env("prod"),
            doc.clone(),
            &captured(""),
            "salt-run",
        )
        .unwrap();
        assert_eq!(p, doc, "a pillar key named `local` stays");
        let p = read_pillar(
            PillarVia::Minion,
            &env("prod"),
            json!({"local": {"conductor": {"a": 1}}}),
            &captured(""),
            "salt-call",
        )
        .unwrap();
        assert_eq!(p, json!({"conductor": {"a": 1}}));
    }

    #[test]
    fn a_render_error_names_the_env_and_salts_cause() {
        // What salt-run pillar.show_pillar printed (exit 0) on Salt 3007.16.
        let doc = json!({"_errors": ["Rendering SLS 'conductor' failed. Please see master log for details."]});
        let e = read_pillar(
            PillarVia::Master,
            &env("prod"),
            doc,
            &captured(STDERR),
            "salt-run pillar.show_pillar pillarenv=prod",
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("could not render pillar for pillarenv prod"),
            "{e}"
        );
        assert!(e.contains("Please see master log"), "{e}");
        assert!(
            e.contains("Rendering SLS 'conductor' failed, render error: Jinja syntax error: unexpected end of template; line 1"),
            "{e}"
        );
        assert!(!e.contains("CRITICAL"), "{e}");
    }

    #[test]
    fn an_unknown_function_or_an_empty_env_is_no_pillar() {
        // salt-run prints a JSON string and exits 0 for an unknown function.
        let doc = json!("'pillar.show_pillar' is not available.");
        let e = read_pillar(
            PillarVia::Master,
            &env("test"),
            doc,
            &captured(""),
            "salt-run pillar.show_pillar pillarenv=test",
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("returned no pillar for pillarenv test (exit 0)"),
            "{e}"
        );
        assert!(e.contains("is not available"), "{e}");
        // A pillarenv that is not in pillar_roots compiles to `{}`.
        let e = read_pillar(
            PillarVia::Master,
            &env("nope"),
            json!({}),
            &captured(""),
            "salt-run",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("pillarenv nope has no `conductor` key"), "{e}");
        assert!(e.contains("pillar_roots"), "{e}");
    }
}
