//! The dispatcher's shared state: registry and selector kept in step under one lock.
//!
//! Every request a connection decodes is applied here. Holding the registry and the
//! selector under a single mutex makes each pick linearizable with every heartbeat
//! and removal: a pick never returns a backend that was removed before it began.
//! The requests of one read are applied as a [`Batch`], under one hold of that mutex.
//! Time comes in as parameters (`now` for TTLs, `unix_now` for login timestamps).
//!
//! Layout: `settings.rs` what it is configured with; `outcome.rs` what a heartbeat or an
//! action did; `table.rs` the table behind the lock and its rules; `state.rs` that lock
//! with the counters read beside it; `batch.rs` the requests of one read under one
//! hold; `services.rs` a selector per service; `carriers.rs` which connections carry
//! which backends; `holds.rs` the holds of departed backends; `stats.rs` the counters.
//! This file is the public API over them.

mod batch;
mod carriers;
mod holds;
mod outcome;
mod services;
mod settings;
mod state;
mod stats;
mod table;

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

pub use batch::Batch;
pub use holds::HOLD_MEMORY;
pub use outcome::{
    HeartbeatAccepted, HeartbeatRefused, UnknownBackend, V2HeartbeatAccepted, V2HeartbeatRefused,
};
pub use settings::{DEFAULT_SERVICE, DispatchSettings};
pub use state::Dispatcher;
pub use stats::bump;
pub use stats::{LATENCY_BOUNDS_NANOS, LatencyHistogram, Stats, StatsSnapshot};
pub use table::{FailureOutcome, ServicePicks};

use crate::affinity::rings::{AffinityCounts, Rings};
use crate::ejection::Ejections;
use crate::model::{ConnectionId, Hold, LegacyReport, PickOutcome, PickRequest};
use crate::registry::{Backend, BackendId, Registry};
use crate::scoring::Scoring;
use crate::selection::{BackendLoad, BackendState, Policy};
use carriers::Carriers;
use holds::DepartedHolds;
use loadwise_protocol::entropy;
use loadwise_protocol::v2::ServiceName;
use rand::SeedableRng as _;
use rand::rngs::StdRng;
use services::Services;
use table::Table;

/// How many out-of-date expiry entries [`Dispatcher::next_expiry`] brings up to date
/// per call: about 50 µs under the lock.
const SWEEP_BUDGET: usize = 512;

/// One registered backend as the dispatcher sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct BackendSnapshot {
    pub id: BackendId,
    /// Its registration and last report.
    pub backend: Backend,
    /// Its effective load and the picks accounted to it.
    pub load: BackendLoad,
    /// Whether it takes new clients: the furthest of `held` and `reported`.
    pub state: BackendState,
    /// The state an operator holds it in ([`Dispatcher::set_state`]); `Ready` when none.
    pub held: BackendState,
    /// The state it reports itself (v2 heartbeats); legacy backends are `Ready`.
    pub reported: BackendState,
    /// Everything that holds it, its health and ejection included; `standing()`
    /// says whether it takes clients and, if not, why.
    pub hold: Hold,
    /// Until when its clients' failure reports have it ejected, if they do.
    pub ejected_until: Option<Instant>,
    /// Its ejections since their count last restarted (each lasts longer).
    pub ejections: u32,
    /// Its places and this dispatcher's grant, for a slot backend.
    pub slots: Option<crate::slots::SlotView>,
    /// The service it belongs to.
    pub service: ServiceName,
}

/// One service as operators see it.
#[derive(Debug, Clone, PartialEq)]
pub struct ServiceSummary {
    pub name: ServiceName,
    /// Backends registered in it.
    pub backends: usize,
    /// Those that take new clients.
    pub ready: usize,
    /// How its v2 backends' load is scored.
    pub scoring: Scoring,
    /// Whether legacy traffic belongs to it.
    pub default: bool,
}

impl Dispatcher {
    /// A dispatcher whose random choices are seeded from the operating system, or
    /// from the clock when it gives none: draws need to differ, not to be secret.
    pub fn new(settings: DispatchSettings) -> Self {
        let rng = entropy::os_seeded().unwrap_or_else(|error| {
            tracing::warn!(%error, "random choices seeded from the clock instead");
            entropy::clock_seeded()
        });
        Self::with_rng(settings, rng)
    }

