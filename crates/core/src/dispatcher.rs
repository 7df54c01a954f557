//! The dispatcher's shared state: registry and selector kept in step under one lock.
//!
//! Every request a connection decodes is applied here. Holding the registry and the
//! selector under a single mutex makes each pick linearizable with every heartbeat
//! and removal: a pick never returns a backend that was removed before it began.
//! The requests of one read are applied as a [`Batch`], under one hold of that mutex.
//! Time comes in as parameters (`now` for TTLs, `unix_now` for login timestamps).

mod batch;
mod holds;
mod services;
mod stats;

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

pub use batch::Batch;
pub use holds::HOLD_MEMORY;
pub use stats::bump;
pub use stats::{
    ConnectionKind, ConnectionRefusal, LATENCY_BOUNDS_NANOS, LatencyHistogram, Stats, StatsSnapshot,
};

use crate::affinity::{AffinityCounts, AffinitySettings, Identity, Rings};
use crate::model::{
    self, AddressForm, BackendKey, BackendName, Destination, Endpoint, LegacyName, Load, PickOutcome,
    PickRequest, PickTarget,
};
use crate::registry::{Backend, BackendId, Registry, RegistryFull, Report, V2Detail};
use crate::scoring::Scoring;
use crate::selection::{BackendLoad, BackendState, LoadSettings, Policy};
use holds::DepartedHolds;
use loadwise_protocol::entropy;
use loadwise_protocol::v2::{self, Host, ServiceName};
use loadwise_protocol::{AddressError, Heartbeat, IpField};
use rand::SeedableRng as _;
use rand::rngs::StdRng;
use services::Services;

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
    /// How far above the mean a keyed pick may load a backend, in services without
    /// their own.
    pub affinity: AffinitySettings,
    /// Services whose keyed picks have a balance factor of their own.
    pub service_balance_factor: BTreeMap<ServiceName, f64>,
    /// Services whose keyed picks have a slack of their own.
    pub service_slack: BTreeMap<ServiceName, f64>,
}

impl DispatchSettings {
    /// How the load of a v2 backend of `service` is scored.
    pub fn scoring_of(&self, service: &ServiceName) -> &Scoring {
        self.service_scoring.get(service).unwrap_or(&self.scoring)
    }

    /// The bound of `service`'s keyed picks: its own balance factor and slack, each
    /// where it has one.
    pub fn affinity_of(&self, service: &ServiceName) -> AffinitySettings {
        let own = |map: &BTreeMap<ServiceName, f64>, top: f64| map.get(service).copied().unwrap_or(top);
        AffinitySettings {
            balance_factor: own(&self.service_balance_factor, self.affinity.balance_factor),
            slack: own(&self.service_slack, self.affinity.slack),
        }
    }

    /// Checks the affinity bound of every service.
    pub fn validate_affinity(&self) -> Result<(), loadwise_protocol::config::ConfigError> {
        self.affinity.validate()?;
        let mut overridden = self.service_balance_factor.keys().chain(self.service_slack.keys());
        overridden.try_for_each(|service| self.affinity_of(service).validate())
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
            affinity: AffinitySettings::default(),
            service_balance_factor: BTreeMap::new(),
            service_slack: BTreeMap::new(),
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

/// Why a v2 heartbeat registered nothing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum V2HeartbeatRefused {
    /// The default service is shared with legacy clients, whose replies hold an
    /// address as at most 15 characters of text.
    #[error(
        "the default service {service} is shared with legacy clients: its backends' address must fit in 15 characters (an IPv4 address, or a short IPv6 address or host name)"
    )]
    LegacyAddress { service: ServiceName },
    #[error(transparent)]
    Full(#[from] RegistryFull),
}

/// What an accepted v2 heartbeat did.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct V2HeartbeatAccepted {
    /// The dispatcher's id of the backend.
    pub id: BackendId,
    /// The heartbeat registered a backend that was not in the table.
    pub registered: bool,
    /// The load its service's scoring made; `None` when a figure was missing.
    pub score: Option<f64>,
}

/// How many out-of-date expiry entries [`Dispatcher::next_expiry`] brings up to date
/// per call: about 50 µs under the lock.
const SWEEP_BUDGET: usize = 512;

