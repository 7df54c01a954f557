//! Connection budgets: how many connections of each kind may be open at once, and
//! the slot each open connection holds.
//!
//! A connection is *pending* from its accept until a frame says what it is: a
//! heartbeat or a v2 Register makes it a *backend* connection, a login or a v2
//! PickRequest a *client* one. Each kind has a budget of its own, so backends cannot
//! crowd out clients nor clients backends, and neither can connections that never say
//! anything. Client and pending connections also count against their peer address,
//! so one host cannot fill the pending headroom or the client budget; backend
//! connections do not (many backends may share one address).
//!
//! A budget is a count compared with a size that a reload may change at any moment:
//! lowering a size closes nothing, and new connections of that kind are refused until
//! the count is below it. The counts are the server's own gauges
//! ([`WireStats::connections_by_kind`]), so nothing is counted twice.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use crate::stats::{ConnectionKind, ConnectionRefusal, WireStats};

/// The size of each budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BudgetSizes {
    /// Backend connections (`max_backends`).
    pub backends: usize,
    /// Client connections (`max_client_connections`).
    pub clients: usize,
    /// Connections not yet classified (`max_pending_connections`).
    pub pending: usize,
    /// Client and pending connections from one IP address (`max_connections_per_peer`).
    pub per_peer: usize,
}

/// The budgets of one server, shared by its accept loop and its connections.
#[derive(Debug)]
pub(crate) struct Budgets {
    /// Indexed by [`ConnectionKind::index`].
    sizes: [AtomicUsize; ConnectionKind::ALL.len()],
    per_peer: AtomicUsize,
    /// Client and pending connections per peer address. Only addresses with at
    /// least one are kept, so it holds at most as many entries as those budgets.
    peers: Mutex<HashMap<IpAddr, usize>>,
    /// Holds the open counts and the refusals.
    stats: Arc<WireStats>,
}

impl Budgets {
    pub fn new(sizes: BudgetSizes, stats: Arc<WireStats>) -> Arc<Budgets> {
        let budgets = Budgets {
            sizes: Default::default(),
            per_peer: AtomicUsize::new(0),
            peers: Mutex::default(),
            stats,
        };
        budgets.resize(sizes);
        Arc::new(budgets)
    }

    /// Takes up new sizes. Nothing open is closed.
    pub fn resize(&self, sizes: BudgetSizes) {
        let set = |kind: ConnectionKind, size| self.sizes[kind.index()].store(size, Ordering::Relaxed);
        set(ConnectionKind::Pending, sizes.pending);
        set(ConnectionKind::Client, sizes.clients);
        set(ConnectionKind::Backend, sizes.backends);
        self.per_peer.store(sizes.per_peer, Ordering::Relaxed);
    }

    /// A pending slot for a connection just accepted from `peer`, unless the peer's
    /// cap or the pending headroom is full (the refusal is counted).
    pub fn admit(self: &Arc<Self>, peer: IpAddr) -> Result<Slot, ConnectionRefusal> {
        // One address per host: a v4 peer on a dual-stack socket is `::ffff:a.b.c.d`.
        let peer = peer.to_canonical();
        let mut peers = self.peers();
        let held = peers.get(&peer).copied().unwrap_or(0);
        if held >= self.per_peer.load(Ordering::Relaxed) {
            return Err(self.refuse(ConnectionRefusal::PeerLimit));
        }
        if !self.take(ConnectionKind::Pending) {
            return Err(self.refuse(ConnectionRefusal::PendingLimit));
        }
        *peers.entry(peer).or_default() += 1;
        Ok(Slot { budgets: Arc::clone(self), kind: ConnectionKind::Pending, peer })
    }

    fn stats(&self) -> &WireStats {
        &self.stats
    }

    fn open(&self, kind: ConnectionKind) -> &AtomicU64 {
        &self.stats().connections_by_kind[kind.index()]
    }

