//! conductor-salt against the real `salt` package from PyPI (installed once
//! into a project-local virtualenv by `conductor_testkit::salt_env`).

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use conductor_core::Options;
use conductor_core::SaltExecutor;
use conductor_core::{CreateReport, Env, Layout, PillarSource, Provisioner};
use conductor_salt::{FilePillar, PillarVia, SaltCli, SaltPillar};
use conductor_testkit::fixtures;
use conductor_testkit::harness::{master_layout, Harness};
use conductor_testkit::logs;
use conductor_testkit::net::DeadPort;
use conductor_testkit::salt_env::SaltEnv;
use conductor_testkit::FakeSalt;

fn write(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

/// The devops pillar with the credentials and key the ec2 driver insists on.
fn pillar_dir(dir: &Path) -> PathBuf {
    let key = dir.join("conductor.pem");
    write(&key, "not a real key\n");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    let yaml = fixtures::DEVOPS_PILLAR.replace(
        "provider: {size: t3.small, ssh_interface: private_ips, subnet_id: subnet-1}",
        &format!("provider: {{size: t3.small, ssh_interface: private_ips, subnet_id: subnet-1, id: AKIDTEST, key: SECRETTEST, keyname: conductor, private_key: {}}}", key.display()),
    );
    write(&dir.join("pillar/test/conductor.sls"), &yaml);
    dir.join("pillar")
}

async fn seed_runs(dir: &Path) -> (Layout, Vec<CreateReport>) {
    let h = Harness::new()
        .with_layout(|_| master_layout(dir))
        .with_fs_reserver()
        .with_options(|o| {
            *o = Options {
                provisioner: Provisioner::SaltCloud,
                release_grace: Duration::ZERO,
                ..Options::default()
            }
        });
    let pillar = Arc::new(FilePillar::new(pillar_dir(dir)));
    let mut reports = Vec::new();
    for req in fixtures::seed_requests() {
        let c = h
            .builder()
            .pillar(pillar.clone())
            .salt(Arc::new(FakeSalt::with_cloud(
                h.cloud.clone(),
                fixtures::zone(),
            )))
            .build()
            .unwrap();
        reports.push(c.create(&req).await.unwrap());
    }
    (h.layout.clone(), reports)
}

const LOAD_MAP: &str = r#"
import json, sys
import salt.config, salt.cloud
cfg_dir, map_path = sys.argv[1], sys.argv[2]
opts = salt.config.cloud_config(cfg_dir + "/cloud")
out = {"providers": {k: sorted(v) for k, v in opts["providers"].items()},
       "profiles": {k: v.get("provider") for k, v in opts["profiles"].items()}}
opts["map"] = map_path
m = salt.cloud.Map(opts)
m.map_providers_parallel = lambda *a, **k: {}  # stay offline: do not ask AWS what exists
data = m.map_data()
out["create"] = {name: {k: vm.get(k) for k in ("profile", "provider", "grains", "tag", "size", "image", "minion")}
                 for name, vm in data.get("create", {}).items()}
print(json.dumps(out, default=str))
"#;

/// Writes salt-cloud's main config into the run's kept config (its map
/// directory holds `cloud.providers.d/` and `cloud.profiles.d/` copies once
/// the run removed the ones in `<config-dir>`); returns that directory.
fn kept_config(layout: &Layout, r: &CreateReport, dir: &Path) -> PathBuf {
    let conf = layout.maps_dir(r.plan.cpid);
    write(
        &conf.join("cloud"),
        &format!(
            "cachedir: {0}/cache\nlog_file: {0}/cloud.log\n",
            dir.display()
        ),
    );
    conf
}

#[tokio::test]
async fn generated_files_load_through_salts_cloud_loader() {
    let salt = SaltEnv::get();
    let dir = tempfile::tempdir().unwrap();
    let (layout, reports) = seed_runs(dir.path()).await;
    std::fs::create_dir_all(dir.path().join("cache")).unwrap();
    write(&dir.path().join("load.py"), LOAD_MAP);
    for r in &reports {
        let files = r.plan.files.clone().unwrap();
        // The run removed its provider and profile from the config dir when
        // it ended; what Salt loads here is the copy it keeps.
        assert!(!files.provider.exists() && !files.profile.exists());
        let provider = layout.provider_copy(&r.plan.group, r.plan.cpid);
        let mode = std::fs::metadata(&provider).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "the provider file may hold credentials");
        let conf = kept_config(&layout, r, dir.path());
        let v = salt.python_json(&dir.path().join("load.py"), &[&conf, &files.map]);
        let id = format!("devops_{}", r.plan.cpid);
        assert_eq!(v["providers"][&id], serde_json::json!(["ec2"]), "{v}");
        assert_eq!(v["profiles"][&id], format!("{id}:ec2"));
        let create = v["create"].as_object().unwrap();
        assert_eq!(
            create.len(),
            r.plan.instances.len(),
            "every planned instance is in the map"
        );
        for i in &r.plan.instances {
            let vm = &create[&i.name];
            assert_eq!(vm["profile"], id.as_str());
            assert_eq!(vm["provider"], format!("{id}:ec2"));
            assert_eq!(
                serde_json::to_value(&i.grains).unwrap(),
                vm["grains"],
                "grains of {}",
                i.name
            );
            assert_eq!(
                serde_json::to_value(&i.tags).unwrap(),
                vm["tag"],
                "tags of {}",
                i.name
            );
            assert_eq!(vm["image"], "ami-0abc");
            let size = if i.role.as_str() == "activemq" {
                "t3.medium"
            } else {
                "t3.small"
            };
            assert_eq!(
                vm["size"], size,
                "the role's size overrides the provider's for {}",
                i.name
            );
            assert_eq!(vm["minion"]["master"], "salt.foobar.com");
            assert_eq!(vm["minion"]["environment"], "test");
        }
    }
}

