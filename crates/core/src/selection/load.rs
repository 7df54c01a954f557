//! Effective load: a backend's last report plus the clients sent to it since.
//!
//! A report is up to one heartbeat old. Every pick adds the backend's estimated cost
//! of one client to its effective load, so picks between two heartbeats spread out
//! instead of all landing on the backend that reported least. The next heartbeat
//! replaces the estimate with the measurement, and the change it shows teaches the
//! per-backend cost of a client. Nothing here reads a clock: `now` is a parameter.

use std::time::{Duration, Instant};

use crate::model::{Load, MAX_VALID_PERCENT};

/// Loads are kept in millionths of a percentage point, so that the cost of one
/// client (often far below 1 %) adds up exactly and orders totally.
pub const MICROS_PER_PERCENT: f64 = 1_000_000.0;

/// The weight of a backend that says nothing of its capacity (every legacy one).
pub const NORMAL_WEIGHT: u16 = 100;

/// The default tie band, in percent: see [`LoadSettings::tie_band`].
pub const TIE_BAND: f64 = 0.05;

/// The widest tie band accepted, in percent (10): wider, and `least-loaded` would
/// no longer pick the least loaded backend.
pub const MAX_TIE_BAND: f64 = 10.0;

/// How the cost of one client is learned, and how new backends are ramped up.
#[derive(Debug, Clone, PartialEq)]
pub struct LoadSettings {
    /// The cost of one client, in percent, assumed for a backend before its
    /// heartbeats have shown anything.
    pub prior_cost: f64,
    /// The learned cost never goes below this, so that every pick moves the
    /// backend's effective load and equal backends keep taking turns, even when
    /// their reports never change (old senders report 100 forever).
    pub min_cost: f64,
    /// The learned cost never exceeds this, so that one noisy interval (other load
    /// on the machine rising) cannot take a backend out of rotation.
    pub max_cost: f64,
    /// How many picks' worth of evidence the prior counts for.
    pub prior_weight: f64,
    /// How much of the evidence gathered so far each new heartbeat keeps (0..1);
    /// lower forgets faster.
    pub retention: f64,
    /// A new backend's picks count extra during this time after it registers, so a
    /// fresh server reporting a low load is not flooded before its first real
    /// report. Zero turns slow start off.
    pub slow_start: Duration,
    /// At registration, one pick counts this many times; the factor falls to 1 as
    /// the slow start period runs out.
    pub slow_start_factor: f64,
    /// Effective loads this close, in percent, count as tied under `least-loaded`:
    /// each backend's order key gets a random offset below it, redrawn at each
    /// report that changes its load, so that dispatcher replicas, which each see
    /// only their own picks, do not all send their next clients to the same backend.
    pub tie_band: f64,
}

impl Default for LoadSettings {
    fn default() -> Self {
        LoadSettings {
            prior_cost: 0.1,
            min_cost: 0.001,
            max_cost: 10.0,
            prior_weight: 20.0,
            retention: 0.8,
            slow_start: Duration::from_secs(3),
            slow_start_factor: 10.0,
            tie_band: TIE_BAND,
        }
    }
}

impl LoadSettings {
    /// Checks that the settings describe a usable model.
    pub fn validate(&self) -> Result<(), loadwise_protocol::config::ConfigError> {
        use loadwise_protocol::config::ensure;
        let finite_positive = |value: f64| value.is_finite() && value > 0.0;
        ensure(finite_positive(self.min_cost), "min-cost", "must be a positive number of percent")?;
        ensure(
            finite_positive(self.max_cost) && self.max_cost >= self.min_cost,
            "max-cost",
            "must be at least min-cost",
        )?;
        ensure(
            (self.min_cost..=self.max_cost).contains(&self.prior_cost),
            "prior-cost",
            "must lie between min-cost and max-cost",
        )?;
        ensure(finite_positive(self.prior_weight), "prior-weight", "must be positive")?;
        ensure((0.0..1.0).contains(&self.retention), "retention", "must be at least 0 and below 1")?;
        ensure(
            self.slow_start_factor.is_finite() && self.slow_start_factor >= 1.0,
            "slow-start-factor",
            "must be at least 1",
        )?;
        ensure((0.0..=MAX_TIE_BAND).contains(&self.tie_band), "tie-band", "must lie between 0 and 10 percent")
    }

    /// How many times a pick counts for a backend registered `age` ago.
    ///
    /// The factor starts at `slow_start_factor` and falls as `slow_start / age`
    /// (an ever smaller overcount) until it reaches 1 at the end of the period.
    pub fn slow_start_weight(&self, age: Duration) -> f64 {
        if age >= self.slow_start {
            return 1.0;
        }
        let ramp = self.slow_start.as_secs_f64() / age.as_secs_f64().max(f64::MIN_POSITIVE);
        ramp.clamp(1.0, self.slow_start_factor)
    }
}

/// A backend's place in the order of preference: lower is better. Every valid
/// report ranks before every report above 100, which is not a measurement, and
/// before every backend not yet scored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Score {
    /// 0 for a valid report, 1 for an invalid or missing one.
    pub tier: u8,
    /// Load in millionths of a percent.
    pub micros: u64,
}

/// A percentage in millionths of a percent, the unit of every [`Score`]: NaN and
/// negative figures count as zero, figures past the range as the most.
fn micros(percent: f64) -> u64 {
    (percent * MICROS_PER_PERCENT).round() as u64
}

