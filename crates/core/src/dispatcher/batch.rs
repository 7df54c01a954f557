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

use super::{
    Dispatcher, HeartbeatAccepted, HeartbeatRefused, LoginRefused, ServicePick, ServicePickRefused, Table,
    V2HeartbeatAccepted, V2HeartbeatRefused, bump,
};
use crate::registry::{Backend, BackendId, Report};
use crate::selection::Picked;
use loadwise_protocol::v2::{self, ErrorCode, ServiceName};
use loadwise_protocol::{Heartbeat, LoginRequest};

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
        let (dispatcher, now, expired) = (self.dispatcher, self.now, &mut self.expired);
        self.table.get_or_insert_with(|| {
            let mut table = dispatcher.lock();
            expired.extend(table.expire(now));
            table
        })
    }

    /// Releases the lock until the next request, so that slow work (logging) does
    /// not keep other connections waiting.
    pub fn unlock(&mut self) {
        self.table = None;
    }

    /// Applies a heartbeat received on connection `id`.
    pub fn heartbeat(
        &mut self,
        id: BackendId,
        heartbeat: &Heartbeat,
    ) -> Result<HeartbeatAccepted, HeartbeatRefused> {
        let stats = &self.dispatcher.stats;
        bump(&stats.heartbeats);
        if let Err(error) = heartbeat.validate_address() {
            bump(&stats.refused_heartbeats);
            return Err(error.into());
        }
        let report = Report { ip: heartbeat.ip, port: heartbeat.port, mem: heartbeat.mem };
        if !report.mem_is_valid() {
            bump(&stats.invalid_mem_reports);
        }
        let now = self.now;
        let applied = self.table().apply(id, report, now);
        if applied.is_err() {
            bump(&self.dispatcher.stats.refused_heartbeats);
        }
        Ok(applied?)
    }

    /// Picks a live backend under the configured policy and accounts for the client
    /// sent there. Counts and times nothing: see [`Batch::pick_for_client`].
    pub fn pick(&mut self) -> Option<Picked> {
        let now = self.now;
        let Table { services, rng, .. } = self.table();
        services.default_mut().pick_target(now, rng)
    }

    /// Applies a v2 heartbeat received on connection `connection`.
    pub fn heartbeat_v2(
        &mut self,
        connection: BackendId,
        heartbeat: v2::Heartbeat,
    ) -> Result<V2HeartbeatAccepted, V2HeartbeatRefused> {
        let (dispatcher, now) = (self.dispatcher, self.now);
        bump(&dispatcher.stats.heartbeats);
        let applied = self.table().apply_v2(connection, heartbeat, || dispatcher.next_id(), now);
        if applied.is_err() {
            bump(&dispatcher.stats.refused_heartbeats);
        }
        applied
    }

    /// Answers a v2 pick: checks its timestamp against `unix_now`, then picks a
    /// backend of `service`. Counted and timed as logins are.
    pub fn pick_service(
        &mut self,
        service: &ServiceName,
        timestamp: u64,
        unix_now: u64,
    ) -> Result<ServicePick, ErrorCode> {
        self.pick_service_keyed(service, &[], timestamp, unix_now)
    }

    /// [`Batch::pick_service`] with the request's affinity key (empty: none).
    pub fn pick_service_keyed(
        &mut self,
        service: &ServiceName,
        key: &[u8],
        timestamp: u64,
        unix_now: u64,
    ) -> Result<ServicePick, ErrorCode> {
        if self.clock_skew(timestamp, unix_now).is_some() {
            return Err(ErrorCode::CLOCK_SKEW);
        }
        self.pick_keyed_in(service, key).map_err(|refused| match refused {
            ServicePickRefused::UnknownService => ErrorCode::UNKNOWN_SERVICE,
            ServicePickRefused::NoBackend => ErrorCode::NO_BACKEND,
        })
    }

    /// Picks a backend of `service`, counting the outcome and timing it.
    pub fn pick_in(&mut self, service: &ServiceName) -> Result<ServicePick, ServicePickRefused> {
        self.pick_keyed_in(service, &[])
    }

    /// Picks a backend of `service` for the affinity key `key` (empty: none),
    /// counting the outcome and timing it.
    pub fn pick_keyed_in(
        &mut self,
        service: &ServiceName,
        key: &[u8],
    ) -> Result<ServicePick, ServicePickRefused> {
        self.picks_started.get_or_insert_with(Instant::now);
        let now = self.now;
        let picked = self.table().pick_service(service, key, now);
        match &picked {
            Ok(_) => self.answered += 1,
            Err(_) => self.no_backend += 1,
        }
        picked
    }

    /// How far `timestamp` is from `unix_now`, if further than allowed; counted.
    fn clock_skew(&self, timestamp: u64, unix_now: u64) -> Option<u64> {
        let skew_secs = timestamp.abs_diff(unix_now);
        if skew_secs <= self.dispatcher.max_clock_skew_secs.load(Ordering::Relaxed) {
            return None;
        }
        bump(&self.dispatcher.stats.logins_clock_skew);
        Some(skew_secs)
    }

    /// Answers a login: checks its timestamp against `unix_now`, then picks.
    pub fn login(&mut self, request: LoginRequest, unix_now: u64) -> Result<Picked, LoginRefused> {
        if let Some(skew_secs) = self.clock_skew(request.timestamp, unix_now) {
            return Err(LoginRefused::ClockSkew { timestamp: request.timestamp, now: unix_now, skew_secs });
        }
        self.pick_for_client()
    }

    /// Picks a backend for a client that asked by any means (a login frame, an
    /// HTTP pick), counting the outcome and timing it.
    pub fn pick_for_client(&mut self) -> Result<Picked, LoginRefused> {
        // Started before the lock is taken, so that the histogram shows lock waits.
        self.picks_started.get_or_insert_with(Instant::now);
        match self.pick() {
            Some(picked) => {
                self.answered += 1;
                Ok(picked)
            }
            None => {
                self.no_backend += 1;
                Err(LoginRefused::NoBackend)
            }
        }
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
    }
}

/// Adds `n` to a counter, skipping the shared cache line when there is nothing to add.
fn add(counter: &AtomicU64, n: u64) {
    if n > 0 {
        counter.fetch_add(n, Ordering::Relaxed);
    }
}
