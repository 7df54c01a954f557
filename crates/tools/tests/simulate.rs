//! The simulation end to end: the shipped scenarios parse and keep what they promise.

use std::path::{Path, PathBuf};

use loadwise_core::selection::Policy;
use loadwise_tools::simulate::{Format, PolicyResult, Scenario, compare, render_table, simulate};

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
    for (name, scenario) in shipped() {
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
    for (name, scenario) in shipped() {
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
