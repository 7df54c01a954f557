//! The dispatcher's shared state: registry and selector kept in step under one lock.
//!
//! Every request a connection decodes is applied here. Holding the registry and the
//! selector under a single mutex makes each pick linearizable with every heartbeat
//! and removal: a pick never returns a backend that was removed before it began.
//! The requests of one read are applied as a [`Batch`], under one hold of that mutex.
//! Time comes in as parameters (`now` for TTLs, `unix_now` for login timestamps).

mod batch;
mod stats;

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

pub use crate::selection::Picked;
pub use batch::Batch;
pub(crate) use stats::bump;
pub use stats::{LATENCY_BOUNDS_NANOS, LatencyHistogram, Stats, StatsSnapshot};

use crate::protocol::v2::ServiceName;
use crate::protocol::{AddressError, Heartbeat, LoginReply, LoginRequest};
use crate::registry::{Backend, BackendId, Registry, RegistryFull, Report};
use crate::scoring::Scoring;
use crate::selection::{BackendLoad, BackendState, LoadSettings, Policy, Selector};
use rand::SeedableRng as _;
use rand::rngs::StdRng;

/// The name of the service legacy traffic belongs to, unless configured otherwise.
pub const DEFAULT_SERVICE: &str = "default";

/// The dispatcher settings that selection and expiry depend on.
#[derive(Debug, Clone, PartialEq)]
pub struct DispatchSettings {
    /// A backend with no heartbeat for this long is removed.
    pub ttl: Duration,
    /// A login whose timestamp differs from the dispatcher's clock by more than this
    /// gets the error reply.
    pub max_clock_skew: Duration,
    /// The most backends registered at once.
    pub max_backends: usize,
    /// How backends are chosen.
    pub policy: Policy,
    /// How the cost of a client is learned, and the slow start of new backends.
    pub load: LoadSettings,
    /// The service legacy heartbeats and logins belong to. v2 backends and clients
    /// that name it share its pool with them.
    pub default_service: ServiceName,
    /// How a v2 backend's metrics make its load, in services without their own.
    pub scoring: Scoring,
    /// Services whose load is scored otherwise.
    pub service_scoring: BTreeMap<ServiceName, Scoring>,
}

impl DispatchSettings {
    /// How the load of a v2 backend of `service` is scored.
    pub fn scoring_of(&self, service: &ServiceName) -> &Scoring {
        self.service_scoring.get(service).unwrap_or(&self.scoring)
    }
}

impl Default for DispatchSettings {
    fn default() -> Self {
        DispatchSettings {
            ttl: Duration::from_secs(3),
            max_clock_skew: Duration::from_secs(60),
            max_backends: 10_000,
            policy: Policy::default(),
            load: LoadSettings::default(),
            default_service: ServiceName::new(DEFAULT_SERVICE).expect("the default service name is valid"),
            scoring: Scoring::default(),
            service_scoring: BTreeMap::new(),
        }
    }
}

/// Why a heartbeat registered nothing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeartbeatRefused {
    #[error("unusable address: {0}")]
    Address(#[from] AddressError),
    #[error(transparent)]
    Full(#[from] RegistryFull),
}

/// What an accepted heartbeat did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeartbeatAccepted {
    /// The heartbeat registered a backend that was not in the table.
    pub registered: bool,
    /// The first report above 100 from this backend (to be logged once).
    pub first_invalid_report: bool,
}

/// An operator action named a backend that is not registered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("no backend {0} is registered")]
pub struct UnknownBackend(pub BackendId);

/// Why a login got the error reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum LoginRefused {
    #[error("login timestamp {timestamp} is {skew_secs} s away from the dispatcher's clock ({now})")]
    ClockSkew { timestamp: u64, now: u64, skew_secs: u64 },
    #[error("no live backend")]
    NoBackend,
}

#[derive(Debug)]
struct Table {
    registry: Registry,
    selector: Selector,
    /// The settings in force.
    settings: DispatchSettings,
    /// The random source of the `p2c` policy; seeded by the caller in tests and
    /// simulations, so their picks are exact.
    rng: StdRng,
}

