//! `loadwise demo` end to end: it prints the dashboard's URL, the dashboard and the
//! API answer there with simulated backends that get picked, and it stops by itself.

mod process;

use std::net::{SocketAddr, TcpListener};
use std::time::{Duration, Instant};

use process::{Spawn, get, run_to_end};
use serde_json::Value;

/// How long the demo may take to show its simulated backends with picks (more
/// than `process::DEADLINE`, which bounds each other wait).
const DEADLINE: Duration = Duration::from_secs(15);

/// The `host:port` of the first `http://host:port/` in `line`.
fn url_address(line: &str) -> Option<SocketAddr> {
    let (_, rest) = line.split_once("http://")?;
    rest.split('/').next()?.parse().ok()
}

#[test]
fn demo_serves_the_dashboard_with_picked_backends_and_stops_by_itself() {
    let args = ["demo", "--duration", "4s", "--admin-listen", "127.0.0.1:0", "--clients-per-second", "20"];
    let mut demo = Spawn::new(&args).follow_stdout().start();
    let admin = demo.wait_for("the dashboard URL", url_address);

    let (status, page) = get(admin, "/");
    assert_eq!(status, 200);
    assert!(page.contains("loadwise dashboard"), "{page}");

    let end = Instant::now() + DEADLINE;
    let backends = loop {
        let (status, body) = get(admin, "/v1/services/default/backends");
        assert_eq!(status, 200, "{body}");
        let list: Value = serde_json::from_str(&body).unwrap();
        let backends = list["backends"].as_array().cloned().unwrap_or_default();
        let picks: u64 = backends.iter().filter_map(|backend| backend["picks_total"].as_u64()).sum();
        if backends.len() == 6 && picks > 0 {
            break backends;
        }
        assert!(Instant::now() < end, "never saw 6 backends with picks: {list}");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(
        backends.iter().all(|backend| backend["address"].as_str().is_some_and(|a| a.starts_with("10.0.0.")))
    );

    assert_eq!(demo.wait_exit(), Some(0), "the demo stops after its --duration");
}

#[test]
fn demo_says_so_when_the_dashboard_port_is_taken() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let out = run_to_end(&["demo", "--duration", "1s", "--admin-listen", &addr], &[]);
    assert_eq!(out.code, Some(1));
    let stderr = out.stderr;
    assert!(stderr.contains(&addr) && stderr.contains("--admin-listen"), "{stderr}");
}
