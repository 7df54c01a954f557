//! The replica set of a DNS name as events: each answer, compared with the set so
//! far, yields the replicas to add at once and those to remove after a grace period.
//!
//! Pure: answers and the time come in as values, so the rules are tested exactly.
//! The rules: a new address is added at once; an address missing from an answer is
//! removed only once it has been missing for the whole grace period (an answer that
//! flaps, or a replica that fails a readiness check for a moment, does not cost a
//! link); an answer with no records at all changes nothing, because a DNS server
//! that lost its data must not take every replica away.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// A change of the replica set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Update {
    /// A replica to report to, or to ask.
    Add(SocketAddr),
    /// A replica gone from the answers for the grace period.
    Remove(SocketAddr),
}

/// What one answer changed, for the caller to act on and to log.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Applied {
    /// Removals whose grace period has ended (which make room), then additions.
    pub updates: Vec<Update>,
    /// Replicas missing from this answer for the first time: removed after the grace
    /// period unless they come back.
    pub missing: Vec<SocketAddr>,
    /// Replicas that were missing and are in this answer again.
    pub back: Vec<SocketAddr>,
    /// New addresses left out because the set is full.
    pub over_limit: usize,
}

/// The replicas of one name, each with the time it went missing from the answers.
#[derive(Debug, Clone)]
pub struct Membership {
    grace: Duration,
    limit: usize,
    members: BTreeMap<SocketAddr, Option<Instant>>,
}

impl Membership {
    /// An empty set that removes a replica once it has been missing for `grace`, and
    /// holds at most `limit` replicas.
    pub fn new(grace: Duration, limit: usize) -> Self {
        Membership { grace, limit, members: BTreeMap::new() }
    }

    /// Compares the answer received at `now` with the set and updates the set.
    pub fn apply(&mut self, answer: &[SocketAddr], now: Instant) -> Applied {
        let mut applied = Applied::default();
        if answer.is_empty() {
            return applied;
        }
        let answer: BTreeSet<SocketAddr> = answer.iter().copied().collect();
        for (addr, missing_since) in &mut self.members {
            match (answer.contains(addr), *missing_since) {
                (false, None) => {
                    *missing_since = Some(now);
                    applied.missing.push(*addr);
                }
                (true, Some(_)) => {
                    *missing_since = None;
                    applied.back.push(*addr);
                }
                _ => {}
            }
        }
        applied.updates.extend(self.expire(now));
        for addr in answer {
            if self.members.contains_key(&addr) {
                continue;
            }
            if self.members.len() >= self.limit {
                applied.over_limit += 1;
                continue;
            }
            self.members.insert(addr, None);
            applied.updates.push(Update::Add(addr));
        }
        applied
    }

    /// Removes the replicas missing for the whole grace period by `now`.
    pub fn expire(&mut self, now: Instant) -> Vec<Update> {
        let grace = self.grace;
        let expired: Vec<SocketAddr> = self
            .members
            .iter()
            .filter(|(_, since)| since.is_some_and(|since| now.saturating_duration_since(since) >= grace))
            .map(|(addr, _)| *addr)
            .collect();
        for addr in &expired {
            self.members.remove(addr);
        }
        expired.into_iter().map(Update::Remove).collect()
    }

    /// When the next missing replica is due for removal, if one is missing.
    pub fn next_expiry(&self) -> Option<Instant> {
        self.members.values().flatten().min().and_then(|since| since.checked_add(self.grace))
    }

    /// The replicas, in address order (those missing until they are removed too).
    pub fn members(&self) -> impl Iterator<Item = SocketAddr> + '_ {
        self.members.keys().copied()
    }

    pub fn len(&self) -> usize {
        self.members.len()
    }

    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }
}

/// Replicas named by several sources (several names, or a name and a `--server`):
/// one replica is added when the first source names it and removed when the last
/// one stops, so it gets one link, not one per source.
#[derive(Debug, Default, Clone)]
pub struct Tally {
    counts: HashMap<SocketAddr, usize>,
}

impl Tally {
    /// Counts a source's update; returns it when it changes the union.
    pub fn apply(&mut self, update: Update) -> Option<Update> {
        match update {
            Update::Add(addr) => {
                let count = self.counts.entry(addr).or_default();
                *count += 1;
                (*count == 1).then_some(update)
            }
            Update::Remove(addr) => {
                let count = self.counts.get_mut(&addr)?;
                *count -= 1;
                if *count > 0 {
                    return None;
                }
                self.counts.remove(&addr);
                Some(update)
            }
        }
    }

