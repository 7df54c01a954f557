//! The dispatcher's counters: lock-free atomics, read as a snapshot or scraped.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use loadwise_protocol::v2::ErrorCode;

/// Counters of what the dispatcher has done since it started.
#[derive(Debug, Default)]
pub struct Stats {
    pub heartbeats: AtomicU64,
    pub invalid_mem_reports: AtomicU64,
    pub refused_heartbeats: AtomicU64,
    /// Legacy heartbeats from peers outside the allowed networks (also counted in
    /// `refused_heartbeats`).
    pub heartbeats_not_allowed: AtomicU64,
    pub logins_answered: AtomicU64,
    pub logins_no_backend: AtomicU64,
    pub logins_clock_skew: AtomicU64,
    pub evicted_disconnected: AtomicU64,
    pub evicted_expired: AtomicU64,
    pub protocol_errors: AtomicU64,
    pub skipped_frames: AtomicU64,
    pub connections_accepted: AtomicU64,
    /// Connections closed as they arrived: the peer's cap or the pending headroom
    /// was full (also counted by reason in `connection_refusals`).
    pub connections_refused: AtomicU64,
    pub connections_open: AtomicU64,
    /// Connections open now, by kind: index [`ConnectionKind::index`].
    pub connections_by_kind: [AtomicU64; ConnectionKind::ALL.len()],
    /// Connections refused or closed for a budget, by reason: index
    /// [`ConnectionRefusal::index`].
    pub connection_refusals: [AtomicU64; ConnectionRefusal::ALL.len()],
    /// v2 Registers accepted.
    pub v2_registrations: AtomicU64,
    /// v2 refusals sent (Error messages and failed PickReplies), by code: index 1 is
    /// code 1, and so on; the last counts codes this version does not know.
    pub v2_refusals: [AtomicU64; V2_REFUSAL_SLOTS],
    /// How long each pick took inside the dispatcher, lock wait included. The
    /// picks of one read are timed together (see [`super::Batch`]), and each is
    /// recorded at their average, so that a pipelining client does not pay two
    /// clock reads per pick. A lone pick is timed exactly. With several picks in one
    /// read, the span from the first pick to the end of the batch is shared among them,
    /// so the sum also holds the read's other work done under the lock.
    pub pick_latency: LatencyHistogram,
}

/// A point-in-time copy of [`Stats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StatsSnapshot {
    pub heartbeats: u64,
    pub invalid_mem_reports: u64,
    pub refused_heartbeats: u64,
    pub heartbeats_not_allowed: u64,
    pub logins_answered: u64,
    pub logins_no_backend: u64,
    pub logins_clock_skew: u64,
    pub evicted_disconnected: u64,
    pub evicted_expired: u64,
    pub protocol_errors: u64,
    pub skipped_frames: u64,
    pub connections_accepted: u64,
    pub connections_refused: u64,
    pub connections_open: u64,
    pub connections_by_kind: [u64; ConnectionKind::ALL.len()],
    pub connection_refusals: [u64; ConnectionRefusal::ALL.len()],
    pub v2_registrations: u64,
    pub v2_refusals: [u64; V2_REFUSAL_SLOTS],
}

/// One counter per v2 error code, 1 to 14, and one for any other code.
pub const V2_REFUSAL_SLOTS: usize = 16;

/// What an open connection is, by the first frame that said so. Each kind has a
/// budget of its own (see `server`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ConnectionKind {
    /// Accepted, and not yet classified by a heartbeat, a login or a pick.
    Pending,
    /// Has sent a login or a v2 PickRequest, and no heartbeat.
    Client,
    /// Has sent a heartbeat (or a v2 Register); stays one until it closes.
    Backend,
}

impl ConnectionKind {
    pub const ALL: [ConnectionKind; 3] =
        [ConnectionKind::Pending, ConnectionKind::Client, ConnectionKind::Backend];

    /// Its index in per-kind arrays.
    pub const fn index(self) -> usize {
        self as usize
    }

    /// Its name in metrics and logs.
    pub const fn name(self) -> &'static str {
        match self {
            ConnectionKind::Pending => "pending",
            ConnectionKind::Client => "client",
            ConnectionKind::Backend => "backend",
        }
    }
}

