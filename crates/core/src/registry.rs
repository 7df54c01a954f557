//! Who is alive: the table of registered backends, their last report, and TTL expiry.
//!
//! The registry performs no I/O and reads no clock: every call that depends on time
//! takes `now`, so expiry is exact and testable. It knows nothing of how backends
//! are picked; see [`crate::selection`].

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::num::NonZeroU16;
use std::time::{Duration, Instant};

use loadwise_protocol::v2;

pub use crate::model::{BackendId, IdHasher, IdMap};
use crate::model::{Endpoint, LegacyName, Load, Metrics, State};

/// What a heartbeat reports, copied out of the frame.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Report {
    /// The address bytes and port a legacy reply sends its clients to, returned
    /// unchanged: a legacy backend's name; a v2 backend's endpoint as such a reply
    /// writes it (zeroed outside the default service, which legacy clients never ask).
    pub legacy: LegacyName,
    /// Its load: a legacy backend's `mem`, a v2 backend's score, unrounded.
    pub load: Load,
}

impl Report {
    /// Whether the report carries a figure above 100, which is not a measurement.
    pub fn is_invalid(&self) -> bool {
        matches!(self.load, Load::Invalid(_))
    }
}

/// What a v2 backend says of itself beyond what selection needs, in the core's
/// terms: kept for the replies that name it (its chosen id, its endpoint) and for
/// operators.
#[derive(Debug, Clone, PartialEq)]
pub struct V2Detail {
    /// The service it named.
    pub service: v2::ServiceName,
    /// The id it chose: unique in its service, kept across reconnects.
    pub backend_id: u64,
    /// Where its clients connect.
    pub endpoint: Endpoint,
    /// The figures of its latest heartbeat, with the precision they were sent in.
    pub metrics: Metrics,
    /// Its relative capacity; 100 is the norm.
    pub weight: NonZeroU16,
    /// What it says of itself in its latest heartbeat.
    pub state: State,
    /// The load its service's scoring made of those figures; `None` when a figure
    /// the scoring needs was missing.
    pub score: Option<f64>,
}

/// One registered backend.
#[derive(Debug, Clone, PartialEq)]
pub struct Backend {
    /// The latest report.
    pub report: Report,
    pub registered_at: Instant,
    pub last_heartbeat: Instant,
    /// Heartbeats received, including the first.
    pub heartbeats: u64,
    /// Heartbeats whose load was above 100.
    pub invalid_reports: u64,
    /// What a v2 backend reported; `None` for a legacy one.
    pub v2: Option<Box<V2Detail>>,
}

impl Backend {
    /// The service the backend named, or `None` for a legacy backend (which belongs
    /// to the default service).
    pub fn service(&self) -> Option<&v2::ServiceName> {
        self.v2.as_ref().map(|detail| &detail.service)
    }

    /// Where its clients are sent, as operators write it (`10.0.0.2:1002`), for log
    /// lines: a v2 backend's endpoint, a legacy backend's ip field and port.
    pub fn address(&self) -> BackendAddress<'_> {
        match &self.v2 {
            Some(detail) => BackendAddress::Endpoint(&detail.endpoint),
            None => BackendAddress::Legacy(&self.report.legacy),
        }
    }
}

/// A backend's address for log lines: see [`Backend::address`].
#[derive(Clone, Copy)]
pub enum BackendAddress<'a> {
    Legacy(&'a LegacyName),
    Endpoint(&'a Endpoint),
}

impl std::fmt::Display for BackendAddress<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BackendAddress::Legacy(address) => address.fmt(f),
            BackendAddress::Endpoint(endpoint) => endpoint.fmt(f),
        }
    }
}

/// What a heartbeat changed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Change {
    /// The report this heartbeat replaced; `None` when it registered a new backend.
    pub previous: Option<Report>,
    /// True the first time this backend sends a `mem` above 100, so that it can be
    /// logged once per backend rather than once per heartbeat.
    pub first_invalid_report: bool,
}

/// The table is at its configured size and the heartbeat came from a new backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the registry is full ({max} backends)")]
pub struct RegistryFull {
    pub max: usize,
}

/// One registered backend, with the instant of its entry in the expiry queue.
#[derive(Debug)]
struct Entry {
    backend: Backend,
    /// The instant of this backend's current entry in [`Registry::queue`]; never
    /// after its last heartbeat. Older entries of the same id are stale.
    queued: Instant,
}

