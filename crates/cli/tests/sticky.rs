//! Sticky picks with the real binaries on loopback: `loadwise pick --key` names the same
//! backend every time and at every replica that sees the same agents; a drained
//! backend's key moves, and comes back when it is ready again.

mod process;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use process::{DEADLINE, Proc, Spawn, request, run_to_end};
use serde_json::Value;

const TOKEN: &str = "sticky-test-token";

/// A `loadwise serve` with its admin API, both on ephemeral loopback ports.
struct Replica {
    proc: Proc,
    addr: SocketAddr,
    admin: SocketAddr,
}

impl Replica {
    fn start() -> Replica {
        let args =
            ["serve", "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0", "--admin-token", TOKEN];
        let proc = Spawn::new(&args).env("RUST_LOG", "info").start();
        let (addr, admin) = proc.listening_with_admin();
        Replica { proc, addr, admin }
    }

    /// Stops it as an operator would, and checks that it exits cleanly.
    fn stop(mut self) {
        self.proc.signal("TERM");
        assert_eq!(self.proc.wait_exit(), Some(0));
    }

    fn get(&self, path: &str) -> String {
        let (status, body) = process::get(self.admin, path);
        assert_eq!(status, 200, "GET {path}: {body}");
        body
    }

    /// The `game` backends as the admin API lists them.
    fn backends(&self) -> Vec<Value> {
        process::service_backends(self.admin, "game")
    }

    /// Waits until `n` backends of `game` are registered and ready.
    fn wait_for_ready(&self, n: usize) {
        let end = Instant::now() + DEADLINE;
        while self.backends().iter().filter(|b| b["state"] == "ready").count() != n {
            assert!(Instant::now() < end, "never {n} ready backends: {:?}", self.backends());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Drains (`drain`) or restores (`undrain`) the backend clients reach at `address`.
    fn act(&self, action: &str, address: &str) {
        let backends = self.backends();
        let backend =
            backends.iter().find(|b| b["address"] == address).expect("the picked backend is listed");
        let path = format!("/v1/backends/{}/{action}", backend["id"]);
        let (status, body) = request(self.admin, "POST", &path, Some(TOKEN));
        assert_eq!(status, 200, "POST {path}: {body}");
    }

    /// `loadwise pick --service game --key KEY` against this replica: the address.
    fn pick(&self, key: &str) -> String {
        let server = self.addr.to_string();
        let args = ["pick", "--server", &server, "--service", "game", "--key", key, "--timeout", "2s"];
        let out = run_to_end(&args, &[]);
        assert!(out.success(), "{out:?}");
        out.stdout.lines().next().unwrap().to_owned()
    }
}

/// A meminfo file reporting `used_percent` % of memory in use.
fn fake_meminfo(used_percent: u64) -> PathBuf {
    let path = std::env::temp_dir().join(format!("loadwise-sticky-{}-meminfo", std::process::id()));
    std::fs::write(&path, format!("MemTotal: 1000 kB\nMemAvailable: {} kB\n", 1000 - used_percent * 10))
        .unwrap();
    path
}

#[test]
fn a_key_names_the_same_backend_at_every_replica_and_follows_a_drain() {
    let (one, other) = (Replica::start(), Replica::start());
    let meminfo = fake_meminfo(20);
    let servers = format!("{},{}", one.addr, other.addr);
    let agents: Vec<Proc> = (1..=4)
        .map(|n| {
            let (advertise, id) = (format!("10.0.0.{n}:700{n}"), n.to_string());
            let args = [
                "agent",
                "--server",
                &servers,
                "--advertise",
                &advertise,
                "--service",
                "game",
                "--id",
                &id,
                "--interval",
                "100ms",
                "--meminfo",
                meminfo.to_str().unwrap(),
            ];
            Spawn::new(&args).start()
        })
        .collect();
    one.wait_for_ready(4);
    other.wait_for_ready(4);

    let home = one.pick("player-42");
    assert_eq!(one.pick("player-42"), home, "the same key, the same backend");
    assert_eq!(other.pick("player-42"), home, "the other replica agrees");

    one.act("drain", &home);
    let moved = one.pick("player-42");
    assert_ne!(moved, home, "a draining backend takes no new clients");
    assert_eq!(one.pick("player-42"), moved, "the key stays on its next backend meanwhile");
    one.act("undrain", &home);
    assert_eq!(one.pick("player-42"), home, "the key comes back when its backend is ready");

    let metrics = one.get("/metrics");
    let keyed = "loadwise_keyed_picks_total{service=\"game\"} 5";
    assert!(metrics.contains(keyed), "{keyed} in\n{metrics}");
    let passed = "loadwise_keyed_first_choice_passed_total{service=\"game\",reason=\"draining\"} 2";
    assert!(metrics.contains(passed), "{passed} in\n{metrics}");
    drop(agents);
    one.stop();
    other.stop();
    std::fs::remove_file(meminfo).unwrap();
}
