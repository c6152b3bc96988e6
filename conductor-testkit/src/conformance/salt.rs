//! The [`SaltExecutor`] conformance suite: the contract of the trait's
//! documentation, as core relies on it. The executor under test talks to a
//! master (real or fake) on which [`SaltFixture::minion`] is an accepted,
//! running minion and the fixture's SLS exist; any other minion id is
//! unknown to it.
//!
//! Checks that call `state.apply` run one after another (a real minion
//! refuses a second state run while one is running); [`run_all`] runs them
//! beside the orchestration and key checks, and [`delete_keys_removes_them`]
//! last, as it leaves the minion without a key.

use std::path::PathBuf;

use conductor_core::{Env, SaltExecutor, StateRunResult};
use serde_json::Value;

use crate::logs;

/// What the executor under test is pointed at.
#[derive(Clone, Debug)]
pub struct SaltFixture {
    /// A minion id whose key is accepted and whose minion answers.
    pub minion: String,
    /// An orchestration SLS whose states all succeed.
    pub good_orchestration: String,
    /// An orchestration SLS with a state that fails.
    pub failing_orchestration: String,
    /// A startup SLS (for `state.apply`) whose states all succeed.
    pub good_startup: String,
    /// A startup SLS with a state that fails.
    pub failing_startup: String,
    /// The saltenv every call uses.
    pub saltenv: Env,
    /// The pillarenv of orchestrations.
    pub pillarenv: Env,
    /// Logs shown (their end) when a check fails: the master's, the minion's.
    pub logs: Vec<PathBuf>,
    /// A grain the minion has (name, value), as the master caches it.
    pub grain: (String, Value),
}

impl SaltFixture {
    /// The fixture of the testkit's Salt lab states
    /// (`SaltLab::fixture_file_roots`, feature `salt`):
    /// `orch.conductor_common` and `orch.failing_hook`, `devops.conductor`
    /// and `devops.failing_startup`, environment `test`; the minion has the
    /// grain `cloud.system.id: 7` (as the Python runner's instances do).
    pub fn lab_states(minion: &str, logs: Vec<PathBuf>) -> Self {
        let test = Env::new("test").expect("a valid env");
        SaltFixture {
            minion: minion.into(),
            good_orchestration: "orch.conductor_common".into(),
            failing_orchestration: "orch.failing_hook".into(),
            good_startup: "devops.conductor".into(),
            failing_startup: "devops.failing_startup".into(),
            saltenv: test.clone(),
            pillarenv: test,
            logs,
            grain: ("cloud.system.id".into(), Value::from(7)),
        }
    }

    /// The end of each of the fixture's logs, for failure messages.
    pub fn log_tails(&self) -> String {
        logs::tails(self.logs.iter().map(PathBuf::as_path), logs::TAIL_BYTES)
    }

    /// A minion id no master knows (unique to this call).
    pub fn unknown_minion(&self) -> String {
        format!("conformance-nobody-{}.example.com", rand::random::<u32>())
    }
}

/// Runs every check of the suite.
pub async fn run_all(s: &dyn SaltExecutor, f: &SaltFixture) {
    let states = async {
        state_apply_of_a_good_sls_succeeds(s, f).await;
        state_apply_reports_failures_per_minion(s, f).await;
        an_unknown_minion_did_not_return(s, f).await;
    };
    let orchestration = async {
        orchestrate_a_good_sls(s, f).await;
        orchestrate_a_failing_sls_names_the_failed_state(s, f).await;
    };
    let keys = async {
        ping_returns_only_minions_that_answered(s, f).await;
        minion_keys_lists_accepted_ids(s, f).await;
        cloud_forget_of_what_is_not_cached_is_no_error(s, f).await;
        cached_grains_hold_the_minions_grains(s, f).await;
    };
    tokio::join!(states, orchestration, keys);
    delete_keys_removes_them(s, f).await;
}

/// The states of `minion` in a run's raw return (`{minion: {state: {...}}}`,
/// or `{"data": {minion: ...}}` for an orchestration).
fn states_of<'a>(raw: &'a Value, minion: &str) -> Option<&'a serde_json::Map<String, Value>> {
    raw.get("data")
        .unwrap_or(raw)
        .get(minion)
        .and_then(Value::as_object)
}

