//! The run lifecycle: one file per action (`create`, `destroy`, `update`,
//! `select` for status and the selection of existing instances), built on a
//! [`Run`](run::Run) and its [`Holdings`](holdings::Holdings) guard.
//!
//! A create is a short sequence of phases:
//! plan and reserve (`reserve`) → prepare files and `pre_create` hooks →
//! provision (`provision`: one implementation per provisioner) → settle
//! (wait until visible, release with the grace) → configure (`configure`:
//! minions, startup states, `post_create` hooks).

use std::path::{Path, PathBuf};

mod adopt;
mod autosign;
mod configure;
mod create;
mod destroy;
mod holdings;
mod observe;
mod provision;
mod reserve;
mod run;
pub(crate) use run::Cancelled;
mod select;
mod throttle;
mod update;

pub use crate::adopt_error::AdoptError;
pub use adopt::{AdoptReport, AdoptRequest, Adoption};
pub use create::{CreateReport, ReportError};
pub use destroy::{DestroyPlan, DestroyReport};
pub use observe::{Observer, Progress, Step};
pub use provision::client_token;
pub use select::{InstanceQuery, InstanceStatus, Selected, Selection, SkippedInstance};
pub use throttle::slot_key;
pub use update::UpdateReport;

use crate::error::Error;
use crate::layout::write_atomic;
use crate::reserve::ReserveError;

/// A reserver failure while doing `during`, as the run reports it.
pub(crate) fn reserve_failed(during: &str, e: ReserveError) -> Error {
    match e {
        ReserveError::Backend(b) => Error::backend(during, b),
        ReserveError::Conflict(keys) => Error::RetriesExhausted { attempts: 1, keys },
        ReserveError::Lost(keys) => Error::LeaseLost {
            keys,
            reason: during.to_string(),
        },
    }
}

/// Writes `value` as pretty JSON to the log `path` (atomically, mode 0644).
pub(crate) async fn write_json_log(path: &Path, value: &serde_json::Value) -> Result<(), Error> {
    write_file(
        path.to_path_buf(),
        serde_json::to_vec_pretty(value).expect("json serializes"),
        0o644,
    )
    .await
}

/// Writes `bytes` to `path` atomically with `mode`, off the async runtime.
pub(crate) async fn write_file(path: PathBuf, bytes: Vec<u8>, mode: u32) -> Result<(), Error> {
    let shown = path.clone();
    tokio::task::spawn_blocking(move || {
        write_atomic(&path, &bytes, mode).map_err(|e| Error::io(path, e))
    })
    .await
    .map_err(|e| Error::task(format!("writing {}", shown.display()), e))?
}