    /// One more connection of `kind`, if its budget has room.
    fn take(&self, kind: ConnectionKind) -> bool {
        let size = self.sizes[kind.index()].load(Ordering::Relaxed) as u64;
        self.open(kind)
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| (n < size).then_some(n + 1))
            .is_ok()
    }

    fn give_back(&self, kind: ConnectionKind) {
        self.open(kind).fetch_sub(1, Ordering::Relaxed);
    }

    fn leave_peer(&self, peer: IpAddr) {
        let mut peers = self.peers();
        if let Some(held) = peers.get_mut(&peer) {
            *held -= 1;
            if *held == 0 {
                peers.remove(&peer);
            }
        }
    }

    fn refuse(&self, reason: ConnectionRefusal) -> ConnectionRefusal {
        self.stats().count_connection_refusal(reason);
        reason
    }

    fn peers(&self) -> MutexGuard<'_, HashMap<IpAddr, usize>> {
        // The map is consistent after every statement, so a panic elsewhere cannot
        // leave it half-updated.
        self.peers.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// One open connection's place in the budgets. Dropping it frees the place.
#[derive(Debug)]
pub(crate) struct Slot {
    budgets: Arc<Budgets>,
    kind: ConnectionKind,
    /// Canonical, as counted.
    peer: IpAddr,
}

impl Slot {
    /// What the connection is so far.
    pub fn kind(&self) -> ConnectionKind {
        self.kind
    }