/// Asserts that every failure of `r` is a state of `minion` that Salt's
/// return shows as failed, and that there is at least one.
fn assert_failed_states(r: &StateRunResult, minion: &str, what: &str, f: &SaltFixture) {
    let context = || format!("{what}: {r:?}\n{}", f.log_tails());
    assert!(!r.failures.is_empty(), "{}", context());
    let states = states_of(&r.raw, minion).unwrap_or_else(|| panic!("{}", context()));
    for x in &r.failures {
        assert_eq!(x.minion, minion, "{}", context());
        assert!(x.state.contains("_|-"), "a state id: {}", context());
        assert!(!x.comment.is_empty(), "{}", context());
        assert_eq!(
            states.get(&x.state).and_then(|s| s.get("result")),
            Some(&Value::Bool(false)),
            "the failed state is in Salt's return: {}",
            context()
        );
    }
}

/// `orchestrate` of a good SLS: no failures, one master return, and Salt's
/// JSON (`data` and a zero `retcode`) in `raw`.
pub async fn orchestrate_a_good_sls(s: &dyn SaltExecutor, f: &SaltFixture) {
    let r = s
        .orchestrate(&f.good_orchestration, &f.saltenv, &f.pillarenv)
        .await
        .unwrap_or_else(|e| {
            panic!(
                "orchestrate {}: {e}\n{}",
                f.good_orchestration,
                f.log_tails()
            )
        });
    let context = || format!("{r:?}\n{}", f.log_tails());
    assert!(r.ok(), "{}", context());
    assert_eq!(r.minions.len(), 1, "the master's own return: {}", context());
    let states = states_of(&r.raw, &r.minions[0]).unwrap_or_else(|| panic!("{}", context()));
    assert!(!states.is_empty(), "{}", context());
    assert!(
        states.values().all(|s| s["result"] == Value::Bool(true)),
        "{}",
        context()
    );
    assert_eq!(r.raw["retcode"], 0, "{}", context());
}

/// `orchestrate` of a failing SLS is a result (not an error) naming the
/// failed state, with a non-zero `retcode` in `raw`.
pub async fn orchestrate_a_failing_sls_names_the_failed_state(
    s: &dyn SaltExecutor,
    f: &SaltFixture,
) {
    let r = s
        .orchestrate(&f.failing_orchestration, &f.saltenv, &f.pillarenv)
        .await
        .unwrap_or_else(|e| {
            panic!(
                "orchestrate {}: {e}\n{}",
                f.failing_orchestration,
                f.log_tails()
            )
        });
    assert_eq!(r.minions.len(), 1, "{r:?}\n{}", f.log_tails());
    assert_failed_states(&r, &r.minions[0], "failing orchestration", f);
    assert_ne!(r.raw["retcode"], 0, "{r:?}");
}

/// `state_apply` of a good SLS on the minion: it answered, no failures, its
/// states in `raw` under its id.
pub async fn state_apply_of_a_good_sls_succeeds(s: &dyn SaltExecutor, f: &SaltFixture) {
    let r = s
        .state_apply(
            std::slice::from_ref(&f.minion),
            std::slice::from_ref(&f.good_startup),
            &f.saltenv,
        )
        .await
        .unwrap_or_else(|e| panic!("state.apply {}: {e}\n{}", f.good_startup, f.log_tails()));
    let context = || format!("{r:?}\n{}", f.log_tails());
    assert!(r.ok(), "{}", context());
    assert_eq!(r.minions, std::slice::from_ref(&f.minion), "{}", context());
    let states = states_of(&r.raw, &f.minion).unwrap_or_else(|| panic!("{}", context()));
    assert!(
        !states.is_empty() && states.values().all(|s| s["result"] == Value::Bool(true)),
        "{}",
        context()
    );
}

/// `state_apply` of a failing SLS: each failure names the minion it failed
/// on and the failed state, which Salt's return shows under that minion.
pub async fn state_apply_reports_failures_per_minion(s: &dyn SaltExecutor, f: &SaltFixture) {
    let sls = [f.good_startup.clone(), f.failing_startup.clone()];
    let r = s
        .state_apply(std::slice::from_ref(&f.minion), &sls, &f.saltenv)
        .await
        .unwrap_or_else(|e| panic!("state.apply {sls:?}: {e}\n{}", f.log_tails()));
    assert_eq!(
        r.minions,
        std::slice::from_ref(&f.minion),
        "{r:?}\n{}",
        f.log_tails()
    );
    assert_failed_states(&r, &f.minion, "failing startup state", f);
}

