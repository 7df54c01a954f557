//! Asking several dispatcher replicas: a randomised order, a timeout per attempt,
//! an overall deadline, and recently failed replicas tried last.
//!
//! Replicas are independent and hold the same soft state (every agent reports to all
//! of them), so any one that answers is as good as another. The random order spreads
//! clients over the replicas; remembering which replica just failed to answer keeps
//! the next picks from waiting on it again.
//!
//! The replicas may also come from DNS names ([`DiscoveryConfig`]): a pick looks
//! them up again when the last lookup is older than the re-resolve interval, or
//! sooner after a replica failed to answer, and a replica missing from the answers
//! is dropped only after the grace period.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::seq::SliceRandom as _;
use rand::{Rng, SeedableRng as _};

use crate::discover::follow::LOOKUP_TIMEOUT;
use crate::discover::{DiscoveryConfig, DnsSource, MAX_REPLICAS, Membership, Resolver, log_applied};
use crate::single::{Assigned, PickError, pick_keyed_over, pick_over};
use crate::tls::ClientTls;
use loadwise_protocol::config::{ConfigError, ensure};
use loadwise_protocol::entropy::{self, NoRandomness};
use loadwise_protocol::unix_time_now;
use loadwise_protocol::v2::{PickKey, Picked, ServiceName};

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
    /// DNS names whose records are replicas too, besides the servers given.
    pub discovery: DiscoveryConfig,
}

impl Default for FailoverConfig {
    /// 1 s per attempt, 3 s in all, a failed dispatcher tried last for 10 s, and
    /// no DNS names.
    fn default() -> Self {
        FailoverConfig {
            attempt_timeout: Duration::from_secs(1),
            deadline: Duration::from_secs(3),
            hold_down: Duration::from_secs(10),
            tls: None,
            discovery: DiscoveryConfig::default(),
        }
    }
}

