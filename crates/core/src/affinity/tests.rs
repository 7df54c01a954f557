use std::collections::BTreeMap;

use super::*;

/// The v2 identity of backend `n` of the service `game`.
fn identity(n: u64) -> Vec<u8> {
    Identity::V2 { service: "game", backend_id: n }.to_bytes()
}

/// A ring over backends `numbers`, each known to this dispatcher as `offset + n`.
fn ring_of(numbers: impl IntoIterator<Item = u64>, offset: u64) -> Ring {
    Ring::build(1, numbers.into_iter().map(|n| (BackendId(offset + n), identity(n))))
}

/// A pool of ready backends with their effective loads, as a selector would report
/// them; every pick adds `cost` to the backend it names.
struct Pool {
    loads: BTreeMap<BackendId, f64>,
    passed: BTreeMap<BackendId, PassReason>,
    cost: f64,
    settings: AffinitySettings,
}

impl Pool {
    fn new(backends: u64, load: f64, cost: f64) -> Self {
        let loads = (1..=backends).map(|n| (BackendId(n), load)).collect();
        Pool { loads, passed: BTreeMap::new(), cost, settings: AffinitySettings::default() }
    }

    fn bound(&self) -> Bound {
        let ready: Vec<_> = self.loads.iter().filter(|(id, _)| !self.passed.contains_key(id)).collect();
        self.settings.bound(ready.iter().map(|(_, load)| **load).sum(), ready.len())
    }

    fn pick(&mut self, ring: &Ring, key: &str) -> Choice {
        let bound = self.bound();
        let choice = choose(ring, key_hash(key.as_bytes()), &bound, |id| match self.passed.get(&id) {
            Some(&reason) => Candidate::Passed(reason),
            None => match self.loads.get(&id) {
                Some(&load) => Candidate::Ready { load, cost: self.cost },
                None => Candidate::Passed(PassReason::Gone),
            },
        });
        if let Some(id) = choice.chosen {
            *self.loads.get_mut(&id).expect("chosen from the pool") += self.cost;
        }
        choice
    }

    fn mean(&self) -> f64 {
        self.loads.values().sum::<f64>() / self.loads.len() as f64
    }
}

fn first_of(ring: &Ring, key: &str) -> BackendId {
    ring.walk(key_hash(key.as_bytes())).next().expect("a ring with backends")
}

#[test]
fn the_same_key_gives_the_same_backend_in_every_replica() {
    // Two replicas number the same backends differently and hear them in another order.
    let ring = ring_of(1..=10, 0);
    let other = ring_of((1..=10).rev(), 100);
    for n in 0..500 {
        let key = format!("player-{n}");
        assert_eq!(first_of(&ring, &key), first_of(&ring, &key));
        assert_eq!(first_of(&ring, &key).0 + 100, first_of(&other, &key).0, "{key}");
        let walk: Vec<_> = ring.walk(key_hash(key.as_bytes())).map(|id| id.0 + 100).collect();
        let other_walk: Vec<_> = other.walk(key_hash(key.as_bytes())).map(|id| id.0).collect();
        assert_eq!(walk, other_walk);
    }
}

#[test]
fn three_equal_backends_never_end_above_the_bound() {
    let ring = ring_of(1..=3, 0);
    for settings in [AffinitySettings::default(), AffinitySettings { balance_factor: 1.05, slack: 0.0 }] {
        let mut pool = Pool { settings: settings.clone(), ..Pool::new(3, 10.0, 0.05) };
        for n in 0..3000 {
            let choice = pool.pick(&ring, &format!("key-{n}"));
            assert!(choice.chosen.is_some(), "key-{n}: some backend is always within the bound");
            let mean = pool.mean();
            let limit = (settings.balance_factor * mean).max(mean + settings.slack);
            for (id, load) in &pool.loads {
                assert!(*load <= limit + 1e-9, "{id} at {load} above {limit} after key-{n}");
            }
        }
    }
}

#[test]
fn when_one_of_ten_backends_leaves_only_its_keys_move() {
    let keys: Vec<String> = (0..10_000).map(|n| format!("session-{n}")).collect();
    let before = ring_of(1..=10, 0);
    let after = ring_of((1..=10).filter(|&n| n != 7), 0);
    let mut moved = 0;
    for key in &keys {
        let (was, is) = (first_of(&before, key), first_of(&after, key));
        if was != is {
            assert_eq!(was, BackendId(7), "{key} moved from {was}, which stayed");
            moved += 1;
        }
    }
    let share = keys.len() / 10;
    assert!(moved > 0 && moved <= share + share / 4, "{moved} keys moved, its share is {share}");
}

#[test]
fn a_joining_backend_takes_keys_only_for_itself() {
    let before = ring_of(1..=9, 0);
    let after = ring_of(1..=10, 0);
    for n in 0..5_000 {
        let key = format!("k{n}");
        let is = first_of(&after, &key);
        assert!(is == first_of(&before, &key) || is == BackendId(10), "{key}");
    }
}