/// A masterless `salt-call --local` config rooted in `dir`.
fn local_minion(dir: &Path, file_root: &Path, pillar_root: &Path) -> PathBuf {
    let conf = dir.join("minion-conf");
    write(
        &conf.join("minion"),
        &format!(
            "id: local\nfile_client: local\nroot_dir: {root}\nlog_file: {root}/minion.log\nssh_merge_pillar: false\n\
             file_roots: {{base: [{files}], test: [{files}]}}\npillar_roots: {{test: [{pillar}]}}\n",
            root = dir.join("root").display(),
            files = file_root.display(),
            pillar = pillar_root.display()
        ),
    );
    conf
}

#[tokio::test]
async fn salt_pillar_renders_jinja_like_file_pillar() {
    let salt = SaltEnv::get();
    let dir = tempfile::tempdir().unwrap();
    let jinja = dir.path().join("jinja");
    write(&jinja.join("top.sls"), "test:\n  '*':\n    - conductor\n");
    // The roles and system of the fixture, written with a Jinja loop.
    let yaml = fixtures::DEVOPS_PILLAR.replace(
        "        activemq: {basename: devops-mqXX.REGION.ENV, nodes: 2, size: t3.medium}\n",
        "{% for role, size in [('activemq', 't3.medium')] %}\n        {{ role }}: {basename: devops-mqXX.REGION.ENV, nodes: {{ 1 + 1 }}, size: {{ size }}}\n{% endfor %}\n",
    );
    assert_ne!(yaml, fixtures::DEVOPS_PILLAR);
    write(&jinja.join("conductor.sls"), &yaml);
    let conf = local_minion(dir.path(), &dir.path().join("states"), &jinja);
    let from_salt = SaltPillar::new(
        SaltCli::new().bin_dir(salt.bin_dir()).config_dir(&conf),
        PillarVia::Local,
    )
    .load(&Env::new("test").unwrap())
    .await
    .unwrap();
    assert_eq!(from_salt, fixtures::devops_pillar());

    // A pillar that does not render is an error, although salt-call exits 0.
    write(&jinja.join("conductor.sls"), "conductor: {{ broken\n");
    let e = SaltPillar::new(
        SaltCli::new().bin_dir(salt.bin_dir()).config_dir(&conf),
        PillarVia::Local,
    )
    .load(&Env::new("test").unwrap())
    .await
    .unwrap_err();
    assert!(e.to_string().contains("could not render"), "{e}");
}

