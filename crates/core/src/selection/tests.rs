use std::collections::HashMap;
use std::time::Duration;

use proptest::prelude::*;
use rand::SeedableRng as _;
use rand::rngs::StdRng;

use super::*;
use crate::model::{LegacyName, Load};
use loadwise_protocol::IpField;

/// Settings without slow start, so that costs are the prior's exact figures, and
/// without a tie band, so that ties go to the lowest id and orders are exact.
fn flat() -> LoadSettings {
    LoadSettings { slow_start: Duration::ZERO, tie_band: 0.0, ..LoadSettings::default() }
}

/// A report of `mem` from an address only the address test looks at.
fn at(mem: u8) -> Report {
    Report { legacy: legacy("10.0.0.1", 1001), load: percent(mem) }
}

/// A legacy name: the address bytes of `ip`, and `port`.
fn legacy(ip: &str, port: u16) -> LegacyName {
    LegacyName { bytes: *IpField::from_text(ip).unwrap().as_bytes(), port }
}

/// A legacy `mem` as the load it reports.
fn percent(mem: u8) -> Load {
    Load::from_percent(f64::from(mem))
}

fn selector(policy: Policy, reports: &[(u64, u8)], now: Instant) -> Selector {
    let mut s = Selector::new(policy, flat());
    for &(id, mem) in reports {
        s.report(BackendId(id), at(mem), now, &mut rng());
    }
    s
}

fn picks(s: &mut Selector, n: usize, now: Instant, rng: &mut StdRng) -> Vec<u64> {
    (0..n).map(|_| s.pick(now, rng).unwrap().0).collect()
}

fn counts(picked: &[u64]) -> HashMap<u64, usize> {
    let mut counts = HashMap::new();
    for id in picked {
        *counts.entry(*id).or_default() += 1;
    }
    counts
}

fn rng() -> StdRng {
    StdRng::seed_from_u64(7)
}

#[test]
fn policy_names_round_trip_and_unknown_names_are_refused() {
    for policy in Policy::ALL {
        assert_eq!(policy.name().parse::<Policy>(), Ok(policy));
        assert_eq!(policy.to_string(), policy.name());
    }
    assert_eq!("fastest".parse::<Policy>(), Err(UnknownPolicy("fastest".into())));
    assert_eq!(Policy::default(), Policy::LeastLoaded);
}

#[test]
fn every_policy_picks_nothing_from_an_empty_pool() {
    for policy in Policy::ALL {
        assert_eq!(Selector::new(policy, flat()).pick(Instant::now(), &mut rng()), None, "{policy}");
    }
}

#[test]
fn least_loaded_rotates_among_equal_reports() {
    let now = Instant::now();
    let mut s = selector(Policy::LeastLoaded, &[(3, 40), (1, 40), (2, 40)], now);
    assert_eq!(picks(&mut s, 7, now, &mut rng()), [1, 2, 3, 1, 2, 3, 1]);
}

/// A selector under the default settings but slow start, with `n` backends at `mem`.
fn equal_pool(n: u64, mem: u8, seed: u64, now: Instant) -> Selector {
    let mut s =
        Selector::new(Policy::LeastLoaded, LoadSettings { slow_start: Duration::ZERO, ..Default::default() });
    let mut rng = StdRng::seed_from_u64(seed);
    for id in 1..=n {
        s.report(BackendId(id), at(mem), now, &mut rng);
    }
    s
}

#[test]
fn ties_rotate_in_an_order_each_dispatcher_draws_for_itself() {
    let now = Instant::now();
    let orders: Vec<Vec<u64>> = (1..=4)
        .map(|seed| {
            let mut s = equal_pool(10, 40, seed, now);
            let picked = picks(&mut s, 30, now, &mut rng());
            // Equal backends take strict turns: every round names each one once,
            // in the same order.
            for round in picked.chunks(10) {
                let mut sorted = round.to_vec();
                sorted.sort();
                assert_eq!(sorted, (1..=10).collect::<Vec<_>>(), "seed {seed}: {picked:?}");
                assert_eq!(round, &picked[..10], "seed {seed}");
            }
            picked[..10].to_vec()
        })
        .collect();
    // Replicas seeded apart start their turns at different backends.
    let first: std::collections::HashSet<u64> = orders.iter().map(|order| order[0]).collect();
    assert!(first.len() > 1, "{orders:?}");
}

