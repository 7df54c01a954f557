//! Capacity slots, the backend's side: which places are free, and how many of them each
//! dispatcher may promise (its *lease*). Pure: time comes in as `now`; the links and the
//! wire are elsewhere.
//!
//! A backend has `capacity` places; `in_use` are taken (the backend says so). A
//! dispatcher that sends a client here *promises* it a place; the promise ends when the
//! client arrives and is redeemed (the backend's in-use count then holds it), or when
//! its lifetime (the ticket lifetime, 30 s by default) passes.
//!
//! **Leases are cumulative.** Each heartbeat to a dispatcher carries a *grant*: the
//! number of clients that dispatcher may have sent here, in all, since its connection
//! began, numbered by a sequence. The dispatcher sends clients while its count is below
//! the latest grant it has, and reports (in reply to each heartbeat) the sequence of the
//! grant it now holds and its count. Until a report shows a dispatcher holds grant `g`,
//! it may still be working to any earlier, larger one, so the places it *holds* are the
//! largest grant it may be working to, less the count it last reported. What a report
//! adds to the count becomes promises. The rule that makes overshoot impossible:
//!
//! > places in use, promised and held never add up to more than `capacity`.
//!
//! Since grants and counts are totals, a lost report costs nothing but time (the next
//! one says all it would have said, and until then the places stay held, as if used),
//! and a dispatcher keeps what it was granted and did not use: no lease has to be
//! handed back before the next can be given, so a dispatcher never waits out an
//! interval with places free. A grant lower than the last takes places back from a
//! dispatcher (once it reports holding it).
//!
//! **The split.** At each of its heartbeats a dispatcher is granted a share of every
//! place not in use or promised (at most what is free plus what it holds itself): its
//! recent use over everyone's (an average of what its
//! reports added, at least [`Ledger::FLOOR`] each), so replicas that pick more hold
//! more, and one that has picked nothing lately still holds its floor's share and can
//! start at once. When the share rounds to nothing and a place is free, it gets one:
//! every place can be leased in the end.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// The most grants a dispatcher that does not report keeps open.
const MAX_OPEN_GRANTS: usize = 64;

/// Who a lease is for: one dispatcher connection of this agent.
pub type DispatcherKey = u64;

/// What a heartbeat grants a dispatcher.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Grant {
    /// Numbers this dispatcher's grants, so that its report names the one it holds.
    pub seq: u32,
    /// The clients it may have sent here, in all, on this connection.
    pub total: u64,
}

/// One dispatcher's grants and reports.
#[derive(Debug, Clone, Default)]
struct Dispatcher {
    next_seq: u32,
    /// Grants it may be working to: those not older than the one it last reported
    /// holding (seq → total).
    grants: BTreeMap<u32, u64>,
    /// Its count as last reported.
    reported: u64,
    /// An average of what each report added.
    recent_use: f64,
}

impl Dispatcher {
    /// Places it may promise without telling: the largest grant it may be working to,
    /// less its reported count.
    fn held(&self) -> u64 {
        let largest = self.grants.values().copied().max().unwrap_or(0);
        largest.saturating_sub(self.reported)
    }

    fn weight(&self) -> f64 {
        self.recent_use.max(Ledger::FLOOR)
    }

    /// Keeps the grants it may work to within [`MAX_OPEN_GRANTS`] while its reports
    /// are lost: the oldest go, the largest total stays (what it may have been sent to
    /// is what it holds), so its holding is unchanged.
    fn bound_grants(&mut self) {
        while self.grants.len() > MAX_OPEN_GRANTS {
            let largest = self.grants.values().copied().max().unwrap_or(0);
            self.grants.pop_first();
            if let Some(mut newest) = self.grants.last_entry() {
                *newest.get_mut() = (*newest.get()).max(largest);
            }
        }
    }
}

/// What a dispatcher's report did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reported {
    /// `promised` places became promises.
    Applied { promised: u64 },
    /// No grant of that sequence is outstanding, or the count went back: ignored.
    Ignored,
}

