//! Clients' failure reports by reason and verdict, and the ejections they made.

use std::sync::atomic::{AtomicU64, Ordering};

use loadwise_core::dispatcher::bump;
use loadwise_core::ejection::ReportOutcome;
use loadwise_protocol::v2::FailureReason;

/// What became of a report, as metrics name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReportVerdict {
    /// Applied by the core.
    Applied(ReportOutcome),
    /// No backend of that service has that id.
    UnknownBackend,
    /// It carried a ticket that does not verify for that backend.
    BadTicket,
}

impl ReportVerdict {
    /// Every verdict's name, in counter order.
    pub const NAMES: [&'static str; 8] = [
        "counted",
        "ejected",
        "cap_reached",
        "not_sent_there",
        "rate_limited",
        "already_ejected",
        "unknown_backend",
        "bad_ticket",
    ];

    /// Its index in [`ReportVerdict::NAMES`].
    pub fn index(self) -> usize {
        match self {
            ReportVerdict::Applied(outcome) => match outcome {
                ReportOutcome::Counted { .. } => 0,
                ReportOutcome::Ejected { .. } => 1,
                ReportOutcome::CapReached { .. } => 2,
                ReportOutcome::NotSentThere => 3,
                ReportOutcome::RateLimited => 4,
                ReportOutcome::AlreadyEjected => 5,
            },
            ReportVerdict::UnknownBackend => 6,
            ReportVerdict::BadTicket => 7,
        }
    }
}

/// Failure reports by reason and verdict, and ejections by the reason of the report
/// that made them.
#[derive(Debug, Default)]
pub struct FailureStats {
    pub reports: [[AtomicU64; ReportVerdict::NAMES.len()]; FailureReason::ALL.len()],
    pub ejections: [AtomicU64; FailureReason::ALL.len()],
}

/// A point-in-time copy of [`FailureStats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FailureSnapshot {
    pub reports: [[u64; ReportVerdict::NAMES.len()]; FailureReason::ALL.len()],
    pub ejections: [u64; FailureReason::ALL.len()],
}

impl FailureStats {
    pub fn snapshot(&self) -> FailureSnapshot {
        let get = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        FailureSnapshot {
            reports: std::array::from_fn(|r| std::array::from_fn(|v| get(&self.reports[r][v]))),
            ejections: std::array::from_fn(|r| get(&self.ejections[r])),
        }
    }

    /// Counts a report of `reason` that got `verdict`.
    pub fn count(&self, reason: FailureReason, verdict: ReportVerdict) {
        bump(&self.reports[reason as usize][verdict.index()]);
        if let ReportVerdict::Applied(ReportOutcome::Ejected { .. }) = verdict {
            bump(&self.ejections[reason as usize]);
        }
    }
}
