//! `conductor doctor`: checks this host's set-up as a run would use it —
//! the file roots, Salt, the master's autosign dir, EC2 with these
//! credentials (and an environment's account), the clock against EC2's,
//! the reserver — and says what to fix.

use std::path::Path;
use std::time::Duration;

use conductor_aws::ec2::{Ec2Accounts, Ec2Backend};
use conductor_core::{
    backend_class, now_ms, BackendError, Clock, ClockSkew, CloudBackend, Env, Region, SkewVerdict,
};
use serde::Serialize;
use serde_json::json;

use crate::args::{CloudKind, Global, ReserverKind};
use crate::commands::Ctx;
use crate::exit::{self, Failure};
use crate::{output, wiring};

/// How a check came out.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Works as a run needs it.
    Ok,
    /// Works, but something is off (the detail says what).
    Warn,
    /// A run would fail here.
    Fail,
    /// Not checked (not used with these flags).
    Skipped,
}

/// One line of the doctor's report.
#[derive(Debug, Serialize)]
pub struct Check {
    /// What was checked (`runner dir`, `salt`, `ec2`, `clock`, ...).
    pub check: String,
    /// How it came out.
    pub status: Status,
    /// What was found.
    pub detail: String,
    /// What to do about it, for warnings and failures.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
    /// The exit code a failure gives (the class of the error a run would meet).
    #[serde(skip)]
    code: u8,
}

impl Check {
    fn ok(check: &str, detail: impl Into<String>) -> Self {
        Self::new(check, Status::Ok, detail, None, exit::OK)
    }

    fn skipped(check: &str, detail: impl Into<String>) -> Self {
        Self::new(check, Status::Skipped, detail, None, exit::OK)
    }

    fn warn(check: &str, detail: impl Into<String>, fix: impl Into<String>) -> Self {
        Self::new(check, Status::Warn, detail, Some(fix.into()), exit::OK)
    }

    fn fail(check: &str, code: u8, detail: impl Into<String>, fix: impl Into<String>) -> Self {
        Self::new(check, Status::Fail, detail, Some(fix.into()), code)
    }

    /// A failure from a backend error: its exit code follows the error's class.
    fn backend(check: &str, e: &BackendError, fix: impl Into<String>) -> Self {
        let code = exit::code(backend_class(e.kind));
        Self::fail(check, code, e.to_string(), fix)
    }

    fn new(
        check: &str,
        status: Status,
        detail: impl Into<String>,
        fix: Option<String>,
        code: u8,
    ) -> Self {
        Self {
            check: check.into(),
            status,
            detail: detail.into(),
            fix,
            code,
        }
    }
}

/// What `doctor` checks beyond the global flags.
#[derive(Debug)]
pub struct Scope<'a> {
    /// The environment whose pillar (and AWS account) to check.
    pub env: Option<&'a Env>,
    /// The region to call EC2 in (else the SDK's default region).
    pub region: Option<&'a Region>,
    /// The master's autosign_grains_dir.
    pub autosign_grains_dir: &'a Path,
    /// The release grace the clock is measured against.
    pub release_grace: Duration,
}