/// The most stale entries the expiry queue may hold beyond one per backend before it
/// is rebuilt: enough that a rebuild is rare, few enough that the queue stays small.
const QUEUE_SLACK: usize = 64;

/// The live backends, indexed by id and, lazily, by the time of their last heartbeat.
///
/// Expiry needs the backends silent for a TTL without scanning the table, and a
/// heartbeat should not pay for an ordered index: 10 000 backends send 10 000 a
/// second. So the queue holds, for each backend, one entry at an instant no later
/// than its last heartbeat, and a heartbeat only writes the backend's own entry in the
/// map. When an entry comes due, the backend is expired if it really is silent, and
/// queued again at its last heartbeat otherwise: about one queue operation per
/// backend per TTL, instead of two tree operations per heartbeat.
#[derive(Debug)]
pub struct Registry {
    backends: IdMap<Entry>,
    /// `(instant, id)`, earliest first: every backend's current entry, and entries
    /// left stale by removals and out-of-order heartbeats (at most `QUEUE_SLACK`
    /// more than there are backends).
    queue: BinaryHeap<Reverse<(Instant, BackendId)>>,
    ttl: Duration,
    max_backends: usize,
}

impl Registry {
    /// An empty registry. A backend expires once `ttl` has passed since its last
    /// heartbeat; at most `max_backends` are registered at once.
    pub fn new(ttl: Duration, max_backends: usize) -> Self {
        Registry { backends: IdMap::default(), queue: BinaryHeap::new(), ttl, max_backends }
    }

    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// Changes the TTL; it applies to every backend from the next expiry check.
    pub fn set_ttl(&mut self, ttl: Duration) {
        self.ttl = ttl;
    }

    /// Changes the cap. Lowering it below the current count removes no one; it
    /// only refuses new backends until enough have gone.
    pub fn set_max_backends(&mut self, max_backends: usize) {
        self.max_backends = max_backends;
    }

    pub fn len(&self) -> usize {
        self.backends.len()
    }

    pub fn is_empty(&self) -> bool {
        self.backends.is_empty()
    }

    pub fn get(&self, id: BackendId) -> Option<&Backend> {
        self.backends.get(&id).map(|entry| &entry.backend)
    }

