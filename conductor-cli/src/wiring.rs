//! Builds the backends from the command-line options.

use std::sync::Arc;

use clap::ValueEnum;
use conductor_aws::ec2::{Ec2Accounts, Ec2Backend, Ec2BackendBuilder};
use conductor_core::{
    CancellationToken, CloudAccounts, CloudBackend, Conductor, FsReserver, Layout, MemAccounts,
    MemCloud, Observer, Options, PillarSource, Provisioner, Region, Reserver, RetryCloud,
    SaltExecutor,
};
use conductor_salt::{FilePillar, PillarVia, SaltPillar};

use crate::args::{CloudKind, Global, PillarSourceArg, ProvisionerArg, ReserverKind};
use crate::exit::Failure;

/// The file layout from `--config-dir` and `--runner-dir`.
pub fn layout(g: &Global) -> Layout {
    Layout::new(&g.config_dir, &g.runner_dir)
}

/// The reserver chosen by `--reserver`.
pub async fn reserver(g: &Global) -> Result<Arc<dyn Reserver>, Failure> {
    match g.reserver {
        ReserverKind::Fs => Ok(Arc::new(FsReserver::new(&layout(g)))),
        ReserverKind::Dynamodb => {
            let mut b = conductor_aws::dynamo::DynamoReserver::builder(&g.dynamodb_table)
                .create_table_if_missing(g.create_table);
            if let Some(url) = &g.endpoint_url {
                b = b.endpoint_url(url);
            }
            if let Some(region) = &g.dynamodb_region {
                b = b.region(region);
            }
            let table = b
                .build()
                .await
                .map_err(|e| Failure::backend("opening the DynamoDB reservation table", e))?;
            Ok(Arc::new(table))
        }
    }
}

/// The cloud chosen by `--cloud`, wrapped in [`RetryCloud`]: calls refused
/// for rate limits or unanswered are retried with jittered backoff (on top of
/// the SDK's own retries of each request). `region`, the request's
/// (`region=`), is the SDK's default region: known, it is not looked for
/// (the instance metadata service is not asked).
pub async fn cloud(g: &Global, region: Option<&Region>) -> Result<Arc<dyn CloudBackend>, Failure> {
    match g.cloud {
        CloudKind::Fake => Ok(Arc::new(RetryCloud::new(MemCloud::new()))),
        CloudKind::Aws => Ok(Arc::new(RetryCloud::new(
            ec2_builder(g, region).build().await,
        ))),
    }
}

/// The clouds of the accounts environments name in pillar
/// (`environments.<env>.aws`): like [`cloud`], with each account's
/// credentials.
pub fn accounts(g: &Global, region: Option<&Region>) -> Arc<dyn CloudAccounts> {
    match g.cloud {
        CloudKind::Fake => Arc::new(MemAccounts::new()),
        CloudKind::Aws => Arc::new(
            Ec2Accounts::new(ec2_builder(g, region)).wrap(|ec2| Arc::new(RetryCloud::new(ec2))),
        ),
    }
}

/// The EC2 connection of `--endpoint-url` with `region` as the default.
pub(crate) fn ec2_builder(g: &Global, region: Option<&Region>) -> Ec2BackendBuilder {
    let mut b = Ec2Backend::builder();
    if let Some(url) = &g.endpoint_url {
        b = b.endpoint_url(url);
    }
    if let Some(r) = region {
        b = b.region(r.as_str());
    }
    b
}

