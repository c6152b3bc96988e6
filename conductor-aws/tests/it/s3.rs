//! The archive upload (`conductor_aws::s3`) on a real `moto_server`: an
//! upload replaces only the object it expects (none, or the one read by
//! its ETag), so an archive is never overwritten by one that did not
//! merge it; a download writes the object 0600. On a stub: an archive
//! this user may not read (AccessDenied, S3's answer for a missing key
//! without s3:ListBucket) is uploaded only if there is none.

use std::io::{BufRead, Write};
use std::net::{TcpListener, TcpStream};
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
    let refused = |e: conductor_core::BackendError, why: &str| {
        assert!(e.message.contains("so it was left as it is"), "{e}");
        assert!(e.message.contains(why), "{why}: {e}");
    };

    // Nothing under the key: nothing written.
    assert_eq!(download("none").await.unwrap(), Expect::Absent);
    assert!(!dir.path().join("none").exists());
    std::fs::write(&file, "first").unwrap();
    let at = upload(&Expect::Absent).await.unwrap();
    assert_eq!(at, "s3://salt-runs/conductor/conductor-run-1.tar.gz");
    // Expecting no object, a second upload is refused and changes nothing.
    std::fs::write(&file, "second").unwrap();
    refused(upload(&Expect::Absent).await.unwrap_err(), "already at");
    let first = download("first").await.unwrap();
    let got = dir.path().join("first");
    assert_eq!(std::fs::read_to_string(&got).unwrap(), "first");
    assert_eq!(got.metadata().unwrap().permissions().mode() & 0o777, 0o600);
    assert!(matches!(&first, Expect::ETag(_)), "{first:?}");
    // The object read is replaced; once replaced, the same ETag is stale.
    upload(&first).await.unwrap();
    std::fs::write(&file, "third").unwrap();
    refused(
        upload(&first).await.unwrap_err(),
        "changed after it was read",
    );
    download("second").await.unwrap();
    assert_eq!(
        std::fs::read_to_string(dir.path().join("second")).unwrap(),
        "second"
    );
}

/// Reads one HTTP request head from `conn` (lower-cased), answers
/// `status` with `body` and closes the connection.
fn answer(conn: TcpStream, status: &str, extra: &str, body: &str) -> String {
    let mut reader = std::io::BufReader::new(conn.try_clone().unwrap());
    let mut head = String::new();
    let mut line = String::new();
    while reader.read_line(&mut line).unwrap() > 0 && line != "\r\n" {
        head.push_str(&line.to_ascii_lowercase());
        line.clear();
    }
    let length = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length: "))
        .map_or(0, |n| n.trim().parse().unwrap());
    let mut sent = vec![0; length];
    std::io::Read::read_exact(&mut reader, &mut sent).unwrap();
    write!(
        &conn,
        "HTTP/1.1 {status}\r\n{extra}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    head
}

#[tokio::test]
async fn an_archive_that_may_not_be_read_is_uploaded_only_if_there_is_none() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    let stub = std::thread::spawn(move || {
        let denied = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>AccessDenied</Code><Message>Access Denied</Message></Error>";
        let get = answer(listener.accept().unwrap().0, "403 Forbidden", "", denied);
        let put = answer(
            listener.accept().unwrap().0,
            "200 OK",
            "ETag: \"abc\"\r\n",
            "",
        );
        (get, put)
    });
    let aws = AwsConfig::new()
        .endpoint_url(endpoint)
        .region("us-east-1")
        .static_credentials(ACCESS_KEY_ID, SECRET_ACCESS_KEY);
    let url = S3Url::parse("s3://salt-runs/conductor").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let name = "conductor-run-1.tar.gz";
    let expect = download_with(&url, name, &dir.path().join("got"), &aws)
        .await
        .unwrap();
    assert_eq!(expect, Expect::Absent);
    assert!(!dir.path().join("got").exists());
    let file = dir.path().join(name);
    std::fs::write(&file, "archive").unwrap();
    upload_with(&file, &url, &aws, &Sse::Aes256, &expect)
        .await
        .unwrap();
    let (get, put) = stub.join().unwrap();
    assert!(
        get.starts_with("get /salt-runs/conductor/conductor-run-1.tar.gz"),
        "{get}"
    );
    assert!(
        put.starts_with("put /salt-runs/conductor/conductor-run-1.tar.gz"),
        "{put}"
    );
    assert!(put.contains("\r\nif-none-match: *\r\n"), "{put}");
}
