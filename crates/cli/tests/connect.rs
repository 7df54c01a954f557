//! `loadwise pick --connect` with the real binaries on loopback: `serve`, two v2
//! agents (one advertising a port nobody listens on, one a listener), and clients
//! from distinct source addresses (`--bind 127.0.0.N`). Every client ends connected
//! to the listener; the clients' FailureReports eject the dead backend once enough
//! distinct clients sent there reported it, and reports from clients never sent there
//! eject nothing.

mod process;

use std::net::{SocketAddr, TcpListener};
use std::time::{Duration, Instant};

use loadwise_client::{ConnectOptions, report_failure};
use loadwise_protocol::v2::{Endpoint, FailureReason, Picked, ServiceName};
use process::{DEADLINE, Proc, Spawn, run_to_end};
use serde_json::Value;

const TOKEN: &str = "connect-test-token";
const DEAD_ID: u64 = 101;
const LIVE_ID: u64 = 102;

/// A `loadwise serve` with its admin API, both on ephemeral loopback ports.
struct Dispatcher {
    _proc: Proc,
    addr: SocketAddr,
    admin: SocketAddr,
}

impl Dispatcher {
    fn start() -> Dispatcher {
        Dispatcher::start_with(&[])
    }

    /// With `extra` arguments to `serve`.
    fn start_with(extra: &[&str]) -> Dispatcher {
        let mut args =
            vec!["serve", "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0", "--admin-token", TOKEN];
        args.extend_from_slice(extra);
        let proc = Spawn::new(&args).env("RUST_LOG", "info").start();
        let (addr, admin) = proc.listening_with_admin();
        Dispatcher { _proc: proc, addr, admin }
    }

    /// The `game` backends as the admin API lists them.
    fn backends(&self) -> Vec<Value> {
        process::service_backends(self.admin, "game")
    }

    fn backend(&self, id: u64) -> Option<Value> {
        self.backends().into_iter().find(|b| is(b, id))
    }