#[derive(Debug)]
struct Table {
    registry: Registry,
    services: Services,
    /// Operators' holds of departed backends, given back when they return.
    holds: DepartedHolds,
    /// The latest instant the table was used at: when a backend leaves by a closed
    /// connection, which comes with no time of its own. Set at every locking (see
    /// [`Table::expire`]), so before any backend registers.
    clock: Option<Instant>,
    /// The settings in force.
    settings: DispatchSettings,
    /// The random source of the `p2c` draws and of each backend's place in the tie
    /// band; from the operating system in production, so that replicas differ, and
    /// seeded by the caller in tests and simulations, so that their picks are exact.
    rng: StdRng,
    /// Operators' holds by service and address ([`Dispatcher::set_state`]), so that
    /// a heartbeat of the same address on another connection (any allowed peer, while
    /// the held one is still connected) registers a backend that is held too, not a
    /// ready one. Cleared when the operator sets the address ready again.
    address_holds: HashMap<(ServiceName, String), BackendState>,
    /// Picks of services other than the default one, by outcome; kept after a
    /// service's last backend leaves, so that counters never go back.
    service_picks: BTreeMap<ServiceName, ServicePicks>,
    /// The consistent-hash rings of the services that had keyed picks.
    rings: Rings,
}

/// The picks of one service, by outcome (see [`Dispatcher::service_picks`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ServicePicks {
    pub answered: u64,
    pub no_backend: u64,
}

/// The most services whose picks are counted apart: past it (services come and go),
/// a new service's picks count with the default service's, so that metrics stay bounded.
const MAX_COUNTED_SERVICES: usize = 1024;

impl Table {
    /// Holds a newly registered backend as an operator held its address, if one did.
    fn restore_address_hold(&mut self, id: BackendId, service: &ServiceName) {
        if self.address_holds.is_empty() {
            return;
        }
        let Some(backend) = self.registry.get(id) else { return };
        let key = (service.clone(), backend.address().to_string());
        if let (Some(&held), Some(selector)) = (self.address_holds.get(&key), self.services.get_mut(service))
        {
            selector.set_state(id, held);
        }
    }

    /// Counts a pick of a service other than the default one that exists.
    fn count_pick(&mut self, service: &ServiceName, answered: bool) {
        if self.services.is_default(service) {
            return;
        }
        let full = self.service_picks.len() >= MAX_COUNTED_SERVICES;
        let counts = match self.service_picks.get_mut(service) {
            Some(counts) => counts,
            None if full => return,
            None => self.service_picks.entry(service.clone()).or_default(),
        };
        match answered {
            true => counts.answered += 1,
            false => counts.no_backend += 1,
        }
    }

    /// Drops expired backends from every index.
    fn expire(&mut self, now: Instant) -> Vec<(BackendId, Backend)> {
        self.clock = self.clock.max(Some(now));
        let expired = self.registry.expire(now);
        for (id, backend) in &expired {
            self.remember_hold(*id, backend);
            self.services.forget(*id, backend);
        }
        if !expired.is_empty() {
            self.forget_rings();
        }
        expired
    }

    /// Removes one backend from every index.
    fn remove(&mut self, id: BackendId) -> Option<Backend> {
        let backend = self.registry.remove(id)?;
        self.remember_hold(id, &backend);
        self.services.forget(id, &backend);
        self.forget_rings();
        Some(backend)
    }

    /// Remembers the operator's hold of a backend that leaves, if it has one. Once
    /// no registered backend has its address any more, the hold moves from the
    /// address holds to the departed ones, which forget it in time.
    fn remember_hold(&mut self, id: BackendId, backend: &Backend) {
        let held = self.services.of(backend.service()).and_then(|selector| selector.states(id));
        if let (Some((held, _)), Some(clock)) = (held, self.clock)
            && held != BackendState::Ready
        {
            let key = backend_key(backend, self.services.default_name());
            self.holds.remember(key, held, clock);
        }
        self.release_address_hold(backend);
    }

    /// Drops the address hold of `backend`, which left, unless another registered
    /// backend still has its address. Scans only while such a hold exists.
    fn release_address_hold(&mut self, backend: &Backend) {
        if self.address_holds.is_empty() {
            return;
        }
        let service = backend.service().unwrap_or(self.services.default_name()).clone();
        let key = (service, backend.address().to_string());
        if !self.address_holds.contains_key(&key) {
            return;
        }
        let shared = self
            .registry
            .iter()
            .any(|(_, other)| other.service() == backend.service() && other.address().to_string() == key.1);
        if !shared {
            self.address_holds.remove(&key);
        }
    }

