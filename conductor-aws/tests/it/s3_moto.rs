//! The archive upload (`conductor_aws::s3`) on a real `moto_server`: an
//! upload replaces only the object it expects (none, or the one read by
//! its ETag), so an archive is never overwritten by one that did not
//! merge it; a download writes the object 0600.

use std::os::unix::fs::PermissionsExt;

use conductor_aws::config::AwsConfig;
use conductor_aws::s3::{download_with, upload_with, Expect, S3Url, Sse};
use conductor_testkit::moto::{MotoServer, ACCESS_KEY_ID, SECRET_ACCESS_KEY};

#[tokio::test]
async fn an_upload_replaces_only_the_object_it_expects() {
    let moto = MotoServer::start();
    let aws = AwsConfig::new()
        .endpoint_url(moto.endpoint())
        .region("us-east-1")
        .static_credentials(ACCESS_KEY_ID, SECRET_ACCESS_KEY);
    let sdk = aws.load().await;
    aws_sdk_s3::Client::from_conf(
        aws_sdk_s3::config::Builder::from(&sdk)
            .force_path_style(true)
            .build(),
    )
    .create_bucket()
    .bucket("salt-runs")
    .send()
    .await
    .unwrap();
    let url = S3Url::parse("s3://salt-runs/conductor").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let name = "conductor-run-1.tar.gz";
    let file = dir.path().join(name);
    let download = async |to: &str| download_with(&url, name, &dir.path().join(to), &aws).await;
    let upload = async |expect: &Expect| upload_with(&file, &url, &aws, &Sse::Aes256, expect).await;
    let changed = |e: conductor_core::BackendError| {
        assert!(e.message.contains("changed after it was read"), "{e}");
    };

    // Nothing under the key: nothing written.
    assert_eq!(download("none").await.unwrap(), Expect::Absent);
    assert!(!dir.path().join("none").exists());
    std::fs::write(&file, "first").unwrap();
    let at = upload(&Expect::Absent).await.unwrap();
    assert_eq!(at, "s3://salt-runs/conductor/conductor-run-1.tar.gz");
    // Expecting no object, a second upload is refused and changes nothing.
    std::fs::write(&file, "second").unwrap();
    changed(upload(&Expect::Absent).await.unwrap_err());
    let first = download("first").await.unwrap();
    let got = dir.path().join("first");
    assert_eq!(std::fs::read_to_string(&got).unwrap(), "first");
    assert_eq!(got.metadata().unwrap().permissions().mode() & 0o777, 0o600);
    assert!(matches!(&first, Expect::ETag(_)), "{first:?}");
    // The object read is replaced; once replaced, the same ETag is stale.
    upload(&first).await.unwrap();
    std::fs::write(&file, "third").unwrap();
    changed(upload(&first).await.unwrap_err());
    download("second").await.unwrap();
    assert_eq!(
        std::fs::read_to_string(dir.path().join("second")).unwrap(),
        "second"
    );
}
