//! Sticky picks with bounded load: a consistent-hash ring over a service's backends,
//! walked in a key's order, and the bound a backend must be within to take the key.
//!
//! A keyed pick walks the backends in the order the key's hash meets them on the
//! ring and takes the first that is ready and whose effective load, with the pick's
//! cost, stays within `max(c × m, m + slack)`, `m` being the mean effective load of
//! the ready backends counting this pick (consistent hashing with bounded loads,
//! Mirrokni, Thorup and Zadimoghaddam). The slack keeps a lightly loaded pool sticky:
//! at 2 % everywhere, `c × m` alone would spill every second pick.
//!
//! The ring is pure data built from the backends' stable identities ([`Identity`]),
//! with [`hash::xxh64`] and seed 0 throughout, so that every replica that sees the
//! same backends builds the same ring. Each backend has [`virtual_nodes`] points on it;
//! a bucket index over the top bits of the hashes finds a key's first point in O(1)
//! expected time, and a walk considers at most [`MAX_WALK`] backends, after which
//! the caller falls back to its unkeyed policy. The ring is rebuilt only when the set
//! of backends changes (the selector's generation), never on a report.

pub mod hash;
pub mod rings;

use crate::registry::BackendId;

/// The most backends a keyed pick considers before it falls back to the unkeyed
/// policy: a bound on the pick's cost, whatever the pool.
pub const MAX_WALK: usize = 64;

/// The most ring points a walk visits, so that a walk over a few backends with many
/// points each stays bounded too.
pub const MAX_POINTS_VISITED: usize = 16 * MAX_WALK;

/// The default `balance_factor`: a backend takes a key while it is at most 25 %
/// above the mean.
pub const BALANCE_FACTOR: f64 = 1.25;

/// The smallest `balance_factor` accepted: above 1, as at 1 no backend but one
/// exactly at the mean could take a key without the slack.
pub const MIN_BALANCE_FACTOR: f64 = 1.01;

/// The largest `balance_factor` accepted.
pub const MAX_BALANCE_FACTOR: f64 = 10.0;

/// The default `slack`, in load points: below `mean + slack` a backend always takes
/// its keys, so that a lightly loaded pool stays sticky.
pub const SLACK: f64 = 5.0;

/// The largest `slack` accepted, in load points.
pub const MAX_SLACK: f64 = 100.0;

/// How far above the mean a keyed pick may load a backend, per service.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct AffinitySettings {
    /// `c`: the bound is at least `c` times the mean effective load (1.01 ≤ c ≤ 10).
    pub balance_factor: f64,
    /// The bound is at least the mean plus this many load points (0..=100).
    pub slack: f64,
}

impl Default for AffinitySettings {
    fn default() -> Self {
        AffinitySettings { balance_factor: BALANCE_FACTOR, slack: SLACK }
    }
}

impl AffinitySettings {
    /// Checks that the settings describe a usable bound.
    pub fn validate(&self) -> Result<(), loadwise_protocol::config::ConfigError> {
        use loadwise_protocol::config::ensure;
        let factor = self.balance_factor;
        ensure(
            (MIN_BALANCE_FACTOR..=MAX_BALANCE_FACTOR).contains(&factor),
            "affinity-balance-factor",
            "must lie between 1.01 and 10",
        )?;
        ensure(
            (0.0..=MAX_SLACK).contains(&self.slack),
            "affinity-slack",
            "must lie between 0 and 100 load points",
        )
    }

    /// The bound for the next pick, given the ready backends' total effective load
    /// and their number, in load points.
    pub fn bound(&self, total: f64, ready: usize) -> Bound {
        Bound { factor: self.balance_factor, slack: self.slack, total, ready: ready.max(1) as f64 }
    }
}

/// The bound of one pick: whether a backend may take it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Bound {
    factor: f64,
    slack: f64,
    /// The ready backends' total effective load, before the pick.
    total: f64,
    ready: f64,
}

impl Bound {
    /// The highest load a backend may reach with a pick costing `cost`.
    pub fn limit(&self, cost: f64) -> f64 {
        let mean = (self.total + cost) / self.ready;
        (self.factor * mean).max(mean + self.slack)
    }

    /// Whether a backend at `load` may take a pick costing `cost`.
    pub fn admits(&self, load: f64, cost: f64) -> bool {
        load + cost <= self.limit(cost)
    }
}