    /// Gives a backend that registers again the hold it left with, if any. Costs
    /// nothing while no departed backend is held.
    fn restore_hold(&mut self, id: BackendId, now: Instant) {
        if self.holds.is_empty() {
            return;
        }
        let Some(backend) = self.registry.get(id) else { return };
        let key = backend_key(backend, self.services.default_name());
        let Some(held) = self.holds.take(&key, now) else { return };
        let service = backend.service().unwrap_or(self.services.default_name()).clone();
        // Live again: other heartbeats of its address are held too (see `address_holds`).
        self.address_holds.insert((service, backend.address().to_string()), held);
        if let Some(selector) = self.services.of_mut(backend.service()) {
            selector.set_state(id, held);
            // Logged under the lock: rare (a held backend coming back), and the
            // operator should see that the hold outlived the connection.
            tracing::info!(backend = %key, id = %id, state = %held, "backend registered again: the operator's hold is kept");
        }
    }

    /// Drops the rings of services that lost their last backend.
    fn forget_rings(&mut self) {
        let services = &self.services;
        self.rings.retain(|service| services.of(Some(service)).is_some());
    }

    /// Records a legacy report in the registry and moves the backend in the default
    /// service's selector.
    fn apply(
        &mut self,
        id: BackendId,
        report: Report,
        now: Instant,
    ) -> Result<HeartbeatAccepted, RegistryFull> {
        let change = self.registry.heartbeat(id, report, now)?;
        self.services.default_mut().report(id, report, now, &mut self.rng);
        let registered = change.previous.is_none();
        if registered {
            self.restore_hold(id, now);
            let service = self.services.default_name().clone();
            self.restore_address_hold(id, &service);
        }
        Ok(HeartbeatAccepted { registered, first_invalid_report: change.first_invalid_report })
    }

    /// Records a v2 heartbeat heard on `connection`: scores it by its service's
    /// scoring, and registers the backend (with an id from `new_id`) or updates it.
    fn apply_v2(
        &mut self,
        connection: BackendId,
        heartbeat: v2::Heartbeat,
        new_id: impl FnOnce() -> BackendId,
        now: Instant,
    ) -> Result<V2HeartbeatAccepted, V2HeartbeatRefused> {
        let service = &heartbeat.service;
        let ip = if self.services.is_default(service) {
            legacy_ip(&heartbeat.endpoint)
                .ok_or_else(|| V2HeartbeatRefused::LegacyAddress { service: service.clone() })?
        } else {
            IpField::from_bytes([0; loadwise_protocol::IP_FIELD_LEN])
        };
        let score = self.settings.scoring_of(service).score(&heartbeat);
        let report = Report { ip, port: heartbeat.endpoint.port.get(), load: Load::from_score(score) };
        let (id, previous) = self.v2_id(connection, &heartbeat).unwrap_or_else(|| (new_id(), None));
        let change = self.registry.heartbeat(id, report, now)?;
        let selector = self.services.entry(service);
        selector.report(id, report, now, &mut self.rng);
        selector.set_weight(id, heartbeat.weight);
        selector.report_state(id, state_of(heartbeat.state));
        self.services.bind((service, heartbeat.backend_id), id, connection, previous);
        let service = service.clone();
        self.registry.set_detail(id, V2Detail { connection, heartbeat, score });
        let registered = change.previous.is_none();
        if registered {
            self.restore_hold(id, now);
            self.restore_address_hold(id, &service);
        }
        Ok(V2HeartbeatAccepted { id, registered, score })
    }

    /// The id of the v2 backend `heartbeat` comes from, and the connection it was
    /// heard on, if it is registered.
    fn v2_id(
        &self,
        connection: BackendId,
        heartbeat: &v2::Heartbeat,
    ) -> Option<(BackendId, Option<BackendId>)> {
        let id = self.services.v2_id(&heartbeat.service, heartbeat.backend_id)?;
        let previous = self.registry.get(id)?.v2.as_ref().map_or(connection, |detail| detail.connection);
        Some((id, Some(previous)))
    }

