//! The default provisioner on Salt's real parts: `conductor group create`
//! runs the real `salt-cloud` of Salt 3007.16 with its own EC2 driver,
//! which talks to moto through the testkit's `AwsFront` (TLS, AWS's list
//! numbering and element order; see docs/testing.md). The profile has
//! `deploy: False` (an image with a baked-in minion), the one configuration
//! testable without SSH targets: salt-cloud creates and tags the VMs and
//! reports each "not deployed".
//!
//! The seed's three runs in parallel are not run here on the real driver:
//! see [`create_fail_and_destroy_through_the_real_salt_cloud_driver`].

use crate::support;

use conductor_testkit::aws_front::AwsFront;
use conductor_testkit::moto::{image_in, key_pair_in, subnet_in, MotoServer};
use conductor_testkit::salt_env::SaltEnv;
use serde_json::Value;
use support::{stderr, Lab};

/// moto, the front Salt's driver reaches it through, and a lab whose pillar
/// points the group's provider at the front.
struct RealLab {
    lab: Lab,
    front: AwsFront,
    moto: MotoServer,
    // Serves the front while the test blocks on processes.
    _rt: tokio::runtime::Runtime,
    _dir: tempfile::TempDir,
}

impl RealLab {
    /// The example pillar pointed at the front, changed by `edit`; moto
    /// refuses images it does not know, as EC2 does.
    fn start(edit: impl Fn(String) -> String) -> Self {
        let moto = MotoServer::start_with_env(&[("MOTO_ENABLE_AMI_VALIDATION", "true")]);
        let rt = tokio::runtime::Runtime::new().unwrap();
        let front = rt.block_on(AwsFront::start(moto.port()));
        let dir = tempfile::tempdir().unwrap();
        let subnet = subnet_in(&moto.endpoint(), &conductor_testkit::fixtures::zone());
        key_pair_in(&moto.endpoint(), "us-east-1", "conductor-test");
        let image = image_in(&moto.endpoint(), "us-east-1");
        let provider = format!(
            "provider: {{size: t3.small, ssh_interface: private_ips, subnet_id: {}, \
             endpoint: '{}', id: testing, key: testing, keyname: conductor-test}}",
            subnet.subnet_id,
            front.endpoint_host()
        );
        let mut lab = Lab::new(moto.endpoint(), dir.path(), |p| {
            edit(p).replace(
                "provider: {size: t3.small, ssh_interface: private_ips}",
                &provider,
            )
            .replace("      hooks: {pre_create: [orch.conductor_common], post_create: [orch.conductor_common]}\n", "")
            .replace("        startup_states: [devops.conductor]\n", "        deploy: False\n")
            .replace("image: ami-0abc", &format!("image: {image}"))
        });
        lab.env = vec![(
            "REQUESTS_CA_BUNDLE".into(),
            front.ca_bundle().display().to_string(),
        )];
        // salt-cloud's config: a root of its own for its cache and pki, and its log.
        let etc = lab.config_dir();
        std::fs::create_dir_all(&etc).unwrap();
        let root = dir.path().join("salt");
        std::fs::write(
            etc.join("master"),
            format!("root_dir: {}\n", root.display()),
        )
        .unwrap();
        std::fs::write(
            etc.join("cloud"),
            format!(
                "log_file: {}\nlog_level_logfile: info\n",
                root.join("cloud.log").display()
            ),
        )
        .unwrap();
        Self {
            lab,
            front,
            moto,
            _rt: rt,
            _dir: dir,
        }
    }

    /// `group <verb> group=devops <words> <flags>` on the default
    /// provisioner (the real salt-cloud of the Salt venv), as on a master
    /// off EC2: no `AWS_REGION`, the instance metadata service not disabled.
    fn group(&self, verb: &str, words: &[&str], flags: &[&str]) -> std::process::Output {
        let bin = SaltEnv::get().bin_dir().display().to_string();
        let etc = self.lab.config_dir().display().to_string();
        let mut args = conductor_testkit::bin_lab::group_args(verb, words);
        args.extend(["--salt-bin-dir", &bin, "--salt-config-dir", &etc]);
        args.extend(flags);
        let mut c = self.lab.command(&args, None);
        c.env_remove("AWS_REGION")
            .env_remove("AWS_DEFAULT_REGION")
            .env_remove("AWS_EC2_METADATA_DISABLED");
        c.output().unwrap()
    }

    /// `group create group=devops <words>`, JSON out; asserts the instance
    /// metadata service was not asked (the region is known from `region=`).
    fn create(&self, words: &[&str]) -> std::process::Output {
        let o = self.group("create", words, &["--release-grace", "0", "--json"]);
        assert!(
            !stderr(&o).contains("IMDS"),
            "a run whose region is known does not look for it: {}",
            stderr(&o)
        );
        o
    }

