//! Command-line arguments.

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// The command line with every option readable from an environment
/// variable ([`crate::config`]): what is parsed, and what the man page,
/// completions and `--help` show.
pub fn command() -> clap::Command {
    use clap::CommandFactory;
    crate::config::with_env_vars(Cli::command())
}

/// Provision EC2 instances for Salt-managed groups, many runs at once, never
/// two runs with the same instance name, cluster id or system id.
#[derive(Debug, Parser)]
#[command(
    name = "conductor",
    version,
    after_help = "Examples:\n  conductor group plan group=devops system=small_test pillarenv=test region=us-east-1a --pillar-dir pillar/\n  conductor group create group=devops role=activemq count=2 pillarenv=test region=us-east-1a\n  conductor group destroy group=devops pillarenv=test region=us-east-1a cpid=16833830331552303186\n  conductor reservations list\n\nExit codes: 0 success, 1 provisioning or state failure, 2 bad input,\n3 reservation retries exhausted or a lease lost, 4 cloud or Salt\nunreachable, 130/143/129 interrupted by SIGINT/SIGTERM/SIGHUP."
)]
pub struct Cli {
    /// Global options.
    #[command(flatten)]
    pub global: Global,
    /// The command.
    #[command(subcommand)]
    pub command: Command,
}

/// Options every command takes.
#[derive(Debug, Args)]
pub struct Global {
    /// The config file: YAML, option names as keys (`runner_dir: /srv/runners`); flags and environment variables win over it [default: /etc/conductor/conductor.yaml when it exists].
    #[arg(long, global = true, value_name = "FILE", env = "CONDUCTOR_CONFIG")]
    pub config: Option<PathBuf>,
    /// Print one JSON document on stdout instead of the human summary.
    #[arg(long, global = true)]
    pub json: bool,
    /// More log output on stderr (-v info, -vv debug, -vvv trace).
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    /// Only errors on stderr.
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    pub quiet: bool,
    /// Where the pillar comes from [default: master; dir when --pillar-dir is given].
    ///
    /// master needs no minion: run conductor on the Salt master host (as a user
    /// that can run salt-run). The master compiles the pillar of the pillarenv
    /// as a runner does (Jinja, GPG, ext_pillar), for no particular minion
    /// (id `*`): the env's top file must assign the conductor pillar to '*'.
    /// Only that env's top file and pillar are read, never other envs'.
    #[arg(
        long,
        global = true,
        value_enum,
        env = "CONDUCTOR_PILLAR_SOURCE",
        value_name = "SOURCE"
    )]
    pub pillar_source: Option<PillarSourceArg>,
    /// Read pillar from YAML files: DIR/<pillarenv>/*.sls|*.yaml (or DIR/*), deep-merged in name order.
    ///
    /// Implies --pillar-source dir; giving it with --pillar-source master or
    /// salt-call is an error (exit 2).
    #[arg(long, global = true, env = "CONDUCTOR_PILLAR_DIR", value_name = "DIR")]
    pub pillar_dir: Option<PathBuf>,
    /// Salt config root: cloud.providers.d and cloud.profiles.d are written here.
    #[arg(
        long,
        global = true,
        env = "CONDUCTOR_CONFIG_DIR",
        default_value = "/etc/salt",
        value_name = "DIR"
    )]
    pub config_dir: PathBuf,
    /// Runner root: maps, reservations and logs are written here.
    #[arg(
        long,
        global = true,
        env = "CONDUCTOR_RUNNER_DIR",
        default_value = "/srv/runners",
        value_name = "DIR"
    )]
    pub runner_dir: PathBuf,
    /// AWS endpoint (moto, LocalStack); also read from AWS_ENDPOINT_URL.
    #[arg(long, global = true, value_name = "URL")]
    pub endpoint_url: Option<String>,
    /// Where reservations live: files under --runner-dir (one Salt master), or a DynamoDB table (several).
    #[arg(long, global = true, value_enum, default_value_t = ReserverKind::Fs, env = "CONDUCTOR_RESERVER")]
    pub reserver: ReserverKind,
    /// DynamoDB table for --reserver dynamodb.
    #[arg(
        long,
        global = true,
        default_value = "conductor-reservations",
        value_name = "TABLE",
        env = "CONDUCTOR_DYNAMODB_TABLE"
    )]
    pub dynamodb_table: String,
    /// Region of the --dynamodb-table: one table shared by every environment, region and account (default: AWS_REGION or the AWS profile's region).
    #[arg(
        long,
        global = true,
        value_name = "REGION",
        env = "CONDUCTOR_DYNAMODB_REGION"
    )]
    pub dynamodb_region: Option<String>,
    /// Create the DynamoDB table if it does not exist.
    #[arg(long, global = true)]
    pub create_table: bool,
    /// Which cloud: AWS EC2, or an empty in-memory cloud (to try plans without AWS).
    #[arg(long, global = true, value_enum, default_value_t = CloudKind::Aws)]
    pub cloud: CloudKind,
    /// Run no Salt command for the instances: no salt-cloud (create needs
    /// --provisioner ec2; the other commands use it), orchestration hooks,
    /// startup states, minion keys or grains cache. The pillar is still read
    /// through Salt (salt-run, or salt-call with --pillar-source salt-call)
    /// unless --pillar-dir gives its files.
    #[arg(long, global = true)]
    pub no_salt: bool,
    /// Do not read the Salt master's grains cache (`salt-run cache.grains`)
    /// when planning or creating: ids of instances without conductor tags
    /// then count only through their names (safe once every runner-built
    /// instance is adopted). `group adopt --apply` refuses it: it needs the grains.
    #[arg(long, global = true)]
    pub no_grains: bool,
    /// Directory of the Salt programs (salt, salt-run, salt-cloud, salt-call); default: PATH.
    #[arg(
        long,
        global = true,
        env = "CONDUCTOR_SALT_BIN_DIR",
        value_name = "DIR"
    )]
    pub salt_bin_dir: Option<PathBuf>,
    /// Config directory passed to salt, salt-run, salt-cloud and salt-call (-c).
    #[arg(long, global = true, value_name = "DIR")]
    pub salt_config_dir: Option<PathBuf>,
}

