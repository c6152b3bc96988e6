//! `SaltPillar` with `PillarVia::Master` against the real master of the
//! testkit's `SaltLab` (Salt 3007.16), with no minion anywhere: a Jinja
//! pillar in pillarenvs `test` and `prod` (one pillar root, one top file)
//! compiled by `salt-run pillar.show_pillar`, each env only its own; a
//! render error (exit 0 in Salt, `_errors` only) is an error naming the env
//! and Salt's cause; an env outside pillar_roots has no `conductor` key.

use conductor_core::{Env, ErrorClass, Pillar, PillarSource};
use conductor_salt::{PillarVia, SaltCli, SaltPillar};
use conductor_testkit::fixtures;
use conductor_testkit::salt_lab::SaltLab;

fn env(name: &str) -> Env {
    Env::new(name).unwrap()
}

#[tokio::test]
async fn the_master_compiles_each_pillarenvs_jinja_pillar_without_a_minion() {
    let lab = SaltLab::start(&SaltLab::fixture_file_roots()).await;
    fixtures::write_jinja_pillar(&lab.pillar_dir());
    assert_eq!(lab.minions(), Vec::<String>::new(), "no minion runs");
    let source = SaltPillar::new(
        SaltCli::new()
            .bin_dir(lab.bin_dir())
            .config_dir(lab.config_dir()),
        PillarVia::Master,
    );
    let why = || format!("the master's log:\n{}", lab.log_tail("master.log"));

    for name in ["test", "prod"] {
        let got = source
            .load(&env(name))
            .await
            .unwrap_or_else(|e| panic!("pillarenv {name}: {e}\n{}", why()));
        let want = Pillar::from_yaml_str(&fixtures::jinja_pillar_rendered(name)).unwrap();
        // Equal, so nothing of the other env (test's kafka role, its domain)
        // was merged in.
        assert_eq!(got, want, "pillarenv {name}\n{}", why());
    }
    let keys = lab.keys().await;
    assert_eq!(keys["minions"], serde_json::json!([]), "{keys}");

    // A render error in prod: Salt exits 0 with `_errors`; prod is refused
    // with Salt's cause, test still loads.
    std::fs::write(
        lab.pillar_dir().join("conductor/prod.sls"),
        "{% set domain = 'example.org' %}\nconductor: {{ domain\n",
    )
    .unwrap();
    let e = source.load(&env("prod")).await.unwrap_err();
    assert_eq!(e.class(), ErrorClass::BadInput, "{e}");
    let text = e.to_string();
    assert!(
        text.contains("could not render pillar for pillarenv prod"),
        "{text}"
    );
    assert!(
        text.contains("salt-run --out=json pillar.show_pillar pillarenv=prod"),
        "{text}"
    );
    assert!(text.contains("Jinja syntax error"), "Salt's cause: {text}");
    assert!(source.load(&env("test")).await.is_ok(), "{}", why());

    // An env that is not in the master's pillar_roots compiles to `{}`.
    let e = source.load(&env("staging")).await.unwrap_err().to_string();
    assert!(
        e.contains("pillarenv staging has no `conductor` key"),
        "{e}"
    );
    assert!(
        e.contains("check that staging is in the master's pillar_roots"),
        "{e}"
    );
}
