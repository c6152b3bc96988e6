//! Runs a testkit `SaltLab` (a real salt-master on loopback, with the
//! fixture file roots) for scripts such as `scripts/demo --salt`: writes the
//! path of the lab's `lab.json` to `<ready-file>`, then keeps the master up
//! until `<stop-file>` exists or the parent process exits, and stops the
//! master and every minion started in the lab.
//!
//! Usage: `salt-lab <ready-file> <stop-file>`

use std::path::PathBuf;

use conductor_testkit::salt_lab::SaltLab;
use conductor_testkit::script_server::serve_until_stopped;

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args: Vec<PathBuf> = std::env::args_os().skip(1).map(PathBuf::from).collect();
    let [ready, stop] = args.as_slice() else {
        eprintln!("usage: salt-lab <ready-file> <stop-file>");
        std::process::exit(2);
    };
    let lab = SaltLab::start(&SaltLab::fixture_file_roots()).await;
    serve_until_stopped(ready, &lab.info_file().display().to_string(), stop).await;
    drop(lab);
}
