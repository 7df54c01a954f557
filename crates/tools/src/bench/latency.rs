//! Latency recording: workers buffer samples and flush them into one shared HDR histogram.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

/// Samples a worker keeps before taking the shared lock once for all of them.
const FLUSH_EVERY: usize = 1024;

/// The longest latency the histogram tells apart; longer ones are clamped to it.
const MAX_NANOS: u64 = 3_600_000_000_000;

/// The histogram every worker of a run records into, in nanoseconds.
#[derive(Debug, Clone)]
pub struct LatencySink(Arc<Mutex<Histogram<u64>>>);

impl Default for LatencySink {
    fn default() -> Self {
        let histogram = Histogram::new_with_bounds(1, MAX_NANOS, 3).expect("valid histogram bounds");
        LatencySink(Arc::new(Mutex::new(histogram)))
    }
}

impl LatencySink {
    /// A buffer for one worker that flushes into this sink.
    pub fn recorder(&self) -> LatencyRecorder {
        LatencyRecorder { sink: self.clone(), samples: Vec::with_capacity(FLUSH_EVERY) }
    }

    fn add(&self, samples: &[u64]) {
        let mut histogram = self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        for &nanos in samples {
            histogram.saturating_record(nanos.clamp(1, MAX_NANOS));
        }
    }

    /// Percentiles of everything recorded so far.
    pub fn summary(&self) -> LatencySummary {
        let histogram = self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        LatencySummary::of(&histogram)
    }
}

/// A worker's unflushed samples. Flushes when full and when dropped.
#[derive(Debug)]
pub struct LatencyRecorder {
    sink: LatencySink,
    samples: Vec<u64>,
}

impl LatencyRecorder {
    /// Records `n` requests that each took `latency`.
    pub fn record(&mut self, latency: Duration, n: usize) {
        let nanos = u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX);
        for _ in 0..n {
            self.samples.push(nanos);
            if self.samples.len() == FLUSH_EVERY {
                self.flush();
            }
        }
    }

    fn flush(&mut self) {
        self.sink.add(&self.samples);
        self.samples.clear();
    }
}

impl Drop for LatencyRecorder {
    fn drop(&mut self) {
        self.flush();
    }
}

/// Latency percentiles in microseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct LatencySummary {
    /// How many latencies were recorded.
    pub samples: u64,
    /// The mean.
    pub mean_us: f64,
    /// The median.
    pub p50_us: f64,
    /// 90th percentile.
    pub p90_us: f64,
    /// 99th percentile.
    pub p99_us: f64,
    /// 99.9th percentile.
    pub p999_us: f64,
    /// The largest latency recorded.
    pub max_us: f64,
}

impl LatencySummary {
    fn of(histogram: &Histogram<u64>) -> Self {
        if histogram.is_empty() {
            return LatencySummary::default();
        }
        let us = |nanos: u64| nanos as f64 / 1000.0;
        LatencySummary {
            samples: histogram.len(),
            mean_us: histogram.mean() / 1000.0,
            p50_us: us(histogram.value_at_quantile(0.50)),
            p90_us: us(histogram.value_at_quantile(0.90)),
            p99_us: us(histogram.value_at_quantile(0.99)),
            p999_us: us(histogram.value_at_quantile(0.999)),
            max_us: us(histogram.max()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_come_from_every_worker() {
        let sink = LatencySink::default();
        let mut a = sink.recorder();
        let mut b = sink.recorder();
        a.record(Duration::from_micros(10), 90);
        b.record(Duration::from_micros(1000), 10);
        drop((a, b));
        let summary = sink.summary();
        assert_eq!(summary.samples, 100);
        assert!((summary.p50_us - 10.0).abs() < 0.1, "{summary:?}");
        assert!((summary.max_us - 1000.0).abs() < 1.0, "{summary:?}");
        assert!(summary.p90_us < summary.p99_us);
    }

    #[test]
    fn an_empty_run_has_zero_latencies() {
        assert_eq!(LatencySink::default().summary(), LatencySummary::default());
    }
}
