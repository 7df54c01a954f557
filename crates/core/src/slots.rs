//! Capacity slots, the dispatcher's side: each slot backend's grant and the clients sent
//! on it, and picks in slot services by free places, each counted with the choice.
//!
//! A backend that reports slots (v2.3 heartbeats) tells each dispatcher how many
//! clients it may have sent there in all on its connection (the *grant*); the
//! dispatcher never sends more, and answers each such heartbeat with the grant it now
//! works to and its count, from which the backend keeps its books (the agent's
//! `slots` module). A service in which a backend reports slots is a *slot service*:
//! its picks go only to slot backends with room, by [`SlotPolicy`], and when none has
//! room the answer is "no free place".
//!
//! Each service's members are ordered by their free places, `(free, id)`, so a pick is
//! `O(log n)` whichever policy, plus one step per backend passed over because something
//! else keeps it from clients (a drain, a failing check, an ejection).

use std::collections::{BTreeSet, HashMap, HashSet};
use std::fmt;
use std::str::FromStr;

use crate::model::{BackendId, ConnectionId, IdMap, SlotReport};
use loadwise_protocol::v2::ServiceName;

/// How a slot service chooses among backends with room.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum SlotPolicy {
    /// Most free places first: clients spread evenly.
    #[default]
    Spread,
    /// The fullest backend that still has a place first: idle servers stay idle and
    /// can be scaled down.
    Pack,
}

impl SlotPolicy {
    pub const ALL: [SlotPolicy; 2] = [SlotPolicy::Spread, SlotPolicy::Pack];

    pub fn name(self) -> &'static str {
        match self {
            SlotPolicy::Spread => "spread",
            SlotPolicy::Pack => "pack",
        }
    }
}

impl fmt::Display for SlotPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A slot policy that is not `spread` or `pack`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown slot policy {0:?}: `spread` or `pack`")]
pub struct UnknownSlotPolicy(pub String);

impl FromStr for SlotPolicy {
    type Err = UnknownSlotPolicy;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        SlotPolicy::ALL.into_iter().find(|p| p.name() == text).ok_or_else(|| UnknownSlotPolicy(text.into()))
    }
}

/// One slot backend as the dispatcher sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotView {
    pub capacity: u32,
    pub in_use: u32,
    /// The grant this dispatcher works to, and its sequence.
    pub grant_seq: u32,
    pub grant_total: u64,
    /// Clients sent on the backend's current connection.
    pub sent_total: u64,
    /// Clients sent since its last heartbeat.
    pub sent_since_report: u64,
    /// Places this dispatcher may still fill: the grant's rest, at most the places the
    /// backend reported free less the clients sent since.
    pub free: u64,
}

/// What answering a slot heartbeat takes: the LeaseReport's fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseAnswer {
    pub grant_seq: u32,
    pub sent_total: u64,
}

#[derive(Debug, Clone)]
struct Member {
    service: ServiceName,
    connection: ConnectionId,
    view: SlotView,
}

impl Member {
    fn free(&self) -> u64 {
        let v = &self.view;
        let grant_left = v.grant_total.saturating_sub(v.sent_total);
        let reported_free =
            u64::from(v.capacity.saturating_sub(v.in_use)).saturating_sub(v.sent_since_report);
        grant_left.min(reported_free)
    }
}

/// Why a slot pick found no backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoSlot {
    /// Some backend takes clients, but none has room.
    NoFreePlace,
    /// No backend of the service takes clients at all (drained, unhealthy, ejected).
    NoBackend,
}

/// The slot backends of every service.
#[derive(Debug, Default)]
pub struct SlotPools {
    members: IdMap<Member>,
    /// Each slot service's members by `(free places, id)`.
    orders: HashMap<ServiceName, BTreeSet<(u64, BackendId)>>,
    /// Backends without slots in a slot service that were warned about.
    warned: HashSet<BackendId>,
    /// The counts of slot backends that left the table, by the connection they were on.
    departed: Departed,
}

/// The most departed counts kept: past it the oldest go (a backend that registers
/// again on its old connection after that many others left starts from 0).
const MAX_DEPARTED: usize = 65_536;

/// The counts of slot backends that left, kept for their return on the same connection.
#[derive(Debug, Default)]
struct Departed {
    /// Departures, oldest first, each with its serial: a count is dropped with its own
    /// departure only, not an earlier one of the same backend.
    order: std::collections::VecDeque<(BackendId, u64)>,
    counts: IdMap<Kept>,
    next_serial: u64,
}

/// A departed backend's connection and count, and which departure kept them.
#[derive(Debug, Clone, Copy)]
struct Kept {
    connection: ConnectionId,
    sent_total: u64,
    serial: u64,
}

impl Departed {
    fn keep(&mut self, id: BackendId, connection: ConnectionId, sent_total: u64) {
        let serial = self.next_serial;
        self.next_serial += 1;
        self.counts.insert(id, Kept { connection, sent_total, serial });
        self.order.push_back((id, serial));
        while self.order.len() > MAX_DEPARTED {
            let Some((oldest, serial)) = self.order.pop_front() else { break };
            if self.counts.get(&oldest).is_some_and(|kept| kept.serial == serial) {
                self.counts.remove(&oldest);
            }
        }
    }

    /// The count `id` left `connection` with, if it left from there.
    fn take(&mut self, id: BackendId, connection: ConnectionId) -> Option<u64> {
        let kept = self.counts.remove(&id)?;
        (kept.connection == connection).then_some(kept.sent_total)
    }
}