    /// Answers a pick: draws a backend from the request's pool and says where its
    /// client goes, in the form the request asked for. The clock is checked before.
    /// With a key, the key's backend on the service's ring while it is ready and
    /// within its bound (see [`crate::affinity`]).
    fn pick(&mut self, request: &PickRequest<'_>, now: Instant) -> PickOutcome {
        let Table { services, registry, rng, rings, settings, .. } = self;
        let service = match request.target {
            PickTarget::Default => services.default_name().clone(),
            PickTarget::Service(name) => name.clone(),
        };
        let selector = match request.target {
            PickTarget::Default => services.default_mut(),
            // A named service exists while it has a backend, the default one included.
            PickTarget::Service(name) => match services.get_mut(name).filter(|selector| !selector.is_empty())
            {
                Some(selector) => selector,
                None => return PickOutcome::UnknownService,
            },
        };
        let picked = if request.key.is_empty() {
            selector.pick_target(now, rng)
        } else {
            let identity = |id| registry.get(id).map(identity_of);
            let settings = settings.affinity_of(&service);
            rings.pick((&service, selector), &settings, request.key, identity, now, rng)
        };
        let Some(picked) = picked else { return PickOutcome::NoBackend };
        let to = match request.form {
            AddressForm::Legacy => {
                Destination::Legacy(LegacyName { bytes: *picked.ip.as_bytes(), port: picked.port })
            }
            AddressForm::Endpoint => match registry.get(picked.id).map(|backend| &backend.v2) {
                Some(Some(detail)) => Destination::Chosen {
                    backend: detail.heartbeat.backend_id,
                    endpoint: core_endpoint(&detail.heartbeat.endpoint),
                },
                Some(None) => {
                    let name = LegacyName { bytes: *picked.ip.as_bytes(), port: picked.port };
                    match Endpoint::from_legacy(&name) {
                        Some(endpoint) => Destination::LegacyEndpoint { endpoint },
                        None => return PickOutcome::NoBackend,
                    }
                }
                None => return PickOutcome::NoBackend,
            },
        };
        PickOutcome::Picked(model::Picked { id: picked.id, to })
    }
}

/// A v2 endpoint as the core hands it out.
fn core_endpoint(endpoint: &v2::Endpoint) -> Endpoint {
    let host = match &endpoint.host {
        Host::V4(ip) => model::Host::V4(*ip),
        Host::V6(ip) => model::Host::V6(*ip),
        Host::Name(name) => model::Host::Name(name.clone()),
    };
    Endpoint { host, port: endpoint.port }
}

/// Who a registered backend is, apart from the connection that carries it: a v2
/// backend by its service and chosen id, a legacy one by its address bytes and port
/// in the default service.
fn backend_key(backend: &Backend, default_service: &ServiceName) -> BackendKey {
    match &backend.v2 {
        Some(detail) => BackendKey {
            service: detail.heartbeat.service.clone(),
            name: BackendName::Chosen(detail.heartbeat.backend_id),
        },
        None => BackendKey {
            service: default_service.clone(),
            name: BackendName::Legacy(LegacyName {
                bytes: *backend.report.ip.as_bytes(),
                port: backend.report.port,
            }),
        },
    }
}

/// The bytes a backend's place on the affinity ring is hashed from: what it is
/// known by in every replica (see [`Identity`]).
fn identity_of(backend: &Backend) -> Vec<u8> {
    match &backend.v2 {
        Some(detail) => {
            let heartbeat = &detail.heartbeat;
            Identity::V2 { service: heartbeat.service.as_str(), backend_id: heartbeat.backend_id }.to_bytes()
        }
        None => Identity::Legacy { ip: *backend.report.ip.as_bytes(), port: backend.report.port }.to_bytes(),
    }
}

/// How a v2 endpoint is written in a legacy reply, if it fits.
fn legacy_ip(endpoint: &v2::Endpoint) -> Option<IpField> {
    let text = match &endpoint.host {
        Host::V4(ip) => ip.to_string(),
        Host::V6(ip) => ip.to_string(),
        Host::Name(name) => name.as_str().to_owned(),
    };
    IpField::from_text(&text).ok()
}

fn state_of(state: v2::State) -> BackendState {
    match state {
        v2::State::Ready => BackendState::Ready,
        v2::State::Draining => BackendState::Draining,
        v2::State::Maintenance => BackendState::Maintenance,
    }
}