    /// A dispatcher whose random choices follow `seed`, for exact tests and
    /// reproducible simulations.
    pub fn with_seed(settings: DispatchSettings, seed: u64) -> Self {
        Self::with_rng(settings, StdRng::seed_from_u64(seed))
    }

    fn with_rng(settings: DispatchSettings, rng: StdRng) -> Self {
        let max_clock_skew_secs = AtomicU64::new(settings.max_clock_skew.as_secs());
        let default_service = settings.default_service.clone();
        let services =
            Services::new(settings.default_service.clone(), settings.policy, settings.load.clone());
        let table = Table {
            registry: Registry::new(settings.ttl, settings.max_backends),
            services,
            holds: DepartedHolds::new(settings.max_backends),
            legacy_ids: HashMap::new(),
            carriers: Carriers::default(),
            service_picks: BTreeMap::new(),
            clock: None,
            rng,
            settings,
            rings: Rings::default(),
            ejections: Ejections::default(),
            slot_pools: crate::slots::SlotPools::default(),
        };
        let next_id = AtomicU64::new(1);
        let table = Mutex::new(table);
        Dispatcher { table, next_id, max_clock_skew_secs, default_service, stats: Stats::default() }
    }

    /// Applies new settings to the running dispatcher, keeping every backend and
    /// what was learned about it. (What changed is logged by the caller, which
    /// compares whole configurations: `settings::diff`.)
    pub fn reconfigure(&self, new: &DispatchSettings) {
        let mut table = self.lock();
        table.registry.set_ttl(new.ttl);
        table.registry.set_max_backends(new.max_backends);
        table.holds.set_max(new.max_backends);
        table.services.reconfigure(new.policy, &new.load);
        // The default service is fixed for the life of the dispatcher: the legacy
        // backends in its pool cannot be moved.
        let default_service = table.services.default_name().clone();
        table.settings = DispatchSettings { default_service, ..new.clone() };
        self.max_clock_skew_secs.store(new.max_clock_skew.as_secs(), Ordering::Relaxed);
    }

    /// The settings in force.
    pub fn settings(&self) -> DispatchSettings {
        self.lock().settings.clone()
    }