#[tokio::test]
async fn state_apply_output_and_a_failing_state_from_real_salt_call() {
    let salt = SaltEnv::get();
    let dir = tempfile::tempdir().unwrap();
    let states = dir.path().join("states");
    write(
        &states.join("good.sls"),
        "ok:\n  test.succeed_without_changes\n",
    );
    write(
        &states.join("bad.sls"),
        "broken:\n  test.fail_without_changes:\n    - comment: the bad state\n",
    );
    let conf = local_minion(dir.path(), &states, &dir.path().join("pillar"));
    let cli = SaltCli::new()
        .bin_dir(salt.bin_dir())
        .config_dir(&conf)
        .local(true);
    let env = Env::new("test").unwrap();
    let ok = cli
        .state_apply(&["local".into()], &["good".into()], &env)
        .await
        .unwrap();
    assert!(ok.ok(), "{:?}", ok.failures);
    assert_eq!(ok.minions, ["local"]);
    assert!(
        ok.raw["local"]["test_|-ok_|-ok_|-succeed_without_changes"]["result"] == true,
        "{}",
        ok.raw
    );

    let bad = cli
        .state_apply(&["local".into()], &["good".into(), "bad".into()], &env)
        .await
        .unwrap();
    assert_eq!(bad.failures.len(), 1, "{:?}", bad.failures);
    assert_eq!(
        bad.failures[0].state,
        "test_|-broken_|-broken_|-fail_without_changes"
    );
    assert!(bad.failures[0].comment.contains("the bad state"));

    // An sls that does not exist: salt returns a list of errors, not states.
    let missing = cli
        .state_apply(&["local".into()], &["nope".into()], &env)
        .await
        .unwrap();
    assert_eq!(missing.failures.len(), 1);
    assert_eq!(missing.failures[0].state, "<render>");

    // A Salt that is not installed is Unreachable, naming the program.
    let e = SaltCli::new()
        .bin_dir(dir.path())
        .state_apply(&["x".into()], &["good".into()], &env)
        .await
        .unwrap_err();
    assert_eq!(e.kind, conductor_core::BackendErrorKind::Unreachable);
    assert!(e.message.contains("salt"), "{e}");
}

#[tokio::test]
async fn archive_holds_every_file_of_the_run_and_nothing_else() {
    let dir = tempfile::tempdir().unwrap();
    let (layout, reports) = seed_runs(dir.path()).await;
    let run = &reports[2];
    let out = dir.path().join("archives/new");
    let path = conductor_salt::archive::archive(
        &layout,
        run.plan.cpid,
        &out,
        false,
        &conductor_core::CancellationToken::new(),
    )
    .await
    .unwrap();
    // It holds the provider file (credentials): private to its owner.
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&path), 0o600, "the archive");
    assert_eq!(mode(&out), 0o700, "the directory it created");
    let file = std::fs::File::open(&path).unwrap();
    let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(file));
    let names: Vec<String> = tar
        .entries()
        .unwrap()
        .map(|e| e.unwrap().path().unwrap().display().to_string())
        .collect();
    let cpid = run.plan.cpid.to_string();
    let expected: Vec<String> = layout
        .run_files(run.plan.cpid)
        .iter()
        .map(|f| {
            match (
                f.strip_prefix(&layout.config_dir),
                f.strip_prefix(&layout.runner_dir),
            ) {
                (Ok(r), _) => format!("config/{}", r.display()),
                (_, Ok(r)) => format!("runner/{}", r.display()),
                _ => unreachable!(),
            }
        })
        .collect();
    assert_eq!(names, expected);
    assert!(
        names.len() >= 6,
        "provider, profile, map and logs: {names:?}"
    );
    assert!(
        names.iter().all(|n| n.contains(&cpid)),
        "nothing of other runs: {names:?}"
    );
    for kind in [
        "cloud.providers.d",
        "cloud.profiles.d",
        "maps/",
        "cloud_runs/",
        "state_runs/",
    ] {
        assert!(
            names.iter().any(|n| n.contains(kind)),
            "{kind} missing: {names:?}"
        );
    }
    // With remove, the run's files go and the other runs' stay.
    let others: BTreeMap<String, usize> = reports[..2]
        .iter()
        .map(|r| (r.plan.cpid.to_string(), layout.run_files(r.plan.cpid).len()))
        .collect();
    conductor_salt::archive::archive(
        &layout,
        run.plan.cpid,
        &out,
        true,
        &conductor_core::CancellationToken::new(),
    )
    .await
    .unwrap();
    assert!(layout.run_files(run.plan.cpid).is_empty());
    for r in &reports[..2] {
        assert_eq!(
            layout.run_files(r.plan.cpid).len(),
            others[&r.plan.cpid.to_string()]
        );
    }
}