    /// Waits until `condition` holds of the backends, failing after the deadline.
    fn wait_until(&self, what: &str, condition: impl Fn(&[Value]) -> bool) {
        let end = Instant::now() + DEADLINE;
        loop {
            let backends = self.backends();
            if condition(&backends) {
                return;
            }
            assert!(Instant::now() < end, "never {what}: {backends:#?}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Two agents of service `game`: one advertising `dead` (nobody listens), one
    /// `live`; returns them once both are listed.
    fn start_agents(&self, dead: SocketAddr, live: SocketAddr) -> [Proc; 2] {
        self.start_agents_with(dead, live, &[])
    }

    /// [`start_agents`](Self::start_agents) with `extra` arguments to each agent.
    fn start_agents_with(&self, dead: SocketAddr, live: SocketAddr, extra: &[&str]) -> [Proc; 2] {
        let server = self.addr.to_string();
        let agent = |advertise: SocketAddr, id: u64| {
            let (advertise, id) = (advertise.to_string(), id.to_string());
            let mut args = vec![
                "agent",
                "--server",
                &server,
                "--advertise",
                &advertise,
                "--service",
                "game",
                "--id",
                &id,
                "--interval",
                "100ms",
            ];
            args.extend_from_slice(extra);
            Spawn::new(&args).start()
        };
        let agents = [agent(dead, DEAD_ID), agent(live, LIVE_ID)];
        self.wait_until("two backends listed", |backends| backends.len() == 2);
        agents
    }

    /// `loadwise pick --connect --json` from `bind`, with `args` added.
    fn pick_connect(&self, bind: &str, args: &[&str]) -> (process::Finished, Value) {
        let server = self.addr.to_string();
        let mut all =
            vec!["pick", "--server", &server, "--service", "game", "--connect", "--bind", bind, "--json"];
        all.extend_from_slice(args);
        let out = run_to_end(&all, &[]);
        let value = serde_json::from_str(&out.stdout).unwrap_or_else(|_| panic!("JSON on stdout: {out:?}"));
        (out, value)
    }

    /// A plain `loadwise pick --service game`: the address named.
    fn pick(&self) -> String {
        let server = self.addr.to_string();
        let out = run_to_end(&["pick", "--server", &server, "--service", "game", "--timeout", "2s"], &[]);
        assert!(out.success(), "{out:?}");
        out.stdout.lines().next().unwrap().to_owned()
    }
}

/// Whether the listing `backend` is the v2 backend `id` (its `id` is the registry's).
fn is(backend: &Value, id: u64) -> bool {
    backend["v2"]["backend_id"].as_str() == Some(id.to_string().as_str())
}

/// Whether the admin API shows the backend ejected: out of rotation after its
/// clients' reports, for a time.
fn ejected(backend: &Value) -> bool {
    backend["out_because"] == "ejected" && backend["ejected_for_seconds"].is_number()
}

/// The value of the metric line that starts with `series` (name and labels), 0 if absent.
fn metric(text: &str, series: &str) -> f64 {
    let line = text.lines().find(|line| line.starts_with(series));
    line.and_then(|line| line.rsplit(' ').next()?.parse().ok()).unwrap_or(0.0)
}

/// A loopback port nobody listens on, held (bound) until dropped.
fn closed_port() -> (SocketAddr, socket2::Socket) {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket.bind(&"127.0.0.1:0".parse::<SocketAddr>().unwrap().into()).unwrap();
    (socket.local_addr().unwrap().as_socket().unwrap(), socket)
}

#[test]
fn every_client_reaches_the_live_backend_and_three_reporting_clients_eject_the_dead_one() {
    let dispatcher = Dispatcher::start();
    let (dead, _reserved) = closed_port();
    // Connections complete in the kernel's backlog; nothing needs to accept them.
    let live = TcpListener::bind("127.0.0.1:0").unwrap();
    let _agents = dispatcher.start_agents(dead, live.local_addr().unwrap());
    three_reporting_clients_eject_the_dead_backend(&dispatcher, &live);
}

/// With a secret, picks carry tickets, and a report counts only with a ticket valid
/// for that backend: the client sends the pick's ticket back verbatim.
#[test]
fn with_tickets_the_reports_carry_them_and_still_eject() {
    let dir = loadwise_testkit::TempDir::new("connect-secret");
    let secret = dir.write("secret", "connect-test-shared-secret\n");
    let secret = secret.to_str().unwrap();
    let dispatcher = Dispatcher::start_with(&["--auth-secret-file", secret]);
    let (dead, _reserved) = closed_port();
    let live = TcpListener::bind("127.0.0.1:0").unwrap();
    let _agents = dispatcher.start_agents_with(dead, live.local_addr().unwrap(), &["--secret-file", secret]);
    three_reporting_clients_eject_the_dead_backend(&dispatcher, &live);
    let (out, value) = dispatcher.pick_connect("127.0.0.50", &[]);
    assert!(out.success() && value["ticket"].as_str().is_some_and(|t| !t.is_empty()), "{out:?}");
}

/// Clients from distinct addresses until three were sent to the dead backend and
/// reported it; each ends connected to `live`. Then the dead one is ejected, and
/// later clients reach the live one at once.
fn three_reporting_clients_eject_the_dead_backend(dispatcher: &Dispatcher, live: &TcpListener) {
    let live_addr = live.local_addr().unwrap();
    let started = Instant::now();
    let mut reporters = Vec::new();
    for n in 2..=20 {
        let bind = format!("127.0.0.{n}");
        let (out, value) = dispatcher.pick_connect(&bind, &[]);
        assert!(out.success(), "{out:?}");
        assert_eq!(value["connected"], live_addr.to_string(), "{value}");
        assert_eq!(value["backend_id"], LIVE_ID.to_string());
        let failed = value["failed"].as_array().unwrap();
        for attempt in failed {
            assert_eq!(attempt["backend_id"], DEAD_ID.to_string(), "{value}");
        }
        if failed.iter().any(|attempt| attempt["reported"] == true && attempt["reason"] == "refused") {
            reporters.push(bind);
        }
        if reporters.len() == 3 {
            break;
        }
    }
    assert_eq!(reporters.len(), 3, "fewer than 3 of 19 clients were sent to the dead backend");
    dispatcher.wait_until("the dead backend ejected", |backends| {
        backends.iter().any(|b| is(b, DEAD_ID) && ejected(b))
    });
    eprintln!(
        "the dead backend was ejected {:?} after the first client started (reporters: {reporters:?})",
        started.elapsed()
    );
    let (_, metrics) = process::get(dispatcher.admin, "/metrics");
    let series = r#"loadwise_failure_reports_total{reason="refused",outcome="ejected"}"#;
    assert_eq!(metric(&metrics, series), 1.0, "the third client's report ejected it: {metrics}");
    let live_listed = dispatcher.backend(LIVE_ID).expect("the live backend is listed");
    assert!(!ejected(&live_listed), "{live_listed}");

    // Later clients reach the live backend at the first attempt, and plain picks
    // name it alone.
    for n in 30..34 {
        let (out, value) = dispatcher.pick_connect(&format!("127.0.0.{n}"), &[]);
        assert!(out.success(), "{out:?}");
        assert_eq!(
            (value["connected"].as_str(), value["attempts"].as_u64()),
            (Some(&*live_addr.to_string()), Some(1))
        );
    }
    for _ in 0..4 {
        assert_eq!(dispatcher.pick(), live_addr.to_string());
    }
}

#[test]
fn the_text_output_and_the_exit_status_when_every_backend_fails() {
    let dispatcher = Dispatcher::start();
    let (dead, _reserved) = closed_port();
    let (other_dead, _reserved_too) = closed_port();
    let _agents = dispatcher.start_agents(dead, other_dead);
    let server = dispatcher.addr.to_string();
    let args = [
        "pick",
        "--server",
        &server,
        "--service",
        "game",
        "--connect",
        "--attempts",
        "2",
        "--bind",
        "127.0.0.9",
    ];
    let out = run_to_end(&args, &[]);
    assert_eq!(out.code, Some(6), "no backend could be connected to: {out:?}");
    assert!(out.stdout.is_empty(), "{out:?}");
    let lines: Vec<&str> = out.stderr.lines().collect();
    assert!(lines[0].contains("refused") && lines[0].ends_with("reported to the dispatcher"), "{out:?}");
    assert!(out.stderr.contains("could not connect to any backend in 2 attempt(s)"), "{out:?}");

    // With a listener the text names it, the backend and the attempts.
    let live = TcpListener::bind("127.0.0.1:0").unwrap();
    let live_dispatcher = Dispatcher::start();
    let (dead, _held) = closed_port();
    let _more_agents = live_dispatcher.start_agents(dead, live.local_addr().unwrap());
    let server = live_dispatcher.addr.to_string();
    let out = run_to_end(&["pick", "--server", &server, "--service", "game", "--connect"], &[]);
    assert!(out.success(), "{out:?}");
    let expected = format!("connected to {} (backend {LIVE_ID}) after ", live.local_addr().unwrap());
    assert!(out.stdout.starts_with(&expected) && out.stdout.trim_end().ends_with("attempt(s)"), "{out:?}");
}

#[test]
fn bad_connect_settings_are_usage_errors_naming_the_flag() {
    for (args, flag) in [
        (&["--attempts", "0"][..], "--attempts"),
        (&["--attempts", "17"][..], "--attempts"),
        (&["--connect-timeout", "0s"][..], "--connect-timeout"),
        (&["--connect-timeout", "2m"][..], "--connect-timeout"),
        (&["--bind", "not-an-address"][..], "--bind"),
    ] {
        let mut all = vec!["pick", "--service", "game", "--connect"];
        all.extend_from_slice(args);
        let out = run_to_end(&all, &[]);
        assert_eq!(out.code, Some(2), "{args:?}: {out:?}");
        assert!(out.stderr.contains(flag), "{args:?}: {out:?}");
    }
    let out = run_to_end(&["pick", "--connect"], &[]);
    assert!(out.code == Some(2) && out.stderr.contains("--service"), "{out:?}");
}

/// Clients that report the dead backend without ever being sent there: the
/// dispatcher counts none of it, and keeps naming the backend.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reports_from_clients_never_sent_to_a_backend_eject_nothing() {
    let (dispatcher, dead, _reserved, _live, _agents) = tokio::task::spawn_blocking(|| {
        let dispatcher = Dispatcher::start();
        let (dead, reserved) = closed_port();
        let live = TcpListener::bind("127.0.0.1:0").unwrap();
        let agents = dispatcher.start_agents(dead, live.local_addr().unwrap());
        (dispatcher, dead, reserved, live, agents)
    })
    .await
    .unwrap();
    let service = ServiceName::new("game").unwrap();
    let backend =
        Picked { backend_id: DEAD_ID, endpoint: Endpoint::from_socket_addr(dead).unwrap(), ticket: vec![] };
    for n in 40..45 {
        let options = ConnectOptions {
            bind: Some(format!("127.0.0.{n}").parse().unwrap()),
            ..ConnectOptions::default()
        };
        report_failure(&dispatcher.addr.to_string(), &service, &backend, FailureReason::Refused, &options)
            .await
            .expect("the report is sent");
    }
    let (dispatcher, names_dead) = tokio::task::spawn_blocking(move || {
        let listed = dispatcher.backend(DEAD_ID).expect("the dead backend is listed");
        assert!(!ejected(&listed), "{listed}");
        let (status, metrics) = process::get(dispatcher.admin, "/metrics");
        assert_eq!(status, 200);
        let series = r#"loadwise_failure_reports_total{reason="refused",outcome="not_sent_there"}"#;
        assert_eq!(metric(&metrics, series), 5.0, "every report ignored: {metrics}");
        let names_dead = (0..8).any(|_| dispatcher.pick() == dead.to_string());
        (dispatcher, names_dead)
    })
    .await
    .unwrap();
    assert!(names_dead, "the dispatcher still names the backend: the reports did not count");
    drop(dispatcher);
}