/// Where reservations live.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ReserverKind {
    /// Files under <runner-dir>/reserved_names and reserved_ids.
    Fs,
    /// A DynamoDB table shared by several Salt masters or CI runners.
    Dynamodb,
}

/// Where the pillar comes from (`--pillar-source`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum PillarSourceArg {
    /// The Salt master compiles it: `salt-run pillar.show_pillar pillarenv=<env>`.
    Master,
    /// This host's minion asks its master: `salt-call pillar.items pillarenv=<env>`.
    SaltCall,
    /// YAML files under --pillar-dir; Salt is not asked.
    Dir,
}

/// Which cloud backend.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum CloudKind {
    /// AWS EC2 (credentials from the default chain).
    Aws,
    /// An empty in-memory cloud.
    Fake,
}

/// How instances are created.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ProvisionerArg {
    /// salt-cloud -m <map> (Salt 3007 with the EC2 driver).
    SaltCloud,
    /// Native EC2 RunInstances with a Salt-bootstrap user-data.
    Ec2,
}

/// Top-level commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create, plan, destroy, update or show instances of a group.
    #[command(
        subcommand,
        after_help = "Example:\n  conductor group plan group=devops system=small_test pillarenv=test region=us-east-1a"
    )]
    Group(GroupCommand),
    /// Inspect or clean the reservations of names and ids.
    #[command(subcommand, after_help = "Example:\n  conductor reservations list")]
    Reservations(ReservationsCommand),
    /// List, show, archive or prune the files of past runs.
    #[command(
        subcommand,
        after_help = "Example:\n  conductor runs show 16833830331552303186"
    )]
    Runs(RunsCommand),
    /// Check this host's set-up: file roots, Salt, the autosign dir, EC2 and credentials (and an environment's account), the clock, the reserver.
    #[command(
        after_help = "Prints one line per check (ok, warn, FAIL, skip) and, under each warning or failure, what to fix.\nExit 0 unless a check failed; else the exit code of the first failure (2 bad set-up, 4 unreachable).\n\nExamples:\n  conductor doctor --region us-east-1\n  conductor doctor --env prod --region us-east-1 --reserver dynamodb --json"
    )]
    Doctor {
        /// Also load this environment's pillar and check its AWS account (`environments.<env>.aws`).
        #[arg(long, value_name = "ENV")]
        env: Option<conductor_core::Env>,
        /// The region to call EC2 in [default: AWS_REGION or the AWS profile's].
        #[arg(long, value_name = "REGION")]
        region: Option<conductor_core::Region>,
        /// The master's autosign_grains_dir.
        #[command(flatten)]
        autosign: AutosignDir,
        /// The release grace runs use, which the clock skew is measured against.
        #[arg(long, default_value = "120s", value_parser = parse_duration, value_name = "DURATION")]
        release_grace: Duration,
    },
    /// Print the settings in effect (flags, environment, config file, defaults) and where each comes from.
    #[command(
        after_help = "Every option is also an environment variable (shown in each command's --help) and a key of the\nconfig file (--config, CONDUCTOR_CONFIG, else /etc/conductor/conductor.yaml when it exists):\nthe long option without `--`, `runner_dir: /srv/runners`. Flag > environment > file > default.\n\nExamples:\n  conductor config\n  conductor config --config /etc/conductor/jenkins.yaml --json"
    )]
    Config,
    /// Print shell completions.
    #[command(
        after_help = "Example:\n  conductor completions bash > /etc/bash_completion.d/conductor"
    )]
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff), or write one page per command into a directory.
    #[command(
        after_help = "Examples:\n  conductor man > /usr/local/share/man/man1/conductor.1\n  conductor man --dir /usr/local/share/man/man1"
    )]
    Man {
        /// Write conductor.1 and a page per subcommand (conductor-group-create.1, ...) into DIR.
        #[arg(long, value_name = "DIR")]
        dir: Option<std::path::PathBuf>,
    },
}

