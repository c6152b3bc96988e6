//! `Run`: what every action shares — its CPID (reserved for the run's
//! duration), the [`Holdings`] guard of its reservations, its tracing span,
//! the caller's cancellation and observer.

use std::future::Future;

use tracing::{info_span, Instrument, Span};

use super::holdings::Holdings;
use super::observe::{Progress, Step};
use crate::conductor::Conductor;
use crate::cpid::Cpid;
use crate::error::Error;
use crate::reserve::{Key, Owner, ReserveError};

/// Attempts at drawing a CPID nobody else holds.
const CPID_DRAWS: u32 = 5;

/// One run of an action; end it with [`Run::finish`].
#[derive(Debug)]
pub(crate) struct Run {
    /// The run's CPID.
    pub(crate) cpid: Cpid,
    /// Its reservations.
    pub(crate) holdings: Holdings,
    /// Its span (`create`, `destroy`, `update` with the CPID and request).
    pub(crate) span: Span,
    c: Conductor,
}

/// The caller cancelled while the run waited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Cancelled;

impl From<Cancelled> for Error {
    fn from(_: Cancelled) -> Self {
        Error::Interrupted
    }
}

impl Run {
    /// Claims a CPID (`fixed`, or drawn until one is free) and starts
    /// renewing it; `span` names the action.
    pub(crate) async fn start(
        c: &Conductor,
        fixed: Option<Cpid>,
        span: impl FnOnce(Cpid) -> Span,
    ) -> Result<Run, Error> {
        if c.cancel.is_cancelled() {
            return Err(Error::Interrupted);
        }
        let lease = claim_cpid(c, fixed).await?;
        let cpid = lease.owner.cpid;
        let run = Run {
            cpid,
            holdings: Holdings::start(c.reserver.clone(), c.opts.lease_ttl, lease),
            span: span(cpid),
            c: c.clone(),
        };
        run.step(Step::CpidClaimed);
        Ok(run)
    }

    /// An owner record for keys this run reserves now.
    pub(crate) fn owner(&self) -> Owner {
        Owner::this_process(self.cpid, self.c.opts.lease_ttl)
    }

    /// Tells the observer the run passed `step`.
    pub(crate) fn step(&self, step: Step) {
        if let Some(o) = &self.c.observer {
            o.step(self.cpid, step);
        }
    }

    /// Tells the observer how far the run came in a phase.
    pub(crate) fn progress(&self, progress: Progress) {
        self.c.progress(self.cpid, progress);
    }

    /// Runs `f` in the run's span, unless the caller cancels first.
    pub(crate) async fn step_in<F: Future>(&self, f: F) -> Result<F::Output, Cancelled> {
        let span = self.span.clone();
        self.c.cancellable(f.instrument(span)).await
    }

    /// Ends the run: waits until the Salt commands it killed are gone,
    /// then frees what was never launched and its CPID.
    pub(crate) async fn finish(self) {
        if let Some(salt) = &self.c.salt {
            salt.settle().instrument(self.span.clone()).await;
        }
        self.holdings.finish().instrument(self.span.clone()).await;
    }
}

/// Reserves `cpid.<CPID>` for the run, drawing again on a clash.
async fn claim_cpid(c: &Conductor, fixed: Option<Cpid>) -> Result<crate::reserve::Lease, Error> {
    for _ in 0..CPID_DRAWS {
        let cpid = fixed.unwrap_or_else(Cpid::generate);
        let owner = Owner::this_process(cpid, c.opts.lease_ttl);
        let span = info_span!("reserver.cpid", %cpid);
        match c
            .reserver
            .try_reserve(&[Key::cpid(cpid)], &owner)
            .instrument(span)
            .await
        {
            Ok(lease) => return Ok(lease),
            Err(ReserveError::Conflict(_)) if fixed.is_none() => continue,
            Err(ReserveError::Conflict(keys)) => {
                return Err(Error::RetriesExhausted { attempts: 1, keys })
            }
            Err(e) => return Err(super::reserve_failed("reserving the cpid", e)),
        }
    }
    Err(Error::RetriesExhausted {
        attempts: CPID_DRAWS,
        keys: vec![],
    })
}
