//! Who gets picked: the selection policies over each backend's effective load.
//!
//! The selector keeps its own view of every backend's load ([`BackendLoad`]) and its
//! own indexes, and never reads the registry; the dispatcher keeps the two in step.
//! A pick accounts for the client it sends in the same call, so the next pick already
//! sees it. Picks and reports each cost O(log n) in the number of backends (O(1) for
//! the random and rotating policies), where the original sorted the whole table on
//! every login. Time and randomness are parameters.

mod load;

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;
use std::time::Instant;

use rand::Rng;

pub use load::{BackendLoad, LoadSettings, MICROS_PER_PERCENT, Score};

use crate::registry::{BackendId, IdMap};

/// How a backend is chosen for each client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Policy {
    /// The lowest effective load (report plus the clients sent since); ties go to
    /// the lowest id, and each pick raises the backend it names.
    LeastLoaded,
    /// The better of two backends drawn at random, by effective load. The default:
    /// it is the most robust to reports that are late or wrong (docs/balancing.md).
    #[default]
    P2c,
    /// Every backend in turn, whatever its load: a baseline.
    RoundRobin,
    /// The lowest reported load, lowest id on ties, with no accounting: the old
    /// server's behaviour, kept for comparison only.
    Original,
}

impl Policy {
    /// Every policy, in the order tables list them.
    pub const ALL: [Policy; 4] = [Policy::LeastLoaded, Policy::P2c, Policy::RoundRobin, Policy::Original];

    /// The name used on the command line and in files.
    pub fn name(self) -> &'static str {
        match self {
            Policy::LeastLoaded => "least-loaded",
            Policy::P2c => "p2c",
            Policy::RoundRobin => "round-robin",
            Policy::Original => "original",
        }
    }

    /// Whether picks under this policy are ordered by the ordered index.
    fn uses_order(self) -> bool {
        matches!(self, Policy::LeastLoaded | Policy::Original)
    }

    /// The key this policy orders backends by.
    fn score(self, load: &BackendLoad) -> Score {
        match self {
            Policy::Original => load.reported_score(),
            _ => load.effective_score(),
        }
    }
}

impl fmt::Display for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A policy name that is not one of [`Policy::ALL`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown policy {0:?} (expected least-loaded, p2c, round-robin or original)")]
pub struct UnknownPolicy(pub String);

impl FromStr for Policy {
    type Err = UnknownPolicy;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Policy::ALL.into_iter().find(|policy| policy.name() == text).ok_or_else(|| UnknownPolicy(text.into()))
    }
}

/// Whether a backend takes new clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendState {
    /// Takes new clients.
    #[default]
    Ready,
    /// Takes no new clients but stays listed, so its current ones can finish.
    Draining,
    /// Out of service for maintenance: takes no new clients, stays listed.
    Maintenance,
}

impl BackendState {
    pub const ALL: [BackendState; 3] =
        [BackendState::Ready, BackendState::Draining, BackendState::Maintenance];

    pub fn name(self) -> &'static str {
        match self {
            BackendState::Ready => "ready",
            BackendState::Draining => "draining",
            BackendState::Maintenance => "maintenance",
        }
    }
}

impl fmt::Display for BackendState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One backend's entry: its load, its state, and its place in the pick indexes.
#[derive(Debug, Clone)]
struct Entry {
    load: BackendLoad,
    state: BackendState,
    /// Where the backend sits in `Selector::members`; `None` while it is not ready
    /// (only ready backends are in the pick indexes).
    slot: Option<usize>,
}

/// Picks backends under one policy and accounts for every pick.
#[derive(Debug)]
pub struct Selector {
    policy: Policy,
    settings: LoadSettings,
    entries: IdMap<Entry>,
    /// `(score, id)` of every ready backend by the policy's score, lowest first;
    /// kept only for the policies that pick from the front.
    order: BTreeSet<(Score, BackendId)>,
    /// Every ready backend, densely packed, for uniform random draws and rotation.
    members: Vec<BackendId>,
    /// The next slot round-robin hands out.
    cursor: usize,
}

impl Selector {
    pub fn new(policy: Policy, settings: LoadSettings) -> Self {
        Selector {
            policy,
            settings,
            entries: IdMap::default(),
            order: BTreeSet::new(),
            members: Vec::new(),
            cursor: 0,
        }
    }

    pub fn policy(&self) -> Policy {
        self.policy
    }

    pub fn settings(&self) -> &LoadSettings {
        &self.settings
    }

    /// Changes the policy; the loads learned so far are kept.
    pub fn set_policy(&mut self, policy: Policy) {
        self.policy = policy;
        self.rebuild_order();
    }

    /// Changes how loads are learned and ramped; the loads learned so far are kept.
    pub fn set_settings(&mut self, settings: LoadSettings) {
        self.settings = settings;
    }

