//! `loadwise simulate` as a command: a row per policy, JSON and Markdown, the seed, and
//! errors that name the bad key of a scenario.

use std::path::{Path, PathBuf};
use std::process::Command;

use loadwise_core::selection::Policy;

const BIN: &str = env!("CARGO_BIN_EXE_loadwise");

/// The shipped scenarios, at the root of the repository.
fn scenario_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scenarios")
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

#[test]
fn the_cli_compares_admission_modes_for_a_slot_scenario() {
    let path = scenario_path("slots-3-replicas-burst");
    let (ok, stdout, stderr) = run(&[&path, "--format", "markdown"]);
    assert!(ok, "{stderr}");
    assert!(stdout.contains("### slots-3-replicas-burst\n"), "{stdout}");
    for mode in ["leases", "load", "shared-counter"] {
        let rows = stdout.lines().filter(|line| line.starts_with(&format!("| {mode} |"))).count();
        assert_eq!(rows, 1, "{mode} in\n{stdout}");
    }
    let (ok, stdout, stderr) = run(&[&path, "--format", "json"]);
    assert!(ok, "{stderr}");
    let json: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let modes: Vec<&str> =
        json[0]["slots"].as_array().unwrap().iter().map(|row| row["mode"].as_str().unwrap()).collect();
    assert_eq!(modes, ["leases", "load", "shared-counter"]);
    assert_eq!(json[0]["slots"][0]["overshoot"], 0, "{stdout}");
}