    /// The JSON report of a create run, after checking its exit code.
    fn report(&self, o: &std::process::Output, code: i32) -> Value {
        assert_eq!(
            o.status.code(),
            Some(code),
            "{}\nstdout: {}\n{}",
            stderr(o),
            String::from_utf8_lossy(&o.stdout),
            self.salt_log()
        );
        serde_json::from_slice(&o.stdout).unwrap()
    }

    /// `group status --json`: every live instance of the group, as read from EC2.
    fn status(&self) -> Vec<Value> {
        let args = conductor_testkit::bin_lab::group_args("status", &["--json"]);
        self.lab.json(&args).as_array().unwrap().clone()
    }

    /// salt-cloud's log, for failure messages.
    fn salt_log(&self) -> String {
        let path = self.lab.dir.join("salt/cloud.log");
        let _ = &self.moto;
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        let tail: String = text
            .chars()
            .rev()
            .take(6000)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        format!("{}:\n{tail}", path.display())
    }
}

/// One salt-cloud map run at a time, one VM each, through the real driver:
/// - `role=activemq count=1`: exit 0, the VM "launched, not deployed", its
///   Name and Conductor's tags on the instance (the Name is the first tag
///   of the driver's 0-based list), no WARN at all and no IMDS probe;
/// - a role whose image EC2 does not know: exit 1, the report names the VM,
///   its key is held until it expires (the driver's answer cannot tell a
///   refused launch from a later failure);
/// - `group destroy cpid=` of the first run through `salt-cloud -d` (the
///   default provisioner's scoped destroy) terminates exactly its instance.
///
/// One VM per map run and one run at a time: Salt 3007's cloud index
/// (`<cachedir>/index.p`) is written under a lock that parallel workers can
/// both take, and a worker that reads it half-written kills the whole map
/// run (docs/salt.md, "salt-cloud's index race").
#[test]
fn create_fail_and_destroy_through_the_real_salt_cloud_driver() {
    let r = RealLab::start(|p| {
        p.replace(
            "      systems:",
            "        broken: {basename: devops-brokenXX.REGION.ENV, nodes: 1, image: ami-0badbadbadbad0000}\n      systems:",
        )
    });
    let o = r.create(&["role=activemq", "count=1"]);
    let report = r.report(&o, 0);
    assert!(
        !stderr(&o).contains("WARN"),
        "a run that succeeds warns of nothing: {}",
        stderr(&o)
    );
    let mq = "devops-mq01.us-east-1a.test.foobar.com";
    assert_eq!(strings(&report["result"]["launched"]), [mq], "{report}");
    assert_eq!(strings(&report["result"]["not_deployed"]), [mq], "{report}");
    let cpid = report["cpid"].as_str().unwrap().to_string();
    let rows = r.status();
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0]["name"], mq, "the Name tag landed: {rows:?}");
    assert_eq!(rows[0]["cpid"], cpid.as_str(), "{rows:?}");
    assert_eq!(rows[0]["role"], "activemq", "{rows:?}");
    assert!(r.front.requests() > 0);

    // The driver answers `{}` for a VM whose RunInstances was refused, as for
    // one whose launch succeeded before a later step failed: the VM is
    // named, and its key held until it expires (it may exist).
    let report = r.report(&r.create(&["role=broken"]), 1);
    let broken = "devops-broken01.us-east-1a.test.foobar.com";
    let failed = report["result"]["failed"].as_array().unwrap();
    assert_eq!(failed.len(), 1, "{report}");
    assert_eq!(failed[0]["name"], broken);
    assert!(
        failed[0]["error"].as_str().unwrap().contains("may exist"),
        "{report}"
    );
    assert!(
        strings(&report["result"]["launched"]).is_empty(),
        "{report}"
    );
    let held = r.lab.reservation_files();
    assert_eq!(held.len(), 1, "{held:?}");
    assert!(held[0].ends_with(format!("test_{broken}")), "{held:?}");
    assert_eq!(r.status().len(), 1, "only the first run's instance lives");

    let word = format!("cpid={cpid}");
    let o = r.group("destroy", &[&word], &["--yes", "--json"]);
    assert_eq!(o.status.code(), Some(0), "{}\n{}", stderr(&o), r.salt_log());
    let d: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(strings(&d["destroyed"]), [mq], "{d}");
    assert!(r.status().is_empty(), "the run's instance is gone");
}

/// The strings of a JSON array.
fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap_or_else(|| panic!("not an array: {v}"))
        .iter()
        .map(|n| n.as_str().unwrap().to_string())
        .collect()
}