/// Runs every check, prints the report; exit 0 unless a check failed, else
/// the code of the first failure. A signal stops it before the next check
/// (a check under way is dropped, its Salt command killed): no report, exit
/// 128 + the signal.
pub async fn run(ctx: &Ctx<'_>, scope: &Scope<'_>) -> Result<u8, Failure> {
    let g = ctx.g;
    // Each check runs unless a signal came (the cancellation is polled first).
    let stopped = |done: usize| {
        move || format!("interrupted: doctor stopped after {done} check(s); no report")
    };
    let mut checks = vec![
        writable_dir("config dir", &g.config_dir, "--config-dir"),
        writable_dir("runner dir", &g.runner_dir, "--runner-dir"),
    ];
    checks.extend(
        ctx.unless_interrupted(salt(g), stopped(checks.len()))
            .await?,
    );
    let autosign = async { autosign(g, scope.autosign_grains_dir) };
    checks.push(
        ctx.unless_interrupted(autosign, stopped(checks.len()))
            .await?,
    );
    checks.extend(
        ctx.unless_interrupted(aws(g, scope), stopped(checks.len()))
            .await?,
    );
    checks.push(
        ctx.unless_interrupted(reserver(g), stopped(checks.len()))
            .await?,
    );
    let code = checks
        .iter()
        .find(|c| c.status == Status::Fail)
        .map_or(exit::OK, |c| c.code);
    if g.json {
        output::print_json(&json!({
            "checks": checks,
            "result": exit::class_of(code),
            "exit_code": code,
        }));
    } else {
        out!("{}", text(&checks));
    }
    Ok(code)
}

/// The report as text: one line per check, the fix indented below it.
fn text(checks: &[Check]) -> String {
    let mut out = String::new();
    for c in checks {
        let status = match c.status {
            Status::Ok => "ok",
            Status::Warn => "warn",
            Status::Fail => "FAIL",
            Status::Skipped => "skip",
        };
        out.push_str(&format!("{status:<5} {:<12} {}\n", c.check, c.detail));
        if let Some(fix) = &c.fix {
            out.push_str(&format!("{:<18} fix: {fix}\n", ""));
        }
    }
    out
}

/// Creates (and removes) a temporary file in `dir`: can this user write there?
fn try_write(dir: &Path) -> std::io::Result<()> {
    tempfile::Builder::new()
        .prefix(".conductor-doctor-")
        .tempfile_in(dir)
        .map(drop)
}

/// This user can create (and remove) a file in `dir`, or, while `dir` does
/// not exist, in the nearest directory above it (runs create the rest).
fn writable_dir(check: &str, dir: &Path, flag: &str) -> Check {
    let shown = dir.display();
    let Some(existing) = dir.ancestors().find(|d| d.exists()) else {
        return Check::fail(
            check,
            exit::BAD_INPUT,
            format!("{shown}: no part of it exists"),
            format!("point {flag} at a directory"),
        );
    };
    if !existing.is_dir() {
        return Check::fail(
            check,
            exit::BAD_INPUT,
            format!("{} is not a directory", existing.display()),
            format!("point {flag} at a directory"),
        );
    }
    let detail = if existing == dir {
        format!("{shown} is writable")
    } else {
        format!(
            "{shown} will be created (in {}, writable)",
            existing.display()
        )
    };
    match try_write(existing) {
        Ok(_) => Check::ok(check, detail),
        Err(e) => Check::fail(
            check,
            exit::BAD_INPUT,
            format!("{} is not writable: {e}", existing.display()),
            format!("run as a user that can write {shown} (the Salt master's user), or point {flag} elsewhere"),
        ),
    }
}

/// `salt-run` and `salt-cloud` answer, with their versions.
async fn salt(g: &Global) -> Vec<Check> {
    if g.no_salt {
        return vec![Check::skipped(
            "salt",
            "--no-salt: hooks, startup states and salt-cloud are not used",
        )];
    }
    let cli = wiring::salt_cli(g);
    let version = |program: &'static str| {
        let cli = cli.clone();
        async move {
            let out = cli.run(program, &["--version".to_string()]).await?;
            let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
            Ok::<_, BackendError>(text)
        }
    };
    let bin_fix = "Salt 3007 is the release Conductor is tested with (pip install salt==3007.16)";
    let run = match version("salt-run").await {
        Ok(v) => Check::ok("salt-run", v),
        Err(e) => Check::backend("salt-run", &e, bin_fix),
    };
    let cloud = match version("salt-cloud").await {
        Ok(v) if salt_major(&v).is_some_and(|m| m >= 3008) => Check::warn(
            "salt-cloud",
            format!("{v}: Salt 3008 has no EC2 cloud driver"),
            "use Salt 3007 for the salt-cloud provisioner, or --provisioner ec2",
        ),
        Ok(v) => Check::ok("salt-cloud", v),
        Err(e) => Check::warn(
            "salt-cloud",
            e.to_string(),
            "only --provisioner ec2 works without salt-cloud; install Salt 3007's salt-cloud for the default provisioner",
        ),
    };
    vec![run, cloud]
}

