//! Keyed arrivals: a population of keys drawn with a Zipf distribution, sent as sticky
//! picks to the real dispatcher, measuring the affinity kept, the peak load against the
//! mean, and the keys moved when a backend joins or leaves.
//!
//! The model is deliberately small, apart from the scenario engine: `backends` equal
//! backends at a background load; every pick opens a session costing `session_cost`
//! load points on the backend named, which ends `session_picks` picks later; every
//! `report_every` picks each backend reports its true load (background plus its open
//! sessions). Time is counted in picks, the random draws come from `seed`, so a run
//! is exact and repeatable.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng as _};

use loadwise_core::affinity::{AffinitySettings, Identity, Ring, key_hash};
use loadwise_core::dispatcher::{DispatchSettings, Dispatcher};
use loadwise_core::model::ConnectionId;
use loadwise_core::model::{DEFAULT_WEIGHT, Endpoint, Metrics, PickRequest, State, V2Report};
use loadwise_core::registry::BackendId;
use loadwise_protocol::v2::ServiceName;

/// One keyed run.
#[derive(Debug, Clone, PartialEq)]
pub struct StickyRun {
    pub backends: u64,
    /// Distinct keys in the population.
    pub keys: usize,
    /// The Zipf exponent: 0 draws every key alike, 1 and above makes a few keys hot.
    pub zipf: f64,
    pub picks: usize,
    pub background: f64,
    pub session_cost: f64,
    pub session_picks: usize,
    pub report_every: usize,
    pub affinity: AffinitySettings,
    pub seed: u64,
}

impl Default for StickyRun {
    fn default() -> Self {
        StickyRun {
            backends: 10,
            keys: 10_000,
            zipf: 1.0,
            picks: 50_000,
            background: 20.0,
            session_cost: 0.01,
            session_picks: 20_000,
            report_every: 100,
            affinity: AffinitySettings::default(),
            seed: 1,
        }
    }
}

/// What a keyed run measured.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StickyReport {
    /// Of the picks whose key had been picked before, the share that got the backend
    /// that key got last time.
    pub affinity_kept: f64,
    /// The highest true load at a report, over the mean true load at that report: the
    /// worst over the run.
    pub peak_over_mean: f64,
    /// Of the keys seen, the share whose first backend changes when one backend
    /// leaves, and that backend's share of them (the least that must move).
    pub moved_on_leave: f64,
    pub leaver_share: f64,
    /// Of the keys seen, the share whose first backend changes when one backend joins.
    pub moved_on_join: f64,
}

fn game() -> ServiceName {
    ServiceName::new("game").expect("a valid service name")
}

fn heartbeat(n: u64, load: f64) -> V2Report {
    let addr = format!("10.0.{}.{}:7000", n >> 8 & 0xff, n & 0xff);
    // In hundredths of a percent, as a v2 heartbeat carries it.
    let memory = f64::from((load.clamp(0.0, 100.0) * 100.0) as u16) / 100.0;
    V2Report {
        backend_id: n,
        service: game(),
        endpoint: Endpoint::from_socket_addr(addr.parse().expect("a socket address")).expect("a port"),
        metrics: Metrics { memory: Some(memory), cpu: Some(0.0), ..Metrics::default() },
        weight: DEFAULT_WEIGHT,
        state: State::Ready,
        health: loadwise_core::model::Health::Healthy,
        slots: None,
    }
}

/// The cumulative Zipf weights of ranks 1..=keys, for drawing by inverse CDF.
fn zipf_cdf(keys: usize, exponent: f64) -> Vec<f64> {
    let mut total = 0.0;
    let mut cdf: Vec<f64> = (1..=keys)
        .map(|rank| {
            total += 1.0 / (rank as f64).powf(exponent);
            total
        })
        .collect();
    cdf.iter_mut().for_each(|weight| *weight /= total);
    cdf
}

