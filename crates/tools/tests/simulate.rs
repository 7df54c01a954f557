//! The simulation end to end: the shipped scenarios parse and keep what they promise.

use std::path::{Path, PathBuf};

use loadwise_core::selection::Policy;
use loadwise_tools::simulate::{
    Format, Mode, PolicyResult, Scenario, compare, compare_slots, render_slot_table, render_table, simulate,
    simulate_slots,
};

/// The shipped scenarios, at the root of the repository.
fn scenario_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scenarios")
}

/// Every shipped scenario file, by name.
fn shipped() -> Vec<(String, Scenario)> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(scenario_dir())
        .expect("scenarios/ exists")
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "toml"))
        .collect();
    paths.sort();
    paths
        .into_iter()
        .map(|path| {
            let text = std::fs::read_to_string(&path).unwrap();
            let scenario =
                Scenario::from_toml(&text).unwrap_or_else(|error| panic!("{}: {error}", path.display()));
            (path.file_stem().unwrap().to_string_lossy().into_owned(), scenario)
        })
        .collect()
}

/// The shipped scenarios that compare policies (those with slots compare admission modes).
fn shipped_policy_scenarios() -> Vec<(String, Scenario)> {
    shipped().into_iter().filter(|(_, scenario)| !scenario.has_slots()).collect()
}

/// A shipped scenario by name.
fn shipped_named(name: &str) -> Scenario {
    shipped().into_iter().find(|(file, _)| file == name).map(|(_, scenario)| scenario).expect("shipped")
}

#[test]
fn the_documented_scenarios_ship_and_parse() {
    let names: Vec<String> = shipped().into_iter().map(|(name, _)| name).collect();
    for expected in [
        "burst-between-heartbeats",
        "burst-between-heartbeats-3-replicas",
        "expensive-clients",
        "expensive-clients-3-replicas",
        "heterogeneous-capacities",
        "join-busy-pool",
        "join-busy-pool-3-replicas",
        "join-large-pool",
        "old-backends-report-100",
        "slots-3-replicas-burst",
        "slots-3-replicas-steady",
        "steady-poisson",
    ] {
        assert!(names.iter().any(|name| name == expected), "{expected} missing from {names:?}");
    }
}

#[test]
fn shipped_scenarios_name_themselves_after_their_file() {
    for (file, scenario) in shipped() {
        assert_eq!(scenario.name.as_deref(), Some(file.as_str()));
        assert!(scenario.description.is_some(), "{file} has no description");
    }
}

#[test]
fn the_same_seed_gives_identical_results_and_another_seed_differs() {
    for (name, scenario) in shipped_policy_scenarios() {
        let first = compare(&scenario, &Policy::ALL, 42);
        assert_eq!(first, compare(&scenario, &Policy::ALL, 42), "{name}");
        // Compared as printed, so that a difference in rounding alone does not count.
        let other = compare(&scenario, &Policy::ALL, 43);
        assert_ne!(render_table(&first, Format::Table), render_table(&other, Format::Table), "{name}");
    }
}

/// A replicated scenario is its single-dispatcher namesake with three replicas, so
/// that the two tables compare like with like.
#[test]
fn each_replicated_scenario_differs_from_its_namesake_only_in_replicas() {
    let all = shipped();
    let mut replicated = 0;
    for (name, scenario) in &all {
        let Some(single_name) = name.strip_suffix("-3-replicas") else { continue };
        let (_, single) = all.iter().find(|(other, _)| other == single_name).expect("a namesake");
        assert_eq!((single.replicas(), scenario.replicas()), (1, 3), "{name}");
        let mut alike = scenario.clone();
        alike.dispatcher.replicas = single.dispatcher.replicas;
        alike.name.clone_from(&single.name);
        alike.description.clone_from(&single.description);
        assert_eq!(&alike, single, "{name}");
        replicated += 1;
    }
    assert_eq!(replicated, 3);
}

/// What the product promises: on every shipped scenario, the load-aware policies
/// keep the hottest backend cooler, or share the worst burst more evenly, than the
/// original server did.
#[test]
fn load_aware_policies_beat_the_original_on_every_shipped_scenario() {
    for (name, scenario) in shipped_policy_scenarios() {
        let original = simulate(&scenario, Policy::Original, scenario.seed);
        for policy in [Policy::LeastLoaded, Policy::P2c] {
            let result = simulate(&scenario, policy, scenario.seed);
            assert!(
                beats(&result, &original),
                "{name}: {policy} (peak {:.1}, burst {:?}) does not beat original (peak {:.1}, burst {:?})",
                result.peak_hottest,
                result.worst_burst,
                original.peak_hottest,
                original.worst_burst,
            );
        }
    }
}

