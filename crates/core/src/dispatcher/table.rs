//! The table behind the dispatcher's lock: registry and selectors kept in step, the
//! operators' holds, the affinity rings, and the rules that apply a heartbeat or a pick.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::time::Instant;

use super::carriers::Carriers;
use super::holds::DepartedHolds;
use super::outcome::{HeartbeatAccepted, V2HeartbeatAccepted, V2HeartbeatRefused};
use super::services::Services;
use super::settings::DispatchSettings;
use crate::affinity::Identity;
use crate::affinity::rings::Rings;
use crate::ejection::{Ejections, ReportOutcome, ServiceShare};
use crate::model::{
    self, AddressForm, BackendKey, BackendName, ConnectionId, Destination, Endpoint, Hold, LEGACY_NAME_LEN,
    LegacyName, Load, PickOutcome, PickRequest, PickTarget, V2Report,
};
use crate::registry::{Backend, BackendId, Registry, RegistryFull, Report, V2Detail};
use crate::selection::BackendState;
use crate::selection::Selector;
use crate::slots::{NoSlot, SlotPools};
use loadwise_protocol::v2::ServiceName;
use rand::rngs::StdRng;

/// The registry, the selectors and what goes with them, kept in step under one lock.
#[derive(Debug)]
pub(crate) struct Table {
    pub(super) registry: Registry,
    pub(super) services: Services,
    /// Operators' holds of departed backends, given back when they return.
    pub(super) holds: DepartedHolds,
    /// The latest instant the table was used at: when a backend leaves by a closed
    /// connection, which comes with no time of its own. Set at every locking (see
    /// [`Table::expire`]), so before any backend registers.
    pub(super) clock: Option<Instant>,
    /// The settings in force.
    pub(super) settings: DispatchSettings,
    /// The random source of the `p2c` draws and of each backend's place in the tie
    /// band; from the operating system in production, so that replicas differ, and
    /// seeded by the caller in tests and simulations, so that their picks are exact.
    pub(super) rng: StdRng,
    /// The id of every registered legacy backend, by its name: a heartbeat of the
    /// same address bytes and port, on whatever connection, is the same backend.
    pub(super) legacy_ids: HashMap<LegacyName, BackendId>,
    /// Which open connections carry which backends.
    pub(super) carriers: Carriers,
    /// Picks of services other than the default one, by outcome; kept after a
    /// service's last backend leaves, so that counters never go back.
    pub(super) service_picks: BTreeMap<ServiceName, ServicePicks>,
    /// The consistent-hash rings of the services that had keyed picks.
    pub(super) rings: Rings,
    /// Clients' failure reports, and the backends they have ejected.
    pub(super) ejections: Ejections,
    /// The slot backends' grants and the clients sent on them.
    pub(super) slot_pools: SlotPools,
}

/// What a client's failure report did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureOutcome {
    /// No backend of that service has that id.
    UnknownBackend,
    /// The report was about backend `id`: see [`ReportOutcome`].
    Applied { id: BackendId, outcome: ReportOutcome },
}

/// The picks of one service, by outcome (see [`Dispatcher::service_picks`](super::Dispatcher::service_picks)).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ServicePicks {
    pub answered: u64,
    pub no_backend: u64,
}

/// The most services whose picks are counted apart: past it (services come and go),
/// a new service's picks count with the default service's, so that metrics stay bounded.
const MAX_COUNTED_SERVICES: usize = 1024;