#[test]
fn a_report_that_changes_nothing_keeps_the_order_and_one_that_does_draws_anew() {
    let now = Instant::now();
    let mut s = equal_pool(10, 40, 8, now);
    let order = s.order.clone();
    let mut other = StdRng::seed_from_u64(99);
    for id in 1..=10 {
        s.report(BackendId(id), at(40), now, &mut other);
    }
    assert_eq!(s.order, order, "same loads, same places");
    let ties = |s: &Selector| s.slots.iter().map(|slot| (slot.id, slot.tie)).collect::<HashMap<_, _>>();
    let before = ties(&s);
    let picked = s.pick(now, &mut rng()).unwrap();
    s.report(picked, at(40), now, &mut other);
    let after = ties(&s);
    assert_ne!(before[&picked], after[&picked], "its pending load went, so its place is drawn anew");
    assert!(after.iter().all(|(id, tie)| *id == picked || before[id] == *tie));
    s.check_indexes();
}

#[test]
fn the_tie_band_never_passes_over_a_load_beyond_it() {
    // 0.06 % apart is more than the 0.05 % band: whatever the draw, the lower one is
    // picked. 0.04 % apart is within it, and either may come first.
    let now = Instant::now();
    let mut first_within = std::collections::HashSet::new();
    for seed in 0..64 {
        let mut rng = StdRng::seed_from_u64(seed);
        let settings = LoadSettings {
            slow_start: Duration::ZERO,
            min_cost: 0.01,
            prior_cost: 0.01,
            ..Default::default()
        };
        let mut s = Selector::new(Policy::LeastLoaded, settings);
        for id in 1..=3 {
            s.report(BackendId(id), at(30), now, &mut rng);
        }
        // Backend 1 takes 6 clients of 0.01 %, backend 2 takes 4; backend 3 none.
        let prime = |id: u64, n: usize, s: &mut Selector| {
            for _ in 0..n {
                let position = s.positions[&BackendId(id)];
                s.record_pick(position, now);
            }
        };
        prime(1, 6, &mut s);
        prime(2, 4, &mut s);
        s.check_indexes();
        let picked = s.pick(now, &mut rng).unwrap().0;
        assert_ne!(picked, 1, "seed {seed}: 0.06 % above the lowest is outside the band");
        first_within.insert(picked);
    }
    assert_eq!(first_within, std::collections::HashSet::from([2, 3]));
}

#[test]
fn changing_the_tie_band_reorders_at_once() {
    let now = Instant::now();
    let mut s = equal_pool(20, 40, 3, now);
    s.set_settings(flat());
    s.check_indexes();
    // No band: ties go to the lowest id again.
    assert_eq!(picks(&mut s, 3, now, &mut rng()), [1, 2, 3]);
    s.set_settings(LoadSettings { slow_start: Duration::ZERO, ..LoadSettings::default() });
    s.check_indexes();
}

#[test]
fn a_tie_band_that_was_never_validated_neither_panics_nor_passes_over_loads() {
    let now = Instant::now();
    for band in [f64::NAN, -5.0, 1e30, f64::INFINITY] {
        let settings = LoadSettings { tie_band: band, ..flat() };
        let mut s = Selector::new(Policy::LeastLoaded, settings);
        for (id, mem) in [(1, 30), (2, 50)] {
            s.report(BackendId(id), at(mem), now, &mut rng());
        }
        // The band is clamped to 0..=10 %: 20 points apart, the lower one still wins.
        assert_eq!(s.pick(now, &mut rng()), Some(BackendId(1)), "band {band}");
        s.check_indexes();
    }
}

