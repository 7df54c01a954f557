//! What a run measured: loads integrated exactly between events, and burst fairness.
//!
//! Between two events every backend's true load is constant, so each metric is the
//! exact integral of a piecewise-constant function: at each event the state that
//! held since the previous one is weighed by its duration. A state that lasts no
//! time (several events at one instant) weighs nothing, also for the peak.

use std::collections::{BTreeSet, HashMap};

use serde::Serialize;

use loadwise_core::selection::Policy;

use super::arrivals::Nanos;

/// A load that orders totally, for the index of live loads.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Load(f64);

impl Eq for Load {}

impl PartialOrd for Load {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Load {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0.total_cmp(&other.0)
    }
}

/// The true loads of the live backends, with their extremes and moments at hand.
#[derive(Debug, Default)]
pub struct Pool {
    /// Each backend's load while it is live, by backend number. A vector, so that
    /// recomputing the sums adds in the same order on every run.
    loads: Vec<Option<f64>>,
    live: usize,
    order: BTreeSet<(Load, usize)>,
    sum: f64,
    sum_of_squares: f64,
    /// Updates since the sums were last recomputed from scratch; rounding errors
    /// cannot build up beyond one pass over the pool.
    updates: usize,
}

impl Pool {
    /// Sets a backend's load, adding it to the pool if it was not live.
    pub fn set(&mut self, backend: usize, load: f64) {
        self.remove(backend);
        if self.loads.len() <= backend {
            self.loads.resize(backend + 1, None);
        }
        self.loads[backend] = Some(load);
        self.live += 1;
        self.order.insert((Load(load), backend));
        self.sum += load;
        self.sum_of_squares += load * load;
        self.count_update();
    }

    /// Takes a backend out of the pool.
    pub fn remove(&mut self, backend: usize) {
        if let Some(load) = self.loads.get_mut(backend).and_then(Option::take) {
            self.live -= 1;
            self.order.remove(&(Load(load), backend));
            self.sum -= load;
            self.sum_of_squares -= load * load;
            self.count_update();
        }
    }

    fn count_update(&mut self) {
        self.updates += 1;
        if self.updates > self.loads.len().max(64) {
            let live = || self.loads.iter().flatten();
            self.sum = live().sum();
            self.sum_of_squares = live().map(|load| load * load).sum();
            self.updates = 0;
        }
    }

    /// The number of live backends.
    pub fn len(&self) -> usize {
        self.live
    }

    /// Whether no backend is live.
    pub fn is_empty(&self) -> bool {
        self.live == 0
    }

    /// The lowest and highest live load.
    pub fn extremes(&self) -> Option<(f64, f64)> {
        let (low, _) = self.order.first()?;
        let (high, _) = self.order.last()?;
        Some((low.0, high.0))
    }

    /// The population standard deviation of the live loads.
    pub fn std_dev(&self) -> f64 {
        let n = self.live as f64;
        if n == 0.0 {
            return 0.0;
        }
        let mean = self.sum / n;
        (self.sum_of_squares / n - mean * mean).max(0.0).sqrt()
    }
}

/// Time integrals of the pool's state.
#[derive(Debug, Default)]
pub struct Integrals {
    /// Where the integration has reached.
    last: Nanos,
    /// Time with at least one live backend.
    covered: Nanos,
    above_90: Nanos,
    hottest: f64,
    spread: f64,
    std_dev: f64,
    peak: f64,
}

/// A load above this counts as a hot backend.
pub const HOT_LOAD: f64 = 90.0;

impl Integrals {
    /// Weighs the state that held since the last call by its duration, up to `now`.
    pub fn advance(&mut self, pool: &Pool, now: Nanos) {
        if now <= self.last {
            return;
        }
        let span = now - self.last;
        self.last = now;
        let Some((low, high)) = pool.extremes() else { return };
        let seconds = span as f64 / 1e9;
        self.covered += span;
        self.hottest += high * seconds;
        self.spread += (high - low) * seconds;
        self.std_dev += pool.std_dev() * seconds;
        self.peak = self.peak.max(high);
        if high > HOT_LOAD {
            self.above_90 += span;
        }
    }

    fn mean(&self, integral: f64) -> f64 {
        if self.covered == 0 { 0.0 } else { integral / (self.covered as f64 / 1e9) }
    }
}