/// The places of one backend and the grants of every dispatcher it reports to.
#[derive(Debug, Clone)]
pub struct Ledger {
    capacity: u32,
    in_use: u32,
    /// How long a promise lasts unredeemed.
    promise_lifetime: Duration,
    /// Promised places, by when they lapse.
    promises: BTreeMap<Instant, u64>,
    /// Clients that arrived before the report that promised their place, by when the
    /// credit lapses: the report's promises go to them first, so that a client is
    /// not counted both in use and promised.
    early: BTreeMap<Instant, u64>,
    /// Ordered, so that the weights add up in the same order every time.
    dispatchers: BTreeMap<DispatcherKey, Dispatcher>,
}

impl Ledger {
    /// The least weight a dispatcher has in the split, in places per report.
    pub const FLOOR: f64 = 1.0;

    /// How much a new report moves a dispatcher's recent use (an exponential average).
    const SMOOTHING: f64 = 0.5;

    /// A backend of `capacity` places, `in_use` of them taken, whose dispatchers'
    /// promises last `promise_lifetime`.
    pub fn new(capacity: u32, in_use: u32, promise_lifetime: Duration) -> Ledger {
        Ledger {
            capacity,
            in_use,
            promise_lifetime,
            promises: BTreeMap::new(),
            early: BTreeMap::new(),
            dispatchers: BTreeMap::new(),
        }
    }

    pub fn capacity(&self) -> u32 {
        self.capacity
    }

    pub fn in_use(&self) -> u32 {
        self.in_use
    }

    /// Sets the number of places in total (the backend's configuration changed).
    pub fn set_capacity(&mut self, capacity: u32) {
        self.capacity = capacity;
    }

    /// Sets the places taken, as the backend counts them: arrived clients, whose
    /// promises were redeemed.
    pub fn set_in_use(&mut self, in_use: u32) {
        self.in_use = in_use;
    }

    /// Places promised and not yet redeemed or lapsed at `now`.
    pub fn promised(&mut self, now: Instant) -> u64 {
        self.lapse(now);
        self.promises.values().sum()
    }

    /// Places dispatchers hold: granted, and not reported used.
    pub fn held(&self) -> u64 {
        self.dispatchers.values().map(Dispatcher::held).sum()
    }

    /// Places nobody has at `now`: not in use, not promised, not held.
    pub fn free(&mut self, now: Instant) -> u64 {
        let taken = u64::from(self.in_use) + self.promised(now) + self.held();
        u64::from(self.capacity).saturating_sub(taken)
    }

    /// The grant to send `dispatcher` with its next heartbeat, at `now`.
    pub fn grant(&mut self, dispatcher: DispatcherKey, now: Instant) -> Grant {
        let free = self.free(now);
        let known = self.dispatchers.contains_key(&dispatcher);
        let weights: f64 = self.dispatchers.values().map(Dispatcher::weight).sum();
        let all_held = self.held();
        let entry = self.dispatchers.entry(dispatcher).or_default();
        let own = entry.weight();
        let total_weight = if known { weights } else { weights + own };
        // Its share is of every place not in use or promised; it can have no more
        // than what is free plus what it holds itself (the others' is theirs until
        // they report).
        let share = ((free + all_held) as f64 * own / total_weight).floor() as u64;
        let pool = free + entry.held();
        let share = if share == 0 && free > 0 { 1 } else { share.min(pool) };
        let total = entry.reported + share;
        let seq = entry.next_seq;
        entry.next_seq = entry.next_seq.wrapping_add(1);
        entry.grants.insert(seq, total);
        entry.bound_grants();
        Grant { seq, total }
    }

    /// A grant of no new places for `dispatcher`: what it holds stays, nothing is
    /// added. Sent until the dispatcher has shown, by a first LeaseReport, that it
    /// keeps the books too (one that ignores slots would hold its grant forever).
    pub fn grant_nothing(&mut self, dispatcher: DispatcherKey) -> Grant {
        let entry = self.dispatchers.entry(dispatcher).or_default();
        let total = entry.grants.values().copied().max().unwrap_or(entry.reported).max(entry.reported);
        // Every grant it may work to is this total: one entry says it, however long
        // the dispatcher stays silent.
        entry.grants.clear();
        let seq = entry.next_seq;
        entry.next_seq = entry.next_seq.wrapping_add(1);
        entry.grants.insert(seq, total);
        Grant { seq, total }
    }

