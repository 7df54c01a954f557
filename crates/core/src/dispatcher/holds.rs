//! Operators' holds of departed backends, remembered so that a drain or maintenance
//! survives the backend's reconnect.
//!
//! A backend that leaves (its last connection closed, its TTL passed) while an
//! operator holds it out is remembered by its [`BackendKey`]; when the same backend
//! registers again, it comes back held. Memory is bounded in time (a backend gone for
//! longer is a new deployment, not a reconnect) and in count (at most as many as the
//! registry holds backends), the oldest forgotten first. No clock: `now` comes in.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use crate::model::{BackendKey, State};

/// How long a departed backend's hold is remembered.
pub const HOLD_MEMORY: Duration = Duration::from_secs(15 * 60);

#[derive(Debug)]
pub(super) struct DepartedHolds {
    /// The hold of each departed backend and when it left.
    holds: HashMap<BackendKey, (State, Instant)>,
    /// `(left, key)` in the order backends left: the oldest is forgotten first. An
    /// entry whose key was taken back or remembered again since is stale, and skipped.
    order: VecDeque<(Instant, BackendKey)>,
    /// The most holds remembered.
    max: usize,
}

impl DepartedHolds {
    pub(super) fn new(max: usize) -> Self {
        DepartedHolds { holds: HashMap::new(), order: VecDeque::new(), max }
    }

    pub(super) fn set_max(&mut self, max: usize) {
        self.max = max;
    }

    /// Whether no hold is remembered: then a registration need not look one up.
    pub(super) fn is_empty(&self) -> bool {
        self.holds.is_empty()
    }

    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.holds.len()
    }

    /// Remembers that `key` left at `now` held in `state` (nothing if ready).
    pub(super) fn remember(&mut self, key: BackendKey, state: State, now: Instant) {
        if state == State::Ready || self.max == 0 {
            return;
        }
        self.holds.insert(key.clone(), (state, now));
        self.order.push_back((now, key));
        self.forget_old(now);
    }

    /// The hold of `key` if it left less than [`HOLD_MEMORY`] before `now`, forgotten
    /// once returned: the backend is back and holds it again.
    pub(super) fn take(&mut self, key: &BackendKey, now: Instant) -> Option<State> {
        let (state, left) = self.holds.remove(key)?;
        self.forget_old(now);
        (now.saturating_duration_since(left) < HOLD_MEMORY).then_some(state)
    }

    /// Forgets holds older than [`HOLD_MEMORY`], and the oldest beyond `max`; drops
    /// stale queue entries once they outnumber the holds, so the queue stays bounded.
    fn forget_old(&mut self, now: Instant) {
        while let Some((left, key)) = self.order.front() {
            let current = self.is_current(*left, key);
            let expired = now.saturating_duration_since(*left) >= HOLD_MEMORY;
            if current && !expired && self.holds.len() <= self.max {
                break;
            }
            let (_, key) = self.order.pop_front().expect("looked at above");
            if current {
                self.holds.remove(&key);
            }
        }
        if self.order.len() > 2 * self.holds.len() + 64 {
            let holds = &self.holds;
            self.order.retain(|(left, key)| holds.get(key).is_some_and(|(_, at)| at == left));
        }
    }

    /// Whether the queue entry `(left, key)` is the hold remembered for `key`.
    fn is_current(&self, left: Instant, key: &BackendKey) -> bool {
        self.holds.get(key).is_some_and(|(_, at)| *at == left)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::BackendName;
    use loadwise_protocol::v2::ServiceName;

    fn key(n: u64) -> BackendKey {
        BackendKey { service: ServiceName::new("game").unwrap(), name: BackendName::Chosen(n) }
    }

    #[test]
    fn a_hold_comes_back_once_within_its_memory() {
        let mut holds = DepartedHolds::new(10);
        let t0 = Instant::now();
        holds.remember(key(1), State::Draining, t0);
        holds.remember(key(2), State::Ready, t0);
        assert_eq!(holds.len(), 1, "a ready backend leaves nothing to remember");
        assert_eq!(holds.take(&key(1), t0 + Duration::from_secs(60)), Some(State::Draining));
        assert_eq!(holds.take(&key(1), t0 + Duration::from_secs(61)), None, "taken back once");
        holds.remember(key(3), State::Maintenance, t0);
        assert_eq!(holds.take(&key(3), t0 + HOLD_MEMORY), None, "forgotten after the memory");
    }

    #[test]
    fn the_oldest_holds_are_forgotten_beyond_the_cap() {
        let mut holds = DepartedHolds::new(2);
        let t0 = Instant::now();
        for n in 0..3 {
            holds.remember(key(n), State::Draining, t0 + Duration::from_secs(n));
        }
        assert_eq!(holds.len(), 2);
        let now = t0 + Duration::from_secs(3);
        assert_eq!(holds.take(&key(0), now), None);
        assert_eq!(holds.take(&key(2), now), Some(State::Draining));
    }

    #[test]
    fn remembering_the_same_backend_again_keeps_one_hold_and_a_bounded_queue() {
        let mut holds = DepartedHolds::new(4);
        let t0 = Instant::now();
        for n in 0..1000 {
            holds.remember(key(1), State::Draining, t0 + Duration::from_millis(n));
        }
        assert_eq!(holds.len(), 1);
        assert!(holds.order.len() <= 2 + 64);
        assert_eq!(holds.take(&key(1), t0 + Duration::from_secs(2)), Some(State::Draining));
    }
}