impl Table {
    /// Drops expired backends from both indexes.
    fn expire(&mut self, now: Instant) -> Vec<(BackendId, Backend)> {
        let expired = self.registry.expire(now);
        for (id, _) in &expired {
            self.selector.remove(*id);
        }
        expired
    }

    /// Records a report in the registry and moves the backend in the selector.
    fn apply(
        &mut self,
        id: BackendId,
        report: Report,
        now: Instant,
    ) -> Result<HeartbeatAccepted, RegistryFull> {
        let change = self.registry.heartbeat(id, report, now)?;
        self.selector.report(id, report, now);
        Ok(HeartbeatAccepted {
            registered: change.previous.is_none(),
            first_invalid_report: change.first_invalid_report,
        })
    }
}

/// The live table of backends and the rules that answer logins from it.
#[derive(Debug)]
pub struct Dispatcher {
    table: Mutex<Table>,
    /// Read on every login before the lock is taken, so kept apart from the table.
    max_clock_skew_secs: AtomicU64,
    stats: Stats,
}

/// One registered backend as the dispatcher sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct BackendSnapshot {
    pub id: BackendId,
    /// Its registration and last report.
    pub backend: Backend,
    /// Its effective load and the picks accounted to it.
    pub load: BackendLoad,
    /// Whether it takes new clients.
    pub state: BackendState,
}

impl Dispatcher {
    /// A dispatcher whose random choices are seeded from the operating system.
    pub fn new(settings: DispatchSettings) -> Self {
        Self::with_rng(settings, StdRng::from_os_rng())
    }

    /// A dispatcher whose random choices follow `seed`, for exact tests and
    /// reproducible simulations.
    pub fn with_seed(settings: DispatchSettings, seed: u64) -> Self {
        Self::with_rng(settings, StdRng::seed_from_u64(seed))
    }

    fn with_rng(settings: DispatchSettings, rng: StdRng) -> Self {
        let max_clock_skew_secs = AtomicU64::new(settings.max_clock_skew.as_secs());
        let table = Table {
            registry: Registry::new(settings.ttl, settings.max_backends),
            selector: Selector::new(settings.policy, settings.load.clone()),
            rng,
            settings,
        };
        Dispatcher { table: Mutex::new(table), max_clock_skew_secs, stats: Stats::default() }
    }

    /// Applies new settings to the running dispatcher, keeping every backend and
    /// what was learned about it. (What changed is logged by the caller, which
    /// compares whole configurations: `settings::diff`.)
    pub fn reconfigure(&self, new: &DispatchSettings) {
        let mut table = self.lock();
        table.registry.set_ttl(new.ttl);
        table.registry.set_max_backends(new.max_backends);
        table.selector.set_settings(new.load.clone());
        if table.selector.policy() != new.policy {
            table.selector.set_policy(new.policy);
        }
        table.settings = new.clone();
        self.max_clock_skew_secs.store(new.max_clock_skew.as_secs(), Ordering::Relaxed);
    }

    /// The settings in force.
    pub fn settings(&self) -> DispatchSettings {
        self.lock().settings.clone()
    }

    /// Sets a backend's state, as an operator override: a backend that is not
    /// ready gets no new clients but stays listed. Heartbeats do not reset it.
    pub fn set_state(&self, id: BackendId, state: BackendState) -> Result<(), UnknownBackend> {
        let changed = self.lock().selector.set_state(id, state);
        if !changed {
            return Err(UnknownBackend(id));
        }
        tracing::info!(backend = %id, %state, "backend state set by an operator");
        Ok(())
    }

    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Table> {
        // A panic while holding the lock leaves both indexes consistent (every
        // mutation is a pair of infallible set operations), so poisoning is ignored.
        self.table.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// A batch that applies requests arrived at `now`, under one hold of the lock.
    pub fn batch(&self, now: Instant) -> Batch<'_> {
        Batch::new(self, now)
    }