#[test]
fn a_hot_key_spills_at_the_bound_and_returns_when_back_under() {
    let ring = ring_of(1..=3, 0);
    let mut pool = Pool::new(3, 20.0, 1.0);
    let home = first_of(&ring, "hot");
    let mut picks = 0;
    let spilled = loop {
        let choice = pool.pick(&ring, "hot");
        picks += 1;
        assert!(picks < 100, "the hot key never spilled");
        if choice.chosen != Some(home) {
            assert_eq!(choice.first_passed, Some(PassReason::OverBound));
            break choice.chosen.expect("another backend within the bound");
        }
        assert_eq!(choice.first_passed, None);
    };
    // The spill goes to the key's next backend on the ring.
    let mut walk = ring.walk(key_hash(b"hot"));
    assert_eq!((walk.next(), walk.next()), (Some(home), Some(spilled)));
    // Its home reports a lower load: the key comes back.
    pool.loads.insert(home, 20.0);
    let choice = pool.pick(&ring, "hot");
    assert_eq!((choice.chosen, choice.first_passed), (Some(home), None));
}

#[test]
fn a_pool_at_two_percent_never_spills() {
    let ring = ring_of(1..=10, 0);
    let mut pool = Pool::new(10, 2.0, 0.1);
    for round in 0..5 {
        for key in ["alice", "bob", "carol", "dave", "erin"] {
            let choice = pool.pick(&ring, key);
            assert_eq!(choice.chosen, Some(first_of(&ring, key)), "{key}, round {round}");
            assert_eq!(choice.first_passed, None);
        }
    }
}

#[test]
fn a_draining_backend_is_passed_over_and_its_keys_come_back() {
    let ring = ring_of(1..=5, 0);
    let mut pool = Pool::new(5, 10.0, 0.1);
    let home = first_of(&ring, "player-42");
    pool.passed.insert(home, PassReason::Draining);
    let choice = pool.pick(&ring, "player-42");
    assert_ne!(choice.chosen, Some(home));
    assert!(choice.chosen.is_some());
    assert_eq!(choice.first_passed, Some(PassReason::Draining));
    pool.passed.clear();
    assert_eq!(pool.pick(&ring, "player-42").chosen, Some(home));
}

#[test]
fn a_walk_where_no_backend_is_within_the_bound_falls_back() {
    let ring = ring_of(1..=4, 0);
    // A bound computed as if the pool were empty: nobody at 50 is within it.
    let bound = AffinitySettings::default().bound(0.0, 4);
    let choice = choose(&ring, key_hash(b"k"), &bound, |_| Candidate::Ready { load: 50.0, cost: 1.0 });
    assert_eq!(choice, Choice { chosen: None, first_passed: Some(PassReason::OverBound) });
}

#[test]
fn a_walk_meets_each_backend_once_and_at_most_max_walk() {
    let small = ring_of(1..=3, 0);
    let mut met: Vec<_> = small.walk(key_hash(b"x")).collect();
    met.sort();
    assert_eq!(met, [BackendId(1), BackendId(2), BackendId(3)]);
    let large = ring_of(1..=1000, 0);
    let met: Vec<_> = large.walk(key_hash(b"x")).collect();
    let distinct: std::collections::BTreeSet<_> = met.iter().collect();
    assert_eq!((met.len(), distinct.len()), (MAX_WALK, MAX_WALK));
    assert_eq!(Ring::build(1, []).walk(7).next(), None);
}

#[test]
fn the_bucket_index_finds_the_first_point_at_or_after_the_hash() {
    let ring = ring_of(1..=37, 0);
    let mut probe = 0x0123_4567_89AB_CDEFu64;
    for _ in 0..10_000 {
        probe = hash::xxh64(&probe.to_le_bytes(), 0);
        let expected = ring.points.partition_point(|point| point.hash < probe) % ring.points.len();
        assert_eq!(ring.first_point(probe), expected);
    }
    assert_eq!(
        ring.first_point(u64::MAX),
        ring.points.partition_point(|p| p.hash < u64::MAX) % ring.points.len()
    );
    assert_eq!(ring.first_point(0), 0);
}

#[test]
fn virtual_nodes_shrink_with_the_pool_within_their_bounds() {
    assert_eq!(virtual_nodes(1), 160);
    assert_eq!(virtual_nodes(10), 160);
    assert_eq!(virtual_nodes(1000), 160);
    assert_eq!(virtual_nodes(2000), 131);
    assert_eq!(virtual_nodes(100_000), 8);
    assert_eq!(ring_of(1..=10, 0).points.len(), 1600);
}

#[test]
fn identities_are_fixed_bytes() {
    let v2 = Identity::V2 { service: "game", backend_id: 0x0102 }.to_bytes();
    assert_eq!(v2, b"game\0\x02\x01\0\0\0\0\0\0");
    let mut ip = [0; 16];
    ip[..8].copy_from_slice(b"10.0.0.1");
    let legacy = Identity::Legacy { ip, port: 7000 }.to_bytes();
    assert_eq!(legacy.len(), 19);
    assert_eq!((legacy[0], &legacy[17..]), (0xFF, &7000u16.to_le_bytes()[..]));
    // The place of a key is part of the product: it must never change.
    assert_eq!(key_hash(b"player-42"), 0x4DCC_A0A8_3602_DB39);
}

#[test]
fn settings_are_checked() {
    assert!(AffinitySettings::default().validate().is_ok());
    for (balance_factor, slack) in [(1.0, 5.0), (10.5, 5.0), (f64::NAN, 5.0), (1.25, -1.0), (1.25, 101.0)] {
        assert!(AffinitySettings { balance_factor, slack }.validate().is_err(), "{balance_factor} {slack}");
    }
    assert!(AffinitySettings { balance_factor: 10.0, slack: 100.0 }.validate().is_ok());
}