    /// The number of backends known, ready or not.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// The number of backends that take new clients.
    pub fn ready_len(&self) -> usize {
        self.members.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The selector's view of one backend's load.
    pub fn load(&self, id: BackendId) -> Option<&BackendLoad> {
        self.entries.get(&id).map(|entry| &entry.load)
    }

    /// Whether a backend takes new clients.
    pub fn state(&self, id: BackendId) -> Option<BackendState> {
        self.entries.get(&id).map(|entry| entry.state)
    }

    /// Sets a backend's state; returns false for an unknown backend. A backend
    /// that is not ready leaves the pick indexes and keeps its load.
    pub fn set_state(&mut self, id: BackendId, state: BackendState) -> bool {
        let Some(entry) = self.entries.get_mut(&id) else { return false };
        let was_ready = entry.state == BackendState::Ready;
        entry.state = state;
        match (was_ready, state == BackendState::Ready) {
            (true, false) => self.unindex(id),
            (false, true) => self.index(id),
            _ => {}
        }
        true
    }

    /// Records a report: registers the backend, or reconciles its effective load
    /// with the new measurement.
    pub fn report(&mut self, id: BackendId, mem: u8, now: Instant) {
        let Some(entry) = self.entries.get_mut(&id) else {
            let load = BackendLoad::new(mem, now, &self.settings);
            self.entries.insert(id, Entry { load, state: BackendState::Ready, slot: None });
            self.index(id);
            return;
        };
        let before = self.policy.score(&entry.load);
        entry.load.reconcile(mem, &self.settings);
        let after = self.policy.score(&entry.load);
        let ready = entry.state == BackendState::Ready;
        if ready {
            self.reorder(id, before, after);
        }
    }

    /// Forgets a backend; returns whether it was known.
    pub fn remove(&mut self, id: BackendId) -> bool {
        self.unindex(id);
        self.entries.remove(&id).is_some()
    }

    /// Adds a known backend to the pick indexes.
    fn index(&mut self, id: BackendId) {
        let Some(entry) = self.entries.get_mut(&id) else { return };
        if entry.slot.is_some() {
            return;
        }
        entry.slot = Some(self.members.len());
        self.members.push(id);
        if self.policy.uses_order() {
            self.order.insert((self.policy.score(&entry.load), id));
        }
    }

    /// Takes a backend out of the pick indexes, keeping its entry.
    fn unindex(&mut self, id: BackendId) {
        let Some(entry) = self.entries.get_mut(&id) else { return };
        let Some(slot) = entry.slot.take() else { return };
        if self.policy.uses_order() {
            self.order.remove(&(self.policy.score(&entry.load), id));
        }
        self.members.swap_remove(slot);
        if let Some(&moved) = self.members.get(slot) {
            self.entries.get_mut(&moved).expect("every member has an entry").slot = Some(slot);
        }
    }

    /// Picks a backend at `now` and accounts for the client sent there.
    pub fn pick(&mut self, now: Instant, rng: &mut impl Rng) -> Option<BackendId> {
        let id = match self.policy {
            Policy::LeastLoaded | Policy::Original => self.order.first()?.1,
            Policy::P2c => self.pick_better_of_two(rng)?,
            Policy::RoundRobin => self.pick_next_in_turn()?,
        };
        self.record_pick(id, now);
        Some(id)
    }

    fn pick_better_of_two(&self, rng: &mut impl Rng) -> Option<BackendId> {
        let first = *self.members.get(rng.random_range(0..self.members.len().max(1)))?;
        if self.members.len() == 1 {
            return Some(first);
        }
        // A second draw from the others, so the two are always distinct.
        let slot_of_first = self.entries[&first].slot.expect("members are indexed");
        let mut other = rng.random_range(0..self.members.len() - 1);
        if other >= slot_of_first {
            other += 1;
        }
        let second = self.members[other];
        let score = |id: &BackendId| self.entries[id].load.effective_score();
        Some(if score(&second) < score(&first) { second } else { first })
    }

    fn pick_next_in_turn(&mut self) -> Option<BackendId> {
        if self.members.is_empty() {
            return None;
        }
        let slot = self.cursor % self.members.len();
        self.cursor = slot + 1;
        Some(self.members[slot])
    }

    fn record_pick(&mut self, id: BackendId, now: Instant) {
        let entry = self.entries.get_mut(&id).expect("picked backends have an entry");
        let before = self.policy.score(&entry.load);
        entry.load.record_pick(now, &self.settings);
        let after = self.policy.score(&entry.load);
        self.reorder(id, before, after);
    }

    fn reorder(&mut self, id: BackendId, before: Score, after: Score) {
        if self.policy.uses_order() && before != after {
            self.order.remove(&(before, id));
            self.order.insert((after, id));
        }
    }

    fn rebuild_order(&mut self) {
        self.order.clear();
        if self.policy.uses_order() {
            let policy = self.policy;
            let ready = self.members.iter().map(|id| (policy.score(&self.entries[id].load), *id));
            self.order.extend(ready);
        }
    }
}

#[cfg(test)]
mod tests;