    /// Applies a heartbeat received on connection `id`. Expired backends are
    /// removed first, so that a backend heard from again only after its TTL
    /// registers anew instead of silently reviving its old entry.
    pub fn heartbeat(
        &self,
        id: BackendId,
        heartbeat: &Heartbeat,
        now: Instant,
    ) -> Result<HeartbeatAccepted, HeartbeatRefused> {
        self.batch(now).heartbeat(id, heartbeat)
    }

    /// Removes the backend of connection `id` because the connection ended.
    pub fn disconnect(&self, id: BackendId) -> Option<Backend> {
        let mut table = self.lock();
        let backend = table.registry.remove(id)?;
        table.selector.remove(id);
        drop(table);
        bump(&self.stats.evicted_disconnected);
        Some(backend)
    }

    /// Removes every backend whose TTL has passed at `now`.
    pub fn expire(&self, now: Instant) -> Vec<(BackendId, Backend)> {
        let expired = self.lock().expire(now);
        self.record_expired(&expired);
        expired
    }

    fn record_expired(&self, expired: &[(BackendId, Backend)]) {
        for (id, backend) in expired {
            bump(&self.stats.evicted_expired);
            tracing::info!(backend = %id, ip = ?backend.report.ip, port = backend.report.port, "backend expired: no heartbeat within the TTL");
        }
    }

    /// Picks a live backend at `now` under the configured policy and accounts for
    /// the client sent there, in one step under the lock. Backends whose TTL has
    /// passed are removed first, so a pick never names one, even before the sweeper
    /// runs.
    pub fn pick(&self, now: Instant) -> Option<Picked> {
        self.batch(now).pick()
    }

    /// Answers a login: checks its timestamp against `unix_now`, then picks.
    pub fn login(&self, request: LoginRequest, now: Instant, unix_now: u64) -> Result<Picked, LoginRefused> {
        self.batch(now).login(request, unix_now)
    }

    /// Picks a backend for a client that asked by any means (a login frame, an
    /// HTTP pick), counting the outcome and timing it.
    pub fn pick_for_client(&self, now: Instant) -> Result<Picked, LoginRefused> {
        self.batch(now).pick_for_client()
    }

    /// The reply frame for a login outcome.
    pub fn reply(outcome: &Result<Picked, LoginRefused>) -> LoginReply {
        match outcome {
            Ok(picked) => LoginReply::Backend { ip: picked.ip, port: picked.port },
            Err(_) => LoginReply::Error,
        }
    }

    /// How long a backend stays registered without a heartbeat.
    pub fn ttl(&self) -> Duration {
        self.lock().registry.ttl()
    }

    /// The number of registered backends.
    pub fn backend_count(&self) -> usize {
        self.lock().registry.len()
    }

    /// A copy of every registered backend, sorted by id.
    pub fn backends(&self) -> Vec<(BackendId, Backend)> {
        self.snapshot().into_iter().map(|snapshot| (snapshot.id, snapshot.backend)).collect()
    }

    /// Every registered backend with its effective load, sorted by id.
    pub fn snapshot(&self) -> Vec<BackendSnapshot> {
        let table = self.lock();
        let mut all: Vec<_> = table
            .registry
            .iter()
            .filter_map(|(id, backend)| {
                let load = table.selector.load(id)?.clone();
                let state = table.selector.state(id)?;
                Some(BackendSnapshot { id, backend: backend.clone(), load, state })
            })
            .collect();
        drop(table);
        all.sort_by_key(|snapshot| snapshot.id);
        all
    }

    /// The selection policy in force.
    pub fn policy(&self) -> Policy {
        self.lock().selector.policy()
    }

    /// When the next backend will expire, for the sweeper to sleep until.
    pub fn next_expiry(&self) -> Option<Instant> {
        self.lock().registry.next_expiry()
    }
}

#[cfg(test)]
mod tests;
