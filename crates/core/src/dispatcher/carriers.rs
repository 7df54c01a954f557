//! Which connections carry which backends, so that a backend leaves when the last
//! connection that carried it closes, and not before.
//!
//! A legacy connection carries one backend: a heartbeat naming another address moves
//! it to that backend, as the original replaced a connection's entry. A v2 connection
//! carries every backend heard on it. A backend heard on several connections (a
//! reconnect whose old socket has not closed yet, or two senders of one address)
//! stays while any of them is open.

use std::collections::{HashMap, HashSet};
use std::hash::BuildHasherDefault;

use crate::model::{BackendId, ConnectionId, IdHasher, IdMap};

type IdSet = HashSet<BackendId, BuildHasherDefault<IdHasher>>;

/// The links between open connections and the backends they carry, both ways.
#[derive(Debug, Default)]
pub(super) struct Carriers {
    by_connection: HashMap<ConnectionId, Carried, BuildHasherDefault<IdHasher>>,
    /// The connections carrying each backend: one, nearly always.
    by_backend: IdMap<Vec<ConnectionId>>,
}

/// What one connection carries.
#[derive(Debug, Default)]
struct Carried {
    legacy: Option<BackendId>,
    v2: IdSet,
}

impl Carried {
    fn is_empty(&self) -> bool {
        self.legacy.is_none() && self.v2.is_empty()
    }
}

impl Carriers {
    /// Records that `connection` carries the legacy backend `id`, in place of the one
    /// it carried before. Returns that one if no open connection carries it any more:
    /// the caller removes it.
    pub(super) fn carry_legacy(&mut self, connection: ConnectionId, id: BackendId) -> Option<BackendId> {
        let carried = self.by_connection.entry(connection).or_default();
        let previous = carried.legacy.replace(id);
        if previous == Some(id) {
            return None;
        }
        let still_carried = previous.is_some_and(|previous| carried.v2.contains(&previous));
        self.link(connection, id);
        match previous {
            Some(previous) if !still_carried => self.unlink(connection, previous),
            _ => None,
        }
    }

    /// Records that `connection` carries the v2 backend `id`.
    pub(super) fn carry_v2(&mut self, connection: ConnectionId, id: BackendId) {
        let carried = self.by_connection.entry(connection).or_default();
        let already = carried.legacy == Some(id) || !carried.v2.insert(id);
        if !already {
            self.link(connection, id);
        }
    }

    /// Undoes [`Self::carry_legacy`] for a backend the table refused: `connection`
    /// carries no legacy backend now.
    pub(super) fn drop_legacy(&mut self, connection: ConnectionId, id: BackendId) {
        let Some(carried) = self.by_connection.get_mut(&connection) else { return };
        if carried.legacy == Some(id) {
            carried.legacy = None;
            if !carried.v2.contains(&id) {
                self.unlink(connection, id);
            }
        }
        self.drop_if_empty(connection);
    }

    /// Forgets `connection`, which closed. Returns the backends no open connection
    /// carries any more: the caller removes them.
    pub(super) fn close(&mut self, connection: ConnectionId) -> Vec<BackendId> {
        let Some(carried) = self.by_connection.remove(&connection) else { return Vec::new() };
        let mut ids: Vec<BackendId> = carried.v2.into_iter().collect();
        ids.extend(carried.legacy.filter(|legacy| !ids.contains(legacy)));
        ids.into_iter().filter_map(|id| self.unlink(connection, id)).collect()
    }

    /// Forgets backend `id`, which left the table by other means (its TTL, or a
    /// replacement): the connections that carried it carry it no more.
    pub(super) fn forget(&mut self, id: BackendId) {
        for connection in self.by_backend.remove(&id).unwrap_or_default() {
            if let Some(carried) = self.by_connection.get_mut(&connection) {
                if carried.legacy == Some(id) {
                    carried.legacy = None;
                }
                carried.v2.remove(&id);
                self.drop_if_empty(connection);
            }
        }
    }

    /// The connections that carry backend `id`.
    #[cfg(test)]
    fn carriers_of(&self, id: BackendId) -> &[ConnectionId] {
        self.by_backend.get(&id).map_or(&[], Vec::as_slice)
    }

    fn link(&mut self, connection: ConnectionId, id: BackendId) {
        let connections = self.by_backend.entry(id).or_default();
        if !connections.contains(&connection) {
            connections.push(connection);
        }
    }

    /// Unlinks `connection` from `id`; returns `id` if that was its last carrier.
    fn unlink(&mut self, connection: ConnectionId, id: BackendId) -> Option<BackendId> {
        let connections = self.by_backend.get_mut(&id)?;
        connections.retain(|&other| other != connection);
        if !connections.is_empty() {
            return None;
        }
        self.by_backend.remove(&id);
        Some(id)
    }

    fn drop_if_empty(&mut self, connection: ConnectionId) {
        if self.by_connection.get(&connection).is_some_and(Carried::is_empty) {
            self.by_connection.remove(&connection);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: BackendId = BackendId(1);
    const B: BackendId = BackendId(2);
    const C1: ConnectionId = ConnectionId(10);
    const C2: ConnectionId = ConnectionId(11);

    #[test]
    fn a_backend_leaves_with_the_last_connection_that_carried_it() {
        let mut carriers = Carriers::default();
        assert_eq!(carriers.carry_legacy(C1, A), None);
        assert_eq!(carriers.carry_legacy(C2, A), None);
        assert_eq!(carriers.carriers_of(A), &[C1, C2]);
        assert_eq!(carriers.close(C1), vec![]);
        assert_eq!(carriers.close(C2), vec![A]);
        assert!(carriers.by_backend.is_empty() && carriers.by_connection.is_empty());
    }

    #[test]
    fn a_legacy_heartbeat_naming_another_address_replaces_the_connections_backend() {
        let mut carriers = Carriers::default();
        carriers.carry_legacy(C1, A);
        assert_eq!(carriers.carry_legacy(C1, A), None, "the same backend again changes nothing");
        assert_eq!(carriers.carry_legacy(C1, B), Some(A), "A has no carrier left");
        carriers.carry_legacy(C2, B);
        assert_eq!(carriers.carry_legacy(C1, A), None, "B is still carried by C2");
        assert_eq!(carriers.carriers_of(B), &[C2]);
    }

    #[test]
    fn a_v2_connection_carries_every_backend_heard_on_it() {
        let mut carriers = Carriers::default();
        carriers.carry_v2(C1, A);
        carriers.carry_v2(C1, B);
        carriers.carry_v2(C1, B);
        // The backend reconnected: its new connection carries it too.
        carriers.carry_v2(C2, B);
        let mut gone = carriers.close(C1);
        gone.sort();
        assert_eq!(gone, vec![A]);
        assert_eq!(carriers.close(C2), vec![B]);
    }

    #[test]
    fn a_backend_forgotten_or_refused_is_no_longer_carried() {
        let mut carriers = Carriers::default();
        carriers.carry_legacy(C1, A);
        carriers.carry_v2(C2, A);
        carriers.forget(A);
        assert_eq!(carriers.carriers_of(A), &[] as &[ConnectionId]);
        assert!(carriers.by_connection.is_empty());
        carriers.carry_legacy(C1, B);
        carriers.drop_legacy(C1, B);
        assert_eq!(carriers.close(C1), vec![]);
        assert!(carriers.by_backend.is_empty());
    }
}
