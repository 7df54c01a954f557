//! The dispatcher's state shared by its public calls and by a [`Batch`](super::Batch):
//! the table under its lock, the id counter, and what is read without the lock.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};

use super::stats::{Stats, bump};
use super::table::Table;
use crate::registry::{Backend, BackendId};
use loadwise_protocol::v2::ServiceName;

/// The live table of backends and the rules that answer logins from it.
#[derive(Debug)]
pub struct Dispatcher {
    pub(super) table: Mutex<Table>,
    /// The next id to hand out to a backend that registers.
    pub(super) next_id: AtomicU64,
    /// Read on every login before the lock is taken, so kept apart from the table.
    pub(super) max_clock_skew_secs: AtomicU64,
    /// The service legacy backends belong to, fixed for the dispatcher's life: kept
    /// apart from the table so that log lines can name it without the lock.
    pub(super) default_service: ServiceName,
    pub(super) stats: Stats,
}

impl Dispatcher {
    /// A new backend id: never handed out twice.
    pub(super) fn next_id(&self) -> BackendId {
        BackendId(self.next_id.fetch_add(1, Ordering::Relaxed))
    }

    /// The table, locked.
    pub(super) fn lock(&self) -> MutexGuard<'_, Table> {
        // A panic while holding the lock leaves both indexes consistent (every
        // mutation is a pair of infallible set operations), so poisoning is ignored.
        self.table.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Counts and logs backends removed because their TTL passed.
    pub(super) fn record_expired(&self, expired: &[(BackendId, Backend)]) {
        for (id, backend) in expired {
            bump(&self.stats.evicted_expired);
            let service = self.service_of(backend);
            tracing::info!(%service, backend = %backend.address(), id = %id, "backend expired: no heartbeat within the TTL");
        }
    }

    /// Counts and logs backends whose ejection ended.
    pub(super) fn record_returned(&self, returned: &[(BackendId, Backend)]) {
        for (id, backend) in returned {
            bump(&self.stats.ejection_returns);
            let service = self.service_of(backend);
            tracing::info!(%service, backend = %backend.address(), id = %id, "backend back in rotation: its ejection ended");
        }
    }

    /// The service `backend` belongs to.
    pub fn service_of<'b>(&'b self, backend: &'b Backend) -> &'b ServiceName {
        backend.service().unwrap_or(&self.default_service)
    }
}