impl SlotPools {
    /// Whether `service` has a backend that reports slots.
    pub fn is_slot_service(&self, service: &ServiceName) -> bool {
        self.orders.contains_key(service)
    }

    /// Records a slot heartbeat of backend `id`, heard on `connection`: its places
    /// and its grant. Returns the LeaseReport owed.
    ///
    /// The count is per connection, as the backend's books are: a new connection
    /// starts at 0. A backend that registers again on the connection it left (its TTL
    /// passed while the connection stayed open, and the agent's books went on) gets
    /// its count back. One heard on another connection than the one that carries it
    /// here (two connections of one backend to this dispatcher) may have been sent
    /// its whole grant already: the grant is taken as sent, and the report says so.
    pub fn report(
        &mut self,
        id: BackendId,
        service: &ServiceName,
        connection: ConnectionId,
        report: SlotReport,
    ) -> LeaseAnswer {
        if self.members.get(&id).is_some_and(|m| &m.service != service) {
            self.forget(id);
        }
        let sent_total = match self.members.get(&id) {
            Some(member) if member.connection == connection => member.view.sent_total,
            Some(_) => report.grant_total,
            None => self.departed.take(id, connection).unwrap_or(0),
        };
        self.unfile(id);
        let view = SlotView {
            capacity: report.capacity,
            in_use: report.in_use,
            grant_seq: report.grant_seq,
            grant_total: report.grant_total,
            sent_total,
            sent_since_report: 0,
            free: 0,
        };
        self.members.insert(id, Member { service: service.clone(), connection, view });
        self.file(id);
        LeaseAnswer { grant_seq: report.grant_seq, sent_total }
    }

    /// Forgets backend `id` (it left, or stopped reporting slots).
    pub fn forget(&mut self, id: BackendId) {
        self.unfile(id);
        self.members.remove(&id);
    }

    /// True the first time it is asked about backend `id` (a backend without slots in
    /// a slot service, to be logged once), until the backend leaves.
    pub fn warn_once(&mut self, id: BackendId) -> bool {
        self.warned.insert(id)
    }

    /// Backend `id` left the table; its count is kept for a return on its connection.
    pub fn leave(&mut self, id: BackendId) {
        if let Some(member) = self.members.get(&id) {
            self.departed.keep(id, member.connection, member.view.sent_total);
        }
        self.forget(id);
        self.warned.remove(&id);
    }

    /// Whether backend `id` is a slot backend with room.
    pub fn has_room(&self, id: BackendId) -> Option<bool> {
        self.members.get(&id).map(|m| m.free() > 0)
    }

    /// Backend `id`'s places and grant, if it is a slot backend.
    pub fn view(&self, id: BackendId) -> Option<SlotView> {
        self.members.get(&id).map(|m| SlotView { free: m.free(), ..m.view.clone() })
    }

    /// Picks a backend of `service` with room by `policy`, among those `takes_clients`
    /// admits, and counts the client against its grant at once: the backend, and
    /// whether it has room left. `None` when `service`
    /// is not a slot service. One lookup of the service, and none at all while no
    /// service has slots, so that other picks pay nothing for them.
    pub fn pick(
        &mut self,
        service: &ServiceName,
        policy: SlotPolicy,
        takes_clients: impl Fn(BackendId) -> bool,
    ) -> Option<Result<(BackendId, bool), NoSlot>> {
        if self.orders.is_empty() {
            return None;
        }
        let order = self.orders.get_mut(service)?;
        let Some(filed) = choose(order, policy, &takes_clients) else {
            let full_but_open = order.range(..(1, BackendId(0))).any(|&(_, id)| takes_clients(id));
            return Some(Err(if full_but_open { NoSlot::NoFreePlace } else { NoSlot::NoBackend }));
        };
        let id = filed.1;
        let Some(member) = self.members.get_mut(&id) else { return Some(Err(NoSlot::NoBackend)) };
        order.remove(&filed);
        member.view.sent_total += 1;
        member.view.sent_since_report += 1;
        let free = member.free();
        order.insert((free, id));
        Some(Ok((id, free > 0)))
    }

    #[cfg(test)]
    fn pick_in(
        &mut self,
        service: &ServiceName,
        policy: SlotPolicy,
        takes_clients: impl Fn(BackendId) -> bool,
    ) -> Result<BackendId, NoSlot> {
        self.pick(service, policy, takes_clients).unwrap_or(Err(NoSlot::NoBackend)).map(|(id, _)| id)
    }

    fn file(&mut self, id: BackendId) {
        if let Some(member) = self.members.get(&id) {
            self.orders.entry(member.service.clone()).or_default().insert((member.free(), id));
        }
    }

    fn unfile(&mut self, id: BackendId) {
        let Some(member) = self.members.get(&id) else { return };
        let key = (member.free(), id);
        if let Some(order) = self.orders.get_mut(&member.service) {
            order.remove(&key);
            if order.is_empty() {
                self.orders.remove(&member.service);
            }
        }
    }
}

/// The entry of the first backend with room, by `policy`, that `takes_clients` admits.
fn choose(
    order: &BTreeSet<(u64, BackendId)>,
    policy: SlotPolicy,
    takes_clients: impl Fn(BackendId) -> bool,
) -> Option<(u64, BackendId)> {
    let with_room = order.range((1, BackendId(0))..);
    let open = |entry: &&(u64, BackendId)| takes_clients(entry.1);
    match policy {
        SlotPolicy::Spread => with_room.rev().find(open).copied(),
        SlotPolicy::Pack => with_room.into_iter().find(open).copied(),
    }
}

#[cfg(test)]
mod tests;
