//! `loadwise demo` end to end: it prints the dashboard's URL, the dashboard and the
//! API answer there with simulated backends that get picked, and it stops by itself.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_loadwise");
const DEADLINE: Duration = Duration::from_secs(15);

/// The demo process, killed when the test ends.
struct Demo(Child);

impl Drop for Demo {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// One HTTP/1.1 GET; returns the status and the body.
fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut stream = TcpStream::connect_timeout(&addr, DEADLINE).unwrap();
    stream.set_read_timeout(Some(DEADLINE)).unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let status = response.split(' ').nth(1).and_then(|code| code.parse().ok()).expect("a status line");
    let body = response.split_once("\r\n\r\n").map(|(_, body)| body.to_owned()).unwrap_or_default();
    (status, body)
}

/// The `host:port` of the first `http://host:port/` in `line`.
fn url_address(line: &str) -> Option<SocketAddr> {
    let (_, rest) = line.split_once("http://")?;
    rest.split('/').next()?.parse().ok()
}

#[test]
fn demo_serves_the_dashboard_with_picked_backends_and_stops_by_itself() {
    let mut child = Command::new(BIN)
        .args(["demo", "--duration", "4s", "--admin-listen", "127.0.0.1:0", "--clients-per-second", "20"])
        .env_remove("LOADWISE_LOG_FORMAT")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = BufReader::new(child.stdout.take().unwrap());
    let mut demo = Demo(child);
    let mut lines = stdout.lines().map_while(Result::ok);
    let admin =
        lines.by_ref().find_map(|line| url_address(&line)).expect("the demo prints its dashboard URL");
    // Keep reading stdout, so the demo never blocks on a full pipe.
    std::thread::spawn(move || lines.for_each(drop));

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

    let end = Instant::now() + DEADLINE;
    let status = loop {
        if let Some(status) = demo.0.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < end, "the demo did not stop after its --duration");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(status.code(), Some(0));
}

#[test]
fn demo_says_so_when_the_dashboard_port_is_taken() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let out = Command::new(BIN)
        .args(["demo", "--duration", "1s", "--admin-listen", &addr])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(&addr) && stderr.contains("--admin-listen"), "{stderr}");
}