#[test]
fn least_loaded_fills_the_gap_then_shares() {
    // 10 % against 11 % at the prior's 0.1 % per client: backend 1 takes the ten
    // clients that close the gap, wins the tie at 11.0 (lower id), then they alternate.
    let now = Instant::now();
    let mut s = selector(Policy::LeastLoaded, &[(1, 10), (2, 11)], now);
    let picked = picks(&mut s, 15, now, &mut rng());
    assert_eq!(picked[..11], [1; 11]);
    assert_eq!(picked[11..], [2, 1, 2, 1]);
    assert_eq!(s.load(BackendId(1)).unwrap().picks_since_report, 13);
}

#[test]
fn a_report_replaces_the_estimate() {
    let now = Instant::now();
    let mut s = selector(Policy::LeastLoaded, &[(1, 10), (2, 12)], now);
    picks(&mut s, 30, now, &mut rng());
    assert!(s.load(BackendId(1)).unwrap().effective() > 12.0);
    s.report(BackendId(1), at(10), now, &mut rng());
    let load = s.load(BackendId(1)).unwrap();
    assert_eq!((load.effective(), load.picks_since_report), (10.0, 0));
    assert_eq!(s.pick(now, &mut rng()), Some(BackendId(1)));
}

#[test]
fn the_cost_of_a_client_is_learned_from_reports() {
    let now = Instant::now();
    let settings = flat();
    let mut load = BackendLoad::new(percent(20), now, &settings);
    assert_eq!(load.cost(), 0.1);
    for _ in 0..100 {
        load.record_pick(now, &settings);
    }
    load.reconcile(percent(25), &settings);
    // (5 % seen + 0.1 % × 20 prior picks) / (100 picks + 20 prior picks)
    assert!((load.cost() - 7.0 / 120.0).abs() < 1e-12, "{}", load.cost());
    for _ in 0..100 {
        load.record_pick(now, &settings);
    }
    load.reconcile(percent(30), &settings);
    // Old evidence is kept at 0.8: (5×0.8 + 5 + 2) / (100×0.8 + 100 + 20)
    assert!((load.cost() - 11.0 / 200.0).abs() < 1e-12, "{}", load.cost());
}

#[test]
fn the_learned_cost_stays_within_its_bounds() {
    let now = Instant::now();
    let settings = flat();
    let mut load = BackendLoad::new(percent(0), now, &settings);
    for _ in 0..20 {
        // One client, and the load jumps from 0 to 99; then back with no clients.
        load.record_pick(now, &settings);
        load.reconcile(percent(99), &settings);
        load.reconcile(percent(0), &settings);
    }
    assert_eq!(load.cost(), settings.max_cost);

    let mut load = BackendLoad::new(percent(50), now, &settings);
    for _ in 0..50 {
        for _ in 0..1000 {
            load.record_pick(now, &settings);
        }
        load.reconcile(percent(50), &settings);
    }
    assert_eq!(load.cost(), settings.min_cost);
}

#[test]
fn a_falling_report_counts_as_no_increase_and_silent_intervals_teach_nothing() {
    let now = Instant::now();
    let settings = flat();
    let mut falling = BackendLoad::new(percent(50), now, &settings);
    let mut flat_report = BackendLoad::new(percent(50), now, &settings);
    for load in [&mut falling, &mut flat_report] {
        for _ in 0..10 {
            load.record_pick(now, &settings);
        }
    }
    falling.reconcile(percent(40), &settings);
    flat_report.reconcile(percent(50), &settings);
    assert_eq!(falling.cost(), flat_report.cost());
    let learned = falling.cost();
    falling.reconcile(percent(45), &settings);
    assert_eq!(falling.cost(), learned, "no picks in the interval");
}

#[test]
fn a_report_of_100_teaches_nothing() {
    // Old senders jump from their first real report to 100 for good; learning from
    // that jump would give each backend a different, meaningless cost.
    let now = Instant::now();
    let settings = flat();
    let mut load = BackendLoad::new(percent(40), now, &settings);
    for _ in 0..10 {
        load.record_pick(now, &settings);
    }
    load.reconcile(percent(100), &settings);
    assert_eq!(load.cost(), settings.prior_cost);
    assert_eq!(load.effective(), 100.0);
}

