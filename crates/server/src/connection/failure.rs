//! A client's FailureReport: checked, applied to the core's ejection rules, counted and
//! logged. Never answered: a client reports and asks again.

use std::net::IpAddr;

use crate::log_limit::RateLimitedLog;
use crate::stats::{ReportVerdict, WireStats};
use loadwise_core::dispatcher::{Batch, FailureOutcome};
use loadwise_core::ejection::ReportOutcome;
use loadwise_protocol::ticket;
use loadwise_protocol::v2::FailureReport;
use loadwise_protocol::v2::auth::Secret;

/// What a report is judged with: the session's view of its connection and server.
pub(super) struct Judge<'c, 'b> {
    pub client: IpAddr,
    pub secret: Option<&'c Secret>,
    /// The unix time of the read, for a ticket's validity.
    pub unix_now: u64,
    pub batch: &'c mut Batch<'b>,
    pub wire: &'c WireStats,
    pub refusal_log: &'c RateLimitedLog,
    /// Told when an ejection begins, so that its end is swept on time.
    pub wake_sweeper: &'c tokio::sync::Notify,
}

/// Applies a client's report that the backend a pick sent it to could not be used.
pub(super) fn on_failure_report(report: &FailureReport, mut cx: Judge<'_, '_>) {
    let client = cx.client;
    let verdict = judge(report, &mut cx);
    cx.wire.failures.count(report.reason, verdict);
    match verdict {
        ReportVerdict::Applied(ReportOutcome::Ejected { count, duration }) => {
            cx.batch.unlock();
            cx.wake_sweeper.notify_one();
            tracing::warn!(
                service = %report.service,
                backend = report.backend_id,
                reason = %report.reason,
                last_client = %client,
                ejection = count,
                seconds = duration.as_secs_f64(),
                "backend ejected: clients sent there could not use it"
            );
        }
        ReportVerdict::Applied(ReportOutcome::CapReached { clients }) => {
            cx.batch.unlock();
            if let Some(suppressed) = cx.refusal_log.should_log(cx.batch.now()) {
                tracing::warn!(service = %report.service, backend = report.backend_id, clients, suppressed,
                    "backend not ejected: the share of its service already ejected is at the cap (eject_max_percent)");
            }
        }
        _ => {}
    }
}

/// What the report deserves: a ticket, when there is one and a secret to check it
/// with, must be for that backend and still valid; the core judges the rest.
fn judge(report: &FailureReport, cx: &mut Judge<'_, '_>) -> ReportVerdict {
    if let Some(secret) = cx.secret
        && !report.ticket.is_empty()
    {
        let now = cx.unix_now;
        let checked =
            ticket::verify(secret.as_bytes(), &report.ticket, &report.service, report.backend_id, now);
        if checked.is_err() {
            return ReportVerdict::BadTicket;
        }
    }
    match cx.batch.report_failure(cx.client, &report.service, report.backend_id) {
        FailureOutcome::UnknownBackend => ReportVerdict::UnknownBackend,
        FailureOutcome::Applied { outcome, .. } => ReportVerdict::Applied(outcome),
    }
}