    /// Makes the connection one of `kind`, if that budget has room; otherwise it
    /// stays as it was and the refusal is counted. A backend connection stays one,
    /// and a client connection asked to be a client is one already.
    pub fn classify(&mut self, kind: ConnectionKind) -> Result<(), ConnectionRefusal> {
        let stays = match (self.kind, kind) {
            (ConnectionKind::Backend, _) | (_, ConnectionKind::Pending) => true,
            (from, to) => from == to,
        };
        if stays {
            return Ok(());
        }
        let budgets = &self.budgets;
        if !budgets.take(kind) {
            let reason = match kind {
                ConnectionKind::Backend => ConnectionRefusal::BackendLimit,
                _ => ConnectionRefusal::ClientLimit,
            };
            return Err(budgets.refuse(reason));
        }
        budgets.give_back(self.kind);
        if kind == ConnectionKind::Backend {
            budgets.leave_peer(self.peer);
        }
        self.kind = kind;
        Ok(())
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.budgets.give_back(self.kind);
        if self.kind != ConnectionKind::Backend {
            self.budgets.leave_peer(self.peer);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ConnectionKind::{Backend, Client, Pending};

    const A: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 1));
    const B: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 2));

    fn budgets(backends: usize, clients: usize, pending: usize, per_peer: usize) -> Arc<Budgets> {
        Budgets::new(BudgetSizes { backends, clients, pending, per_peer }, Arc::default())
    }

    fn open(budgets: &Budgets) -> [u64; 3] {
        ConnectionKind::ALL.map(|kind| budgets.stats().snapshot().open(kind))
    }

    fn refused(budgets: &Budgets, reason: ConnectionRefusal) -> u64 {
        budgets.stats().snapshot().refused(reason)
    }

    #[test]
    fn a_peer_is_capped_while_another_is_admitted() {
        let budgets = budgets(10, 10, 10, 2);
        let held: Vec<Slot> = (0..2).map(|_| budgets.admit(A).unwrap()).collect();
        assert_eq!(budgets.admit(A).unwrap_err(), ConnectionRefusal::PeerLimit);
        let other = budgets.admit(B).unwrap();
        assert_eq!(open(&budgets), [3, 0, 0]);
        assert_eq!(refused(&budgets, ConnectionRefusal::PeerLimit), 1);
        assert_eq!(budgets.stats().snapshot().connections_refused, 1);
        drop(held);
        drop(other);
        assert_eq!(open(&budgets), [0, 0, 0]);
        assert!(budgets.peers().is_empty(), "no address is kept without a connection");
    }

    #[test]
    fn the_pending_headroom_is_shared_by_every_peer() {
        let budgets = budgets(10, 10, 2, 10);
        let _held = [budgets.admit(A).unwrap(), budgets.admit(B).unwrap()];
        assert_eq!(budgets.admit(B).unwrap_err(), ConnectionRefusal::PendingLimit);
        assert_eq!(refused(&budgets, ConnectionRefusal::PendingLimit), 1);
    }

    #[test]
    fn classified_connections_leave_the_pending_headroom_and_backends_their_peer() {
        let budgets = budgets(10, 10, 2, 2);
        let mut client = budgets.admit(A).unwrap();
        let mut backend = budgets.admit(A).unwrap();
        client.classify(Client).unwrap();
        backend.classify(Backend).unwrap();
        assert_eq!(open(&budgets), [0, 1, 1]);
        // The client still counts against A; the backend does not.
        let _second = budgets.admit(A).unwrap();
        assert_eq!(budgets.admit(A).unwrap_err(), ConnectionRefusal::PeerLimit);
        // A backend stays one, and a client asked again stays a client.
        backend.classify(Client).unwrap();
        client.classify(Client).unwrap();
        assert_eq!((backend.kind(), client.kind()), (Backend, Client));
        assert_eq!(open(&budgets), [1, 1, 1]);
    }

    #[test]
    fn a_client_that_heartbeats_becomes_a_backend() {
        let budgets = budgets(10, 10, 10, 1);
        let mut slot = budgets.admit(A).unwrap();
        slot.classify(Client).unwrap();
        slot.classify(Backend).unwrap();
        assert_eq!((slot.kind(), open(&budgets)), (Backend, [0, 0, 1]));
        // Its address is free again for a client.
        let _client = budgets.admit(A).unwrap();
    }

    #[test]
    fn a_full_budget_refuses_its_kind_only_and_the_connection_stays_as_it_was() {
        let budgets = budgets(1, 1, 10, 10);
        let mut backend = budgets.admit(A).unwrap();
        backend.classify(Backend).unwrap();
        let mut client = budgets.admit(A).unwrap();
        client.classify(Client).unwrap();
        let mut late = budgets.admit(B).unwrap();
        assert_eq!(late.classify(Backend).unwrap_err(), ConnectionRefusal::BackendLimit);
        assert_eq!(late.classify(Client).unwrap_err(), ConnectionRefusal::ClientLimit);
        assert_eq!(late.kind(), Pending);
        assert_eq!(open(&budgets), [1, 1, 1]);
        // A client that wants to become a backend while that budget is full stays a client.
        assert_eq!(client.classify(Backend).unwrap_err(), ConnectionRefusal::BackendLimit);
        assert_eq!(client.kind(), Client);
        drop(backend);
        late.classify(Backend).unwrap();
        assert_eq!(open(&budgets), [0, 1, 1]);
        assert_eq!(refused(&budgets, ConnectionRefusal::BackendLimit), 2);
        assert_eq!(refused(&budgets, ConnectionRefusal::ClientLimit), 1);
        assert_eq!(budgets.stats().snapshot().connections_refused, 0, "none at accept");
    }

    #[test]
    fn a_resize_closes_nothing_and_refuses_until_below_the_new_size() {
        let budgets = budgets(10, 3, 10, 10);
        let mut held: Vec<Slot> = (0..3).map(|_| budgets.admit(A).unwrap()).collect();
        for slot in &mut held {
            slot.classify(Client).unwrap();
        }
        budgets.resize(BudgetSizes { backends: 10, clients: 1, pending: 10, per_peer: 10 });
        assert_eq!(open(&budgets), [0, 3, 0]);
        let mut next = budgets.admit(B).unwrap();
        assert!(next.classify(Client).is_err());
        held.truncate(1);
        assert!(next.classify(Client).is_err(), "one open, the size is one");
        budgets.resize(BudgetSizes { backends: 10, clients: 4, pending: 10, per_peer: 10 });
        next.classify(Client).unwrap();
        assert_eq!(open(&budgets), [0, 2, 0]);
    }

    #[test]
    fn a_v4_peer_is_one_peer_on_either_socket_family() {
        let budgets = budgets(10, 10, 10, 1);
        let _v4 = budgets.admit(A).unwrap();
        let mapped = IpAddr::V6(std::net::Ipv4Addr::new(10, 0, 0, 1).to_ipv6_mapped());
        assert_eq!(budgets.admit(mapped).unwrap_err(), ConnectionRefusal::PeerLimit);
    }
}