    /// All backends, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (BackendId, &Backend)> {
        self.backends.iter().map(|(id, entry)| (*id, &entry.backend))
    }

    /// Registers `id` or replaces its report, and restarts its TTL at `now`.
    pub fn heartbeat(&mut self, id: BackendId, report: Report, now: Instant) -> Result<Change, RegistryFull> {
        let invalid = report.is_invalid();
        if let Some(entry) = self.backends.get_mut(&id) {
            let backend = &mut entry.backend;
            backend.last_heartbeat = now;
            // Reads are applied in any order, so an instant may precede the queued
            // one: the backend is queued anew, so that its entry never comes due late.
            let requeue = now < entry.queued;
            if requeue {
                entry.queued = now;
            }
            let previous = std::mem::replace(&mut backend.report, report);
            backend.heartbeats += 1;
            backend.invalid_reports += u64::from(invalid);
            let first_invalid_report = invalid && backend.invalid_reports == 1;
            if requeue {
                self.queue.push(Reverse((now, id)));
                self.compact_if_stale();
            }
            return Ok(Change { previous: Some(previous), first_invalid_report });
        }
        if self.backends.len() >= self.max_backends {
            return Err(RegistryFull { max: self.max_backends });
        }
        let backend = Backend {
            report,
            registered_at: now,
            last_heartbeat: now,
            heartbeats: 1,
            invalid_reports: u64::from(invalid),
            v2: None,
        };
        self.backends.insert(id, Entry { backend, queued: now });
        self.queue.push(Reverse((now, id)));
        Ok(Change { previous: None, first_invalid_report: invalid })
    }

    /// Records what a v2 backend reported with its latest heartbeat.
    pub fn set_detail(&mut self, id: BackendId, detail: V2Detail) {
        let Some(entry) = self.backends.get_mut(&id) else { return };
        match &mut entry.backend.v2 {
            // In place: a heartbeat a second costs no allocation.
            Some(current) => **current = detail,
            None => entry.backend.v2 = Some(Box::new(detail)),
        }
    }

    /// Removes `id`, returning its entry if it was registered. Its queue entry goes
    /// stale, and is dropped when it comes due or the queue is rebuilt.
    pub fn remove(&mut self, id: BackendId) -> Option<Backend> {
        let entry = self.backends.remove(&id)?;
        self.compact_if_stale();
        Some(entry.backend)
    }

    /// Whether a backend last heard from at `last_heartbeat` has expired at `now`.
    /// The boundary is exclusive: a backend is alive for strictly less than one TTL
    /// after its heartbeat, and expired from the instant the TTL has fully passed.
    pub fn is_expired(&self, last_heartbeat: Instant, now: Instant) -> bool {
        expired(last_heartbeat, now, self.ttl)
    }

    /// Removes and returns every backend that has expired at `now`, oldest first.
    /// Costs one comparison when no queue entry has come due; otherwise a queue
    /// operation per entry due, which is at most one per backend per TTL unless
    /// backends expire.
    pub fn expire(&mut self, now: Instant) -> Vec<(BackendId, Backend)> {
        let ttl = self.ttl;
        let mut expired_backends = Vec::new();
        while let Some(&Reverse((queued, id))) = self.queue.peek() {
            // Every backend's entry is at or before its last heartbeat: once the
            // earliest entry has not come due, no backend has expired.
            if !expired(queued, now, ttl) {
                break;
            }
            self.queue.pop();
            let Some(entry) = self.backends.get_mut(&id).filter(|entry| entry.queued == queued) else {
                continue;
            };
            let last = entry.backend.last_heartbeat;
            if expired(last, now, ttl) {
                let entry = self.backends.remove(&id).expect("looked up above");
                expired_backends.push((id, entry.backend));
            } else {
                entry.queued = last;
                self.queue.push(Reverse((last, id)));
            }
        }
        if self.backends.is_empty() {
            self.queue.clear();
        }
        // Entries come due in the order they were queued, which is not always that
        // of the last heartbeats.
        expired_backends.sort_by_key(|(id, backend)| (backend.last_heartbeat, *id));
        expired_backends
    }

    /// The instant at which the next backend expires, if any is registered. Brings
    /// the queue's earliest entries up to date first, so the answer is exact.
    pub fn next_expiry(&mut self) -> Option<Instant> {
        self.expiry_bound(usize::MAX)
    }

    /// An instant no later than the next expiry, if any backend is registered: exact
    /// unless more than `budget` of the queue's earliest entries are out of date, each
    /// costing a queue operation to bring up to date. A caller that sleeps until it
    /// and asks again reaches the exact instant in steps of `budget` entries, so that
    /// no single call holds the table for long.
    pub fn expiry_bound(&mut self, budget: usize) -> Option<Instant> {
        for _ in 0..budget {
            let &Reverse((queued, id)) = self.queue.peek()?;
            match self.backends.get_mut(&id) {
                Some(entry) if entry.queued == queued => {
                    let last = entry.backend.last_heartbeat;
                    // The earliest entry, and current: no backend was heard from earlier.
                    if last == queued {
                        return Some(last + self.ttl);
                    }
                    entry.queued = last;
                    self.queue.pop();
                    self.queue.push(Reverse((last, id)));
                }
                _ => {
                    self.queue.pop();
                }
            }
        }
        self.queue.peek().map(|&Reverse((queued, _))| queued + self.ttl)
    }

    /// Rebuilds the queue from the backends' current entries once stale ones
    /// outnumber the slack, so that its size stays within one entry per backend plus
    /// `QUEUE_SLACK`, twice over: each rebuild costs as much as the removals that
    /// made it due.
    fn compact_if_stale(&mut self) {
        if self.queue.len() <= 2 * self.backends.len() + QUEUE_SLACK {
            return;
        }
        let current = self.backends.iter().map(|(id, entry)| Reverse((entry.queued, *id)));
        let mut queue = std::mem::take(&mut self.queue).into_vec();
        queue.clear();
        queue.extend(current);
        self.queue = BinaryHeap::from(queue);
    }
}

/// Whether a heartbeat at `last` is more than `ttl` old at `now` (see
/// [`Registry::is_expired`]).
fn expired(last: Instant, now: Instant, ttl: Duration) -> bool {
    now.saturating_duration_since(last) >= ttl
}

#[cfg(test)]
mod tests;
