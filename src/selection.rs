//! Who gets picked: the least-loaded backend, with ties broken in rotation.
//!
//! The selector keeps its own ordered index of `(rank, id)` and never reads the
//! registry; the dispatcher keeps the two in step. A pick and an update each cost
//! O(log n) in the number of backends, where the original sorted the whole table on
//! every login.

use std::collections::BTreeSet;
use std::ops::Bound;

use crate::registry::{BackendId, MAX_VALID_MEM};

/// How a backend ranks for selection; lower is better.
///
/// Every valid percentage ranks before every invalid report: a `mem` above 100 is
/// not a measurement, so such backends are used only when no backend with a valid
/// report is alive, and among themselves they tie.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Rank {
    /// A valid memory percentage, 0..=100.
    Mem(u8),
    /// A report above 100.
    Unusable,
}

impl Rank {
    /// The rank of a reported `mem` value.
    pub fn from_mem(mem: u8) -> Self {
        if mem <= MAX_VALID_MEM { Rank::Mem(mem) } else { Rank::Unusable }
    }
}

/// Least-loaded selection over an ordered index.
#[derive(Debug, Default)]
pub struct LeastLoaded {
    index: BTreeSet<(Rank, BackendId)>,
    /// The last backend picked: the next pick among equals starts after it, so
    /// backends that tie share the logins instead of one of them taking them all.
    last_pick: Option<BackendId>,
}

impl LeastLoaded {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn len(&self) -> usize {
        self.index.len()
    }

    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    /// Adds a backend with its rank.
    pub fn insert(&mut self, id: BackendId, rank: Rank) {
        self.index.insert((rank, id));
    }

    /// Removes a backend; `rank` must be the one it was inserted with.
    pub fn remove(&mut self, id: BackendId, rank: Rank) -> bool {
        self.index.remove(&(rank, id))
    }

    /// Moves a backend from one rank to another.
    pub fn update(&mut self, id: BackendId, from: Rank, to: Rank) {
        if from != to {
            self.index.remove(&(from, id));
            self.index.insert((to, id));
        }
    }

    /// Picks a backend of the lowest rank. Among backends of that rank it takes the
    /// first id after the previous pick, wrapping around, so ties rotate.
    pub fn pick(&mut self) -> Option<BackendId> {
        let &(best, first) = self.index.first()?;
        let after_last = self.last_pick.and_then(|last| {
            let range = (Bound::Excluded((best, last)), Bound::Unbounded);
            self.index.range(range).next().filter(|(rank, _)| *rank == best)
        });
        let id = after_last.map_or(first, |&(_, id)| id);
        self.last_pick = Some(id);
        Some(id)
    }
}

#[cfg(test)]
mod tests;