#[test]
fn invalid_reports_rank_after_every_valid_one_and_share_among_themselves() {
    let now = Instant::now();
    let mut s = selector(Policy::LeastLoaded, &[(1, 182), (2, 100), (3, 255), (4, 101)], now);
    let picked = picks(&mut s, 3, now, &mut rng());
    assert_eq!(picked, [2, 2, 2]);
    s.remove(BackendId(2));
    assert_eq!(picks(&mut s, 6, now, &mut rng()), [1, 3, 4, 1, 3, 4]);
    // Invalid reports teach nothing.
    s.report(BackendId(1), at(200), now, &mut rng());
    assert_eq!(s.load(BackendId(1)).unwrap().cost(), flat().prior_cost);
}

#[test]
fn backends_all_reporting_100_share_evenly() {
    let now = Instant::now();
    let reports: Vec<_> = (1..=10).map(|id| (id, 100)).collect();
    for policy in [Policy::LeastLoaded, Policy::P2c, Policy::RoundRobin] {
        let mut s = selector(policy, &reports, now);
        let counts = counts(&picks(&mut s, 10_000, now, &mut rng()));
        let busiest = counts.values().max().copied().unwrap();
        assert!(busiest <= 1050, "{policy}: {counts:?}");
    }
}

#[test]
fn original_sends_everything_to_the_lowest_report() {
    let now = Instant::now();
    let mut s = selector(Policy::Original, &[(2, 40), (1, 40), (3, 39)], now);
    assert_eq!(picks(&mut s, 5, now, &mut rng()), [3; 5]);
    s.report(BackendId(3), at(41), now, &mut rng());
    // Ties go to the lowest id, every time: the herding the other policies avoid.
    assert_eq!(picks(&mut s, 5, now, &mut rng()), [1; 5]);
}

#[test]
fn round_robin_ignores_load_and_survives_removals() {
    let now = Instant::now();
    let mut s = selector(Policy::RoundRobin, &[(1, 90), (2, 0), (3, 50)], now);
    assert_eq!(picks(&mut s, 4, now, &mut rng()), [1, 2, 3, 1]);
    s.remove(BackendId(1));
    let picked = picks(&mut s, 4, now, &mut rng());
    assert_eq!(counts(&picked), HashMap::from([(2, 2), (3, 2)]));
}

#[test]
fn p2c_never_picks_the_single_worst_backend() {
    let now = Instant::now();
    let mut s = selector(Policy::P2c, &[(1, 20), (2, 20), (3, 20), (4, 99)], now);
    // Accounting raises the others, but not past 99 % within 1000 picks at 0.1 %.
    let picked = picks(&mut s, 1000, now, &mut rng());
    assert!(!picked.contains(&4));
}

#[test]
fn p2c_with_two_backends_is_exact() {
    let now = Instant::now();
    let mut s = selector(Policy::P2c, &[(1, 30), (2, 10)], now);
    // Both are always drawn, so the lower effective load always wins: backend 2
    // takes the 200 clients that close the gap, then they share (ties go to the
    // first drawn, so only the totals are exact).
    let picked = picks(&mut s, 300, now, &mut rng());
    assert_eq!(picked[..200], [2; 200]);
    assert_eq!(counts(&picked), HashMap::from([(1, 50), (2, 250)]));
}

#[test]
fn p2c_is_reproducible_with_the_same_seed() {
    let now = Instant::now();
    let reports: Vec<_> = (1..=20).map(|id| (id, (id * 3 % 50) as u8)).collect();
    let mut a = selector(Policy::P2c, &reports, now);
    let mut b = selector(Policy::P2c, &reports, now);
    assert_eq!(picks(&mut a, 500, now, &mut rng()), picks(&mut b, 500, now, &mut rng()));
}

#[test]
fn slow_start_weight_falls_from_the_factor_to_one() {
    let settings = LoadSettings::default();
    let ramp = settings.slow_start;
    assert_eq!(settings.slow_start_weight(Duration::ZERO), settings.slow_start_factor);
    assert_eq!(settings.slow_start_weight(ramp / 20), settings.slow_start_factor);
    assert_eq!(settings.slow_start_weight(ramp / 4), 4.0);
    assert_eq!(settings.slow_start_weight(ramp / 2), 2.0);
    assert_eq!(settings.slow_start_weight(ramp), 1.0);
    assert_eq!(flat().slow_start_weight(Duration::ZERO), 1.0);
}