/// What a backend's place on the ring is hashed from: what stays the same across
/// dispatcher replicas and restarts, never the dispatcher's own numbering.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Identity<'a> {
    /// A v2 backend: its service and the id it chose.
    V2 { service: &'a str, backend_id: u64 },
    /// A legacy backend: the ip bytes and port of its reports.
    Legacy { ip: [u8; 16], port: u16 },
}

impl Identity<'_> {
    /// The bytes hashed: `service ‖ 0x00 ‖ backend_id (u64 LE)` for v2,
    /// `0xFF ‖ ip (16 bytes) ‖ port (u16 LE)` for legacy (a service name never
    /// starts with 0xFF, so the two never meet).
    pub fn to_bytes(&self) -> Vec<u8> {
        match self {
            Identity::V2 { service, backend_id } => {
                let mut bytes = Vec::with_capacity(service.len() + 9);
                bytes.extend_from_slice(service.as_bytes());
                bytes.push(0);
                bytes.extend_from_slice(&backend_id.to_le_bytes());
                bytes
            }
            Identity::Legacy { ip, port } => {
                let mut bytes = Vec::with_capacity(19);
                bytes.push(0xFF);
                bytes.extend_from_slice(ip);
                bytes.extend_from_slice(&port.to_le_bytes());
                bytes
            }
        }
    }
}

/// Where a key starts on the ring: XXH64 of its bytes, seed 0.
pub fn key_hash(key: &[u8]) -> u64 {
    hash::xxh64(key, hash::SEED)
}

/// The points each backend has on a ring of `backends`: about 2^18 points in all,
/// 8 to 160 per backend, enough to spread keys evenly over a few backends without
/// making a ring of 100 000 backends large.
pub fn virtual_nodes(backends: usize) -> usize {
    ((1usize << 18) / backends.max(1)).clamp(8, 160)
}

/// One point on the ring.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Point {
    hash: u64,
    /// Index into `members`.
    member: u32,
}

/// A consistent-hash ring over one service's backends.
#[derive(Debug, Clone)]
pub struct Ring {
    /// The selector generation it was built for.
    generation: u64,
    /// The backends, sorted by identity, so that the ring does not depend on the
    /// order they registered in.
    members: Vec<BackendId>,
    /// Every point, by hash.
    points: Vec<Point>,
    /// `buckets[b]`: the first point whose hash's top bits are `b` or more; one more
    /// entry than there are buckets, holding `points.len()`.
    buckets: Vec<u32>,
    /// 64 minus the bits of a bucket number.
    shift: u32,
}

impl Ring {
    /// The ring of `members`, each with its identity's bytes, for the selector
    /// generation `generation`.
    pub fn build(generation: u64, members: impl IntoIterator<Item = (BackendId, Vec<u8>)>) -> Ring {
        let mut members: Vec<(Vec<u8>, BackendId)> =
            members.into_iter().map(|(id, identity)| (identity, id)).collect();
        members.sort();
        let per_member = virtual_nodes(members.len());
        let mut points = Vec::with_capacity(members.len() * per_member);
        let mut input = Vec::new();
        for (index, (identity, _)) in members.iter().enumerate() {
            for vnode in 0..per_member as u32 {
                input.clear();
                input.extend_from_slice(identity);
                input.extend_from_slice(&vnode.to_le_bytes());
                points.push(Point { hash: hash::xxh64(&input, hash::SEED), member: index as u32 });
            }
        }
        points.sort_unstable();
        let bits = points.len().max(2).next_power_of_two().trailing_zeros().min(24);
        let shift = 64 - bits;
        let mut buckets = Vec::with_capacity((1 << bits) + 1);
        let mut cursor = 0;
        for bucket in 0..1u64 << bits {
            while cursor < points.len() && points[cursor].hash >> shift < bucket {
                cursor += 1;
            }
            buckets.push(cursor as u32);
        }
        buckets.push(points.len() as u32);
        let members = members.into_iter().map(|(_, id)| id).collect();
        Ring { generation, members, points, buckets, shift }
    }

