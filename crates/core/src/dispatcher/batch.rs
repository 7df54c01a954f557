//! Several requests applied under one hold of the table lock, as one read brings them.
//!
//! A connection decodes a whole read before it writes the replies, so every frame of
//! that read can be answered under a single lock: with 16 requests pipelined, the two
//! worker threads otherwise fight for the lock 16 times per read. A read is bounded by
//! the connection's buffer, so the hold is too. [`Batch`] holds a `MutexGuard`, which
//! is not `Send`: a task cannot keep one across an `.await`, the compiler sees to it.

use std::sync::MutexGuard;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use super::outcome::{HeartbeatAccepted, HeartbeatRefused, V2HeartbeatAccepted, V2HeartbeatRefused};
use super::state::Dispatcher;
use super::stats::bump;
use super::table::{FailureOutcome, Table};
use crate::ejection::ReportOutcome;
use crate::model::{Clocks, ConnectionId, LegacyReport, PickOutcome, PickRequest, PickTarget, V2Report};
use crate::registry::{Backend, BackendId, Report};
use loadwise_protocol::v2::ServiceName;
use std::net::IpAddr;

/// The requests of one read, applied at one instant under one hold of the lock.
///
/// The lock is taken at the first request that needs it and released when the batch
/// is dropped, or earlier by [`Batch::unlock`]. Counters and the pick-latency
/// histogram are updated once, at the end.
#[must_use = "a batch holds the table lock until it is dropped"]
pub struct Batch<'a> {
    dispatcher: &'a Dispatcher,
    /// The table, while this batch holds the lock.
    table: Option<MutexGuard<'a, Table>>,
    /// When the requests arrived: every request of the batch is applied at this time.
    now: Instant,
    /// Backends expired when the lock was taken; logged once it is released.
    expired: Vec<(BackendId, Backend)>,
    /// Backends whose ejection ended when the lock was taken; logged likewise.
    returned: Vec<(BackendId, Backend)>,
    /// When the first pick began, lock wait included; `None` until a pick.
    picks_started: Option<Instant>,
    answered: u64,
    no_backend: u64,
}

impl<'a> Batch<'a> {
    pub(super) fn new(dispatcher: &'a Dispatcher, now: Instant) -> Self {
        Batch {
            dispatcher,
            table: None,
            now,
            expired: Vec::new(),
            returned: Vec::new(),
            picks_started: None,
            answered: 0,
            no_backend: 0,
        }
    }

    /// The instant the batch's requests are applied at.
    pub fn now(&self) -> Instant {
        self.now
    }

    /// The table, locking it if this batch does not hold it yet. Expired backends
    /// are removed at every locking, so that no request sees one, even before the
    /// sweeper runs.
    fn table(&mut self) -> &mut Table {
        let (dispatcher, now) = (self.dispatcher, self.now);
        let (expired, returned) = (&mut self.expired, &mut self.returned);
        self.table.get_or_insert_with(|| {
            let mut table = dispatcher.lock();
            expired.extend(table.expire(now));
            returned.extend(table.return_ejected(now));
            table
        })
    }

    /// Releases the lock until the next request, so that slow work (logging) does
    /// not keep other connections waiting.
    pub fn unlock(&mut self) {
        self.table = None;
    }

    /// Applies a legacy heartbeat received on `connection`.
    pub fn heartbeat(
        &mut self,
        connection: ConnectionId,
        heartbeat: &LegacyReport,
    ) -> Result<HeartbeatAccepted, HeartbeatRefused> {
        let stats = &self.dispatcher.stats;
        bump(&stats.heartbeats);
        let report = Report { legacy: heartbeat.name, load: heartbeat.load };
        if report.is_invalid() {
            bump(&stats.invalid_mem_reports);
        }
        let (dispatcher, now) = (self.dispatcher, self.now);
        let applied = self.table().apply(connection, report, || dispatcher.next_id(), now);
        if applied.is_err() {
            bump(&self.dispatcher.stats.refused_heartbeats);
        }
        Ok(applied?)
    }