impl FailoverConfig {
    /// Rejects timeouts that could never let an attempt finish.
    pub fn validate(&self) -> Result<(), ConfigError> {
        ensure(!self.attempt_timeout.is_zero(), "attempt-timeout", "must be greater than zero")?;
        ensure(!self.deadline.is_zero(), "timeout", "must be greater than zero")?;
        self.discovery.validate()
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
#[error("no dispatcher assigned a backend ({})", summary(attempts, lookups, *deadline_reached))]
pub struct FailoverError {
    pub attempts: Vec<Attempt>,
    /// The DNS names that could not be looked up, or had no records, on this pick.
    pub lookups: Vec<String>,
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

fn summary(attempts: &[Attempt], lookups: &[String], deadline_reached: bool) -> String {
    let mut parts: Vec<String> = lookups.to_vec();
    parts.extend(attempts.iter().map(|attempt| format!("{}: {}", attempt.dispatcher, attempt.error)));
    if parts.is_empty() && !deadline_reached {
        parts.push("no replica known yet".to_owned());
    }
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
    /// The DNS names followed, if any.
    discovered: Option<Discovered>,
}

#[derive(Debug)]
struct State {
    /// When each server last failed to answer, until it answers again.
    failed_at: HashMap<String, Instant>,
    rng: StdRng,
    /// The servers given, then the replicas found in DNS that they do not name.
    replicas: Vec<String>,
    /// The name the TLS certificate of each replica found in DNS should carry.
    tls_names: HashMap<String, String>,
}

/// The replica sets of the DNS names, and when to look them up next.
#[derive(Debug)]
struct Discovered {
    resolver: Resolver,
    /// One lookup at a time; other picks use the set as it is meanwhile.
    sets: tokio::sync::Mutex<Sets>,
}

#[derive(Debug)]
struct Sets {
    names: Vec<(DnsSource, Membership)>,
    /// `None` until the first lookup, which every pick waits for.
    last_lookup: Option<Instant>,
    next_lookup: Option<Instant>,
    failures: u32,
    /// Why the last lookups found nothing, for the error of a pick that fails.
    problems: Vec<String>,
}

/// Why a [`Failover`] cannot be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SetupError {
    /// A setting cannot work; it is named.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The random order of the dispatchers cannot be seeded.
    #[error(transparent)]
    NoRandomness(#[from] NoRandomness),
}

impl SetupError {
    /// The setting at fault, if a setting is.
    pub fn setting(&self) -> Option<&'static str> {
        match self {
            SetupError::Config(error) => Some(error.setting),
            SetupError::NoRandomness(_) => None,
        }
    }
}

impl Failover {
    /// A client of `servers` (each `HOST:PORT`) and of the replicas of the
    /// configuration's DNS names, with a random order seeded from the operating
    /// system; fails, rather than panics, where the system gives no randomness.
    pub fn new(servers: Vec<String>, config: FailoverConfig) -> Result<Self, SetupError> {
        let rng = entropy::os_seeded()?;
        Ok(Self::with_rng(servers, config, rng)?)
    }

    /// [`new`](Self::new) with a reproducible order, for tests.
    pub fn with_seed(servers: Vec<String>, config: FailoverConfig, seed: u64) -> Result<Self, ConfigError> {
        Self::with_rng(servers, config, StdRng::seed_from_u64(seed))
    }

    fn with_rng(servers: Vec<String>, config: FailoverConfig, rng: StdRng) -> Result<Self, ConfigError> {
        config.validate()?;
        let names = &config.discovery.sources;
        ensure(
            !servers.is_empty() || !names.is_empty(),
            "server",
            "name at least one dispatcher (or a DNS name with servers-from)",
        )?;
        let discovered = match names.is_empty() {
            true => None,
            false => Some(Discovered::new(&config.discovery)?),
        };
        let state =
            State { failed_at: HashMap::new(), rng, replicas: servers.clone(), tls_names: HashMap::new() };
        Ok(Failover { servers, config, state: Mutex::new(state), discovered })
    }

    /// The dispatchers given, in the order given.
    pub fn servers(&self) -> &[String] {
        &self.servers
    }

    /// The dispatchers a pick asks now: those given, then the replicas found in DNS.
    pub fn replicas(&self) -> Vec<String> {
        self.lock().replicas.clone()
    }

    /// Asks the dispatchers one after another, with a legacy login, until one
    /// assigns a backend, the list is exhausted, or the deadline passes. A dispatcher
    /// that refuses (no live backend) is not held down: it works, and the next pick
    /// may find it filled again.
    pub async fn pick(&self) -> Result<Answer, FailoverError> {
        let tls = self.config.tls.as_ref();
        self.pick_with(|server, tls_name, budget| async move {
            let tls = tls.map(|tls| match tls_name {
                Some(name) => tls.clone().or_server_name(&name),
                None => tls.clone(),
            });
            pick_over(&server, tls.as_ref(), unix_time_now(), budget).await
        })
        .await
    }

    /// [`pick`](Self::pick) with a v2 PickRequest for a backend of `service`.
    pub async fn pick_service(&self, service: &ServiceName) -> Result<Answer<Picked>, FailoverError> {
        self.pick_keyed(service, &PickKey::NONE).await
    }

    /// [`pick_service`](Self::pick_service) with an affinity key: every replica that
    /// sees the same backends names the same one for `key` while it has room, so
    /// asking another replica after a failure keeps the affinity.
    pub async fn pick_keyed(
        &self,
        service: &ServiceName,
        key: &PickKey,
    ) -> Result<Answer<Picked>, FailoverError> {
        let tls = self.config.tls.as_ref();
        self.pick_with(|server, tls_name, budget| async move {
            let tls = tls.map(|tls| match tls_name {
                Some(name) => tls.clone().or_server_name(&name),
                None => tls.clone(),
            });
            pick_keyed_over(&server, tls.as_ref(), service, key, budget).await
        })
        .await
    }

    /// Tries `ask` on each dispatcher in turn (it gets the address, the name its
    /// TLS certificate should carry if it was found in DNS, and the time the
    /// attempt may take).
    async fn pick_with<B, F>(
        &self,
        ask: impl Fn(String, Option<String>, Duration) -> F,
    ) -> Result<Answer<B>, FailoverError>
    where
        F: Future<Output = Result<B, PickError>>,
    {
        let started = Instant::now();
        let lookups = self.refresh(started).await;
        let (replicas, order) = self.order(started);
        let mut failed = Vec::new();
        for index in order {
            let Some(budget) = self.attempt_budget(started) else {
                self.failed_soon(&failed).await;
                return Err(FailoverError { attempts: failed, lookups, deadline_reached: true });
            };
            let dispatcher = &replicas[index];
            let attempt_start = Instant::now();
            match ask(dispatcher.clone(), self.tls_name(dispatcher), budget).await {
                Ok(backend) => {
                    self.note(dispatcher, None);
                    self.failed_soon(&failed).await;
                    return Ok(Answer { backend, dispatcher: dispatcher.clone(), failed });
                }
                Err(error) => {
                    // A refusal is an answer: the dispatcher works. A timeout on an
                    // attempt cut short by the deadline says nothing either.
                    let cut_short = budget < self.config.attempt_timeout;
                    match &error {
                        error if error.is_refusal() => self.note(dispatcher, None),
                        PickError::Timeout { .. } if cut_short => {}
                        _ => self.note(dispatcher, Some(Instant::now())),
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
        self.failed_soon(&failed).await;
        Err(FailoverError { attempts: failed, lookups, deadline_reached: false })
    }

    /// Looks the DNS names up again if the last lookup is due, within what is left
    /// of the pick's deadline, and publishes the set; returns why names found
    /// nothing. The first pick waits for the first lookup; later ones wait only if
    /// they find it due, and not for another pick's.
    async fn refresh(&self, started: Instant) -> Vec<String> {
        let Some(discovered) = &self.discovered else { return Vec::new() };
        let mut sets = match discovered.sets.try_lock() {
            Ok(sets) => sets,
            Err(_) if !self.lock().replicas.is_empty() => return Vec::new(),
            Err(_) => discovered.sets.lock().await,
        };
        let now = Instant::now();
        if sets.next_lookup.is_some_and(|next| now < next) {
            return sets.problems.clone();
        }
        let left = self.config.deadline.saturating_sub(started.elapsed());
        discovered.lookup(&mut sets, &self.config.discovery, left.min(LOOKUP_TIMEOUT)).await;
        let mut replicas = self.servers.clone();
        let mut tls_names = HashMap::new();
        for (source, membership) in &sets.names {
            for replica in membership.members() {
                let replica = replica.to_string();
                if !replicas.contains(&replica) {
                    tls_names.insert(replica.clone(), source.host_name().to_owned());
                    replicas.push(replica);
                }
            }
        }
        let mut state = self.lock();
        state.replicas = replicas;
        state.tls_names = tls_names;
        sets.problems.clone()
    }

    /// After a replica found in DNS failed to answer, brings the next lookup
    /// forward (to no sooner than the shortest gap after the last one): it may
    /// have left the set.
    async fn failed_soon(&self, failed: &[Attempt]) {
        let Some(discovered) = &self.discovered else { return };
        let lost = failed
            .iter()
            .any(|attempt| !attempt.error.is_refusal() && !self.servers.contains(&attempt.dispatcher));
        if !lost {
            return;
        }
        let mut sets = discovered.sets.lock().await;
        if let Some(last) = sets.last_lookup {
            let soon = last + self.config.discovery.min_gap();
            sets.next_lookup = Some(sets.next_lookup.map_or(soon, |next| next.min(soon)));
        }
    }

    /// The name the TLS certificate of a replica found in DNS should carry.
    fn tls_name(&self, dispatcher: &str) -> Option<String> {
        self.config.tls.as_ref()?;
        self.lock().tls_names.get(dispatcher).cloned()
    }

    /// The time the next attempt may take, or `None` once the deadline has passed.
    fn attempt_budget(&self, started: Instant) -> Option<Duration> {
        let left = self.config.deadline.checked_sub(started.elapsed()).filter(|left| !left.is_zero())?;
        Some(left.min(self.config.attempt_timeout))
    }

    /// The replicas now, and the order in which to ask them.
    fn order(&self, now: Instant) -> (Vec<String>, Vec<usize>) {
        let mut state = self.lock();
        let State { failed_at, rng, replicas, .. } = &mut *state;
        let failures: Vec<Option<Instant>> =
            replicas.iter().map(|replica| failed_at.get(replica).copied()).collect();
        let order = attempt_order(&failures, now, self.config.hold_down, rng);
        (replicas.clone(), order)
    }

    fn note(&self, dispatcher: &str, failed: Option<Instant>) {
        let mut state = self.lock();
        match failed {
            Some(at) => state.failed_at.insert(dispatcher.to_owned(), at),
            None => state.failed_at.remove(dispatcher),
        };
        // Forget replicas that left the set, so the map stays as small as the set.
        if state.failed_at.len() > state.replicas.len() {
            let State { failed_at, replicas, .. } = &mut *state;
            failed_at.retain(|server, _| replicas.contains(server));
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // The state is a set of timestamps; a panic elsewhere cannot leave it torn.
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Discovered {
    fn new(config: &DiscoveryConfig) -> Result<Self, ConfigError> {
        let resolver = Resolver::new(config.resolver)
            .map_err(|error| ConfigError::new("resolver", error.to_string()))?;
        let names = config
            .sources
            .iter()
            .map(|source| (source.clone(), Membership::new(config.grace, MAX_REPLICAS)))
            .collect();
        let sets = Sets { names, last_lookup: None, next_lookup: None, failures: 0, problems: Vec::new() };
        Ok(Discovered { resolver, sets: tokio::sync::Mutex::new(sets) })
    }

    /// Looks every name up once, each within `timeout`, and applies the answers.
    async fn lookup(&self, sets: &mut Sets, config: &DiscoveryConfig, timeout: Duration) {
        let mut problems = Vec::new();
        for (source, membership) in &mut sets.names {
            let answer = match self.resolver.lookup(source, timeout).await {
                Ok(answer) if answer.is_empty() => {
                    tracing::warn!(%source, kept = membership.len(), "the DNS answer has no records: keeping the replicas known so far");
                    problems.push(format!("{source}: the DNS answer has no records"));
                    continue;
                }
                Ok(answer) => answer,
                Err(error) => {
                    tracing::warn!(%source, %error, kept = membership.len(), "DNS lookup failed: keeping the replicas known so far");
                    problems.push(format!("{source}: {error}"));
                    continue;
                }
            };
            let applied = membership.apply(&answer, Instant::now());
            log_applied(source, &applied, config.grace);
        }
        let now = Instant::now();
        sets.failures = if problems.is_empty() { 0 } else { sets.failures.saturating_add(1) };
        let wait = if sets.failures == 0 { config.interval } else { config.retry_delay(sets.failures) };
        sets.last_lookup = Some(now);
        sets.next_lookup = Some(now + wait);
        sets.problems = problems;
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
        assert_eq!(Failover::new(servers.clone(), zero).unwrap_err().setting(), Some("attempt-timeout"));
        let zero = FailoverConfig { deadline: Duration::ZERO, ..FailoverConfig::default() };
        assert_eq!(Failover::new(servers, zero).unwrap_err().setting(), Some("timeout"));
        assert_eq!(
            Failover::new(Vec::new(), FailoverConfig::default()).unwrap_err().setting(),
            Some("server")
        );
    }
}