/// `--autosign-grains-dir`, of `group create` and `doctor`.
#[derive(Debug, Args)]
pub struct AutosignDir {
    /// The master's autosign_grains_dir (ec2 provisioner): the run lists a
    /// one-time token there while its minions bootstrap, so the master
    /// accepts exactly their keys.
    #[arg(
        long,
        default_value = "/etc/salt/autosign_grains",
        env = "CONDUCTOR_AUTOSIGN_GRAINS_DIR",
        value_name = "DIR"
    )]
    pub autosign_grains_dir: PathBuf,
}

/// `conductor group ...`.
#[derive(Debug, Subcommand)]
pub enum GroupCommand {
    /// Reserve names and ids, write the cloud files, provision, apply startup states.
    #[command(
        after_help = "Words: group= system=|role= [count=] pillarenv= [saltenv=] region=<zone> [cpid=]\n\nExamples:\n  conductor group create group=devops system=small_test pillarenv=test region=us-east-1a\n  conductor group create group=devops role=activemq count=2 pillarenv=test region=us-east-1a --provisioner ec2"
    )]
    Create {
        /// key=value words as for `salt-run conduct.group create`.
        #[arg(required = true, value_name = "KEY=VALUE")]
        words: Vec<OsString>,
        /// Print the plan only; reserve and write nothing (same as `group plan`).
        #[arg(long)]
        dry_run: bool,
        /// How instances are created.
        #[arg(long, value_enum, default_value_t = ProvisionerArg::SaltCloud, env = "CONDUCTOR_PROVISIONER")]
        provisioner: ProvisionerArg,
        /// How long a released name stays reserved, as `120s`, `10m` or `0` (EC2 reads are eventually consistent).
        #[arg(long, default_value = "120s", value_parser = parse_duration, value_name = "DURATION")]
        release_grace: Duration,
        /// The master's autosign_grains_dir.
        #[command(flatten)]
        autosign: AutosignDir,
        /// How long a create waits for new minions to be accepted and answer
        /// (ec2 provisioner, or roles with startup states).
        #[arg(long, default_value = "15m", value_parser = parse_duration, value_name = "DURATION")]
        minion_timeout: Duration,
    },
    /// Show the names, ids, grains and files a create would use now.
    #[command(
        after_help = "Example:\n  conductor group plan group=devops system=small_test pillarenv=test region=us-east-1a --json"
    )]
    Plan {
        /// key=value words as for `create`.
        #[arg(required = true, value_name = "KEY=VALUE")]
        words: Vec<OsString>,
        /// The names and ids are the same for both provisioners; with ec2 (or
        /// --no-salt) the plan also checks each launch's user data size (EC2 allows 16 KiB).
        #[arg(long, value_enum, default_value_t = ProvisionerArg::SaltCloud, env = "CONDUCTOR_PROVISIONER")]
        provisioner: ProvisionerArg,
    },
    /// Terminate instances found by cpid, names, cluster id or system id.
    #[command(
        after_help = "Words: group= pillarenv= [region=<zone>] and one of cpid=, names=a,b, role= cluster_id=, system_id=\n\nOnly instances tagged conductor:group and conductor:env as requested are destroyed; others are named and left alone. On a terminal, destroy asks before it terminates anything (--yes skips that; without a terminal it does not ask).\n\nExamples:\n  conductor group destroy group=devops pillarenv=test region=us-east-1a cpid=16833830331552303186 --dry-run\n  conductor group destroy group=devops pillarenv=test region=us-east-1a cpid=16833830331552303186 --yes"
    )]
    Destroy {
        /// key=value words.
        #[arg(required = true, value_name = "KEY=VALUE")]
        words: Vec<OsString>,
        /// How the instances were created (both terminate through EC2 by instance id;
        /// salt-cloud also has its cache entries removed; with --no-salt, ec2).
        #[arg(long, value_enum, default_value_t = ProvisionerArg::SaltCloud, env = "CONDUCTOR_PROVISIONER")]
        provisioner: ProvisionerArg,
        /// List what would be terminated and whose minion keys deleted; change nothing.
        #[arg(long)]
        dry_run: bool,
        /// Do not ask for confirmation on a terminal.
        #[arg(long, short = 'y')]
        yes: bool,
    },
    /// Re-apply the startup states and update hooks of existing instances.
    #[command(
        after_help = "Words: group= pillarenv= [region=<zone>] and one of cpid=, names=a,b, role= cluster_id=, system_id=\n\nExamples:\n  conductor group update group=devops pillarenv=test region=us-east-1a system_id=1 --dry-run\n  conductor group update group=devops pillarenv=test region=us-east-1a role=nifi cluster_id=2"
    )]
    Update {
        /// key=value words.
        #[arg(required = true, value_name = "KEY=VALUE")]
        words: Vec<OsString>,
        /// Accepted by every group action so one `conductor_args` serves them
        /// all (salt-run); update re-applies states the same way for both.
        #[arg(long, value_enum, default_value_t = ProvisionerArg::SaltCloud, env = "CONDUCTOR_PROVISIONER")]
        provisioner: ProvisionerArg,
        /// List the instances that would be updated; change nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Give instances built by the Python runner (Name tag only, ids in grains) Conductor's tags.
    #[command(
        after_help = "Words: group= pillarenv= [saltenv=] [region=<zone>]\n\nLists every live instance of the group and env without conductor tags and the tags it gets: role and index from its Name through the pillar's basenames, the cluster id from .clid-N, cpid and ids from the master's cached grains. Refuses (exit 2, nothing written) when two runs' instances claim one id, or a name matches no basename. --apply needs the master's grains cache, which holds the ids: it refuses with --no-salt or --no-grains, and when the cache holds no grains of an instance's minion (accept its key, let it send its grains).\n\nExamples:\n  conductor group adopt group=devops pillarenv=test region=us-east-1a\n  conductor group adopt group=devops pillarenv=test region=us-east-1a --apply"
    )]
    Adopt {
        /// key=value words.
        #[arg(required = true, value_name = "KEY=VALUE")]
        words: Vec<OsString>,
        /// Write the tags (EC2 CreateTags); without it, only list them.
        #[arg(long)]
        apply: bool,
        /// Accepted by every group action so one `conductor_args` serves them
        /// all (salt-run); adopt reads EC2 and the master's grains the same
        /// way for both.
        #[arg(long, value_enum, default_value_t = ProvisionerArg::SaltCloud, env = "CONDUCTOR_PROVISIONER")]
        provisioner: ProvisionerArg,
    },
    /// Show the instances of a group: name, id, role, state, zone, type, private IP, launch time, cpid, cluster and system ids.
    #[command(
        after_help = "Words: group= pillarenv= [region=<zone>] [cpid= | names= | role= cluster_id= | system_id=]\n\nExamples:\n  conductor group status group=devops pillarenv=test region=us-east-1a\n  conductor group status group=devops pillarenv=test region=us-east-1a --ping"
    )]
    Status {
        /// key=value words.
        #[arg(required = true, value_name = "KEY=VALUE")]
        words: Vec<OsString>,
        /// Also ask each running instance's minion (`salt <names> test.ping`): the PING column, `answers` in JSON.
        #[arg(long)]
        ping: bool,
        /// Accepted by every group action so one `conductor_args` serves them
        /// all (salt-run); status reads EC2 the same way for both.
        #[arg(long, value_enum, default_value_t = ProvisionerArg::SaltCloud, env = "CONDUCTOR_PROVISIONER")]
        provisioner: ProvisionerArg,
    },
}