/// The major release of a `salt-run 3007.16 (Chlorine)` line.
fn salt_major(version: &str) -> Option<u32> {
    version
        .split_whitespace()
        .nth(1)?
        .split('.')
        .next()?
        .parse()
        .ok()
}

/// The master's autosign_grains_dir (the native provisioner lists its
/// one-time tokens there).
fn autosign(g: &Global, dir: &Path) -> Check {
    const CHECK: &str = "autosign dir";
    if g.no_salt {
        return Check::skipped(CHECK, "--no-salt: minion keys are not checked");
    }
    let shown = dir.display();
    match try_write(dir) {
        Ok(_) => Check::ok(CHECK, format!("{shown} is writable")),
        Err(e) => Check::warn(
            CHECK,
            format!("{shown}: {e}; the ec2 provisioner's minions will not be accepted"),
            format!("mkdir -p {shown}, set `autosign_grains_dir: {shown}` in the master config, or give --autosign-grains-dir"),
        ),
    }
}

/// EC2 answers in the region (and in the environment's account), the
/// environment's pillar loads, and this host's clock agrees with EC2's.
async fn aws(g: &Global, scope: &Scope<'_>) -> Vec<Check> {
    // The pillar is checked whatever the cloud: it does not need EC2.
    let (pillar_check, account) = match scope.env {
        Some(env) => {
            let (check, account) = pillar(g, env).await;
            (Some(check), account)
        }
        None => (None, None),
    };
    if g.cloud == CloudKind::Fake {
        return [Check::skipped("ec2", "--cloud fake")]
            .into_iter()
            .chain(pillar_check)
            .collect();
    }
    // Two attempts: an answer, or a verdict in seconds rather than after
    // the runs' patient retries.
    let builder = wiring::ec2_builder(g, scope.region).max_attempts(2);
    let ec2 = builder.clone().build().await;
    let Some(region) = scope
        .region
        .cloned()
        .or_else(|| ec2.default_region().and_then(|r| Region::new(r).ok()))
    else {
        let no_region = Check::fail(
            "ec2",
            exit::BAD_INPUT,
            "no region: neither --region nor AWS_REGION nor the AWS profile names one",
            "give --region (runs take theirs from region=<zone>)",
        );
        return [no_region].into_iter().chain(pillar_check).collect();
    };
    let mut checks = vec![probe("ec2", &ec2, &region, "the default credentials").await];
    let mut clock_of = ec2.clock();
    checks.extend(pillar_check);
    if let (Some(env), Some(account)) = (scope.env, account) {
        let accounts = Ec2Accounts::new(builder);
        let in_account = accounts.backend(&account).await;
        let whose = format!("account {} of env {env}", account.label());
        checks.push(probe("account", &in_account, &region, &whose).await);
        clock_of = in_account.clock().or(clock_of);
    }
    checks.push(match clock_of {
        Some(cloud) => clock(
            &ClockSkew::measure(&Clock::system(), &cloud),
            scope.release_grace,
        ),
        None => Check::skipped("clock", "EC2 did not answer: nothing to compare with"),
    });
    checks
}

/// One EC2 call in `region` with `ec2`'s credentials (`whose`).
async fn probe(check: &str, ec2: &Ec2Backend, region: &Region, whose: &str) -> Check {
    match ec2.probe(region).await {
        Ok(zones) => Check::ok(
            check,
            format!("EC2 {region} answers with {whose} ({} zones)", zones.len()),
        ),
        Err(e) => Check::backend(
            check,
            &e,
            format!("check {whose} (AWS_PROFILE, AWS_ACCESS_KEY_ID, the instance role; for an account, its role's trust policy and external_id) and that {region} is reachable (--endpoint-url, proxies)"),
        ),
    }
}