#[test]
fn a_new_backend_under_slow_start_takes_a_bounded_share() {
    let start = Instant::now();
    let settings = LoadSettings::default();
    let mut s = Selector::new(Policy::LeastLoaded, settings.clone());
    for id in 1..=4 {
        s.report(BackendId(id), at(50), start, &mut rng());
    }
    let joined = start + Duration::from_secs(60);
    s.report(BackendId(9), at(10), joined, &mut rng());
    // The 40-point gap is 400 clients at 0.1 % each; counted ten times over, the
    // newcomer takes 40 of them before it ranks with the others, then one in 41.
    let picked = picks(&mut s, 100, joined + Duration::from_millis(10), &mut rng());
    assert_eq!(counts(&picked)[&9], 42);

    let mut without = Selector::new(Policy::LeastLoaded, flat());
    for id in 1..=4 {
        without.report(BackendId(id), at(50), start, &mut rng());
    }
    without.report(BackendId(9), at(10), joined, &mut rng());
    let picked = picks(&mut without, 100, joined + Duration::from_millis(10), &mut rng());
    assert_eq!(counts(&picked)[&9], 100);
}

#[test]
fn changing_policy_keeps_the_learned_loads() {
    let now = Instant::now();
    let mut s = selector(Policy::Original, &[(1, 10), (2, 11)], now);
    picks(&mut s, 30, now, &mut rng());
    s.set_policy(Policy::LeastLoaded);
    // Backend 1 carries 30 picks (13 %), so least-loaded turns to backend 2.
    assert_eq!(s.pick(now, &mut rng()), Some(BackendId(2)));
}

#[test]
fn settings_are_validated_by_name() {
    assert_eq!(LoadSettings::default().validate(), Ok(()));
    let bad = [
        (LoadSettings { min_cost: 0.0, ..LoadSettings::default() }, "min-cost"),
        (LoadSettings { max_cost: 0.0001, ..LoadSettings::default() }, "max-cost"),
        (LoadSettings { prior_cost: 50.0, ..LoadSettings::default() }, "prior-cost"),
        (LoadSettings { prior_cost: f64::NAN, ..LoadSettings::default() }, "prior-cost"),
        (LoadSettings { retention: 1.0, ..LoadSettings::default() }, "retention"),
        (LoadSettings { slow_start_factor: 0.5, ..LoadSettings::default() }, "slow-start-factor"),
        (LoadSettings { tie_band: -0.1, ..LoadSettings::default() }, "tie-band"),
        (LoadSettings { tie_band: MAX_TIE_BAND + 0.1, ..LoadSettings::default() }, "tie-band"),
        (LoadSettings { tie_band: f64::NAN, ..LoadSettings::default() }, "tie-band"),
    ];
    for (settings, name) in bad {
        assert_eq!(settings.validate().unwrap_err().setting, name);
    }
}

#[test]
fn a_draining_backend_gets_no_new_clients_but_stays_listed() {
    let now = Instant::now();
    for policy in Policy::ALL {
        let mut s = selector(policy, &[(1, 10), (2, 50), (3, 50)], now);
        assert!(s.set_state(BackendId(1), BackendState::Draining));
        assert!(s.set_state(BackendId(2), BackendState::Maintenance));
        assert_eq!(picks(&mut s, 5, now, &mut rng()), [3; 5], "{policy}");
        assert_eq!((s.len(), s.ready_len()), (3, 1));
        assert_eq!(s.state(BackendId(1)), Some(BackendState::Draining));
        // Reports keep arriving while draining; they are recorded, not picked.
        s.report(BackendId(1), at(5), now, &mut rng());
        assert_eq!(s.load(BackendId(1)).unwrap().reported, Load::Percent(5.0));
        assert_eq!(s.pick(now, &mut rng()), Some(BackendId(3)), "{policy}");
        s.set_state(BackendId(3), BackendState::Draining);
        assert_eq!(s.pick(now, &mut rng()), None, "{policy}: nothing is ready");
        s.set_state(BackendId(1), BackendState::Ready);
        assert_eq!(s.pick(now, &mut rng()), Some(BackendId(1)), "{policy}");
    }
    assert!(!Selector::new(Policy::LeastLoaded, flat()).set_state(BackendId(9), BackendState::Draining));
}