/// `conductor reservations ...`.
#[derive(Debug, Subcommand)]
pub enum ReservationsCommand {
    /// List every reserved name and id with its owner and expiry.
    #[command(
        after_help = "Examples:\n  conductor reservations list --runner-dir /srv/runners\n  conductor reservations list --env test --reserver dynamodb --json"
    )]
    List {
        /// Only this environment's keys (`<env>_...`): one read of its
        /// partition on a DynamoDB table, not a scan of every environment's.
        #[arg(long, value_name = "ENV")]
        env: Option<conductor_core::Env>,
    },
    /// Remove expired reservations and those of dead runs on this host.
    #[command(
        after_help = "A reservation of a run on another host (or in another container, or from before a reboot) is only known by its expiry: no prune removes it before its lease expires, with or without --older-than.\n\nExample:\n  conductor reservations prune --older-than 2h"
    )]
    Prune {
        /// Also remove reservations older than this that no live run vouches
        /// for: files not written by Conductor (the Python runner's) and keys
        /// of runs known dead on this host, even those that had started
        /// launching. Keys of runs on other hosts are kept until their lease
        /// expires.
        #[arg(long, value_parser = parse_duration, value_name = "DURATION")]
        older_than: Option<Duration>,
    },
}

/// `conductor runs ...`.
#[derive(Debug, Subcommand)]
pub enum RunsCommand {
    /// List runs found under --runner-dir.
    #[command(after_help = "Example:\n  conductor runs list --runner-dir /srv/runners --json")]
    List,
    /// Show the files of one run.
    #[command(after_help = "Example:\n  conductor runs show 16833830331552303186")]
    Show {
        /// The run's CPID.
        cpid: String,
    },
    /// Pack every file of one run into a .tar.gz (mode 0600).
    #[command(
        after_help = "Example:\n  conductor runs archive 16833830331552303186 --to /var/backups\n  conductor runs archive 16833830331552303186 --to s3://salt-runs/conductor --sse aws:kms --kms-key-id alias/conductor"
    )]
    Archive {
        /// The run's CPID.
        cpid: String,
        /// Directory for the tarball (created 0700), or s3://bucket/prefix to upload it (default: <runner-dir>/archives).
        #[arg(long, value_name = "DIR|S3-URL")]
        to: Option<String>,
        /// Remove the run's files once archived.
        #[arg(long)]
        remove: bool,
        /// Server-side encryption of an S3 upload.
        #[arg(long, value_enum, default_value_t = SseArg::Aes256)]
        sse: SseArg,
        /// KMS key (id, ARN or alias) for --sse aws:kms; default: the account's aws/s3 key.
        #[arg(long, value_name = "KEY")]
        kms_key_id: Option<String>,
    },
    /// Remove what runs older than DURATION left: the provider and profile
    /// files a crashed run left in <config-dir>/cloud.providers.d and
    /// cloud.profiles.d, and the runs' directories under <runner-dir>.
    #[command(
        after_help = "Runs still going (their CPID reserved) are never touched. Archive first what you want to keep.\n\nExample:\n  conductor runs prune --older-than 30d"
    )]
    Prune {
        /// Remove the files of runs that started longer ago than this.
        #[arg(long, required = true, value_parser = parse_duration, value_name = "DURATION")]
        older_than: Duration,
    },
}

