//! The agent's health check end to end, with the real binary as separate processes:
//! `serve`, `agent --check tcp` beside a backend port that opens and closes, and `pick`.
//! An unhealthy v2 backend stays listed but gets no picks; a legacy one leaves the
//! table. Run with `-- --nocapture` to see the measured times.

mod process;

use std::net::{SocketAddr, TcpListener};
use std::time::{Duration, Instant};

use process::{DEADLINE, Finished, Proc, Spawn, run_to_end};

/// Short, so the test is quick; the default is 1 s.
const CHECK_INTERVAL: Duration = Duration::from_millis(100);
/// The defaults of --check-rise and --check-fall.
const RISE: u32 = 2;
const FALL: u32 = 2;
/// Room for a heartbeat to travel and a `pick` process to start on a loaded machine.
const SLACK: Duration = Duration::from_millis(1500);

/// Starts the binary with info logs on stderr, where `wait_for_line` looks.
fn spawn(args: &[&str]) -> Proc {
    Spawn::new(args).env("RUST_LOG", "info").start()
}

/// `loadwise serve` on an ephemeral loopback port, without the admin API (its default
/// port is fixed and tests run in parallel).
fn serve() -> (Proc, SocketAddr) {
    let server = spawn(&["serve", "--listen", "127.0.0.1:0", "--admin-listen", "off"]);
    let line = server.wait_for_line("listening");
    let addr = line.rsplit("addr=").next().unwrap().trim().parse().expect("the log names the address");
    (server, addr)
}

/// A loopback port with nothing listening on it (bound, then closed).
fn closed_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// An agent checking its advertised port every CHECK_INTERVAL, heart-beating as often.
fn agent(server: SocketAddr, port: u16, protocol_args: &[&str]) -> Proc {
    let (server, advertise) = (server.to_string(), format!("127.0.0.1:{port}"));
    let interval = format!("{}ms", CHECK_INTERVAL.as_millis());
    let mut args = vec!["agent", "--server", &server, "--advertise", &advertise, "--interval", &interval];
    args.extend_from_slice(&["--check", "tcp", "--check-interval", &interval]);
    args.extend_from_slice(protocol_args);
    spawn(&args)
}

/// One pick, for `service` (v2) or legacy without one.
fn pick(server: SocketAddr, service: Option<&str>) -> Finished {
    let server = server.to_string();
    let mut args = vec!["pick", "--server", &server, "--timeout", "2s"];
    if let Some(service) = service {
        args.extend_from_slice(&["--service", service]);
    }
    run_to_end(&args, &[])
}

/// Picks until one is assigned `expected` (`Some`) or refused for lack of a backend
/// (`None`, exit status 3); returns how long that took.
fn pick_until(server: SocketAddr, service: Option<&str>, expected: Option<&str>) -> Duration {
    let start = Instant::now();
    loop {
        let out = pick(server, service);
        let done = match expected {
            Some(backend) => out.success() && out.stdout.lines().next() == Some(backend),
            None => out.code == Some(3),
        };
        if done {
            return start.elapsed();
        }
        assert!(start.elapsed() < DEADLINE, "never got {expected:?}; last: {out:?}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Over `span`, no pick is assigned a backend (each is refused).
fn refused_throughout(server: SocketAddr, service: Option<&str>, span: Duration) {
    let end = Instant::now() + span;
    while Instant::now() < end {
        let out = pick(server, service);
        assert_eq!(out.code, Some(3), "an unhealthy backend got a pick: {out:?}");
    }
}

#[test]
fn an_unhealthy_v2_backend_gets_no_picks_until_its_port_opens() {
    let (_server, addr) = serve();
    let port = closed_port();
    let backend = format!("127.0.0.1:{port}");
    let service = Some("game");
    let agent = agent(addr, port, &["--service", "game"]);
    // It registers at once, unhealthy (the agent says so and why), and gets no picks.
    agent.wait_for_line("connected to dispatcher");
    let why = agent.wait_for_line("still unhealthy");
    assert!(why.contains("cannot connect"), "{why}");
    refused_throughout(addr, service, CHECK_INTERVAL * 5);

    let listening = TcpListener::bind(("127.0.0.1", port)).unwrap();
    let up = pick_until(addr, service, Some(&backend));
    let rise = CHECK_INTERVAL * RISE;
    eprintln!("v2: picked {up:?} after its port opened (rise × interval = {rise:?})");
    assert!(up <= rise + SLACK, "picked only after {up:?}");
    agent.wait_for_line("backend is healthy");

    drop(listening);
    let down = pick_until(addr, service, None);
    let fall = CHECK_INTERVAL * FALL;
    eprintln!("v2: no pick {down:?} after its port closed (fall × interval = {fall:?})");
    assert!(down <= fall + SLACK, "still picked after {down:?}");
    let line = agent.wait_for_line("backend is unhealthy");
    assert!(line.contains("cannot connect"), "the reason is logged: {line}");

    let _listening = TcpListener::bind(("127.0.0.1", port)).unwrap();
    let back = pick_until(addr, service, Some(&backend));
    eprintln!("v2: picked again {back:?} after its port reopened");
    assert!(back <= rise + SLACK, "picked only after {back:?}");
}

#[test]
fn an_unhealthy_legacy_backend_leaves_the_table_until_its_port_opens() {
    let (_server, addr) = serve();
    let port = closed_port();
    let backend = format!("127.0.0.1:{port}");
    let agent = agent(addr, port, &["--protocol", "legacy"]);
    agent.wait_for_line("still unhealthy");
    refused_throughout(addr, None, CHECK_INTERVAL * 5);

    let listening = TcpListener::bind(("127.0.0.1", port)).unwrap();
    let up = pick_until(addr, None, Some(&backend));
    eprintln!("legacy: picked {up:?} after its port opened");
    assert!(up <= CHECK_INTERVAL * RISE + SLACK, "picked only after {up:?}");

    drop(listening);
    let down = pick_until(addr, None, None);
    eprintln!("legacy: no pick {down:?} after its port closed");
    assert!(down <= CHECK_INTERVAL * FALL + SLACK, "still picked after {down:?}");
    agent.wait_for_line("unhealthy: disconnected from the legacy dispatcher");
}

#[test]
fn check_settings_that_cannot_work_are_refused_naming_the_flag() {
    let base = ["agent", "--server", "127.0.0.1:1", "--advertise", "10.0.0.1:7000", "--check", "tcp"];
    for (extra, flag) in [
        (&["--check-interval", "1ms"][..], "`check-interval`"),
        (&["--check-timeout", "5s"][..], "`check-timeout`"),
        (&["--check-rise", "0"][..], "`check-rise`"),
        (&["--check-fall", "1000"][..], "`check-fall`"),
    ] {
        let out = run_to_end(&[&base[..], extra].concat(), &[]);
        assert_eq!(out.code, Some(1), "{extra:?}: {out:?}");
        assert!(out.stderr.contains(flag), "{extra:?}: {out:?}");
    }
    let out = run_to_end(
        &["agent", "--server", "127.0.0.1:1", "--advertise", "10.0.0.1:7000"],
        &[("LOADWISE_AGENT_CHECK", "ftp://x")],
    );
    assert_eq!(out.code, Some(2), "{out:?}");
    assert!(out.stderr.contains("--check") && out.stderr.contains("ftp://x"), "{out:?}");
}
