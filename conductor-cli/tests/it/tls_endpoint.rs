//! An `https://` endpoint: the binary verifies it against the system's root
//! certificates, which it loads at its first HTTPS request (plain `http://`
//! endpoints, such as moto's, load none). The server is the testkit's
//! `AwsFront` (TLS, its own CA) in front of moto; `SSL_CERT_FILE` is how an
//! operator points the system's roots at a private CA.

use conductor_testkit::aws_front::AwsFront;
use conductor_testkit::bin_lab::group_args;
use conductor_testkit::moto::MotoServer;

use crate::support::{stderr, Lab};

#[test]
fn an_https_endpoint_is_verified_against_the_systems_roots() {
    let moto = MotoServer::start();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let front = rt.block_on(AwsFront::start(moto.port()));
    let dir = tempfile::tempdir().unwrap();
    let mut lab = Lab::new(
        format!("https://{}", front.endpoint_host()),
        dir.path(),
        |p| p,
    );
    let plan = group_args("plan", &["system=small_test", "--json"]);
    // Roots without the front's CA: nothing is sent to an unverified server.
    let empty = dir.path().join("no-roots.pem");
    std::fs::write(&empty, "").unwrap();
    lab.env = vec![("SSL_CERT_FILE".into(), empty.display().to_string())];
    let refused = lab.run(&plan, None);
    let err = stderr(&refused);
    assert!(
        !refused.status.success(),
        "an unverified server was trusted: {err}"
    );
    assert!(
        err.contains("certificate") || err.contains("TLS"),
        "no TLS cause named: {err}"
    );
    assert_eq!(
        front.requests(),
        0,
        "a request reached an unverified server"
    );
    // Roots with the front's CA: the plan reads EC2 through it.
    lab.env = vec![(
        "SSL_CERT_FILE".into(),
        front.ca_bundle().display().to_string(),
    )];
    let out = lab.run(&plan, None);
    assert!(out.status.success(), "{}", stderr(&out));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        doc["instances"].as_array().is_some_and(|a| !a.is_empty()),
        "{doc}"
    );
    assert!(
        front.requests() > 0,
        "the plan did not go through the front"
    );
}