/// A target that is not an accepted minion is a `<return>` failure "did not
/// return" naming it, beside a minion that answered, and also when it is the
/// only target (a result, not an error).
pub async fn an_unknown_minion_did_not_return(s: &dyn SaltExecutor, f: &SaltFixture) {
    let nobody = f.unknown_minion();
    let sls = std::slice::from_ref(&f.good_startup);
    let both = [f.minion.clone(), nobody.clone()];
    for targets in [&both[..], std::slice::from_ref(&nobody)] {
        let r = s
            .state_apply(targets, sls, &f.saltenv)
            .await
            .unwrap_or_else(|e| panic!("state.apply on {targets:?}: {e}\n{}", f.log_tails()));
        let context = || format!("{targets:?}: {r:?}\n{}", f.log_tails());
        assert_eq!(r.failures.len(), 1, "{}", context());
        let x = &r.failures[0];
        assert_eq!(
            (x.minion.as_str(), x.state.as_str()),
            (nobody.as_str(), "<return>")
        );
        assert!(x.comment.contains("did not return"), "{}", context());
        assert!(!r.minions.contains(&nobody), "{}", context());
        assert_eq!(
            r.minions.contains(&f.minion),
            targets.len() == 2,
            "{}",
            context()
        );
    }
}

/// `ping` returns the targets that answered, only those; none for no targets.
pub async fn ping_returns_only_minions_that_answered(s: &dyn SaltExecutor, f: &SaltFixture) {
    let nobody = f.unknown_minion();
    let answered = s
        .ping(&[nobody.clone(), f.minion.clone()])
        .await
        .unwrap_or_else(|e| panic!("ping: {e}\n{}", f.log_tails()));
    assert_eq!(
        answered,
        std::slice::from_ref(&f.minion),
        "{}",
        f.log_tails()
    );
    let none = s.ping(std::slice::from_ref(&nobody)).await.expect("ping");
    assert!(none.is_empty(), "{none:?}");
    assert!(s.ping(&[]).await.expect("ping of nobody").is_empty());
}

/// `minion_keys` lists the minion as accepted (and not as pending).
pub async fn minion_keys_lists_accepted_ids(s: &dyn SaltExecutor, f: &SaltFixture) {
    let keys = s
        .minion_keys()
        .await
        .unwrap_or_else(|e| panic!("minion_keys: {e}\n{}", f.log_tails()));
    assert!(
        keys.accepted.contains(&f.minion),
        "{keys:?}\n{}",
        f.log_tails()
    );
    assert!(!keys.pending.contains(&f.minion), "{keys:?}");
}

/// `cloud_forget` of VMs salt-cloud has no cache entry of is no error (core
/// calls it for every VM a salt-cloud-path destroy terminated, cached or
/// not).
pub async fn cloud_forget_of_what_is_not_cached_is_no_error(s: &dyn SaltExecutor, f: &SaltFixture) {
    let vm = conductor_core::CloudVm {
        name: f.unknown_minion(),
        provider: "conformance_16833830331552303186".into(),
    };
    s.cloud_forget(&[vm])
        .await
        .unwrap_or_else(|e| panic!("cloud_forget: {e}\n{}", f.log_tails()));
}

/// `delete_keys` removes the keys from `minion_keys`' accepted ids; a name
/// without a key is no error (core deletes the keys of every destroyed
/// instance, joined or not). Leaves the fixture's minion without a key.
pub async fn delete_keys_removes_them(s: &dyn SaltExecutor, f: &SaltFixture) {
    s.delete_keys(&[f.minion.clone(), f.unknown_minion()])
        .await
        .unwrap_or_else(|e| panic!("delete_keys: {e}\n{}", f.log_tails()));
    let keys = s.minion_keys().await.expect("minion_keys");
    assert!(
        !keys.accepted.contains(&f.minion),
        "{keys:?}\n{}",
        f.log_tails()
    );
    let answered = s.ping(std::slice::from_ref(&f.minion)).await.expect("ping");
    assert!(
        answered.is_empty(),
        "a minion without a key does not answer: {answered:?}"
    );
    let cached = s.cached_grains().await.expect("cached_grains");
    assert!(
        !cached.contains_key(&f.minion),
        "a deleted key's grains leave the cache: {cached:?}"
    );
}

/// `cached_grains` holds the minion with its grains, read from the
/// master's cache: its `id` and the fixture's grain ([`SaltFixture::grain`]).
pub async fn cached_grains_hold_the_minions_grains(s: &dyn SaltExecutor, f: &SaltFixture) {
    let cached = s
        .cached_grains()
        .await
        .unwrap_or_else(|e| panic!("cached_grains: {e}\n{}", f.log_tails()));
    let grains = cached
        .get(&f.minion)
        .unwrap_or_else(|| panic!("{} not in {cached:?}\n{}", f.minion, f.log_tails()));
    assert_eq!(grains["id"], Value::String(f.minion.clone()), "{grains}");
    let (name, value) = &f.grain;
    assert_eq!(&grains[name.as_str()], value, "{grains}");
    assert!(
        !cached.contains_key(&f.unknown_minion()),
        "only minions the master knows"
    );
}