#[test]
fn a_pick_returns_the_address_of_the_latest_report() {
    let now = Instant::now();
    let report = |ip: &str, port: u16, mem: u8| Report { legacy: legacy(ip, port), load: percent(mem) };
    for policy in Policy::ALL {
        let mut s = Selector::new(policy, flat());
        s.report(BackendId(7), report("10.0.0.7", 7007, 10), now, &mut rng());
        let expected = Picked { id: BackendId(7), legacy: legacy("10.0.0.7", 7007) };
        assert_eq!(s.pick_target(now, &mut rng()), Some(expected), "{policy}");
        s.report(BackendId(7), report("10.0.0.8", 8008, 20), now, &mut rng());
        let picked = s.pick_target(now, &mut rng()).unwrap();
        assert_eq!(picked.legacy.to_string(), "10.0.0.8:8008", "{policy}");
    }
}

#[test]
fn backend_state_names() {
    let names: Vec<_> = BackendState::ALL.iter().map(|state| state.to_string()).collect();
    assert_eq!(names, ["ready", "draining", "maintenance"]);
    assert_eq!(BackendState::default(), BackendState::Ready);
}

#[derive(Debug, Clone)]
enum Op {
    Report(u64, u8),
    Remove(u64),
    SetState(u64, usize),
    Pick,
    ChangePolicy(usize),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0..12u64, any::<u8>()).prop_map(|(id, mem)| Op::Report(id, mem)),
        (0..12u64).prop_map(Op::Remove),
        (0..12u64, 0..3usize).prop_map(|(id, state)| Op::SetState(id, state)),
        Just(Op::Pick),
        Just(Op::Pick),
        (0..4usize).prop_map(Op::ChangePolicy),
    ]
}

proptest! {
    /// Whatever the sequence of reports, removals, state changes and picks, every
    /// policy picks only registered ready backends, at the address of their latest
    /// report, and least-loaded picks one within the tie band of the lowest score.
    #[test]
    fn picks_name_only_registered_ready_backends(ops in proptest::collection::vec(op(), 1..200), policy in 0..4usize) {
        let now = Instant::now();
        let settings = LoadSettings { tie_band: TIE_BAND, ..flat() };
        let band = (TIE_BAND * MICROS_PER_PERCENT) as u64;
        let mut s = Selector::new(Policy::ALL[policy], settings);
        let mut alive: HashMap<u64, BackendState> = HashMap::new();
        let mut ports: HashMap<u64, u16> = HashMap::new();
        let mut rng = rng();
        for op in ops {
            match op {
                Op::Report(id, mem) => {
                    // Each report gives a new port, so a pick shows which report it read.
                    let port = ports.get(&id).map_or(1, |port| port + 1);
                    ports.insert(id, port);
                    s.report(BackendId(id), Report { legacy: legacy("10.0.0.1", port), ..at(mem) }, now, &mut rng);
                    alive.entry(id).or_default();
                }
                Op::Remove(id) => {
                    prop_assert_eq!(s.remove(BackendId(id)), alive.remove(&id).is_some());
                    ports.remove(&id);
                }
                Op::SetState(id, state) => {
                    let state = BackendState::ALL[state];
                    prop_assert_eq!(s.set_state(BackendId(id), state), alive.contains_key(&id));
                    if let Some(known) = alive.get_mut(&id) {
                        *known = state;
                    }
                }
                Op::ChangePolicy(policy) => s.set_policy(Policy::ALL[policy]),
                Op::Pick => {
                    let ready: HashMap<u64, Score> = alive
                        .iter()
                        .filter(|(_, state)| **state == BackendState::Ready)
                        .map(|(id, _)| (*id, s.load(BackendId(*id)).unwrap().effective_score()))
                        .collect();
                    // The policies that pick from the front take the lowest (key, id).
                    let lowest = s.slots[..s.ready].iter().map(|slot| (s.key(slot), slot.id)).min();
                    let picked = s.pick_target(now, &mut rng);
                    prop_assert_eq!(picked.is_some(), !ready.is_empty());
                    if s.policy.uses_order() {
                        prop_assert_eq!(picked.map(|picked| picked.id), lowest.map(|(_, id)| id));
                    }
                    if let Some(Picked { id, legacy }) = picked {
                        prop_assert!(ready.contains_key(&id.0));
                        prop_assert_eq!(legacy.port, ports[&id.0]);
                        if s.policy() == Policy::LeastLoaded {
                            let (picked, lowest) = (ready[&id.0], *ready.values().min().unwrap());
                            prop_assert_eq!(picked.tier, lowest.tier);
                            prop_assert!(picked.micros - lowest.micros < band, "{:?} against {:?}", picked, lowest);
                        }
                    }
                }
            }
            s.check_indexes();
            prop_assert_eq!(s.len(), alive.len());
            for (id, state) in &alive {
                prop_assert_eq!(s.state(BackendId(*id)), Some(*state));
            }
            let ready = alive.values().filter(|state| **state == BackendState::Ready).count();
            prop_assert_eq!(s.ready_len(), ready);
        }
    }
}