/// Server-side encryption of an archive uploaded to S3.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum SseArg {
    /// SSE-S3 (AES256).
    #[value(name = "AES256")]
    Aes256,
    /// SSE-KMS.
    #[value(name = "aws:kms")]
    AwsKms,
}

/// The longest duration a flag takes: a year is past any run or lease.
const MAX_DURATION_SECS: u64 = 366 * 86_400;

/// Parses `90`, `90s`, `15m`, `2h`, `1d` (at most 366 days).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let (num, unit) = s
        .find(|c: char| !c.is_ascii_digit())
        .map_or((s, "s"), |i| (&s[..i], &s[i..]));
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a duration; use e.g. 90s, 15m, 2h"))?;
    let unit_secs = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(format!("{s:?}: unknown unit {unit:?}; use s, m, h or d")),
    };
    match n.checked_mul(unit_secs) {
        Some(secs) if secs <= MAX_DURATION_SECS => Ok(Duration::from_secs(secs)),
        _ => Err(format!("{s:?} is too long; give at most 366d")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_are_bounded() {
        assert_eq!(parse_duration("90").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("15m").unwrap(), Duration::from_secs(900));
        assert_eq!(
            parse_duration("366d").unwrap(),
            Duration::from_secs(366 * 86_400)
        );
        for bad in [
            "999999999999999999d",
            "99999999999999d",
            "367d",
            "18446744073709551615s",
        ] {
            let e = parse_duration(bad).unwrap_err();
            assert!(
                e.contains("too long") || e.contains("not a duration"),
                "{bad}: {e}"
            );
        }
        assert!(parse_duration("1w").unwrap_err().contains("unknown unit"));
    }
}
