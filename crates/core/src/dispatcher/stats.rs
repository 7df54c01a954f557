//! The decision's counters (heartbeats, picks by outcome, evictions, pick latency):
//! lock-free atomics, read as a snapshot or scraped. What only the sockets see
//! (connections, protocol errors, v2 refusals) is the server's to count.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Counters of what the dispatcher has done since it started.
#[derive(Debug, Default)]
pub struct Stats {
    pub heartbeats: AtomicU64,
    pub invalid_mem_reports: AtomicU64,
    pub refused_heartbeats: AtomicU64,
    pub logins_answered: AtomicU64,
    pub logins_no_backend: AtomicU64,
    pub logins_clock_skew: AtomicU64,
    pub evicted_disconnected: AtomicU64,
    pub evicted_expired: AtomicU64,
    /// Backends ejected by their clients' failure reports.
    pub ejections: AtomicU64,
    /// Ejected backends back in rotation when their ejection ended.
    pub ejection_returns: AtomicU64,
    /// Picks of slot services refused for lack of a free place (also counted as
    /// answered with no backend).
    pub no_free_place: AtomicU64,
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
    pub logins_answered: u64,
    pub logins_no_backend: u64,
    pub logins_clock_skew: u64,
    pub evicted_disconnected: u64,
    pub evicted_expired: u64,
    pub ejections: u64,
    pub ejection_returns: u64,
    pub no_free_place: u64,
}

impl Stats {
    pub fn snapshot(&self) -> StatsSnapshot {
        let get = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        StatsSnapshot {
            heartbeats: get(&self.heartbeats),
            invalid_mem_reports: get(&self.invalid_mem_reports),
            refused_heartbeats: get(&self.refused_heartbeats),
            logins_answered: get(&self.logins_answered),
            logins_no_backend: get(&self.logins_no_backend),
            logins_clock_skew: get(&self.logins_clock_skew),
            evicted_disconnected: get(&self.evicted_disconnected),
            evicted_expired: get(&self.evicted_expired),
            ejections: get(&self.ejections),
            ejection_returns: get(&self.ejection_returns),
            no_free_place: get(&self.no_free_place),
        }
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