#[tokio::test]
async fn file_pillar_and_salt_pillar_conform() {
    let dir = tempfile::tempdir().unwrap();
    write(
        &dir.path().join("files/test/conductor.sls"),
        fixtures::DEVOPS_PILLAR,
    );
    conductor_testkit::conformance::pillar::run_all(&FilePillar::new(dir.path().join("files")))
        .await;

    let salt = SaltEnv::get();
    let roots = dir.path().join("salt-pillar");
    write(&roots.join("top.sls"), "test:\n  '*':\n    - conductor\n");
    write(&roots.join("conductor.sls"), fixtures::DEVOPS_PILLAR);
    let conf = local_minion(dir.path(), &dir.path().join("states"), &roots);
    let source = SaltPillar::new(
        SaltCli::new().bin_dir(salt.bin_dir()).config_dir(&conf),
        PillarVia::Local,
    );
    conductor_testkit::conformance::pillar::run_all(&source).await;
}

/// `update` with the real Salt (masterless `salt-call --local`): the state run
/// log under the update's CPID holds Salt's own JSON, and a failing state is
/// reported with exit-1 semantics (report not successful).
#[tokio::test]
async fn update_logs_real_salt_output() {
    let salt = SaltEnv::get();
    let dir = tempfile::tempdir().unwrap();
    let (layout, reports) = seed_runs(dir.path()).await;
    let states = dir.path().join("states");
    write(
        &states.join("devops/conductor.sls"),
        "conductor-ready:\n  test.succeed_without_changes\n",
    );
    let conf = local_minion(dir.path(), &states, &dir.path().join("pillar-unused"));
    let cli = SaltCli::new()
        .bin_dir(salt.bin_dir())
        .config_dir(&conf)
        .local(true);
    let yaml = fixtures::DEVOPS_PILLAR.replace("      hooks: {pre_create: [orch.conductor_common], post_create: [orch.conductor_common]}\n", "");
    let h = Harness::new()
        .with_layout(|_| layout.clone())
        .with_fs_reserver()
        .with_pillar(conductor_core::Pillar::from_yaml_str(&yaml).unwrap())
        .with_salt(Arc::new(cli))
        .with_options(|o| {
            *o = Options {
                provisioner: Provisioner::Ec2,
                ..Options::default()
            }
        });
    // The instances the seed runs made live in a FakeCloud: rebuild one with them.
    for r in &reports {
        for i in &r.plan.instances {
            let tags: Vec<(&str, &str)> = i
                .tags
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            h.cloud.add_instance(&i.name, &fixtures::zone(), &tags);
        }
    }
    let c = h.conductor();
    let q = conductor_core::InstanceQuery {
        group: conductor_core::Group::new("devops").unwrap(),
        env: Env::new("test").unwrap(),
        region: Some(fixtures::zone().region()),
        selection: conductor_core::Selection::Cpid(reports[1].plan.cpid),
    };
    let report = c.update(&q).await.unwrap();
    assert!(
        report.success(),
        "{}",
        logs::state_failures(&report.state_failures)
    );
    assert_eq!(report.targets.len(), 2, "only the selected run's instances");
    let log = report
        .logs
        .iter()
        .find(|l| l.to_string_lossy().contains("state_run-DEVOPS_conductor._"))
        .unwrap_or_else(|| panic!("no startup state log: {:?}", report.logs));
    assert!(log.starts_with(layout.state_runs_dir(report.cpid)));
    let logged: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(log).unwrap()).unwrap();
    assert_eq!(
        logged["local"]["test_|-conductor-ready_|-conductor-ready_|-succeed_without_changes"]
            ["result"],
        true,
        "{}",
        logs::tail(log, logs::TAIL_BYTES)
    );

    write(
        &states.join("devops/conductor.sls"),
        "conductor-ready:\n  test.fail_without_changes\n",
    );
    let failed = c.update(&q).await.unwrap();
    let shown = logs::state_failures(&failed.state_failures);
    assert!(!failed.success(), "{failed:?}");
    assert_eq!(
        failed.state_failures[0].state,
        "test_|-conductor-ready_|-conductor-ready_|-fail_without_changes",
        "{shown}"
    );
}