/// Runs `run` against the real dispatcher.
pub fn simulate(run: &StickyRun) -> StickyReport {
    let start = Instant::now();
    // Past the slow start: the model has no joiners during the run.
    let now = start + Duration::from_secs(60);
    let settings = DispatchSettings {
        ttl: Duration::from_secs(3600),
        affinity: run.affinity.clone(),
        ..DispatchSettings::default()
    };
    let dispatcher = Dispatcher::with_seed(settings, run.seed);
    let report = |loads: &[f64]| {
        for (n, load) in loads.iter().enumerate() {
            let n = n as u64;
            dispatcher
                .batch(start)
                .heartbeat_v2(ConnectionId(1_000 + n), heartbeat(n, *load))
                .expect("registered");
        }
    };
    let mut loads = vec![run.background; run.backends as usize];
    report(&loads);
    let cdf = zipf_cdf(run.keys, run.zipf);
    let mut rng = StdRng::seed_from_u64(run.seed);
    let mut last: HashMap<usize, u64> = HashMap::new();
    let mut sessions: VecDeque<u64> = VecDeque::with_capacity(run.session_picks + 1);
    let (mut repeats, mut kept, mut peak_over_mean) = (0u64, 0u64, 0.0f64);
    let service = game();
    for pick in 1..=run.picks {
        let draw: f64 = rng.random();
        let key = cdf.partition_point(|&weight| weight < draw).min(run.keys - 1);
        let name = format!("key-{key}");
        let request = PickRequest::http(&service).with_key(name.as_bytes());
        let chosen = dispatcher.pick(&request, now).chosen_backend().expect("a backend");
        if let Some(previous) = last.insert(key, chosen) {
            repeats += 1;
            kept += u64::from(previous == chosen);
        }
        loads[chosen as usize] += run.session_cost;
        sessions.push_back(chosen);
        if sessions.len() > run.session_picks {
            let ended = sessions.pop_front().expect("not empty");
            loads[ended as usize] -= run.session_cost;
        }
        if pick % run.report_every == 0 {
            report(&loads);
            let mean = loads.iter().sum::<f64>() / loads.len() as f64;
            let peak = loads.iter().copied().fold(0.0, f64::max);
            peak_over_mean = peak_over_mean.max(peak / mean);
        }
    }
    let seen: Vec<usize> = last.keys().copied().collect();
    let moved = |from: &Ring, to: &Ring| {
        let first = |ring: &Ring, key: usize| ring.walk(key_hash(format!("key-{key}").as_bytes())).next();
        seen.iter().filter(|&&key| first(from, key) != first(to, key)).count() as f64 / seen.len() as f64
    };
    let ring = |ids: std::ops::Range<u64>| {
        let service = service.as_str();
        Ring::build(0, ids.map(|n| (BackendId(n), Identity::V2 { service, backend_id: n }.to_bytes())))
    };
    let (pool, without_last, with_one_more) =
        (ring(0..run.backends), ring(0..run.backends - 1), ring(0..run.backends + 1));
    let leaver = BackendId(run.backends - 1);
    let held = |key: &usize| pool.walk(key_hash(format!("key-{key}").as_bytes())).next() == Some(leaver);
    StickyReport {
        affinity_kept: if repeats == 0 { 1.0 } else { kept as f64 / repeats as f64 },
        peak_over_mean,
        moved_on_leave: moved(&pool, &without_last),
        leaver_share: seen.iter().filter(|key| held(key)).count() as f64 / seen.len() as f64,
        moved_on_join: moved(&pool, &with_one_more),
    }
}

/// The table docs/balancing.md quotes: uniform and skewed key populations, under the
/// default bound, a tighter one and practically none.
pub fn table() -> String {
    let bounds = [
        ("1.25, 5 (default)", AffinitySettings::default()),
        ("1.10, 0", AffinitySettings { balance_factor: 1.1, slack: 0.0 }),
        ("10, 100 (no bound)", AffinitySettings { balance_factor: 10.0, slack: 100.0 }),
    ];
    let mut out = String::from(
        "| keys (Zipf s) | bound (c, slack) | affinity kept | peak / mean | moved when 1 of 10 leaves (its share) | moved when an 11th joins |\n|---|---|---|---|---|---|\n",
    );
    for zipf in [0.0, 1.0, 1.2] {
        for (name, affinity) in &bounds {
            let run = StickyRun { zipf, affinity: affinity.clone(), ..StickyRun::default() };
            let r = simulate(&run);
            out.push_str(&format!(
                "| 10 000 (s = {zipf}) | {name} | {:.1} % | {:.2} | {:.1} % ({:.1} %) | {:.1} % |\n",
                r.affinity_kept * 100.0,
                r.peak_over_mean,
                r.moved_on_leave * 100.0,
                r.leaver_share * 100.0,
                r.moved_on_join * 100.0
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small(zipf: f64, affinity: AffinitySettings) -> StickyReport {
        simulate(&StickyRun {
            keys: 500,
            picks: 5_000,
            session_picks: 2_000,
            zipf,
            affinity,
            ..StickyRun::default()
        })
    }

    #[test]
    fn uniform_keys_keep_their_backend_and_only_the_leavers_keys_move() {
        let report = small(0.0, AffinitySettings::default());
        assert!(report.affinity_kept > 0.95, "{report:?}");
        assert!((report.moved_on_leave - report.leaver_share).abs() < 1e-9, "{report:?}");
        assert!(report.moved_on_join < 0.2, "{report:?}");
    }

    #[test]
    fn a_bound_keeps_hot_keys_from_overloading_their_backend() {
        let bounded = small(1.2, AffinitySettings { balance_factor: 1.1, slack: 0.0 });
        let unbounded = small(1.2, AffinitySettings { balance_factor: 10.0, slack: 100.0 });
        assert!(bounded.peak_over_mean < unbounded.peak_over_mean, "{bounded:?} {unbounded:?}");
        assert!(bounded.affinity_kept < unbounded.affinity_kept, "{bounded:?} {unbounded:?}");
        assert_eq!(unbounded.affinity_kept, 1.0);
    }

    /// Prints the table of docs/balancing.md:
    /// `cargo test -p loadwise-tools --release sticky_table -- --ignored --nocapture`.
    #[test]
    #[ignore = "prints the documentation's table; a few seconds in release"]
    fn sticky_table() {
        println!("{}", table());
    }
}