    /// The selector generation the ring was built for.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The number of backends on the ring.
    pub fn len(&self) -> usize {
        self.members.len()
    }

    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// The position of the first point at or after `hash`, wrapping.
    fn first_point(&self, hash: u64) -> usize {
        let bucket = (hash >> self.shift) as usize;
        let (start, end) = (self.buckets[bucket] as usize, self.buckets[bucket + 1] as usize);
        let position = start + self.points[start..end].partition_point(|point| point.hash < hash);
        if position == self.points.len() { 0 } else { position }
    }

    /// The backends in the order a key of hash `key_hash` meets them, each once:
    /// at most [`MAX_WALK`] of them, within [`MAX_POINTS_VISITED`] points.
    pub fn walk(&self, key_hash: u64) -> Walk<'_> {
        let start = if self.points.is_empty() { 0 } else { self.first_point(key_hash) };
        Walk { ring: self, next: start, visited: 0, seen: Vec::new() }
    }
}

/// The backends of a ring in one key's order.
#[derive(Debug)]
pub struct Walk<'r> {
    ring: &'r Ring,
    next: usize,
    visited: usize,
    /// The members met so far: at most [`MAX_WALK`], so a scan is cheap.
    seen: Vec<u32>,
}

impl Iterator for Walk<'_> {
    type Item = BackendId;

    fn next(&mut self) -> Option<BackendId> {
        let points = &self.ring.points;
        let limit = points.len().min(MAX_POINTS_VISITED);
        while self.seen.len() < MAX_WALK.min(self.ring.members.len()) && self.visited < limit {
            let point = points[self.next];
            self.next = if self.next + 1 == points.len() { 0 } else { self.next + 1 };
            self.visited += 1;
            if !self.seen.contains(&point.member) {
                self.seen.push(point.member);
                return Some(self.ring.members[point.member as usize]);
            }
        }
        None
    }
}

/// Why a backend met on a key's walk did not take the pick.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PassReason {
    /// Draining: it takes no new clients while its current ones finish.
    Draining,
    /// Held out for maintenance.
    Maintenance,
    /// Its load with the pick would exceed the bound.
    OverBound,
    /// Its report is not a valid load, so the bound cannot be checked.
    Unscored,
    /// On the ring but no longer registered.
    Gone,
    /// Its own checks fail.
    Unhealthy,
    /// Ejected after its clients' failure reports.
    Ejected,
}

impl PassReason {
    pub const ALL: [PassReason; 7] = [
        PassReason::Draining,
        PassReason::Maintenance,
        PassReason::OverBound,
        PassReason::Unscored,
        PassReason::Gone,
        PassReason::Unhealthy,
        PassReason::Ejected,
    ];

    /// The name metrics and logs use.
    pub fn name(self) -> &'static str {
        match self {
            PassReason::Draining => "draining",
            PassReason::Maintenance => "maintenance",
            PassReason::OverBound => "over_bound",
            PassReason::Unscored => "unscored",
            PassReason::Gone => "gone",
            PassReason::Unhealthy => "unhealthy",
            PassReason::Ejected => "ejected",
        }
    }
}

/// A backend met on a walk, as the selector sees it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Candidate {
    /// Ready, at effective load `load`; the pick would cost it `cost` (load points).
    Ready { load: f64, cost: f64 },
    /// Not a candidate.
    Passed(PassReason),
}

/// The outcome of a keyed walk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Choice {
    /// The backend that takes the pick; `None`: no backend within the walk could,
    /// and the caller falls back to its unkeyed policy.
    pub chosen: Option<BackendId>,
    /// Why the key's first backend was passed over, if it was.
    pub first_passed: Option<PassReason>,
}

/// Walks `ring` in the order of `key_hash` and takes the first ready backend that
/// `bound` admits; `candidate` says how each backend met stands.
pub fn choose(
    ring: &Ring,
    key_hash: u64,
    bound: &Bound,
    mut candidate: impl FnMut(BackendId) -> Candidate,
) -> Choice {
    let mut first_passed = None;
    for (step, id) in ring.walk(key_hash).enumerate() {
        let reason = match candidate(id) {
            Candidate::Ready { load, cost } if bound.admits(load, cost) => {
                return Choice { chosen: Some(id), first_passed };
            }
            Candidate::Ready { .. } => PassReason::OverBound,
            Candidate::Passed(reason) => reason,
        };
        if step == 0 {
            first_passed = Some(reason);
        }
    }
    Choice { chosen: None, first_passed }
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod dispatch_tests;
