//! The agent's run loop: one sampler measures the load every interval and publishes
//! it to a link per dispatcher.

use std::future::Future;

use tokio::sync::watch;
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;

use crate::config::AgentConfig;
use crate::probe::MetricsProbe;
use crate::replicas;
use crate::sample::{Report, Sample};
use crate::streak::FailureStreak;
use loadwise_protocol::config::ConfigError;
use loadwise_protocol::v2::State;

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
    mut state: watch::Receiver<State>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ConfigError> {
    config.validate()?;
    if config.max_backoff > config.interval {
        tracing::warn!(max_backoff = ?config.max_backoff, interval = ?config.interval,
            "max-backoff is above the interval: after a dispatcher restarts, re-registering may take longer than two intervals");
    }
    let initial = Report { sample: None, state: *state.borrow_and_update() };
    let (reports, latest) = watch::channel(initial);
    let stop = CancellationToken::new();
    let mut links = replicas::Links::new(&config, latest, stop.clone());
    let changes = replicas::follow_names(&config, &mut links)?;
    tokio::select! {
        () = sample_every_interval(&config, probe, state, reports) => {}
        () = links.follow(changes) => {}
        () = shutdown => {}
    }
    stop.cancel();
    links.join().await;
    tracing::info!("agent stopped");
    Ok(())
}

/// Measures the load now and then every interval, and publishes each report to the
/// links; a change of state is published at once. A failed sample publishes no
/// sample, so that interval sends nothing.
async fn sample_every_interval(
    config: &AgentConfig,
    mut probe: impl MetricsProbe,
    mut state: watch::Receiver<State>,
    reports: watch::Sender<Report>,
) {
    let mut ticks = tokio::time::interval(config.interval);
    // After a stall, sample once and keep the rhythm rather than a burst.
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut failures = FailureStreak::default();
    let mut state_open = true;
    loop {
        tokio::select! {
            _ = ticks.tick() => {
                let sample = measure(&mut probe, &mut failures);
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