    /// Sets a backend's state, as an operator override: a backend that is not
    /// ready gets no new clients but stays listed. Heartbeats do not reset it.
    pub fn set_state(&self, id: BackendId, state: BackendState) -> Result<(), UnknownBackend> {
        let mut table = self.lock();
        let Table { registry, services, .. } = &mut *table;
        let backend = registry.get(id).ok_or(UnknownBackend(id))?;
        let changed =
            services.of_mut(backend.service()).is_some_and(|selector| selector.set_state(id, state));
        let (service, address) = (self.service_of(backend).clone(), backend.address().to_string());
        drop(table);
        if !changed {
            return Err(UnknownBackend(id));
        }
        tracing::info!(%service, backend = %address, id = %id, %state, "backend state set by an operator");
        Ok(())
    }

    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// A batch that applies requests arrived at `now`, under one hold of the lock.
    pub fn batch(&self, now: Instant) -> Batch<'_> {
        Batch::new(self, now)
    }

    /// Applies a legacy heartbeat received on `connection`. The backend is the one its
    /// address bytes and port name: the same backend whichever connection carries it.
    /// Expired backends are removed first, so that a backend heard from again only
    /// after its TTL registers anew instead of silently reviving its old entry.
    pub fn heartbeat(
        &self,
        connection: ConnectionId,
        heartbeat: &LegacyReport,
        now: Instant,
    ) -> Result<HeartbeatAccepted, HeartbeatRefused> {
        self.batch(now).heartbeat(connection, heartbeat)
    }

    /// Forgets `connection`, which ended, and removes the backends it was the last
    /// to carry: a backend also heard on another open connection stays.
    pub fn disconnect(&self, connection: ConnectionId) -> Vec<(BackendId, Backend)> {
        let removed = self.lock().close(connection);
        self.stats.evicted_disconnected.fetch_add(removed.len() as u64, Ordering::Relaxed);
        removed
    }

    /// Removes every backend whose TTL has passed at `now`, and
    /// Brings back, at `now`, the backends whose ejection has ended.
    pub fn expire(&self, now: Instant) -> Vec<(BackendId, Backend)> {
        let mut table = self.lock();
        let expired = table.expire(now);
        let returned = table.return_ejected(now);
        drop(table);
        self.record_expired(&expired);
        self.record_returned(&returned);
        expired
    }

    /// Applies `client`'s report, at `now`, that backend `chosen` of `service` (the
    /// id its pick reply named) could not be used: see [`crate::ejection`].
    pub fn report_failure(
        &self,
        client: IpAddr,
        service: &ServiceName,
        chosen: u64,
        now: Instant,
    ) -> FailureOutcome {
        self.batch(now).report_failure(client, service, chosen)
    }

    /// The service legacy backends and logins belong to.
    pub fn default_service(&self) -> &ServiceName {
        &self.default_service
    }

    /// Answers one client's request for a backend, at `now`: the one pick entry
    /// point, whichever protocol asked. Counted and timed, always the same way.
    /// Backends whose TTL has passed are removed first, so a pick never names one,
    /// even before the sweeper runs.
    pub fn pick(&self, request: &PickRequest<'_>, now: Instant) -> PickOutcome {
        self.batch(now).pick(request)
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
        let default_service = table.services.default_name();
        let mut all: Vec<_> = table
            .registry
            .iter()
            .filter_map(|(id, backend)| {
                let selector = table.services.of(backend.service())?;
                let load = selector.load(id)?.clone();
                let state = selector.state(id)?;
                let (held, reported) = selector.states(id)?;
                let hold = selector.hold(id)?;
                let service = backend.service().unwrap_or(default_service).clone();
                let ejected_until = table.ejections.ejected_until(id);
                let ejections = table.ejections.ejection_count(id);
                let slots = table.slot_pools.view(id);
                let backend = backend.clone();
                Some(BackendSnapshot {
                    id,
                    backend,
                    load,
                    state,
                    held,
                    reported,
                    hold,
                    ejected_until,
                    ejections,
                    slots,
                    service,
                })
            })
            .collect();
        drop(table);
        all.sort_by_key(|snapshot| snapshot.id);
        all
    }

    /// What each service's keyed picks did, for the services that had one and still
    /// have a backend, sorted by name.
    pub fn affinity_counts(&self) -> Vec<(ServiceName, AffinityCounts)> {
        let table = self.lock();
        let mut all: Vec<_> = table.rings.counts().map(|(name, counts)| (name.clone(), counts)).collect();
        drop(table);
        all.sort_by(|a, b| a.0.cmp(&b.0));
        all
    }

    /// The selection policy in force.
    pub fn policy(&self) -> Policy {
        self.lock().settings.policy
    }

    /// Every service with a backend (the default one always), with its backends
    /// counted by state, sorted by name.
    /// The picks of each service other than the default one that was picked from
    /// (at most 1024 services; later ones count with the default service's).
    pub fn service_picks(&self) -> Vec<(ServiceName, ServicePicks)> {
        let table = self.lock();
        table.service_picks.iter().map(|(name, picks)| (name.clone(), *picks)).collect()
    }

    pub fn services(&self) -> Vec<ServiceSummary> {
        let table = self.lock();
        let mut all: Vec<_> = table
            .services
            .iter()
            .map(|(name, selector)| ServiceSummary {
                name: name.clone(),
                backends: selector.len(),
                ready: selector.ready_len(),
                scoring: table.settings.scoring_of(name).clone(),
                default: table.services.is_default(name),
            })
            .collect();
        drop(table);
        all.sort_by(|a, b| a.name.cmp(&b.name));
        all
    }

    /// When the next backend will expire, for the sweeper to sleep until: no later
    /// than that, and exact unless many backends were heard from since it last asked
    /// (see [`Registry::expiry_bound`]); a sweeper that wakes early and asks again
    /// gets closer, without holding the lock for long at any one time.
    /// An ejection's end counts as an expiry, so that its return is logged on time.
    pub fn next_expiry(&self) -> Option<Instant> {
        let mut table = self.lock();
        let expiry = table.registry.expiry_bound(SWEEP_BUDGET);
        let next_return = table.ejections.next_return();
        drop(table);
        match (expiry, next_return) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

#[cfg(test)]
mod tests;
