//! Runs a testkit `SaltLab` (a real salt-master on loopback, with the
//! fixture file roots) for scripts such as `scripts/demo --salt`: writes the
//! path of the lab's `lab.json` to `<ready-file>`, then keeps the master up
//! until `<stop-file>` exists or the parent process exits, and stops the
//! master and every minion started in the lab.
//!
//! Usage: `salt-lab <ready-file> <stop-file>`

use std::path::PathBuf;
use std::time::Duration;

use conductor_testkit::salt_lab::SaltLab;

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args: Vec<PathBuf> = std::env::args_os().skip(1).map(PathBuf::from).collect();
    let [ready, stop] = args.as_slice() else {
        eprintln!("usage: salt-lab <ready-file> <stop-file>");
        std::process::exit(2);
    };
    // SAFETY: getppid has no preconditions.
    let parent = unsafe { libc::getppid() };
    let lab = SaltLab::start(&SaltLab::fixture_file_roots()).await;
    let tmp = ready.with_extension("tmp");
    std::fs::write(&tmp, lab.info_file().display().to_string()).expect("write the ready file");
    std::fs::rename(&tmp, ready).expect("publish the ready file");
    // SAFETY: as above.
    while !stop.exists() && unsafe { libc::getppid() } == parent {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    drop(lab);
}