/// Why a connection was refused, or closed before it said what it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ConnectionRefusal {
    /// At accept: the peer's address already holds as many client and pending
    /// connections as `max_connections_per_peer` allows.
    PeerLimit,
    /// At accept: the pending headroom (`max_pending_connections`) is full.
    PendingLimit,
    /// At its first login or pick: the client budget is full.
    ClientLimit,
    /// At its first heartbeat or Register: the backend budget (`max_backends`) is full.
    BackendLimit,
    /// Sent nothing that classifies it within `first_frame_timeout`.
    FirstFrameTimeout,
}

impl ConnectionRefusal {
    pub const ALL: [ConnectionRefusal; 5] = [
        ConnectionRefusal::PeerLimit,
        ConnectionRefusal::PendingLimit,
        ConnectionRefusal::ClientLimit,
        ConnectionRefusal::BackendLimit,
        ConnectionRefusal::FirstFrameTimeout,
    ];

    /// Its index in per-reason arrays.
    pub const fn index(self) -> usize {
        self as usize
    }

    /// Its name in metrics.
    pub const fn name(self) -> &'static str {
        match self {
            ConnectionRefusal::PeerLimit => "peer_limit",
            ConnectionRefusal::PendingLimit => "pending_limit",
            ConnectionRefusal::ClientLimit => "client_limit",
            ConnectionRefusal::BackendLimit => "backend_limit",
            ConnectionRefusal::FirstFrameTimeout => "first_frame_timeout",
        }
    }

    /// What happened, for logs.
    pub const fn describe(self) -> &'static str {
        match self {
            ConnectionRefusal::PeerLimit => {
                "the peer holds max_connections_per_peer client and pending connections"
            }
            ConnectionRefusal::PendingLimit => {
                "max_pending_connections connections are waiting for their first frame"
            }
            ConnectionRefusal::ClientLimit => "max_client_connections client connections are open",
            ConnectionRefusal::BackendLimit => "max_backends backend connections are open",
            ConnectionRefusal::FirstFrameTimeout => "no heartbeat, login or pick within first_frame_timeout",
        }
    }
}

impl Stats {
    pub fn snapshot(&self) -> StatsSnapshot {
        let get = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        StatsSnapshot {
            heartbeats: get(&self.heartbeats),
            invalid_mem_reports: get(&self.invalid_mem_reports),
            refused_heartbeats: get(&self.refused_heartbeats),
            heartbeats_not_allowed: get(&self.heartbeats_not_allowed),
            logins_answered: get(&self.logins_answered),
            logins_no_backend: get(&self.logins_no_backend),
            logins_clock_skew: get(&self.logins_clock_skew),
            evicted_disconnected: get(&self.evicted_disconnected),
            evicted_expired: get(&self.evicted_expired),
            protocol_errors: get(&self.protocol_errors),
            skipped_frames: get(&self.skipped_frames),
            connections_accepted: get(&self.connections_accepted),
            connections_refused: get(&self.connections_refused),
            connections_open: get(&self.connections_open),
            connections_by_kind: std::array::from_fn(|kind| get(&self.connections_by_kind[kind])),
            connection_refusals: std::array::from_fn(|reason| get(&self.connection_refusals[reason])),
            v2_registrations: get(&self.v2_registrations),
            v2_refusals: std::array::from_fn(|slot| get(&self.v2_refusals[slot])),
        }
    }

    /// Counts a v2 refusal sent with `code`.
    pub fn count_v2_refusal(&self, code: ErrorCode) {
        let slot = usize::from(code.get()).min(V2_REFUSAL_SLOTS - 1);
        bump(&self.v2_refusals[slot]);
    }

    /// Counts a connection refused or closed for `reason`.
    pub fn count_connection_refusal(&self, reason: ConnectionRefusal) {
        bump(&self.connection_refusals[reason.index()]);
        if matches!(reason, ConnectionRefusal::PeerLimit | ConnectionRefusal::PendingLimit) {
            bump(&self.connections_refused);
        }
    }
}

impl StatsSnapshot {
    /// How many v2 refusals were sent with `code`.
    pub fn v2_refusals_with(&self, code: ErrorCode) -> u64 {
        self.v2_refusals[usize::from(code.get()).min(V2_REFUSAL_SLOTS - 1)]
    }

