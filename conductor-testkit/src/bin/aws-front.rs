//! Runs a testkit `AwsFront` (HTTPS, AWS's list numbering and element order)
//! before a moto server, for `scripts/demo --salt-cloud-real`, and makes sure
//! the Salt virtualenv exists (installed on first use). Writes three lines to
//! `<ready-file>`: the front's `host:port` (a salt-cloud provider's
//! `endpoint`), the CA bundle to give Salt as `REQUESTS_CA_BUNDLE`, and the
//! Salt venv's `bin` directory; then serves until `<stop-file>` exists or
//! the parent process exits.
//!
//! Usage: `aws-front <moto-port> <ready-file> <stop-file>`

use std::path::PathBuf;

use conductor_testkit::aws_front::AwsFront;
use conductor_testkit::salt_env::SaltEnv;
use conductor_testkit::script_server::serve_until_stopped;

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (Some(port), [_, ready, stop]) = (
        args.first().and_then(|p| p.parse::<u16>().ok()),
        args.as_slice(),
    ) else {
        eprintln!("usage: aws-front <moto-port> <ready-file> <stop-file>");
        std::process::exit(2);
    };
    let bin_dir = tokio::task::spawn_blocking(|| SaltEnv::get().bin_dir())
        .await
        .expect("the Salt venv");
    let front = AwsFront::start(port).await;
    let info = format!(
        "{}\n{}\n{}\n",
        front.endpoint_host(),
        front.ca_bundle().display(),
        bin_dir.display()
    );
    serve_until_stopped(&PathBuf::from(ready), &info, &PathBuf::from(stop)).await;
    drop(front);
}
