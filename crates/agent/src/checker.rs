//! The health check loop: checks the backend every interval, turns the results into a
//! verdict ([`RiseFall`](crate::rise_fall::RiseFall)), and publishes it, joined with the
//! health the library user sets, to the heartbeats.

use loadwise_protocol::v2::Health;
use tokio::sync::watch;
use tokio::time::MissedTickBehavior;

use crate::check::{self, CheckFailure};
use crate::check_spec::{CheckAddr, HealthCheck};
use crate::rise_fall::RiseFall;
use crate::streak::FailureStreak;

/// Checks until dropped (the run loop owns this future and drops it when the agent
/// stops; each check is bounded by its timeout). Publishes on `out` the check's
/// verdict, unhealthy whenever `set` (the library user's say) is. A change of `set`
/// is published at once, even while a check is under way.
pub(crate) async fn run(
    check: HealthCheck,
    advertised: CheckAddr,
    set: watch::Receiver<Health>,
    out: watch::Sender<Health>,
) {
    let (verdicts, checked) = watch::channel(Health::Unhealthy);
    tokio::join!(check_every_interval(check, advertised, verdicts), join(checked, set, out));
}

/// Runs a check every interval and publishes the verdict on `verdicts`; never ends.
async fn check_every_interval(check: HealthCheck, advertised: CheckAddr, verdicts: watch::Sender<Health>) {
    tracing::info!(check = %check.target, interval = ?check.interval, timeout = ?check.timeout,
        rise = check.rise, fall = check.fall, "health checks started; unhealthy until {} pass in a row", check.rise);
    let mut verdict = RiseFall::new(check.rise, check.fall);
    let mut failures = FailureStreak::default();
    let mut ticks = tokio::time::interval(check.interval);
    // A check that hit its timeout delays the next rather than firing two at once.
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let result = check::run_once(&check.target, &advertised, check.timeout).await;
        if let Some(now) = observe(&check, &mut verdict, &mut failures, result) {
            verdicts.send_replace(now);
        }
    }
}

/// Publishes on `out` the joined health whenever the check's verdict or the set
/// health changes; ends only if both senders are gone (the check's never is).
async fn join(
    mut checked: watch::Receiver<Health>,
    mut set: watch::Receiver<Health>,
    out: watch::Sender<Health>,
) {
    let (mut checked_open, mut set_open) = (true, true);
    while checked_open || set_open {
        tokio::select! {
            changed = checked.changed(), if checked_open => checked_open = changed.is_ok(),
            changed = set.changed(), if set_open => set_open = changed.is_ok(),
        }
        let now = joined(*checked.borrow_and_update(), *set.borrow_and_update());
        out.send_if_modified(|health| std::mem::replace(health, now) != now);
    }
}

/// Unhealthy if either says so.
fn joined(checked: Health, set: Health) -> Health {
    match (checked, set) {
        (Health::Healthy, Health::Healthy) => Health::Healthy,
        _ => Health::Unhealthy,
    }
}

/// Feeds one result to the verdict, and logs a flip with its reason; returns the new
/// verdict if it flipped. While the backend stays unhealthy, failures are logged on
/// the 1st, 2nd, 4th... in a row, so an operator learns why a backend never comes up
/// without a line per check.
fn observe(
    check: &HealthCheck,
    verdict: &mut RiseFall,
    failures: &mut FailureStreak,
    result: Result<(), CheckFailure>,
) -> Option<Health> {
    let passed = result.is_ok();
    let flip = verdict.observe(passed);
    match (flip, result) {
        (Some(Health::Healthy), _) => {
            failures.succeed();
            tracing::info!(check = %check.target, health = "healthy", passes = check.rise, "backend is healthy: it gets clients");
        }
        (Some(Health::Unhealthy), Err(reason)) => {
            failures.fail();
            tracing::warn!(check = %check.target, health = "unhealthy", %reason, failures = check.fall,
                "backend is unhealthy: it gets no new clients");
        }
        (None, Err(reason)) => {
            let streak = failures.fail();
            if verdict.health() == Health::Unhealthy && streak {
                tracing::warn!(check = %check.target, %reason, failures = failures.count(), "health check failed; still unhealthy");
            } else {
                tracing::debug!(check = %check.target, %reason, "health check failed");
            }
        }
        (_, Ok(())) => {
            failures.succeed();
            tracing::debug!(check = %check.target, "health check passed");
        }
    }
    flip
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_set_health_can_only_make_it_worse() {
        assert_eq!(joined(Health::Healthy, Health::Healthy), Health::Healthy);
        assert_eq!(joined(Health::Healthy, Health::Unhealthy), Health::Unhealthy);
        assert_eq!(joined(Health::Unhealthy, Health::Healthy), Health::Unhealthy);
    }
}