/// The pillar of `env` loads; its AWS account, if it names one.
async fn pillar(g: &Global, env: &Env) -> (Check, Option<conductor_core::AccountSpec>) {
    let loaded = match wiring::pillar(g) {
        Ok(source) => source.load(env).await.map_err(Failure::from),
        Err(f) => Err(f),
    };
    match loaded {
        Ok(p) => {
            let account = p.environments.get(env).and_then(|e| e.aws.clone());
            let detail = format!(
                "env {env}: {} group(s){}",
                p.groups.len(),
                account
                    .as_ref()
                    .map(|a| format!(", AWS account {}", a.label()))
                    .unwrap_or_default()
            );
            (Check::ok("pillar", detail), account)
        }
        Err(f) => (
            Check::fail(
                "pillar",
                f.code,
                f.message,
                "fix the pillar key it names (docs/pillar.md), or --pillar-dir / --pillar-source",
            ),
            None,
        ),
    }
}

/// The verdict of the clock skew against the release grace.
fn clock(skew: &ClockSkew, grace: Duration) -> Check {
    let detail = skew.to_string();
    match skew.verdict(grace) {
        SkewVerdict::Fine => Check::ok("clock", detail),
        SkewVerdict::Warn => Check::warn(
            "clock",
            detail,
            format!("keep this host under NTP (chrony, systemd-timesyncd): runs warn past a quarter of the release grace ({} s)", grace.as_secs()),
        ),
        SkewVerdict::Refuse => Check::fail(
            "clock",
            exit::BAD_INPUT,
            detail,
            format!("set this host's clock (NTP): runs refuse to reserve past the release grace ({} s)", grace.as_secs()),
        ),
    }
}

/// The reserver opens and reads.
async fn reserver(g: &Global) -> Check {
    let what = match g.reserver {
        ReserverKind::Fs => format!("files under {}", g.runner_dir.display()),
        ReserverKind::Dynamodb => format!("DynamoDB table {}", g.dynamodb_table),
    };
    let opened = match wiring::reserver(g).await {
        Ok(r) => r,
        Err(f) => {
            return Check::fail(
                "reserver",
                f.code,
                f.message,
                "create the table (--create-table once, or docs/reservations.md), or fix --dynamodb-table / --dynamodb-region",
            )
        }
    };
    let probe_env = Env::new("doctor").expect("a valid env name");
    match opened.held(now_ms(), Some(&probe_env), None).await {
        Ok(_) => Check::ok("reserver", format!("{what}: readable")),
        Err(e) => Check::fail(
            "reserver",
            exit::code(conductor_core::Error::backend("reading reservations", e).class()),
            format!("{what}: cannot be read"),
            "check the permissions on the table or directory",
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn salt_versions_are_read() {
        assert_eq!(salt_major("salt-run 3007.16 (Chlorine)"), Some(3007));
        assert_eq!(salt_major("salt-cloud 3008.5 (Argon)"), Some(3008));
        assert_eq!(salt_major("garbage"), None);
    }

    #[test]
    fn the_clock_check_follows_the_runs_thresholds() {
        let grace = Duration::from_secs(120);
        let at = |skew_s: i64| {
            let cloud_ms: u64 = 1_800_000_000_000;
            let local_ms = cloud_ms.saturating_add_signed(skew_s * 1000);
            clock(&ClockSkew::between(local_ms, cloud_ms), grace).status
        };
        assert_eq!(at(0), Status::Ok);
        assert_eq!(at(40), Status::Warn);
        assert_eq!(at(-200), Status::Fail);
    }
}