fn beats(result: &PolicyResult, original: &PolicyResult) -> bool {
    let cooler = result.peak_hottest < original.peak_hottest;
    let fairer =
        matches!((result.worst_burst, original.worst_burst), (Some(ours), Some(theirs)) if ours < theirs);
    cooler || fairer
}

const SLOT_SCENARIOS: [&str; 2] = ["slots-3-replicas-burst", "slots-3-replicas-steady"];

/// The promise of leases: no backend ever gets more clients than it has places,
/// however many replicas send them, whatever the seed.
#[test]
fn leases_never_overshoot_in_the_shipped_slot_scenarios() {
    for name in SLOT_SCENARIOS {
        let scenario = shipped_named(name);
        for seed in [scenario.seed, 2, 3] {
            let leases = simulate_slots(&scenario, Mode::Leases, seed);
            assert_eq!((leases.overshoot, leases.peak_overshoot), (0, 0), "{name}, seed {seed}: {leases:?}");
            assert!(leases.admitted > 0, "{name}, seed {seed}: {leases:?}");
        }
    }
}

/// Places that come free are leased again by top-up heartbeats, not an interval
/// later: in the steady scenario leases admit within a tenth of what the ideal shared
/// counter does (without top-ups they admitted 87 % of it), for every seed.
#[test]
fn leases_admit_nearly_what_a_shared_counter_does_when_places_come_and_go() {
    let scenario = shipped_named("slots-3-replicas-steady");
    for seed in [scenario.seed, 2, 3] {
        let leases = simulate_slots(&scenario, Mode::Leases, seed);
        let counter = simulate_slots(&scenario, Mode::SharedCounter, seed);
        assert!(leases.admitted * 10 >= counter.admitted * 9, "seed {seed}: {leases:?} against {counter:?}");
    }
}

/// Today's load-based picking sends a burst of ten times the capacity past it: the
/// load reports lag the clients by up to an interval.
#[test]
fn load_based_picking_overshoots_in_the_burst() {
    let scenario = shipped_named("slots-3-replicas-burst");
    let load = simulate_slots(&scenario, Mode::Load, scenario.seed);
    let places: u64 =
        scenario.backends.iter().map(|group| group.count as u64 * u64::from(group.slots.unwrap())).sum();
    assert!(load.overshoot >= places, "{load:?}");
    assert!(load.peak_overshoot > 0, "{load:?}");
}

/// The reference: one counter of free places admits exactly the places there are,
/// and never refuses while one is free.
#[test]
fn a_shared_counter_never_overshoots_nor_refuses_with_a_place_free() {
    for name in SLOT_SCENARIOS {
        let scenario = shipped_named(name);
        let counter = simulate_slots(&scenario, Mode::SharedCounter, scenario.seed);
        assert_eq!((counter.overshoot, counter.refused_with_room), (0, 0), "{name}: {counter:?}");
        assert!(counter.rejected > 0, "{name} wants more places than there are: {counter:?}");
    }
    let burst = simulate_slots(&shipped_named("slots-3-replicas-burst"), Mode::SharedCounter, 1);
    assert_eq!(burst.admitted, 300, "endless sessions fill the 300 places once: {burst:?}");
}

#[test]
fn the_slot_comparison_is_a_pure_function_of_scenario_and_seed() {
    let scenario = shipped_named("slots-3-replicas-steady");
    assert_eq!(compare_slots(&scenario, 5), compare_slots(&scenario, 5));
    assert_ne!(compare_slots(&scenario, 5), compare_slots(&scenario, 6));
}

#[test]
fn the_slot_table_lists_the_three_modes_on_the_same_clients() {
    let scenario = shipped_named("slots-3-replicas-burst");
    let results = compare_slots(&scenario, scenario.seed);
    for result in &results {
        assert_eq!(result.admitted + result.rejected, 3000, "{result:?}");
    }
    let table = render_slot_table(&results, Format::Markdown);
    for name in ["leases", "load", "shared-counter"] {
        let rows = table.lines().filter(|line| line.starts_with(&format!("| {name} |"))).count();
        assert_eq!(rows, 1, "{name} in\n{table}");
    }
    assert!(table.lines().next().unwrap().contains("overshoot"), "{table}");
}
