//! For the testkit's server binaries that scripts start (`salt-lab`,
//! `aws-front`): publish what the script needs, then serve until told to stop.

use std::path::Path;
use std::time::Duration;

/// Writes `info` to `ready` (whole, by a rename), then returns once `stop`
/// exists or the parent process (the script) has exited.
pub async fn serve_until_stopped(ready: &Path, info: &str, stop: &Path) {
    // SAFETY: getppid has no preconditions.
    let parent = unsafe { libc::getppid() };
    let tmp = ready.with_extension("tmp");
    std::fs::write(&tmp, info).expect("write the ready file");
    std::fs::rename(&tmp, ready).expect("publish the ready file");
    // SAFETY: as above.
    while !stop.exists() && unsafe { libc::getppid() } == parent {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
