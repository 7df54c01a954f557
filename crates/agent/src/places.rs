//! The backend's places as the agent shares them: one [`Ledger`] behind a lock, for
//! every dispatcher link (grants out, reports in) and for the backend itself (clients
//! arriving and leaving), and a signal to the links when a place comes free.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::slots::{DispatcherKey, Ledger, Reported};
use loadwise_protocol::ticket::{self, TicketError};
use loadwise_protocol::v2::auth::Secret;
use loadwise_protocol::v2::{LeaseReport, ServiceName, Slots};

/// How long a promise lasts unless told otherwise: the dispatchers' default ticket
/// lifetime.
pub const DEFAULT_PROMISE_LIFETIME: Duration = Duration::from_secs(30);

/// The longest a promise may last: above any sensible ticket lifetime.
pub const MAX_PROMISE_LIFETIME: Duration = Duration::from_secs(3600);

/// The most places a backend may have.
pub const MAX_CAPACITY: u32 = 10_000_000;

/// A place that comes free between samples is granted by a top-up heartbeat, sent no
/// sooner than the interval divided by this after the previous heartbeat: at most
/// this many more heartbeats per interval, however fast clients come and go.
pub const TOP_UP_FRACTION: u32 = 4;

/// A backend's capacity slots, shared by the agent's links and the backend. Cheap to
/// clone: every clone is the same book. A backend calls [`Places::arrive`] when a client
/// sent by a dispatcher arrives (after checking its ticket, when the dispatchers sign
/// them: `loadwise::ticket::verify`) and [`Places::leave`] when one leaves, or reports
/// its occupancy with [`Places::set_in_use`] (the agent does, from an `in_use` line of
/// the metrics file).
#[derive(Debug, Clone)]
pub struct Places {
    ledger: Arc<Mutex<Ledger>>,
    next_key: Arc<AtomicU64>,
    /// Counts the places that came free between samples (a client left, or the
    /// backend said fewer are in use), so that the links can grant them before the
    /// next heartbeat: see `v2::TopUp`.
    freed: Arc<watch::Sender<u64>>,
}

impl PartialEq for Places {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.ledger, &other.ledger)
    }
}

impl Eq for Places {}

