//! Asking several dispatcher replicas: a randomised order, a timeout per attempt,
//! an overall deadline, and recently failed replicas tried last.
//!
//! Replicas are independent and hold the same soft state (every agent reports to all
//! of them), so any one that answers is as good as another. The random order spreads
//! clients over the replicas; remembering which replica just failed to answer keeps
//! the next picks from waiting on it again.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::seq::SliceRandom as _;
use rand::{Rng, SeedableRng as _};

use super::{Assigned, PickError, pick_over, pick_service_over};
use crate::tls::ClientTls;
use loadwise_protocol::config::{ConfigError, ensure};
use loadwise_protocol::unix_time_now;
use loadwise_protocol::v2::{Picked, ServiceName};

/// How [`Failover::pick`] spends its time, and how it reaches the dispatchers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailoverConfig {
    /// Longest wait for one dispatcher: connect, send, and read the reply.
    pub attempt_timeout: Duration,
    /// Longest wait for the whole pick, all attempts together.
    pub deadline: Duration,
    /// For this long after a dispatcher failed to answer (unreachable, timed out,
    /// closed, or a malformed reply), it is tried only after the others.
    pub hold_down: Duration,
    /// Speak TLS to every dispatcher (at its TLS listener), trusting this CA; `None`
    /// for plain TCP. A failed handshake counts as a dispatcher that did not answer.
    pub tls: Option<ClientTls>,
}

impl Default for FailoverConfig {
    /// 1 s per attempt, 3 s in all, and a failed dispatcher tried last for 10 s.
    fn default() -> Self {
        FailoverConfig {
            attempt_timeout: Duration::from_secs(1),
            deadline: Duration::from_secs(3),
            hold_down: Duration::from_secs(10),
            tls: None,
        }
    }
}

impl FailoverConfig {
    /// Rejects timeouts that could never let an attempt finish.
    pub fn validate(&self) -> Result<(), ConfigError> {
        ensure(!self.attempt_timeout.is_zero(), "attempt-timeout", "must be greater than zero")?;
        ensure(!self.deadline.is_zero(), "timeout", "must be greater than zero")
    }
}

/// One dispatcher that was asked and did not assign a backend.
#[derive(Debug)]
pub struct Attempt {
    pub dispatcher: String,
    pub error: PickError,
    pub elapsed: Duration,
}

/// A backend (legacy [`Assigned`], or v2 [`Picked`]), the dispatcher that assigned
/// it, and the attempts that failed first.
#[derive(Debug)]
pub struct Answer<B = Assigned> {
    pub backend: B,
    pub dispatcher: String,
    pub failed: Vec<Attempt>,
}

/// No dispatcher assigned a backend: every attempt, in the order made.
#[derive(Debug, thiserror::Error)]
#[error("no dispatcher assigned a backend ({})", summary(attempts, *deadline_reached))]
pub struct FailoverError {
    pub attempts: Vec<Attempt>,
    /// The overall deadline ended the pick before every dispatcher was asked.
    pub deadline_reached: bool,
}

impl FailoverError {
    /// True when some dispatcher answered and said no (no live backend, or the
    /// clocks differ): the dispatchers work, the pool is empty.
    pub fn any_refusal(&self) -> bool {
        self.attempts.iter().any(|attempt| attempt.error.is_refusal())
    }
}

fn summary(attempts: &[Attempt], deadline_reached: bool) -> String {
    let mut parts: Vec<String> =
        attempts.iter().map(|attempt| format!("{}: {}", attempt.dispatcher, attempt.error)).collect();
    if deadline_reached {
        parts.push("the deadline ended the pick".to_owned());
    }
    parts.join("; ")
}

/// A client of several dispatcher replicas. Cheap to share: one per process,
/// used from any task, so that what one pick learns about a failed replica helps
/// the next.
#[derive(Debug)]
pub struct Failover {
    servers: Vec<String>,
    config: FailoverConfig,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    /// When each server (by index) last failed to answer, until it answers again.
    failed_at: Vec<Option<Instant>>,
    rng: StdRng,
}

impl Failover {
    /// A client of `servers` (each `HOST:PORT`), with a random order seeded from
    /// the operating system.
    pub fn new(servers: Vec<String>, config: FailoverConfig) -> Result<Self, ConfigError> {
        Self::with_rng(servers, config, StdRng::from_os_rng())
    }

    /// [`new`](Self::new) with a reproducible order, for tests.
    pub fn with_seed(servers: Vec<String>, config: FailoverConfig, seed: u64) -> Result<Self, ConfigError> {
        Self::with_rng(servers, config, StdRng::seed_from_u64(seed))
    }

    fn with_rng(servers: Vec<String>, config: FailoverConfig, rng: StdRng) -> Result<Self, ConfigError> {
        config.validate()?;
        ensure(!servers.is_empty(), "server", "name at least one dispatcher")?;
        let failed_at = vec![None; servers.len()];
        Ok(Failover { servers, config, state: Mutex::new(State { failed_at, rng }) })
    }

    /// The dispatchers, in the order given.
    pub fn servers(&self) -> &[String] {
        &self.servers
    }

    /// Asks the dispatchers one after another, with a legacy login, until one
    /// assigns a backend, the list is exhausted, or the deadline passes. A dispatcher
    /// that refuses (no live backend) is not held down: it works, and the next pick
    /// may find it filled again.
    pub async fn pick(&self) -> Result<Answer, FailoverError> {
        let tls = self.config.tls.as_ref();
        self.pick_with(|server, budget| async move { pick_over(&server, tls, unix_time_now(), budget).await })
            .await
    }