/// The dispatcher's view of one backend's load.
#[derive(Debug, Clone, PartialEq)]
pub struct BackendLoad {
    /// The last reported load, with the precision it was sent in.
    pub reported: Load,
    pub registered_at: Instant,
    /// What the clients sent since the last report are estimated to add, in
    /// millionths of a percent.
    pending_micros: u64,
    /// Picks since the last report.
    pub picks_since_report: u64,
    /// Picks since the backend registered.
    pub picks_total: u64,
    /// Decayed sum of the load increases seen across reports, in percent.
    evidence_load: f64,
    /// Decayed sum of the picks made across those same reports.
    evidence_picks: f64,
    /// The current estimate of one client's cost, in percent.
    cost: f64,
    /// Relative capacity, 100 being the norm: the prior cost of a client is scaled
    /// by `100 / weight`, so a backend of weight 200 takes twice the clients of one
    /// of weight 100 at equal load until their reports show the real costs.
    weight: u16,
}

impl BackendLoad {
    /// A backend that has just sent its first report.
    pub fn new(reported: Load, now: Instant, settings: &LoadSettings) -> Self {
        BackendLoad {
            reported,
            registered_at: now,
            pending_micros: 0,
            picks_since_report: 0,
            picks_total: 0,
            evidence_load: 0.0,
            evidence_picks: 0.0,
            cost: settings.prior_cost,
            weight: NORMAL_WEIGHT,
        }
    }

    /// Whether the last report is a valid percentage.
    pub fn report_is_valid(&self) -> bool {
        self.reported.is_valid()
    }

    /// The estimated cost of one more client, in percent.
    pub fn cost(&self) -> f64 {
        self.cost
    }

    /// What the picks since the last report are estimated to add, in percent.
    pub fn pending(&self) -> f64 {
        self.pending_micros as f64 / MICROS_PER_PERCENT
    }

    /// The report plus what the picks since then are estimated to add, in percent;
    /// an invalid report counts as the figure sent, a missing one as nothing.
    pub fn effective(&self) -> f64 {
        let reported = match self.reported {
            Load::Percent(figure) | Load::Invalid(figure) => figure,
            Load::Unscored => 0.0,
        };
        reported + self.pending()
    }

    /// The rank by effective load.
    pub fn effective_score(&self) -> Score {
        match self.reported {
            Load::Percent(percent) => {
                Score { tier: 0, micros: micros(percent).saturating_add(self.pending_micros) }
            }
            // Unmeasured backends tie among themselves; only the picks separate them.
            Load::Invalid(_) | Load::Unscored => Score { tier: 1, micros: self.pending_micros },
        }
    }

    /// The rank by the report alone, as the original server ranked: valid loads
    /// first, then the invalid figures in their order, then the backends not scored.
    pub fn reported_score(&self) -> Score {
        match self.reported {
            Load::Percent(percent) => Score { tier: 0, micros: micros(percent) },
            Load::Invalid(figure) => Score { tier: 1, micros: micros(figure) },
            Load::Unscored => Score { tier: 1, micros: u64::MAX },
        }
    }

    /// Accounts for one client sent to this backend at `now`.
    pub fn record_pick(&mut self, now: Instant, settings: &LoadSettings) {
        let weight = settings.slow_start_weight(now.saturating_duration_since(self.registered_at));
        // At least one micro, so that every pick moves the backend along.
        let added = (self.cost * weight * MICROS_PER_PERCENT).max(1.0) as u64;
        self.pending_micros = self.pending_micros.saturating_add(added);
        self.picks_since_report += 1;
        self.picks_total += 1;
    }

    /// Replaces the estimate with a new report, and learns from the change it shows.
    pub fn reconcile(&mut self, reported: Load, settings: &LoadSettings) {
        let previous = std::mem::replace(&mut self.reported, reported);
        let picks = std::mem::take(&mut self.picks_since_report);
        // A report of 100 is censored: the backend is full, or it is an old sender
        // that reports 100 after its first heartbeat whatever its load. Either way
        // it does not show what the clients added.
        let measured = match (previous.percent(), reported.percent()) {
            (Some(previous), Some(reported)) if reported < MAX_VALID_PERCENT => Some(reported - previous),
            _ => None,
        };
        // A fall means sessions ended faster than new ones arrived; it says
        // nothing about what a new one costs, so it counts as no increase.
        self.pending_micros = 0;
        if let Some(change) = measured
            && picks > 0
        {
            self.learn(change.max(0.0), picks as f64, settings);
        }
    }

    /// The relative capacity in force (100 unless the backend says otherwise).
    pub fn weight(&self) -> u16 {
        self.weight
    }

    /// Takes up a new relative capacity: the prior, and so the estimate, change.
    pub fn set_weight(&mut self, weight: std::num::NonZeroU16, settings: &LoadSettings) {
        if self.weight != weight.get() {
            self.weight = weight.get();
            self.estimate(settings);
        }
    }

    /// The cost of one client assumed before evidence, scaled by the weight.
    fn prior_cost(&self, settings: &LoadSettings) -> f64 {
        settings.prior_cost * f64::from(NORMAL_WEIGHT) / f64::from(self.weight)
    }

    /// Folds one interval's evidence into the cost estimate.
    fn learn(&mut self, increase: f64, picks: f64, settings: &LoadSettings) {
        self.evidence_load = self.evidence_load * settings.retention + increase;
        self.evidence_picks = self.evidence_picks * settings.retention + picks;
        self.estimate(settings);
    }

    /// The cost estimate: a decayed ratio of load increase to picks, pulled towards
    /// the prior while evidence is thin.
    fn estimate(&mut self, settings: &LoadSettings) {
        let prior = self.prior_cost(settings);
        let estimate = (self.evidence_load + prior * settings.prior_weight)
            / (self.evidence_picks + settings.prior_weight);
        self.cost = estimate.clamp(settings.min_cost, settings.max_cost);
    }
}
