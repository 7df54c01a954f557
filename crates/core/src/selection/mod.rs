//! Who gets picked: the selection policies over each backend's effective load.
//!
//! The selector keeps its own view of every backend's load ([`BackendLoad`]) and its
//! own indexes, and never reads the registry; the dispatcher keeps the two in step.
//! A pick accounts for the client it sends in the same call, so the next pick already
//! sees it. Picks and reports each cost O(log n) in the number of backends (O(1) for
//! the random and rotating policies), where the original sorted the whole table on
//! every login. Time and randomness are parameters.
//!
//! Under `least-loaded`, each backend carries a random offset below
//! [`LoadSettings::tie_band`], redrawn at each report that changes its load, added
//! to its effective load in the pick order only. A dispatcher alone still picks a backend within that
//! band of the lowest effective load, and equal backends still take turns; but
//! several dispatcher replicas, each with its own random source, break their ties
//! in different orders instead of sending their clients to the same backend.

mod load;

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::time::Instant;

use rand::Rng;

pub use load::{BackendLoad, LoadSettings, MAX_TIE_BAND, MICROS_PER_PERCENT, Score, TIE_BAND};

use crate::affinity::{Candidate, PassReason};
use crate::model::{Cause, Health, Hold, LegacyName};
use crate::registry::{BackendId, IdMap, Report};

/// How a backend is chosen for each client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Policy {
    /// The lowest effective load (report plus the clients sent since), as the
    /// original server promised its clients. The default. Ties, and loads within
    /// [`LoadSettings::tie_band`] of each other, are broken by a random offset of
    /// this dispatcher's own; each pick raises the backend it names, so equal
    /// backends take turns.
    #[default]
    LeastLoaded,
    /// The better of two backends drawn at random, by effective load.
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

    /// The key this policy orders backends by; `tie` is the backend's offset within
    /// the tie band, in millionths of a percent.
    fn key(self, load: &BackendLoad, tie: u64) -> Score {
        match self {
            // The old server's order, ties to the lowest id, is kept as it was.
            Policy::Original => load.reported_score(),
            _ => {
                let score = load.effective_score();
                Score { micros: score.micros.saturating_add(tie), ..score }
            }
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

/// Whether a backend takes new clients: the core's [`crate::model::State`], under the
/// name the selector's callers know it by.
pub use crate::model::State as BackendState;

/// The backend a pick chose, with the address its clients are sent to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Picked {
    pub id: BackendId,
    /// The address bytes and port of its latest report, returned to clients unchanged.
    pub legacy: LegacyName,
}

/// One backend as the selector keeps it. A slot holds everything a pick changes or
/// returns, the reply address included, so that a p2c pick touches the winner's
/// slot and no map: with thousands of backends, every extra lookup is a cache miss.
#[derive(Debug, Clone)]
struct Slot {
    id: BackendId,
    load: BackendLoad,
    /// What keeps it from clients, if anything: an operator's hold, its own state
    /// and health, an ejection. It is in the ready prefix exactly when nothing does.
    hold: Hold,
    /// Where this backend's clients are sent, from its latest report.
    legacy: LegacyName,
    /// A random draw, redrawn at each report that changes the load: where in the
    /// tie band this backend's order key lies, as a fraction of 2^32. Each
    /// dispatcher draws its own, so replicas break the same ties differently.
    tie: u32,
    /// The key this backend is filed under in the pick order while it is ready: no
    /// higher than its key, which may have risen since (see [`Selector::order`]).
    ordered: Score,
}

impl Slot {
    /// This backend's offset in the pick order, in millionths of a percent: below
    /// `band` (the tie band in the same unit), which keeps the product within u64.
    fn tie_offset(&self, band: u64) -> u64 {
        (u64::from(self.tie) * band) >> 32
    }
}

/// Picks backends under one policy and accounts for every pick.
#[derive(Debug)]
pub struct Selector {
    policy: Policy,
    settings: LoadSettings,
    /// Every known backend, densely packed, the ready ones first: `slots[..ready]`
    /// is what random draws and rotation choose from.
    slots: Vec<Slot>,
    /// The effective score of every slot, in slot order, packed apart from the slots:
    /// a p2c pick compares two of these (an array small enough to stay in cache) and
    /// then touches the winner's slot alone.
    scores: Vec<Score>,
    /// How many slots, from the front, take new clients.
    ready: usize,
    /// Where each backend's slot is, for reports, removals and operator actions.
    positions: IdMap<usize>,
    /// `(ordered, id)` of every ready backend, lowest first; kept only for the
    /// policies that pick from the front. A pick moves its backend at once, and so
    /// does a report that lowers a key; a report that raises one leaves the entry
    /// where it is until it comes first, and only then is it filed at its key.
    /// Since no entry is filed above its key, the first entry whose key has not
    /// risen is the lowest `(key, id)`: the same pick as an exact order, for fewer
    /// moves, as most raised keys are raised or lowered again before they come first.
    /// Each entry holds the backend's position, so a pick reads its slot without a
    /// lookup in `positions`.
    order: BTreeMap<(Score, BackendId), usize>,
    /// `settings.tie_band` in millionths of a percent, kept at hand for the keys.
    band: u64,
    /// The next slot round-robin hands out.
    cursor: usize,
    /// Changes whenever a backend joins or leaves, never on a report or a state
    /// change: an affinity ring built for one generation holds for it alone. Drawn
    /// from one counter shared by every selector, so no two sets share a number.
    generation: u64,
    /// The sum of the ready backends' effective loads, valid reports only, and their
    /// number: the mean a keyed pick's bound is taken from, without a scan.
    ready_total: ReadyTotal,
}

/// The ready backends' summed effective load, kept as picks and reports change it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct ReadyTotal {
    micros: u128,
    backends: usize,
}