/// The live table of backends and the rules that answer logins from it.
#[derive(Debug)]
pub struct Dispatcher {
    table: Mutex<Table>,
    /// The next id to hand out, to a connection or a v2 backend.
    next_id: AtomicU64,
    /// Read on every login before the lock is taken, so kept apart from the table.
    max_clock_skew_secs: AtomicU64,
    /// The service legacy backends belong to, fixed for the dispatcher's life: kept
    /// apart from the table so that log lines can name it without the lock.
    default_service: ServiceName,
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
    /// Whether it takes new clients: the furthest of `held` and `reported`.
    pub state: BackendState,
    /// The state an operator holds it in ([`Dispatcher::set_state`]); `Ready` when none.
    pub held: BackendState,
    /// The state it reports itself (v2 heartbeats); legacy backends are `Ready`.
    pub reported: BackendState,
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
            address_holds: HashMap::new(),
            service_picks: BTreeMap::new(),
            clock: None,
            rng,
            settings,
            rings: Rings::default(),
        };
        let next_id = AtomicU64::new(1);
        let table = Mutex::new(table);
        Dispatcher { table, next_id, max_clock_skew_secs, default_service, stats: Stats::default() }
    }

    /// A new id, for a connection or a v2 backend: never handed out twice.
    pub fn next_id(&self) -> BackendId {
        BackendId(self.next_id.fetch_add(1, Ordering::Relaxed))
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
        let Table { registry, services, address_holds, .. } = &mut *table;
        let backend = registry.get(id).ok_or(UnknownBackend(id))?;
        let changed =
            services.of_mut(backend.service()).is_some_and(|selector| selector.set_state(id, state));
        let (service, address) = (self.service_of(backend).clone(), backend.address().to_string());
        if changed {
            let key = (service.clone(), address.clone());
            match state {
                BackendState::Ready => address_holds.remove(&key),
                held => address_holds.insert(key, held),
            };
        }
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

    fn lock(&self) -> std::sync::MutexGuard<'_, Table> {
        // A panic while holding the lock leaves both indexes consistent (every
        // mutation is a pair of infallible set operations), so poisoning is ignored.
        self.table.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// A batch that applies requests arrived at `now`, under one hold of the lock.
    pub fn batch(&self, now: Instant) -> Batch<'_> {
        Batch::new(self, now)
    }

    /// Applies a heartbeat received on connection `id`, which should come from
    /// [`Dispatcher::next_id`]: v2 backends are numbered from the same counter, so the
    /// two never share an id. Expired backends are removed first, so that a backend heard from again only after its TTL
    /// registers anew instead of silently reviving its old entry.
    pub fn heartbeat(
        &self,
        id: BackendId,
        heartbeat: &Heartbeat,
        now: Instant,
    ) -> Result<HeartbeatAccepted, HeartbeatRefused> {
        self.batch(now).heartbeat(id, heartbeat)
    }

    /// Removes the backend of connection `id` because the connection ended: its
    /// legacy backend, or the v2 backend last heard on it.
    pub fn disconnect(&self, id: BackendId) -> Option<Backend> {
        let mut table = self.lock();
        // A peer may have sent both kinds of heartbeat on one connection: both go.
        let v2 = table.services.take_connection(id).and_then(|v2_id| table.remove(v2_id));
        let legacy = table.remove(id);
        drop(table);
        let removed = [&v2, &legacy].iter().filter(|backend| backend.is_some()).count();
        self.stats.evicted_disconnected.fetch_add(removed as u64, Ordering::Relaxed);
        legacy.or(v2)
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
            let service = self.service_of(backend);
            tracing::info!(%service, backend = %backend.address(), id = %id, "backend expired: no heartbeat within the TTL");
        }
    }

    /// The service legacy backends and logins belong to.
    pub fn default_service(&self) -> &ServiceName {
        &self.default_service
    }

    /// The service `backend` belongs to.
    pub fn service_of<'b>(&'b self, backend: &'b Backend) -> &'b ServiceName {
        backend.service().unwrap_or(&self.default_service)
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
                let service = backend.service().unwrap_or(default_service).clone();
                Some(BackendSnapshot { id, backend: backend.clone(), load, state, held, reported, service })
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
    pub fn next_expiry(&self) -> Option<Instant> {
        self.lock().registry.expiry_bound(SWEEP_BUDGET)
    }
}

#[cfg(test)]
mod tests;