/// A master config rooted in `dir` (no master process runs; its ports are
/// held, refusing connections, while the returned ports live): `salt-run`
/// works offline with it, `salt` finds no master behind it.
fn offline_master(dir: &Path, file_root: &Path) -> (PathBuf, [DeadPort; 2]) {
    let ports = [DeadPort::new(), DeadPort::new()];
    let conf = dir.join("master-conf");
    write(
        &conf.join("master"),
        &format!(
            "root_dir: {root}\nlog_file: {root}/master.log\ninterface: 127.0.0.1\nret_port: {ret}\npublish_port: {publ}\n\
             file_roots: {{base: [{files}], test: [{files}]}}\n",
            root = dir.join("master-root").display(),
            files = file_root.display(),
            ret = ports[0].port(),
            publ = ports[1].port(),
        ),
    );
    (conf, ports)
}

/// Pre/post-create hooks: real `salt-run state.orchestrate` output (with its
/// `data` wrapper and `retcode`) for a passing, a failing and a missing sls.
#[tokio::test]
async fn orchestrate_output_from_real_salt_run() {
    let salt = SaltEnv::get();
    let dir = tempfile::tempdir().unwrap();
    let states = dir.path().join("states");
    write(
        &states.join("orch/conductor_common.sls"),
        "hook-ran:\n  test.succeed_without_changes\n",
    );
    write(
        &states.join("orch/broken_hook.sls"),
        "hook-ok:\n  test.succeed_without_changes\nhook-bad:\n  test.fail_without_changes:\n    - comment: the hook failed\n",
    );
    let (conf, _ports) = offline_master(dir.path(), &states);
    let cli = SaltCli::new().bin_dir(salt.bin_dir()).config_dir(&conf);
    let env = Env::new("test").unwrap();
    let (good, bad, missing) = tokio::join!(
        cli.orchestrate("orch.conductor_common", &env, &env),
        cli.orchestrate("orch.broken_hook", &env, &env),
        cli.orchestrate("orch.nope", &env, &env),
    );
    let good = good.unwrap();
    assert!(good.ok(), "{:?}", good.failures);
    assert_eq!(good.raw["retcode"], 0, "{}", good.raw);
    assert_eq!(
        good.minions.len(),
        1,
        "the master's own return: {}",
        good.raw
    );

    let bad = bad.unwrap();
    assert_eq!(bad.failures.len(), 1, "{:?}", bad.failures);
    assert_eq!(
        bad.failures[0].state,
        "test_|-hook-bad_|-hook-bad_|-fail_without_changes"
    );
    assert_eq!(bad.failures[0].comment, "the hook failed");

    let missing = missing.unwrap();
    assert_eq!(missing.failures.len(), 1, "{:?}", missing.failures);
    assert_eq!(missing.failures[0].state, "<render>");
    assert!(
        missing.failures[0].comment.contains("orch.nope"),
        "{:?}",
        missing.failures
    );
}

/// `salt` whose master is not running: an `Unreachable` error naming the
/// command, not a parse error.
#[tokio::test]
async fn salt_without_its_master_is_unreachable() {
    let salt = SaltEnv::get();
    let dir = tempfile::tempdir().unwrap();
    let (conf, _ports) = offline_master(dir.path(), &dir.path().join("states"));
    let e = SaltCli::new()
        .bin_dir(salt.bin_dir())
        .config_dir(&conf)
        .state_apply(
            &["m1.test".into(), "m2.test".into()],
            &["devops.conductor".into()],
            &Env::new("test").unwrap(),
        )
        .await
        .unwrap_err();
    assert_eq!(e.kind, conductor_core::BackendErrorKind::Unreachable, "{e}");
    assert!(e.message.contains("-L m1.test,m2.test"), "{e}");
    assert!(e.message.contains("salt-master is running"), "{e}");
}