#[test]
fn a_heavier_backend_takes_more_clients_at_equal_load() {
    let t0 = Instant::now();
    let mut s = selector(Policy::P2c, &[(1, 40), (2, 40)], t0);
    assert!(s.set_weight(BackendId(2), std::num::NonZeroU16::new(300).unwrap()));
    let now = t0 + Duration::from_secs(10);
    let counts = counts(&picks(&mut s, 400, now, &mut rng()));
    // Each client is assumed to cost the weight-300 backend a third as much, so it takes
    // about three in four.
    assert!(counts[&2] > 2 * counts[&1], "{counts:?}");
    assert_eq!(s.load(BackendId(2)).unwrap().weight(), 300);
}

#[test]
fn the_state_in_force_is_the_further_of_the_operators_and_the_reported_one() {
    let t0 = Instant::now();
    let mut s = selector(Policy::LeastLoaded, &[(1, 10), (2, 50)], t0);
    s.report_state(BackendId(1), BackendState::Draining);
    assert_eq!(s.state(BackendId(1)), Some(BackendState::Draining));
    s.set_state(BackendId(1), BackendState::Maintenance);
    s.report_state(BackendId(1), BackendState::Ready);
    assert_eq!(s.state(BackendId(1)), Some(BackendState::Maintenance), "the operator's hold stays");
    assert_eq!(s.pick(t0, &mut rng()), Some(BackendId(2)));
    s.set_state(BackendId(1), BackendState::Ready);
    assert_eq!(s.states(BackendId(1)), Some((BackendState::Ready, BackendState::Ready)));
    assert_eq!(s.pick(t0, &mut rng()), Some(BackendId(1)));
    s.check_indexes();
}

#[test]
fn fractions_of_a_percent_rank_and_unscored_backends_come_last() {
    let now = Instant::now();
    let report = |load| Report { load, ..at(0) };
    for policy in [Policy::LeastLoaded, Policy::Original] {
        let mut s = Selector::new(policy, flat());
        s.report(BackendId(1), report(Load::Unscored), now, &mut rng());
        s.report(BackendId(2), report(Load::Invalid(150.0)), now, &mut rng());
        s.report(BackendId(3), report(Load::Percent(42.5)), now, &mut rng());
        s.report(BackendId(4), report(Load::Percent(42.25)), now, &mut rng());
        assert_eq!(s.pick(now, &mut rng()), Some(BackendId(4)), "{policy}: 42.25 % before 42.5 %");
        s.remove(BackendId(3));
        s.remove(BackendId(4));
        // Unmeasured backends share among themselves, but the old order ranks the
        // figures sent, and a missing one last.
        let expected = if policy == Policy::Original { [2, 2] } else { [1, 2] };
        assert_eq!(picks(&mut s, 2, now, &mut rng()), expected, "{policy}");
    }
}