impl ReadyTotal {
    fn add(&mut self, score: Score) {
        if score.tier == 0 {
            self.micros += u128::from(score.micros);
            self.backends += 1;
        }
    }

    fn sub(&mut self, score: Score) {
        if score.tier == 0 {
            self.micros -= u128::from(score.micros);
            self.backends -= 1;
        }
    }
}

/// A new selector generation: see [`Selector::generation`].
fn next_generation() -> u64 {
    static GENERATIONS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    GENERATIONS.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

impl Selector {
    pub fn new(policy: Policy, settings: LoadSettings) -> Self {
        Selector {
            policy,
            band: band_micros(&settings),
            settings,
            slots: Vec::new(),
            scores: Vec::new(),
            ready: 0,
            positions: IdMap::default(),
            order: BTreeMap::new(),
            cursor: 0,
            generation: next_generation(),
            ready_total: ReadyTotal::default(),
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
        let band = band_micros(&settings);
        self.settings = settings;
        if band != self.band {
            self.band = band;
            self.rebuild_order();
        }
    }

    /// The number of backends known, ready or not.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// The number of backends that take new clients.
    pub fn ready_len(&self) -> usize {
        self.ready
    }

    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    fn slot(&self, id: BackendId) -> Option<&Slot> {
        self.positions.get(&id).map(|&position| &self.slots[position])
    }

    /// The key a slot is ordered by under the policy in force.
    fn key(&self, slot: &Slot) -> Score {
        self.policy.key(&slot.load, slot.tie_offset(self.band))
    }

    /// The selector's view of one backend's load.
    pub fn load(&self, id: BackendId) -> Option<&BackendLoad> {
        self.slot(id).map(|slot| &slot.load)
    }

    /// Whether a backend takes new clients, as far as the operator and the backend's
    /// own state go: the furthest of the two.
    pub fn state(&self, id: BackendId) -> Option<BackendState> {
        self.slot(id).map(|slot| slot.hold.standing().state)
    }

    /// Everything that holds a backend: see [`Hold::standing`] for what is in force.
    pub fn hold(&self, id: BackendId) -> Option<Hold> {
        self.slot(id).map(|slot| slot.hold)
    }

    /// Sets the state an operator holds a backend in; returns false for an unknown
    /// backend. A backend that is not ready leaves the pick indexes and keeps its
    /// load. What the backend reports can keep it further out, never bring it back.
    pub fn set_state(&mut self, id: BackendId, state: BackendState) -> bool {
        self.change_hold(id, |hold| hold.operator = state)
    }

    /// Records the state a backend reports for itself (ready, draining for
    /// maintenance, ...); returns false for an unknown backend.
    pub fn report_state(&mut self, id: BackendId, state: BackendState) -> bool {
        self.change_hold(id, |hold| hold.agent = state)
    }

    /// Records what a backend's own checks say; returns false for an unknown backend.
    pub fn report_health(&mut self, id: BackendId, health: Health) -> bool {
        self.change_hold(id, |hold| hold.health = health)
    }

    /// Marks a slot backend as without a place this dispatcher may fill, or with one
    /// again; returns false for an unknown backend.
    pub fn set_no_place(&mut self, id: BackendId, no_place: bool) -> bool {
        self.change_hold(id, |hold| hold.no_place = no_place)
    }

    /// Ejects a backend, or ends its ejection; returns false for an unknown backend.
    pub fn set_ejected(&mut self, id: BackendId, ejected: bool) -> bool {
        self.change_hold(id, |hold| hold.ejected = ejected)
    }

    /// The state an operator holds a backend in, and the one it reports.
    pub fn states(&self, id: BackendId) -> Option<(BackendState, BackendState)> {
        self.slot(id).map(|slot| (slot.hold.operator, slot.hold.agent))
    }

    /// Applies `change` to a backend's hold, and moves it in or out of the pick
    /// indexes if that changed whether it takes clients.
    fn change_hold(&mut self, id: BackendId, change: impl FnOnce(&mut Hold)) -> bool {
        let Some(&position) = self.positions.get(&id) else { return false };
        let slot = &mut self.slots[position];
        let before = slot.hold;
        change(&mut slot.hold);
        if slot.hold != before {
            self.update_state(position);
        }
        true
    }

    /// Sets a backend's relative capacity (100 is the norm): the clients it is sent
    /// are assumed to cost it that much less until its reports show their cost.
    pub fn set_weight(&mut self, id: BackendId, weight: std::num::NonZeroU16) -> bool {
        let Some(&position) = self.positions.get(&id) else { return false };
        self.slots[position].load.set_weight(weight, &self.settings);
        true
    }

    /// Moves a slot in or out of the pick indexes after its hold changed.
    fn update_state(&mut self, position: usize) {
        let takes_clients = self.slots[position].hold.standing().takes_clients();
        let was_ready = position < self.ready;
        match (was_ready, takes_clients) {
            (true, false) => {
                self.unindex(position);
            }
            (false, true) => self.index(position),
            _ => {}
        }
    }

    /// Records a report: registers the backend, or reconciles its effective load
    /// with the new measurement and takes up the address it gives. `rng` draws the
    /// backend's place in the tie band, anew whenever the report changes its load.
    pub fn report(&mut self, id: BackendId, report: Report, now: Instant, rng: &mut impl Rng) {
        let Some(&position) = self.positions.get(&id) else {
            self.register(id, report, rng.random(), now);
            return;
        };
        let slot = &mut self.slots[position];
        slot.legacy = report.legacy;
        let previous = slot.load.effective_score();
        slot.load.reconcile(report.load, &self.settings);
        let score = slot.load.effective_score();
        // A new load, a new place in the band: no backend keeps winning the ties it
        // meets after its reports. An unchanged load keeps its place, so a report
        // that changes nothing costs no re-ordering.
        if score != previous {
            slot.tie = rng.random();
        }
        self.set_score(position, score);
        if position < self.ready {
            self.refile_if_lower(position);
        }
    }

    /// Adds a backend heard from for the first time, ready.
    fn register(&mut self, id: BackendId, report: Report, tie: u32, now: Instant) {
        let load = BackendLoad::new(report.load, now, &self.settings);
        let position = self.slots.len();
        self.generation = next_generation();
        self.scores.push(load.effective_score());
        self.slots.push(Slot {
            id,
            load,
            hold: Hold::default(),
            legacy: report.legacy,
            tie,
            ordered: Score { tier: 0, micros: 0 },
        });
        self.positions.insert(id, position);
        self.index(position);
    }

    /// Forgets a backend; returns whether it was known.
    pub fn remove(&mut self, id: BackendId) -> bool {
        let Some(&position) = self.positions.get(&id) else { return false };
        // Out of the ready prefix first (it lands at its end), then to the back.
        let position = if position < self.ready { self.unindex(position) } else { position };
        let last = self.slots.len() - 1;
        self.swap(position, last);
        self.slots.pop();
        self.scores.pop();
        self.positions.remove(&id);
        self.generation = next_generation();
        true
    }

    /// Moves the slot at `position`, not ready, to the end of the ready prefix, and
    /// into the order.
    fn index(&mut self, position: usize) {
        debug_assert!(position >= self.ready, "already indexed");
        let target = self.ready;
        self.swap(position, target);
        self.ready += 1;
        self.ready_total.add(self.scores[target]);
        if self.policy.uses_order() {
            let key = self.key(&self.slots[target]);
            let slot = &mut self.slots[target];
            slot.ordered = key;
            self.order.insert((key, slot.id), target);
        }
    }

    /// Takes the ready slot at `position` out of the pick indexes, keeping its load:
    /// it moves just past the shrunk ready prefix. Returns its new position. The
    /// last ready slot takes its place, as `Vec::swap_remove` would place it, so the
    /// order of random draws and rotation is that of a swap-removed list.
    fn unindex(&mut self, position: usize) -> usize {
        debug_assert!(position < self.ready, "not indexed");
        if self.policy.uses_order() {
            let slot = &self.slots[position];
            self.order.remove(&(slot.ordered, slot.id));
        }
        self.ready_total.sub(self.scores[position]);
        self.ready -= 1;
        let target = self.ready;
        self.swap(position, target);
        target
    }

    /// Swaps two slots and keeps `positions` pointing at both.
    fn swap(&mut self, a: usize, b: usize) {
        if a == b {
            return;
        }
        self.slots.swap(a, b);
        self.scores.swap(a, b);
        self.positions.insert(self.slots[a].id, a);
        self.positions.insert(self.slots[b].id, b);
        if self.policy.uses_order() {
            for position in [a, b] {
                let slot = &self.slots[position];
                if let Some(filed) = self.order.get_mut(&(slot.ordered, slot.id)) {
                    *filed = position;
                }
            }
        }
    }

    /// Picks a backend at `now` and accounts for the client sent there.
    pub fn pick(&mut self, now: Instant, rng: &mut impl Rng) -> Option<BackendId> {
        self.pick_target(now, rng).map(|picked| picked.id)
    }

    /// Picks a backend at `now`, accounts for the client sent there, and returns
    /// where to send it.
    pub fn pick_target(&mut self, now: Instant, rng: &mut impl Rng) -> Option<Picked> {
        let position = match self.policy {
            Policy::LeastLoaded | Policy::Original => self.first_in_order()?,
            Policy::P2c => self.pick_better_of_two(rng)?,
            Policy::RoundRobin => self.pick_next_in_turn()?,
        };
        self.record_pick(position, now);
        let slot = &self.slots[position];
        Some(Picked { id: slot.id, legacy: slot.legacy })
    }

    fn pick_better_of_two(&self, rng: &mut impl Rng) -> Option<usize> {
        // An empty pool still takes a draw, so that seeded sequences do not
        // depend on whether a pick found the pool empty.
        let first = rng.random_range(0..self.ready.max(1));
        if first >= self.ready {
            return None;
        }
        if self.ready == 1 {
            return Some(first);
        }
        // A second draw from the others, so the two are always distinct.
        let mut second = rng.random_range(0..self.ready - 1);
        if second >= first {
            second += 1;
        }
        Some(if self.scores[second] < self.scores[first] { second } else { first })
    }

    fn pick_next_in_turn(&mut self) -> Option<usize> {
        if self.ready == 0 {
            return None;
        }
        let position = self.cursor % self.ready;
        self.cursor = position + 1;
        Some(position)
    }

    /// The position of the ready backend of the lowest `(key, id)`. Entries met
    /// first whose key has risen are filed at their key on the way.
    fn first_in_order(&mut self) -> Option<usize> {
        loop {
            let (&(ordered, id), &position) = self.order.first_key_value()?;
            let key = self.key(&self.slots[position]);
            if key == ordered {
                return Some(position);
            }
            self.order.pop_first();
            self.order.insert((key, id), position);
            self.slots[position].ordered = key;
        }
    }

    /// A pick raises the backend's key, and it moves at once: under the policies
    /// that pick from the front, its entry is the first one, which is taken out
    /// without a search, and the next pick would have to move it anyway.
    fn record_pick(&mut self, position: usize, now: Instant) {
        self.record_load(position, now);
        if !self.policy.uses_order() {
            return;
        }
        let key = self.key(&self.slots[position]);
        let slot = &mut self.slots[position];
        if key != slot.ordered {
            let entry = (slot.ordered, slot.id);
            if self.order.first_key_value().is_some_and(|(first, _)| *first == entry) {
                self.order.pop_first();
            } else {
                self.order.remove(&entry);
            }
            self.order.insert((key, slot.id), position);
            slot.ordered = key;
        }
    }

    /// Counts a client in the load of the backend at `position`, and its score.
    fn record_load(&mut self, position: usize, now: Instant) {
        let slot = &mut self.slots[position];
        slot.load.record_pick(now, &self.settings);
        let score = slot.load.effective_score();
        self.set_score(position, score);
    }

    /// Records a slot's new effective score, in the ready total too if it is ready.
    fn set_score(&mut self, position: usize, score: Score) {
        if position < self.ready {
            self.ready_total.sub(self.scores[position]);
            self.ready_total.add(score);
        }
        self.scores[position] = score;
    }

    /// The set of backends' generation: it changes when a backend joins or leaves.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Every backend known, ready or not, in no particular order.
    pub fn ids(&self) -> impl Iterator<Item = BackendId> + '_ {
        self.slots.iter().map(|slot| slot.id)
    }

    /// The summed effective load of the ready backends with a valid report, in
    /// percent, and their number.
    pub fn ready_load(&self) -> (f64, usize) {
        (self.ready_total.micros as f64 / MICROS_PER_PERCENT, self.ready_total.backends)
    }

    /// How a backend stands for a keyed pick: ready with its load and the cost of
    /// one more client, or why it is passed over.
    pub fn affinity_candidate(&self, id: BackendId) -> Candidate {
        let Some(slot) = self.slot(id) else { return Candidate::Passed(PassReason::Gone) };
        let standing = slot.hold.standing();
        match (standing.state, standing.cause) {
            (BackendState::Draining, _) => Candidate::Passed(PassReason::Draining),
            (BackendState::Maintenance, _) => Candidate::Passed(PassReason::Maintenance),
            (BackendState::Ready, Some(Cause::Unhealthy)) => Candidate::Passed(PassReason::Unhealthy),
            (BackendState::Ready, Some(Cause::NoFreePlace)) => Candidate::Passed(PassReason::OverBound),
            (BackendState::Ready, Some(_)) => Candidate::Passed(PassReason::Ejected),
            (BackendState::Ready, None) if !slot.load.report_is_valid() => {
                Candidate::Passed(PassReason::Unscored)
            }
            (BackendState::Ready, None) => {
                Candidate::Ready { load: slot.load.effective(), cost: slot.load.cost() }
            }
        }
    }

    /// Sends a client to the ready backend `id` (a keyed pick's or a slot pool's
    /// choice), accounting for it in its load as any pick; `None` if it is not ready.
    ///
    /// The pick raises the backend's key, but its entry in the order stays where it
    /// is until it comes first ([`Selector::first_in_order`] files it then): the
    /// order did not choose it, and in a slot service, whose picks the slot pools
    /// choose, it may never be asked, so moving it on every pick would be work for
    /// nothing.
    pub fn pick_backend(&mut self, id: BackendId, now: Instant) -> Option<Picked> {
        let position = *self.positions.get(&id)?;
        if position >= self.ready {
            return None;
        }
        self.record_load(position, now);
        let slot = &self.slots[position];
        Some(Picked { id: slot.id, legacy: slot.legacy })
    }

    /// Moves the ready slot at `position` in the order if its key fell below the
    /// one it is filed under; a key that rose stays filed lower until it comes first.
    fn refile_if_lower(&mut self, position: usize) {
        if !self.policy.uses_order() {
            return;
        }
        let key = self.key(&self.slots[position]);
        let slot = &mut self.slots[position];
        if key < slot.ordered {
            self.order.remove(&(slot.ordered, slot.id));
            self.order.insert((key, slot.id), position);
            slot.ordered = key;
        }
    }

    /// Checks that every index agrees with the slots (for tests).
    #[cfg(test)]
    fn check_indexes(&self) {
        assert_eq!(
            (self.slots.len(), self.scores.len(), self.positions.len()),
            (self.len(), self.len(), self.len())
        );
        for (position, slot) in self.slots.iter().enumerate() {
            assert_eq!(self.positions[&slot.id], position, "{}", slot.id);
            assert_eq!(self.scores[position], slot.load.effective_score(), "{}", slot.id);
            assert_eq!(position < self.ready, slot.hold.standing().takes_clients(), "{}", slot.id);
        }
        let mut total = ReadyTotal::default();
        self.scores[..self.ready].iter().for_each(|&score| total.add(score));
        assert_eq!(self.ready_total, total);
        let expected: BTreeMap<_, _> = if self.policy.uses_order() {
            let ready = self.slots[..self.ready].iter().enumerate();
            ready.map(|(position, slot)| ((slot.ordered, slot.id), position)).collect()
        } else {
            BTreeMap::new()
        };
        assert_eq!(self.order, expected);
        for slot in &self.slots[..self.ready] {
            assert!(
                !self.policy.uses_order() || slot.ordered <= self.key(slot),
                "{} filed above its key",
                slot.id
            );
        }
    }

    fn rebuild_order(&mut self) {
        self.order.clear();
        if self.policy.uses_order() {
            let (policy, band) = (self.policy, self.band);
            for (position, slot) in self.slots[..self.ready].iter_mut().enumerate() {
                slot.ordered = policy.key(&slot.load, slot.tie_offset(band));
                self.order.insert((slot.ordered, slot.id), position);
            }
        }
    }
}

/// The tie band of `settings` in millionths of a percent. Clamped, so that settings
/// that were never validated cannot overflow an offset (NaN counts as no band).
fn band_micros(settings: &LoadSettings) -> u64 {
    (settings.tie_band.clamp(0.0, MAX_TIE_BAND) * MICROS_PER_PERCENT) as u64
}

#[cfg(test)]
mod tests;