/// Assignments during one burst's window.
#[derive(Debug)]
pub struct BurstTally {
    start: Nanos,
    end: Nanos,
    /// Backends live when the window opened; `None` until it has.
    live: Option<usize>,
    picks: u64,
    per_backend: HashMap<usize, u64>,
}

impl BurstTally {
    /// A tally for the window `[start, end]`, both ends included.
    pub fn new(start: Nanos, end: Nanos) -> Self {
        BurstTally { start, end, live: None, picks: 0, per_backend: HashMap::new() }
    }

    /// When the window opens.
    pub fn start(&self) -> Nanos {
        self.start
    }

    /// Records the live backends as the window opens.
    pub fn open(&mut self, live: usize) {
        self.live = Some(live);
    }

    /// Counts a pick at `at` if it falls in the window.
    pub fn record(&mut self, backend: usize, at: Nanos) {
        if (self.start..=self.end).contains(&at) {
            self.picks += 1;
            *self.per_backend.entry(backend).or_default() += 1;
        }
    }

    /// Whether a pick at `at` can still fall in the window.
    pub fn is_open_at(&self, at: Nanos) -> bool {
        at <= self.end
    }

    fn summary(&self) -> BurstSummary {
        let live = self.live.unwrap_or(0);
        let max = self.per_backend.values().copied().max().unwrap_or(0);
        let mean = if live == 0 { 0.0 } else { self.picks as f64 / live as f64 };
        let max_over_mean = (mean > 0.0).then(|| max as f64 / mean);
        BurstSummary {
            at_ms: self.start as f64 / 1e6,
            live_backends: live,
            picks: self.picks,
            max,
            mean,
            max_over_mean,
        }
    }
}

/// One burst's fairness: how far the busiest backend got above an even share.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BurstSummary {
    /// When the window opened, in milliseconds of simulated time.
    pub at_ms: f64,
    /// Backends live when it opened.
    pub live_backends: usize,
    /// Picks in the window (burst and steady clients alike).
    pub picks: u64,
    /// Picks of the backend that got the most.
    pub max: u64,
    /// `picks / live_backends`: an even share.
    pub mean: f64,
    /// `max / mean`; 1 is perfectly even. `None` without picks or live backends.
    pub max_over_mean: Option<f64>,
}

/// Counts of what happened to the clients.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// Arrivals that were sent to a backend.
    pub picks: u64,
    /// Arrivals for which the dispatcher had no backend.
    pub no_backend: u64,
    /// Picks that named a backend that had already gone silent: those clients
    /// found nobody.
    pub lost: u64,
    /// Heartbeats the dispatcher refused (none in a valid scenario).
    pub refused_heartbeats: u64,
}

/// One policy's results on one scenario.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PolicyResult {
    pub policy: Policy,
    /// Highest true load any live backend reached, in percent.
    pub peak_hottest: f64,
    /// Time average of the hottest live backend's load.
    pub mean_hottest: f64,
    /// Time average of (max − min) over the live backends.
    pub mean_spread: f64,
    /// Time average of the standard deviation of the live loads.
    pub mean_std_dev: f64,
    /// Share of the time (0..1) some backend was above 90 %.
    pub time_above_90: f64,
    /// The largest `max / mean` over the bursts; `None` without bursts.
    pub worst_burst: Option<f64>,
    pub picks: u64,
    pub no_backend: u64,
    pub lost: u64,
    pub refused_heartbeats: u64,
    /// Every burst, in scenario order.
    pub bursts: Vec<BurstSummary>,
}

impl PolicyResult {
    /// Collects the results of a finished run.
    pub fn new(policy: Policy, integrals: &Integrals, tallies: &[BurstTally], counts: Counts) -> Self {
        let bursts: Vec<BurstSummary> = tallies.iter().map(BurstTally::summary).collect();
        let worst_burst = bursts.iter().filter_map(|burst| burst.max_over_mean).reduce(f64::max);
        let time_above_90 =
            if integrals.covered == 0 { 0.0 } else { integrals.above_90 as f64 / integrals.covered as f64 };
        PolicyResult {
            policy,
            peak_hottest: integrals.peak,
            mean_hottest: integrals.mean(integrals.hottest),
            mean_spread: integrals.mean(integrals.spread),
            mean_std_dev: integrals.mean(integrals.std_dev),
            time_above_90,
            worst_burst,
            picks: counts.picks,
            no_backend: counts.no_backend,
            lost: counts.lost,
            refused_heartbeats: counts.refused_heartbeats,
            bursts,
        }
    }
}