impl Places {
    /// `capacity` places, none in use; a promise lasts `promise_lifetime` (the
    /// dispatchers' ticket lifetime, 30 s by default) unless its client arrives.
    pub fn new(capacity: u32, promise_lifetime: Duration) -> Places {
        Places {
            ledger: Arc::new(Mutex::new(Ledger::new(capacity, 0, promise_lifetime))),
            next_key: Arc::new(AtomicU64::new(1)),
            freed: Arc::new(watch::channel(0).0),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Ledger> {
        // Every ledger method leaves it consistent before it can panic.
        self.ledger.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn capacity(&self) -> u32 {
        self.lock().capacity()
    }

    /// A client sent by a dispatcher arrived: its place is taken, its promise ends.
    pub fn arrive(&self) {
        self.lock().arrive(Instant::now());
    }

    /// A client arrived with the ticket a dispatcher signed with `secret` for this
    /// backend (`backend_id` of `service`): checked, then counted as [`Places::arrive`].
    /// A ticket that does not verify admits nothing and changes nothing.
    pub fn admit(
        &self,
        secret: &Secret,
        ticket: &[u8],
        service: &ServiceName,
        backend_id: u64,
    ) -> Result<(), TicketError> {
        let now = loadwise_protocol::unix_time_now();
        ticket::verify(secret.as_bytes(), ticket, service, backend_id, now)?;
        self.arrive();
        Ok(())
    }

    /// `arrived` clients sent by dispatchers arrived, and the backend already counts
    /// them in the places in use it reports: their promises end. (A backend that
    /// reports its occupancy, as the metrics file does, tells arrivals this way.)
    pub fn redeem(&self, arrived: u64) {
        let mut ledger = self.lock();
        let now = Instant::now();
        // Those beyond the open promises are remembered for the reports to come; no
        // more than there are places, or are promised, can be.
        let bound = u64::from(ledger.capacity()) + ledger.promised(now);
        for _ in 0..arrived.min(bound) {
            ledger.redeem(now);
        }
    }

    /// A client left: its place is free, and the dispatchers are granted it before
    /// their next heartbeat.
    pub fn leave(&self) {
        self.lock().leave();
        self.signal_freed();
    }

    /// The places occupied now, as the backend counts them. Places that came free are
    /// granted before the dispatchers' next heartbeat, as by [`Places::leave`].
    pub fn set_in_use(&self, in_use: u32) {
        let before = self.set_in_use_quietly(in_use);
        if in_use < before {
            self.signal_freed();
        }
    }

    /// [`Places::set_in_use`] without the signal, for a count read with a sample:
    /// the heartbeat of that sample grants what came free. Returns the count before.
    pub(crate) fn set_in_use_quietly(&self, in_use: u32) -> u32 {
        let mut ledger = self.lock();
        let before = ledger.in_use();
        ledger.set_in_use(in_use);
        before
    }

    fn signal_freed(&self) {
        self.freed.send_modify(|count| *count = count.wrapping_add(1));
    }

    /// Wakes when a place comes free between samples.
    pub(crate) fn watch_freed(&self) -> watch::Receiver<u64> {
        self.freed.subscribe()
    }

    pub fn in_use(&self) -> u32 {
        self.lock().in_use()
    }

    /// Places nobody has: not in use, promised or held by a dispatcher.
    pub fn free(&self) -> u64 {
        self.lock().free(Instant::now())
    }

    /// Places promised to clients on their way.
    pub fn promised(&self) -> u64 {
        self.lock().promised(Instant::now())
    }

    /// A key for one dispatcher connection.
    pub(crate) fn new_key(&self) -> DispatcherKey {
        self.next_key.fetch_add(1, Ordering::Relaxed)
    }

    /// The slots of the next heartbeat on connection `key`: a grant of a share of the
    /// free places once the dispatcher has answered a first LeaseReport, of none before.
    pub(crate) fn heartbeat(&self, key: DispatcherKey, answered: bool) -> Slots {
        let mut ledger = self.lock();
        let grant = if answered { ledger.grant(key, Instant::now()) } else { ledger.grant_nothing(key) };
        Slots {
            capacity: ledger.capacity(),
            in_use: ledger.in_use(),
            grant_seq: grant.seq,
            grant_total: grant.total,
        }
    }

    /// Applies the dispatcher's LeaseReport on connection `key`.
    pub(crate) fn report(&self, key: DispatcherKey, report: LeaseReport) -> Reported {
        self.lock().report(key, report.grant_seq, report.sent_total, Instant::now())
    }

    /// Connection `key` ended: what it held becomes promises.
    pub(crate) fn forget(&self, key: DispatcherKey) {
        self.lock().forget(key, Instant::now());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"a secret of at least 16 bytes";

    fn game() -> ServiceName {
        ServiceName::new("game").unwrap()
    }

    #[test]
    fn a_valid_ticket_takes_a_place_and_a_forged_one_nothing() {
        let places = Places::new(10, Duration::from_secs(30));
        let secret = Secret::new(SECRET).unwrap();
        let now = loadwise_protocol::unix_time_now();
        let claims = ticket::Claims::new(7, &game(), now, 30, [1; ticket::NONCE_LEN]);
        let valid = ticket::issue(SECRET, &claims).as_bytes().to_vec();
        assert_eq!(places.admit(&secret, &valid, &game(), 7), Ok(()));
        assert_eq!(places.in_use(), 1);
        let mut forged = valid.clone();
        forged[20] ^= 1;
        assert!(places.admit(&secret, &forged, &game(), 7).is_err());
        assert!(places.admit(&secret, &valid, &game(), 8).is_err(), "another backend's");
        assert_eq!(places.in_use(), 1);
        places.leave();
        assert_eq!((places.in_use(), places.free()), (0, 10));
    }
}