    /// [`pick`](Self::pick) with a v2 PickRequest for a backend of `service`.
    pub async fn pick_service(&self, service: &ServiceName) -> Result<Answer<Picked>, FailoverError> {
        let tls = self.config.tls.as_ref();
        self.pick_with(|server, budget| async move { pick_service_over(&server, tls, service, budget).await })
            .await
    }

    /// Tries `ask` on each dispatcher in turn (it gets the address and the time the
    /// attempt may take).
    async fn pick_with<B, F>(&self, ask: impl Fn(String, Duration) -> F) -> Result<Answer<B>, FailoverError>
    where
        F: Future<Output = Result<B, PickError>>,
    {
        let started = Instant::now();
        let order = self.order(started);
        let mut failed = Vec::new();
        for index in order {
            let Some(budget) = self.attempt_budget(started) else {
                return Err(FailoverError { attempts: failed, deadline_reached: true });
            };
            let dispatcher = &self.servers[index];
            let attempt_start = Instant::now();
            match ask(dispatcher.clone(), budget).await {
                Ok(backend) => {
                    self.note(index, None);
                    return Ok(Answer { backend, dispatcher: dispatcher.clone(), failed });
                }
                Err(error) => {
                    // A refusal is an answer: the dispatcher works. A timeout on an
                    // attempt cut short by the deadline says nothing either.
                    let cut_short = budget < self.config.attempt_timeout;
                    match &error {
                        error if error.is_refusal() => self.note(index, None),
                        PickError::Timeout { .. } if cut_short => {}
                        _ => self.note(index, Some(Instant::now())),
                    }
                    tracing::debug!(%dispatcher, %error, "dispatcher did not assign a backend; trying the next");
                    failed.push(Attempt {
                        dispatcher: dispatcher.clone(),
                        error,
                        elapsed: attempt_start.elapsed(),
                    });
                }
            }
        }
        Err(FailoverError { attempts: failed, deadline_reached: false })
    }

    /// The time the next attempt may take, or `None` once the deadline has passed.
    fn attempt_budget(&self, started: Instant) -> Option<Duration> {
        let left = self.config.deadline.checked_sub(started.elapsed()).filter(|left| !left.is_zero())?;
        Some(left.min(self.config.attempt_timeout))
    }

    fn order(&self, now: Instant) -> Vec<usize> {
        let mut state = self.lock();
        let State { failed_at, rng } = &mut *state;
        attempt_order(failed_at, now, self.config.hold_down, rng)
    }

    fn note(&self, index: usize, failed: Option<Instant>) {
        self.lock().failed_at[index] = failed;
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // The state is a set of timestamps; a panic elsewhere cannot leave it torn.
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// The order in which to ask the servers: those that have not failed within
/// `hold_down` in random order, then the recently failed ones, longest ago first
/// (the likeliest to have recovered).
pub fn attempt_order(
    failed_at: &[Option<Instant>],
    now: Instant,
    hold_down: Duration,
    rng: &mut impl Rng,
) -> Vec<usize> {
    let recently =
        |index: &usize| failed_at[*index].is_some_and(|at| now.saturating_duration_since(at) < hold_down);
    let mut healthy: Vec<usize> = (0..failed_at.len()).filter(|index| !recently(index)).collect();
    healthy.shuffle(rng);
    let mut held_down: Vec<usize> = (0..failed_at.len()).filter(recently).collect();
    held_down.sort_by_key(|index| failed_at[*index]);
    healthy.extend(held_down);
    healthy
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rng(seed: u64) -> StdRng {
        StdRng::seed_from_u64(seed)
    }

    #[test]
    fn every_server_is_tried_once_in_an_order_that_varies() {
        let now = Instant::now();
        let failed_at = [None; 4];
        let mut seen = std::collections::HashSet::new();
        let mut rng = rng(1);
        for _ in 0..50 {
            let order = attempt_order(&failed_at, now, Duration::from_secs(10), &mut rng);
            let mut sorted = order.clone();
            sorted.sort_unstable();
            assert_eq!(sorted, [0, 1, 2, 3]);
            seen.insert(order[0]);
        }
        assert_eq!(seen.len(), 4, "each server comes first sometimes");
    }

    #[test]
    fn recently_failed_servers_come_last_oldest_failure_first() {
        let now = Instant::now() + Duration::from_secs(60);
        let hold_down = Duration::from_secs(10);
        let failed_at = [Some(now - Duration::from_secs(1)), None, Some(now - Duration::from_secs(5)), None];
        for seed in 0..20 {
            let order = attempt_order(&failed_at, now, hold_down, &mut rng(seed));
            assert_eq!(order[2..], [2, 0]);
            assert!(order[..2].contains(&1) && order[..2].contains(&3));
        }
    }

    #[test]
    fn a_failure_older_than_the_hold_down_is_forgotten() {
        let now = Instant::now() + Duration::from_secs(60);
        let failed_at = [Some(now - Duration::from_secs(10)), None];
        let firsts: std::collections::HashSet<usize> = (0..30)
            .map(|seed| attempt_order(&failed_at, now, Duration::from_secs(10), &mut rng(seed))[0])
            .collect();
        assert_eq!(firsts.len(), 2);
    }

    #[test]
    fn unworkable_settings_are_refused() {
        let servers = vec!["a:1".to_owned()];
        let zero = FailoverConfig { attempt_timeout: Duration::ZERO, ..FailoverConfig::default() };
        assert_eq!(Failover::new(servers.clone(), zero).unwrap_err().setting, "attempt-timeout");
        let zero = FailoverConfig { deadline: Duration::ZERO, ..FailoverConfig::default() };
        assert_eq!(Failover::new(servers, zero).unwrap_err().setting, "timeout");
        assert_eq!(Failover::new(Vec::new(), FailoverConfig::default()).unwrap_err().setting, "server");
    }
}