/// `SaltPillar` through a minion whose master is not there: salt-call would
/// wait without end; the timeout kills it and the error says what to check.
#[tokio::test]
async fn salt_pillar_with_an_absent_master_times_out_with_a_hint() {
    let salt = SaltEnv::get();
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("minion-conf");
    let master = DeadPort::new();
    write(
        &conf.join("minion"),
        &format!(
            "id: m1\nmaster: 127.0.0.1\nmaster_port: {port}\nroot_dir: {root}\nlog_file: {root}/minion.log\n",
            port = master.port(),
            root = dir.path().join("root").display(),
        ),
    );
    let e = SaltPillar::new(
        SaltCli::new().bin_dir(salt.bin_dir()).config_dir(&conf),
        PillarVia::Minion,
    )
    .timeout(Duration::from_secs(4))
    .load(&Env::new("test").unwrap())
    .await
    .unwrap_err();
    assert_eq!(e.class(), conductor_core::ErrorClass::Unreachable, "{e}");
    let text = e.to_string();
    // Our 4 s timeout ended it (salt-call alone waits without end).
    assert!(
        text.contains("waits as long as its master does not answer"),
        "{text}"
    );
    assert!(text.contains("salt-call"), "{text}");
    assert!(text.contains("pillar.items pillarenv=test"), "{text}");
    assert!(text.contains("--pillar-dir"), "{text}");
}

/// A salt-cloud run (on `FakeSalt`) of two activemq VMs whose pillar gives
/// them the grain `team: '{{ 7*7 }}'`.
async fn run_with_a_template_grain(dir: &Path) -> (Layout, CreateReport) {
    let pillar = pillar_dir(dir);
    let sls = pillar.join("test/conductor.sls");
    let yaml = std::fs::read_to_string(&sls).unwrap().replace(
        "activemq: {basename: devops-mqXX.REGION.ENV, nodes: 2, size: t3.medium}",
        "activemq: {basename: devops-mqXX.REGION.ENV, nodes: 2, size: t3.medium, grains: {team: '{{ 7*7 }}'}}",
    );
    write(&sls, &yaml);
    let h = Harness::new()
        .with_layout(|_| master_layout(dir))
        .with_fs_reserver()
        .with_options(|o| {
            *o = Options {
                provisioner: Provisioner::SaltCloud,
                release_grace: Duration::ZERO,
                ..Options::default()
            }
        });
    let layout = h.layout.clone();
    let c = h
        .builder()
        .pillar(Arc::new(FilePillar::new(pillar.clone())))
        .salt(Arc::new(FakeSalt::with_cloud(
            h.cloud.clone(),
            fixtures::zone(),
        )))
        .build()
        .unwrap();
    let r = c
        .create(&fixtures::role_request("activemq", None))
        .await
        .unwrap();
    (layout, r)
}

/// A pillar value that looks like a template reaches salt-cloud as text:
/// maps start with `#!yaml`, so Salt's map loader (`salt.cloud.Map`, which
/// renders maps through its renderer pipeline, Jinja first by default)
/// reads them as YAML alone. Without that line the same map renders `49`.
#[tokio::test]
async fn a_template_in_a_grain_comes_back_unrendered_from_salts_map_loader() {
    let salt = SaltEnv::get();
    let dir = tempfile::tempdir().unwrap();
    let (layout, r) = run_with_a_template_grain(dir.path()).await;
    let map = r.plan.files.clone().unwrap().map;
    let text = std::fs::read_to_string(&map).unwrap();
    assert!(text.starts_with("#!yaml\n"), "{text}");
    assert!(text.contains("{{ 7*7 }}"), "{text}");
    let without = dir.path().join("without-render-line.map");
    write(&without, text.strip_prefix("#!yaml\n").unwrap());

    std::fs::create_dir_all(dir.path().join("cache")).unwrap();
    write(&dir.path().join("load.py"), LOAD_MAP);
    let conf = kept_config(&layout, &r, dir.path());
    let load = |map: &Path| salt.python_json(&dir.path().join("load.py"), &[&conf, map]);
    let ours = load(&map);
    let plain = load(&without);
    for i in &r.plan.instances {
        assert_eq!(
            ours["create"][&i.name]["grains"]["team"], "{{ 7*7 }}",
            "{}: {ours}",
            i.name
        );
        assert_eq!(
            plain["create"][&i.name]["grains"]["team"], "49",
            "without #!yaml Salt runs Jinja on it: {plain}"
        );
    }
}