    /// Applies a v2 heartbeat received on connection `connection`, as its session
    /// translated it.
    pub fn heartbeat_v2(
        &mut self,
        connection: ConnectionId,
        report: V2Report,
    ) -> Result<V2HeartbeatAccepted, V2HeartbeatRefused> {
        let (dispatcher, now) = (self.dispatcher, self.now);
        bump(&dispatcher.stats.heartbeats);
        let applied = self.table().apply_v2(connection, report, || dispatcher.next_id(), now);
        if applied.is_err() {
            bump(&dispatcher.stats.refused_heartbeats);
        }
        applied
    }

    /// Answers one client's request for a backend: checks its clock, then picks. The
    /// one pick entry point: every outcome is counted, and every pick timed, the same
    /// way whichever protocol asked.
    pub fn pick(&mut self, request: &PickRequest<'_>) -> PickOutcome {
        if let Some(clocks) = request.clocks
            && let Some(skew_secs) = self.clock_skew(clocks)
        {
            return PickOutcome::ClockSkew { clocks, skew_secs };
        }
        // Started before the lock is taken, so that the histogram shows lock waits.
        self.picks_started.get_or_insert_with(Instant::now);
        let now = self.now;
        let table = self.table();
        let outcome = table.pick(request, now);
        if let PickTarget::Service(service) = request.target
            && !matches!(outcome, PickOutcome::UnknownService)
        {
            table.count_pick(service, matches!(outcome, PickOutcome::Picked(_)));
        }
        match outcome {
            PickOutcome::Picked(_) => self.answered += 1,
            PickOutcome::NoFreePlace => {
                bump(&self.dispatcher.stats.no_free_place);
                self.no_backend += 1;
            }
            _ => self.no_backend += 1,
        }
        outcome
    }

    /// Applies `client`'s report that backend `chosen` of `service` (the id its pick
    /// reply named) could not be used. Counted by outcome by the caller, which knows
    /// the report's reason.
    pub fn report_failure(&mut self, client: IpAddr, service: &ServiceName, chosen: u64) -> FailureOutcome {
        let now = self.now;
        let outcome = self.table().report_failure(client, service, chosen, now);
        if let FailureOutcome::Applied { outcome: ReportOutcome::Ejected { .. }, .. } = outcome {
            bump(&self.dispatcher.stats.ejections);
        }
        outcome
    }

    /// How far the client's clock is from the dispatcher's, if further than
    /// allowed; counted.
    fn clock_skew(&self, clocks: Clocks) -> Option<u64> {
        let skew_secs = clocks.client.abs_diff(clocks.dispatcher);
        if skew_secs <= self.dispatcher.max_clock_skew_secs.load(Ordering::Relaxed) {
            return None;
        }
        bump(&self.dispatcher.stats.logins_clock_skew);
        Some(skew_secs)
    }

    /// Adds the batch's picks to the counters and the histogram. All picks of the
    /// batch are timed together, and each is recorded at their average: two clock
    /// reads per read instead of two per pick.
    fn record_picks(&self, elapsed: Option<std::time::Duration>) {
        let stats = &self.dispatcher.stats;
        add(&stats.logins_answered, self.answered);
        add(&stats.logins_no_backend, self.no_backend);
        if let Some(elapsed) = elapsed {
            stats.pick_latency.record_many(elapsed, self.answered + self.no_backend);
        }
    }
}

impl Drop for Batch<'_> {
    fn drop(&mut self) {
        let elapsed = self.picks_started.map(|started| started.elapsed());
        self.unlock();
        self.record_picks(elapsed);
        self.dispatcher.record_expired(&self.expired);
        self.dispatcher.record_returned(&self.returned);
    }
}

/// Adds `n` to a counter, skipping the shared cache line when there is nothing to add.
fn add(counter: &AtomicU64, n: u64) {
    if n > 0 {
        counter.fetch_add(n, Ordering::Relaxed);
    }
}