/// The pillar source of `--pillar-source` and `--pillar-dir` (see
/// [`Global::pillar_source`](crate::args::Global)): the master by default,
/// the files of `--pillar-dir` when it is given.
pub fn pillar(g: &Global) -> Result<Arc<dyn PillarSource>, Failure> {
    let via = match (g.pillar_source, &g.pillar_dir) {
        (None | Some(PillarSourceArg::Dir), Some(dir)) => return Ok(Arc::new(FilePillar::new(dir))),
        (Some(PillarSourceArg::Dir), None) => {
            return Err(Failure::input(
                "--pillar-source dir needs --pillar-dir DIR (or CONDUCTOR_PILLAR_DIR): the directory of the pillar YAML files; or use --pillar-source master to have the Salt master compile the pillar",
            ))
        }
        (Some(source), Some(dir)) => {
            let name = source
                .to_possible_value()
                .map_or_else(String::new, |v| v.get_name().to_string());
            return Err(Failure::input(format!(
                "--pillar-source {name} asks Salt for the pillar, but --pillar-dir {} (or CONDUCTOR_PILLAR_DIR) reads it from files: give only one of them (--pillar-dir alone means --pillar-source dir)",
                dir.display()
            )));
        }
        (None | Some(PillarSourceArg::Master), None) => PillarVia::Master,
        (Some(PillarSourceArg::SaltCall), None) => PillarVia::Minion,
    };
    Ok(Arc::new(SaltPillar::new(salt_cli(g), via)))
}

/// The Salt executor, unless `--no-salt`.
pub fn salt(g: &Global) -> Result<Option<Arc<dyn SaltExecutor>>, Failure> {
    if g.no_salt {
        return Ok(None);
    }
    Ok(Some(Arc::new(salt_cli(g))))
}

/// The Salt commands, from `--salt-bin-dir` with `-c --salt-config-dir`.
pub(crate) fn salt_cli(g: &Global) -> conductor_salt::SaltCli {
    let mut cli = conductor_salt::SaltCli::new();
    if let Some(d) = &g.salt_bin_dir {
        cli = cli.bin_dir(d);
    }
    if let Some(c) = &g.salt_config_dir {
        cli = cli.config_dir(c);
    }
    cli
}

/// Maps the CLI's provisioner to core's.
pub fn provisioner(p: ProvisionerArg) -> Provisioner {
    match p {
        ProvisionerArg::SaltCloud => Provisioner::SaltCloud,
        ProvisionerArg::Ec2 => Provisioner::Ec2,
    }
}

/// A conductor with every backend wired for a request in `region` (see
/// [`cloud`]), stopped cleanly by `cancel`.
pub async fn conductor(
    g: &Global,
    region: Option<&Region>,
    opts: Options,
    cancel: CancellationToken,
    observer: Option<Arc<dyn Observer>>,
) -> Result<Conductor, Failure> {
    let opts = Options {
        read_grains: !g.no_grains,
        ..opts
    };
    let mut b = Conductor::builder()
        .cloud(cloud(g, region).await?)
        .accounts(accounts(g, region))
        .reserver(reserver(g).await?)
        .pillar(pillar(g)?)
        .layout(layout(g))
        .options(opts)
        .cancel_on(cancel);
    if let Some(s) = salt(g)? {
        b = b.salt(s);
    }
    if let Some(o) = observer {
        b = b.observer(o);
    }
    b.build().map_err(Failure::from)
}

/// The provisioner a command runs with: `asked`, except under `--no-salt`,
/// where only the ec2 provisioner works (salt-cloud is Salt), so that is
/// the one.
pub fn provisioner_under(g: &Global, asked: Provisioner) -> Provisioner {
    if g.no_salt {
        Provisioner::Ec2
    } else {
        asked
    }
}

/// A conductor for `plan` and `status`: reads only (writes nothing; Salt,
/// unless `--no-salt`, only for the master's grains cache), stopped by
/// `cancel`. The provisioner decides only what a plan checks of the
/// launches (the native user data); see [`provisioner_under`].
pub async fn conductor_for_plan(
    g: &Global,
    region: Option<&Region>,
    provisioner: Provisioner,
    cancel: CancellationToken,
) -> Result<Conductor, Failure> {
    let opts = Options {
        provisioner: provisioner_under(g, provisioner),
        ..Options::default()
    };
    conductor(g, region, opts, cancel, None).await
}
