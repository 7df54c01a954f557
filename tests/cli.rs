//! The real `loadwise` binary end to end: serve, agent and pick as separate processes.

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_loadwise");
const DEADLINE: Duration = Duration::from_secs(10);

/// A child process that is killed when the test ends, whatever happens.
struct Proc {
    child: Child,
    stderr: Receiver<String>,
}

impl Proc {
    fn spawn(args: &[&str]) -> Proc {
        let mut child = Command::new(BIN)
            .args(args)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the binary starts");
        let (tx, stderr) = std::sync::mpsc::channel();
        let pipe = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Proc { child, stderr }
    }

    /// Waits for a log line containing `needle` and returns it.
    fn wait_for_line(&self, needle: &str) -> String {
        let end = Instant::now() + DEADLINE;
        loop {
            let left = end.saturating_duration_since(Instant::now());
            match self.stderr.recv_timeout(left) {
                Ok(line) if line.contains(needle) => return line,
                Ok(_) => {}
                Err(RecvTimeoutError::Timeout) => {
                    panic!("no log line with {needle:?} within {DEADLINE:?}")
                }
                Err(RecvTimeoutError::Disconnected) => {
                    panic!("process ended before logging {needle:?}")
                }
            }
        }
    }

    fn signal(&self, name: &str) {
        let status = Command::new("kill").args(["-s", name, &self.child.id().to_string()]).status().unwrap();
        assert!(status.success());
    }

