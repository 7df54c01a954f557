//! `loadwise simulate` end to end: the shipped scenarios, what they promise, and the CLI.

use std::path::{Path, PathBuf};
use std::process::Command;

use loadwise::selection::Policy;
use loadwise::simulate::{Format, PolicyResult, Scenario, compare, render_table, simulate};

const BIN: &str = env!("CARGO_BIN_EXE_loadwise");

fn scenario_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios")
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

fn run(args: &[&str]) -> (bool, String, String) {
    let output = Command::new(BIN).arg("simulate").args(args).env("RUST_LOG", "warn").output().unwrap();
    let text = |bytes: Vec<u8>| String::from_utf8(bytes).unwrap();
    (output.status.success(), text(output.stdout), text(output.stderr))
}

fn scenario_path(name: &str) -> String {
    scenario_dir().join(format!("{name}.toml")).display().to_string()
}

#[test]
fn the_cli_prints_a_row_per_policy() {
    let (ok, stdout, stderr) = run(&[&scenario_path("burst-between-heartbeats")]);
    assert!(ok, "{stderr}");
    assert!(stdout.starts_with("burst-between-heartbeats (seed 1)"), "{stdout}");
    for policy in Policy::ALL {
        let rows = stdout.lines().filter(|line| line.starts_with(&format!("{policy} "))).count();
        assert_eq!(rows, 1, "{policy} in\n{stdout}");
    }
}

#[test]
fn the_cli_runs_chosen_policies_in_json_with_a_seed() {
    let path = scenario_path("heterogeneous-capacities");
    let (ok, stdout, stderr) =
        run(&[&path, "--policy", "p2c", "--policy", "original", "--seed", "7", "--format", "json"]);
    assert!(ok, "{stderr}");
    let json: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(json[0]["scenario"], "heterogeneous-capacities");
    assert_eq!(json[0]["seed"], 7);
    let policies: Vec<&str> =
        json[0]["results"].as_array().unwrap().iter().map(|row| row["policy"].as_str().unwrap()).collect();
    assert_eq!(policies, ["p2c", "original"]);
}

#[test]
fn the_cli_writes_markdown_for_several_scenarios() {
    let (ok, stdout, stderr) = run(&[
        &scenario_path("burst-between-heartbeats"),
        &scenario_path("steady-poisson"),
        "--format",
        "markdown",
    ]);
    assert!(ok, "{stderr}");
    assert!(stdout.contains("### burst-between-heartbeats\n"), "{stdout}");
    assert!(stdout.contains("### steady-poisson\n"), "{stdout}");
    assert_eq!(stdout.lines().filter(|line| line.starts_with("| least-loaded |")).count(), 2, "{stdout}");
}

#[test]
fn the_cli_names_the_bad_key_of_a_scenario() {
    let dir = std::env::temp_dir().join(format!("loadwise-simulate-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("bad.toml");
    std::fs::write(&path, "duration = \"5s\"\n[[backends]]\ncapacity = -2\n").unwrap();
    let (ok, stdout, stderr) = run(&[path.to_str().unwrap()]);
    std::fs::remove_dir_all(&dir).unwrap();
    assert!(!ok);
    assert!(stdout.is_empty(), "{stdout}");
    assert!(stderr.contains("bad.toml") && stderr.contains("`backends[0].capacity`"), "{stderr}");
}

#[test]
fn the_cli_prints_the_same_table_for_a_replicated_scenario_and_the_same_seed() {
    let path = scenario_path("burst-between-heartbeats-3-replicas");
    let (ok, first, stderr) = run(&[&path, "--seed", "3"]);
    assert!(ok, "{stderr}");
    let (_, second, _) = run(&[&path, "--seed", "3"]);
    assert_eq!(first, second);
    let picks = first.lines().filter(|line| line.contains(" 10000 ")).count();
    assert_eq!(picks, 4, "every client is picked, whichever replica it reached:\n{first}");
}

#[test]
fn the_cli_refuses_an_unknown_policy() {
    let (ok, _, stderr) = run(&[&scenario_path("steady-poisson"), "--policy", "fastest"]);
    assert!(!ok);
    assert!(stderr.contains("unknown policy"), "{stderr}");
}