    /// Applies `dispatcher`'s report, at `now`: it holds grant `seq`, and has sent
    /// `count` clients here in all. A count above the grant is taken as the grant.
    pub fn report(&mut self, dispatcher: DispatcherKey, seq: u32, count: u64, now: Instant) -> Reported {
        let Some(entry) = self.dispatchers.get_mut(&dispatcher) else { return Reported::Ignored };
        if !entry.grants.contains_key(&seq) {
            return Reported::Ignored;
        }
        let largest = entry.grants.values().copied().max().unwrap_or(0);
        let count = count.min(largest);
        if count < entry.reported {
            return Reported::Ignored;
        }
        let promised = count - entry.reported;
        entry.reported = count;
        // It holds `seq` now: older grants no longer bind it.
        entry.grants.retain(|&other, _| other >= seq);
        entry.recent_use += Self::SMOOTHING * (promised as f64 - entry.recent_use);
        self.promise(promised, now);
        Reported::Applied { promised }
    }

    /// A client sent by a dispatcher arrived, at `now`: one promise ends (the soonest
    /// to lapse). Returns false when none was open: its dispatcher has not reported it
    /// yet, and the report's first promise will be taken as ended (or it lapsed). The
    /// backend counts the client in `in_use` from now on: [`Ledger::arrive`] does both.
    pub fn redeem(&mut self, now: Instant) -> bool {
        self.lapse(now);
        if take_one(&mut self.promises) {
            return true;
        }
        let lapses = self.lapse_time(now);
        add(&mut self.early, lapses, 1);
        false
    }

    /// A client arrived: its promise is redeemed and it is counted in `in_use`, in one
    /// step, so that it is counted once.
    pub fn arrive(&mut self, now: Instant) -> bool {
        let redeemed = self.redeem(now);
        self.in_use = self.in_use.saturating_add(1);
        redeemed
    }

    /// A client left: its place is free again.
    pub fn leave(&mut self) {
        self.in_use = self.in_use.saturating_sub(1);
    }

    /// `dispatcher`'s connection closed at `now`: what it held may have been promised
    /// just before, so it becomes promises; it leaves the split.
    pub fn forget(&mut self, dispatcher: DispatcherKey, now: Instant) {
        if let Some(entry) = self.dispatchers.remove(&dispatcher) {
            self.promise(entry.held(), now);
        }
    }

    /// Adds `places` promises lapsing one lifetime after `now`, less the clients that
    /// arrived before them.
    fn promise(&mut self, places: u64, now: Instant) {
        self.lapse(now);
        let mut places = places;
        while places > 0 && take_one(&mut self.early) {
            places -= 1;
        }
        let lapses = self.lapse_time(now);
        add(&mut self.promises, lapses, places);
    }

    fn lapse_time(&self, now: Instant) -> Instant {
        now.checked_add(self.promise_lifetime).unwrap_or(now)
    }

    /// Drops the promises and early arrivals that lapsed by `now`.
    fn lapse(&mut self, now: Instant) {
        for counts in [&mut self.promises, &mut self.early] {
            while let Some(first) = counts.first_entry() {
                if *first.key() > now {
                    break;
                }
                first.remove();
            }
        }
    }
}

/// Adds `n` at `at` to counts by time.
fn add(counts: &mut BTreeMap<Instant, u64>, at: Instant, n: u64) {
    if n > 0 {
        *counts.entry(at).or_default() += n;
    }
}

/// Takes one from the earliest of counts by time; false when there is none.
fn take_one(counts: &mut BTreeMap<Instant, u64>) -> bool {
    let Some(mut first) = counts.first_entry() else { return false };
    *first.get_mut() -= 1;
    if *first.get() == 0 {
        first.remove();
    }
    true
}

#[cfg(test)]
mod tests;