    fn wait_exit(&mut self) -> i32 {
        let end = Instant::now() + DEADLINE;
        while Instant::now() < end {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code().expect("exited normally");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!("process did not exit within {DEADLINE:?}");
    }
}

/// What a command that ran to its end printed, and how it exited.
#[derive(Debug)]
struct Finished {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Finished {
    fn success(&self) -> bool {
        self.code == Some(0)
    }
}

/// Runs the binary to its end, failing the test (and killing the process) if it
/// is still running after the deadline: a command expected to exit at once that
/// instead starts serving must not hang the suite.
fn run_to_end(args: &[&str]) -> Finished {
    let mut child = Command::new(BIN)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the binary starts");
    let stdout = collect(child.stdout.take().unwrap());
    let stderr = collect(child.stderr.take().unwrap());
    let end = Instant::now() + DEADLINE;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() >= end {
            let _ = child.kill();
            let _ = child.wait();
            panic!("`loadwise {}` still running after {DEADLINE:?}", args.join(" "));
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let text = |pipe: std::thread::JoinHandle<String>| pipe.join().unwrap();
    Finished { code: status.code(), stdout: text(stdout), stderr: text(stderr) }
}

fn collect(mut pipe: impl std::io::Read + Send + 'static) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut text = String::new();
        let _ = pipe.read_to_string(&mut text);
        text
    })
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `loadwise serve` on an ephemeral loopback port and returns it with its address.
/// The admin API is off: tests run in parallel and its default port is fixed.
fn serve(extra: &[&str]) -> (Proc, SocketAddr) {
    let mut args = vec!["serve", "--listen", "127.0.0.1:0", "--admin-listen", "off"];
    args.extend_from_slice(extra);
    let server = Proc::spawn(&args);
    let line = server.wait_for_line("listening");
    let addr = line.rsplit("addr=").next().unwrap().trim().parse().expect("the log names the address");
    (server, addr)
}

fn pick(server: SocketAddr) -> Finished {
    run_to_end(&["pick", "--server", &server.to_string(), "--timeout", "2s"])
}

/// Picks until the answer is `expected` (the agent registers asynchronously).
fn pick_until(server: SocketAddr, expected: &str) {
    let end = Instant::now() + DEADLINE;
    loop {
        let out = pick(server);
        if out.success() && out.stdout.trim() == expected {
            return;
        }
        assert!(Instant::now() < end, "never picked {expected}; last: {out:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn fake_meminfo(name: &str, used_percent: u64) -> PathBuf {
    let path = std::env::temp_dir().join(format!("loadwise-cli-{}-{name}", std::process::id()));
    std::fs::write(&path, format!("MemTotal: 1000 kB\nMemAvailable: {} kB\n", 1000 - used_percent * 10))
        .unwrap();
    path
}

fn agent(server: SocketAddr, advertise: &str, meminfo: &Path) -> Proc {
    let server = server.to_string();
    let meminfo = meminfo.to_str().unwrap();
    Proc::spawn(&[
        "agent",
        "--server",
        &server,
        "--advertise",
        advertise,
        "--interval",
        "100ms",
        "--meminfo",
        meminfo,
    ])
}

#[test]
fn serve_agent_pick_end_to_end() {
    let (mut server, addr) = serve(&[]);
    let out = pick(addr);
    assert_eq!(out.code, Some(3), "no backend yet: the error reply; {out:?}");
    assert!(out.stderr.contains("error"));

    let busy = fake_meminfo("busy", 80);
    let idle = fake_meminfo("idle", 30);
    let _busy = agent(addr, "10.0.0.1:7001", &busy);
    let idle_agent = agent(addr, "10.0.0.2:7002", &idle);
    pick_until(addr, "10.0.0.2:7002");

    // The agent re-reads its memory figure on every heartbeat.
    std::fs::write(&idle, "MemTotal: 1000 kB\nMemAvailable: 50 kB\n").unwrap();
    pick_until(addr, "10.0.0.1:7001");

    // Stopping an agent closes its connection, which evicts its backend.
    drop(idle_agent);
    drop(_busy);
    let end = Instant::now() + DEADLINE;
    while pick(addr).code != Some(3) {
        assert!(Instant::now() < end, "backends were not evicted");
        std::thread::sleep(Duration::from_millis(20));
    }

    server.signal("TERM");
    assert_eq!(server.wait_exit(), 0);
    server.wait_for_line("stopped");
    std::fs::remove_file(busy).unwrap();
    std::fs::remove_file(idle).unwrap();
}

#[test]
fn agent_reregisters_after_the_dispatcher_restarts() {
    let (mut server, addr) = serve(&[]);
    let meminfo = fake_meminfo("restart", 10);
    let agent = agent(addr, "10.0.0.3:7003", &meminfo);
    pick_until(addr, "10.0.0.3:7003");
    server.signal("INT");
    assert_eq!(server.wait_exit(), 0);
    agent.wait_for_line("not connected");

    let restarted = Proc::spawn(&["serve", "--listen", &addr.to_string(), "--admin-listen", "off"]);
    restarted.wait_for_line("listening");
    pick_until(addr, "10.0.0.3:7003");
    std::fs::remove_file(meminfo).unwrap();
}

#[test]
fn serve_refuses_a_taken_port() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let out = run_to_end(&["serve", "--listen", &addr]);
    assert_eq!(out.code, Some(1));
    let stderr = out.stderr;
    assert!(stderr.contains("cannot listen on") && stderr.contains("in use"), "{stderr}");
}

#[test]
fn serve_refuses_invalid_settings_naming_them() {
    let out = run_to_end(&["serve", "--listen", "127.0.0.1:0", "--ttl", "0s"]);
    assert_eq!(out.code, Some(1));
    assert!(out.stderr.contains("`ttl`"), "{out:?}");
}

#[test]
fn pick_reports_an_unreachable_dispatcher_with_its_own_code() {
    // Bind then drop: the port is very likely closed when pick connects.
    let addr = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let out = pick(addr);
    assert_eq!(out.code, Some(4), "{out:?}");
}

#[test]
fn pick_times_out_on_a_silent_server_with_the_unreachable_code() {
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = silent.local_addr().unwrap().to_string();
    let out = run_to_end(&["pick", "--server", &addr, "--timeout", "200ms"]);
    assert_eq!(out.code, Some(4), "{out:?}");
    assert!(out.stderr.contains("no answer"));
}

#[test]
fn agent_refuses_an_ip_longer_than_the_legacy_field() {
    let out = run_to_end(&["agent", "--server", "127.0.0.1:1", "--advertise", "2001:db8::1234:5678:80"]);
    assert_eq!(out.code, Some(2));
    assert!(out.stderr.contains("at most 15"), "{out:?}");
}

#[test]
fn pick_calls_a_server_that_is_not_host_port_a_usage_error() {
    let out = run_to_end(&["pick", "--server", "no-port-here"]);
    assert_eq!(out.code, Some(2), "{out:?}");
}

#[test]
fn agent_refuses_settings_that_would_spin() {
    let out =
        run_to_end(&["agent", "--server", "127.0.0.1:1", "--advertise", "10.0.0.1:1", "--interval", "0s"]);
    assert_eq!(out.code, Some(1), "{out:?}");
    assert!(out.stderr.contains("`interval`"), "{out:?}");
}
