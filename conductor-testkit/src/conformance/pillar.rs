//! The [`PillarSource`] conformance suite. The source under test must serve,
//! for environment `test`, pillar equivalent to [`crate::fixtures::DEVOPS_PILLAR`] (in any
//! form it renders: YAML files, Jinja, ...), and nothing for `nowhere`.

use conductor_core::{Env, ErrorClass, PillarSource};

use crate::fixtures::devops_pillar;

/// Runs every check of the suite.
pub async fn run_all(source: &dyn PillarSource) {
    loads_the_fixture(source).await;
    an_unknown_environment_is_bad_input(source).await;
}

/// `load("test")` gives the typed, validated fixture.
pub async fn loads_the_fixture(source: &dyn PillarSource) {
    let p = source
        .load(&Env::new("test").unwrap())
        .await
        .expect("the fixture loads");
    assert_eq!(p, devops_pillar());
}

/// An environment the pillar does not configure is bad input naming it.
pub async fn an_unknown_environment_is_bad_input(source: &dyn PillarSource) {
    let e = match source.load(&Env::new("nowhere").unwrap()).await {
        // Sources may load fine and leave the environment check to `Pillar::environment`.
        Ok(p) => p
            .environment(&Env::new("nowhere").unwrap())
            .map(|_| ())
            .expect_err("nowhere is not configured")
            .into(),
        Err(e) => e,
    };
    let e: conductor_core::Error = e;
    assert_eq!(e.class(), ErrorClass::BadInput, "{e}");
    assert!(e.to_string().contains("nowhere"), "{e}");
}