/// What salt-cloud reads is not the run's map but the one-VM maps
/// `SaltCli::cloud_map` writes into each VM's private directory: those start
/// with `#!yaml` too. A stand-in `salt-cloud` keeps every map it is given,
/// and Salt's map loader returns the grain `'{{ 7*7 }}'` from each as that
/// text (without the line it renders `49`: Jinja on the master, as root).
#[tokio::test]
async fn the_per_vm_maps_salt_cli_hands_salt_cloud_come_back_unrendered() {
    let salt = SaltEnv::get();
    let dir = tempfile::tempdir().unwrap();
    let (layout, r) = run_with_a_template_grain(dir.path()).await;
    let map = r.plan.files.clone().unwrap().map;
    let conf = kept_config(&layout, &r, dir.path());
    let bin = dir.path().join("bin");
    let kept = dir.path().join("kept");
    std::fs::create_dir_all(&kept).unwrap();
    let stand_in = bin.join("salt-cloud");
    write(
        &stand_in,
        &format!(
            "#!/bin/sh\nwhile [ $# -gt 0 ]; do\n  if [ \"$1\" = -m ]; then cp \"$2\" \"{}/$(basename \"$(dirname \"$2\")\")\"; fi\n  shift\ndone\necho '{{}}'\n",
            kept.display()
        ),
    );
    std::fs::set_permissions(&stand_in, std::fs::Permissions::from_mode(0o755)).unwrap();
    SaltCli::new()
        .bin_dir(&bin)
        .config_dir(&conf)
        .cloud_map(&map)
        .await
        .unwrap();
    let maps: Vec<PathBuf> = std::fs::read_dir(&kept)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(
        maps.len(),
        r.plan.instances.len(),
        "one map per VM: {maps:?}"
    );

    write(&dir.path().join("load.py"), LOAD_MAP);
    for one in &maps {
        let v = salt.python_json(&dir.path().join("load.py"), &[&conf, one]);
        let create = v["create"].as_object().unwrap();
        assert_eq!(create.len(), 1, "{}: {v}", one.display());
        for (name, vm) in create {
            assert_eq!(
                vm["grains"]["team"],
                "{{ 7*7 }}",
                "{name}: Salt rendered the map SaltCli wrote: {}",
                std::fs::read_to_string(one).unwrap()
            );
        }
    }
}

/// The bootstrap the native provisioner pins is the script Salt 3007.16
/// ships for salt-cloud's deploys (`salt/cloud/deploy/bootstrap-salt.sh`):
/// same release, same sha256.
#[test]
fn the_pinned_bootstrap_is_the_one_salt_ships() {
    use conductor_core::user_data::{BOOTSTRAP_VERSION, DEFAULT_BOOTSTRAP_SHA256};
    let salt = SaltEnv::get();
    let out = std::process::Command::new(salt.bin("python"))
        .args([
            "-c",
            "import os, salt.cloud; print(os.path.join(os.path.dirname(salt.cloud.__file__), 'deploy', 'bootstrap-salt.sh'))",
        ])
        .output()
        .unwrap();
    assert!(out.status.success());
    let script = PathBuf::from(String::from_utf8(out.stdout).unwrap().trim());
    let text = std::fs::read_to_string(&script).unwrap();
    assert!(
        text.contains(&format!("__ScriptVersion=\"{BOOTSTRAP_VERSION}\"")),
        "{} is not release {BOOTSTRAP_VERSION}",
        script.display()
    );
    let sum = std::process::Command::new("sha256sum")
        .arg(&script)
        .output()
        .unwrap();
    assert_eq!(
        &String::from_utf8(sum.stdout).unwrap()[..64],
        DEFAULT_BOOTSTRAP_SHA256
    );
}
