//! `loadwise bench` as a command: it prints one JSON object, speaks v2 when asked, and
//! refuses settings that cannot make a run. Every run is bounded by a small request count.

use std::process::Command;

#[test]
fn the_binary_prints_one_json_object() {
    let output = Command::new(env!("CARGO_BIN_EXE_loadwise"))
        .args(["bench", "--spawn", "--requests", "200", "--conns", "2", "--backends", "2", "--json"])
        .output()
        .expect("run loadwise bench");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let json: serde_json::Value = serde_json::from_slice(&output.stdout).expect("stdout is one JSON object");
    assert_eq!(json["target"]["ops"], 200);
    assert_eq!(json["target"]["requests"]["errors"]["timeout"], 0);
    assert_eq!(json["settings"]["mode"], "pick");
    assert!(json["target"]["latency"]["p99_us"].as_f64().unwrap() > 0.0);
    assert!(json["ceiling"].is_null());
}

#[test]
fn the_binary_speaks_v2_when_asked() {
    let output = Command::new(env!("CARGO_BIN_EXE_loadwise"))
        .args(["bench", "--spawn", "--protocol", "v2", "--service", "search", "--requests", "200"])
        .args(["--conns", "2", "--backends", "2", "--json"])
        .output()
        .expect("run loadwise bench");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let json: serde_json::Value = serde_json::from_slice(&output.stdout).expect("stdout is one JSON object");
    assert_eq!(
        (&json["settings"]["protocol"], &json["settings"]["service"]),
        (&"v2".into(), &"search".into())
    );
    assert_eq!(json["target"]["ops"], 200);
}

#[test]
fn the_binary_refuses_a_run_without_a_target() {
    let output =
        Command::new(env!("CARGO_BIN_EXE_loadwise")).args(["bench", "--conns", "2"]).output().unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("--server") && stderr.contains("--spawn"), "{stderr}");
}

#[test]
fn the_binary_refuses_connect_per_pick_with_pipelining() {
    let output = Command::new(env!("CARGO_BIN_EXE_loadwise"))
        .args(["bench", "--spawn", "--connect-per-pick", "--pipeline", "8"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("connect-per-pick"), "{stderr}");
}