    /// Whether some source names `addr`.
    pub fn contains(&self, addr: &SocketAddr) -> bool {
        self.counts.contains_key(addr)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GRACE: Duration = Duration::from_secs(10);

    fn addr(last: u8) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, last], 8523))
    }

    fn at(start: Instant, secs: u64) -> Instant {
        start + Duration::from_secs(secs)
    }

    #[test]
    fn new_addresses_are_added_at_once_and_once() {
        let start = Instant::now();
        let mut set = Membership::new(GRACE, 64);
        let first = set.apply(&[addr(3), addr(2), addr(2)], start);
        assert_eq!(first.updates, [Update::Add(addr(2)), Update::Add(addr(3))]);
        let again = set.apply(&[addr(2), addr(3), addr(4)], at(start, 5));
        assert_eq!(again.updates, [Update::Add(addr(4))]);
        assert_eq!(set.members().collect::<Vec<_>>(), [addr(2), addr(3), addr(4)]);
    }

    #[test]
    fn a_missing_address_is_removed_after_the_grace_period_and_not_before() {
        let start = Instant::now();
        let mut set = Membership::new(GRACE, 64);
        set.apply(&[addr(2), addr(3)], start);
        let gone = set.apply(&[addr(2)], at(start, 1));
        assert_eq!((gone.updates.len(), gone.missing.as_slice()), (0, &[addr(3)][..]));
        assert_eq!(set.next_expiry(), Some(at(start, 11)));
        // Still missing later: the grace period runs from the first answer without it.
        assert!(set.apply(&[addr(2)], at(start, 6)).updates.is_empty());
        assert!(set.expire(at(start, 11) - Duration::from_nanos(1)).is_empty());
        assert_eq!(set.expire(at(start, 11)), [Update::Remove(addr(3))]);
        assert_eq!((set.len(), set.next_expiry()), (1, None));
    }

    #[test]
    fn an_address_back_within_the_grace_period_is_kept() {
        let start = Instant::now();
        let mut set = Membership::new(GRACE, 64);
        set.apply(&[addr(2), addr(3)], start);
        set.apply(&[addr(2)], at(start, 1));
        let back = set.apply(&[addr(2), addr(3)], at(start, 5));
        assert_eq!((back.updates.len(), back.back.as_slice()), (0, &[addr(3)][..]));
        assert!(set.expire(at(start, 60)).is_empty());
        // Missing again: a new grace period.
        set.apply(&[addr(2)], at(start, 61));
        assert_eq!(set.next_expiry(), Some(at(start, 71)));
    }

    #[test]
    fn an_answer_without_records_changes_nothing() {
        let start = Instant::now();
        let mut set = Membership::new(GRACE, 64);
        set.apply(&[addr(2), addr(3)], start);
        assert_eq!(set.apply(&[], at(start, 1)), Applied::default());
        assert_eq!(set.expire(at(start, 3600)), []);
        assert_eq!(set.len(), 2);
    }

    #[test]
    fn removals_come_with_the_answer_that_finds_them_due() {
        let start = Instant::now();
        let mut set = Membership::new(GRACE, 64);
        set.apply(&[addr(2), addr(3)], start);
        set.apply(&[addr(2)], at(start, 1));
        let late = set.apply(&[addr(2), addr(4)], at(start, 20));
        assert_eq!(late.updates, [Update::Remove(addr(3)), Update::Add(addr(4))]);
    }

    #[test]
    fn a_zero_grace_removes_with_the_first_answer_without_it() {
        let start = Instant::now();
        let mut set = Membership::new(Duration::ZERO, 64);
        set.apply(&[addr(2), addr(3)], start);
        let gone = set.apply(&[addr(2)], start);
        assert_eq!(gone.updates, [Update::Remove(addr(3))]);
    }

    #[test]
    fn the_set_holds_at_most_its_limit() {
        let start = Instant::now();
        let mut set = Membership::new(GRACE, 2);
        let applied = set.apply(&[addr(4), addr(3), addr(2)], start);
        assert_eq!(applied.updates, [Update::Add(addr(2)), Update::Add(addr(3))]);
        assert_eq!(applied.over_limit, 1);
        // A missing replica holds its place until it is removed.
        set.apply(&[addr(2), addr(4)], at(start, 1));
        assert_eq!(set.len(), 2);
        // Its removal makes room for the one left out, in the same answer.
        let later = set.apply(&[addr(2), addr(4)], at(start, 11));
        assert_eq!(later.updates, [Update::Remove(addr(3)), Update::Add(addr(4))]);
    }

    #[test]
    fn the_tally_adds_on_the_first_source_and_removes_with_the_last() {
        let mut tally = Tally::default();
        assert_eq!(tally.apply(Update::Add(addr(2))), Some(Update::Add(addr(2))));
        assert_eq!(tally.apply(Update::Add(addr(2))), None);
        assert_eq!(tally.apply(Update::Remove(addr(2))), None);
        assert!(tally.contains(&addr(2)));
        assert_eq!(tally.apply(Update::Remove(addr(2))), Some(Update::Remove(addr(2))));
        assert_eq!(tally.apply(Update::Remove(addr(2))), None, "an unknown replica is ignored");
        assert!(!tally.contains(&addr(2)));
    }
}