    /// How many connections of `kind` are open.
    pub fn open(&self, kind: ConnectionKind) -> u64 {
        self.connections_by_kind[kind.index()]
    }

    /// How many connections were refused or closed for `reason`.
    pub fn refused(&self, reason: ConnectionRefusal) -> u64 {
        self.connection_refusals[reason.index()]
    }
}

/// Adds one to a counter.
pub fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// Upper bounds of the pick latency buckets, in nanoseconds: 1 µs to 10 ms in
/// 1-2-5 steps. A pick normally takes well under a microsecond; the upper buckets
/// show lock contention.
pub const LATENCY_BOUNDS_NANOS: [u64; 13] = [
    1_000, 2_000, 5_000, 10_000, 20_000, 50_000, 100_000, 200_000, 500_000, 1_000_000, 2_000_000, 5_000_000,
    10_000_000,
];

/// A fixed-bucket histogram of durations, updated with relaxed atomics.
#[derive(Debug, Default)]
pub struct LatencyHistogram {
    /// Per-bucket (not cumulative) counts; the last one holds what exceeds every bound.
    buckets: [AtomicU64; LATENCY_BOUNDS_NANOS.len() + 1],
    sum_nanos: AtomicU64,
}

impl LatencyHistogram {
    pub fn record(&self, elapsed: Duration) {
        self.record_many(elapsed, 1);
    }

    /// Records `count` durations that took `total` together, each at their average.
    pub fn record_many(&self, total: Duration, count: u64) {
        if count == 0 {
            return;
        }
        let nanos = u64::try_from(total.as_nanos()).unwrap_or(u64::MAX);
        let bucket = LATENCY_BOUNDS_NANOS.partition_point(|&bound| bound < nanos / count);
        self.buckets[bucket].fetch_add(count, Ordering::Relaxed);
        self.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    /// `(upper bound in seconds, cumulative count)` per bucket, ending with
    /// `(+Inf, total)`, as Prometheus histograms are exposed.
    pub fn buckets(&self) -> Vec<(f64, u64)> {
        let bounds = LATENCY_BOUNDS_NANOS.iter().map(|&nanos| nanos as f64 / 1e9).chain([f64::INFINITY]);
        let mut total = 0;
        bounds
            .zip(&self.buckets)
            .map(|(bound, count)| {
                total += count.load(Ordering::Relaxed);
                (bound, total)
            })
            .collect()
    }

    /// The number of durations recorded.
    pub fn count(&self) -> u64 {
        self.buckets.iter().map(|count| count.load(Ordering::Relaxed)).sum()
    }

    /// The sum of every duration recorded, in seconds.
    pub fn sum_seconds(&self) -> f64 {
        self.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latencies_land_in_cumulative_buckets() {
        let histogram = LatencyHistogram::default();
        for micros in [0, 1, 2, 3, 7_000, 20_000] {
            histogram.record(Duration::from_micros(micros));
        }
        let buckets = histogram.buckets();
        assert_eq!(buckets.len(), LATENCY_BOUNDS_NANOS.len() + 1);
        assert_eq!(buckets[0], (1e-6, 2), "0 and 1 µs are at most 1 µs");
        assert_eq!(buckets[1].1, 3);
        assert_eq!(buckets[2].1, 4);
        assert_eq!(buckets[11].1, 4, "below 5 ms");
        assert_eq!(buckets[12].1, 5, "7 ms is at most 10 ms");
        assert_eq!(buckets[13], (f64::INFINITY, 6));
        assert_eq!(histogram.count(), 6);
        assert!((histogram.sum_seconds() - 0.027_006).abs() < 1e-12);
    }

    #[test]
    fn a_batch_is_recorded_at_its_average_with_an_exact_sum() {
        let histogram = LatencyHistogram::default();
        histogram.record_many(Duration::from_micros(24), 16);
        histogram.record_many(Duration::from_micros(5), 0);
        let buckets = histogram.buckets();
        assert_eq!(buckets[0].1, 0, "1.5 µs each is above 1 µs");
        assert_eq!(buckets[1].1, 16);
        assert_eq!(histogram.count(), 16);
        assert!((histogram.sum_seconds() - 24e-6).abs() < 1e-12);
    }
}