impl Table {
    /// Counts a pick of a service other than the default one that exists.
    pub(super) fn count_pick(&mut self, service: &ServiceName, answered: bool) {
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
    pub(super) fn expire(&mut self, now: Instant) -> Vec<(BackendId, Backend)> {
        self.clock = self.clock.max(Some(now));
        let expired = self.registry.expire(now);
        for (id, backend) in &expired {
            self.forget(*id, backend);
        }
        if !expired.is_empty() {
            self.forget_rings();
        }
        expired
    }

    /// Removes one backend from every index.
    pub(super) fn remove(&mut self, id: BackendId) -> Option<Backend> {
        let backend = self.registry.remove(id)?;
        self.forget(id, &backend);
        self.forget_rings();
        Some(backend)
    }

    /// Forgets `connection`, which closed, and removes the backends it was the last
    /// to carry.
    pub(super) fn close(&mut self, connection: ConnectionId) -> Vec<(BackendId, Backend)> {
        let orphans = self.carriers.close(connection);
        orphans.into_iter().filter_map(|id| Some((id, self.remove(id)?))).collect()
    }

    /// Drops a backend that left the registry from the other indexes, remembering
    /// the operator's hold, if it has one, for its return.
    fn forget(&mut self, id: BackendId, backend: &Backend) {
        let held = self.services.of(backend.service()).and_then(|selector| selector.states(id));
        if let (Some((held, _)), Some(clock)) = (held, self.clock)
            && held != BackendState::Ready
        {
            let key = backend_key(backend, self.services.default_name());
            self.holds.remember(key, held, clock);
        }
        self.services.forget(id, backend);
        self.carriers.forget(id);
        self.ejections.forget(id);
        self.slot_pools.leave(id);
        if backend.v2.is_none() && self.legacy_ids.get(&backend.report.legacy) == Some(&id) {
            self.legacy_ids.remove(&backend.report.legacy);
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

    /// Records a legacy report heard on `connection` in the registry, for the backend
    /// its name identifies (registered with an id from `new_id` if it is new), and
    /// moves that backend in the default service's selector. The connection carries
    /// that backend from now on, in place of any other it carried.
    pub(super) fn apply(
        &mut self,
        connection: ConnectionId,
        report: Report,
        new_id: impl FnOnce() -> BackendId,
        now: Instant,
    ) -> Result<HeartbeatAccepted, RegistryFull> {
        let id = self.legacy_ids.get(&report.legacy).copied().unwrap_or_else(new_id);
        // The backend it replaces leaves first, so that its place is free.
        if let Some(replaced) = self.carriers.carry_legacy(connection, id) {
            self.remove(replaced);
        }
        let change = match self.registry.heartbeat(id, report, now) {
            Ok(change) => change,
            Err(full) => {
                self.carriers.drop_legacy(connection, id);
                return Err(full);
            }
        };
        self.services.default_mut().report(id, report, now, &mut self.rng);
        let registered = change.previous.is_none();
        if registered {
            self.legacy_ids.insert(report.legacy, id);
            self.restore_hold(id, now);
        }
        Ok(HeartbeatAccepted { id, registered, first_invalid_report: change.first_invalid_report })
    }

    /// Records a v2 heartbeat heard on `connection`: scores it by its service's
    /// scoring, and registers the backend (with an id from `new_id`) or updates it.
    pub(super) fn apply_v2(
        &mut self,
        connection: ConnectionId,
        report: V2Report,
        new_id: impl FnOnce() -> BackendId,
        now: Instant,
    ) -> Result<V2HeartbeatAccepted, V2HeartbeatRefused> {
        let (health, slots) = (report.health, report.slots);
        let detail = v2_detail(report);
        let service = &detail.service;
        let port = detail.endpoint.port.get();
        let legacy = if self.services.is_default(service) {
            LegacyName::from_text(&detail.endpoint.host_text(), port)
                .ok_or_else(|| V2HeartbeatRefused::LegacyAddress { service: service.clone() })?
        } else {
            LegacyName { bytes: [0; LEGACY_NAME_LEN], port }
        };
        let score = self.settings.scoring_of(service).score(&detail.metrics);
        let report = Report { legacy, load: Load::from_score(score) };
        let id = self.services.v2_id(service, detail.backend_id).unwrap_or_else(new_id);
        let change = self.registry.heartbeat(id, report, now)?;
        let registered = change.previous.is_none();
        let selector = self.services.entry(service);
        selector.report(id, report, now, &mut self.rng);
        selector.set_weight(id, detail.weight);
        selector.report_state(id, detail.state);
        selector.report_health(id, health);
        let lease = match slots {
            Some(slots) => Some(self.slot_pools.report(id, service, connection, slots)),
            None => {
                self.slot_pools.forget(id);
                None
            }
        };
        // A slot backend without room is out of the pick indexes, for its listing; so
        // is a backend without slots in a slot service, which is never picked there.
        let ineligible = lease.is_none() && self.slot_pools.is_slot_service(service);
        selector.set_no_place(id, self.slot_pools.has_room(id) == Some(false) || ineligible);
        if ineligible && self.slot_pools.warn_once(id) {
            tracing::warn!(%service, backend = %detail.endpoint, id = %id,
                "a backend without capacity slots in a slot service gets no clients there: start its agent with --capacity, or move it to a service of its own");
        }
        if registered {
            self.services.bind((service, detail.backend_id), id);
        }
        self.carriers.carry_v2(connection, id);
        self.registry.set_detail(id, V2Detail { score, ..detail });
        if registered {
            self.restore_hold(id, now);
        }
        Ok(V2HeartbeatAccepted { id, registered, score, lease })
    }

    /// Answers a pick: draws a backend from the request's pool and says where its
    /// client goes, in the form the request asked for. The clock is checked before.
    /// With a key, the key's backend on the service's ring while it is ready and
    /// within its bound (see [`crate::affinity`]).
    pub(super) fn pick(&mut self, request: &PickRequest<'_>, now: Instant) -> PickOutcome {
        let Table { services, registry, rng, rings, settings, ejections, slot_pools, .. } = self;
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
        let picked = if let Some(slot_pick) = pick_slot(slot_pools, selector, &service, settings, now) {
            match slot_pick {
                Ok(picked) => Some(picked),
                Err(NoSlot::NoFreePlace) => return PickOutcome::NoFreePlace,
                Err(NoSlot::NoBackend) => None,
            }
        } else if request.key.is_empty() {
            selector.pick_target(now, rng)
        } else {
            let identity = |id| registry.get(id).map(identity_of);
            let settings = settings.affinity_of(&service);
            rings.pick((&service, selector), &settings, request.key, identity, now, rng)
        };
        let Some(picked) = picked else { return PickOutcome::NoBackend };
        if let Some(client) = request.client {
            ejections.record_pick(client, picked.id, now, settings.ejection.window);
        }
        let to = match request.form {
            AddressForm::Legacy => Destination::Legacy(picked.legacy),
            AddressForm::Endpoint => match registry.get(picked.id).map(|backend| &backend.v2) {
                Some(Some(detail)) => {
                    Destination::Chosen { backend: detail.backend_id, endpoint: detail.endpoint.clone() }
                }
                Some(None) => match Endpoint::from_legacy(&picked.legacy) {
                    Some(endpoint) => Destination::LegacyEndpoint { endpoint },
                    None => return PickOutcome::NoBackend,
                },
                None => return PickOutcome::NoBackend,
            },
        };
        PickOutcome::Picked(model::Picked { id: picked.id, to })
    }
}

impl Table {
    /// Applies `client`'s report that backend `chosen` of `service` (the id a pick
    /// reply named) could not be used: ejects it when enough clients that were sent
    /// there report it (see [`crate::ejection`]).
    pub(super) fn report_failure(
        &mut self,
        client: IpAddr,
        service: &ServiceName,
        chosen: u64,
        now: Instant,
    ) -> FailureOutcome {
        let Some(id) = self.backend_named(service, chosen) else { return FailureOutcome::UnknownBackend };
        let Some(selector) = self.services.get_mut(service) else { return FailureOutcome::UnknownBackend };
        let ejected = self.ejections.ejected().filter(|&other| selector.hold(other).is_some()).count();
        let share = ServiceShare { ejected, backends: selector.len() };
        let outcome = self.ejections.report(client, id, share, &self.settings.ejection, now);
        if let ReportOutcome::Ejected { .. } = outcome {
            selector.set_ejected(id, true);
        }
        FailureOutcome::Applied { id, outcome }
    }

    /// The backend a pick reply named `chosen` in `service`: a v2 backend's own id,
    /// or, in the default service, the dispatcher's number of a legacy backend.
    fn backend_named(&self, service: &ServiceName, chosen: u64) -> Option<BackendId> {
        if let Some(id) = self.services.v2_id(service, chosen) {
            return Some(id);
        }
        let id = BackendId(chosen);
        let legacy = self.registry.get(id).is_some_and(|backend| backend.v2.is_none());
        (legacy && self.services.is_default(service)).then_some(id)
    }

    /// Brings back the backends whose ejection has ended by `now`.
    pub(super) fn return_ejected(&mut self, now: Instant) -> Vec<(BackendId, Backend)> {
        if self.ejections.next_return().is_none_or(|next| next > now) {
            return Vec::new();
        }
        let returned = self.ejections.due_returns(now);
        let Table { services, registry, .. } = self;
        returned
            .into_iter()
            .filter_map(|id| {
                let backend = registry.get(id)?;
                services.of_mut(backend.service())?.set_ejected(id, false);
                Some((id, backend.clone()))
            })
            .collect()
    }
}

/// A pick in a slot service: the backend with room by its policy among those that take
/// clients otherwise, counted against its grant and in its load at once; `None` when
/// `service` is not a slot service.
fn pick_slot(
    pools: &mut SlotPools,
    selector: &mut Selector,
    service: &ServiceName,
    settings: &DispatchSettings,
    now: Instant,
) -> Option<Result<crate::selection::Picked, NoSlot>> {
    let open = |id| {
        selector.hold(id).is_some_and(|hold| Hold { no_place: false, ..hold }.standing().takes_clients())
    };
    let (id, room_left) = match pools.pick(service, settings.slot_policy_of(service), open)? {
        Ok(picked) => picked,
        Err(none) => return Some(Err(none)),
    };
    // It had room, so nothing kept it from the pick indexes: the selector counts the pick.
    let Some(picked) = selector.pick_backend(id, now) else { return Some(Err(NoSlot::NoBackend)) };
    if !room_left {
        selector.set_no_place(id, true);
    }
    Some(Ok(picked))
}

/// A v2 report as the registry keeps it, not yet scored.
fn v2_detail(report: V2Report) -> V2Detail {
    let V2Report { service, backend_id, endpoint, metrics, weight, state, health: _, slots: _ } = report;
    V2Detail { service, backend_id, endpoint, metrics, weight, state, score: None }
}

/// Who a registered backend is, apart from the connection that carries it: a v2
/// backend by its service and chosen id, a legacy one by its address bytes and port
/// in the default service.
fn backend_key(backend: &Backend, default_service: &ServiceName) -> BackendKey {
    match &backend.v2 {
        Some(detail) => {
            BackendKey { service: detail.service.clone(), name: BackendName::Chosen(detail.backend_id) }
        }
        None => {
            BackendKey { service: default_service.clone(), name: BackendName::Legacy(backend.report.legacy) }
        }
    }
}

/// The bytes a backend's place on the affinity ring is hashed from: what it is
/// known by in every replica (see [`Identity`]).
fn identity_of(backend: &Backend) -> Vec<u8> {
    match &backend.v2 {
        Some(detail) => {
            Identity::V2 { service: detail.service.as_str(), backend_id: detail.backend_id }.to_bytes()
        }
        None => {
            Identity::Legacy { ip: backend.report.legacy.bytes, port: backend.report.legacy.port }.to_bytes()
        }
    }
}
