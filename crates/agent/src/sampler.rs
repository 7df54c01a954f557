//! The agent's run loop: one sampler measures the load every interval and publishes
//! it, with the backend's state and health, to a link per dispatcher; the health
//! check loop, when configured, runs beside it.

use std::future::Future;

use tokio::sync::watch;
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;

use crate::check_spec::CheckAddr;
use crate::checker;
use crate::config::AgentConfig;
use crate::places::Places;
use crate::probe::MetricsProbe;
use crate::replicas;
use crate::sample::{Report, Sample};
use crate::streak::FailureStreak;
use loadwise_protocol::config::ConfigError;
use loadwise_protocol::v2::{Health, State};

/// Runs the agent until `shutdown` completes: samples the load every interval and
/// keeps a link to each dispatcher. Fails at once, before connecting, if the
/// configuration cannot work.
pub async fn run(
    config: AgentConfig,
    probe: impl MetricsProbe,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ConfigError> {
    let (_keep, state) = watch::channel(State::Ready);
    run_with_state(config, probe, state, shutdown).await
}

/// [`run`], with the backend's state following `state`: while it is draining or in
/// maintenance, v2 heartbeats say so (the dispatcher sends no new clients but keeps
/// the backend listed) and legacy links disconnect (the only way to say it in the
/// legacy protocol); back to ready, both resume.
pub async fn run_with_state(
    config: AgentConfig,
    probe: impl MetricsProbe,
    state: watch::Receiver<State>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ConfigError> {
    let (_keep, health) = watch::channel(Health::Healthy);
    run_with_health(config, probe, state, health, shutdown).await
}

/// [`run_with_state`], with the backend's health following `health` too: while it is
/// unhealthy, v2 heartbeats say so (the dispatcher keeps the backend listed and sends
/// it no clients) and legacy links disconnect, as for a drain; healthy again, both
/// resume. With a [`HealthCheck`](crate::HealthCheck) configured, the check's verdict
/// counts too: the backend is healthy only when both say so, and starts unhealthy
/// until the check passes `rise` times in a row.
pub async fn run_with_health(
    config: AgentConfig,
    probe: impl MetricsProbe,
    mut state: watch::Receiver<State>,
    health: watch::Receiver<Health>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ConfigError> {
    config.validate()?;
    if config.max_backoff > config.interval {
        tracing::warn!(max_backoff = ?config.max_backoff, interval = ?config.interval,
            "max-backoff is above the interval: after a dispatcher restarts, re-registering may take longer than two intervals");
    }
    let (checks, mut health) = health_checks(&config, health);
    let initial =
        Report { sample: None, state: *state.borrow_and_update(), health: *health.borrow_and_update() };
    let (reports, latest) = watch::channel(initial);
    let stop = CancellationToken::new();
    let mut links = replicas::Links::new(&config, latest, stop.clone());
    let changes = replicas::follow_names(&config, &mut links)?;
    tokio::select! {
        () = sample_every_interval(&config, probe, Inputs { state, health }, reports) => {}
        () = links.follow(changes) => {}
        () = checks => {}
        () = shutdown => {}
    }
    stop.cancel();
    links.join().await;
    tracing::info!("agent stopped");
    Ok(())
}

/// The health heartbeats carry, and the check loop that decides it if the agent
/// checks the backend (else a future that never ends, and `set` as it is).
fn health_checks(
    config: &AgentConfig,
    set: watch::Receiver<Health>,
) -> (impl Future<Output = ()> + use<>, watch::Receiver<Health>) {
    let Some(check) = config.health_check.clone() else {
        return (futures_util::future::Either::Left(std::future::pending()), set);
    };
    let (out, health) = watch::channel(Health::Unhealthy);
    let advertised = CheckAddr::new(config.advertise.host(), config.advertise.port());
    (futures_util::future::Either::Right(checker::run(check, advertised, set, out)), health)
}

/// What the operator or the checks say of the backend, besides its load.
struct Inputs {
    state: watch::Receiver<State>,
    health: watch::Receiver<Health>,
}

/// Measures the load now and then every interval, and publishes each report to the
/// links; a change of state or health is published at once. A failed sample publishes no
/// sample, so that interval sends nothing.
async fn sample_every_interval(
    config: &AgentConfig,
    mut probe: impl MetricsProbe,
    inputs: Inputs,
    reports: watch::Sender<Report>,
) {
    let Inputs { mut state, mut health } = inputs;
    let mut ticks = tokio::time::interval(config.interval);
    // After a stall, sample once and keep the rhythm rather than a burst.
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut failures = FailureStreak::default();
    let mut arrivals = Arrivals::default();
    let (mut state_open, mut health_open) = (true, true);
    loop {
        tokio::select! {
            _ = ticks.tick() => {
                let sample = measure(&mut probe, &mut failures);
                if let (Some(places), Some(sample)) = (&config.slots, &sample) {
                    arrivals.take(places, sample);
                }
                reports.send_modify(|report| report.sample = sample);
            }
            changed = state.changed(), if state_open => match changed {
                Ok(()) => {
                    let now = *state.borrow_and_update();
                    // A repeated signal changes nothing and sends nothing.
                    if reports.send_if_modified(|report| std::mem::replace(&mut report.state, now) != now) {
                        tracing::info!(state = %now, "backend state changed");
                    }
                }
                Err(_) => state_open = false,
            },
            changed = health.changed(), if health_open => match changed {
                Ok(()) => {
                    let now = *health.borrow_and_update();
                    reports.send_if_modified(|report| std::mem::replace(&mut report.health, now) != now);
                }
                Err(_) => health_open = false,
            },
        }
    }
}

/// The metric that tells a slot backend's occupancy: an `in_use 37` line of the
/// metrics file, or a probe's metric of that name.
pub const IN_USE_METRIC: &str = "in_use";

/// The metric that tells how many clients sent by the dispatchers have arrived at a
/// slot backend since it started, in all: an `arrived 412` line of the metrics file.
/// What it adds between two samples ends that many promises, so that a client is not
/// counted both in use and promised. Count only clients a dispatcher sent (those with
/// a ticket, checked when the dispatchers sign them): an arrival nobody promised
/// would end the promise of a client still on its way, and its place could be given
/// twice.
pub const ARRIVED_METRIC: &str = "arrived";

/// What the samples said of a slot backend's clients.
#[derive(Debug, Default)]
struct Arrivals {
    /// The last `arrived` total seen.
    arrived: Option<u64>,
}

impl Arrivals {
    /// Takes the places in use and the arrivals from the sample, when it says: the
    /// backend's own count is what the dispatchers' grants are made from.
    fn take(&mut self, places: &Places, sample: &Sample) {
        let figure = |name: &str| {
            let metric = sample.metrics.iter().find(|metric| metric.name.as_str() == name)?;
            // Saturating: a negative count is none, one beyond u32 every place.
            Some(metric.value.max(0.0).min(f64::from(u32::MAX)) as u32)
        };
        if let Some(arrived) = figure(ARRIVED_METRIC).map(u64::from) {
            // The first total, or one that went back (the backend restarted), only
            // sets where counting starts.
            let new = self.arrived.filter(|&before| before <= arrived).map_or(0, |before| arrived - before);
            self.arrived = Some(arrived);
            places.redeem(new);
        }
        if let Some(in_use) = figure(IN_USE_METRIC) {
            // The heartbeat of this sample carries it: no top-up.
            places.set_in_use_quietly(in_use);
        }
    }
}

fn measure(probe: &mut impl MetricsProbe, failures: &mut FailureStreak) -> Option<Sample> {
    match probe.measure() {
        Ok(sample) => {
            failures.succeed();
            tracing::debug!(?sample, "sampled");
            Some(sample)
        }
        Err(error) => {
            if failures.fail() {
                let times = failures.count();
                tracing::warn!(%error, times, "cannot measure load; skipping this heartbeat");
            }
            // A link that connects now waits for a real sample rather than
            // registering the backend with an old one.
            None
        }
    }
}
